"""Whole-episode rollouts from gymnasium environments, with exact per-episode seeding.

GRPO needs complete episodes (the group baseline compares finished returns) and needs to know how
each one started: G episodes from the same reset seed are the classic-RL analogue of G answers to
one prompt. So the unit of collection here is a list of :class:`StartState` (a reset seed and an
optional task), and the result is an :class:`EpisodeBatch` of N whole episodes padded to the
longest one, T steps.

Shape letters: B start states, G episodes per start state (``num_generations``), N episodes in the
batch (N = B*G for the usual plan), T the longest episode's length, A action dimensions.

How the environments are vectorised, and why not with ``gymnasium.vector``:
:class:`EpisodeCollector` keeps ``num_envs`` environment copies and runs up to that many episodes at
once; each step it stacks the active observations into one (num_active, *obs_shape) tensor, runs
the policy once, and steps each environment. When an episode ends, its slot immediately starts the
next pending episode with that episode's own reset seed. gymnasium's vector envs step all copies in
lock-step and reset finished copies with a seed of their own choosing (or, with autoreset disabled,
refuse to step until every copy is reset), so they cannot run "exactly these N seeded episodes"
without dummy steps; for cheap environments the batched policy call is where vectorisation pays.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields
from typing import Any

import numpy as np
import torch

from grpokit.rl.policies import Policy

EnvFactory = Callable[..., Any]  # (**env_kwargs) -> gymnasium.Env


@dataclass(frozen=True)
class StartState:
    """How one episode starts: ``env.reset(seed=seed)`` on the environment of task ``task``.

    ``task`` indexes the collector's ``tasks`` list (per-task env kwargs); None is the base env.
    Two episodes with equal StartStates start in the same state.
    """

    seed: int
    task: int | None = None


@dataclass
class EpisodeBatch:
    """N whole episodes, padded on the right to T = the longest episode's length.

    Step t of episode i is (s_t, a_t, r_t): the observation the policy saw, the action it took (the
    unclipped sample for Box actions) and the reward that followed. Padding entries are 0.
    """

    observations: torch.Tensor  # (N, T, *obs_shape) float32, s_t
    actions: torch.Tensor  # (N, T) long for Discrete actions, (N, T, A) float32 for Box actions
    log_probs: torch.Tensor  # (N, T) float32, log pi_old(a_t | s_t) under the sampling policy
    rewards: torch.Tensor  # (N, T) float32, r_t as returned by env.step
    mask: torch.Tensor  # (N, T) float32, 1 on real steps
    terminated: torch.Tensor  # (N,) bool, the episode reached a terminal state
    truncated: torch.Tensor  # (N,) bool, the episode was cut by the time limit (bootstrap if you can)
    final_observations: torch.Tensor  # (N, *obs_shape) float32, s_T the observation after the last step
    starts: list[StartState]  # N, how each episode started
    reset_infos: list[dict[str, Any]]  # N, the info dict returned by env.reset
    ref_log_probs: torch.Tensor | None = None  # (N, T) log pi_ref(a_t | s_t), filled when beta > 0
    values: torch.Tensor | None = None  # (N, T) V(s_t) at collection time, filled by PPO

    @property
    def num_episodes(self) -> int:
        return self.mask.shape[0]

    @property
    def lengths(self) -> torch.Tensor:
        """(N,) long, real steps per episode."""
        return self.mask.sum(1).long()

    @property
    def returns(self) -> torch.Tensor:
        """(N,) float32, undiscounted episode returns sum_t r_t."""
        return (self.rewards * self.mask).sum(1)

    @property
    def start_observations(self) -> torch.Tensor:
        """(N, *obs_shape), s_0 of each episode."""
        return self.observations[:, 0]

    @property
    def num_steps(self) -> int:
        """Environment steps in the batch (sum of the lengths)."""
        return int(self.mask.sum().item())

    def select(self, index: torch.Tensor | Sequence[int]) -> EpisodeBatch:
        """Episodes ``index`` of every per-episode field, trimmed to their own longest length."""
        idx = torch.as_tensor(index, dtype=torch.long)
        rows = idx.tolist()
        width = int(self.mask[idx].sum(1).max().item()) if rows else 0
        out: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if value is None:
                out[f.name] = None
            elif isinstance(value, list):
                out[f.name] = [value[i] for i in rows]
            elif f.name in ("terminated", "truncated", "final_observations"):
                out[f.name] = value[idx]
            else:
                out[f.name] = value[idx, :width]
        return EpisodeBatch(**out)


def plan_starts(
    seed: int, step: int, num_start_states: int, num_generations: int, num_tasks: int | None = None
) -> list[StartState]:
    """The N = B*G start states of training step ``step``, group-major: start b repeated G times.

    Reset seeds come from ``numpy.random.SeedSequence(seed, spawn_key=(0, step))``, so each step
    draws fresh, reproducible start states without any RNG state to checkpoint. With ``num_tasks``,
    each start state also draws a task uniformly from 0..num_tasks-1.
    """
    if num_start_states < 1 or num_generations < 1:
        raise ValueError(
            f"num_start_states and num_generations must be >= 1, got {num_start_states} and {num_generations}"
        )
    if step < 0:
        raise ValueError(f"step must be >= 0, got {step}")
    sequence = np.random.SeedSequence(seed, spawn_key=(0, step))
    seeds = sequence.generate_state(num_start_states).tolist()  # B uint32 reset seeds
    tasks = [None] * num_start_states
    if num_tasks is not None:
        if num_tasks < 1:
            raise ValueError(f"num_tasks must be >= 1 or None, got {num_tasks}")
        tasks = np.random.default_rng(sequence).integers(num_tasks, size=num_start_states).tolist()
    return [StartState(int(s), t) for s, t in zip(seeds, tasks) for _ in range(num_generations)]


def evaluation_starts(seed: int, num_episodes: int, num_tasks: int | None = None) -> list[StartState]:
    """``num_episodes`` distinct start states reserved for evaluation (never drawn by plan_starts)."""
    if num_episodes < 1:
        raise ValueError(f"num_episodes must be >= 1, got {num_episodes}")
    sequence = np.random.SeedSequence(seed, spawn_key=(1,))
    seeds = sequence.generate_state(num_episodes).tolist()
    if num_tasks is None:
        return [StartState(int(s)) for s in seeds]
    # Round-robin over tasks so that every task is evaluated equally often.
    return [StartState(int(s), i % num_tasks) for i, s in enumerate(seeds)]


def _reward_threshold(spec: Any, max_episode_steps: int | None) -> float | None:
    """``spec.reward_threshold`` of an env, or None when it has none or when ``max_episode_steps`` changes
    the time limit it was registered with (a threshold holds for the registered episode length: CartPole-v1's
    475 is out of reach in 200 steps)."""
    import gymnasium as gym

    threshold = getattr(spec, "reward_threshold", None)
    if threshold is None:
        return None
    if max_episode_steps is not None:
        registered = gym.registry.get(spec.id)
        if registered is None or registered.max_episode_steps != max_episode_steps:
            return None
    return float(threshold)


class EpisodeCollector:
    """Runs whole, seeded episodes of a gymnasium environment with a batched policy.

    Args:
        env: a registered gymnasium id (made with ``gymnasium.make``) or a factory
            ``(**env_kwargs) -> gymnasium.Env``.
        env_kwargs: keyword arguments for every environment.
        tasks: per-task keyword arguments merged over ``env_kwargs``; ``StartState.task`` indexes it.
        num_envs: environment copies per task, i.e. episodes stepped together.
        max_episode_steps: time limit; None keeps the env's registered limit. An env with no limit
            at all is refused, since whole-episode collection would never end.
    """

    def __init__(
        self,
        env: str | EnvFactory,
        *,
        env_kwargs: dict[str, Any] | None = None,
        tasks: Sequence[dict[str, Any]] | None = None,
        num_envs: int = 16,
        max_episode_steps: int | None = None,
    ):
        if not isinstance(env, str) and not callable(env):
            raise ValueError(f"env must be a gymnasium id or a callable returning an env, got {env!r}")
        if num_envs < 1:
            raise ValueError(f"num_envs must be >= 1, got {num_envs}")
        if max_episode_steps is not None and max_episode_steps < 1:
            raise ValueError(f"max_episode_steps must be >= 1 or None, got {max_episode_steps}")
        if tasks is not None and len(tasks) == 0:
            raise ValueError("tasks must be None or a non-empty list of env kwargs")
        self.env = env
        self.env_kwargs = dict(env_kwargs or {})
        self.tasks = [dict(t) for t in tasks] if tasks is not None else None
        self.num_envs = num_envs
        self.max_episode_steps = max_episode_steps
        self._free: dict[int | None, list[Any]] = {}  # task -> idle env copies
        probe = self._make(None)
        self.observation_space = probe.observation_space
        self.action_space = probe.action_space
        #: The episode length cap (the env's registered limit unless overridden).
        self.time_limit: int = max_episode_steps or probe.spec.max_episode_steps
        #: The return at which the env counts as solved (its spec's ``reward_threshold``), or None.
        self.reward_threshold: float | None = _reward_threshold(probe.spec, max_episode_steps)
        self._free[None] = [probe]

    # -- environments ------------------------------------------------------------------------

    def _make(self, task: int | None) -> Any:
        import gymnasium as gym

        kwargs = dict(self.env_kwargs)
        if task is not None:
            if self.tasks is None or not 0 <= task < len(self.tasks):
                count = 0 if self.tasks is None else len(self.tasks)
                raise ValueError(f"StartState.task={task} but the collector has {count} task(s)")
            kwargs.update(self.tasks[task])
        if isinstance(self.env, str):
            limit: dict[str, Any] = {}
            if self.max_episode_steps is not None:
                limit["max_episode_steps"] = self.max_episode_steps
            env = gym.make(self.env, **limit, **kwargs)
        else:
            env = self.env(**kwargs)
            if self.max_episode_steps is not None:
                env = gym.wrappers.TimeLimit(env, self.max_episode_steps)
        if self.max_episode_steps is None and (env.spec is None or env.spec.max_episode_steps is None):
            raise ValueError(
                f"environment {self.env!r} has no time limit; set max_episode_steps so episodes end"
            )
        return env

    def _checkout(self, task: int | None) -> Any:
        free = self._free.setdefault(task, [])
        return free.pop() if free else self._make(task)

    def close(self) -> None:
        for envs in self._free.values():
            for env in envs:
                env.close()
        self._free.clear()

    # -- collection --------------------------------------------------------------------------

    def _to_env_action(self, action: np.ndarray) -> Any:
        if action.ndim == 0:
            return int(action)
        # Box actions: the policy samples from an unbounded Gaussian; the env gets the clipped value.
        return np.clip(action.astype(self.action_space.dtype), self.action_space.low, self.action_space.high)

    @torch.no_grad()
    def collect(
        self,
        policy: Policy,
        starts: Sequence[StartState],
        *,
        generator: torch.Generator | None = None,
        deterministic: bool = False,
    ) -> EpisodeBatch:
        """Run one episode per start state (in order) and return them padded into one batch.

        Up to ``num_envs`` episodes per task run at once; a freed slot starts the next pending
        episode. The result depends only on the policy weights, ``starts``, ``num_envs`` and the
        generator's state, never on torch's or numpy's global RNG.

        Args:
            policy: maps (M, *obs_shape) observations to M action distributions.
            starts: N start states; row i of the batch is episode ``starts[i]``.
            generator: the RNG for action sampling (unused when ``deterministic``).
            deterministic: take the policy's mode instead of sampling (greedy evaluation).
        """
        if len(starts) == 0:
            raise ValueError("starts is empty: there are no episodes to collect")
        N = len(starts)
        obs_steps: list[list[np.ndarray]] = [[] for _ in range(N)]
        act_steps: list[list[np.ndarray]] = [[] for _ in range(N)]
        logp_steps: list[list[float]] = [[] for _ in range(N)]
        reward_steps: list[list[float]] = [[] for _ in range(N)]
        final_obs: list[np.ndarray | None] = [None] * N
        terminated, truncated = [False] * N, [False] * N
        reset_infos: list[dict[str, Any]] = [{}] * N
        pending = deque(range(N))
        active: dict[int, tuple[Any, np.ndarray]] = {}  # episode -> (env, current observation)
        running: dict[int | None, int] = {}  # task -> number of active episodes of that task

        was_training = policy.training
        policy.eval()
        try:
            while pending or active:
                # Refill free slots with pending episodes, each reset with its own seed.
                waiting: deque[int] = deque()
                while pending:
                    i = pending.popleft()
                    task = starts[i].task
                    if running.get(task, 0) >= self.num_envs:
                        waiting.append(i)
                        continue
                    env = self._checkout(task)
                    obs, info = env.reset(seed=int(starts[i].seed))
                    reset_infos[i] = info
                    active[i] = (env, np.array(obs, dtype=np.float32))  # copy: envs may reuse buffers
                    running[task] = running.get(task, 0) + 1
                pending = waiting

                # One batched policy call for every active episode.
                episodes = list(active)
                obs_batch = torch.from_numpy(np.stack([active[i][1] for i in episodes]))  # (M, *obs_shape)
                action_batch, logp_batch = policy.act(
                    obs_batch, deterministic=deterministic, generator=generator
                )
                # One conversion per step: indexing numpy per episode is far cheaper than indexing tensors.
                actions, log_probs = action_batch.numpy(), logp_batch.tolist()

                for k, i in enumerate(episodes):
                    env, obs = active[i]
                    next_obs, reward, term, trunc, _ = env.step(self._to_env_action(actions[k]))
                    obs_steps[i].append(obs)
                    act_steps[i].append(actions[k])
                    logp_steps[i].append(log_probs[k])
                    reward_steps[i].append(float(reward))
                    next_obs = np.array(next_obs, dtype=np.float32)
                    if term or trunc:
                        final_obs[i], terminated[i], truncated[i] = next_obs, bool(term), bool(trunc)
                        del active[i]
                        running[starts[i].task] -= 1
                        self._free[starts[i].task].append(env)
                    else:
                        active[i] = (env, next_obs)
        finally:
            policy.train(was_training)

        return _pack(
            obs_steps,
            act_steps,
            logp_steps,
            reward_steps,
            final_obs,
            terminated,
            truncated,
            list(starts),
            reset_infos,
        )


def _pack(
    obs_steps, act_steps, logp_steps, reward_steps, final_obs, terminated, truncated, starts, reset_infos
):
    """Per-episode step lists to one right-padded EpisodeBatch."""
    pad = torch.nn.utils.rnn.pad_sequence
    observations = pad([torch.from_numpy(np.stack(o)) for o in obs_steps], batch_first=True)  # (N, T, *obs)
    actions = pad([torch.from_numpy(np.stack(a)) for a in act_steps], batch_first=True)  # (N, T) or (N, T, A)
    log_probs = pad([torch.tensor(lp, dtype=torch.float32) for lp in logp_steps], batch_first=True)  # (N, T)
    rewards = pad([torch.tensor(r, dtype=torch.float32) for r in reward_steps], batch_first=True)  # (N, T)
    mask = pad([torch.ones(len(r)) for r in reward_steps], batch_first=True)  # (N, T)
    return EpisodeBatch(
        observations=observations,
        actions=actions if actions.dtype == torch.long else actions.float(),
        log_probs=log_probs,
        rewards=rewards,
        mask=mask,
        terminated=torch.tensor(terminated),
        truncated=torch.tensor(truncated),
        final_observations=torch.from_numpy(np.stack(final_obs)),
        starts=starts,
        reset_infos=reset_infos,
    )
