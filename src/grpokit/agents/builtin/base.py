"""What the built-in environments share: the characters of their texts and the split of their problems."""

from __future__ import annotations

import string
import zlib
from dataclasses import dataclass, field
from typing import Any

from grpokit.agents.environment import Message

__all__ = ["ALPHABET", "SPLITS", "TEST_BUCKETS", "TeacherEpisode", "check_rows_args", "split_of"]

ALPHABET = string.digits + string.ascii_lowercase + " \n.,:;!?'\"()[]{}=+-*/_<>"
"""Every character the built-in environments, their tools and teachers write, and the trainer's tool-error
messages (``error: ...``) too: a character tokenizer over it encodes any of their texts without ``<unk>``."""

SPLITS: tuple[str, ...] = ("train", "test")

TEST_BUCKETS = 10
"""One problem in this many goes to the ``test`` split (by a hash of the problem, not by seed)."""


def split_of(key: str) -> str:
    """The fixed rule that keeps ``train`` and ``test`` disjoint whatever the seeds: a CRC32 bucket of the
    problem's text."""
    return "test" if zlib.crc32(key.encode()) % TEST_BUCKETS == 0 else "train"


def check_rows_args(n: int, split: str) -> None:
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")


@dataclass
class TeacherEpisode:
    """A whole conversation played by a teacher against the environment.

    Attributes:
        messages: the opening messages, then every assistant turn (text, ``tool_calls`` when it called a
            tool) and every message the environment or a tool answered, in order.
        reward: the episode's return (the sum of the environment's rewards).
        info: the environment's ``info`` at the episode's end.
    """

    messages: list[Message]
    reward: float
    info: dict[str, Any] = field(default_factory=dict)
