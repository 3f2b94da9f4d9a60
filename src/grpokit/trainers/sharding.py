"""The LLM trainers' data-parallel steps: each process samples its share of the groups, advantages are
computed over every process's rewards, and the step is gathered for logging (``engine/parallel.py`` has the
process group and the loss normalisation)."""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import nullcontext
from dataclasses import fields, replace
from typing import TYPE_CHECKING, Any

import torch

from grpokit.algorithms import group_advantages, multi_reward_advantages
from grpokit.engine.parallel import (
    DataParallel,
    derive_seed,
    reduce_reward_metrics,
    reduce_update_metrics,
    shard_bounds,
)
from grpokit.rewards import RewardScores
from grpokit.rollout.batch import RolloutBatch

if TYPE_CHECKING:
    from grpokit.trainers.step_log import Generation

__all__ = ["ShardedSampler", "gather_group_advantages", "gather_step"]


class ShardedSampler:
    """Samples this process's share of each batch of prompts, seeded so that the result does not depend on
    the number of processes when ``per_group_seed`` is on (see the module docstring, item 2).

    ``generate(prompts, G, columns)`` takes the *global* B prompts and returns the N/W rollouts of prompts
    ``[r*B/W, (r+1)*B/W)``, their ``group_ids`` being those prompts' global indices. With one process and
    ``per_group_seed`` off it is the wrapped sampler unchanged. Other attributes are the wrapped sampler's.

    Args:
        sampler: any sampler with ``generate``, ``set_seed``, ``state_dict``, ``load_state_dict``.
        parallel: the process group.
        seed: the run's seed.
        per_group_seed: seed every group's generator from (seed, round, global prompt index).
    """

    def __init__(self, sampler: Any, parallel: DataParallel, *, seed: int, per_group_seed: bool = False):
        self.sampler = sampler
        self.parallel = parallel
        self.seed = int(seed)
        self.per_group_seed = per_group_seed
        self.rounds = 0  # generate calls so far; part of every derived seed, saved for resume

    def __getattr__(self, name: str) -> Any:
        if name == "sampler":  # not yet set (unpickling): no recursion
            raise AttributeError(name)
        return getattr(self.sampler, name)

    def generate(
        self, prompts: Sequence[Any], num_generations: int, columns: dict[str, list[Any]] | None = None
    ) -> RolloutBatch:
        """This process's rollouts of the global batch ``prompts`` (B prompts, G = ``num_generations``)."""
        prompts = list(prompts)
        columns = dict(columns or {})
        B, rank, W = len(prompts), self.parallel.rank, self.parallel.world_size
        start, stop = shard_bounds(B, rank, W)
        round_index = self.rounds
        self.rounds += 1
        model = getattr(self.sampler, "model", None)
        context = self.parallel.generation(model) if model is not None else nullcontext()
        with context:
            if self.per_group_seed:
                parts = []
                for i in range(start, stop):
                    self.sampler.set_seed(derive_seed(self.seed, round_index, 0, i))
                    parts.append(
                        self.sampler.generate(
                            [prompts[i]], num_generations, {k: [v[i]] for k, v in columns.items()}
                        )
                    )
                pad_id = getattr(self.sampler, "pad_id", None)
                if pad_id is None:
                    pad_id = self.sampler.tokenizer.pad_token_id
                batch = RolloutBatch.concat(parts, pad_id)
            else:
                if W > 1:
                    self.sampler.set_seed(derive_seed(self.seed, round_index, 1, rank))
                local = {k: v[start:stop] for k, v in columns.items()}
                batch = self.sampler.generate(prompts[start:stop], num_generations, local)
        if start:
            batch.group_ids = batch.group_ids - batch.group_ids.min() + start
        return batch

    def set_seed(self, seed: int) -> None:
        self.seed = int(seed)
        self.sampler.set_seed(seed)

    def state_dict(self) -> dict[str, Any]:
        return {**self.sampler.state_dict(), "rounds": self.rounds}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        state = dict(state)
        self.rounds = int(state.pop("rounds", 0))  # absent in checkpoints of unwrapped samplers
        self.sampler.load_state_dict(state)


