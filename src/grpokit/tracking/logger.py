"""Run logging: one JSON line per step in ``metrics.jsonl`` plus TensorBoard events.

Every trainer (LLM or classic RL) writes through :class:`RunLogger`, so all runs share one layout::

    RUN_DIR/metrics.jsonl      {"step": 3, "reward/mean": 0.41, ...} per line
    RUN_DIR/samples.jsonl      {"step": 3, "prompt": ..., "completions": [...], "rewards": [...], ...} per group
    RUN_DIR/tensorboard/       TensorBoard event files
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any


class RunLogger:
    """Appends per-step metrics to ``metrics.jsonl`` and, optionally, TensorBoard.

    Only the main process should construct one (the trainers pass ``enabled=False`` elsewhere).
    """

    def __init__(self, run_dir: str | os.PathLike, *, tensorboard: bool = True, enabled: bool = True):
        self.run_dir = Path(run_dir)
        self.enabled = enabled
        self._tb = None
        if not enabled:
            return
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self._file = open(self.run_dir / "metrics.jsonl", "a", encoding="utf-8")  # noqa: SIM115  (closed in close())
        self._samples = None  # opened on the first log_samples call: runs that log none get no file
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter  # lazy: pulls in tensorboard

            self._tb = SummaryWriter(log_dir=str(self.run_dir / "tensorboard"))

    def log(self, step: int, metrics: dict[str, Any]) -> None:
        if not self.enabled:
            return
        row = {"step": step, **{k: _plain(v) for k, v in metrics.items()}}
        self._file.write(json.dumps(row, allow_nan=True) + "\n")
        self._file.flush()
        if self._tb is not None:
            for key, value in row.items():
                if key != "step" and isinstance(value, (int, float)) and math.isfinite(value):
                    self._tb.add_scalar(key, value, step)

    def log_samples(self, step: int, rows: list[dict[str, Any]]) -> None:
        """Append one JSON line per row (e.g. one group: prompt, completions, rewards, advantages)."""
        if not self.enabled or not rows:
            return
        if self._samples is None:
            self._samples = open(self.run_dir / "samples.jsonl", "a", encoding="utf-8")  # noqa: SIM115
        for row in rows:
            self._samples.write(json.dumps({"step": step, **_plain_tree(row)}, allow_nan=True) + "\n")
        self._samples.flush()

    def close(self) -> None:
        if not self.enabled:
            return
        self._file.close()
        if self._samples is not None:
            self._samples.close()
        if self._tb is not None:
            self._tb.close()

    def __enter__(self) -> RunLogger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _plain(value: Any) -> Any:
    """Tensors and numpy scalars to Python numbers, so rows are valid JSON."""
    if hasattr(value, "item") and getattr(value, "ndim", 0) == 0:
        return value.item()
    return value


def _plain_tree(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _plain_tree(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain_tree(v) for v in value]
    if hasattr(value, "tolist"):  # tensors and numpy arrays of any rank
        return value.tolist()
    return value


def read_samples(run_dir: str | os.PathLike) -> list[dict[str, Any]]:
    """All rows of ``RUN_DIR/samples.jsonl``, in order."""
    path = Path(run_dir) / "samples.jsonl"
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def read_metrics(run_dir: str | os.PathLike) -> list[dict[str, Any]]:
    """All rows of ``RUN_DIR/metrics.jsonl``, in order."""
    path = Path(run_dir) / "metrics.jsonl"
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]
