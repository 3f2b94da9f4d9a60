"""The run harness: everything around a trainer's steps, written once for every trainer.

A trainer's loop reads as the algorithm because this holds the rest::

    harness = RunHarness(config, prefix="grpo", ...)          the checkpoint to resume is found before any model loads
    ... build models, restore from harness.resume_from ...
    harness.open(start_step)                                  run dir (fresh, or rewound to the checkpoint)
    with harness.running(save=trainer.save_checkpoint) as run:  logs, progress bar, SIGTERM/SIGINT, the report
        for step in run.steps():                              stops after a signal, checkpointing the step first
            with run.guard_memory(on_out_of_memory): ...      out of memory -> an exact checkpoint, a clear error
            run.log(step, metrics, samples)
            run.end_step(step, update)                        the non-finite streak; periodic checkpoints

Checkpoints are ``RUN_DIR/checkpoints/step-XXXXXX`` written atomically (:mod:`grpokit.engine.checkpoint`), and
``resume`` means the same everywhere: a checkpoint, a run directory (its newest), or ``latest`` (the newest
checkpoint under ``output_dir``). A resumed run drops the log rows written after its checkpoint and sets
newer checkpoints aside, atomically, before it logs anything.
"""

from __future__ import annotations

import json
import os
import signal
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

from grpokit.config import save_config
from grpokit.engine import checkpoint as ckpt
from grpokit.engine import faults
from grpokit.engine.parallel import DataParallel
from grpokit.engine.update import UpdateStats
from grpokit.tracking import ProgressBar, RunLogger
from grpokit.tracking.run import finish_run_report, open_run_logger

__all__ = ["LOG_FILES", "RunHarness", "prepare_run_dir", "rewind_run_dir"]

LOG_FILES = ("metrics.jsonl", "samples.jsonl")
"""The run's own logs, rewound on resume (TensorBoard purges its redone steps itself)."""


def prepare_run_dir(config: Any, prefix: str, run_dir: str | Path | None = None) -> Path:
    """Create the run directory (``output_dir/run_name`` unless resuming into ``run_dir``); save config.yaml.

    A fresh run refuses a directory that already holds a run (metrics or checkpoints), so results are never
    mixed; resume into it instead.
    """
    if run_dir is None:
        name = config.logging.run_name or f"{prefix}-{datetime.now():%Y%m%d-%H%M%S}"
        run_dir = Path(config.logging.output_dir) / name
        if (run_dir / "metrics.jsonl").exists() or (run_dir / "checkpoints").exists():
            raise ValueError(
                f"run directory {str(run_dir)!r} already holds a run; choose another logging.run_name "
                "or continue it with --resume"
            )
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    save_config(config, run_dir / "config.yaml")
    return run_dir


def rewind_run_dir(run_dir: str | os.PathLike, step: int) -> dict[str, int]:
    """Make ``run_dir`` look as it did right after checkpoint ``step`` was written.

    Rows of ``metrics.jsonl`` and ``samples.jsonl`` with a step after ``step`` were logged between that
    checkpoint and the crash; the resumed run logs those steps again, so they are removed (a last line
    cut off by the crash is removed too). Checkpoints newer than ``step`` belong to the abandoned
    continuation: they are renamed ``abandoned-step-XXXXXX`` (never picked by resume, never deleted).
    Files are rewritten atomically.

    Returns:
        How many log rows were dropped per file and how many checkpoints were set aside.
    """
    run_dir = Path(run_dir)
    dropped: dict[str, int] = {}
    for name in LOG_FILES:
        path = run_dir / name
        if not path.is_file():
            continue
        kept, removed = [], 0
        with open(path, encoding="utf-8", errors="replace") as f:
            for line in f:
                try:
                    row_step = json.loads(line)["step"]
                except (ValueError, KeyError, TypeError):  # a line cut off by the crash
                    removed += bool(line.strip())
                    continue
                if row_step <= step:
                    kept.append(line if line.endswith("\n") else line + "\n")
                else:
                    removed += 1
        if removed:
            tmp = path.with_name(f".{name}.tmp")
            with open(tmp, "w", encoding="utf-8") as f:
                f.writelines(kept)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        dropped[name] = removed
    set_aside = 0
    for checkpoint in ckpt.list_checkpoints(run_dir):
        if ckpt.step_of(checkpoint) > step:
            checkpoint.rename(checkpoint.with_name(f"abandoned-{checkpoint.name}"))
            set_aside += 1
    if any(dropped.values()) or set_aside:
        faults.log.warning(
            "resuming %s at step %d: dropped %s log rows written after that checkpoint; set aside %d newer "
            "checkpoint(s) as abandoned-step-*",
            run_dir,
            step,
            sum(dropped.values()),
            set_aside,
        )
    return {**dropped, "checkpoints_set_aside": set_aside}


