"""PPO's own pieces: KL-in-the-reward, GAE and the clipped value loss.

PPO for language models (Ouyang et al. 2022, InstructGPT; Ziegler et al. 2019; TRL's PPO trainer)
puts the KL penalty *inside* the reward: every token gets ``-beta * KL_t`` and the last real token
also gets the scalar score. A learned value V(s_t) then turns these token rewards into per-token
advantages with GAE (Schulman et al., arXiv 1506.02438), which feed the same clipped surrogate as
GRPO (``policy_loss`` with (N, T) advantages). The value head is trained with ``value_loss``.

The seed's total loss ``L = -L_clip + c_v * L_V - c_H * H`` (PPO arXiv 1707.06347 eq. 9) is composed
by the trainer: ``policy_loss(..., logits=logits, entropy_coef=c_H)[0] + c_v * value_loss(...)[0]``;
there is no separate "total loss" function, so each term keeps its own metrics.

Deviations and choices, numbered:

1. ``gae`` treats masked tokens as transparent: the recursion carries the next real token's value
   and advantage across them (verl's multi-turn GAE). With right padding, which is the usual case,
   this is exactly "bootstrap 0 after the last real token". ``bootstrap_values`` optionally gives
   V(s_T) for responses cut by a length limit (classic-RL time limits), else 0.
2. ``value_loss`` uses the PPO2 clipped form of OpenAI baselines / TRL, ``0.5 * max(unclipped,
   clipped)``; the factor 0.5 matches the seed's c_v conventions (c_v = 0.5 in cleanrl multiplies it
   again, as in baselines).
3. ``explained_variance`` is ``1 - Var[R - V] / Var[R]`` over real tokens (population variances, as
   cleanrl); it is NaN when the returns have zero variance, because the ratio is undefined there.
4. ``kl_penalized_rewards`` returns detached rewards: they are constants of the update.
"""

from __future__ import annotations

import torch

from grpokit.algorithms._checks import (
    as_mask,
    check_float,
    check_nonempty,
    check_positive,
    check_same_shape,
    check_tensor,
)
from grpokit.algorithms.kl import kl_divergence
from grpokit.algorithms.masked import masked_mean
from grpokit.algorithms.registry import lookup


