import numpy as np
import pytest
import torch

from grpokit.rl.advantages import episode_advantages
from grpokit.rl.grouping import (
    available_groupings,
    check_group_ids,
    group_ids_from_keys,
    key_grouping,
    make_grouping,
    register_grouping,
)
from grpokit.rl.rollout import StartState


def test_builtin_names_are_registered():
    assert {"same_start", "task", "similarity", "batch"} <= set(available_groupings())


def test_group_ids_number_keys_in_order_of_first_appearance():
    assert group_ids_from_keys(["b", "a", "b", "c", "a"]).tolist() == [0, 1, 0, 2, 1]


def test_same_start_groups_equal_seed_and_task(make_batch):
    starts = [StartState(7), StartState(3), StartState(7), StartState(7, task=1), StartState(3)]
    batch = make_batch([[1.0]] * 5, starts=starts)
    # Seed 7 with task None and seed 7 with task 1 are different start states.
    assert make_grouping("same_start")(batch).tolist() == [0, 1, 0, 2, 1]


def test_batch_is_one_group(make_batch):
    batch = make_batch([[1.0], [2.0], [3.0]])
    assert make_grouping("batch")(batch).tolist() == [0, 0, 0]


def test_task_reads_reset_info_first_then_start_state(make_batch):
    infos = [{"task": "easy"}, {"task": "hard"}, {}, {"task": np.int64(4)}, {"task": "easy"}]
    starts = [StartState(0), StartState(1), StartState(2, task=4), StartState(3), StartState(4)]
    batch = make_batch([[0.0]] * 5, starts=starts, reset_infos=infos)
    # Episode 2 has no info key, so its StartState.task (4) is used; numpy 4 and int 4 are the same key.
    assert make_grouping("task")(batch).tolist() == [0, 1, 2, 2, 0]


def test_task_key_option(make_batch):
    batch = make_batch([[0.0]] * 3, reset_infos=[{"level": 1}, {"level": 2}, {"level": 1}])
    assert make_grouping("task", key="level")(batch).tolist() == [0, 1, 0]


def test_task_without_any_task_id_names_the_episode(make_batch):
    batch = make_batch([[0.0]] * 2, reset_infos=[{"task": 0}, {"other": 1}])
    with pytest.raises(ValueError, match=r"episode 1 has no task id.*'other'"):
        make_grouping("task")(batch)


def test_similarity_recovers_well_separated_clusters(make_batch):
    rng = np.random.default_rng(0)
    centres = np.array([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])
    labels = rng.integers(3, size=30)
    start_obs = centres[labels] + rng.normal(scale=0.1, size=(30, 2))
    batch = make_batch([[0.0]] * 30, start_obs=start_obs)
    ids = make_grouping("similarity", num_clusters=3)(batch)
    # Same partition as the true labels (ids are numbered in order of first appearance).
    assert ids.tolist() == group_ids_from_keys(labels.tolist()).tolist()


def test_similarity_feature_indices_ignore_other_columns(make_batch):
    # Column 0 carries the task (two values), column 1 large noise that would dominate k-means.
    task = np.array([0, 1, 0, 1, 1, 0])
    noise = np.array([50.0, -40.0, -60.0, 30.0, 45.0, 20.0])
    batch = make_batch([[0.0]] * 6, start_obs=np.stack([task, noise], 1))
    ids = make_grouping("similarity", num_clusters=2, feature_indices=[0])(batch)
    assert ids.tolist() == [0, 1, 0, 1, 1, 0]


def test_similarity_custom_features_and_standardize(make_batch):
    start_obs = np.array([[1.0, 0.0], [1.1, 0.0], [-1.0, 0.0], [-1.2, 0.0]])
    batch = make_batch([[0.0]] * 4, start_obs=start_obs)
    ids = make_grouping(
        "similarity", num_clusters=2, features=lambda s0: np.sign(s0[:, :1]), standardize=True
    )(batch)
    assert ids.tolist() == [0, 0, 1, 1]


def test_similarity_with_fewer_distinct_points_than_clusters(make_batch):
    start_obs = np.array([[1.0, 2.0], [3.0, 4.0], [1.0, 2.0]])
    batch = make_batch([[0.0]] * 3, start_obs=start_obs)
    assert make_grouping("similarity", num_clusters=8)(batch).tolist() == [0, 1, 0]


