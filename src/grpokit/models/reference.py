"""The reference policy of the KL term: a frozen copy of the initial policy."""

from __future__ import annotations

import copy

import torch

__all__ = ["ReferencePolicy"]


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
