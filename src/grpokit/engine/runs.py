"""Seeding, device choice and the run directory: what every run does before its first step."""

from __future__ import annotations

import random
from datetime import datetime
from pathlib import Path

import numpy as np
import torch

from grpokit.config import TrainConfig, save_config

__all__ = ["prepare_run_dir", "resolve_device", "seed_everything"]


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (all devices)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def resolve_device(name: str) -> torch.device:
    """``auto`` -> CUDA when available, else CPU; anything else as given."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        return torch.device(name)
    except RuntimeError as err:
        raise ValueError(f"model.device: {err}") from None


def prepare_run_dir(config: TrainConfig, prefix: str, run_dir: str | Path | None = None) -> Path:
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
