"""Console progress: a tqdm bar with the numbers one watches during RL (step, reward, KL, ETA)."""

from __future__ import annotations

import json
import math
from typing import Any

__all__ = ["ProgressBar"]


class ProgressBar:
    """``tqdm`` over training steps showing the latest reward and KL; silent when ``enabled`` is False.

    With ``json_lines=True`` there is no bar: each update prints one JSON object of the step's metrics
    on stdout (for cluster logs that are parsed, not watched).
    """

    def __init__(
        self, total: int, *, initial: int = 0, enabled: bool = True, desc: str = "train", json_lines: bool = False
    ):
        self._bar = None
        self._json_lines = json_lines
        self._step = initial
        if enabled and not json_lines:
            from tqdm.auto import tqdm

            self._bar = tqdm(total=total, initial=initial, desc=desc, unit="step", dynamic_ncols=True)

    def update(self, metrics: dict[str, Any], keys: tuple[str, ...] = ("reward/mean", "kl")) -> None:
        self._step += 1
        if self._json_lines:
            row = {"step": self._step, **{k: v for k, v in metrics.items() if isinstance(v, (int, float, str))}}
            print(json.dumps(row, allow_nan=True), flush=True)
            return
        if self._bar is None:
            return
        shown = {}
        for key in keys:
            value = metrics.get(key)
            if isinstance(value, (int, float)) and math.isfinite(value):
                shown[key.split("/")[0]] = f"{value:.3g}"
        self._bar.set_postfix(shown, refresh=False)
        self._bar.update(1)

    def write(self, text: str) -> None:
        """Print above the bar without breaking it."""
        if self._bar is not None:
            self._bar.write(text)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
