import pytest
import torch

from grpokit.rl.advantages import episode_advantages, gae_advantages


def test_returns_to_go_compares_episodes_of_a_group_at_the_same_step(make_batch):
    # Group 0: A = [1, 2], B = [3, 0, 1]; group 1: C = [5].
    batch = make_batch([[1.0, 2.0], [3.0, 0.0, 1.0], [5.0]])
    group_ids = torch.tensor([0, 0, 1])
    adv = episode_advantages(batch, group_ids, "returns_to_go", "dr_grpo", gamma=1.0)
    # Returns-to-go (gamma 1): A = [3, 2], B = [4, 1, 1], C = [5].
    # t=0 in group 0: mean(3, 4) = 3.5 -> A -0.5, B +0.5; t=1: mean(2, 1) = 1.5 -> A +0.5, B -0.5;
    # t=2: B is alone -> 0; C is alone in its group -> 0; padding -> 0.
    expected = torch.tensor([[-0.5, 0.5, 0.0], [0.5, -0.5, 0.0], [0.0, 0.0, 0.0]])
    torch.testing.assert_close(adv, expected, rtol=0, atol=1e-6)


def test_returns_to_go_discounts(make_batch):
    batch = make_batch([[1.0, 2.0], [0.0, 4.0]])
    adv = episode_advantages(batch, torch.tensor([0, 0]), "returns_to_go", "dr_grpo", gamma=0.5)
    # G = [1 + 0.5*2, 2] = [2, 2] and [0 + 0.5*4, 4] = [2, 4]: t=0 equal -> 0, 0; t=1 mean 3 -> -1, +1.
    torch.testing.assert_close(adv, torch.tensor([[0.0, -1.0], [0.0, 1.0]]), rtol=0, atol=1e-6)


def test_returns_to_go_with_grpo_normalises_each_cell(make_batch):
    batch = make_batch([[1.0, 0.0], [3.0, 0.0], [2.0, 5.0]])
    adv = episode_advantages(batch, torch.tensor([0, 0, 0]), "returns_to_go", "grpo", gamma=1.0, eps=0.0)
    # t=0: G = 1, 3, 7, mean 11/3, sample std sqrt(((-8/3)^2 + (-2/3)^2 + (10/3)^2) / 2) = sqrt(28/3);
    # t=1: G = 0, 0, 5, mean 5/3, sample std sqrt((25/9 * 2 + 100/9) / 2) = sqrt(25/3).
    s0, s1 = (28 / 3) ** 0.5, (25 / 3) ** 0.5
    expected = torch.tensor(
        [[-8 / 3 / s0, -5 / 3 / s1], [-2 / 3 / s0, -5 / 3 / s1], [10 / 3 / s0, 10 / 3 / s1]]
    )
    torch.testing.assert_close(adv, expected, rtol=1e-6, atol=1e-6)


def test_outcome_is_one_value_per_episode(make_batch):
    batch = make_batch([[1.0, 1.0], [4.0], [0.0, 0.0, 0.0]])
    adv = episode_advantages(batch, torch.tensor([0, 0, 0]), "outcome", "dr_grpo", reward_scale=2.0)
    # Scaled returns 4, 8, 0, mean 4.
    torch.testing.assert_close(adv, torch.tensor([0.0, 4.0, -4.0]), rtol=0, atol=1e-6)


def test_process_normalises_step_rewards_over_the_group(make_batch):
    batch = make_batch([[1.0, 3.0], [2.0]])
    adv = episode_advantages(batch, torch.tensor([0, 0]), "process", eps=0.0)
    # Step rewards of the group: 1, 3, 2 -> mean 2, sample std 1 -> normalised -1, +1, 0.
    # A = sum of the normalised rewards from t on: episode 0 -> [0, 1]; episode 1 -> [0].
    torch.testing.assert_close(adv, torch.tensor([[0.0, 1.0], [0.0, 0.0]]), rtol=0, atol=1e-6)


def test_unknown_mode_and_bad_group_ids(make_batch):
    batch = make_batch([[1.0], [2.0]])
    with pytest.raises(ValueError, match="mode='episode' is not an advantage mode"):
        episode_advantages(batch, torch.tensor([0, 0]), "episode")
    with pytest.raises(ValueError, match=r"group_ids must have shape \(2,\)"):
        episode_advantages(batch, torch.tensor([0, 0, 0]), "outcome")


def test_gae_bootstraps_only_truncated_episodes(make_batch):
    batch = make_batch([[1.0, 1.0], [1.0, 1.0]], truncated=[True, False])
    batch.values = torch.zeros(2, 2)
    adv, ret = gae_advantages(batch, torch.tensor([10.0, 10.0]), gamma=0.5, lam=1.0, normalize=False)
    # Truncated: G_1 = 1 + 0.5*10 = 6, G_0 = 1 + 0.5*6 = 4. Terminated: G_1 = 1, G_0 = 1.5.
    torch.testing.assert_close(ret, torch.tensor([[4.0, 6.0], [1.5, 1.0]]), rtol=0, atol=1e-6)
    torch.testing.assert_close(adv, ret, rtol=0, atol=1e-6)  # V = 0


def test_gae_needs_values(make_batch):
    with pytest.raises(ValueError, match="batch.values is None"):
        gae_advantages(make_batch([[1.0]]), torch.zeros(1), gamma=1.0, lam=1.0)


def test_gae_does_not_bootstrap_an_episode_both_terminated_and_truncated(make_batch):
    # gymnasium's TimeLimit flags truncated=True also when the episode terminated on its last allowed
    # step; the terminal state's value is 0, so the final value 100 must not be added.
    batch = make_batch([[1.0, 1.0, 1.0]], truncated=[True])
    batch.terminated = torch.tensor([True])
    batch.values = torch.zeros(1, 3)
    adv, ret = gae_advantages(batch, torch.tensor([100.0]), gamma=1.0, lam=1.0, normalize=False)
    torch.testing.assert_close(ret, torch.tensor([[3.0, 2.0, 1.0]]), rtol=0, atol=1e-6)
    torch.testing.assert_close(adv, ret, rtol=0, atol=1e-6)  # V = 0


def test_returns_to_go_rloo_with_unequal_lengths_gives_lone_steps_zero(make_batch):
    # Group 0: A = [1, 2], B = [3, 0, 1]; group 1: C = [5]. Returns-to-go (gamma 1): A = [3, 2],
    # B = [4, 1, 1], C = [5]. t=0 in group 0: rloo 3 - 4 = -1, 4 - 3 = +1; t=1: 2 - 1 = +1, 1 - 2 = -1;
    # t=2: B is alone in its cell -> 0; C is alone in its group -> 0; padding -> 0.
    batch = make_batch([[1.0, 2.0], [3.0, 0.0, 1.0], [5.0]])
    adv = episode_advantages(batch, torch.tensor([0, 0, 1]), "returns_to_go", "rloo", gamma=1.0)
    expected = torch.tensor([[-1.0, 1.0, 0.0], [1.0, -1.0, 0.0], [0.0, 0.0, 0.0]])
    torch.testing.assert_close(adv, expected, rtol=0, atol=1e-6)
