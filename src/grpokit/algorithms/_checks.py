"""Argument validation shared by the algorithm modules: every error names the offending argument."""

from __future__ import annotations

import torch


def check_tensor(name: str, x: object, ndim: int | None = None) -> torch.Tensor:
    if not isinstance(x, torch.Tensor):
        raise ValueError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if ndim is not None and x.dim() != ndim:
        raise ValueError(f"{name} must have {ndim} dimension(s), got shape {tuple(x.shape)}")
    return x


def check_float(name: str, x: torch.Tensor) -> torch.Tensor:
    if not x.is_floating_point():
        raise ValueError(f"{name} must be a floating-point tensor, got dtype {x.dtype}")
    return x


def check_same_shape(name: str, x: torch.Tensor, ref_name: str, ref: torch.Tensor) -> None:
    if x.shape != ref.shape:
        raise ValueError(
            f"{name} has shape {tuple(x.shape)} but {ref_name} has shape {tuple(ref.shape)}; they must match"
        )


def as_mask(name: str, mask: object, like: torch.Tensor, like_name: str) -> torch.Tensor:
    """``mask`` (bool or float, 1 on real tokens) as a tensor of ``like``'s dtype, shape-checked."""
    mask = check_tensor(name, mask)
    check_same_shape(name, mask, like_name, like)
    return mask.to(dtype=like.dtype)


def check_nonempty(name: str, mask: torch.Tensor) -> torch.Tensor:
    """The number of real tokens; ``ValueError`` if there are none (empty batch or all padding)."""
    if mask.numel() == 0:
        raise ValueError(f"{name} is empty (shape {tuple(mask.shape)}): nothing to compute a loss on")
    num_tokens = mask.sum()
    if num_tokens.item() <= 0:
        raise ValueError(f"{name} has no real tokens (all entries are 0): nothing to compute a loss on")
    return num_tokens


def check_finite(name: str, x: torch.Tensor) -> None:
    bad = ~torch.isfinite(x)
    if bad.any():
        index = tuple(int(i) for i in bad.nonzero()[0])
        where = index[0] if len(index) == 1 else index
        raise ValueError(f"{name} contains a non-finite value ({x[index].item()}) at index {where}")


def check_positive(name: str, value: float, allow_zero: bool = False) -> None:
    ok = value >= 0 if allow_zero else value > 0
    if not ok:
        bound = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"{name} must be {bound}, got {value}")
