"""Several reward functions (and optionally a reward model or a process reward) combined into one score.

For sample i and the functions F_i that apply to it (return a number, not ``None``)::

    r_i = sum_{f in F_i} w_f * f(x_i, y_i)

A sample no function applies to (F_i empty) is *unscored*: its reward is NaN, ``scored[i]`` is False, and the
trainer leaves it out of its group's baseline and masks it out of the loss. It is counted in
``rewards/unscored_fraction``; it is never turned into a 0 reward.

A function that fails (raises, times out, returns the wrong number of values or a NaN) is handled by the
:class:`~grpokit.rewards.failures.RewardFailurePolicy`: an error naming it, or the fallback value counted in
``rewards/<name>/failures`` (see :mod:`grpokit.rewards.failures`).

With a process reward, each sample gets steps ``[(step_end, score), ...]`` which become the (N, S)
``step_rewards`` / ``step_ends`` tensors of :func:`grpokit.algorithms.process_advantages`; a sample's reward is
then the mean of its step scores (for logging and dynamic sampling), and the outcome functions are only logged.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch

from grpokit.rewards.base import resolve_reward
from grpokit.rewards.failures import RewardFailurePolicy, guarded_call

if TYPE_CHECKING:
    from grpokit.config import RewardConfig
    from grpokit.rollout.batch import RolloutBatch

__all__ = ["RewardPipeline", "RewardScores"]


@dataclass
class RewardScores:
    """The scores of one rollout batch (N responses, S the most steps of any response)."""

    rewards: torch.Tensor  # (N,) float32, weighted sum over applicable functions; NaN where unscored
    scored: torch.Tensor  # (N,) bool, False when no function applied to the sample
    per_function: dict[str, list[float | None]]  # name -> N raw values (None = not applicable)
    metrics: dict[str, float] = field(default_factory=dict)
    step_rewards: torch.Tensor | None = None  # (N, S) float32 step scores (process rewards only), 0 padded
    step_ends: torch.Tensor | None = None  # (N, S) long completion-token index of each step end, -1 padded

    @classmethod
    def concat(cls, parts: Sequence[RewardScores], metrics: dict[str, float] | None = None) -> RewardScores:
        """The scores of several batches as one, rows in order; step tensors padded to the longest S.

        ``metrics``: the combined batch's metrics (default: the first part's, for callers that recompute them).
        """
        if len(parts) == 1 and metrics is None:
            return parts[0]
        step_rewards = step_ends = None
        steps = [
            (p.step_rewards, p.step_ends)
            for p in parts
            if p.step_rewards is not None and p.step_ends is not None
        ]
        if steps:
            if len(steps) != len(parts):
                raise ValueError("cannot concatenate reward scores with and without process-reward steps")
            S = max(r.shape[1] for r, _ in steps)
            pad = torch.nn.functional.pad
            step_rewards = torch.cat([pad(r, (0, S - r.shape[1])) for r, _ in steps])
            step_ends = torch.cat([pad(e, (0, S - e.shape[1]), value=-1) for _, e in steps])
        return cls(
            rewards=torch.cat([p.rewards for p in parts]),
            scored=torch.cat([p.scored for p in parts]),
            per_function={k: [v for p in parts for v in p.per_function[k]] for k in parts[0].per_function},
            metrics=parts[0].metrics if metrics is None else metrics,
            step_rewards=step_rewards,
            step_ends=step_ends,
        )


def _function_name(fn: Callable, spec: str | None) -> str:
    if spec is not None:
        return spec
    return getattr(fn, "name", None) or getattr(fn, "__name__", None) or type(fn).__name__


def _check_values(name: str, values: Any, n: int) -> list[float | None]:
    """The function's result as N floats or ``None``; anything else is an error naming the function."""
    if isinstance(values, torch.Tensor):
        values = values.tolist()
    if not isinstance(values, (list, tuple)):
        raise ValueError(
            f"reward function {name!r} returned {type(values).__name__}; expected a list of {n} floats"
        )
    if len(values) != n:
        raise ValueError(f"reward function {name!r} returned {len(values)} values for {n} completions")
    out: list[float | None] = []
    for i, v in enumerate(values):
        if v is None:
            out.append(None)
            continue
        if isinstance(v, torch.Tensor) and v.numel() == 1:
            v = v.item()
        if not isinstance(v, numbers.Real):
            raise ValueError(
                f"reward function {name!r} returned a non-numeric value {v!r} for completion {i}"
            )
        v = float(v)
        if not math.isfinite(v):
            raise ValueError(f"reward function {name!r} returned a non-finite value {v} for completion {i}")
        out.append(v)
    return out


