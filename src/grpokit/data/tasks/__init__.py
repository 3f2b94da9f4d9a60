"""Built-in verifiable tasks, registered by name: problems, a flawed teacher, and the true checker.

A task is what the demo needs to show what RL is for: users run RL because they can *check* answers but
do not have perfect demonstrations. So each task comes with

- ``make_problems(n, seed, split)``: rows with ``prompt`` and ``answer`` columns; ``split="train"`` and
  ``split="test"`` are disjoint by a fixed rule (a hash of the problem), whatever the seeds;
- ``teacher_completion(row)``: a demonstration from a *systematically flawed* teacher, so imitation
  learns the flaw and plateaus, while RL with the true checker can fix it;
- ``check(prompt, completion, answer)``: exact final-answer match, the reward.

Tasks: ``addition`` (3-digit a + b; the teacher drops the carry from the tens into the hundreds) and
``addition5`` (the same with 5-digit operands, harder).
"""

from __future__ import annotations

import random
import zlib
from collections.abc import Callable
from typing import Any

SPLITS: tuple[str, ...] = ("train", "test")
# One problem in TEST_BUCKETS goes to the test split (by a hash of the problem, not by seed).
TEST_BUCKETS = 10

_TASKS: dict[str, Callable[[], Task]] = {}


def register_task(name: str) -> Callable[[Callable[[], Task]], Callable[[], Task]]:
    """Decorator: register a task factory (a Task subclass, or a function returning a Task) under ``name``.

    Registering a name twice is an error.
    """

    def decorator(factory: Callable[[], Task]) -> Callable[[], Task]:
        if name in _TASKS:
            raise ValueError(f"task {name!r} is already registered")
        _TASKS[name] = factory
        return factory

    return decorator


def get_task(name: str) -> Task:
    """The task registered as ``name``; an unknown name lists the known ones."""
    if name not in _TASKS:
        raise ValueError(f"unknown task {name!r}; available tasks: {sorted(_TASKS)}")
    return _TASKS[name]()


def list_tasks() -> list[str]:
    return sorted(_TASKS)


class Task:
    """Interface of a built-in task (see the module docstring)."""

    name: str
    alphabet: str  # every character of prompts and completions (for the character tokenizer)
    teacher_error_rate: float  # exact fraction of problems the teacher gets wrong (uniform problems)

    def make_problems(self, n: int, seed: int = 0, split: str = "train") -> list[dict[str, Any]]:
        raise NotImplementedError

    def teacher_completion(self, row: dict[str, Any]) -> str:
        raise NotImplementedError

    def check(self, prompt: Any, completion: str, answer: str) -> bool:
        """Exact final-answer match: the completion (special tokens already stripped), without
        surrounding whitespace, equals the answer."""
        return completion.strip() == str(answer).strip()

    def reward(self, prompts: list[Any], completions: list[str], answer: list[str], **columns: Any) -> list[float]:
        """The reward-function form of :meth:`check`: 1.0 when right, else 0.0."""
        return [float(self.check(p, c, a)) for p, c, a in zip(prompts, completions, answer)]


class AdditionTask(Task):
    """``a+b=`` with ``digits``-digit operands (no leading zero); the answer is the decimal sum.

    The teacher adds digit by digit but drops the carry out of the tens column into the hundreds:
    wrong exactly when ``tens(a) + tens(b) + carry_from_units >= 10``. For uniform digits that is
    ``P(t >= 10) * P(no unit carry) + P(t >= 9) * P(unit carry) = 0.45 * 0.55 + 0.55 * 0.45 = 0.495``
    of problems, and the teacher is then short by exactly 100.
    """

    def __init__(self, digits: int = 3, name: str = "addition"):
        if digits < 3:
            raise ValueError(f"digits must be >= 3 (the flaw lives in the hundreds column), got {digits}")
        self.digits = digits
        self.name = name
        self.alphabet = "0123456789+="
        self.teacher_error_rate = 0.495
        self.low, self.high = 10 ** (digits - 1), 10**digits - 1

    def split_of(self, a: int, b: int) -> str:
        """The fixed rule that keeps train and test disjoint: a CRC32 bucket of the problem."""
        return "test" if zlib.crc32(f"{a}+{b}".encode()) % TEST_BUCKETS == 0 else "train"

    def make_problems(self, n: int, seed: int = 0, split: str = "train") -> list[dict[str, Any]]:
        """``n`` distinct problems of ``split``, drawn uniformly with ``random.Random(seed)``.

        Returns:
            rows ``{"prompt": "123+456=", "answer": "579", "a": 123, "b": 456}``.
        """
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        if n < 0:
            raise ValueError(f"n must be >= 0, got {n}")
        space = (self.high - self.low + 1) ** 2
        capacity = space // TEST_BUCKETS if split == "test" else space - space // TEST_BUCKETS
        if n > capacity // 2:  # rejection sampling of distinct problems slows down near the capacity
            raise ValueError(f"n={n} is too many distinct {split} problems for {self.name} (at most {capacity // 2})")
        rng = random.Random(f"{self.name}-{split}-{seed}")
        rows, seen = [], set()
        while len(rows) < n:
            a, b = rng.randint(self.low, self.high), rng.randint(self.low, self.high)
            if (a, b) in seen or self.split_of(a, b) != split:
                continue
            seen.add((a, b))
            rows.append({"prompt": f"{a}+{b}=", "answer": str(a + b), "a": a, "b": b})
        return rows

    @staticmethod
    def flawed_sum(a: int, b: int) -> int:
        """Column addition that loses the carry from the tens into the hundreds."""
        result, carry, column = 0, 0, 0
        while a or b or carry:
            total = a % 10 + b % 10 + carry
            result += (total % 10) * 10**column
            carry = total // 10
            if column == 1:  # the flaw
                carry = 0
            a, b, column = a // 10, b // 10, column + 1
        return result

    def teacher_completion(self, row: dict[str, Any]) -> str:
        a, b = self._operands(row)
        return str(self.flawed_sum(a, b))

    def teacher_is_wrong(self, row: dict[str, Any]) -> bool:
        a, b = self._operands(row)
        return self.flawed_sum(a, b) != a + b

    def _operands(self, row: dict[str, Any]) -> tuple[int, int]:
        if "a" in row and "b" in row:
            return int(row["a"]), int(row["b"])
        prompt = str(row.get("prompt", ""))
        left, _, right = prompt.rstrip("=").partition("+")
        if not (left.isdigit() and right.isdigit()):
            raise ValueError(f"row has no operands a/b and its prompt {prompt!r} is not of the form 'a+b='")
        return int(left), int(right)


register_task("addition")(lambda: AdditionTask(3, "addition"))
register_task("addition5")(lambda: AdditionTask(5, "addition5"))
