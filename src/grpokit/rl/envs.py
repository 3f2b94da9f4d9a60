"""Small environments shipped with grpokit, registered with gymnasium on import of ``grpokit.rl``.

``grpokit/CueTasks-v0`` (:class:`CueTasksEnv`) is a procedurally varied multi-task env built to show
why the grouping matters. Each reset draws a task k; each step shows a cue c and pays

    r_t = bonus_k + 1[a_t = c_t]

so the achievable return depends mostly on the task (``episode_length * bonus_k``) and only a
little on the actions (at most ``episode_length``). A baseline over the whole batch then mistakes
"this episode had an easy task" for "these actions were good": the advantage of every episode of
the richest task is positive whatever it did. A per-task (or same-start) baseline removes the task
term and leaves only the part the actions control.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

CUE_TASKS_ID = "grpokit/CueTasks-v0"


class CueTasksEnv(gym.Env):
    """K tasks x A actions: take the action the cue shows; the task sets how much every step pays.

    Observation: ``concat(one_hot(k, K), one_hot(c_t, A))`` (float32, shape (K + A,)).
    Action: ``Discrete(A)``. Reward: ``task_bonus[k] + 1`` for the right action (``a_t = c_t``),
    ``task_bonus[k]`` otherwise. The right action does not depend on the task on purpose: the task
    changes only the return's scale, so any difference between groupings comes from the baseline.
    (A task-dependent mapping such as ``(c_t + k) mod A`` is XOR-like for an MLP on one-hot inputs;
    softmax policies then saturate on wrong actions early, which hides the effect being measured.) The episode terminates after ``episode_length`` steps. The reset info holds the task
    under ``"task"``; every step's info holds ``"correct"`` (bool).

    Args:
        num_actions: A (>= 2).
        task_bonus: reward every step of task k gets regardless of the action; K = len(task_bonus).
        episode_length: steps per episode.
        task: pin the task (e.g. for per-task evaluation); ``None`` draws it at each reset.
    """

    metadata: dict[str, Any] = {"render_modes": []}

    def __init__(
        self,
        num_actions: int = 4,
        task_bonus: Sequence[float] = (0.0, 2.0, 4.0, 8.0),
        episode_length: int = 8,
        task: int | None = None,
    ):
        if num_actions < 2:
            raise ValueError(f"num_actions must be >= 2, got {num_actions}")
        if len(task_bonus) < 1:
            raise ValueError("task_bonus must list at least one task")
        if episode_length < 1:
            raise ValueError(f"episode_length must be >= 1, got {episode_length}")
        if task is not None and not 0 <= task < len(task_bonus):
            raise ValueError(f"task must be in [0, {len(task_bonus) - 1}] or None, got {task}")
        self.num_actions = num_actions
        self.task_bonus = np.asarray(task_bonus, dtype=np.float64)
        self.num_tasks = len(task_bonus)
        self.episode_length = episode_length
        self.fixed_task = task
        self.observation_space = spaces.Box(0.0, 1.0, (self.num_tasks + num_actions,), dtype=np.float32)
        self.action_space = spaces.Discrete(num_actions)
        self._task = 0
        self._cue = 0
        self._t = 0

    def _observation(self) -> np.ndarray:
        obs = np.zeros(self.num_tasks + self.num_actions, dtype=np.float32)
        obs[self._task] = 1.0
        obs[self.num_tasks + self._cue] = 1.0
        return obs

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        if self.fixed_task is None:
            self._task = int(self.np_random.integers(self.num_tasks))
        else:
            self._task = self.fixed_task
        self._cue = int(self.np_random.integers(self.num_actions))
        self._t = 0
        return self._observation(), {"task": self._task}

    def step(self, action):
        if not self.action_space.contains(action):
            raise ValueError(f"action {action!r} is not in {self.action_space}")
        correct = int(action) == self._cue
        reward = float(self.task_bonus[self._task] + correct)
        self._t += 1
        # The next cue is drawn whatever the action, so episodes from one seed see the same cues.
        self._cue = int(self.np_random.integers(self.num_actions))
        terminated = self._t >= self.episode_length
        return self._observation(), reward, terminated, False, {"correct": correct}


def register_envs() -> None:
    """Register grpokit's environments with gymnasium (idempotent)."""
    if CUE_TASKS_ID not in gym.registry:
        # The episode ends by itself after episode_length steps; the registered limit is only a
        # safety net, so that collection of whole episodes always terminates.
        entry_point = f"{CueTasksEnv.__module__}:{CueTasksEnv.__qualname__}"
        gym.register(id=CUE_TASKS_ID, entry_point=entry_point, max_episode_steps=1000)
