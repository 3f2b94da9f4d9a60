"""Mixed precision: forward passes under ``torch.autocast`` while weights, gradients and optimizer states stay
in the model's dtype (float32), as accelerate's ``mixed_precision="bf16"`` does.

Only bfloat16: it has float32's exponent range, so no loss scaling is needed (float16 would need a
``GradScaler``). Matmuls run in bfloat16 (on CPUs with AVX-512 BF16 or AMX, and on Ampere and newer GPUs,
about twice the float32 throughput); reductions such as softmax and log-softmax stay in float32 under
autocast's own rules. Log-probs then differ from a float32 forward by bfloat16 rounding (about 1e-2),
which the importance ratio sees as noise around 1.
"""

from __future__ import annotations

import types
from typing import Any

import torch

__all__ = ["MIXED_PRECISIONS", "autocast_dtype", "enable_autocast"]

MIXED_PRECISIONS: tuple[str, ...] = ("no", "bf16")
_AUTOCAST_ATTR = "grpokit_autocast"  # enable_autocast's (device type, dtype), set on the model instance


def autocast_dtype(mixed_precision: str) -> torch.dtype | None:
    """``"bf16"`` -> ``torch.bfloat16``, ``"no"`` -> None."""
    if mixed_precision not in MIXED_PRECISIONS:
        raise ValueError(f"mixed_precision must be one of {MIXED_PRECISIONS}, got {mixed_precision!r}")
    return torch.bfloat16 if mixed_precision == "bf16" else None


def _autocast_forward(self: torch.nn.Module, *args: Any, **kwargs: Any) -> Any:
    device_type, dtype = getattr(self, _AUTOCAST_ATTR)
    with torch.autocast(device_type, dtype=dtype):
        return type(self).forward(self, *args, **kwargs)


def enable_autocast(model: torch.nn.Module, mixed_precision: str) -> torch.dtype | None:
    """Run every ``model(...)`` call under ``torch.autocast`` in the ``mixed_precision`` dtype.

    Backward is left outside autocast (as PyTorch recommends): its ops run in the dtypes the forward
    chose. The wrapper is an instance attribute bound to ``model``, so ``copy.deepcopy(model)`` (the
    reference policy) is wrapped too, correctly bound. ``"no"`` changes nothing.

    Returns:
        The autocast dtype, or None for ``"no"``.
    """
    dtype = autocast_dtype(mixed_precision)
    if dtype is None:
        return None
    device_type = next(model.parameters()).device.type
    setattr(model, _AUTOCAST_ATTR, (device_type, dtype))
    model.forward = types.MethodType(_autocast_forward, model)
    return dtype
