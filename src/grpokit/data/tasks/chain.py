"""Chained addition ``a+b+c`` written in two checked steps, with a teacher that slips in the first step.

Prompt ``"47+38+56="``, completion ``"085,141"``: first the partial sum ``a+b``, then the total
``(a+b)+c``, each zero-padded to 3 digits and separated by a comma; the answer column holds the total
(``"141"``). Operands have 2 digits (no leading zero), so every sum fits 3 digits.

The task exists to compare process and outcome supervision on a task whose intermediate steps can be
checked (:meth:`ChainTask.step_scores`): each step is checked on its own, the second against the partial
sum the completion actually wrote (a step verifier, not a comparison with the right total). The teacher
drops the carry from the units into the tens in the first step, whenever ``units(a) + units(b) >= 10``
(45% of uniform problems), then adds ``c`` correctly to its wrong partial sum: its second step is always
valid and its final answer is wrong exactly when its first step is, 10 short.
"""

from __future__ import annotations

import random
import zlib
from typing import Any

from grpokit.data.tasks.base import SPLITS, Task

TEST_BUCKETS = 10
"""One problem in this many goes to the test split (by a hash of the problem, not by seed)."""

WIDTH = 3
"""Digits of each written step."""


class ChainTask(Task):
    """``a+b+c=`` with 2-digit operands, answered as ``"{a+b:03d},{a+b+c:03d}"`` (see the module docstring)."""

    def __init__(self, name: str = "chain"):
        self.name = name
        self.alphabet = "0123456789+=,"
        self.teacher_error_rate = 0.45
        self.teacher_flaw = "drops the carry from the units into the tens of the partial sum a+b"
        self.max_completion_tokens = 2 * WIDTH + 1

    @staticmethod
    def format_steps(partial: int, total: int) -> str:
        return f"{partial:0{WIDTH}d},{total:0{WIDTH}d}"

    def split_of(self, a: int, b: int, c: int) -> str:
        return "test" if zlib.crc32(f"{a}+{b}+{c}".encode()) % TEST_BUCKETS == 0 else "train"

    def make_problems(self, n: int, seed: int = 0, split: str = "train") -> list[dict[str, Any]]:
        """``n`` distinct problems of ``split`` drawn with ``random.Random``; a larger draw extends a smaller.

        Returns:
            rows ``{"prompt": "47+38+56=", "answer": "141", "a": 47, "b": 38, "c": 56}``.
        """
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        if n < 0:
            raise ValueError(f"n must be >= 0, got {n}")
        space = 90**3
        capacity = space // TEST_BUCKETS if split == "test" else space - space // TEST_BUCKETS
        if n > capacity // 2:
            raise ValueError(f"n={n} is too many distinct {split} problems for {self.name} (at most {capacity // 2})")
        rng = random.Random(f"{self.name}-{split}-{seed}")
        rows: list[dict[str, Any]] = []
        seen: set[tuple[int, int, int]] = set()
        while len(rows) < n:
            a, b, c = rng.randint(10, 99), rng.randint(10, 99), rng.randint(10, 99)
            if (a, b, c) in seen or self.split_of(a, b, c) != split:
                continue
            seen.add((a, b, c))
            rows.append({"prompt": f"{a}+{b}+{c}=", "answer": f"{a + b + c:0{WIDTH}d}", "a": a, "b": b, "c": c})
        return rows

    @staticmethod
    def flawed_partial(a: int, b: int) -> int:
        """``a + b`` without the carry from the units into the tens."""
        units = (a % 10 + b % 10) % 10
        return (a // 10 + b // 10) * 10 + units

    def teacher_completion(self, row: dict[str, Any]) -> str:
        a, b, c = self._operands(row)
        partial = self.flawed_partial(a, b)
        return self.format_steps(partial, partial + c)

    def teacher_is_wrong(self, row: dict[str, Any]) -> bool:
        a, b, _ = self._operands(row)
        return self.flawed_partial(a, b) != a + b

    def check(self, prompt: Any, completion: str, answer: str) -> bool:
        """Outcome: the completion is two comma-separated 3-digit steps and the last one is the answer (the
        first is not checked)."""
        fields = completion.strip().split(",")
        well_formed = len(fields) == 2 and all(len(f) == WIDTH and f.isdigit() for f in fields)
        return well_formed and fields[1] == str(answer).strip()

    def step_scores(self, prompt: Any, completion: str) -> list[tuple[int, float]] | None:
        """Process: ``[(end, score), ...]``, one entry per step of the completion, ``end`` the character
        offset of the step's last character (its comma included).

        Step 1 scores 1.0 when it is ``a+b`` written with 3 digits; step 2 when it is the written partial sum
        plus ``c``, written with 3 digits. A completion with fewer than two (non-empty) steps has its last
        step scored 0.0 (the chain is unfinished), and every step after the second scores 0.0. An empty completion
        has no step (None).
        """
        a, b, c = self._operands({"prompt": prompt})
        if not completion:
            return None
        steps: list[tuple[int, float]] = []
        start = 0
        fields = completion.split(",")
        for j, field in enumerate(fields):
            end = start + len(field) + (0 if j == len(fields) - 1 else 1) - 1  # the comma closes a step
            if end < start:  # an empty last field ("085,"): no character, no step
                continue
            start = end + 1
            written = field.strip()
            valid = len(written) == WIDTH and written.isdigit()
            if j == 0:
                score = valid and int(written) == a + b
            elif j == 1:
                first = fields[0].strip()
                score = valid and len(first) == WIDTH and first.isdigit() and int(written) == int(first) + c
            else:
                score = False
            steps.append((end, float(score)))
        if len(steps) < 2 and steps:
            steps[-1] = (steps[-1][0], 0.0)
        return steps or None

    def _operands(self, row: dict[str, Any]) -> tuple[int, int, int]:
        if all(k in row for k in ("a", "b", "c")):
            return int(row["a"]), int(row["b"]), int(row["c"])
        prompt = str(row.get("prompt", ""))
        parts = prompt.rstrip("=").split("+")
        if len(parts) != 3 or not all(p.isdigit() for p in parts):
            raise ValueError(f"row has no operands a/b/c and its prompt {prompt!r} is not of the form 'a+b+c='")
        a, b, c = (int(p) for p in parts)
        return a, b, c
