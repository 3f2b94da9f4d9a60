"""Vectorised next-token sampling on logits: temperature, top-k, top-p, greedy.

All functions work on a whole (N, V) batch of last-position logits at once; nothing loops over rows.
The order is the usual one (and transformers'): divide by the temperature, then top-k, then top-p.
"""

from __future__ import annotations

import torch


def top_k_filter(logits: torch.Tensor, top_k: int) -> torch.Tensor:
    """Keep the ``top_k`` largest logits of each row, set the others to ``-inf``.

    Ties at the k-th value are all kept. ``top_k <= 0`` or ``>= V`` keeps everything.

    Args:
        logits: (N, V).

    Returns:
        (N, V), a new tensor.
    """
    V = logits.shape[-1]
    if top_k <= 0 or top_k >= V:
        return logits
    kth = torch.topk(logits, top_k, dim=-1).values[:, -1:]  # (N, 1)
    return logits.masked_fill(logits < kth, float("-inf"))


def top_p_filter(logits: torch.Tensor, top_p: float) -> torch.Tensor:
    """Nucleus filtering (Holtzman et al., 2020, arXiv:1904.09751): keep the smallest set of most likely
    tokens whose probability mass reaches ``top_p``; the most likely token is always kept.

    Token i (in decreasing probability order) is dropped when the mass strictly before it,
    ``sum_{j<i} p_j``, is already >= ``top_p``.

    Args:
        logits: (N, V), already divided by the temperature.
        top_p: in (0, 1]; 1 keeps everything.

    Returns:
        (N, V), a new tensor.
    """
    if top_p >= 1.0:
        return logits
    sorted_logits, order = torch.sort(logits, dim=-1, descending=True)  # (N, V) each
    sorted_probs = torch.softmax(sorted_logits.float(), dim=-1)  # (N, V)
    mass_before = sorted_probs.cumsum(dim=-1) - sorted_probs  # (N, V)
    drop_sorted = mass_before >= top_p  # (N, V); column 0 has mass 0 so it is always kept
    drop = torch.zeros_like(drop_sorted).scatter_(-1, order, drop_sorted)  # (N, V), back to vocab order
    return logits.masked_fill(drop, float("-inf"))


def sample_next_token(
    logits: torch.Tensor,
    *,
    greedy: bool,
    top_k: int = 0,
    top_p: float = 1.0,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Draw one token per row from temperature-scaled ``logits`` after top-k / top-p filtering.

    Sampling is by inverse CDF: one uniform number per row, located in the row's cumulative
    distribution (float64, so that tokens of tiny probability keep their share with a 150k vocabulary).
    ``torch.multinomial`` draws V exponential variates per row instead, which costs more than the
    forward pass of a small model. A token of probability 0 (filtered) is never drawn: its CDF step is
    empty and ``searchsorted(..., right=True)`` returns the first index whose CDF exceeds ``u``.

    Args:
        logits: (N, V) float, already divided by the per-row temperature.
        greedy: take the argmax instead of sampling (top-k/top-p cannot change the argmax).
        generator: the seeded generator that makes sampling reproducible.

    Returns:
        (N,) long token ids.
    """
    if greedy:
        return logits.argmax(dim=-1)
    N, V = logits.shape
    filtered = top_p_filter(top_k_filter(logits, top_k), top_p)  # (N, V)
    cdf = torch.softmax(filtered.float(), dim=-1).cumsum(dim=-1, dtype=torch.float64)  # (N, V)
    u = torch.rand(N, 1, generator=generator, dtype=torch.float64, device=logits.device)  # (N, 1) in [0, 1)
    # Scaling by the row total keeps u inside the CDF's range when rounding leaves the total below 1.
    index = torch.searchsorted(cdf, u * cdf[:, -1:], right=True)  # (N, 1)
    return index.clamp_(max=V - 1).squeeze(-1)  # (N,)
