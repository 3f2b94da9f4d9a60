import gymnasium as gym
import numpy as np
import pytest
import torch

from grpokit.rl.envs import CueTasksEnv
from grpokit.rl.policies import make_policy
from grpokit.rl.rollout import EpisodeCollector, StartState, evaluation_starts, plan_starts


def _cartpole(num_envs=4, **kwargs):
    collector = EpisodeCollector("CartPole-v1", num_envs=num_envs, **kwargs)
    torch.manual_seed(0)
    policy = make_policy(collector.observation_space, collector.action_space, (16,))
    return collector, policy


def test_plan_starts_is_group_major_and_reproducible():
    starts = plan_starts(seed=3, step=5, num_start_states=3, num_generations=2)
    assert len(starts) == 6
    assert starts[0] == starts[1] and starts[2] == starts[3] and starts[4] == starts[5]
    assert len({s.seed for s in starts}) == 3
    assert plan_starts(3, 5, 3, 2) == starts
    assert {s.seed for s in plan_starts(3, 6, 3, 2)}.isdisjoint({s.seed for s in starts})
    with_tasks = plan_starts(3, 5, 50, 1, num_tasks=3)
    assert {s.task for s in with_tasks} == {0, 1, 2}


def test_plan_starts_rejects_bad_sizes():
    with pytest.raises(ValueError, match="num_start_states and num_generations must be >= 1"):
        plan_starts(0, 0, 0, 4)
    with pytest.raises(ValueError, match="step must be >= 0"):
        plan_starts(0, -1, 1, 1)


def test_evaluation_starts_are_fixed_and_round_robin_over_tasks():
    starts = evaluation_starts(0, 6, num_tasks=3)
    assert [s.task for s in starts] == [0, 1, 2, 0, 1, 2]
    assert evaluation_starts(0, 6, num_tasks=3) == starts
    train_seeds = {s.seed for step in range(20) for s in plan_starts(0, step, 8, 1)}
    assert train_seeds.isdisjoint({s.seed for s in evaluation_starts(0, 100)})


def test_collect_shapes_mask_and_returns():
    collector, policy = _cartpole()
    starts = plan_starts(0, 0, 3, 2)
    batch = collector.collect(policy, starts, generator=torch.Generator().manual_seed(0))
    N, T = 6, int(batch.lengths.max())
    assert batch.observations.shape == (N, T, 4)
    assert batch.actions.shape == (N, T) and batch.actions.dtype == torch.long
    assert batch.log_probs.shape == batch.rewards.shape == batch.mask.shape == (N, T)
    # Masks are a prefix of ones; CartPole pays 1 per step, so the return equals the length.
    for i in range(N):
        n = int(batch.lengths[i])
        assert batch.mask[i, :n].eq(1).all() and batch.mask[i, n:].eq(0).all()
        assert batch.rewards[i, n:].eq(0).all()
    torch.testing.assert_close(batch.returns, batch.lengths.float(), rtol=0, atol=0)
    assert batch.num_steps == int(batch.lengths.sum())
    assert (batch.terminated | batch.truncated).all()
    assert batch.starts == starts
    # log pi(a|s) of a 2-action policy lies in (-inf, 0].
    assert (batch.log_probs[batch.mask > 0] <= 0).all()


def test_same_seed_gives_same_start_state_and_env_dynamics():
    collector, policy = _cartpole()
    starts = [StartState(11)] * 3 + [StartState(12)]
    batch = collector.collect(policy, starts, generator=torch.Generator().manual_seed(0))
    s0 = batch.start_observations
    assert torch.equal(s0[0], s0[1]) and torch.equal(s0[0], s0[2])
    assert not torch.equal(s0[0], s0[3])
    # The same start as gymnasium gives it.
    env = gym.make("CartPole-v1")
    expected, _ = env.reset(seed=11)
    np.testing.assert_array_equal(s0[0].numpy(), expected)


def test_same_seeds_and_generator_give_the_same_episodes():
    collector, policy = _cartpole()
    starts = plan_starts(1, 0, 4, 2)
    a = collector.collect(policy, starts, generator=torch.Generator().manual_seed(5))
    b = collector.collect(policy, starts, generator=torch.Generator().manual_seed(5))
    assert torch.equal(a.returns, b.returns)
    assert torch.equal(a.actions, b.actions) and torch.equal(a.observations, b.observations)
    c = collector.collect(policy, starts, generator=torch.Generator().manual_seed(6))
    assert not torch.equal(a.actions[:, :5], c.actions[:, :5])


def test_deterministic_collection_repeats_episodes_from_one_start():
    collector, policy = _cartpole()
    batch = collector.collect(policy, [StartState(3)] * 3, deterministic=True)
    assert torch.equal(batch.actions[0], batch.actions[1]) and torch.equal(batch.actions[0], batch.actions[2])


