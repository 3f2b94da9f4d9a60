"""Built-in rewards, registered by name: ``task``, ``task_steps``, ``accuracy``, ``format``, ``length_penalty``,
``math_verify``, ``think_answer_format`` and ``code_tests`` (sandboxed, :mod:`grpokit.rewards.code`).

Each is a factory (its options come from ``RewardConfig.reward_kwargs``) returning a function with the
reward protocol ``f(prompts, completions, **columns) -> list[float | None]``.
"""

from __future__ import annotations

import re
from typing import Any

from grpokit.rewards.code import make_code_tests_reward
from grpokit.rewards.registry import register_reward

__all__ = ["extract_final_answer", "normalize_answer"]

_BOXED = re.compile(r"\\boxed\s*\{")
_ANSWER_TAG = re.compile(r"<answer>(.*?)</answer>", re.DOTALL)
_ANSWER_IS = re.compile(r"answer\s*(?:is\s*:?|:)\s*(.+)", re.IGNORECASE)
_NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?|-?\.\d+")


def _last_boxed(text: str) -> str | None:
    """Content of the last ``\\boxed{...}``, braces balanced (``\\boxed{\\frac{1}{2}}`` -> ``\\frac{1}{2}``)."""
    starts = [m.end() for m in _BOXED.finditer(text)]
    if not starts:
        return None
    depth, start = 1, starts[-1]
    for i in range(start, len(text)):
        depth += {"{": 1, "}": -1}.get(text[i], 0)
        if depth == 0:
            return text[start:i]
    return None


def extract_final_answer(completion: str, numeric: bool = False) -> str:
    """The final answer of a completion, by the first convention it follows.

    Order: the last ``\\boxed{...}``; ``<answer>...</answer>``; text after ``####`` (GSM8K); text after
    "answer is"/"answer:"; then, when the reference is ``numeric``, the last number; else the whole text.
    """
    boxed = _last_boxed(completion)
    if boxed is not None:
        return boxed
    tags = _ANSWER_TAG.findall(completion)
    if tags:
        return tags[-1]
    if "####" in completion:
        return completion.rsplit("####", 1)[1]
    said = _ANSWER_IS.findall(completion)
    if said:
        return said[-1]
    if numeric:
        numbers = _NUMBER.findall(completion)
        if numbers:
            return numbers[-1]
    return completion


def normalize_answer(text: str) -> str:
    """Case, surrounding space/punctuation, ``$``, thousands separators and ``\\text{}`` do not matter."""
    text = text.strip()
    text = re.sub(r"\\text\{([^}]*)\}", r"\1", text)
    text = text.replace("$", "").strip().rstrip(".").strip()
    if re.fullmatch(r"-?\d{1,3}(,\d{3})+(\.\d+)?", text):
        text = text.replace(",", "")
    return " ".join(text.lower().split())


