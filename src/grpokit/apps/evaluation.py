"""Evaluate a model on verifiable problems: greedy accuracy and unbiased pass@k.

pass@k is the probability that at least one of k samples is correct. Drawing n >= k samples per problem
and counting c correct ones, the unbiased estimator of Chen et al. (2021, "Evaluating Large Language
Models Trained on Code", arXiv:2107.03374) is

    pass@k = 1 - C(n - c, k) / C(n, k)

averaged over problems; it is computed as a running product to stay stable for large n.

Two evaluations share it:

* :func:`evaluate`: a checker ``check(prompt, completion, answer) -> bool`` (a built-in task's): greedy
  accuracy and pass@k.
* :func:`evaluate_rewards`: the rewards a run trained with (a :class:`~grpokit.rewards.RewardPipeline` built
  from the config's ``rewards`` section: ``reward_funcs``, ``reward_weights``, ``reward_kwargs``,
  ``reward_model``) on the user's held-out rows (:func:`held_out_rows`). It reports the *mean reward* of
  the greedy completions, always. A completion counts as *solved* when its reward reaches a threshold:
  the one given, or, when none is given and every reward observed is exactly 0 or 1 (a pass/fail reward),
  a reward of 1. Then the solved fraction (``accuracy``) and pass@k are reported too; with graded rewards
  and no threshold they are not (a mean reward has no "correct" to count). A completion no function
  scores (every one returned ``None``) is left out of the means and is never solved. Training-time reward
  shaping (``rewards.overlong_buffer_length``) is not applied: the score is the rewards' own.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from grpokit.config import GRPOConfig, PPOConfig


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k of one problem from ``n`` samples with ``c`` correct: ``1 - C(n-c, k) / C(n, k)``."""
    if not 0 <= c <= n or not 1 <= k <= n:
        raise ValueError(f"need 0 <= c <= n and 1 <= k <= n, got n={n}, c={c}, k={k}")
    if n - c < k:
        return 1.0
    # C(n-c, k) / C(n, k) = prod_{i=n-c+1}^{n} (1 - k / i)
    return float(1.0 - np.prod(1.0 - k / np.arange(n - c + 1, n + 1)))


def _checked_sampling(
    k: int, num_samples: int | None, batch_size: int, rows: Sequence[dict[str, Any]]
) -> tuple[int, list[dict[str, Any]]]:
    """``(n, rows)``: the samples per row (``num_samples``, default ``k``) and the rows as a list; the argument
    that is out of range is named."""
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    n = k if num_samples is None else num_samples
    if n < k:
        raise ValueError(f"num_samples ({n}) must be >= k ({k})")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    listed = list(rows)
    if not listed:
        raise ValueError("rows is empty: nothing to evaluate")
    return n, listed


