"""Checkpoints in the Hugging Face layout, written atomically, rotated, and found again for resume.

Layout of a run directory::

    RUN_DIR/config.yaml                         the resolved config
    RUN_DIR/checkpoints/step-000010/            periodic checkpoint
        model.safetensors, config.json, ...     the policy (``save_pretrained``), loadable by plain transformers
        tokenizer.json, ...                     its tokenizer
        trainer_state.pt                        optimizer, scheduler, step, RNG, data-iterator and sampler state
        reference.safetensors                   the reference policy (only when beta > 0)
        <name>.safetensors                      further modules a trainer keeps (e.g. a value model)
    RUN_DIR/final/                              the policy and tokenizer at the end of training

A checkpoint is written into ``.tmp-step-XXXXXX``, every file and the directory are fsynced, and only then
is it renamed ``step-XXXXXX``: a crash (SIGKILL, power loss) at any point leaves either the complete new
checkpoint or none, never a half-written one for resume to pick up; stale temporaries are removed by the
next save. A write that fails (disk full) removes its temporary and raises :class:`CheckpointWriteError`,
leaving the earlier checkpoints as they were. ``trainer_state.pt`` holds only tensors and plain Python
containers and is read with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import os
import pickle
import random
import re
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch

from grpokit.engine.faults import CheckpointWriteError

__all__ = [
    "CheckpointWriteError",
    "Checkpointer",
    "atomic_directory",
    "capture_rng_state",
    "find_checkpoint",
    "list_checkpoints",
    "load_module",
    "load_trainer_state",
    "restore_rng_state",
    "step_of",
]

STATE_FILE = "trainer_state.pt"
REFERENCE_FILE = "reference.safetensors"
_STEP_DIR = re.compile(r"^step-(\d+)$")
_TEMPORARY = re.compile(r"^\.(tmp|old)-step-(\d+)$")


def capture_rng_state() -> dict[str, Any]:
    """Python, NumPy and torch (CPU and CUDA) RNG states, as tensors and plain containers."""
    np_state = cast(tuple[Any, ...], np.random.get_state(legacy=True))
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
    found = [
        (int(m.group(1)), p)
        for p in root.iterdir()
        if (m := _STEP_DIR.match(p.name)) and (p / STATE_FILE).is_file()
    ]
    return [p for _, p in sorted(found)]


def step_of(checkpoint: str | os.PathLike) -> int:
    """The step number of a ``step-XXXXXX`` directory."""
    match = _STEP_DIR.match(Path(checkpoint).name)
    if match is None:
        raise ValueError(f"{str(checkpoint)!r} is not a step-XXXXXX checkpoint directory")
    return int(match.group(1))


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
    path = Path(checkpoint) / STATE_FILE
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, EOFError, OSError, pickle.UnpicklingError) as err:
        others = [str(p) for p in list_checkpoints(run_dir_of(Path(checkpoint))) if p != Path(checkpoint)]
        raise ValueError(
            f"{path} cannot be read ({type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}); "
            f"resume from an earlier checkpoint instead{': ' + ', '.join(others) if others else ''}"
        ) from err


class Checkpointer:
    """Saves ``step-XXXXXX`` checkpoints every ``save_steps`` steps, keeping the newest ``save_total_limit``.

    ``last_saved`` is the directory of the newest checkpoint this object wrote or was told about
    (:meth:`mark_saved`), so a trainer never writes the same step twice.
    """

    def __init__(
        self, run_dir: str | os.PathLike, *, save_steps: int = 0, save_total_limit: int | None = None
    ):
        self.run_dir = Path(run_dir)
        self.save_steps = save_steps
        self.save_total_limit = save_total_limit
        self.last_saved: Path | None = None

    def should_save(self, step: int) -> bool:
        """``step`` counts completed training steps (1-based)."""
        return self.save_steps > 0 and step % self.save_steps == 0

    def mark_saved(self, checkpoint: Path | None) -> None:
        """Record an existing checkpoint (the one a run resumed from) as the newest."""
        self.last_saved = checkpoint

    def saved_step(self) -> int | None:
        return step_of(self.last_saved) if self.last_saved is not None else None

    def save(
        self,
        step: int,
        model: Any,
        tokenizer: Any,
        state: dict[str, Any],
        reference: torch.nn.Module | None = None,
        modules: dict[str, torch.nn.Module] | None = None,
    ) -> Path:
        """Write checkpoint ``step`` atomically and rotate old ones; returns its directory.

        Args:
            model: the Hugging Face policy (``save_pretrained``), or None when every module is in ``modules``.
            modules: further modules to keep, each written to ``<name>.safetensors`` (e.g. ``{"value": v}``)
                and read back with :func:`load_module`.
        Raises:
            CheckpointWriteError: the write failed (its message names the directory and the OS error); the
                temporary is removed and every earlier checkpoint is left as it was.
        """
        root = self.run_dir / "checkpoints"
        final = root / f"step-{step:06d}"
        try:
            root.mkdir(parents=True, exist_ok=True)
            _remove_stale_temporaries(root)
            with atomic_directory(final) as tmp:
                if model is not None:  # a Hugging Face policy; other trainers keep every module in `modules`
                    save_pretrained(model, tokenizer, tmp)
                torch.save(state, tmp / STATE_FILE)
                named = dict(modules or {})
                if reference is not None:
                    named[REFERENCE_FILE.removesuffix(".safetensors")] = reference
                if named:
                    from safetensors.torch import save_model

                    for name, module in named.items():
                        save_model(module, str(tmp / f"{name}.safetensors"))
        except OSError as err:
            previous = list_checkpoints(self.run_dir)
            kept = f"the newest complete checkpoint is {previous[-1]}" if previous else "no checkpoint exists"
            raise CheckpointWriteError(
                f"could not write checkpoint {final}: {err.strerror or err} (errno {err.errno}); {kept}. "
                "Free space (or fix permissions) in the output directory and resume from it."
            ) from err
        self.last_saved = final
        self._rotate()
        return final

    def _rotate(self) -> None:
        if self.save_total_limit is None:
            return
        for old in list_checkpoints(self.run_dir)[: -self.save_total_limit]:
            shutil.rmtree(old)


@contextmanager
def atomic_directory(final: str | os.PathLike) -> Iterator[Path]:
    """Yield an empty temporary directory next to ``final``; on success make it ``final`` atomically.

    The files are fsynced, then the temporary is renamed; an existing ``final`` is first renamed aside
    (``.old-*``) and deleted only after the new one is in place. On error the temporary is removed and
    ``final`` is untouched.
    """
    final = Path(final)
    tmp = final.with_name(f".tmp-{final.name}")
    old = final.with_name(f".old-{final.name}")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    try:
        yield tmp
        _fsync_tree(tmp)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if final.exists():  # the same step written again (a resume from an older checkpoint)
        if old.exists():
            shutil.rmtree(old)
        os.replace(final, old)
    os.replace(tmp, final)
    _fsync_dir(final.parent)
    if old.exists():
        shutil.rmtree(old)


def _fsync_tree(root: Path) -> None:
    """fsync every file under ``root`` and every directory, so a rename publishes durable data."""
    for dirpath, _, filenames in os.walk(root):
        for name in filenames:
            fd = os.open(os.path.join(dirpath, name), os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        _fsync_dir(Path(dirpath))


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    except OSError:  # some filesystems cannot fsync a directory; the rename is still atomic
        pass
    finally:
        os.close(fd)


def _remove_stale_temporaries(root: Path) -> None:
    """Remove what a crash mid-save left behind; put back a checkpoint that was renamed aside."""
    for path in root.iterdir():
        match = _TEMPORARY.match(path.name)
        if match is None:
            continue
        final = root / f"step-{match.group(2)}"
        if match.group(1) == "old" and not final.exists():  # killed between the two renames
            os.replace(path, final)
        else:
            shutil.rmtree(path, ignore_errors=True)


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


def save_pretrained(
    model: Any, tokenizer: Any, path: str | os.PathLike, state_dict: dict[str, torch.Tensor] | None = None
) -> None:
    """The policy in the Hugging Face layout (safetensors) with its tokenizer.

    ``state_dict``: the full weights when the model's own are sharded (DeepSpeed ZeRO-3, FSDP2).
    """
    with quiet_transformers():
        weights = {} if state_dict is None else {"state_dict": state_dict}
        model.save_pretrained(os.fspath(path), safe_serialization=True, **weights)
    if tokenizer is not None:
        tokenizer.save_pretrained(os.fspath(path))


def load_reference(reference: torch.nn.Module, checkpoint: str | os.PathLike) -> bool:
    """Load ``reference.safetensors`` of a checkpoint into ``reference``; False when the file is absent."""
    return load_module(reference, checkpoint, REFERENCE_FILE.removesuffix(".safetensors"))


def load_module(module: torch.nn.Module, checkpoint: str | os.PathLike, name: str) -> bool:
    """Load ``<name>.safetensors`` of a checkpoint (see ``Checkpointer.save(modules=...)``) into ``module``;
    False when the file is absent."""
    path = Path(checkpoint) / f"{name}.safetensors"
    if not path.is_file():
        return False
    from safetensors.torch import load_model

    load_model(module, str(path))
    return True