def gae(
    token_rewards: torch.Tensor,
    values: torch.Tensor,
    mask: torch.Tensor,
    gamma: float = 1.0,
    lam: float = 0.95,
    *,
    bootstrap_values: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalized Advantage Estimation (Schulman et al., arXiv 1506.02438, eq. 16).

    ``delta_t = r_t + gamma * V(s_{t+1}) - V(s_t)``,
    ``A_t = sum_{l >= 0} (gamma * lam)^l delta_{t+l} = delta_t + gamma * lam * A_{t+1}``,
    ``R_t = A_t + V(s_t)`` (the value target, TD(lambda) return).

    ``V`` after the last real token is ``bootstrap_values`` (0 by default: the response ended);
    masked tokens in between are skipped (the recursion jumps to the next real token).

    Args:
        token_rewards: (N, T) reward of each token (e.g. from ``kl_penalized_rewards``).
        values: (N, T) value estimate V(s_t) at each token; detached.
        mask: (N, T) bool or float, 1 on real tokens.
        gamma: discount in [0, 1]. lam: GAE lambda in [0, 1].
        bootstrap_values: (N,) V of the state after the last token, for truncated responses.

    Returns:
        ``(advantages, returns)``, both (N, T) in ``values``' dtype, 0 on padding, detached.
    """
    values = check_float("values", check_tensor("values", values, ndim=2))
    token_rewards = check_float("token_rewards", check_tensor("token_rewards", token_rewards, ndim=2))
    check_same_shape("token_rewards", token_rewards, "values", values)
    mask = as_mask("mask", mask, values, "values")
    if not 0 <= gamma <= 1:
        raise ValueError(f"gamma must be in [0, 1], got {gamma}")
    if not 0 <= lam <= 1:
        raise ValueError(f"lam must be in [0, 1], got {lam}")
    N, T = values.shape
    if bootstrap_values is None:
        next_value = values.new_zeros(N)  # (N,)
    else:
        bootstrap_values = check_float(
            "bootstrap_values", check_tensor("bootstrap_values", bootstrap_values, ndim=1)
        )
        if bootstrap_values.shape[0] != N:
            raise ValueError(
                f"bootstrap_values has {bootstrap_values.shape[0]} entries but values has {N} rows"
            )
        next_value = bootstrap_values.detach().to(values.dtype)

    with torch.no_grad():
        real = mask > 0  # (N, T)
        zero = values.new_zeros(())
        v = torch.where(real, values, zero)  # (N, T)
        r = torch.where(real, token_rewards.to(values.dtype), zero)  # (N, T)
        advantages = torch.zeros_like(v)  # (N, T)
        last_gae = values.new_zeros(N)  # (N,)
        for t in reversed(range(T)):
            delta = r[:, t] + gamma * next_value - v[:, t]  # (N,)
            gae_t = delta + gamma * lam * last_gae  # (N,)
            # Masked tokens keep the carried value/advantage, so the next real token to the left
            # sees the next real token to the right.
            last_gae = torch.where(real[:, t], gae_t, last_gae)
            next_value = torch.where(real[:, t], v[:, t], next_value)
            advantages[:, t] = last_gae
        advantages = torch.where(real, advantages, zero)
        returns = torch.where(real, advantages + v, zero)
    return advantages, returns


def kl_penalized_rewards(
    scores: torch.Tensor,
    logprobs: torch.Tensor,
    ref_logprobs: torch.Tensor,
    mask: torch.Tensor,
    beta: float,
    kl_estimator: str = "k1",
) -> torch.Tensor:
    """Per-token rewards with the KL penalty inside the reward (InstructGPT / Ziegler et al. 2019, TRL PPO).

    ``r_t = -beta * KL_t(pi_old || pi_ref) + [t = last real token] * score``        (scores (N,))
    ``r_t = -beta * KL_t + score_t``                                            (step scores (N, T))

    with ``KL_t`` the per-token estimate of ``kl_estimator`` (``k1`` = log pi - log pi_ref, the
    usual choice here; see ``kl_divergence``).

    Args:
        scores: (N,) one score per response (outcome), or (N, T) per-token scores (process rewards,
            e.g. step scores placed at each step's last token, 0 elsewhere).
        logprobs: (N, T) sampling-policy log-probs of the sampled tokens.
        ref_logprobs: (N, T) reference-policy log-probs of the same tokens.
        mask: (N, T) bool or float, 1 on real tokens; every response needs at least one.
        beta: KL coefficient (>= 0), e.g. ``AdaptiveKLController.beta``.
        kl_estimator: a registered ``"kl"`` name.

    Returns:
        (N, T) detached rewards in ``logprobs``' dtype, 0 on padding.
    """
    logprobs = check_float("logprobs", check_tensor("logprobs", logprobs, ndim=2))
    ref_logprobs = check_float("ref_logprobs", check_tensor("ref_logprobs", ref_logprobs, ndim=2))
    check_same_shape("ref_logprobs", ref_logprobs, "logprobs", logprobs)
    mask = as_mask("mask", mask, logprobs, "logprobs")
    scores = check_tensor("scores", scores)
    check_positive("beta", beta, allow_zero=True)
    if scores.shape not in (logprobs.shape, logprobs.shape[:1]):
        raise ValueError(
            f"scores has shape {tuple(scores.shape)}; expected (N,) = {tuple(logprobs.shape[:1])} "
            f"or (N, T) = {tuple(logprobs.shape)} like logprobs"
        )
    lookup("kl", kl_estimator, argument="kl_estimator")
    N, T = logprobs.shape

    with torch.no_grad():
        real = mask > 0  # (N, T)
        zero = logprobs.new_zeros(())
        kl = kl_divergence(
            torch.where(real, logprobs, zero), torch.where(real, ref_logprobs, zero), kl_estimator
        )
        rewards = torch.where(real, -beta * kl, zero)  # (N, T)
        scores = scores.detach().to(logprobs.dtype)
        if scores.dim() == 2:
            return rewards + torch.where(real, scores, zero)
        positions = torch.arange(T, device=mask.device).expand(N, T)  # (N, T)
        last = torch.where(real, positions, -1).amax(1)  # (N,)
        if (last < 0).any():
            row = int((last < 0).nonzero()[0].item())
            raise ValueError(
                f"mask row {row} has no real token, so there is no last token to put its score on"
            )
        rewards[torch.arange(N, device=mask.device), last] += scores
    return rewards


def value_loss(
    values: torch.Tensor,
    old_values: torch.Tensor,
    returns: torch.Tensor,
    mask: torch.Tensor,
    cliprange_value: float | None = 0.2,
    aggregation: str = "token_mean",
    *,
    max_length: int | None = None,
) -> tuple[torch.Tensor, dict[str, float]]:
    """Clipped value-function loss (PPO2 of OpenAI baselines; TRL, cleanrl ``clip_vloss``).

    ``L_V = 0.5 * max((V - R)^2, (clip(V, V_old - c, V_old + c) - R)^2)`` per token, aggregated.
    Clipping keeps the new value estimate within ``c`` of the one used to compute the advantages.

    Args:
        values: (N, T) V_theta(s_t), with gradient.
        old_values: (N, T) the values at rollout time; detached.
        returns: (N, T) value targets R_t (from ``gae``); detached.
        mask: (N, T) bool or float, 1 on real tokens.
        cliprange_value: c (> 0), or None for the unclipped ``0.5 * (V - R)^2``.
        aggregation: a registered ``"aggregation"`` name (token mean by default, as TRL and cleanrl).
        max_length: the generation budget, for ``aggregation="constant"``.

    Returns:
        ``(loss, metrics)``; metrics (python floats): ``value_loss``, ``value_clip_fraction`` (real
        tokens where the clipped branch is the larger, so its gradient is used), ``explained_variance``,
        ``value_mean`` (token mean of V).
    """
    aggregate_fn = lookup("aggregation", aggregation, argument="aggregation")
    values = check_float("values", check_tensor("values", values, ndim=2))
    for name, x in (("old_values", old_values), ("returns", returns)):
        check_float(name, check_tensor(name, x, ndim=2))
        check_same_shape(name, x, "values", values)
    mask = as_mask("mask", mask, values, "values")
    if cliprange_value is not None:
        check_positive("cliprange_value", cliprange_value)
    check_nonempty("mask", mask)
    old_values = old_values.detach().to(values.dtype)
    returns = returns.detach().to(values.dtype)

    real = mask > 0  # (N, T)
    zero = values.new_zeros(())
    v = torch.where(real, values, zero)  # (N, T)
    R = torch.where(real, returns, zero)  # (N, T)
    unclipped = (v - R) ** 2  # (N, T)
    if cliprange_value is None:
        per_token = 0.5 * unclipped
        clipped_used = torch.zeros_like(real)
    else:
        v_old = torch.where(real, old_values, zero)
        v_clipped = v_old + torch.clamp(v - v_old, -cliprange_value, cliprange_value)  # (N, T)
        clipped = (v_clipped - R) ** 2  # (N, T)
        per_token = 0.5 * torch.max(unclipped, clipped)
        clipped_used = real & (clipped > unclipped)
    loss = aggregate_fn(per_token, mask, max_length)

    with torch.no_grad():
        var_returns = masked_mean((R - masked_mean(R, mask)) ** 2, mask)
        residual = R - v.detach()
        var_residual = masked_mean((residual - masked_mean(residual, mask)) ** 2, mask)
        explained = torch.where(
            var_returns > 0, 1 - var_residual / var_returns, torch.full_like(var_returns, float("nan"))
        )
        values_list = torch.stack(
            [
                loss.detach(),
                masked_mean(clipped_used.to(v.dtype), mask),
                explained,
                masked_mean(v.detach(), mask),
            ]
        ).tolist()
    names = ("value_loss", "value_clip_fraction", "explained_variance", "value_mean")
    return loss, dict(zip(names, values_list))
