"""The prompts a language-model trainer trains on: loaded and checked before any model loads."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from grpokit.config import GRPOConfig, PPOConfig
from grpokit.data import load_prompts
from grpokit.data import screen_prompt_lengths as screen_lengths
from grpokit.data.tasks import get_task
from grpokit.engine import faults
from grpokit.rollout.prompts import encode_prompts

__all__ = ["load_dataset", "screen_prompt_lengths"]


def load_dataset(
    config: GRPOConfig | PPOConfig,
    rows: Sequence[dict[str, Any]] | None = None,
    *,
    config_rewards: bool = True,
) -> Sequence[dict[str, Any]]:
    """Prompt rows from ``rows``, ``data.path`` (JSONL/CSV/Parquet/saved dataset) or the built-in ``data.task``.

    Rows from a file or from ``rows`` are validated by :func:`grpokit.data.load_prompts`: a missing column or
    an empty prompt is an error naming the row, raised before any model is loaded. The answer column is
    required when a configured reward reads it (``config_rewards``: the config's rewards are the ones used).
    """
    data = config.data
    if rows is None and data.path is None:
        if data.task is None:
            raise ValueError(
                "no prompts: set data.path (a JSONL, CSV or Parquet file), data.task (a built-in task), or "
                "pass dataset=[{'prompt': ...}, ...]"
            )
        return get_task(data.task).make_problems(data.num_train_problems, seed=config.seed, split="train")
    required = list(data.required_columns)
    if config_rewards and {"task", "accuracy", "math_verify"} & set(config.rewards.reward_funcs):
        required.append(config.rewards.answer_column)
    source = data.path if rows is None else list(rows)
    dataset = load_prompts(
        source, prompt_column=data.prompt_column, required_columns=tuple(required), id_column=data.id_column
    )
    return dataset.with_system_prompt(data.system_prompt) if data.system_prompt else dataset


def screen_prompt_lengths(
    config: Any, tokenizer: Any, rows: Sequence[dict[str, Any]]
) -> tuple[Sequence[dict[str, Any]], dict[str, float]]:
    """Apply ``prompt_truncation`` to every row before training (an error names the row at once, not
    hours in); returns the rows and the ``data/truncated_prompts`` or ``data/skipped_prompts`` count."""
    gen = config.generation
    if gen.max_prompt_length is None:
        return rows, {}
    prompts = [row[config.data.prompt_column] for row in rows]
    lengths = [len(ids) for ids in encode_prompts(tokenizer, prompts)]
    kept, counts = screen_lengths(
        rows, lengths, gen.max_prompt_length, gen.prompt_truncation,
        source=getattr(rows, "source", "<dataset>"), setting="generation.max_prompt_length",
    )  # fmt: skip
    if gen.prompt_truncation == "error":
        return kept, {}
    key = "skipped" if gen.prompt_truncation == "skip" else "truncated"
    if counts[key]:
        faults.log.warning(
            "%d of %d prompts are longer than generation.max_prompt_length=%d and are %s "
            "(prompt_truncation: %s)", counts[key], len(rows), gen.max_prompt_length,
            "skipped" if key == "skipped" else "left-truncated", gen.prompt_truncation,
        )  # fmt: skip
    return kept, {f"data/{key}_prompts": float(counts[key])}
