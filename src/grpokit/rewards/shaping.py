"""Reward shaping that depends on the rollout rather than on the text: DAPO's soft overlong punishment."""

from __future__ import annotations

import torch

__all__ = ["soft_overlong_penalty"]


def soft_overlong_penalty(
    lengths: torch.Tensor, max_new_tokens: int, buffer_length: int, penalty: float = 1.0
) -> torch.Tensor:
    """Length-aware penalty of DAPO (Yu et al. 2025, arXiv 2503.14476, eq. 13), added to the reward.

    With L_max = ``max_new_tokens`` and L_cache = ``buffer_length``::

        R_len(y) = 0                                        if |y| <= L_max - L_cache
                 = ((L_max - L_cache) - |y|) / L_cache      if L_max - L_cache < |y| <= L_max
                 = -1                                       if |y| > L_max

    scaled by ``penalty``. Completions cannot exceed L_max here, so the last case never occurs.

    Args:
        lengths: (N,) completion lengths in tokens.
    Returns:
        (N,) float penalties in [-penalty, 0].
    """
    if not 0 < buffer_length < max_new_tokens:
        raise ValueError(
            f"buffer_length must be in (0, max_new_tokens={max_new_tokens}), got {buffer_length}"
        )
    start = max_new_tokens - buffer_length
    over = (lengths.float() - start).clamp(min=0, max=buffer_length)  # (N,)
    return -penalty * over / buffer_length
