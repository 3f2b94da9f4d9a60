"""Wall-clock time per phase of a training step."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

__all__ = ["PhaseTimer"]


@dataclass
class PhaseTimer:
    """Wall-clock seconds per phase of one step (``time/generate``, ``time/score``, ``time/update``...)."""

    seconds: dict[str, float] = field(default_factory=dict)
    started: float = field(default_factory=time.perf_counter)
    current: str | None = None  # the phase running now; left set when a phase raises (names the failure)

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        start = time.perf_counter()
        self.current = name
        try:
            yield
        finally:
            self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - start
        self.current = None

    def metrics(self) -> dict[str, float]:
        """Each phase's seconds, and ``time/step`` since the timer was created."""
        return {
            **{f"time/{name}": value for name, value in self.seconds.items()},
            "time/step": time.perf_counter() - self.started,
        }
