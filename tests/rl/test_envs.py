import gymnasium as gym
import numpy as np
import pytest

import grpokit.rl  # noqa: F401  (registers grpokit/CueTasks-v0)
from grpokit.rl.envs import CUE_TASKS_ID, CueTasksEnv


def test_cue_tasks_rewards_observations_and_termination():
    env = CueTasksEnv(num_actions=3, task_bonus=(0.0, 5.0), episode_length=3, task=1)
    obs, info = env.reset(seed=0)
    assert info == {"task": 1}
    assert obs.shape == (5,) and obs[:2].tolist() == [0.0, 1.0] and obs[2:].sum() == 1.0
    total = 0.0
    for t in range(3):
        cue = int(obs[2:].argmax())
        right = cue if t != 1 else (cue + 1) % 3  # one wrong step
        obs, reward, terminated, truncated, step_info = env.step(right)
        assert reward == (6.0 if t != 1 else 5.0) and step_info["correct"] == (t != 1)
        assert terminated == (t == 2) and not truncated
        total += reward
    assert total == 17.0


def test_cue_tasks_seeding():
    env = gym.make(CUE_TASKS_ID)
    a = [env.reset(seed=4)[0]] + [env.step(0)[0] for _ in range(5)]
    b = [env.reset(seed=4)[0]] + [env.step(3)[0] for _ in range(5)]
    # Same seed, different actions: same task and cue sequence.
    np.testing.assert_array_equal(np.stack(a), np.stack(b))
    tasks = {env.reset(seed=s)[1]["task"] for s in range(40)}
    assert tasks == {0, 1, 2, 3}


def test_cue_tasks_validation():
    with pytest.raises(ValueError, match="num_actions must be >= 2"):
        CueTasksEnv(num_actions=1)
    with pytest.raises(ValueError, match=r"task must be in \[0, 3\] or None"):
        CueTasksEnv(task=4)
    env = CueTasksEnv()
    env.reset(seed=0)
    with pytest.raises(ValueError, match="action 7 is not in Discrete"):
        env.step(7)
