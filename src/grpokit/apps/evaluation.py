"""Evaluate a model on verifiable problems: greedy accuracy and unbiased pass@k.

pass@k is the probability that at least one of k samples is correct. Drawing n >= k samples per problem
and counting c correct ones, the unbiased estimator of Chen et al. (2021, "Evaluating Large Language
Models Trained on Code", arXiv:2107.03374) is

    pass@k = 1 - C(n - c, k) / C(n, k)

averaged over problems; it is computed as a running product to stay stable for large n.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k of one problem from ``n`` samples with ``c`` correct: ``1 - C(n-c, k) / C(n, k)``."""
    if not 0 <= c <= n or not 1 <= k <= n:
        raise ValueError(f"need 0 <= c <= n and 1 <= k <= n, got n={n}, c={c}, k={k}")
    if n - c < k:
        return 1.0
    # C(n-c, k) / C(n, k) = prod_{i=n-c+1}^{n} (1 - k / i)
    return float(1.0 - np.prod(1.0 - k / np.arange(n - c + 1, n + 1)))


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

    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    n = k if num_samples is None else num_samples
    if n < k:
        raise ValueError(f"num_samples ({n}) must be >= k ({k})")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    rows = list(rows)
    if not rows:
        raise ValueError("rows is empty: nothing to evaluate")
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
