"""The fields a user sets first, and the commented starter YAML of ``grpokit config init``.

Both are built from the same field docstrings and defaults as ``grpokit train --help`` and the generated
reference ``docs/configuration.md`` (:func:`~grpokit.config.loading.field_help`), so there is one source
of truth. The starter file lists every field of the chosen trainer in declaration order: the commonly set
ones (:data:`COMMON_FIELDS`) uncommented with their defaults, every other one commented out with its
default, each under its docstring. Loaded back (``grpokit train --config my.yaml``) it gives exactly the
trainer's default config.
"""

from __future__ import annotations

import re
import textwrap
from typing import Any

from pydantic import BaseModel

from grpokit.config.base import field_paths
from grpokit.config.loading import field_help
from grpokit.config.trainers import TRAINER_CONFIGS

__all__ = ["COMMON_FIELDS", "common_field_help", "first_sentence", "starter_yaml"]

_SHARED_FIRST = (
    "max_steps",
    "model.name_or_path",
    "model.dtype",
    "model.lora.r",
    "data.path",
    "data.prompts_per_step",
    "generation.max_new_tokens",
    "generation.temperature",
    "rewards.reward_funcs",
    "optim.learning_rate",
    "logging.output_dir",
    "checkpoint.save_steps",
)

COMMON_FIELDS: dict[str, tuple[str, ...]] = {
    "grpo": (*_SHARED_FIRST, "algorithm.loss_type", "algorithm.beta", "algorithm.num_generations"),
    "ppo": (*_SHARED_FIRST, "algorithm.beta", "algorithm.num_iterations", "algorithm.vf_coef"),
}
"""Per trainer, the dotted paths of the fields a user sets first (what a TRL user sets first: the model, the
dataset, the rewards, the group size, the KL coefficient, the learning rate, the run length, completion
length and temperature, batch size, precision, LoRA, where the run goes), in declaration order. Shown by
``grpokit train --help`` and uncommented in ``grpokit config init``; every other field keeps its default."""

_WIDTH = 100


def _plain(text: str) -> str:
    """A docstring as plain text: reST ``code`` becomes `code`, as in the Markdown reference."""
    return text.replace("``", "`")


def first_sentence(text: str) -> str:
    """The first sentence of a field's description (its one-line summary)."""
    return re.split(r"(?<=[.;])\s+(?=[A-Z(`])", text.strip(), maxsplit=1)[0]


def _trainer_class(trainer: str) -> type[BaseModel]:
    if trainer not in TRAINER_CONFIGS:
        raise ValueError(f"unknown trainer {trainer!r}; valid: {', '.join(TRAINER_CONFIGS)}")
    return TRAINER_CONFIGS[trainer]


def _common_for(cls: type[BaseModel]) -> tuple[str, ...]:
    trainer = cls.model_fields["trainer"].default
    # A subclass (a demo config) has the fields of its trainer: the same list applies.
    return COMMON_FIELDS.get(trainer, ())


def common_field_help(cls: type[BaseModel]) -> list[tuple[str, str, str]]:
    """``(dotted path, default as YAML, one-line description)`` of the commonly set fields of ``cls``."""
    common = set(_common_for(cls))
    return [
        (path, default, first_sentence(text)) for path, default, text in field_help(cls) if path in common
    ]


def _comment(text: str, prefix: str) -> list[str]:
    return textwrap.wrap(
        _plain(text), width=_WIDTH, initial_indent=prefix, subsequent_indent=prefix,
        break_on_hyphens=False, break_long_words=False,
    )  # fmt: skip


def starter_yaml(trainer: str = "grpo", *, minimal: bool = False) -> str:
    """A commented YAML config for ``trainer`` (``grpo`` or ``ppo``) that loads back to its defaults.

    The commonly set fields (:data:`COMMON_FIELDS`) are uncommented with their defaults; with ``minimal``
    they are the only ones written, otherwise every other field follows, commented out, with its default.
    Each field sits under its docstring, the text of ``docs/configuration.md``.
    """
    cls = _trainer_class(trainer)
    common = set(COMMON_FIELDS[trainer])
    leaves = {path: (default, text) for path, default, text in field_help(cls)}
    lines = [
        f"# A grpokit {trainer.upper()} config: grpokit train --config THIS_FILE [--FIELD VALUE ...]",
        f"# Written by `grpokit config init --trainer {trainer}`; every value below is the default.",
        "# The fields set first are uncommented: fill in model.name_or_path, data.path and",
        "# rewards.reward_funcs (or rewards.reward_model) before training."
        + ("" if minimal else " Every other field is listed"),
    ]
    if not minimal:
        lines.append("# commented out: uncomment a line (and its section's header) to change it.")
    lines += [
        "# Reference of every field: docs/configuration.md (or grpokit train --help-all).",
        "",
        *_comment(cls.model_fields["trainer"].description or "", "# "),
        f"trainer: {trainer}",
    ]

    def has_common(prefix: str) -> bool:
        return any(path.startswith(prefix) for path in common)

    def render(section: type[BaseModel], prefix: str, indent: int, comment_col: int | None) -> None:
        for name, info in section.model_fields.items():
            path = prefix + name
            if path == "trainer":
                continue
            ann: Any = info.annotation
            is_section = isinstance(ann, type) and issubclass(ann, BaseModel)
            active = has_common(path + ".") if is_section else path in common
            if minimal and not active:
                continue
            col = comment_col if comment_col is not None or active else indent

            def line(content: str, col: int | None = col) -> str:
                if col is None:
                    return " " * indent + content
                return " " * col + "# " + " " * (indent - col) + content

            if indent == 0:
                lines.append("")
            # Inside a commented-out section a docstring is commented twice, so that uncommenting the
            # section's lines leaves it a comment.
            text = (info.description or "") if is_section else leaves[path][1]
            if comment_col is None:
                lines.extend(_comment(text, " " * indent + "# "))
            else:
                lines.extend(_comment(text, " " * comment_col + "# " + " " * (indent - comment_col) + "# "))
            if is_section:
                lines.append(line(f"{name}:"))
                render(ann, path + ".", indent + 2, col)
            else:
                lines.append(line(f"{name}: {leaves[path][0]}"))

    render(cls, "", 0, None)
    return "\n".join(lines) + "\n"


def _check_common_fields() -> None:
    """Every common field names a real field of its trainer (run by the tests)."""
    for trainer, paths in COMMON_FIELDS.items():
        unknown = set(paths) - set(field_paths(TRAINER_CONFIGS[trainer]))
        if unknown:
            raise ValueError(f"COMMON_FIELDS[{trainer!r}] names unknown fields: {sorted(unknown)}")
