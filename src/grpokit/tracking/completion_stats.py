"""Length gaming and repetition in sampled completions, as plain numbers (pure functions, no model).

Over-optimised policies often drift towards longer outputs and towards repeating themselves (Singhal et
al. 2023, arXiv 2310.03716; Gao et al. 2022, arXiv 2210.10760). These two measures are what the reward-hacking
experiment reports for GRPO and PPO; they work on any sequence of tokens (characters, words or ids).
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence, Sized

__all__ = ["mean_length", "repeated_ngram_rate", "mean_repeated_ngram_rate"]


def repeated_ngram_rate(tokens: Sequence[Hashable], n: int = 3) -> float:
    """Share of a sequence's n-grams that repeat an n-gram seen earlier in the same sequence.

        rate = (#n-grams - #distinct n-grams) / #n-grams,   #n-grams = len(tokens) - n + 1

    0 when every n-gram is new (and for sequences shorter than ``n``, which have none); it approaches 1 for
    a sequence that is one n-gram repeated (``"99999999"``, n = 3: 6 n-grams, 1 distinct, rate 5/6).

    Raises:
        ValueError: ``n < 1``.
    """
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    total = len(tokens) - n + 1
    if total <= 0:
        return 0.0
    grams = {tuple(tokens[i : i + n]) for i in range(total)}
    return (total - len(grams)) / total


def mean_repeated_ngram_rate(sequences: Sequence[Sequence[Hashable]], n: int = 3) -> float:
    """:func:`repeated_ngram_rate` averaged over ``sequences`` (each counts once, whatever its length).

    Raises:
        ValueError: no sequences.
    """
    if not sequences:
        raise ValueError("no sequences to measure")
    return sum(repeated_ngram_rate(s, n) for s in sequences) / len(sequences)


def mean_length(sequences: Sequence[Sized]) -> float:
    """Mean number of tokens per sequence.

    Raises:
        ValueError: no sequences.
    """
    if not sequences:
        raise ValueError("no sequences to measure")
    return sum(len(s) for s in sequences) / len(sequences)

