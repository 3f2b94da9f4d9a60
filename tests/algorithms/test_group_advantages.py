"""group_advantages / group_reward_stats: hand-computed cases, a loop reference, properties, bad input."""

import math
import statistics

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from grpokit.algorithms import available, group_advantages, group_reward_stats

ESTIMATORS = ["grpo", "grpo_batch_norm", "dr_grpo", "rank", "rloo"]


def f64(values):
    return torch.tensor(values, dtype=torch.float64)


def test_builtin_estimators_are_registered():
    assert available("advantage") == sorted(ESTIMATORS)


# ----------------------------------------------------------------------------------------------
# Hand-computed cases. Group of 4: r = [1, 0, 0, 1], mean 0.5, centred [0.5, -0.5, -0.5, 0.5].
# ----------------------------------------------------------------------------------------------


def test_grpo_by_hand():
    # sample std = sqrt((4 * 0.25) / (4 - 1)) = sqrt(1/3) = 0.5773503
    # A = 0.5 / (0.5773503 + 1e-6) = 0.8660239
    adv = group_advantages(f64([1, 0, 0, 1]), torch.tensor([0, 0, 0, 0]))
    expected = 0.5 / (math.sqrt(1 / 3) + 1e-6)
    torch.testing.assert_close(adv, f64([expected, -expected, -expected, expected]), rtol=1e-12, atol=0)


def test_grpo_eps_is_added_to_the_std():
    # std of [0, 2] = sqrt(2) (sample); with eps = 1: A = 1 / (sqrt(2) + 1) = 0.4142136
    adv = group_advantages(f64([0, 2]), torch.tensor([3, 3]), eps=1.0)
    torch.testing.assert_close(adv, f64([-1, 1]) / (math.sqrt(2) + 1), rtol=1e-12, atol=0)


def test_dr_grpo_by_hand():
    adv = group_advantages(f64([1, 0, 0, 1]), torch.tensor([0, 0, 0, 0]), "dr_grpo")
    torch.testing.assert_close(adv, f64([0.5, -0.5, -0.5, 0.5]), rtol=1e-12, atol=0)


def test_rloo_by_hand():
    # A_0 = 1 - (0 + 0 + 1) / 3 = 2/3 ; A_1 = 0 - (1 + 0 + 1) / 3 = -2/3
    # second group [2, 5]: A = 2 - 5 = -3, 5 - 2 = 3
    adv = group_advantages(f64([1, 0, 0, 1, 2, 5]), torch.tensor([0, 0, 0, 0, 1, 1]), "rloo")
    torch.testing.assert_close(adv, f64([2 / 3, -2 / 3, -2 / 3, 2 / 3, -3, 3]), rtol=1e-12, atol=0)


def test_rank_by_hand_with_ties():
    # r = [3, 1, 3, 2]: ranks 1 -> 1, 2 -> 2, the two 3s share (3 + 4) / 2 = 3.5
    # A = (2 * rank - n - 1) / (n - 1) = (2 * rank - 5) / 3 -> [2/3, -1, 2/3, -1/3]
    adv = group_advantages(f64([3, 1, 3, 2]), torch.tensor([7, 7, 7, 7]), "rank")
    torch.testing.assert_close(adv, f64([2 / 3, -1, 2 / 3, -1 / 3]), rtol=1e-12, atol=0)


def test_rank_spans_minus_one_to_one_without_ties():
    adv = group_advantages(f64([0.3, -2.0, 9.0, 1.0, 0.5]), torch.zeros(5, dtype=torch.long), "rank")
    # sorted: -2.0 (1), 0.3 (2), 0.5 (3), 1.0 (4), 9.0 (5); A = (2*rank - 6) / 4
    torch.testing.assert_close(adv, f64([-0.5, -1.0, 1.0, 0.5, 0.0]), rtol=1e-12, atol=0)


def test_grpo_batch_norm_by_hand():
    # group a: [1, 3] -> centred [-1, 1]; group b: [0, 0, 6] -> mean 2, centred [-2, -2, 4]
    # batch c = [-1, 1, -2, -2, 4], mean 0, sample var = (1 + 1 + 4 + 4 + 16) / 4 = 6.5
    adv = group_advantages(f64([1, 3, 0, 0, 6]), torch.tensor([0, 0, 1, 1, 1]), "grpo_batch_norm", eps=0.0)
    torch.testing.assert_close(adv, f64([-1, 1, -2, -2, 4]) / math.sqrt(6.5), rtol=1e-12, atol=0)
    assert abs(adv.mean().item()) < 1e-12
    assert adv.std().item() == pytest.approx(1.0, rel=1e-12)


def test_unsorted_noncontiguous_group_ids_and_uneven_sizes():
    # Groups interleaved with arbitrary ids: id 40 -> [1, 3], id -2 -> [10, 10, 16]
    rewards = f64([1, 10, 10, 3, 16])
    group_ids = torch.tensor([40, -2, -2, 40, -2])
    adv = group_advantages(rewards, group_ids, "dr_grpo")
    torch.testing.assert_close(adv, f64([-1, -2, -2, 1, 4]), rtol=1e-12, atol=0)