def test_more_episodes_than_env_copies():
    collector, policy = _cartpole(num_envs=2)
    starts = plan_starts(0, 0, 5, 1)
    batch = collector.collect(policy, starts, generator=torch.Generator().manual_seed(0))
    assert batch.num_episodes == 5
    # Each episode still starts from its own seed, whichever env copy ran it.
    for i, start in enumerate(starts):
        expected, _ = gym.make("CartPole-v1").reset(seed=start.seed)
        np.testing.assert_array_equal(batch.start_observations[i].numpy(), expected)


def test_time_limit_truncates():
    collector, policy = _cartpole(max_episode_steps=5)
    with torch.no_grad():
        for p in policy.parameters():
            p.zero_()  # uniform random actions: CartPole survives 5 steps from any start
    batch = collector.collect(policy, plan_starts(0, 0, 4, 1), generator=torch.Generator().manual_seed(0))
    assert batch.lengths.tolist() == [5, 5, 5, 5]
    assert batch.truncated.all() and not batch.terminated.any()
    assert collector.time_limit == 5


def test_box_actions_are_clipped_for_the_env_but_stored_unclipped():
    collector = EpisodeCollector("Pendulum-v1", num_envs=2, max_episode_steps=4)
    policy = make_policy(collector.observation_space, collector.action_space, (8,), init_log_std=2.0)
    batch = collector.collect(policy, plan_starts(0, 0, 2, 1), generator=torch.Generator().manual_seed(0))
    assert batch.actions.shape == (2, 4, 1) and batch.actions.dtype == torch.float32
    assert batch.actions.abs().max() > 2.0  # std e^2: samples outside Pendulum's [-2, 2] bounds
    # Replaying the clipped actions reproduces the rewards.
    env = gym.make("Pendulum-v1")
    env.reset(seed=batch.starts[0].seed)
    for t in range(4):
        _, reward, *_ = env.step(np.clip(batch.actions[0, t].numpy(), -2.0, 2.0))
        assert reward == pytest.approx(batch.rewards[0, t].item(), rel=1e-6)


def test_tasks_select_env_kwargs():
    collector = EpisodeCollector("grpokit/CueTasks-v0", tasks=[{"task": 0}, {"task": 3}], num_envs=2)
    policy = make_policy(collector.observation_space, collector.action_space, (8,))
    starts = [StartState(1, task=1), StartState(2, task=0), StartState(3, task=1)]
    batch = collector.collect(policy, starts, generator=torch.Generator().manual_seed(0))
    assert [info["task"] for info in batch.reset_infos] == [3, 0, 3]
    with pytest.raises(ValueError, match=r"StartState.task=2 but the collector has 2 task\(s\)"):
        collector.collect(policy, [StartState(0, task=2)])


def test_select_trims_padding():
    collector, policy = _cartpole()
    batch = collector.collect(policy, plan_starts(0, 0, 4, 1), generator=torch.Generator().manual_seed(0))
    shortest = int(batch.lengths.argmin())
    sub = batch.select([shortest])
    assert sub.mask.shape == (1, int(batch.lengths[shortest]))
    assert sub.starts == [batch.starts[shortest]]
    assert torch.equal(sub.returns, batch.returns[[shortest]])


def test_env_without_time_limit_is_refused():
    def make(**kwargs):
        return CueTasksEnv(**kwargs)  # a bare env: no spec, no TimeLimit

    with pytest.raises(ValueError, match="has no time limit; set max_episode_steps"):
        EpisodeCollector(make)
    assert EpisodeCollector(make, max_episode_steps=8).time_limit == 8


def test_bad_collector_arguments():
    with pytest.raises(ValueError, match="num_envs must be >= 1"):
        EpisodeCollector("CartPole-v1", num_envs=0)
    with pytest.raises(ValueError, match="env must be a gymnasium id or a callable"):
        EpisodeCollector(3)
    collector, policy = _cartpole()
    with pytest.raises(ValueError, match="starts is empty"):
        collector.collect(policy, [])


def test_reward_threshold_comes_from_the_env_spec():
    assert EpisodeCollector("CartPole-v1", num_envs=1).reward_threshold == 475.0
    # Same time limit as registered: the threshold holds; another limit drops it (475 is out of reach in 200).
    assert EpisodeCollector("CartPole-v1", num_envs=1, max_episode_steps=500).reward_threshold == 475.0
    assert EpisodeCollector("CartPole-v1", num_envs=1, max_episode_steps=200).reward_threshold is None
    assert EpisodeCollector("Pendulum-v1", num_envs=1).reward_threshold is None
    assert EpisodeCollector("grpokit/CueTasks-v0", num_envs=1).reward_threshold is None
    # A factory: its env's spec, when it has one.
    assert EpisodeCollector(lambda: gym.make("CartPole-v1"), num_envs=1).reward_threshold == 475.0
    assert EpisodeCollector(CueTasksEnv, num_envs=1, max_episode_steps=8).reward_threshold is None
