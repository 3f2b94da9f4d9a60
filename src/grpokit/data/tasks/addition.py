"""Addition of two ``digits``-digit numbers, with a teacher that forgets one carry.

Prompt ``"123+456="``, answer ``"0579"``: the sum written with ``digits + 1`` digits, zero-padded.
The fixed width is deliberate: every answer digit then sits at the same distance from the operand digits
it depends on, whatever the problem, which a small transformer picks up quickly. With unpadded answers
(``"579"`` next to ``"1040"``) the offsets shift with the answer's length; the demo's 130k-parameter
model then needed about twice as many supervised steps before its accuracy took off (see docs/demo.md).
"""

from __future__ import annotations

import random
import zlib
from typing import Any

from grpokit.data.tasks.base import SPLITS, Task

# One problem in TEST_BUCKETS goes to the test split (by a hash of the problem, not by seed).
TEST_BUCKETS = 10


class AdditionTask(Task):
    """``a+b=`` with ``digits``-digit operands (no leading zero); the answer is the zero-padded sum.

    The teacher adds column by column but drops the carry out of the tens column into the hundreds:
    wrong exactly when ``tens(a) + tens(b) + carry_from_units >= 10``. For uniform digits that is
    ``P(t >= 10) * P(no unit carry) + P(t >= 9) * P(unit carry) = 0.45 * 0.55 + 0.55 * 0.45 = 0.495``
    of problems (t = the two tens digits' sum), and the teacher is then short by exactly 100. Imitating
    it perfectly therefore scores 50.5% on the checker; only a learner that sees the checker can do better.
    """

    def __init__(self, digits: int = 3, name: str = "addition"):
        if digits < 3:
            raise ValueError(f"digits must be >= 3 (the flaw lives in the hundreds column), got {digits}")
        self.digits = digits
        self.name = name
        self.alphabet = "0123456789+="
        self.teacher_error_rate = 0.495
        self.teacher_flaw = "drops the carry from the tens into the hundreds"
        self.answer_width = digits + 1
        self.max_completion_tokens = self.answer_width
        self.low, self.high = 10 ** (digits - 1), 10**digits - 1

    def format_answer(self, value: int) -> str:
        """``value`` with ``digits + 1`` digits, zero-padded: 579 -> ``"0579"`` for 3-digit operands."""
        return f"{value:0{self.answer_width}d}"

    def split_of(self, a: int, b: int) -> str:
        """The fixed rule that keeps train and test disjoint: a CRC32 bucket of the problem."""
        return "test" if zlib.crc32(f"{a}+{b}".encode()) % TEST_BUCKETS == 0 else "train"

    def make_problems(self, n: int, seed: int = 0, split: str = "train") -> list[dict[str, Any]]:
        """``n`` distinct problems of ``split``, drawn uniformly with ``random.Random(seed)``.

        The first ``m`` rows of ``make_problems(n, seed)`` are ``make_problems(m, seed)``, so a larger draw
        extends a smaller one (the demo takes its validation problems after its training problems).

        Returns:
            rows ``{"prompt": "123+456=", "answer": "0579", "a": 123, "b": 456}``.
        """
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        if n < 0:
            raise ValueError(f"n must be >= 0, got {n}")
        space = (self.high - self.low + 1) ** 2
        capacity = space // TEST_BUCKETS if split == "test" else space - space // TEST_BUCKETS
        if n > capacity // 2:  # rejection sampling of distinct problems slows down near the capacity
            raise ValueError(
                f"n={n} is too many distinct {split} problems for {self.name} (at most {capacity // 2})"
            )
        rng = random.Random(f"{self.name}-{split}-{seed}")
        rows: list[dict[str, Any]] = []
        seen: set[tuple[int, int]] = set()
        while len(rows) < n:
            a, b = rng.randint(self.low, self.high), rng.randint(self.low, self.high)
            if (a, b) in seen or self.split_of(a, b) != split:
                continue
            seen.add((a, b))
            rows.append({"prompt": f"{a}+{b}=", "answer": self.format_answer(a + b), "a": a, "b": b})
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
        return self.format_answer(self.flawed_sum(a, b))

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
