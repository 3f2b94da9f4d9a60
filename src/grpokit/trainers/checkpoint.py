"""Checkpoints in the Hugging Face layout, written atomically, rotated, and found again for resume.

Layout of a run directory::

    RUN_DIR/config.yaml                         the resolved config
    RUN_DIR/checkpoints/step-000010/            periodic checkpoint
        model.safetensors, config.json, ...     the policy (``save_pretrained``), loadable by plain transformers
        tokenizer.json, ...                     its tokenizer
        trainer_state.pt                        optimizer, scheduler, step, RNG, data-iterator and sampler state
        reference.safetensors                   the reference policy (only when beta > 0)
    RUN_DIR/final/                              the policy and tokenizer at the end of training

A checkpoint is written into ``.tmp-step-XXXXXX`` and renamed when complete, so a crash never leaves a
half-written ``step-XXXXXX`` for resume to pick up. ``trainer_state.pt`` holds only tensors and plain
Python containers and is read with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import os
import random
import re
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch

__all__ = [
    "Checkpointer",
    "capture_rng_state",
    "find_checkpoint",
    "list_checkpoints",
    "load_trainer_state",
    "restore_rng_state",
]

STATE_FILE = "trainer_state.pt"
REFERENCE_FILE = "reference.safetensors"
_STEP_DIR = re.compile(r"^step-(\d+)$")


def capture_rng_state() -> dict[str, Any]:
    """Python, NumPy and torch (CPU and CUDA) RNG states, as tensors and plain containers."""
    np_state = np.random.get_state()
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *map(float, np_state[2:])],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    """Inverse of :func:`capture_rng_state`."""
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), int(pos), int(has_gauss), float(cached)))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def list_checkpoints(run_dir: str | os.PathLike) -> list[Path]:
    """Complete periodic checkpoints of a run, oldest first."""
    root = Path(run_dir) / "checkpoints"
    if not root.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in root.iterdir() if (m := _STEP_DIR.match(p.name)) and p.is_dir()]
    return [p for _, p in sorted(found)]


def find_checkpoint(resume: str, output_dir: str | os.PathLike) -> Path:
    """The checkpoint directory ``resume`` designates.

    ``resume`` is a checkpoint directory (has ``trainer_state.pt``), a run directory (its newest
    checkpoint), or ``latest`` (the newest checkpoint of the most recently modified run in ``output_dir``).
    """
    if resume == "latest":
        root = Path(output_dir)
        runs = [p for p in root.iterdir() if list_checkpoints(p)] if root.is_dir() else []
        if not runs:
            raise ValueError(f"--resume latest: no run with a checkpoint in output_dir {str(root)!r}")
        newest_run = max(runs, key=lambda p: list_checkpoints(p)[-1].stat().st_mtime)
        return list_checkpoints(newest_run)[-1]
    path = Path(resume)
    if (path / STATE_FILE).is_file():
        return path
    if path.is_dir():
        checkpoints = list_checkpoints(path)
        if checkpoints:
            return checkpoints[-1]
        raise ValueError(f"resume: run directory {str(path)!r} has no checkpoint under checkpoints/step-*")
    raise ValueError(f"resume: {str(path)!r} is neither a run directory nor a checkpoint directory")


def run_dir_of(checkpoint: Path) -> Path:
    """``RUN_DIR`` of ``RUN_DIR/checkpoints/step-XXXXXX``."""
    return checkpoint.parent.parent


def load_trainer_state(checkpoint: str | os.PathLike) -> dict[str, Any]:
    """The ``trainer_state.pt`` of a checkpoint, loaded safely (``weights_only=True``)."""
    return torch.load(Path(checkpoint) / STATE_FILE, map_location="cpu", weights_only=True)


class Checkpointer:
    """Saves ``step-XXXXXX`` checkpoints every ``save_steps`` steps, keeping the newest ``save_total_limit``."""

    def __init__(
        self, run_dir: str | os.PathLike, *, save_steps: int = 0, save_total_limit: int | None = None
    ):
        self.run_dir = Path(run_dir)
        self.save_steps = save_steps
        self.save_total_limit = save_total_limit

    def should_save(self, step: int) -> bool:
        """``step`` counts completed training steps (1-based)."""
        return self.save_steps > 0 and step % self.save_steps == 0

    def save(
        self,
        step: int,
        model: Any,
        tokenizer: Any,
        state: dict[str, Any],
        reference: torch.nn.Module | None = None,
    ) -> Path:
        """Write checkpoint ``step`` atomically and rotate old ones; returns its directory."""
        root = self.run_dir / "checkpoints"
        root.mkdir(parents=True, exist_ok=True)
        final = root / f"step-{step:06d}"
        tmp = root / f".tmp-step-{step:06d}"
        if tmp.exists():
            shutil.rmtree(tmp)
        save_pretrained(model, tokenizer, tmp)
        torch.save(state, tmp / STATE_FILE)
        if reference is not None:
            from safetensors.torch import save_model

            save_model(reference, str(tmp / REFERENCE_FILE))
        if final.exists():  # the same step saved again after a resume
            shutil.rmtree(final)
        os.replace(tmp, final)
        self._rotate()
        return final

    def _rotate(self) -> None:
        if self.save_total_limit is None:
            return
        for old in list_checkpoints(self.run_dir)[: -self.save_total_limit]:
            shutil.rmtree(old)


@contextmanager
def quiet_transformers() -> Iterator[None]:
    """Silence transformers' per-file progress bars (one per save would break the training bar)."""
    from transformers.utils import logging as hf_logging

    was_enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_enabled:
            hf_logging.enable_progress_bar()


def save_pretrained(model: Any, tokenizer: Any, path: str | os.PathLike) -> None:
    """The policy in the Hugging Face layout (safetensors) with its tokenizer."""
    with quiet_transformers():
        model.save_pretrained(os.fspath(path), safe_serialization=True)
    if tokenizer is not None:
        tokenizer.save_pretrained(os.fspath(path))


def load_reference(reference: torch.nn.Module, checkpoint: str | os.PathLike) -> bool:
    """Load ``reference.safetensors`` of a checkpoint into ``reference``; False when the file is absent."""
    path = Path(checkpoint) / REFERENCE_FILE
    if not path.is_file():
        return False
    from safetensors.torch import load_model

    load_model(reference, str(path))
    return True
