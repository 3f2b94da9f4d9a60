import math

import pytest
import torch

from grpokit.algorithms import bradley_terry_loss


def test_loss_and_metrics_match_a_hand_computation():
    chosen = torch.tensor([2.0, 0.0], dtype=torch.float64, requires_grad=True)
    rejected = torch.tensor([1.0, 1.0], dtype=torch.float64)
    loss, metrics = bradley_terry_loss(chosen, rejected)
    # r_c - r_r = [1, -1]: -log sigma(1) = log(1 + e^-1) = 0.31326169, -log sigma(-1) = log(1 + e) = 1.31326169
    assert loss.item() == pytest.approx((0.31326169 + 1.31326169) / 2, rel=1e-7)
    assert metrics == pytest.approx(
        {"accuracy": 0.5, "chosen_mean": 1.0, "rejected_mean": 1.0, "margin_mean": 0.0}
    )
    loss.backward()
    # d/dr_c of -log sigma(z) / P is -(1 - sigma(z)) / 2: sigma(1) = 0.73105858, sigma(-1) = 0.26894142
    torch.testing.assert_close(
        chosen.grad, torch.tensor([-(1 - 0.73105858) / 2, -(1 - 0.26894142) / 2], dtype=torch.float64),
        rtol=1e-7, atol=0,
    )  # fmt: skip


def test_margin_is_subtracted_from_the_reward_difference():
    chosen = torch.tensor([2.0, 0.0])
    rejected = torch.tensor([1.0, 1.0])
    loss, metrics = bradley_terry_loss(chosen, rejected, margin=torch.tensor([0.5, 0.0]))
    # z = [1 - 0.5, -1]: log(1 + e^-0.5) = 0.47407698
    assert loss.item() == pytest.approx((0.47407698 + 1.31326169) / 2, rel=1e-6)
    assert metrics["margin_mean"] == 0.0  # the reward difference, not the margin-shifted one


def test_a_tie_is_not_a_correct_pair_and_large_differences_do_not_overflow():
    loss, metrics = bradley_terry_loss(torch.tensor([1.0, 1000.0]), torch.tensor([1.0, -1000.0]))
    assert metrics["accuracy"] == 0.5
    assert loss.item() == pytest.approx(math.log(2) / 2, rel=1e-6)  # log 2 for the tie, 0 for the other


def test_shapes_are_checked():
    with pytest.raises(ValueError, match="rejected_rewards has shape"):
        bradley_terry_loss(torch.zeros(3), torch.zeros(2))
    with pytest.raises(ValueError, match="chosen_rewards must have 1 dimension"):
        bradley_terry_loss(torch.zeros(3, 1), torch.zeros(3, 1))
    with pytest.raises(ValueError, match="empty"):
        bradley_terry_loss(torch.zeros(0), torch.zeros(0))