def gather_group_advantages(
    rewards: torch.Tensor,
    group_ids: torch.Tensor,
    estimator: str = "grpo",
    eps: float = 1e-6,
    *,
    parallel: DataParallel | None = None,
    weights: torch.Tensor | None = None,
) -> torch.Tensor:
    """Group-relative advantages of this process's rows, computed over every process's rows.

    The rewards and group ids of all W processes are all-gathered (in rank order), the estimator runs on the
    whole batch, and this process's slice is returned. A group whose members sit on several processes
    therefore gets the baseline of all its members, exactly as in one process; so do batch-level estimators
    (``grpo_batch_norm``, and GDPO's batch normalisation).

    Args:
        rewards: (n_r,) this process's scored rewards (:func:`grpokit.algorithms.group_advantages`), or
            (n_r, K) one column per reward function, normalised in the group one by one and then summed
            (GDPO, :func:`grpokit.algorithms.multi_reward_advantages`; NaN = not scored by that function).
        group_ids: (n_r,) their group ids, global (the same id on two processes is the same group).
        estimator: a registered advantage estimator.
        eps: added to the standard deviation.
        parallel: the process group; None or one process computes locally.
        weights: (K,) GDPO's weight of each reward function (None: all 1).
    Returns:
        (n_r,) float32 advantages, on ``rewards``' device.
    """
    if rewards.ndim not in (1, 2) or rewards.shape[0] != group_ids.shape[0] or group_ids.ndim != 1:
        raise ValueError(
            f"rewards must be (n,) or (n, K) and group_ids (n,), got {tuple(rewards.shape)} and "
            f"{tuple(group_ids.shape)}"
        )

    def advantages_of(values: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        if values.ndim == 1:
            return group_advantages(values, ids, estimator, eps)
        return multi_reward_advantages(values, ids, weights, estimator, eps)

    if parallel is None or not parallel.is_distributed:
        return advantages_of(rewards, group_ids)
    all_rewards = parallel.all_gather(rewards.float())  # (N,) or (N, K)
    all_ids = parallel.all_gather(group_ids.long())  # (N,)
    sizes = parallel.gather_object(int(rewards.shape[0]))  # (W,)
    start = sum(sizes[: parallel.rank])
    advantages = advantages_of(all_rewards, all_ids)  # (N,)
    return advantages[start : start + rewards.shape[0]].to(rewards.device)


# ---------------------------------------------------------------------------------------------------------
# Logging the global step
# ---------------------------------------------------------------------------------------------------------


def _loggable(batch: RolloutBatch) -> RolloutBatch:
    """The fields the step log reads, on CPU (prompt ids and log-probs stay home: they are not logged)."""
    N = batch.num_responses
    plain = RolloutBatch(
        **{f.name: getattr(batch, f.name) for f in fields(RolloutBatch)}
    )  # PPO's extras stay
    return replace(
        plain,
        prompt_ids=torch.zeros(N, 0, dtype=torch.long),
        prompt_mask=torch.zeros(N, 0, dtype=torch.long),
        completion_ids=batch.completion_ids.cpu(),
        completion_mask=batch.completion_mask.cpu(),
        group_ids=batch.group_ids.cpu(),
        temperatures=batch.temperatures.cpu(),
        truncated=batch.truncated.cpu(),
        sampler_logprobs=None,
        ref_logprobs=None,
    )


def _pad_right_cat(tensors: Sequence[torch.Tensor]) -> torch.Tensor:
    if tensors[0].dim() == 1:
        return torch.cat(list(tensors))
    width = max(t.shape[1] for t in tensors)
    return torch.cat([torch.nn.functional.pad(t, (0, width - t.shape[1])) for t in tensors])


def gather_step(
    parallel: DataParallel,
    batch: RolloutBatch,
    scores: RewardScores,
    generated: Generation,
    advantages: torch.Tensor,
    loss_mask: torch.Tensor,
    update: dict[str, float],
    pad_id: int,
) -> tuple[RolloutBatch, RewardScores, Generation, torch.Tensor, torch.Tensor, dict[str, float]]:
    """The step as one process would have seen it: every process's rows concatenated in rank order (the
    global batch order), reward and update metrics pooled. One ``gather_object`` of the logged fields.

    Returns:
        ``(batch, scores, generated, advantages, loss_mask, update)``, global, on CPU; unchanged with one
        process.
    """
    if not parallel.is_distributed:
        return batch, scores, generated, advantages, loss_mask, update
    local = (
        _loggable(batch),
        scores,
        advantages.cpu(),
        loss_mask.cpu(),
        update,
        float(loss_mask.sum()),
    )
    parts = parallel.gather_object(local)
    batches = [p[0] for p in parts]
    sizes = [b.num_responses for b in batches]
    # Group ids are global already; RolloutBatch.concat keeps them distinct (it renumbers from 0 in order).
    global_batch = RolloutBatch.concat(batches, pad_id)
    global_scores = RewardScores.concat(
        [p[1] for p in parts], reduce_reward_metrics([(p[1].metrics, n) for p, n in zip(parts, sizes)])
    )
    global_generated = replace(generated, batch=global_batch, scores=global_scores)
    return (
        global_batch,
        global_scores,
        global_generated,
        _pad_right_cat([p[2] for p in parts]),
        _pad_right_cat([p[3] for p in parts]),
        reduce_update_metrics([(p[4], p[5]) for p in parts]),
    )


# ---------------------------------------------------------------------------------------------------------
# grpokit train --num_processes N
# ---------------------------------------------------------------------------------------------------------
