"""A calculator tool for products a small model cannot compute: 3-digit x 2-digit multiplication.

An episode (``[...]`` is a tool call in the ``pythonic`` format, which ``env.tool_call_parser: pythonic``
reads; the trainer runs the tool and answers with a ``tool`` message)::

    user       347*26=
    assistant  [calc(x="347*26")]          a tool call: the trainer runs calc, reward 0
    tool       9022
    assistant  9022                        no tool call: the answer, reward 1.0 when exact; the episode ends

An assistant turn without a tool call is the answer, right or wrong; a model that answers at once is
graded the same way. :class:`CalculatorTeacher` is the demo's flawed teacher: it calls the tool on only 30%
of problems and guesses on the others.
"""

from __future__ import annotations

import random
import re
from typing import Any

from grpokit.agents.builtin.base import ALPHABET, TeacherEpisode, check_rows_args, split_of
from grpokit.agents.environment import Environment, EnvStep, Message
from grpokit.agents.registry import register_environment

__all__ = ["CalculatorEnv", "CalculatorTeacher", "evaluate_expression"]

MAX_EXPRESSION_CHARS = 64
"""Longest expression ``calc`` evaluates: with + - * only and short operands, the value stays small."""

_TOKEN = re.compile(r"\d+|\S")  # numbers and single characters, whitespace between them dropped


def evaluate_expression(text: str) -> int:
    """The value of ``text``, whole numbers joined by binary ``+``, ``-`` and ``*`` (``*`` binds tighter),
    spaces between them ignored; nothing is ``eval``-ed.

    Raises:
        ValueError: any other character, a misplaced operator, or more than ``MAX_EXPRESSION_CHARS``
            characters.
    """
    if len(text) > MAX_EXPRESSION_CHARS:
        raise ValueError(f"expression longer than {MAX_EXPRESSION_CHARS} characters")
    tokens = _TOKEN.findall(text)
    if not tokens or any(not t.isdigit() and t not in "+-*" for t in tokens):
        raise ValueError(f"expression {text!r}: only digits and + - * are allowed")
    # Numbers at even positions, operators at odd ones, a number at each end.
    if len(tokens) % 2 == 0 or any(t.isdigit() != (i % 2 == 0) for i, t in enumerate(tokens)):
        raise ValueError(f"expression {text!r} is not numbers joined by + - *")
    total, term = 0, int(tokens[0])
    sign = 1
    for op, number in zip(tokens[1::2], tokens[2::2]):
        if op == "*":
            term *= int(number)
        else:
            total += sign * term
            sign, term = (1 if op == "+" else -1), int(number)
    return total + sign * term


@register_environment("calculator")
class CalculatorEnv(Environment):
    """``a*b=`` with a 3-digit ``a`` and a 2-digit ``b``; the episode's tool ``calc`` computes it.

    Rows (:meth:`make_rows`) are ``{"prompt": "347*26=", "a": 347, "b": 26, "answer": "9022"}``; ``reset``
    reads ``a`` and ``b`` (or parses ``prompt``). Rewards: 1.0 for an answer equal to the product (spaces
    around it ignored), else 0.0. ``info`` at the end: ``success`` (1.0 / 0.0) and ``tool_calls`` (how many
    times this episode called ``calc``).
    """

    alphabet = ALPHABET

    def __init__(self) -> None:
        self.tools = [self.calc]
        self.product: int | None = None
        self.tool_calls = 0
        self.reset_info: dict[str, Any] = {}

    def calc(self, x: str) -> str:
        """Evaluate an arithmetic expression of whole numbers with +, - and *.

        Args:
            x: The expression, for example "347*26".

        Returns:
            The value of the expression, for example "9022".
        """
        self.tool_calls += 1
        return str(evaluate_expression(x))

    @classmethod
    def make_rows(cls, n: int, seed: int = 0, split: str = "train") -> list[dict[str, Any]]:
        """``n`` distinct problems of ``split`` (``train`` and ``test`` are disjoint by a hash of the
        problem), drawn with ``random.Random``; a larger draw extends a smaller one."""
        check_rows_args(n, split)
        capacity = 900 * 90 // (10 if split == "test" else 1)
        if n > capacity // 2:  # rejection sampling of distinct problems slows down near the capacity
            raise ValueError(
                f"n={n} is too many distinct {split} calculator problems (at most {capacity // 2})"
            )
        rng = random.Random(f"calculator-{split}-{seed}")
        rows: list[dict[str, Any]] = []
        seen: set[tuple[int, int]] = set()
        while len(rows) < n:
            a, b = rng.randint(100, 999), rng.randint(10, 99)
            if (a, b) in seen or split_of(f"{a}*{b}") != split:
                continue
            seen.add((a, b))
            rows.append({"prompt": f"{a}*{b}=", "a": a, "b": b, "answer": str(a * b)})
        return rows

    def reset(self, row: dict[str, Any], seed: int) -> list[Message]:
        a, b = operands(row)
        self.product, self.tool_calls = a * b, 0
        self.reset_info = {"task": "multiply", "features": [float(a), float(b)]}
        return [{"role": "user", "content": f"{a}*{b}="}]

    def step(self, message: Message) -> EnvStep:
        if self.product is None:
            raise RuntimeError("CalculatorEnv.step before reset")
        success = str(message.get("content") or "").strip() == str(self.product)
        info = {"success": float(success), "tool_calls": float(self.tool_calls)}
        return EnvStep(reward=float(success), terminated=True, info=info)


