"""The Bradley–Terry loss of a reward model on preference pairs.

Bradley & Terry (1952) model the probability that response ``y_c`` is preferred to ``y_r`` as
``sigma(r(x, y_c) - r(x, y_r))``; InstructGPT (Ouyang et al., 2022, arXiv 2203.02155, eq. 1) trains the reward
model ``r`` by maximising its log-likelihood on human comparisons. Llama 2 (Touvron et al., 2023, arXiv
2307.09288, eq. 2) subtracts a margin ``m`` that grows with how clearly one response was preferred; ``m = 0``
is the plain loss.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from grpokit.algorithms._checks import check_float, check_same_shape, check_tensor

__all__ = ["bradley_terry_loss"]


def bradley_terry_loss(
    chosen_rewards: torch.Tensor, rejected_rewards: torch.Tensor, margin: torch.Tensor | None = None
) -> tuple[torch.Tensor, dict[str, float]]:
    """Mean negative log-likelihood of the preferences under the Bradley–Terry model::

        L = 1/P sum_p -log sigma(r_c,p - r_r,p - m_p)        (= softplus(-(r_c - r_r - m)), computed stably)

    Args:
        chosen_rewards: (P,) the reward model's scalar score of each pair's preferred response.
        rejected_rewards: (P,) the score of the other response.
        margin: (P,) the margin each pair must be won by (``None``: 0).

    Returns:
        ``(loss, metrics)``: the scalar loss (with gradient) and python floats, means over the P pairs:
        ``accuracy`` (the fraction with ``r_c > r_r``; a tie counts as wrong), ``chosen_mean``,
        ``rejected_mean`` and ``margin_mean`` (of ``r_c - r_r``).
    """
    check_tensor("chosen_rewards", chosen_rewards, ndim=1)
    check_float("chosen_rewards", chosen_rewards)
    check_tensor("rejected_rewards", rejected_rewards)
    check_same_shape("rejected_rewards", rejected_rewards, "chosen_rewards", chosen_rewards)
    if chosen_rewards.numel() == 0:
        raise ValueError("chosen_rewards is empty: the loss needs at least one pair")
    difference = chosen_rewards - rejected_rewards  # (P,)
    logits = difference
    if margin is not None:
        check_tensor("margin", margin)
        check_same_shape("margin", margin, "chosen_rewards", chosen_rewards)
        logits = difference - margin.to(difference.dtype)
    loss = F.softplus(-logits).mean()  # -log sigma(z) = softplus(-z), no overflow for large |z|
    with torch.no_grad():
        metrics = {
            "accuracy": float((difference > 0).float().mean()),
            "chosen_mean": float(chosen_rewards.mean()),
            "rejected_mean": float(rejected_rewards.mean()),
            "margin_mean": float(difference.mean()),
        }
    return loss, metrics
