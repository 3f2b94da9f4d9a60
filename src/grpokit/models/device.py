"""Everything device-dependent in one place: which device a run uses, the mixed-precision autocast, and the
peak-memory figures a step logs.

Device: ``model.device`` is ``cpu``, ``cuda``, ``cuda:1``...; ``auto`` picks CUDA when available, else CPU.

Mixed precision: forward passes under ``torch.autocast`` while weights, gradients and optimizer states stay
in the model's dtype (float32), as accelerate's ``mixed_precision="bf16"`` does. Only bfloat16: it has
float32's exponent range, so no loss scaling is needed (float16 would need a ``GradScaler``). Matmuls run in
bfloat16 (on CPUs with AVX-512 BF16 or AMX, and on Ampere and newer GPUs, about twice the float32
throughput); reductions such as softmax and log-softmax stay in float32 under autocast's own rules.
Log-probs then differ from a float32 forward by bfloat16 rounding (about 1e-2), which the importance ratio
sees as noise around 1.

Memory: the process's peak resident set (``ru_maxrss``) and, when CUDA is available, the peak of
``torch.cuda.max_memory_allocated`` (tensors only: the caching allocator's reserve is not counted).
"""

from __future__ import annotations

import contextlib
import resource
import sys
import types
from typing import Any

import torch

__all__ = [
    "MIXED_PRECISIONS",
    "autocast_context",
    "autocast_dtype",
    "enable_autocast",
    "memory_metrics",
    "model_autocast",
    "peak_cuda_mb",
    "peak_rss_mb",
    "reset_peak_memory",
    "resolve_device",
]

MIXED_PRECISIONS: tuple[str, ...] = ("no", "bf16")
AUTOCAST_ATTR = "grpokit_autocast"  # enable_autocast's (device type, dtype), set on the model instance


# -- device ------------------------------------------------------------------------------------------------


def resolve_device(name: str) -> torch.device:
    """``auto`` -> CUDA when available, else CPU; anything else as given."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        return torch.device(name)
    except RuntimeError as err:
        raise ValueError(f"model.device: {err}") from None


# -- mixed precision ---------------------------------------------------------------------------------------


def autocast_dtype(mixed_precision: str) -> torch.dtype | None:
    """``"bf16"`` -> ``torch.bfloat16``, ``"no"`` -> None."""
    if mixed_precision not in MIXED_PRECISIONS:
        raise ValueError(f"mixed_precision must be one of {MIXED_PRECISIONS}, got {mixed_precision!r}")
    return torch.bfloat16 if mixed_precision == "bf16" else None


def autocast_context(device_type: str, dtype: torch.dtype | None) -> contextlib.AbstractContextManager[Any]:
    """``torch.autocast(device_type, dtype)``; a context that changes nothing when ``dtype`` is None."""
    return torch.autocast(device_type, dtype=dtype, enabled=dtype is not None)


def model_autocast(model: torch.nn.Module, device_type: str) -> tuple[str, torch.dtype | None]:
    """The ``(device type, dtype)`` :func:`enable_autocast` set on ``model``; ``(device_type, None)`` if none."""
    return getattr(model, AUTOCAST_ATTR, (device_type, None))


def _autocast_forward(self: torch.nn.Module, *args: Any, **kwargs: Any) -> Any:
    device_type, dtype = getattr(self, AUTOCAST_ATTR)
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
    setattr(model, AUTOCAST_ATTR, (device_type, dtype))
    model.forward = types.MethodType(_autocast_forward, model)
    return dtype


# -- memory ------------------------------------------------------------------------------------------------


def peak_rss_mb() -> float:
    """Peak resident set size of this process in MiB.

    On Linux, ``VmHWM`` of ``/proc/self/status``: the high-water mark of this process's own address space.
    ``ru_maxrss`` is not that: Linux carries it across ``exec``, so a process started by a larger one
    (``subprocess`` forks, then execs) reports its parent's peak until it exceeds it. Elsewhere ``ru_maxrss``
    (bytes on macOS)."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024  # kB
    except OSError:
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024


def peak_cuda_mb(device: torch.device | int | None = None) -> float | None:
    """Peak ``torch.cuda.max_memory_allocated`` in MiB (the current CUDA device by default); None without CUDA."""
    if not torch.cuda.is_available():
        return None
    return torch.cuda.max_memory_allocated(device) / 2**20


def reset_peak_memory(device: torch.device | int | None = None) -> None:
    """Start CUDA's peak-memory count again (nothing without CUDA; the process's peak RSS cannot be reset)."""
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats(device)


def memory_metrics() -> dict[str, float]:
    """A step's memory metrics: ``memory/peak_rss_mb``, and ``memory/peak_cuda_mb`` when CUDA is available."""
    metrics = {"memory/peak_rss_mb": peak_rss_mb()}
    cuda = peak_cuda_mb()
    if cuda is not None:
        metrics["memory/peak_cuda_mb"] = cuda
    return metrics