def _as_number(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None


def answers_match(completion: str, answer: Any) -> bool:
    """Exact final-answer match after normalisation; numbers compare by value (``3.0`` == ``3``)."""
    reference = normalize_answer(str(answer))
    ref_number = _as_number(reference)
    predicted = normalize_answer(extract_final_answer(completion, numeric=ref_number is not None))
    if ref_number is not None:
        value = _as_number(predicted)
        return value is not None and value == ref_number
    return predicted == reference


@register_reward("accuracy")
def accuracy(answer_column: str = "answer"):
    """1.0 when the completion's final answer equals the ``answer_column`` value, else 0.0; ``None`` for rows
    without a reference answer."""

    def accuracy_reward(
        prompts: list[Any], completions: list[str], **columns: list[Any]
    ) -> list[float | None]:
        if answer_column not in columns:
            raise ValueError(
                f"reward 'accuracy' needs a column {answer_column!r}; the dataset has {sorted(columns) or 'none'}"
            )
        return [
            None if ref is None else float(answers_match(c, ref))
            for c, ref in zip(completions, columns[answer_column])
        ]

    return accuracy_reward


@register_reward("task")
def task_reward(task: str | None = None, answer_column: str = "answer"):
    """1.0 when the built-in task's checker accepts the completion (``data.task``), else 0.0."""
    if task is None:
        raise ValueError("reward 'task' needs data.task (the built-in task whose checker scores completions)")
    from grpokit.data.tasks import get_task

    spec = get_task(task)

    def task_check(prompts: list[Any], completions: list[str], **columns: list[Any]) -> list[float | None]:
        answers = columns.get(answer_column)
        if answers is None:
            raise ValueError(
                f"reward 'task' needs a column {answer_column!r}; the dataset has {sorted(columns)}"
            )
        return [
            None if ref is None else float(bool(spec.check(p, c, ref)))
            for p, c, ref in zip(prompts, completions, answers)
        ]

    return task_check


@register_reward("task_steps")
def task_steps_reward(task: str | None = None):
    """Process reward of a built-in task whose steps can be checked (``data.task``, e.g. ``chain``): per
    completion, ``[(character offset of the step's last character, score), ...]`` from the task's
    ``step_scores``. Use it as ``rewards.process_reward_func`` with ``process_reward_unit: char``."""
    if task is None:
        raise ValueError("reward 'task_steps' needs data.task (a built-in task with checkable steps)")
    from grpokit.data.tasks import get_task

    spec = get_task(task)
    step_scores = getattr(spec, "step_scores", None)
    if step_scores is None:
        raise ValueError(f"reward 'task_steps': task {task!r} has no checkable steps (no step_scores); try 'chain'")

    def task_step_scores(
        prompts: list[Any], completions: list[str], **columns: list[Any]
    ) -> list[list[tuple[int, float]] | None]:
        return [step_scores(p, c) for p, c in zip(prompts, completions)]

    return task_step_scores


@register_reward("format")
def format_reward(pattern: str = r"^<think>.*?</think>\s*<answer>.*?</answer>$", mode: str = "fullmatch"):
    """1.0 when the completion matches ``pattern`` (DOTALL), else 0.0.

    ``mode`` is ``fullmatch`` (the whole stripped completion) or ``search`` (anywhere). The default is the
    DeepSeek-R1 ``<think>...</think><answer>...</answer>`` layout.
    """
    if mode not in ("fullmatch", "search"):
        raise ValueError(f"reward 'format': mode must be 'fullmatch' or 'search', got {mode!r}")
    try:
        regex = re.compile(pattern, re.DOTALL)
    except re.error as err:
        raise ValueError(f"reward 'format': invalid pattern {pattern!r}: {err}") from None
    match = regex.fullmatch if mode == "fullmatch" else regex.search

    def format_check(prompts: list[Any], completions: list[str], **columns: list[Any]) -> list[float | None]:
        return [float(match(c.strip()) is not None) for c in completions]

    return format_check


@register_reward("length_penalty")
def length_penalty(target_chars: int = 0, max_chars: int = 1000):
    """``-clip((len - target_chars) / (max_chars - target_chars), 0, 1)``: 0 up to ``target_chars``
    characters, falling linearly to -1 at ``max_chars`` and beyond."""
    if not 0 <= target_chars < max_chars:
        raise ValueError(
            f"reward 'length_penalty' needs 0 <= target_chars < max_chars, got {target_chars}, {max_chars}"
        )
    span = max_chars - target_chars

    def penalty(prompts: list[Any], completions: list[str], **columns: list[Any]) -> list[float | None]:
        return [-min(max(len(c) - target_chars, 0) / span, 1.0) for c in completions]

    return penalty


@register_reward("math_verify")
def math_verify_reward(answer_column: str = "answer", timeout_seconds: int | None = 5):
    """Mathematical equivalence of the final answer with ``answer_column`` (:func:`grpokit.rewards.math.math_verify`)."""

    def math_check(prompts: list[Any], completions: list[str], **columns: list[Any]) -> list[float | None]:
        from grpokit.rewards.math import math_verify

        if answer_column not in columns:
            raise ValueError(
                f"reward 'math_verify' needs a column {answer_column!r}; the dataset has {sorted(columns) or 'none'}"
            )
        return math_verify(prompts, completions, columns[answer_column], timeout_seconds=timeout_seconds)

    return math_check


@register_reward("think_answer_format")
def think_answer_format_reward():
    """DeepSeek-R1's strict ``<think>...</think><answer>...</answer>`` layout
    (:func:`grpokit.rewards.math.think_answer_format`)."""
    from grpokit.rewards.math import think_answer_format

    return think_answer_format


# The sandboxed code reward: its options are the flat SandboxLimits fields (see grpokit.rewards.code).
register_reward("code_tests")(make_code_tests_reward)
