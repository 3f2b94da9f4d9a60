"""The update: one function that turns a batch of rollouts and a loss into optimizer steps.

GRPO, PPO and classic RL all call :func:`run_update`; what differs between them is the
:class:`Objective` they pass (how one micro-batch's loss is computed). Everything else lives here once::

    steps       = num_iterations * ceil(N / mini_batch_size)          optimizer steps on this batch
    pi_old      = objective.pi_old()  if steps > 1  else None         frozen before the first step
    for each of num_iterations passes, each minibatch (one optimizer step):
        count   = sum over processes of aggregation_count(minibatch)   the loss's normaliser, global
        for each micro-batch m (gradient accumulation, each split to micro_batch_tokens: note 5):
            loss_m = objective.micro_loss(rows_m, pi_old)              aggregated over m's own rows
            backward(loss_m * W * aggregation_count(m) / count)        sum = the minibatch's loss
        clip, step every optimizer; skip all of them if a loss or gradient norm is not finite

Why each piece:

1. pi_old. With one optimizer step per batch the policy *is* pi_old until that step, so the current
   log-probs, detached, are exact and free (``pi_old=None``). With more than one (``num_iterations > 1`` or
   ``mini_batch_size < N``) they are computed once, without gradient, before the first step: otherwise every
   later minibatch would see ratio 1 and nothing would be clipped.
2. Normalisation. Each aggregation declares what it divides by (``algorithms.aggregation_count``: tokens,
   non-empty rows, rows). Weighting micro-batch m by ``count(m) / count(minibatch)`` makes the accumulated
   gradient that of the whole minibatch; with W processes the count is global and DDP's mean over W is
   undone by the factor W. The logged loss is weighted the same way, so it does not depend on how the batch
   was split.
3. Minibatches are per process: with W processes each holds N/W rows and takes ``mini_batch_size / W`` of
   them per optimizer step, so W processes take as many (and as large) steps as one.
4. A non-finite loss (any micro-batch, any process) or gradient norm skips the step on every optimizer and
   every process; weights and optimizer state stay as they were.
5. Token budget (``micro_batch_tokens``, verl's ``ppo_max_token_len_per_gpu``, NeMo-RL's ``train_mb_tokens``).
   Each accumulation micro-batch is split into the fewest near-equal consecutive pieces that each hold at most
   the budget in tokens (rows x the longest row's prompt + completion tokens, the padded size of its forward;
   at least one row), so the update's activation memory is bounded whatever N*T is. Note 2's weights keep the
   gradient that of the whole minibatch. With several processes every process takes the largest piece count
   any of them needs (their forwards and gradient syncs pair up), and accelerate is told the minibatch's
   micro-batch count so it syncs on the last one only. DeepSpeed fixes its accumulation count in its own
   config, so there the budget is not applied.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import torch

from grpokit.algorithms import aggregation_count
from grpokit.engine.parallel import DataParallel

__all__ = [
    "MicroLoss",
    "Objective",
    "OptimizerSlot",
    "UpdateSchedule",
    "UpdateStats",
    "WeightedMeans",
    "iterate_minibatches",
    "run_update",
    "split_to_budget",
    "step_optimizers",
]


@dataclass
class MicroLoss:
    """One micro-batch's loss, as an :class:`Objective` returns it.

    ``loss`` is aggregated over the micro-batch's own rows (its own normaliser); the engine weights it.
    ``metrics`` are means over the micro-batch's loss tokens (``*_min`` / ``*_max``: extremes); ``loss`` and
    ``policy_loss`` among them are re-weighted by the aggregation's count. ``tokens``: prompt + completion
    tokens processed (throughput).
    """

    loss: torch.Tensor
    metrics: dict[str, float] = field(default_factory=dict)
    tokens: int = 0


class Objective(Protocol):
    """What a trainer supplies to :func:`run_update`: the algorithm-specific half of the update."""

    def pi_old(self) -> torch.Tensor:
        """(N, T) log pi_old of the batch's sampled actions, without gradient (called at most once)."""
        ...

    def micro_loss(self, rows: torch.Tensor, pi_old: torch.Tensor | None) -> MicroLoss:
        """Forward (with gradient) and loss of ``rows`` (n,) of the batch.

        ``pi_old`` is :meth:`pi_old`'s (N, T) result, or None when the batch gets a single optimizer step
        (the current log-probs, detached, are then pi_old).
        """
        ...


