"""The reference policy of the KL term: a frozen copy of the initial policy."""

from __future__ import annotations

import copy
from typing import Protocol

import torch

__all__ = ["Reference", "ReferencePolicy"]


class Reference(Protocol):
    """What the trainers need of a reference policy: its ``model`` for log-probs, the iterative-GRPO refresh,
    and what a checkpoint keeps of it (None: nothing, e.g. LoRA's base model with the adapters disabled)."""

    @property
    def model(self) -> torch.nn.Module: ...

    def maybe_sync(self, policy: torch.nn.Module, step: int) -> bool: ...

    def checkpoint_module(self) -> torch.nn.Module | None: ...


class ReferencePolicy:
    """Frozen copy of the policy for the KL penalty, optionally re-synced (DeepSeekMath's iterative GRPO).

    Built only when beta > 0: constructing one costs a second copy of the weights.
    """

    def __init__(self, policy: torch.nn.Module, sync_steps: int = 0):
        self.model = copy.deepcopy(policy).eval().requires_grad_(False)
        self.sync_steps = sync_steps

    def maybe_sync(self, policy: torch.nn.Module, step: int) -> bool:
        """After training step ``step`` (1-based), copy the policy in every ``sync_steps`` steps."""
        if self.sync_steps > 0 and step % self.sync_steps == 0:
            self.model.load_state_dict(policy.state_dict())
            return True
        return False

    def checkpoint_module(self) -> torch.nn.Module:
        """What a checkpoint keeps of the reference (``reference.safetensors``): its weights."""
        return self.model