class RewardPipeline:
    """Weighted reward functions, optionally a process reward; ``score(batch)`` gives :class:`RewardScores`.

    Args:
        functions: reward functions (the protocol of :mod:`grpokit.rewards.base`).
        weights: one per function (default all 1).
        names: metric names, one per function (default: the spec or ``__name__``).
        process_function: optional process reward returning per-sample ``[(step_end, score), ...]``.
        process_unit: ``"token"`` when step ends are completion token indices, ``"char"`` for character
            offsets in the completion text (mapped to the token that holds the character; needs ``tokenizer``).
        tokenizer: decodes completions for ``process_unit="char"``.
        failure_policy: what a failing function does (default: raise an error naming it).
    """

    def __init__(
        self,
        functions: Sequence[Callable],
        weights: Sequence[float] | None = None,
        names: Sequence[str] | None = None,
        *,
        process_function: Callable | None = None,
        process_unit: str = "token",
        tokenizer: Any = None,
        failure_policy: RewardFailurePolicy | None = None,
    ):
        if not functions and process_function is None:
            raise ValueError("RewardPipeline needs at least one reward function or a process reward")
        self.functions = list(functions)
        self.weights = [1.0] * len(self.functions) if weights is None else [float(w) for w in weights]
        if len(self.weights) != len(self.functions):
            raise ValueError(
                f"got {len(self.weights)} reward weights for {len(self.functions)} reward functions"
            )
        self.names = list(names) if names is not None else [_function_name(f, None) for f in self.functions]
        if len(set(self.names)) != len(self.names):
            raise ValueError(f"reward function names must be unique, got {self.names}")
        if process_unit not in ("token", "char"):
            raise ValueError(f"process_unit must be 'token' or 'char', got {process_unit!r}")
        if process_unit == "char" and process_function is not None and tokenizer is None:
            raise ValueError("process_unit='char' needs the tokenizer to map characters to tokens")
        self.process_function = process_function
        self.process_unit = process_unit
        self.tokenizer = tokenizer
        self.failure_policy = failure_policy or RewardFailurePolicy()
        self._reported_failures: set[str] = set()  # functions whose first failure was logged

    @classmethod
    def from_config(
        cls,
        config: RewardConfig,
        *,
        task: str | None = None,
        max_new_tokens: int | None = None,
        tokenizer: Any = None,
        device: str | torch.device = "cpu",
    ) -> RewardPipeline:
        """Resolve ``reward_funcs`` (built-ins get ``task``, ``answer_column``, ``max_new_tokens`` when they
        take them), load ``reward_model`` and ``process_reward_func``."""
        context = {"task": task, "answer_column": config.answer_column, "max_new_tokens": max_new_tokens}
        functions = [resolve_reward(s, config.reward_kwargs.get(s), context) for s in config.reward_funcs]
        # Metric names: the function name of a 'module:function' spec, unless two specs share it.
        short = [spec.rsplit(":", 1)[-1] for spec in config.reward_funcs]
        names = [s if short.count(s) == 1 else spec for s, spec in zip(short, config.reward_funcs)]
        if config.reward_model is not None:
            from grpokit.rewards.reward_model import RewardModel

            functions.append(RewardModel(config.reward_model, device=device))
            names.append("reward_model")
        process = None
        if config.process_reward_func is not None:
            process = resolve_reward(config.process_reward_func, None, context)
        return cls(
            functions,
            config.reward_weights,
            names,
            process_function=process,
            process_unit=config.process_reward_unit,
            tokenizer=tokenizer,
            failure_policy=RewardFailurePolicy(
                config.reward_failure, config.reward_fallback_value, config.reward_timeout_s
            ),
        )

    def score(self, batch: RolloutBatch) -> RewardScores:
        """Score every completion of ``batch``; see the module docstring for how ``None`` is handled."""
        n = batch.num_responses
        per_function: dict[str, list[float | None]] = {}
        total = torch.zeros(n, dtype=torch.float64)
        applies = torch.zeros(n, dtype=torch.bool)
        metrics: dict[str, float] = {}
        for fn, name, weight in zip(self.functions, self.names, self.weights):
            values, failures = guarded_call(
                fn, name, batch.prompts, batch.completions, batch.columns, self.failure_policy,
                self._reported_failures,
            )  # fmt: skip
            per_function[name] = values
            metrics[f"rewards/{name}/failures"] = float(failures)
            present = torch.tensor([v is not None for v in values], dtype=torch.bool)
            numeric = torch.tensor([0.0 if v is None else v for v in values], dtype=torch.float64)
            total += weight * numeric
            applies |= present
            metrics.update(_stats(f"rewards/{name}", numeric[present], 1.0 - present.float().mean().item()))
        rewards = torch.where(applies, total, torch.nan).float()  # (N,)
        step_rewards = step_ends = None
        if self.process_function is not None:
            # (N, S), (N, S), int
            step_rewards, step_ends, failures = self._score_steps(batch, self.process_function)
            metrics["rewards/process/failures"] = float(failures)
            has_steps = (step_ends >= 0).any(1)  # (N,)
            step_mean = (step_rewards * (step_ends >= 0)).sum(1) / (step_ends >= 0).sum(1).clamp(
                min=1
            )  # (N,)
            rewards = torch.where(has_steps, step_mean, torch.nan).float()
            applies = has_steps
            metrics.update(
                _stats(
                    "rewards/process",
                    step_rewards[step_ends >= 0].double(),
                    1 - has_steps.float().mean().item(),
                )
            )
        metrics["rewards/unscored_fraction"] = 1.0 - applies.float().mean().item()
        return RewardScores(rewards, applies, per_function, metrics, step_rewards, step_ends)

    def _score_steps(
        self, batch: RolloutBatch, process_function: Callable[..., Any]
    ) -> tuple[torch.Tensor, torch.Tensor, int]:
        """Run the process reward and pack its steps into (N, S) tensors (token indices, -1 padded); also
        return how many completions a failed call left unscored."""
        n = batch.num_responses
        name = _function_name(process_function, None)
        # A failed call leaves every completion without steps (unscored) under the fallback policy: a
        # made-up step score would be a reward the function never gave.
        result, failures = guarded_call(
            process_function, name, batch.prompts, batch.completions, batch.columns, self.failure_policy,
            self._reported_failures, check_values=False, kind="process reward",
        )  # fmt: skip
        lengths = batch.completion_mask.sum(1).long().tolist()  # real tokens per completion
        rows: list[list[tuple[int, float]]] = []
        for i, steps in enumerate(result):
            if steps is None:
                rows.append([])
                continue
            row = []
            for step in steps:
                if not (isinstance(step, (list, tuple)) and len(step) == 2):
                    raise ValueError(
                        f"process reward {name!r}: completion {i} has step {step!r}, expected (step_end, score)"
                    )
                end, score = step
                value = _check_values(name, [score], 1)[0]
                if value is None or not isinstance(end, numbers.Integral):
                    raise ValueError(
                        f"process reward {name!r}: completion {i} has step {step!r}, expected (int, float)"
                    )
                row.append((int(end), value))
            if self.process_unit == "char":
                row = self._chars_to_tokens(batch.completion_ids[i, : lengths[i]].tolist(), row, name, i)
            for end, _ in row:
                if not 0 <= end < lengths[i]:
                    raise ValueError(
                        f"process reward {name!r}: completion {i} has a step ending at token {end}, "
                        f"outside its {lengths[i]} tokens"
                    )
            rows.append(row)
        num_steps = max([len(r) for r in rows] + [1])
        step_rewards = torch.zeros(n, num_steps)
        step_ends = torch.full((n, num_steps), -1, dtype=torch.long)
        for i, row in enumerate(rows):
            for j, (end, value) in enumerate(row):
                step_ends[i, j] = end
                step_rewards[i, j] = value
        return step_rewards, step_ends, failures

    def _chars_to_tokens(
        self, ids: list[int], steps: list[tuple[int, float]], name: str, row: int
    ) -> list[tuple[int, float]]:
        """Map character offsets to the index of the token whose decoded text contains that character."""
        ends = [len(self.tokenizer.decode(ids[: t + 1], skip_special_tokens=True)) for t in range(len(ids))]
        out = []
        for char, value in steps:
            token = next((t for t, e in enumerate(ends) if e > char), None)
            if token is None or char < 0:
                raise ValueError(
                    f"process reward {name!r}: completion {row} has a step ending at character {char}, "
                    f"outside its {ends[-1] if ends else 0} characters"
                )
            out.append((token, value))
        return out


def _stats(prefix: str, values: torch.Tensor, none_fraction: float) -> dict[str, float]:
    """Mean/std (NaN when nothing applied: no value is invented) and the not-applicable fraction."""
    mean = values.mean().item() if values.numel() else math.nan
    std = values.std().item() if values.numel() > 1 else (0.0 if values.numel() else math.nan)
    return {f"{prefix}/mean": mean, f"{prefix}/std": std, f"{prefix}/none_fraction": none_fraction}
