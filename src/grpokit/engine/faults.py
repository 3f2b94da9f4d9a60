"""Surviving what kills long RL runs: stop signals, non-finite updates and out-of-memory errors (the run
harness, :mod:`grpokit.engine.harness`, puts them to work and rewinds a resumed run directory).

What each fault does (the table with what the user sees is in ``docs/reliability.md``):

* **SIGTERM / SIGINT** (pre-emption, Ctrl-C): :class:`StopSignals` records the signal; the trainer finishes
  the step in progress, writes a checkpoint of it and raises :class:`TrainingInterrupted` (exit status
  128 + signal number from the CLI). A second signal stops at once.
* **Non-finite loss or gradient norm**: :func:`grpokit.engine.update.step_optimizers` skips that optimizer step (the weights
  and the optimizer state are untouched) and the trainer counts it in ``faults/nonfinite_skipped``;
  :class:`NonFiniteTracker` raises :class:`NonFiniteUpdatesError` after ``max_consecutive_nonfinite`` skipped
  updates in a row, writing no checkpoint, so the newest checkpoint is the last good one.
* **Out of memory** (``torch.OutOfMemoryError``, ``MemoryError``, a ``RuntimeError`` saying "out of
  memory"): :class:`OutOfMemoryGuard` catches it; when no optimizer step of the failing step had run, the
  trainer writes a checkpoint of the last completed step (its RNG, data and sampler state were captured
  when the step began), then raises :class:`OutOfMemoryAbort` naming the settings that reduce memory.
* **Resume**: :func:`grpokit.engine.harness.rewind_run_dir` drops the ``metrics.jsonl`` / ``samples.jsonl`` rows logged after the
  checkpoint (and a half-written last line), and moves checkpoints newer than it aside, so the resumed run
  appends exactly what the uninterrupted run would have written.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
from pathlib import Path
from types import FrameType, TracebackType
from typing import Any

import torch

__all__ = [
    "CheckpointWriteError",
    "NonFiniteTracker",
    "NonFiniteUpdatesError",
    "OutOfMemoryAbort",
    "OutOfMemoryGuard",
    "StopSignals",
    "TrainingAborted",
    "TrainingInterrupted",
    "is_out_of_memory",
    "out_of_memory_message",
]

log = logging.getLogger("grpokit.trainers")


# ---------------------------------------------------------------------------------------------------------
# Errors that end a run
# ---------------------------------------------------------------------------------------------------------


class TrainingAborted(RuntimeError):
    """A run stopped on purpose; the message says why and how to continue. ``exit_code`` is for the CLI."""

    exit_code: int = 1


class TrainingInterrupted(TrainingAborted):
    """SIGTERM or SIGINT arrived; the step in progress was finished and checkpointed."""

    def __init__(self, message: str, signum: int):
        super().__init__(message)
        self.signum = signum
        self.exit_code = 128 + signum  # the shell's convention for "killed by signal N"

    @classmethod
    def after_step(
        cls, signum: int, step: int, checkpoint: Path | None, run_dir: Path | None
    ) -> TrainingInterrupted:
        name = signal.Signals(signum).name
        return cls(
            f"{name} received: step {step} was finished and saved to {checkpoint}; "
            f"continue with: grpokit train --resume {run_dir}",
            signum,
        )


class NonFiniteUpdatesError(TrainingAborted):
    """``max_consecutive_nonfinite`` optimizer steps in a row had a non-finite loss or gradient."""


class OutOfMemoryAbort(TrainingAborted):
    """Generation or the update ran out of memory."""


class CheckpointWriteError(TrainingAborted):
    """A checkpoint could not be written (disk full, permissions); the previous ones are intact."""


# ---------------------------------------------------------------------------------------------------------
# Stop signals
# ---------------------------------------------------------------------------------------------------------


class StopSignals:
    """Context manager turning the first SIGTERM/SIGINT into a request to stop after the current step.

    Handlers are installed only in the main thread (Python delivers signals there); elsewhere this is a
    no-op and ``requested`` stays None. A second signal restores the previous handler and re-raises the
    signal through it, so an impatient Ctrl-C still ends the process at once. Previous handlers are
    restored on exit.
    """

    SIGNALS: tuple[int, ...] = (signal.SIGTERM, signal.SIGINT)

    def __init__(self) -> None:
        self.requested: int | None = None
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> StopSignals:
        if threading.current_thread() is threading.main_thread():
            for signum in self.SIGNALS:
                previous = signal.signal(signum, self._handle)
                # None: a handler set outside Python (it cannot be put back from Python); use the default.
                self._previous[signum] = signal.SIG_DFL if previous is None else previous
        return self

    def __exit__(self, *exc: object) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous.clear()

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.requested is not None:  # second signal: give up on the clean stop
            previous = self._previous.get(signum, signal.SIG_DFL)
            signal.signal(signum, previous)
            if signum == signal.SIGINT and previous is signal.default_int_handler:
                raise KeyboardInterrupt
            os.kill(os.getpid(), signum)
            return
        self.requested = signum
        print(
            f"grpokit: received {signal.Signals(signum).name}: finishing the current step, then saving a "
            "checkpoint (send it again to stop at once)",
            file=sys.stderr,
            flush=True,
        )

    @property
    def name(self) -> str:
        return signal.Signals(self.requested).name if self.requested is not None else ""


# ---------------------------------------------------------------------------------------------------------
# Non-finite updates
# ---------------------------------------------------------------------------------------------------------


class NonFiniteTracker:
    """Counts skipped updates; raises after ``max_consecutive`` in a row.

    Args:
        max_consecutive: skipped optimizer steps in a row that end the run.
    """

    def __init__(self, max_consecutive: int):
        if max_consecutive < 1:
            raise ValueError(f"max_consecutive_nonfinite must be >= 1, got {max_consecutive}")
        self.max_consecutive = max_consecutive
        self.consecutive = 0
        self.total = 0

    def update(self, skipped: int, applied: int) -> None:
        """Record one training step's optimizer steps: ``skipped`` non-finite ones, ``applied`` good ones.

        Within a step the order is not kept; a step with any good update resets the streak, and its
        skipped updates start the new one.
        """
        self.total += skipped
        self.consecutive = skipped if applied else self.consecutive + skipped

    def check(self, step: int, last_checkpoint: Path | None) -> None:
        """Raise :class:`NonFiniteUpdatesError` when the streak reached the limit."""
        if self.consecutive < self.max_consecutive:
            return
        where = f"the last checkpoint is {last_checkpoint}" if last_checkpoint else "no checkpoint was saved"
        raise NonFiniteUpdatesError(
            f"{self.consecutive} optimizer steps in a row had a non-finite loss or gradient norm (the last at "
            f"step {step}; optim.max_consecutive_nonfinite={self.max_consecutive}). Those updates were skipped, "
            f"so the weights are finite, but training is not progressing; {where}. Check the rewards and "
            "advantages in metrics.jsonl, lower optim.learning_rate, or set optim.max_grad_norm."
        )

    def state_dict(self) -> dict[str, int]:
        return {"consecutive": self.consecutive, "total": self.total}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.consecutive = int(state["consecutive"])
        self.total = int(state["total"])


# ---------------------------------------------------------------------------------------------------------
# Out of memory
# ---------------------------------------------------------------------------------------------------------


def is_out_of_memory(error: BaseException) -> bool:
    """True for CUDA/MPS/CPU allocation failures, whichever way the backend reports them."""
    if isinstance(error, (torch.OutOfMemoryError, MemoryError)):
        return True
    return isinstance(error, RuntimeError) and "out of memory" in str(error).lower()


class OutOfMemoryGuard:
    """Context manager that swallows an out-of-memory error and records it; other errors pass through.

    Leaving the ``with`` block drops the traceback, and with it the references to the activations that
    filled the memory, before the trainer writes a checkpoint. ``error`` is the exception's text and type.
    """

    def __init__(self) -> None:
        self.error: str | None = None

    def __enter__(self) -> OutOfMemoryGuard:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None
    ) -> bool:
        if error is None or not is_out_of_memory(error):
            return False
        self.error = f"{type(error).__name__}: {str(error).strip() or 'out of memory'}"
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        return True


_KNOBS = {
    "generate": [
        ("data.prompts_per_step", "B prompts per step"),
        ("algorithm.num_generations", "G completions per prompt"),
        ("generation.max_new_tokens", "completion length"),
        ("generation.max_prompt_length", "prompt length"),
    ],
    "score": [  # a reward model scores the N = B*G completions
        ("data.prompts_per_step", "B prompts per step"),
        ("algorithm.num_generations", "G completions per prompt"),
        ("generation.max_new_tokens", "completion length"),
    ],
    "update": [
        ("optim.gradient_accumulation_steps", "more, smaller micro-batches: same update, less memory"),
        ("optim.gradient_checkpointing", "true recomputes activations in backward: same update, less memory"),
        ("optim.mini_batch_size", "responses per optimizer step"),
        ("generation.max_new_tokens", "completion length"),
        ("data.prompts_per_step", "B"),
        ("algorithm.num_generations", "G"),
    ],
}


def out_of_memory_message(
    error: str,
    phase: str | None,
    step: int,
    config: Any,
    checkpoint: Path | None,
    *,
    exact: bool,
    run_dir: Path | None = None,
) -> str:
    """The text of :class:`OutOfMemoryAbort`: what failed, the settings to lower (with their values), and
    where to resume from.

    Args:
        checkpoint: the newest checkpoint, or None.
        exact: True when ``checkpoint`` holds the step right before the failed one (nothing is lost).
    """
    knobs = _KNOBS.get(phase or "", _KNOBS["generate"] + _KNOBS["update"][:2])
    values = []
    for path, what in dict.fromkeys(knobs):
        node = config
        for part in path.split("."):
            node = getattr(node, part, None)
        values.append(f"{path}={node} ({what})")
    if config.model.dtype == "float32":
        values.append("model.dtype=float32 (bfloat16 halves the weights and activations)")
    resume = f"grpokit train --resume {run_dir if run_dir is not None else checkpoint}"
    if checkpoint is not None and exact:
        where = f"{checkpoint} holds the last completed step; continue with: {resume}"
    elif checkpoint is not None:
        where = (
            f"the update had already changed the weights, so step {step - 1} cannot be saved; the newest "
            f"checkpoint is {checkpoint}; continue from it with: {resume}"
        )
    elif step > 1:
        where = (
            f"the update had already changed the weights, so step {step - 1} cannot be saved, and no earlier "
            "checkpoint exists (set checkpoint.save_steps)"
        )
    else:
        where = "no training step had completed; start again with smaller settings"
    return (
        f"out of memory during {phase or 'training'} at step {step} ({error}).\n"
        f"  Lower one of: {'; '.join(values)}.\n  {where}."
    )


# ---------------------------------------------------------------------------------------------------------
# Rewinding a run directory on resume
# ---------------------------------------------------------------------------------------------------------