def test_similarity_is_deterministic_for_a_seed(make_batch):
    start_obs = np.random.default_rng(1).normal(size=(40, 2))
    batch = make_batch([[0.0]] * 40, start_obs=start_obs)
    a = make_grouping("similarity", num_clusters=5, seed=3)(batch)
    b = make_grouping("similarity", num_clusters=5, seed=3)(batch)
    assert torch.equal(a, b)
    assert a.unique().numel() == 5


def test_similarity_features_of_wrong_shape(make_batch):
    batch = make_batch([[0.0]] * 3)
    with pytest.raises(ValueError, match=r"features must return an \(N, F\) = \(3, F\) array"):
        make_grouping("similarity", features=lambda s0: s0[:2])(batch)


def test_key_grouping_sees_start_information(make_batch):
    starts = [StartState(5), StartState(6), StartState(7)]
    batch = make_batch([[0.0]] * 3, starts=starts, start_obs=[[1.0, -1.0], [-2.0, 0.5], [3.0, 0.0]])
    ids = key_grouping(lambda e: bool(e.start_observation[0] > 0))(batch)
    assert ids.tolist() == [0, 1, 0]
    seen = []
    key_grouping(lambda e: seen.append((e.index, e.start.seed)) or 0)(batch)
    assert seen == [(0, 5), (1, 6), (2, 7)]


def test_unequal_group_sizes_give_per_group_baselines(make_batch):
    # Tasks drawn at random give groups of 3, 1 and 2 episodes.
    returns = [[1.0], [2.0], [6.0], [10.0], [4.0], [8.0]]
    infos = [{"task": t} for t in ["a", "a", "a", "b", "c", "c"]]
    batch = make_batch(returns, reset_infos=infos)
    group_ids = make_grouping("task")(batch)
    assert group_ids.tolist() == [0, 0, 0, 1, 2, 2]
    adv = episode_advantages(batch, group_ids, "outcome", "dr_grpo")
    # Task a: mean 3 -> -2, -1, +3; task b alone -> 0; task c: mean 6 -> -2, +2.
    torch.testing.assert_close(adv, torch.tensor([-2.0, -1.0, 3.0, 0.0, -2.0, 2.0]), rtol=0, atol=1e-6)
    adv = episode_advantages(batch, group_ids, "outcome", "grpo", eps=0.0)
    # grpo divides by the sample std: task a std = sqrt(((-2)^2 + 1 + 9) / 2) = sqrt(7); task c: sqrt(8).
    expected = torch.tensor([-2 / 7**0.5, -1 / 7**0.5, 3 / 7**0.5, 0.0, -2 / 8**0.5, 2 / 8**0.5])
    torch.testing.assert_close(adv, expected, rtol=1e-6, atol=1e-7)


def test_register_grouping_refuses_duplicates_and_is_usable_by_name(make_batch):
    with pytest.raises(ValueError, match="already registered"):
        register_grouping("batch")(lambda: None)

    @register_grouping("test_parity_of_seed")
    def parity():
        return lambda batch: torch.tensor([s.seed % 2 for s in batch.starts])

    batch = make_batch([[0.0]] * 4)
    assert make_grouping("test_parity_of_seed")(batch).tolist() == [0, 1, 0, 1]


def test_unknown_grouping_lists_valid_names():
    with pytest.raises(
        ValueError, match=r"grouping='sme_start' is not a known grouping; valid names: \[.*'same_start'"
    ):
        make_grouping("sme_start")


def test_unknown_option_names_the_grouping():
    with pytest.raises(ValueError, match=r"grouping 'similarity' does not accept the options \['clusters'\]"):
        make_grouping("similarity", clusters=3)
    with pytest.raises(ValueError, match="num_clusters must be >= 1"):
        make_grouping("similarity", num_clusters=0)


def test_check_group_ids():
    assert check_group_ids(torch.tensor([0, 1], dtype=torch.int32), 2).dtype == torch.long
    with pytest.raises(ValueError, match=r"shape \(3,\), got \(2,\)"):
        check_group_ids(torch.tensor([0, 1]), 3)
    with pytest.raises(ValueError, match="must be integers"):
        check_group_ids(torch.tensor([0.0, 1.0]), 2)
    with pytest.raises(ValueError, match="got list"):
        check_group_ids([0, 1], 2)
