"""Truncated importance sampling (TIS) for the gap between a rollout engine and the trainer.

A fast rollout engine (vLLM, or the trainer's own sampler in another precision) computes slightly
different probabilities than the training forward pass, so the samples are mildly off-policy for
the policy the loss believes produced them. Yao et al. 2025 ("Your Efficient RL Framework Secretly
Brings You Off-Policy RL Training", https://fengyao.notion.site/off-policy-rl) correct the
gradient with a truncated importance weight

    ``w_t = min(pi_trainer(o_t) / pi_rollout(o_t), C)``

applied to each token's surrogate (``policy_loss(..., importance_weights=w)``). Truncation at C
bounds the variance at the price of a small bias (Ionides 2008, "Truncated importance sampling").

Deviation, numbered:

1. ``level="sequence"`` uses the product of the token ratios, ``min(exp(sum_t log ratio_t), C)``,
   for every token of a response (the sequence-level variant discussed in the same line of work);
   it is computed in log space, ``exp(min(sum, log C))``, so long responses cannot overflow.
"""

from __future__ import annotations

import math

import torch

from grpokit.algorithms._checks import as_mask, check_float, check_nonempty, check_same_shape, check_tensor
from grpokit.algorithms.masked import masked_mean, masked_sum

LEVELS = ("token", "sequence")


def truncated_importance_weights(
    trainer_logprobs: torch.Tensor,
    rollout_logprobs: torch.Tensor,
    mask: torch.Tensor,
    level: str = "token",
    cap: float = 2.0,
) -> tuple[torch.Tensor, dict[str, float]]:
    """Truncated importance weights ``w = min(pi_trainer / pi_rollout, cap)`` (TIS, Yao et al. 2025).

    - ``level="token"``: ``w_{i,t} = min(exp(log pi_trainer(o_{i,t}) - log pi_rollout(o_{i,t})), C)``;
    - ``level="sequence"``: ``w_i = min(exp(sum_t (log pi_trainer - log pi_rollout)), C)``, on every
      token of response i.

    Args:
        trainer_logprobs: (N, T) log-probs of the sampled tokens under the trainer's forward pass
            (the "old" policy of the update, computed before any step).
        rollout_logprobs: (N, T) log-probs reported by the rollout engine for the same tokens.
        mask: (N, T) bool or float, 1 on real tokens.
        level: ``"token"`` or ``"sequence"``.
        cap: the truncation C (> 0).

    Returns:
        ``(weights, metrics)``: weights (N, T), detached, in ``trainer_logprobs``' dtype, 0 on
        padding; metrics (python floats) ``rollout_logprob_abs_diff`` (token mean of
        ``|log pi_trainer - log pi_rollout|``), ``is_capped_fraction`` (fraction of real tokens, or of
        responses at sequence level, whose weight was truncated), ``is_weight_mean`` (token mean of w),
        ``is_weight_min`` / ``is_weight_max`` (extremes of w over the real tokens: its spread).
    """
    if level not in LEVELS:
        raise ValueError(
            f"level={level!r} is not a known importance-sampling level; valid names: {list(LEVELS)}"
        )
    if not cap > 0:
        raise ValueError(f"cap must be > 0, got {cap}")
    trainer_logprobs = check_float(
        "trainer_logprobs", check_tensor("trainer_logprobs", trainer_logprobs, ndim=2)
    )
    rollout_logprobs = check_float(
        "rollout_logprobs", check_tensor("rollout_logprobs", rollout_logprobs, ndim=2)
    )
    check_same_shape("rollout_logprobs", rollout_logprobs, "trainer_logprobs", trainer_logprobs)
    mask = as_mask("mask", mask, trainer_logprobs, "trainer_logprobs")
    check_nonempty("mask", mask)

    with torch.no_grad():
        real = mask > 0  # (N, T)
        zero = trainer_logprobs.new_zeros(())
        log_ratio = torch.where(
            real, trainer_logprobs - rollout_logprobs.to(trainer_logprobs.dtype), zero
        )  # (N, T)
        log_cap = math.log(cap)
        if level == "token":
            capped = real & (log_ratio > log_cap)  # (N, T)
            weights = torch.exp(log_ratio.clamp(max=log_cap))  # (N, T)
            capped_fraction = masked_mean(capped.to(log_ratio.dtype), mask)
        else:
            seq_log_ratio = masked_sum(log_ratio, mask, dim=1)  # (N,)
            capped_seq = seq_log_ratio > log_cap  # (N,)
            weights = torch.exp(seq_log_ratio.clamp(max=log_cap)).unsqueeze(1).expand_as(log_ratio)  # (N, T)
            nonempty = mask.sum(1) > 0  # (N,)
            capped_fraction = (capped_seq & nonempty).sum().to(log_ratio.dtype) / nonempty.sum()
        weights = torch.where(real, weights, zero)
        real_weights = weights[real]  # (n_real,)
        values = torch.stack(
            [
                masked_mean(log_ratio.abs(), mask), capped_fraction, masked_mean(weights, mask),
                real_weights.min(), real_weights.max(),
            ]
        ).tolist()  # fmt: skip
    names = (
        "rollout_logprob_abs_diff",
        "is_capped_fraction",
        "is_weight_mean",
        "is_weight_min",
        "is_weight_max",
    )
    return weights, dict(zip(names, values))
