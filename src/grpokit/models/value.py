"""PPO's value model (the critic): a transformer body with a scalar head, V(s_t) at every completion token.

State ``s_t`` is the prompt plus the first ``t`` completion tokens, so ``V(s_t)`` is read from the hidden
state at the position that predicts completion token ``t``: the same positions, inputs and position ids as
:func:`grpokit.models.logprobs.compute_logits_for_completion`, so values and log-probs line up token for
token.

Two layouts (seed 003: "sharing base layers saves compute; separate heads can reduce interference"):

- ``shared=False`` (default, as InstructGPT, TRL and verl): a deep copy of the policy's body with its own
  head: a second set of weights, gradients and optimizer state, "often the same size as the policy";
- ``shared=True``: the head sits on the policy's own body; only the head's ``H + 1`` parameters are new, and
  the value loss also trains the shared body.

Choices, numbered:

1. The head is zero-initialised, so V = 0 before the first update and the first advantages are plain
   lambda-returns rather than returns minus a random baseline.
2. The head computes in float32 whatever the body's dtype or autocast: values are regression targets of
   order 1 whose differences feed GAE, where bfloat16's 8-bit mantissa would be visible.
3. The shared layout runs its own forward pass through the shared body (one more forward than a fused
   policy-and-value pass, the same parameters): the log-prob code stays model-agnostic.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn

__all__ = ["ValueModel", "build_value_model"]


class ValueModel(nn.Module):
    """``V(s_t)`` for every completion token: ``head(body(prompt, completion[:-1]))``.

    Args:
        body: a transformer returning ``last_hidden_state`` (e.g. ``Qwen2Model``, the ``base_model`` of a
            causal LM).
        hidden_size: H, the width of ``last_hidden_state``.
        shared: True when ``body`` is the policy's own body (then only the head is owned here).
    """

    def __init__(self, body: nn.Module, hidden_size: int, *, shared: bool = False):
        super().__init__()
        if not isinstance(hidden_size, int) or hidden_size < 1:
            raise ValueError(f"hidden_size must be a positive int, got {hidden_size!r}")
        self.body = body
        self.shared = shared
        # skip_init: nn.Linear's own random init would draw from the global RNG and shift a seeded run.
        self.head = nn.utils.skip_init(nn.Linear, hidden_size, 1, dtype=torch.float32)
        nn.init.zeros_(self.head.weight)  # note 1
        nn.init.zeros_(self.head.bias)

    @property
    def owned(self) -> nn.Module:
        """The part whose parameters belong to the value model: itself, or only the head when ``shared``.

        This is what the value optimizer updates and what a checkpoint stores.
        """
        return self.head if self.shared else self

    def forward(
        self,
        prompt_ids: torch.Tensor,
        prompt_mask: torch.Tensor,
        completion_ids: torch.Tensor,
        completion_mask: torch.Tensor,
    ) -> torch.Tensor:
        """Values of the states before each completion token.

        Args:
            prompt_ids: (N, P) long, left-padded.
            prompt_mask: (N, P) 1 on real prompt tokens.
            completion_ids: (N, T) long, right-padded.
            completion_mask: (N, T) 1 on real completion tokens.

        Returns:
            (N, T) float32 ``V(s_t)``, 0 on padding.
        """
        if prompt_ids.ndim != 2 or completion_ids.ndim != 2:
            raise ValueError(
                f"prompt_ids and completion_ids must be 2-D (N, P) / (N, T), got shapes "
                f"{tuple(prompt_ids.shape)} and {tuple(completion_ids.shape)}"
            )
        if prompt_ids.shape[0] != completion_ids.shape[0]:
            raise ValueError(
                f"prompt_ids has {prompt_ids.shape[0]} rows but completion_ids has {completion_ids.shape[0]}"
            )
        if completion_mask.shape != completion_ids.shape:
            raise ValueError(
                f"completion_mask shape {tuple(completion_mask.shape)} != completion_ids shape "
                f"{tuple(completion_ids.shape)}"
            )
        T = completion_ids.shape[1]
        if T == 0:
            raise ValueError("completion_ids has no tokens (T = 0)")
        # Position t-1 holds s_t: the same inputs the policy sees when it predicts token t.
        input_ids = torch.cat([prompt_ids, completion_ids[:, :-1]], dim=1)  # (N, P+T-1)
        attention_mask = torch.cat([prompt_mask.long(), completion_mask[:, :-1].long()], dim=1)  # (N, P+T-1)
        position_ids = (attention_mask.cumsum(dim=1) - 1).clamp(min=0)  # (N, P+T-1), left padding
        hidden = self.body(
            input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids, use_cache=False
        ).last_hidden_state[:, -T:]  # (N, T, H)
        with torch.autocast(hidden.device.type, enabled=False):  # note 2, also under mixed precision
            values = self.head(hidden.float()).squeeze(-1)  # (N, T)
        return torch.where(completion_mask.bool(), values, values.new_zeros(()))


def _body_of(policy: nn.Module) -> nn.Module:
    get_base_model = getattr(policy, "get_base_model", None)
    if callable(get_base_model):  # peft: the causal LM under the adapters
        policy = get_base_model()
    body = getattr(policy, "base_model", None)
    if body is None or body is policy:
        raise ValueError(
            f"value model: {type(policy).__name__} exposes no transformer body (``base_model``); "
            "pass a transformers causal LM"
        )
    return body


def build_value_model(policy: Any, *, shared: bool = False) -> ValueModel:
    """PPO's value model for a transformers causal LM ``policy``.

    Args:
        policy: e.g. ``Qwen2ForCausalLM``; its ``base_model`` is the body. For a LoRA (peft) policy the body
            holds the adapters: a separate copy trains all its weights (a full critic), a shared one trains
            the head and, through the value loss, the policy's adapters.
        shared: False copies the body (separate weights), True puts the head on the policy's own body.

    Returns:
        A :class:`ValueModel` on the policy's device, in the body's dtype (head in float32). Nothing here
        draws from the global RNG (the head is zero-initialised), so building one never shifts a seeded run.
    """
    body = _body_of(policy)
    hidden_size = getattr(getattr(policy, "config", None), "hidden_size", None)
    if hidden_size is None:
        raise ValueError(f"value model: {type(policy).__name__} has no config.hidden_size")
    if not shared:
        body = copy.deepcopy(body).requires_grad_(True)
    device = next(policy.parameters()).device
    return ValueModel(body, int(hidden_size), shared=shared).to(device)
