"""Mixed precision (bf16 autocast with float32 state): the names of :mod:`grpokit.models.device`, where
everything device-dependent lives, under the module path older code imports."""

from __future__ import annotations

from grpokit.models.device import MIXED_PRECISIONS, autocast_dtype, enable_autocast

__all__ = ["MIXED_PRECISIONS", "autocast_dtype", "enable_autocast"]
