"""The phases of a GRPO step before the update: sample G completions per prompt, score them, and turn the
scores into group-relative advantages and the loss mask.

    rows        -> generate_rollouts(sampler, rows, G)     N = B*G completions (RolloutBatch)
    batch       -> score(pipeline, batch, ...)             (N,) rewards, or (N, S) step rewards, DAPO's penalty
    scores      -> informative_groups(scores, group_ids)   dynamic sampling's filter (DAPO)
    scores      -> compute_advantages(batch, scores, ...)  (N,) or (N, T) advantages, (N, T) loss mask
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch

from grpokit.algorithms import process_advantages
from grpokit.config import GRPOAlgorithmConfig
from grpokit.engine.parallel import DataParallel
from grpokit.rewards import RewardPipeline, RewardScores, soft_overlong_penalty
from grpokit.rollout.batch import RolloutBatch
from grpokit.trainers.sharding import gather_group_advantages

__all__ = [
    "compute_advantages",
    "generate_rollouts",
    "informative_groups",
    "score",
    "select_scores",
    "split_rows",
]


def generate_rollouts(
    sampler: Any, rows: list[dict[str, Any]], num_generations: int, prompt_column: str
) -> RolloutBatch:
    """G completions for each of the B prompt rows; every other column rides along for the rewards."""
    prompts, columns = split_rows(rows, prompt_column)
    return sampler.generate(prompts, num_generations, columns)


def split_rows(rows: list[dict[str, Any]], prompt_column: str) -> tuple[list[Any], dict[str, list[Any]]]:
    """B prompt rows -> the B prompts and every other column (B entries each), as samplers take them."""
    prompts = [row[prompt_column] for row in rows]
    columns = {key: [row.get(key) for row in rows] for key in rows[0] if key != prompt_column}
    return prompts, columns


def score(pipeline: RewardPipeline, batch: RolloutBatch, rewards: Any, max_new_tokens: int) -> RewardScores:
    """Rewards of every completion, plus DAPO's soft overlong punishment when ``rewards.overlong_buffer_length``.

    The penalty goes where the advantages come from: added to the outcome reward, or with process rewards to
    the reward of each completion's last step (the one its final token closes).
    """
    scores = pipeline.score(batch)
    if rewards.overlong_buffer_length > 0:
        lengths = batch.completion_mask.sum(1).cpu()  # (N,)
        penalty = soft_overlong_penalty(
            lengths, max_new_tokens, rewards.overlong_buffer_length, rewards.overlong_penalty
        )  # (N,)
        if scores.step_rewards is None or scores.step_ends is None:
            scores.rewards = torch.where(scores.scored, scores.rewards + penalty, scores.rewards)
        else:
            ends = scores.step_ends  # (N, S), -1 = padding
            last = torch.where(ends >= 0, torch.arange(ends.shape[1]), -1).max(1).values  # (N,) last step
            rows = (scores.scored & (last >= 0)).nonzero().squeeze(1)
            step_rewards = scores.step_rewards.clone()
            step_rewards[rows, last[rows]] += penalty[rows].to(step_rewards.dtype)
            scores.step_rewards = step_rewards
        scores.metrics["rewards/overlong_penalty/mean"] = penalty.mean().item()
    return scores


def informative_groups(scores: RewardScores, group_ids: torch.Tensor) -> torch.Tensor:
    """(N,) bool: rows of groups that carry a learning signal.

    Outcome rewards: the group's scored rewards are not all equal. Process rewards: the group's scored step
    rewards are not all equal (they are normalised over the group, so equal ones give zero advantages).
    """
    group_ids = group_ids.cpu()
    keep = torch.zeros_like(scores.scored)
    for g in group_ids.unique():
        rows = group_ids == g
        if scores.step_rewards is None or scores.step_ends is None:
            values = scores.rewards[rows & scores.scored]  # scored rewards of group g
            keep[rows] = values.numel() >= 2 and bool((values != values[0]).any())
        else:
            members = rows & scores.scored
            values = scores.step_rewards[members][scores.step_ends[members] >= 0]  # every step of group g
            keep[rows] = values.numel() >= 2 and bool((values != values[0]).any())
    return keep


def compute_advantages(
    batch: RolloutBatch,
    scores: RewardScores,
    algorithm: GRPOAlgorithmConfig,
    parallel: DataParallel | None = None,
    reward_weights: Sequence[float] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Group-relative advantages and the loss mask.

    Outcome rewards give (N,) advantages from ``algorithms.group_advantages`` over the *scored* rows of each
    group, or with ``multi_objective_aggregation: normalize_then_sum`` from each reward function's rewards
    normalised on their own (GDPO, ``algorithms.multi_reward_advantages``, weighted by ``reward_weights``);
    process rewards give (N, T) ones from ``algorithms.process_advantages``. Unscored rows get 0 and are
    masked out, as are truncated completions under overlong filtering.

    Returns:
        ``(advantages, loss_mask)``: (N,) or (N, T) float32, and (N, T) float32.
    """
    scored = scores.scored  # (N,)
    completion_mask = batch.completion_mask.cpu().float()  # (N, T)
    # Only sampled tokens enter the loss (and the KL): multi-turn episodes' environment tokens are context.
    loss_mask = batch.sampled_mask.cpu().float() * scored[:, None]  # (N, T)
    if algorithm.overlong_filtering:
        loss_mask = loss_mask * (~batch.truncated.cpu())[:, None]
    group_ids = batch.group_ids.cpu()
    rows = scored.nonzero().squeeze(1)  # (N',)
    if scores.step_rewards is not None and scores.step_ends is not None:
        advantages = torch.zeros_like(completion_mask)  # (N, T)
        if rows.numel():
            advantages[rows] = process_advantages(
                scores.step_rewards[rows],
                scores.step_ends[rows],
                completion_mask[rows],
                group_ids[rows],
                eps=algorithm.advantage_eps,
            )  # (N', T)
    else:
        advantages = torch.zeros(batch.num_responses)  # (N,)
        # With several processes the estimator runs on every process's rewards (groups are whole anyway, but
        # batch-level estimators need the whole batch), so each process joins the gather.
        rewards, weights = scores.rewards[rows], None  # (N',)
        if algorithm.multi_objective_aggregation == "normalize_then_sum":
            rewards = torch.tensor(
                [[math.nan if v is None else v for v in values] for values in scores.per_function.values()]
            ).T[rows]  # (N', K), NaN = not scored by that function
            weights = torch.tensor(list(reward_weights or [1.0] * rewards.shape[1]), dtype=torch.float32)
        if rows.numel() or (parallel is not None and parallel.is_distributed):
            advantages[rows] = gather_group_advantages(
                rewards, group_ids[rows], algorithm.advantage_estimator, algorithm.advantage_eps,
                parallel=parallel, weights=weights,
            )  # fmt: skip
    return advantages, loss_mask


def select_scores(scores: RewardScores, rows: torch.Tensor) -> RewardScores:
    """The scores of ``rows`` (the kept groups of dynamic sampling); batch metrics stay the whole batch's."""
    idx = rows.tolist()
    return RewardScores(
        rewards=scores.rewards[rows],
        scored=scores.scored[rows],
        per_function={k: [v[i] for i in idx] for k, v in scores.per_function.items()},
        metrics=scores.metrics,
        step_rewards=None if scores.step_rewards is None else scores.step_rewards[rows],
        step_ends=None if scores.step_ends is None else scores.step_ends[rows],
    )