@dataclass
class OptimizerSlot:
    """An optimizer the update steps, with the parameters whose gradient norm it clips."""

    optimizer: torch.optim.Optimizer
    params: Sequence[torch.Tensor]
    max_grad_norm: float | None
    name: str = "grad_norm"  # the metric its mean gradient norm is logged as


@dataclass(frozen=True)
class UpdateSchedule:
    """How a batch of N rows becomes optimizer steps.

    Args:
        num_iterations: mu, passes over the batch.
        mini_batch_size: rows per optimizer step over all processes (None: the whole batch).
        gradient_accumulation_steps: micro-batches per minibatch.
        shuffle: shuffle rows into minibatches when there are several (off: consecutive rows).
        micro_batch_tokens: split each micro-batch further so that none holds more tokens than this (per
            process; module docstring, note 5); None: only ``gradient_accumulation_steps`` splits.
    """

    num_iterations: int = 1
    mini_batch_size: int | None = None
    gradient_accumulation_steps: int = 1
    shuffle: bool = True
    micro_batch_tokens: int | None = None

    def local_mini_batch_size(self, world_size: int) -> int | None:
        """Rows per optimizer step on one of ``world_size`` processes (each holds N / W rows)."""
        if self.mini_batch_size is None:
            return None
        if self.mini_batch_size % world_size:
            raise ValueError(
                f"optim.mini_batch_size ({self.mini_batch_size}) must be divisible by the {world_size} processes"
            )
        return self.mini_batch_size // world_size

    def optimizer_steps(self, num_rows: int, world_size: int = 1) -> int:
        """Optimizer steps this schedule takes on a batch of ``num_rows`` local rows."""
        local = self.local_mini_batch_size(world_size)
        size = num_rows if local is None else min(local, num_rows)
        return self.num_iterations * max(1, math.ceil(num_rows / max(size, 1)))


@dataclass
class UpdateStats:
    """What an update did. ``metrics``: the objective's metrics (token-weighted means, extremes; ``loss`` and
    ``policy_loss`` weighted by the aggregation's count)."""

    metrics: dict[str, float]
    grad_norms: dict[str, float]  # per optimizer slot: mean gradient norm before clipping over applied steps
    optimizer_steps: int  # applied
    nonfinite_skipped: int  # optimizer steps skipped for a non-finite loss or gradient norm
    train_tokens: int

    def as_metrics(self) -> dict[str, float]:
        """One flat row for the logs."""
        return {
            **self.metrics,
            **self.grad_norms,
            "optimizer_steps": float(self.optimizer_steps),
            "faults/nonfinite_skipped": float(self.nonfinite_skipped),
            "train_tokens": float(self.train_tokens),
        }


class WeightedMeans:
    """Weighted means of metrics over micro-batches; ``*_min`` / ``*_max`` keys keep their extremes."""

    def __init__(self) -> None:
        self.sums: dict[str, float] = {}
        self.weights: dict[str, float] = {}
        self.extremes: dict[str, float] = {}

    def add(self, metrics: dict[str, float], weight: float) -> None:
        for key, value in metrics.items():
            if key.endswith("_min") or key.endswith("_max"):
                pick = min if key.endswith("_min") else max
                self.extremes[key] = pick(self.extremes.get(key, value), value)
            else:
                self.sums[key] = self.sums.get(key, 0.0) + value * weight
                self.weights[key] = self.weights.get(key, 0.0) + weight

    def result(self) -> dict[str, float]:
        means = {k: v / self.weights[k] for k, v in self.sums.items() if self.weights[k]}
        return {**means, **self.extremes}


LOSS_METRICS = ("loss", "policy_loss")
"""Metrics the engine weights by the aggregation's count instead of by tokens: the aggregated losses."""


