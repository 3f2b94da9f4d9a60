"""Checkpoints of classic-RL runs, in the same layout as the LLM trainer's::

    RUN_DIR/config.yaml
    RUN_DIR/checkpoints/step-000040/policy.safetensors      policy weights
    RUN_DIR/checkpoints/step-000040/value.safetensors       PPO value network (PPO only)
    RUN_DIR/checkpoints/step-000040/reference.safetensors   frozen reference policy (beta > 0 only)
    RUN_DIR/checkpoints/step-000040/state.pt                optimizer, counters, RNG state

``state.pt`` holds only tensors, numbers and strings, so it loads with ``torch.load(weights_only=True)``
(no pickled code runs when a checkpoint is opened).
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

_STEP_DIR = re.compile(r"^step-(\d{6,})$")


def checkpoint_dir(run_dir: str | os.PathLike, step: int) -> Path:
    """``RUN_DIR/checkpoints/step-XXXXXX`` for training step ``step``."""
    return Path(run_dir) / "checkpoints" / f"step-{step:06d}"


def list_checkpoints(run_dir: str | os.PathLike) -> list[Path]:
    """The complete checkpoints of a run (those with a ``state.pt``), oldest first."""
    root = Path(run_dir) / "checkpoints"
    if not root.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in root.iterdir() if (m := _STEP_DIR.match(p.name))]
    return [p for _, p in sorted(found) if (p / "state.pt").is_file()]


def save_checkpoint(path: str | os.PathLike, modules: dict[str, nn.Module], state: dict[str, Any]) -> Path:
    """Write ``<name>.safetensors`` for each module and ``state.pt``; ``state.pt`` last, so its presence
    marks a complete checkpoint even if the process dies while writing."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    for name, module in modules.items():
        # contiguous(): safetensors refuses views (e.g. a transposed weight).
        tensors = {k: v.detach().contiguous() for k, v in module.state_dict().items()}
        save_file(tensors, str(path / f"{name}.safetensors"))
    tmp = path / "state.pt.tmp"
    torch.save(state, tmp)
    os.replace(tmp, path / "state.pt")
    return path


def load_checkpoint(path: str | os.PathLike, modules: dict[str, nn.Module]) -> dict[str, Any]:
    """Load weights into ``modules`` (strictly: every key must match) and return the ``state.pt`` dict.

    Raises:
        ValueError: a missing directory or file, naming it.
    """
    path = Path(path)
    if not (path / "state.pt").is_file():
        raise ValueError(f"{path} is not a checkpoint directory (no state.pt)")
    for name, module in modules.items():
        file = path / f"{name}.safetensors"
        if not file.is_file():
            raise ValueError(f"checkpoint {path} has no {file.name}")
        module.load_state_dict(load_file(str(file)))
    return torch.load(path / "state.pt", weights_only=True)


def prune_checkpoints(run_dir: str | os.PathLike, keep: int | None) -> None:
    """Delete the oldest checkpoints so that at most ``keep`` remain (``None`` keeps all)."""
    if keep is None:
        return
    for old in list_checkpoints(run_dir)[:-keep]:
        shutil.rmtree(old)


def resolve_resume(resume: str, output_dir: str | os.PathLike) -> Path:
    """The checkpoint directory a ``resume`` setting points to.

    ``resume`` is a checkpoint directory, a run directory (its newest checkpoint), or ``latest``
    (the newest checkpoint of the most recently modified run in ``output_dir``).
    """
    if resume == "latest":
        runs = [p for p in Path(output_dir).glob("*") if list_checkpoints(p)]
        if not runs:
            raise ValueError(f"resume='latest' but no run under {output_dir} has a checkpoint")
        resume = str(max(runs, key=lambda p: p.stat().st_mtime))
    path = Path(resume)
    if (path / "state.pt").is_file():
        return path
    checkpoints = list_checkpoints(path)
    if not checkpoints:
        raise ValueError(
            f"resume={str(resume)!r} is neither a checkpoint directory nor a run with checkpoints"
        )
    return checkpoints[-1]