class RunHarness:
    """One run's directory, logs, checkpoints, resume, signals, out-of-memory and non-finite handling.

    Args:
        config: the run's config (``logging``, ``checkpoint`` and ``max_steps`` are read; saved as
            config.yaml).
        prefix: run directory name prefix (``<prefix>-<date>-<time>``) when ``logging.run_name`` is unset.
        max_consecutive_nonfinite: skipped updates in a row that stop the run.
        parallel: the process group (rank 0 alone writes); None for one process.
        run_dir: a fixed run directory instead of ``output_dir/run_name`` (False: write nothing at all).
        desc, progress_keys: the progress bar's label and the metrics it shows.
    """

    def __init__(
        self,
        config: Any,
        *,
        prefix: str,
        max_consecutive_nonfinite: int,
        parallel: DataParallel | None = None,
        run_dir: str | Path | bool | None = None,
        desc: str = "train",
        progress_keys: tuple[str, ...] = ("reward/mean", "kl"),
    ):
        self.config = config
        self.prefix = prefix
        self.parallel = parallel if parallel is not None else DataParallel()
        self.fixed_run_dir = run_dir
        self.desc, self.progress_keys = desc, progress_keys
        self.nonfinite = faults.NonFiniteTracker(max_consecutive_nonfinite)
        self.resume_from: Path | None = None  # the checkpoint this run continues
        if config.checkpoint.resume is not None:
            self.resume_from = ckpt.find_checkpoint(config.checkpoint.resume, config.logging.output_dir)
        self.run_dir: Path | None = None
        self.checkpointer: ckpt.Checkpointer | None = None
        self.start_step = 0
        self.logger: RunLogger | None = None
        self.progress: ProgressBar | None = None
        self._stop: faults.StopSignals | None = None
        self._save: Callable[[int], Path] | None = None

    @property
    def writes(self) -> bool:
        """False for an in-memory run (``run_dir=False``)."""
        return self.fixed_run_dir is not False

    def open(self, start_step: int = 0) -> Path | None:
        """Create the run directory (or reopen the resumed one, rewound to its checkpoint); returns it."""
        self.start_step = start_step
        if not self.writes:
            return None
        if self.resume_from is not None:
            run_dir = ckpt.run_dir_of(self.resume_from)
            self.run_dir = self.parallel.on_main(lambda: prepare_run_dir(self.config, self.prefix, run_dir))
            self.parallel.on_main(lambda: rewind_run_dir(run_dir, start_step))
        else:
            fixed = Path(self.fixed_run_dir) if isinstance(self.fixed_run_dir, (str, Path)) else None
            self.run_dir = self.parallel.on_main(lambda: prepare_run_dir(self.config, self.prefix, fixed))
        checkpoint = self.config.checkpoint
        self.checkpointer = ckpt.Checkpointer(
            self.run_dir, save_steps=checkpoint.save_steps, save_total_limit=checkpoint.save_total_limit
        )
        self.checkpointer.mark_saved(self.resume_from)
        return self.run_dir

    @contextmanager
    def running(self, save: Callable[[int], Path]) -> Iterator[RunHarness]:
        """Logs and progress bar open, SIGTERM/SIGINT turned into a stop after the current step (``save``
        writes the checkpoint of a step and returns it); the report is written when the run ends."""
        logging, main = self.config.logging, self.parallel.is_main
        self._save = save
        run_dir = self.run_dir if self.writes and main else None
        self.logger = (
            open_run_logger(run_dir, logging, self.config, start_step=self.start_step)
            if run_dir is not None
            else RunLogger(self.run_dir or Path("."), enabled=False)
        )
        self.progress = ProgressBar(
            self.config.max_steps, initial=self.start_step, enabled=main and not logging.quiet,
            desc=self.desc, json_lines=logging.json_logs,
        )  # fmt: skip
        finished = False
        try:
            with faults.StopSignals() as stop:
                self._stop = stop
                yield self
            finished = True
        finally:
            self._stop = None
            self.progress.close()
            self.logger.close()
        if finished and run_dir is not None:
            finish_run_report(run_dir, logging)

    def steps(self) -> Iterator[int]:
        """Steps ``start_step + 1 .. max_steps``; after each, a requested stop checkpoints it and raises
        :class:`~grpokit.engine.faults.TrainingInterrupted` (every process stops after the same step)."""
        for step in range(self.start_step + 1, self.config.max_steps + 1):
            yield step
            requested = self._stop.requested if self._stop is not None else None
            if not self.parallel.all_true(requested is None):
                self.stop_on_signal(step, requested or signal.SIGTERM)

    def log(
        self,
        step: int,
        metrics: dict[str, Any],
        samples: list[dict[str, Any]] | None = None,
        progress: bool = True,
    ) -> None:
        """One metrics row (rank 0 writes it) and, with ``progress``, a tick of the progress bar."""
        assert self.logger is not None and self.progress is not None, "log() outside running()"
        self.logger.log(step, metrics)
        if samples:
            self.logger.log_samples(step, samples)
        if progress:
            self.progress.update(metrics, keys=self.progress_keys)

    def end_step(self, step: int, update: UpdateStats) -> None:
        """After a logged step: stop on too many non-finite updates in a row; periodic checkpoint."""
        self.nonfinite.update(update.nonfinite_skipped, update.optimizer_steps)
        self.nonfinite.check(step, self.last_saved)
        if self.checkpointer is not None and self.checkpointer.should_save(step):
            self.save(step)

    def save(self, step: int) -> Path:
        assert self._save is not None, "save() outside running()"
        return self._save(step)

    @property
    def directory(self) -> Path:
        """The run directory (after :meth:`open`, for a run that writes)."""
        if self.run_dir is None:
            raise RuntimeError("the run directory is not open (RunHarness.open not called, or run_dir=False)")
        return self.run_dir

    @property
    def last_saved(self) -> Path | None:
        return self.checkpointer.last_saved if self.checkpointer is not None else None

    def saved_step(self) -> int | None:
        return self.checkpointer.saved_step() if self.checkpointer is not None else None

    def stop_on_signal(self, step: int, signum: int) -> None:
        """After a SIGTERM/SIGINT: checkpoint the finished ``step`` (unless just saved) and raise."""
        if self.writes and self.saved_step() != step:
            self.save(step)
        raise faults.TrainingInterrupted.after_step(signum, step, self.last_saved, self.run_dir)

    @contextmanager
    def guard_memory(self, on_out_of_memory: Callable[[str], None]) -> Iterator[None]:
        """Turn an out-of-memory error inside the block into ``on_out_of_memory(error)``, which saves what can
        be saved and raises :class:`~grpokit.engine.faults.OutOfMemoryAbort`; other errors pass through."""
        guard = faults.OutOfMemoryGuard()
        with guard:
            yield
        if guard.error is not None:
            on_out_of_memory(guard.error)

    def state_dict(self) -> dict[str, Any]:
        """What an exact resume needs of the harness (the non-finite streak)."""
        return {"faults": self.nonfinite.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if "faults" in state:  # absent from checkpoints written before the counters existed
            self.nonfinite.load_state_dict(state["faults"])