def operands(row: dict[str, Any]) -> tuple[int, int]:
    """``(a, b)`` of a calculator row: its ``a`` and ``b`` columns, or its prompt ``"a*b="``."""
    if "a" in row and "b" in row:
        return int(row["a"]), int(row["b"])
    prompt = str(row.get("prompt", ""))
    left, _, right = prompt.rstrip("=").partition("*")
    if not (left.isdigit() and right.isdigit()):
        raise ValueError(f"calculator row has no columns a/b and its prompt {prompt!r} is not 'a*b='")
    return int(left), int(right)


class CalculatorTeacher:
    """The demo's flawed teacher: it calls ``calc`` on a ``tool_rate`` fraction of problems (then copies the
    result, always right) and otherwise guesses at once: the product's leading two digits followed by random
    ones, never the product itself (so it is wrong on ``1 - tool_rate`` of problems).

    Imitating it learns to answer at once most of the time, which is almost always wrong; only a learner
    that sees the reward finds out that calling the tool pays.
    """

    def __init__(self, tool_rate: float = 0.3):
        if not 0 <= tool_rate <= 1:
            raise ValueError(f"tool_rate must be in [0, 1], got {tool_rate}")
        self.tool_rate = tool_rate
        self.flaw = f"calls the calculator on {tool_rate:.0%} of problems and guesses the others"

    def episode(self, row: dict[str, Any], seed: int, env: CalculatorEnv | None = None) -> TeacherEpisode:
        """The teacher's conversation on ``row`` in ``env`` (default: a new one); its choices are drawn from
        ``random.Random(seed)``."""
        rng = random.Random(seed)
        env = env or CalculatorEnv()
        messages = env.reset(row, seed)
        a, b = operands(row)
        if rng.random() < self.tool_rate:
            call = {"type": "function", "function": {"name": "calc", "arguments": {"x": f"{a}*{b}"}}}
            messages.append({"role": "assistant", "content": f'[calc(x="{a}*{b}")]', "tool_calls": [call]})
            result = env.calc(f"{a}*{b}")
            messages.append({"role": "tool", "name": "calc", "content": result})
            answer = result
        else:
            answer = str(self.guess(a * b, rng))
        messages.append({"role": "assistant", "content": answer})
        outcome = env.step(messages[-1])
        return TeacherEpisode(messages, outcome.reward, outcome.info)

    @staticmethod
    def guess(product: int, rng: random.Random) -> int:
        """A plausible wrong answer: ``product``'s leading two digits, then random digits."""
        digits = str(product)
        while True:
            tail = "".join(rng.choice("0123456789") for _ in digits[2:])
            guess = int(digits[:2] + tail)
            if guess != product:
                return guess
