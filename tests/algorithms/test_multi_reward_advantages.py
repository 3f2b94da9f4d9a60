"""multi_reward_advantages (GDPO): per-reward group normalisation, weighted sum, batch normalisation."""

import math

import pytest
import torch

from grpokit.algorithms import group_advantages, multi_reward_advantages

F64 = torch.float64
NAN = float("nan")


def f64(values):
    return torch.tensor(values, dtype=F64)


def test_gdpo_by_hand():
    # Groups {0, 1} and {2, 3}; rewards (correct, format); weights (1, 0.5); eps 0.
    # Column 0: group 0 [1, 0] -> [a, -a] with a = 0.5 / sqrt(0.5) = 1/sqrt(2); group 1 [1, 1] -> 0.
    # Column 1: group 0 [0, 0] -> 0; group 1 [1, 0] -> [a, -a].
    # S = [a, -a, a/2, -a/2]: mean 0, sample std a * sqrt((1 + 1 + 1/4 + 1/4) / 3) = a * sqrt(5/6).
    rewards = f64([[1, 0], [0, 0], [1, 1], [1, 0]])
    adv = multi_reward_advantages(rewards, torch.tensor([0, 0, 1, 1]), f64([1.0, 0.5]), eps=0.0)
    s = math.sqrt(5 / 6)
    torch.testing.assert_close(adv, f64([1 / s, -1 / s, 0.5 / s, -0.5 / s]), rtol=1e-12, atol=1e-12)


def test_nan_means_not_scored():
    # One group. Column 0 scores rows 0, 1, 3: [1, 0, 0], mean 1/3 (dr_grpo) -> [2/3, -1/3, -, -1/3].
    # Column 1 scores rows 1, 3: [2, 0], mean 1 -> [-, 1, -, -1]. Row 2 has no score -> 0.
    # S over the scored rows 0, 1, 3 = [2/3, 2/3, -4/3]: mean 0, sample std sqrt((4/9 + 4/9 + 16/9) / 2)
    # = sqrt(4/3).
    rewards = f64([[1, NAN], [0, 2], [NAN, NAN], [0, 0]])
    adv = multi_reward_advantages(rewards, torch.zeros(4, dtype=torch.long), estimator="dr_grpo", eps=0.0)
    s = math.sqrt(4 / 3)
    torch.testing.assert_close(adv, f64([2 / 3 / s, 2 / 3 / s, 0.0, -4 / 3 / s]), rtol=1e-12, atol=1e-12)


def test_one_column_equals_batch_normalised_group_advantages():
    rewards = f64([[3.0], [1.0], [2.0], [7.0], [5.0]])
    ids = torch.tensor([0, 0, 0, 1, 1])
    adv = multi_reward_advantages(rewards, ids, eps=0.0)
    a = group_advantages(rewards[:, 0], ids, "grpo", eps=0.0)
    torch.testing.assert_close(adv, (a - a.mean()) / a.std(), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("estimator", ["grpo", "grpo_batch_norm", "dr_grpo", "rank", "rloo"])
def test_no_signal_gives_exact_zero(estimator):
    rewards = f64([[0.1, 1.0], [0.1, 1.0], [0.1, 1.0], [2.0, NAN]])  # constant group, and a group of one
    adv = multi_reward_advantages(rewards, torch.tensor([0, 0, 0, 1]), estimator=estimator)
    assert torch.equal(adv, torch.zeros(4, dtype=F64))


def test_bad_input():
    ids = torch.tensor([0, 0])
    with pytest.raises(ValueError, match=r"rewards must have 2 dimension"):
        multi_reward_advantages(f64([1.0, 0.0]), ids)
    with pytest.raises(ValueError, match=r"weights has 3 entries but rewards has 2 columns"):
        multi_reward_advantages(f64([[1, 0], [0, 1]]), ids, f64([1, 1, 1]))
    with pytest.raises(ValueError, match=r"group_ids has 2 entries but rewards has 3 rows"):
        multi_reward_advantages(f64([[1], [0], [1]]), ids)
    with pytest.raises(ValueError, match=r"rewards .* non-finite value \(inf\)"):
        multi_reward_advantages(f64([[1, float("inf")], [0, 1]]), ids)
    with pytest.raises(ValueError, match=r"estimator='gdpo' is not a known advantage name"):
        multi_reward_advantages(f64([[1, 0], [0, 1]]), ids, estimator="gdpo")
    with pytest.raises(ValueError, match=r"weights contains a non-finite value"):
        multi_reward_advantages(f64([[1, 0], [0, 1]]), ids, f64([1.0, NAN]))
