"""Advantages of whole episodes: group-relative (GRPO) or from a value network (PPO).

These functions only arrange episodes for the estimators of :mod:`grpokit.algorithms` (where all
the maths lives): which numbers form a group, and how a per-episode or per-step result maps back
onto the (N, T) grid of env steps.

Shape letters: N episodes, T the longest episode's length. ``mask`` (N, T) is 1 on real steps.

GRPO modes (``advantage_mode``), with r_{i,t} the (scaled) reward of step t of episode i, g(i) its
group and ``est`` the chosen estimator (``grpo``: (x - mean) / (std + eps) over the group):

- ``outcome`` (DeepSeekMath sec. 4.1.2): ``A_i = est(R_i; {R_j : g(j) = g(i)})`` with the return
  R_i = sum_t r_{i,t}; every step of episode i gets A_i. Returns (N,).
- ``returns_to_go`` (not in the paper; deviation 2 of the trainer): with the discounted
  return-to-go ``G_{i,t} = sum_{k >= t} gamma^(k-t) r_{i,k}``,
  ``A_{i,t} = est(G_{i,t}; {G_{j,t} : g(j) = g(i), episode j still running at t})``.
  Returns (N, T).
- ``process`` (DeepSeekMath sec. 4.1.3, each env step one "reasoning step"): rewards normalised
  over every step of every episode of the group, ``A_{i,t} = sum_{k >= t} r~_{i,k}``. Returns (N, T).
"""

from __future__ import annotations

from typing import Literal

import torch

from grpokit.algorithms import gae, group_advantages, masked_whiten, process_advantages
from grpokit.rl.rollout import EpisodeBatch

AdvantageMode = Literal["outcome", "returns_to_go", "process"]


def episode_advantages(
    batch: EpisodeBatch,
    group_ids: torch.Tensor,
    mode: AdvantageMode = "returns_to_go",
    estimator: str = "grpo",
    *,
    gamma: float = 1.0,
    eps: float = 1e-4,
    reward_scale: float = 1.0,
) -> torch.Tensor:
    """Group-relative advantages of N episodes (GRPO); see the module docstring for the three modes.

    Args:
        batch: N episodes; its ``rewards`` (N, T) and ``mask`` (N, T) are used.
        group_ids: (N,) integer group of each episode (any ids, groups of any size; a one-episode
            group, or a time step where only one episode of a group is still running, gets 0).
        mode: ``outcome``, ``returns_to_go`` or ``process``.
        estimator: a registered advantage estimator (``grpokit.algorithms.available("advantage")``).
        gamma: discount of the returns-to-go (``returns_to_go`` mode only).
        eps: added to the standard deviation by the normalising estimators.
        reward_scale: rewards are multiplied by it first.

    Returns:
        (N,) for ``outcome``, (N, T) otherwise; 0 on padding.
    """
    if group_ids.shape != (batch.num_episodes,):
        raise ValueError(
            f"group_ids must have shape ({batch.num_episodes},) like the batch, got {tuple(group_ids.shape)}"
        )
    rewards = batch.rewards * reward_scale  # (N, T)
    mask = batch.mask  # (N, T)
    N, T = mask.shape
    if mode == "outcome":
        returns = (rewards * mask).sum(1)  # (N,)
        return group_advantages(returns, group_ids, estimator, eps)
    if mode == "process":
        # Every env step ends its own step, so step_ends is just the time index on real steps.
        step_ends = torch.where(mask > 0, torch.arange(T).expand(N, T), -1)  # (N, T)
        return process_advantages(rewards, step_ends, mask, group_ids, eps)
    if mode == "returns_to_go":
        # GAE with V = 0 and lambda = 1 is exactly the discounted return-to-go.
        to_go, _ = gae(rewards, torch.zeros_like(rewards), mask, gamma, 1.0)  # (N, T)
        real = mask > 0  # (N, T)
        cell = group_ids.long().unsqueeze(1) * T + torch.arange(T)  # (N, T) one id per (group, t)
        advantages = torch.zeros_like(to_go)  # (N, T)
        advantages[real] = group_advantages(to_go[real], cell[real], estimator, eps)
        return advantages
    raise ValueError(
        f"mode={mode!r} is not an advantage mode; valid: ['outcome', 'process', 'returns_to_go']"
    )


def gae_advantages(
    batch: EpisodeBatch,
    final_values: torch.Tensor,
    *,
    gamma: float,
    lam: float,
    normalize: bool = True,
    reward_scale: float = 1.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """PPO's advantages and value targets from the values stored in ``batch.values`` (N, T).

    Episodes cut by the time limit are bootstrapped with V(s_T) = ``final_values``; terminated ones
    with 0 (Pardo et al. 2018, "Time Limits in Reinforcement Learning"). gymnasium's ``TimeLimit``
    also sets ``truncated`` when the episode terminated on its last allowed step; termination wins,
    so the bootstrap applies only where ``truncated & ~terminated``.

    Args:
        batch: N episodes with ``values`` filled (V(s_t) at collection time).
        final_values: (N,) V of each episode's final observation.
        gamma, lam: GAE discount and lambda.
        normalize: whiten the advantages over the batch's real steps.
        reward_scale: rewards are multiplied by it first.

    Returns:
        ``(advantages, returns)``, both (N, T).
    """
    if batch.values is None:
        raise ValueError("batch.values is None: fill V(s_t) for every step before computing GAE")
    rewards = batch.rewards * reward_scale  # (N, T)
    cut = batch.truncated & ~batch.terminated  # (N,) cut by the time limit in a non-terminal state
    bootstrap = torch.where(cut, final_values, torch.zeros_like(final_values))  # (N,)
    advantages, returns = gae(rewards, batch.values, batch.mask, gamma, lam, bootstrap_values=bootstrap)
    if normalize:
        advantages = masked_whiten(advantages, batch.mask)
    return advantages, returns
