"""Preference pairs for reward-model training: read, validated row by row, before any model loads.

A row holds the response that won a comparison (``chosen``), the one that lost (``rejected``), and optionally
the prompt both answer and a margin. Responses and prompts are text or chat messages
(``[{"role": ..., "content": ...}]``). Every error names the file, the row (and the line for text formats)
and the column, like the prompt datasets' (:mod:`grpokit.data.prompts`).
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from grpokit.data.prompts import _check_prompt, _load_rows, _where

__all__ = ["PreferencePair", "load_preference_pairs"]


@dataclass(frozen=True)
class PreferencePair:
    """One comparison: ``chosen`` was preferred to ``rejected`` (by at least ``margin``) as answers to
    ``prompt`` (``None``: the responses are whole texts)."""

    chosen: Any  # str, or a list of chat messages
    rejected: Any
    prompt: Any = None
    margin: float = 0.0


def load_preference_pairs(
    source: str | os.PathLike | Sequence[dict[str, Any]] | Any,
    *,
    chosen_column: str = "chosen",
    rejected_column: str = "rejected",
    prompt_column: str | None = "prompt",
    margin_column: str | None = "margin",
) -> list[PreferencePair]:
    """Read and validate preference pairs.

    Args:
        source: a ``.jsonl`` / ``.json`` / ``.csv`` / ``.parquet`` file, a ``datasets.save_to_disk`` folder, a
            ``datasets.Dataset``, or a list of dicts.
        chosen_column, rejected_column: the two responses; every row needs both, non-empty.
        prompt_column: the prompt, used when the first row has it (then every row needs it); ``None``: never.
        margin_column: a number per pair, used when the first row has it (then every row needs a finite one);
            ``None``: never.

    Raises:
        ValueError: an empty source, a row missing a column or with an empty side, a malformed chat message,
            a prompt that is text while the responses are chat messages, or a margin that is not a number;
            the message names the source, the row and the column.
    """
    rows, lines, name = _load_rows(source, None, None)
    if not rows:
        raise ValueError(f"{name}: no preference pairs (the file has no rows)")
    use_prompt = prompt_column is not None and prompt_column in rows[0]
    use_margin = margin_column is not None and margin_column in rows[0]
    columns = [chosen_column, rejected_column]
    columns += [prompt_column] if use_prompt and prompt_column is not None else []
    columns += [margin_column] if use_margin and margin_column is not None else []
    available = list(dict.fromkeys(key for row in rows for key in row))
    pairs = []
    for index, row in enumerate(rows):
        where = f"{name}: {_where(index, lines)}"
        for column in columns:
            if column not in row or row[column] is None:
                raise ValueError(f"{where}: column {column!r} is missing; available columns: {available}")
        for column in (chosen_column, rejected_column):
            value = row[column]
            if isinstance(value, str) and not value.strip():
                raise ValueError(
                    f"{where}: column {column!r} is empty (both sides of a pair need a response)"
                )
            _check_prompt(value, where, column)  # text or well-formed chat messages, non-empty
        prompt = row[prompt_column] if use_prompt and prompt_column is not None else None
        if prompt is not None:
            _check_prompt(prompt, where, str(prompt_column))
            if isinstance(prompt, str) and any(
                isinstance(row[c], list) for c in (chosen_column, rejected_column)
            ):
                raise ValueError(
                    f"{where}: column {prompt_column!r} is text but the responses are chat messages; give the "
                    "prompt as chat messages too"
                )
        margin = 0.0
        if use_margin and margin_column is not None:
            try:
                margin = float(row[margin_column])
            except (TypeError, ValueError):
                raise ValueError(
                    f"{where}: column {margin_column!r} must be a number, got {row[margin_column]!r}"
                ) from None
            if not math.isfinite(margin):
                raise ValueError(f"{where}: column {margin_column!r} is {margin}, not a finite number")
        pairs.append(PreferencePair(row[chosen_column], row[rejected_column], prompt, margin))
    return pairs
