"""Run logging: one JSON line per step in ``metrics.jsonl``, plus the experiment trackers.

Every trainer (LLM or classic RL) writes through :class:`RunLogger`, so all runs share one layout::

    RUN_DIR/metrics.jsonl      {"step": 3, "reward/mean": 0.41, ...} per line (always written)
    RUN_DIR/samples.jsonl      {"step": 3, "prompt": ..., "completions": [...], "rewards": [...], ...} per group
    RUN_DIR/tensorboard/       TensorBoard event files (tracker "tensorboard", the default)

Other trackers (W&B, MLflow, trackio) come from :mod:`grpokit.tracking.trackers` by name.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, TextIO


class RunLogger:
    """Appends per-step metrics to ``metrics.jsonl`` and forwards them to the experiment trackers.

    Args:
        run_dir: the run directory (created if missing).
        trackers: tracker names for :func:`grpokit.tracking.trackers.make_trackers`
            (``"tensorboard"``, ``"wandb"``, ``"mlflow"``, ``"trackio"``).
        config: the resolved config, logged once by every tracker.
        tracker_options: per-tracker keyword arguments, e.g. ``{"wandb": {"project": "x"}}``.
        tensorboard: ``False`` drops ``"tensorboard"`` from ``trackers`` (shorthand kept for callers).
        enabled: only the main process logs; the others construct a disabled logger.
    """

    def __init__(
        self,
        run_dir: str | os.PathLike,
        *,
        trackers: Sequence[str] = ("tensorboard",),
        config: Any = None,
        tracker_options: Mapping[str, Mapping[str, Any]] | None = None,
        tensorboard: bool = True,
        enabled: bool = True,
    ):
        self.run_dir = Path(run_dir)
        self.enabled = enabled
        self.trackers: list[Any] = []
        if not enabled:
            return
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self._file = open(self.run_dir / "metrics.jsonl", "a", encoding="utf-8")  # noqa: SIM115  (closed in close())
        # Opened on the first log_samples call: runs that log none get no file.
        self._samples: TextIO | None = None
        names = [t for t in trackers if tensorboard or t != "tensorboard"]
        if names:
            from grpokit.tracking.trackers import make_trackers  # lazy: trackers import their backends

            self.trackers = make_trackers(names, self.run_dir, config, options=tracker_options)

    def log(self, step: int, metrics: dict[str, Any]) -> None:
        if not self.enabled:
            return
        row = {"step": step, **{k: _plain(v) for k, v in metrics.items()}}
        self._file.write(json.dumps(row, allow_nan=True) + "\n")
        self._file.flush()
        scalars = {k: v for k, v in row.items() if k != "step" and isinstance(v, (int, float))}
        for tracker in self.trackers:
            tracker.log(step, scalars)

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
        for tracker in self.trackers:
            tracker.close()

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
