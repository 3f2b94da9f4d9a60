"""A guessing game: find a hidden number in 1..16 in at most 5 guesses, told "higher" or "lower".

An episode::

    user       guess 1-16
    assistant  8
    user       higher
    assistant  12
    user       lower
    assistant  10                          right: reward 1.0, the episode ends

A fifth wrong guess ends the episode with reward 0.0; a guess that is not a whole number counts as a wrong
one and is answered "invalid". Binary search always wins within 5 guesses; scanning 1, 2, 3, ... wins only
when the number is at most 5. :class:`GuessNumberTeacher` is the demo's flawed teacher: mostly the scan.
"""

from __future__ import annotations

import random
from typing import Any

from grpokit.agents.builtin.base import ALPHABET, TeacherEpisode, check_rows_args
from grpokit.agents.environment import Environment, EnvStep, Message
from grpokit.agents.registry import register_environment

__all__ = ["GuessNumberEnv", "GuessNumberTeacher"]


@register_environment("guess_number")
class GuessNumberEnv(Environment):
    """Find the hidden number in ``low..high`` in at most ``max_guesses`` guesses.

    Rows (:meth:`make_rows`) are ``{"prompt": "guess 1-16", "target": 11}``; ``reset`` takes ``target``
    from the row, or draws it from ``seed`` when the row has none. Each wrong guess is answered by a user
    message ``higher`` / ``lower`` (``invalid`` for text that is not a whole number). Reward 1.0 for a
    right guess, 0.0 when the guesses run out. ``info`` at the end: ``success``, ``guesses`` (turns used)
    and ``invalid_guesses``.
    """

    alphabet = ALPHABET

    def __init__(self, low: int = 1, high: int = 16, max_guesses: int = 5):
        if low > high:
            raise ValueError(f"low ({low}) must be <= high ({high})")
        if max_guesses < 1:
            raise ValueError(f"max_guesses must be >= 1, got {max_guesses}")
        self.low, self.high, self.max_guesses = low, high, max_guesses
        self.target: int | None = None
        self.guesses = self.invalid_guesses = 0
        self.reset_info: dict[str, Any] = {}

    @property
    def opening(self) -> str:
        return f"guess {self.low}-{self.high}"

    @classmethod
    def make_rows(
        cls, n: int, seed: int = 0, split: str = "train", low: int = 1, high: int = 16
    ) -> list[dict[str, Any]]:
        """``n`` games of ``split``, drawn with ``random.Random``.

        The policy never sees the hidden number, so there is nothing to memorise and no problem to keep out
        of training: the two splits differ in how targets are drawn. ``train`` draws them uniformly;
        ``test`` deals every number of ``low..high`` in turn (in a seeded order), so a held-out success rate
        weighs every number equally.
        """
        check_rows_args(n, split)
        rng = random.Random(f"guess_number-{split}-{seed}")
        numbers = list(range(low, high + 1))
        targets: list[int] = []
        while len(targets) < n:
            if split == "test":
                rng.shuffle(numbers)
                targets += numbers
            else:
                targets.append(rng.randint(low, high))
        prompt = cls(low, high).opening
        return [{"prompt": prompt, "target": t} for t in targets[:n]]

    def reset(self, row: dict[str, Any], seed: int) -> list[Message]:
        if row.get("target") is not None:
            self.target = int(row["target"])
        else:
            self.target = random.Random(seed).randint(self.low, self.high)
        if not self.low <= self.target <= self.high:
            raise ValueError(f"guess_number row: target {self.target} is outside {self.low}..{self.high}")
        self.guesses = self.invalid_guesses = 0
        self.reset_info = {"task": "guess", "features": [float(self.target)]}
        return [{"role": "user", "content": self.opening}]

    def step(self, message: Message) -> EnvStep:
        if self.target is None:
            raise RuntimeError("GuessNumberEnv.step before reset")
        self.guesses += 1
        text = str(message.get("content") or "").strip()
        guess = int(text) if text.isdigit() and len(text) <= 6 else None
        self.invalid_guesses += guess is None
        if guess == self.target:
            return EnvStep(reward=1.0, terminated=True, info=self._info(True))
        if self.guesses >= self.max_guesses:
            return EnvStep(reward=0.0, terminated=True, info=self._info(False))
        feedback = "invalid" if guess is None else ("higher" if guess < self.target else "lower")
        return EnvStep(messages=[{"role": "user", "content": feedback}])

    def _info(self, success: bool) -> dict[str, float]:
        return {
            "success": float(success),
            "guesses": float(self.guesses),
            "invalid_guesses": float(self.invalid_guesses),
        }


class GuessNumberTeacher:
    """The demo's flawed teacher: it scans upwards from the lowest number still possible, but with
    probability ``random_rate`` guesses a random number among those still possible (consistent with every
    answer so far).

    A scan wins only when the number is small (5 of 16 numbers in 5 guesses); the random guesses make the
    imitating policy stochastic, which GRPO needs: a deterministic teacher gives a deterministic policy,
    every episode of a group gets the same reward, and the group-relative advantage is 0.
    """

    def __init__(self, random_rate: float = 0.3):
        if not 0 <= random_rate <= 1:
            raise ValueError(f"random_rate must be in [0, 1], got {random_rate}")
        self.random_rate = random_rate
        self.flaw = f"scans upwards from the lowest possible number, {random_rate:.0%} random guesses"

    def episode(self, row: dict[str, Any], seed: int, env: GuessNumberEnv | None = None) -> TeacherEpisode:
        """The teacher's conversation on ``row`` in ``env`` (default: 1..16, 5 guesses); its choices are
        drawn from ``random.Random(seed)``."""
        rng = random.Random(seed)
        env = env or GuessNumberEnv()
        messages = env.reset(row, seed)
        low, high = env.low, env.high
        while True:
            guess = rng.randint(low, high) if rng.random() < self.random_rate else low
            messages.append({"role": "assistant", "content": str(guess)})
            outcome = env.step(messages[-1])
            messages += outcome.messages
            if outcome.terminated or outcome.truncated:
                return TeacherEpisode(messages, outcome.reward, outcome.info)
            if outcome.messages[-1]["content"] == "higher":
                low = guess + 1
            else:
                high = guess - 1
