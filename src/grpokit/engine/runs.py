"""Seeding and device choice: what every run does before it builds a model (the device rule itself is
:func:`grpokit.models.device.resolve_device`)."""

from __future__ import annotations

import random

import numpy as np
import torch

from grpokit.models.device import resolve_device

__all__ = ["resolve_device", "seed_everything"]


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (all devices)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