def step_optimizers(slots: Sequence[OptimizerSlot], loss_finite: bool = True) -> list[float] | None:
    """Clip each slot's gradients and step every optimizer, unless a loss or a gradient norm is not finite.

    A skipped step zeroes the gradients and leaves the weights and every optimizer's state (Adam moments,
    step count) untouched: one NaN must not poison the moments for every later step, and the policy must not
    step when the value model cannot.

    Returns:
        Each slot's gradient norm before clipping, or None when the step was skipped.
    """
    norms = []
    for slot in slots:
        max_norm = slot.max_grad_norm if slot.max_grad_norm is not None else math.inf
        norms.append(float(torch.nn.utils.clip_grad_norm_(slot.params, max_norm)))
    if not (loss_finite and all(math.isfinite(n) for n in norms)):
        for slot in slots:
            slot.optimizer.zero_grad(set_to_none=True)
        return None
    for slot in slots:
        slot.optimizer.step()
    return norms


def iterate_minibatches(
    num_rows: int,
    mini_batch_size: int | None,
    accumulation_steps: int,
    generator: torch.Generator | None = None,
    shuffle: bool = True,
) -> Iterator[list[torch.Tensor]]:
    """Yield minibatches as lists of micro-batch row indices (one optimizer step per minibatch).

    With more than one minibatch, rows are shuffled (``shuffle``) or partitioned with a stride: minibatch k
    holds rows k, k + K, k + 2K, ... of the K minibatches, which gives each process of a data-parallel run
    (holding a contiguous N/W of the rows) exactly its share of the one-process minibatch. A ragged batch
    (dynamic sampling that ran out of rounds) gets a smaller last minibatch rather than dropped rows.
    """
    size = num_rows if mini_batch_size is None else min(mini_batch_size, num_rows)
    size = max(size, 1)
    order = torch.arange(num_rows)
    if size < num_rows and shuffle:
        order = torch.randperm(num_rows, generator=generator)
    elif size < num_rows and num_rows % size == 0:
        order = order.view(size, num_rows // size).t().reshape(-1)
    for start in range(0, num_rows, size):
        rows = order[start : start + size]
        micro = max(1, math.ceil(len(rows) / accumulation_steps))
        yield [rows[i : i + micro] for i in range(0, len(rows), micro)]


def budget_pieces(rows: torch.Tensor, row_tokens: torch.Tensor, budget: int) -> int:
    """The fewest near-equal consecutive pieces of ``rows`` each holding at most ``budget`` tokens.

    A piece of n rows holds n x its longest row's tokens (the padded size of its forward); a single row over
    the budget is still one piece.
    """
    tokens = row_tokens[rows]
    for pieces in range(1, len(rows) + 1):
        if all(len(p) * int(p.max()) <= budget for p in torch.tensor_split(tokens, pieces)):
            return pieces
    return max(len(rows), 1)


def split_to_budget(micro_batches: Sequence[torch.Tensor], pieces: Sequence[int]) -> list[torch.Tensor]:
    """Split micro-batch i into ``pieces[i]`` near-equal consecutive pieces (never an empty one)."""
    out: list[torch.Tensor] = []
    for rows, k in zip(micro_batches, pieces):
        out.extend(torch.tensor_split(rows, max(1, min(int(k), len(rows)))))
    return out


def _token_split(
    minibatch: list[torch.Tensor], row_tokens: torch.Tensor, budget: int, dp: DataParallel, slots: int
) -> list[torch.Tensor]:
    """``minibatch``'s micro-batches split to the token budget, the same piece counts on every process."""
    pieces = torch.zeros(slots, dtype=torch.long)
    pieces[: len(minibatch)] = torch.tensor([budget_pieces(rows, row_tokens, budget) for rows in minibatch])
    if dp.is_distributed:
        pieces = dp.all_gather(pieces).view(-1, slots).amax(0)
    return split_to_budget(minibatch, pieces[: len(minibatch)].tolist())


def run_update(
    objective: Objective,
    loss_mask: torch.Tensor,
    *,
    aggregation: str,
    optimizers: Sequence[OptimizerSlot],
    schedule: UpdateSchedule,
    models: Sequence[torch.nn.Module] = (),
    parallel: DataParallel | None = None,
    generator: torch.Generator | None = None,
    row_tokens: torch.Tensor | None = None,
) -> UpdateStats:
    """Optimizer steps on one batch: see the module docstring.

    Args:
        objective: the trainer's loss over micro-batches.
        loss_mask: (N, T) 1 on the tokens (steps) that enter the loss, for this process's N rows.
        aggregation: the loss's registered aggregation name (its count normalises micro-batches).
        optimizers: every optimizer to step per minibatch (policy; PPO's value model too).
        schedule: passes, minibatch size (global), accumulation.
        models: the (wrapped) trained modules, so accelerate syncs their gradients on a minibatch's last
            micro-batch only.
        parallel: the process group; None for one process.
        generator: shuffles minibatches.
        row_tokens: (N,) prompt + completion tokens of each row, for ``schedule.micro_batch_tokens`` (note 5);
            None: no token split.
    """
    dp = parallel if parallel is not None else DataParallel()
    N = loss_mask.shape[0]
    local_mini = schedule.local_mini_batch_size(dp.world_size)
    budget = schedule.micro_batch_tokens if row_tokens is not None else None
    if dp.engine == "deepspeed":  # its accumulation count is fixed in its config (note 5)
        budget = None
    accelerator = dp.accelerator if budget is not None else None
    configured_steps = accelerator.gradient_accumulation_steps if accelerator is not None else 1
    pi_old = None
    if schedule.optimizer_steps(N, dp.world_size) > 1:
        pi_old = objective.pi_old()  # note 1: frozen before any weight moves

    means = WeightedMeans()
    grad_norms: dict[str, list[float]] = {slot.name: [] for slot in optimizers}
    applied = skipped = tokens = 0
    for _ in range(schedule.num_iterations):
        for minibatch in iterate_minibatches(
            N, local_mini, schedule.gradient_accumulation_steps, generator, schedule.shuffle
        ):
            global_count = aggregation_count(aggregation, loss_mask[torch.cat(minibatch)])
            if dp.is_distributed:
                global_count = float(dp.all_reduce_sum(torch.tensor([global_count]))[0])
            if global_count == 0:  # no process has a loss token here: nothing to learn from
                continue
            if budget is not None and row_tokens is not None:
                slots = schedule.gradient_accumulation_steps  # at most this many micro-batches
                minibatch = _token_split(minibatch, row_tokens, budget, dp, slots)
                if accelerator is not None:  # sync on this minibatch's last micro-batch only (note 5)
                    accelerator.gradient_accumulation_steps = len(minibatch)
                    accelerator.step = 0
            for slot in optimizers:
                slot.optimizer.zero_grad(set_to_none=True)
            finite = True
            for rows in dp.micro_batches(models, minibatch):
                mask = loss_mask[rows]  # (n, T)
                count = aggregation_count(aggregation, mask)
                if count == 0 and not dp.runs_empty_micro_batches:
                    continue
                out = objective.micro_loss(rows, pi_old)
                # With W processes DDP averages gradients: W undoes it (note 2).
                dp.backward(out.loss * (dp.world_size * count / global_count))
                tokens += out.tokens
                if count == 0:  # joined the others' gradient sync with a zero loss; nothing to log
                    continue
                loss_value = out.loss.item()
                finite = finite and math.isfinite(loss_value)
                metrics = {**out.metrics, "loss": loss_value}  # the loss that was back-propagated
                means.add({k: v for k, v in metrics.items() if k not in LOSS_METRICS}, float(mask.sum()))
                means.add({k: metrics[k] for k in LOSS_METRICS if k in metrics}, count)
            finite = dp.all_true(finite)  # every process skips the step, or none does (note 4)
            norms = step_optimizers(optimizers, finite)
            if norms is None:
                skipped += 1
                continue
            applied += 1
            for slot, norm in zip(optimizers, norms):
                grad_norms[slot.name].append(norm)
    if accelerator is not None:  # back to the configured count for whoever accumulates next
        accelerator.gradient_accumulation_steps = configured_steps
        accelerator.step = 0
    return UpdateStats(
        metrics=means.result(),
        grad_norms={name: sum(v) / len(v) if v else 0.0 for name, v in grad_norms.items()},
        optimizer_steps=applied,
        nonfinite_skipped=skipped,
        train_tokens=tokens,
    )