def evaluate(
    model: Any,
    tokenizer: Any,
    rows: Sequence[dict[str, Any]],
    check_fn: Callable[[Any, str, Any], bool],
    *,
    k: int = 1,
    num_samples: int | None = None,
    temperature: float = 1.0,
    max_new_tokens: int = 16,
    batch_size: int = 64,
    seed: int = 0,
    prompt_column: str = "prompt",
    answer_column: str = "answer",
    top_p: float = 1.0,
    top_k: int = 0,
) -> dict[str, Any]:
    """Greedy accuracy, and pass@k from sampled completions when ``k > 1``.

    Args:
        model, tokenizer: the policy to evaluate (it is put back in its training mode afterwards).
        rows: problems, each with ``prompt_column`` and ``answer_column``.
        check_fn: ``check_fn(prompt, completion, answer) -> bool`` (e.g. ``get_task("addition").check``).
        k: pass@k's k; 1 evaluates greedy decoding only.
        num_samples: n samples per problem for pass@k (n >= k); default k.
        temperature, top_p, top_k: sampling settings for pass@k.
        max_new_tokens: completion length limit.
        batch_size: completions per ``generate`` call (prompts x samples).
        seed: sampling seed.

    Returns:
        ``{"accuracy", "num_problems"}``, plus ``"pass@k"``, ``"sample_accuracy"`` (fraction of the
        sampled completions that are correct, i.e. pass@1 at ``temperature``) and ``"num_samples"``
        when ``k > 1``.
    """
    from grpokit.rollout import TransformersSampler

    n, rows = _checked_sampling(k, num_samples, batch_size, rows)
    for index, row in enumerate(rows):
        for column in (prompt_column, answer_column):
            if column not in row:
                raise ValueError(f"row {index} has no column {column!r}; it has {sorted(row)}")
    prompts = [row[prompt_column] for row in rows]
    answers = [row[answer_column] for row in rows]

    def correct_counts(sampler: TransformersSampler, G: int) -> list[int]:
        per_call = max(1, batch_size // G)
        counts: list[int] = []
        for start in range(0, len(rows), per_call):
            batch = sampler.generate(prompts[start : start + per_call], G)
            right = [
                bool(check_fn(prompt, completion, answers[start + group]))
                for prompt, completion, group in zip(
                    batch.prompts, batch.completions, batch.group_ids.tolist()
                )
            ]
            counts.extend(sum(right[i * G : (i + 1) * G]) for i in range(len(right) // G))
        return counts

    greedy = TransformersSampler(model, tokenizer, max_new_tokens=max_new_tokens, temperature=0.0)
    result: dict[str, Any] = {
        "accuracy": float(np.mean(correct_counts(greedy, 1))),
        "num_problems": len(rows),
    }
    if k > 1:
        sampler = TransformersSampler(
            model,
            tokenizer,
            max_new_tokens=max_new_tokens,
            temperature=temperature,
            top_p=top_p,
            top_k=top_k,
            seed=seed,
        )
        counts = correct_counts(sampler, n)
        result[f"pass@{k}"] = float(np.mean([pass_at_k(n, c, k) for c in counts]))
        result["sample_accuracy"] = float(np.sum(counts) / (n * len(rows)))
        result["num_samples"] = n
    return result


def held_out_rows(
    config: GRPOConfig | PPOConfig,
    num_problems: int | None = None,
    rows: Sequence[dict[str, Any]] | None = None,
) -> list[dict[str, Any]]:
    """The rows ``grpokit eval --config`` scores, read and checked as for training (``data.system_prompt``
    applied, the answer column required when a configured reward reads it): ``rows`` when given (a built-in
    task's held-out problems, :func:`grpokit.apps.demo.held_out_problems`), else the first ``num_problems``
    rows of ``data.path`` (all by default)."""
    from grpokit.trainers.prompts import load_dataset

    if num_problems is not None and num_problems < 1:
        raise ValueError(f"num_problems must be >= 1, got {num_problems}")
    loaded = list(load_dataset(config, rows))
    return loaded[:num_problems] if num_problems is not None else loaded


def _mean(values: Sequence[float]) -> float | None:
    """Mean of the finite values (None when there are none: JSON has no NaN)."""
    kept = [v for v in values if not math.isnan(v)]
    return float(np.mean(kept)) if kept else None


def evaluate_rewards(
    model: Any,
    tokenizer: Any,
    rows: Sequence[dict[str, Any]],
    rewards: Any,
    *,
    k: int = 1,
    num_samples: int | None = None,
    threshold: float | None = None,
    temperature: float = 1.0,
    top_p: float = 1.0,
    top_k: int = 0,
    max_new_tokens: int = 256,
    max_prompt_length: int | None = None,
    prompt_truncation: str = "error",
    batch_size: int = 64,
    seed: int = 0,
    prompt_column: str = "prompt",
) -> dict[str, Any]:
    """Mean reward of greedy completions, and the solved fraction and pass@k where "solved" is defined.

    Args:
        model, tokenizer: the policy to evaluate (its training mode is restored afterwards).
        rows: prompt rows; every other column reaches the reward functions as a keyword argument.
        rewards: a :class:`~grpokit.rewards.RewardPipeline` (``score(batch)`` gives the weighted rewards).
        k: pass@k's k; 1 evaluates greedy decoding only.
        num_samples: n sampled completions per row for pass@k (n >= k); default k.
        threshold: a completion is solved when its reward is >= this. ``None``: solved means a reward of 1
            when every observed reward is 0 or 1, else solved (accuracy, pass@k) is not reported.
        temperature, top_p, top_k: sampling settings of the k > 1 samples.
        max_new_tokens, max_prompt_length, prompt_truncation: as the sampler's
            (:class:`~grpokit.rollout.TransformersSampler`).
        batch_size: completions per ``generate`` call (rows x samples).
        seed: sampling seed.

    Returns:
        ``{"num_problems", "mean_reward", "unscored_fraction", "per_function", "threshold"}`` (the reward
        means over the greedy completions; ``per_function``: each function's own mean, unweighted), plus
        ``"accuracy"`` (greedy solved fraction) when solved is defined; when ``k > 1`` also
        ``"num_samples"``, ``"sample_mean_reward"`` and, when solved is defined, ``"pass@k"`` and
        ``"sample_accuracy"`` (the solved fraction of the samples: pass@1 at ``temperature``).
    """
    from grpokit.rollout import TransformersSampler

    n, rows = _checked_sampling(k, num_samples, batch_size, rows)
    for index, row in enumerate(rows):
        if prompt_column not in row:
            raise ValueError(f"row {index} has no column {prompt_column!r}; it has {sorted(row)}")
    columns = [name for name in dict.fromkeys(key for row in rows for key in row) if name != prompt_column]

    def scored(sampler: TransformersSampler, G: int) -> tuple[list[list[float]], dict[str, list[float]]]:
        """Per row, its G rewards (NaN: unscored); per function, its values (NaN: not applicable)."""
        per_row: list[list[float]] = []
        per_function: dict[str, list[float]] = {}
        per_call = max(1, batch_size // G)
        for start in range(0, len(rows), per_call):
            chunk = rows[start : start + per_call]
            batch = sampler.generate(
                [row[prompt_column] for row in chunk], G, {c: [row.get(c) for row in chunk] for c in columns}
            )
            scores = rewards.score(batch)
            values = scores.rewards.tolist()  # (B*G,) group by group, NaN where unscored
            per_row.extend(values[i * G : (i + 1) * G] for i in range(len(chunk)))
            for name, raw in scores.per_function.items():
                per_function.setdefault(name, []).extend(math.nan if v is None else v for v in raw)
        return per_row, per_function

    knobs: dict[str, Any] = {
        "max_new_tokens": max_new_tokens,
        "max_prompt_length": max_prompt_length,
        "prompt_truncation": prompt_truncation,
    }
    greedy, per_function = scored(TransformersSampler(model, tokenizer, temperature=0.0, **knobs), 1)
    greedy_rewards = [values[0] for values in greedy]
    sampled: list[list[float]] = []
    if k > 1:
        sampler = TransformersSampler(
            model, tokenizer, temperature=temperature, top_p=top_p, top_k=top_k, seed=seed, **knobs
        )
        sampled, _ = scored(sampler, n)
    if threshold is None:
        observed = [v for v in greedy_rewards + [v for row in sampled for v in row] if not math.isnan(v)]
        if observed and all(v in (0.0, 1.0) for v in observed):
            threshold = 1.0  # pass/fail rewards: solved is a reward of 1

    def solved(value: float) -> bool:
        return threshold is not None and not math.isnan(value) and value >= threshold

    result: dict[str, Any] = {
        "num_problems": len(rows),
        "mean_reward": _mean(greedy_rewards),
        "unscored_fraction": float(np.mean([math.isnan(v) for v in greedy_rewards])),
        "per_function": {name: _mean(values) for name, values in per_function.items()},
        "threshold": threshold,
    }
    if threshold is not None:
        result["accuracy"] = float(np.mean([solved(v) for v in greedy_rewards]))
    if k > 1:
        result["num_samples"] = n
        result["sample_mean_reward"] = _mean([v for row in sampled for v in row])
        if threshold is not None:
            counts = [sum(solved(v) for v in row) for row in sampled]
            result[f"pass@{k}"] = float(np.mean([pass_at_k(n, c, k) for c in counts]))
            result["sample_accuracy"] = float(np.sum(counts) / (n * len(rows)))
    return result
