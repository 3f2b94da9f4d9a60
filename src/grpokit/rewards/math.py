"""Rule-based rewards for math reasoning: answer correctness checked by ``math-verify``, and R1 format.

Both follow the reward protocol of :mod:`grpokit.rewards.base`: ``f(prompts, completions, **columns)``
returns one entry per completion. They are the outcome rewards of DeepSeekMath (Shao et al., 2024,
arXiv 2402.03300, GRPO with rule-based rewards) and DeepSeek-R1 (DeepSeek-AI, 2025, arXiv 2501.12948,
"accuracy" and "format" rewards).

- :func:`math_verify`: 1.0 when the completion's final answer equals the gold answer *mathematically*
  (``\\frac{1}{2}`` = ``0.5``, ``\\boxed{72}`` = ``72``, ``1,000`` = ``1000``), 0.0 otherwise, and ``None``
  when the gold answer itself cannot be parsed, so a broken dataset row never turns into a silent 0.
- :func:`think_answer_format`: 1.0 when the whole completion is ``<think>...</think><answer>...</answer>``.

Deviations and choices:

1. When the completion has an ``<answer>...</answer>`` block, only its content is checked (the last block
   if several); otherwise math-verify looks for the final answer in the whole text (``\\boxed{}`` first,
   then the last number or expression).
2. A gold answer in GSM8K's form ``"<rationale> #### 72"`` is reduced to the text after the last ``####``.
3. math-verify bounds its own run time with ``signal.alarm``, which Python allows only in the main thread.
   In any other thread the timeouts are turned off (a reward pipeline running rewards in threads must bound
   them itself); in the main thread they apply, and a timed-out comparison scores 0.0.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Sequence
from typing import Any

__all__ = ["answer_tag_extract", "completion_text", "gold_answer_text", "math_verify", "think_answer_format"]

_ANSWER_TAG = re.compile(r"<answer>(.*?)</answer>", re.DOTALL)
# Neither block may contain another think/answer tag: one reasoning block, then exactly one answer.
_NO_TAG = r"(?:(?!</?think>|</?answer>).)*"
_THINK_ANSWER = re.compile(rf"\s*<think>{_NO_TAG}</think>\s*<answer>({_NO_TAG})</answer>\s*", re.DOTALL)


def completion_text(completion: Any, *, where: str = "completion") -> str:
    """The text of one completion: a string, or a chat list whose last assistant message is taken.

    Message content may be a string or a list of parts ``{"type": "text", "text": ...}`` (joined).
    ``where`` names the completion in errors, e.g. ``"completions[3]"``.
    """
    if isinstance(completion, str):
        return completion
    if isinstance(completion, Sequence) and completion and all(isinstance(m, dict) for m in completion):
        assistant = [m for m in completion if m.get("role", "assistant") == "assistant"]
        if not assistant:
            raise ValueError(f"{where}: chat completion has no assistant message")
        content = assistant[-1].get("content")
        if isinstance(content, str):
            return content
        if isinstance(content, list):
            return "".join(p.get("text", "") for p in content if isinstance(p, dict))
        raise ValueError(f"{where}: assistant message content must be a string or a list of parts")
    raise ValueError(
        f"{where}: expected a string or a non-empty list of chat messages, got {type(completion).__name__}"
    )


def answer_tag_extract(completion: str) -> str | None:
    """Content of the last ``<answer>...</answer>`` block, stripped; ``None`` when there is none."""
    matches = _ANSWER_TAG.findall(completion)
    return matches[-1].strip() if matches else None


def think_answer_format(prompts: Sequence[Any] | None, completions: Sequence[Any], **_: Any) -> list[float]:
    """DeepSeek-R1 format reward: 1.0 when the whole completion is ``<think>…</think> <answer>…</answer>``.

    Whitespace is allowed around and between the two blocks; each block appears exactly once, no block
    contains another think/answer tag, and the answer is not blank. Everything else scores 0.0.

    Args:
        prompts: N prompts (unused).
        completions: N completions, strings or chat lists.
    Returns:
        N floats in {0.0, 1.0}.
    """
    rewards = []
    for i, completion in enumerate(completions):
        match = _THINK_ANSWER.fullmatch(completion_text(completion, where=f"completions[{i}]"))
        rewards.append(1.0 if match is not None and match.group(1).strip() else 0.0)
    return rewards


def gold_answer_text(answer: Any) -> str | None:
    """The checkable part of a gold answer: text after the last ``####`` (GSM8K), else the whole text.

    Numbers are accepted as they are; ``None`` and blank answers give ``None``.
    """
    if answer is None or isinstance(answer, bool):
        return None
    if isinstance(answer, (int, float)):
        return repr(answer)
    if not isinstance(answer, str):
        return None
    text = answer.rpartition("####")[2].strip()
    return text or None


def math_verify(
    prompts: Sequence[Any] | None,
    completions: Sequence[Any],
    answer: Sequence[Any],
    *,
    timeout_seconds: int | None = 5,
    **_: Any,
) -> list[float | None]:
    """Accuracy reward: does the completion's final answer equal the gold ``answer``? (math-verify)

    r_i = 1 if verify(parse(gold_i), parse(answer_i)) else 0, as in DeepSeekMath's rule-based reward.

    Args:
        prompts: N prompts (unused).
        completions: N completions, strings or chat lists (the last assistant message is checked).
        answer: N gold answers: a number, a LaTeX expression or GSM8K's ``"... #### 72"``.
        timeout_seconds: bound on each parse and comparison, applied in the main thread only (see the
            module notes); ``None`` disables it.
    Returns:
        N entries: 1.0 / 0.0, or ``None`` where the gold answer cannot be parsed (reward not applicable).
    """
    from math_verify import parse, verify  # lazy: pulls in sympy and the LaTeX grammar

    if len(answer) != len(completions):
        raise ValueError(
            f"answer has {len(answer)} entries but completions has {len(completions)}: the reward needs "
            "one gold answer per completion"
        )
    if threading.current_thread() is not threading.main_thread():
        timeout_seconds = None
    # Groups repeat the same gold answer G times: parse each distinct one once.
    gold_cache: dict[str, list[Any]] = {}
    rewards: list[float | None] = []
    for i, (completion, gold) in enumerate(zip(completions, answer)):
        gold_text = gold_answer_text(gold)
        if gold_text is None:
            rewards.append(None)
            continue
        if gold_text not in gold_cache:
            gold_cache[gold_text] = parse(gold_text, parsing_timeout=timeout_seconds)
        gold_parsed = gold_cache[gold_text]
        if not gold_parsed:
            rewards.append(None)
            continue
        text = completion_text(completion, where=f"completions[{i}]")
        tagged = answer_tag_extract(text)
        predicted = parse(tagged if tagged is not None else text, parsing_timeout=timeout_seconds)
        rewards.append(
            1.0 if predicted and verify(gold_parsed, predicted, timeout_seconds=timeout_seconds) else 0.0
        )
    return rewards