# ----------------------------------------------------------------------------------------------
# Zero-variance groups: exactly 0, never NaN, and no gradient downstream.
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("estimator", ESTIMATORS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_constant_group_is_exactly_zero(estimator, dtype):
    # 0.1 + 0.1 + 0.1 = 0.30000000000000004, so r - mean is ~1e-17, not 0: only the explicit
    # constant-group rule makes the advantage exactly 0.
    rewards = torch.tensor([0.1, 0.1, 0.1, 1.0, 0.0], dtype=dtype)
    adv = group_advantages(rewards, torch.tensor([0, 0, 0, 1, 1]), estimator)
    assert adv.dtype == dtype
    assert torch.equal(adv[:3], torch.zeros(3, dtype=dtype))
    assert torch.isfinite(adv).all()
    assert adv[3] > 0 > adv[4]


@pytest.mark.parametrize("estimator", ESTIMATORS)
def test_single_member_group_gets_zero(estimator):
    adv = group_advantages(f64([5.0, 1.0, 2.0]), torch.tensor([0, 1, 1]), estimator)
    assert adv[0].item() == 0.0
    assert adv[1] < 0 < adv[2]


def test_rloo_single_member_groups_by_hand():
    # Group 4: [1, 0] -> 1 - 0 = 1, 0 - 1 = -1; group 9 = [3] and group 7 = [-2] are alone -> 0.
    adv = group_advantages(f64([1, 0, 3, -2]), torch.tensor([4, 4, 9, 7]), "rloo")
    torch.testing.assert_close(adv, f64([1, -1, 0, 0]), rtol=0, atol=0)


@pytest.mark.parametrize("estimator", ESTIMATORS)
def test_batch_of_one_response_gets_zero(estimator):
    adv = group_advantages(f64([3.5]), torch.tensor([0]), estimator)
    torch.testing.assert_close(adv, f64([0.0]), rtol=0, atol=0)


def test_all_constant_batch_is_zero_for_batch_norm():
    adv = group_advantages(f64([2.0, 2.0, 2.0, 2.0]), torch.tensor([0, 0, 1, 1]), "grpo_batch_norm")
    assert torch.equal(adv, torch.zeros(4, dtype=torch.float64))


def test_integer_rewards_become_float():
    adv = group_advantages(torch.tensor([1, 0]), torch.tensor([0, 0]), "dr_grpo")
    assert adv.dtype == torch.get_default_dtype()
    torch.testing.assert_close(adv, torch.tensor([0.5, -0.5]))


# ----------------------------------------------------------------------------------------------
# Vectorised == plain Python loop reference (verl style), over sizes and seeds.
# ----------------------------------------------------------------------------------------------


def reference(rewards: list[float], group_ids: list[int], estimator: str, eps: float) -> list[float]:
    groups: dict[int, list[int]] = {}
    for i, g in enumerate(group_ids):
        groups.setdefault(g, []).append(i)
    out = [0.0] * len(rewards)
    centred = [0.0] * len(rewards)
    for members in groups.values():
        values = [rewards[i] for i in members]
        mean = sum(values) / len(values)
        for i in members:
            centred[i] = rewards[i] - mean
    batch_std = statistics.stdev(centred) if len(centred) > 1 else 0.0
    for members in groups.values():
        values = [rewards[i] for i in members]
        n = len(values)
        if len(set(values)) == 1:
            continue  # all equal: advantage 0
        mean = sum(values) / n
        std = statistics.stdev(values)
        for i in members:
            r = rewards[i]
            if estimator == "grpo":
                out[i] = (r - mean) / (std + eps)
            elif estimator == "dr_grpo":
                out[i] = r - mean
            elif estimator == "rloo":
                out[i] = r - (sum(values) - r) / (n - 1)
            elif estimator == "grpo_batch_norm":
                out[i] = centred[i] / (batch_std + eps)
            elif estimator == "rank":
                below = sum(v < r for v in values)
                equal = sum(v == r for v in values)
                rank = below + (equal + 1) / 2
                out[i] = (2 * rank - n - 1) / (n - 1)
    return out


@pytest.mark.parametrize("estimator", ESTIMATORS)
@pytest.mark.parametrize(
    "num_groups,max_size,seed", [(1, 2, 0), (3, 4, 1), (8, 8, 2), (17, 5, 3), (40, 16, 4)]
)
def test_vectorised_matches_loop_reference(estimator, num_groups, max_size, seed):
    gen = torch.Generator().manual_seed(seed)
    sizes = torch.randint(2, max_size + 1, (num_groups,), generator=gen)
    ids = torch.randperm(1000, generator=gen)[:num_groups]  # arbitrary, non-contiguous ids
    group_ids = torch.repeat_interleave(ids, sizes)
    group_ids = group_ids[torch.randperm(group_ids.numel(), generator=gen)]  # interleave the groups
    # Few distinct values so that ties and constant groups occur.
    rewards = torch.randint(0, 4, group_ids.shape, generator=gen).to(torch.float64) * 0.5
    adv = group_advantages(rewards, group_ids, estimator)
    expected = reference(rewards.tolist(), group_ids.tolist(), estimator, 1e-6)
    torch.testing.assert_close(adv, f64(expected), rtol=1e-6, atol=1e-12)


# ----------------------------------------------------------------------------------------------
# Properties
# ----------------------------------------------------------------------------------------------

group_rewards = st.lists(st.integers(-20, 20), min_size=2, max_size=12)


@settings(max_examples=60, deadline=None)
@given(values=group_rewards, scale=st.floats(0.01, 100.0), shift=st.floats(-50.0, 50.0))
def test_grpo_invariant_to_shift_and_positive_scale(values, scale, shift):
    # eps = 0 makes the invariance exact; with eps > 0 a scale change moves eps's relative weight.
    rewards = f64(values)
    group_ids = torch.zeros(len(values), dtype=torch.long)
    base = group_advantages(rewards, group_ids, "grpo", eps=0.0)
    moved = group_advantages(rewards * scale + shift, group_ids, "grpo", eps=0.0)
    torch.testing.assert_close(moved, base, rtol=1e-6, atol=1e-9)


@settings(max_examples=40, deadline=None)
@given(values=group_rewards, shift=st.floats(-50.0, 50.0))
def test_rank_invariant_to_monotone_transform(values, shift):
    rewards = f64(values)
    group_ids = torch.zeros(len(values), dtype=torch.long)
    base = group_advantages(rewards, group_ids, "rank")
    moved = group_advantages(torch.exp(rewards / 10) + shift, group_ids, "rank")
    torch.testing.assert_close(moved, base, rtol=0, atol=0)


@settings(max_examples=40, deadline=None)
@given(values=group_rewards)
def test_grpo_advantages_have_zero_mean_and_unit_sample_std(values):
    adv = group_advantages(f64(values), torch.zeros(len(values), dtype=torch.long), "grpo", eps=0.0)
    if len(set(values)) == 1:
        assert torch.equal(adv, torch.zeros_like(adv))
    else:
        assert abs(adv.sum().item()) < 1e-9
        assert adv.std().item() == pytest.approx(1.0, rel=1e-9)


# ----------------------------------------------------------------------------------------------
# Bad input
# ----------------------------------------------------------------------------------------------


def test_unknown_estimator_lists_valid_names():
    with pytest.raises(
        ValueError, match=r"estimator='gpro'.*\['dr_grpo', 'grpo', 'grpo_batch_norm', 'rank', 'rloo'\]"
    ):
        group_advantages(f64([1, 0]), torch.tensor([0, 0]), "gpro")


def test_nan_reward_names_its_index():
    with pytest.raises(ValueError, match=r"rewards contains a non-finite value \(nan\) at index 2"):
        group_advantages(f64([1, 0, float("nan")]), torch.tensor([0, 0, 0]))


def test_mismatched_shapes():
    with pytest.raises(ValueError, match=r"group_ids has shape \(2,\) but rewards has shape \(3,\)"):
        group_advantages(f64([1, 0, 1]), torch.tensor([0, 0]))
    with pytest.raises(ValueError, match=r"rewards must have 1 dimension"):
        group_advantages(f64([[1, 0]]), torch.tensor([[0, 0]]))


def test_empty_batch():
    with pytest.raises(ValueError, match="rewards is empty"):
        group_advantages(f64([]), torch.tensor([], dtype=torch.long))


def test_float_group_ids_rejected():
    with pytest.raises(ValueError, match="group_ids must be an integer"):
        group_advantages(f64([1, 0]), torch.tensor([0.0, 0.0]))


def test_negative_eps_rejected():
    with pytest.raises(ValueError, match="eps must be >= 0"):
        group_advantages(f64([1, 0]), torch.tensor([0, 0]), eps=-1.0)


# ----------------------------------------------------------------------------------------------
# group_reward_stats
# ----------------------------------------------------------------------------------------------


def test_group_reward_stats_by_hand():
    # group 0: [1, 0, 0, 1] std sqrt(1/3); group 1: [2, 2] constant; group 5: [4] single (constant)
    stats = group_reward_stats(f64([1, 0, 0, 1, 2, 2, 4]), torch.tensor([0, 0, 0, 0, 1, 1, 5]))
    assert stats["num_groups"] == 3.0
    assert stats["zero_std_group_fraction"] == pytest.approx(2 / 3, rel=1e-12)
    assert stats["reward_std_within_group_mean"] == pytest.approx(math.sqrt(1 / 3) / 3, rel=1e-12)
    assert stats["reward_mean"] == pytest.approx(10 / 7, rel=1e-12)
    assert stats["reward_std"] == pytest.approx(statistics.stdev([1, 0, 0, 1, 2, 2, 4]), rel=1e-12)
    assert (stats["group_size_min"], stats["group_size_max"]) == (1.0, 4.0)
    assert all(isinstance(v, float) for v in stats.values())
