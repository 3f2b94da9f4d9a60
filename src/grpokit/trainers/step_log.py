"""What a language-model trainer logs of a step: one metrics row and a few sample groups."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any

import torch

from grpokit.algorithms import group_reward_stats
from grpokit.models.device import memory_metrics
from grpokit.rewards import RewardScores
from grpokit.rollout.batch import RolloutBatch
from grpokit.tracking.timing import PhaseTimer

__all__ = ["Generation", "StepRecord", "sample_rows", "step_metrics"]


@dataclass
class Generation:
    """Everything a step generated and scored, before any filter (the reward statistics must not be biased
    by dynamic sampling), and what dynamic sampling did."""

    batch: RolloutBatch  # every generated rollout
    scores: RewardScores  # their scores
    rounds: int = 1  # generation rounds
    kept_groups: int | None = None  # informative groups kept by dynamic sampling; None: it did not run


@dataclass
class StepRecord:
    """What one step produced, for logging."""

    batch: RolloutBatch  # the N training rollouts
    scores: RewardScores  # their scores
    generated: Generation  # everything generated this step, before dynamic sampling's filter
    advantages: torch.Tensor  # (N,) or (N, T)
    loss_mask: torch.Tensor  # (N, T)
    update: dict[str, float]  # update_policy's metrics
    timer: PhaseTimer


def step_metrics(record: StepRecord, *, data_counts: dict[str, float]) -> dict[str, Any]:
    """One metrics row of a step: rewards (of everything generated, before any filter), groups, advantages,
    lengths (of the tokens the policy sampled), the episodes' turns and context for multi-turn episodes, the
    update's metrics, throughput, time and memory."""
    batch, scores, generated, advantages, loss_mask, update, timer = (
        record.batch, record.scores, record.generated, record.advantages, record.loss_mask, record.update,
        record.timer,
    )  # fmt: skip
    all_batch, all_scores = generated.batch, generated.scores
    m: dict[str, Any] = {}
    scored = all_scores.scored
    rewards = all_scores.rewards[scored]
    m["reward/mean"] = rewards.mean().item() if rewards.numel() else math.nan
    m["reward/std"] = rewards.std().item() if rewards.numel() > 1 else 0.0
    m.update(all_scores.metrics)
    m.update(data_counts)
    if rewards.numel():
        stats = group_reward_stats(rewards, all_batch.group_ids.cpu()[scored])
        if stats["group_size_max"] > 1:  # a group of one (PPO's G = 1) has no spread to measure
            m["zero_std_group_fraction"] = stats["zero_std_group_fraction"]
    if generated.kept_groups is not None:  # dynamic sampling ran
        m["dynamic_sampling/rounds"] = generated.rounds
        m["dynamic_sampling/kept_groups"] = generated.kept_groups
    adv = advantages[scores.scored] if advantages.dim() == 1 else advantages[loss_mask > 0]
    if adv.numel():
        m.update(
            {
                "advantages/mean": adv.mean().item(),
                "advantages/std": adv.std().item() if adv.numel() > 1 else 0.0,
                "advantages/min": adv.min().item(),
                "advantages/max": adv.max().item(),
            }
        )
    # the tokens the policy sampled: environment and tool tokens between turns are not generated (and the
    # max_generated_tokens budget counts generated tokens only)
    lengths = all_batch.sampled_mask.sum(1).float()  # (N,)
    m["completions/mean_length"] = lengths.mean().item()
    m["completions/generated_tokens"] = lengths.sum().item()  # every round of dynamic sampling included
    m["completions/max_length"] = lengths.max().item()
    if all_batch.conversations is not None:  # multi-turn episodes
        m["episodes/turns_mean"] = sum(map(_turns, all_batch.conversations)) / len(all_batch.conversations)
        # the context an episode ends with: model and environment tokens after the opening prompt
        m["episodes/context_tokens_mean"] = all_batch.completion_mask.sum(1).float().mean().item()
    m["completions/truncated_fraction"] = all_batch.truncated.float().mean().item()
    m["loss_mask/token_fraction"] = (loss_mask.sum() / batch.sampled_mask.sum().clamp(min=1)).item()
    m.update({k: v for k, v in update.items() if k != "train_tokens"})
    gen_time = timer.seconds.get("generate", 0.0)
    m["throughput/generate_tokens_per_s"] = lengths.sum().item() / gen_time if gen_time else math.nan
    update_time = timer.seconds.get("update", 0.0)
    m["throughput/train_tokens_per_s"] = update["train_tokens"] / update_time if update_time else math.nan
    m.update(timer.metrics())
    m["time/process_cpu_seconds"] = time.process_time()  # this process's CPU time so far (all threads)
    m.update(memory_metrics())  # memory/peak_rss_mb, and memory/peak_cuda_mb with CUDA
    return m


def sample_rows(
    batch: RolloutBatch, scores: RewardScores, advantages: torch.Tensor, num_groups: int
) -> list[dict[str, Any]]:
    """The first ``num_groups`` groups: prompt, completions, rewards (None = unscored), advantages, truncated;
    for multi-turn episodes also each completion's ``conversation`` (its messages after the opening prompt, as
    plain JSON values) and ``turns`` (its number of assistant turns)."""
    group_ids = batch.group_ids.cpu()
    out = []
    for g in group_ids.unique(sorted=False)[:num_groups]:
        rows = (group_ids == g).nonzero().squeeze(1).tolist()
        adv = (
            advantages
            if advantages.dim() == 1
            else advantages.sum(1) / batch.completion_mask.cpu().sum(1).clamp(min=1)
        )
        row: dict[str, Any] = {
            "prompt": batch.prompts[rows[0]],
            "completions": [batch.completions[i] for i in rows],
            "rewards": [scores.rewards[i].item() if scores.scored[i] else None for i in rows],
            "advantages": [adv[i].item() for i in rows],
            "truncated": [bool(batch.truncated[i]) for i in rows],
        }
        if batch.conversations is not None:
            conversations = [batch.conversations[i] for i in rows]
            row["conversation"] = [_json_plain(c) for c in conversations]
            row["turns"] = [_turns(c) for c in conversations]
        out.append(row)
    return out


def _turns(conversation: list[dict[str, Any]]) -> int:
    """The number of assistant turns of an episode's messages."""
    return sum(1 for message in conversation if message.get("role") == "assistant")


def _json_plain(value: Any) -> Any:
    """A copy of ``value`` made of JSON values only: tensors and numpy values become numbers or lists, tuples
    lists, keys strings (a sample row must not keep tensors, nor share the batch's message dicts)."""
    if isinstance(value, dict):
        return {str(k): _json_plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_plain(v) for v in value]
    if hasattr(value, "tolist"):  # tensors and numpy arrays or scalars, of any rank
        return value.tolist()
    return value
