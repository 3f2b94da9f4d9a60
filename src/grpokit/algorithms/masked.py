"""Masked reductions and token entropy: the small numerical helpers under the losses.

Masks are bool or float tensors with 1/True on real tokens and 0/False on padding. Values under
padding may be anything finite or not (garbage log-probs, ``inf``): they are selected away with
``torch.where`` instead of multiplied by 0, because ``inf * 0`` is NaN.

No deviations from a paper here; ``masked_whiten`` follows TRL/verl (unbiased variance, ``eps``
inside the square root).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from grpokit.algorithms._checks import as_mask, check_tensor


def masked_sum(x: torch.Tensor, mask: torch.Tensor, dim: int | None = None) -> torch.Tensor:
    """sum of ``x`` over entries where ``mask`` is 1, over ``dim`` (all when None). Same shapes as torch.sum."""
    mask = as_mask("mask", mask, x, "x")
    selected = torch.where(mask > 0, x * mask, torch.zeros((), dtype=x.dtype, device=x.device))
    return selected.sum() if dim is None else selected.sum(dim)


def masked_mean(x: torch.Tensor, mask: torch.Tensor, dim: int | None = None) -> torch.Tensor:
    """Mean of ``x`` over real entries: ``sum(x * m) / sum(m)``.

    Args:
        x: any shape, e.g. (N, T).
        mask: same shape as ``x``, bool or float.
        dim: reduce over this dimension only (e.g. ``dim=1`` gives the (N,) per-response means);
            None reduces everything to a scalar.

    Returns:
        A scalar, or ``x``'s shape without ``dim``. A slice with no real entries gives 0 (not NaN):
        an empty response contributes nothing rather than poisoning the batch.
    """
    x = check_tensor("x", x)
    mask = as_mask("mask", mask, x, "x")
    total = masked_sum(x, mask, dim)
    count = mask.sum() if dim is None else mask.sum(dim)
    return total / count.clamp(min=1)


def masked_var(x: torch.Tensor, mask: torch.Tensor, unbiased: bool = True) -> torch.Tensor:
    """Variance of the real entries of ``x`` (scalar); ``unbiased`` divides by ``n - 1`` (Bessel)."""
    mask = as_mask("mask", mask, x, "x")
    mean = masked_mean(x, mask)
    var = masked_mean((x - mean) ** 2, mask)
    if unbiased:
        count = mask.sum()
        if count.item() < 2:
            raise ValueError(
                f"mask has {count.item():g} real entries; the unbiased variance needs at least 2"
            )
        var = var * count / (count - 1)
    return var


def masked_whiten(
    x: torch.Tensor, mask: torch.Tensor, shift_mean: bool = True, eps: float = 1e-8
) -> torch.Tensor:
    """``(x - mean) / sqrt(var + eps)`` over the real entries (TRL ``masked_whiten``, verl ``masked_whiten``).

    Args:
        x: any shape, e.g. advantages (N, T).
        mask: same shape, bool or float.
        shift_mean: when False the mean is added back (whiten the scale only), as PPO implementations
            do for rewards.
        eps: added to the unbiased variance before the square root.

    Returns:
        ``x``'s shape; padding entries are 0.
    """
    mask = as_mask("mask", mask, x, "x")
    mean = masked_mean(x, mask)
    var = masked_var(x, mask, unbiased=True)
    whitened = (x - mean) * torch.rsqrt(var + eps)
    if not shift_mean:
        whitened = whitened + mean
    return torch.where(mask > 0, whitened, torch.zeros((), dtype=x.dtype, device=x.device))


def entropy_from_logits(logits: torch.Tensor, chunk_size: int | None = None) -> torch.Tensor:
    """Entropy of the categorical distribution ``softmax(logits)`` at every position.

    ``H = -sum_v p_v log p_v = logsumexp(z) - sum_v p_v z_v`` with ``p = softmax(z)``, after shifting
    ``z`` by its max: large logits neither overflow nor cancel, and no ``log p`` of an underflowed 0
    is taken.

    Args:
        logits: (..., V), e.g. (N, T, V); any floating dtype.
        chunk_size: when set, process this many rows of the flattened (..., V) at a time, so that
            only one (chunk, V) softmax lives in memory (V is ~150k for current LLMs). Gradients still
            flow through every chunk.

    Returns:
        (...) e.g. (N, T), in ``logits``' dtype.
    """
    logits = check_tensor("logits", logits)
    if logits.dim() < 1 or logits.shape[-1] == 0:
        raise ValueError(
            f"logits must have a non-empty last (vocabulary) dimension, got shape {tuple(logits.shape)}"
        )
    if chunk_size is not None and chunk_size <= 0:
        raise ValueError(f"chunk_size must be a positive int or None, got {chunk_size}")

    def entropy(z: torch.Tensor) -> torch.Tensor:
        # H is shift-invariant; subtracting the max first keeps both terms O(log V) instead of
        # O(max logit), which would cancel catastrophically (logits of 5e3 in float32 lose 1e-4).
        z = z - z.amax(-1, keepdim=True).detach()  # (rows, V)
        p = F.softmax(z, dim=-1)  # (rows, V)
        return torch.logsumexp(z, dim=-1) - (p * z).sum(-1)  # (rows,)

    if chunk_size is None:
        return entropy(logits)
    flat = logits.reshape(-1, logits.shape[-1])  # (rows, V)
    parts = [entropy(chunk) for chunk in flat.split(chunk_size)]
    return torch.cat(parts).reshape(logits.shape[:-1])  # (...)
