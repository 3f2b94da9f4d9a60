"""GRPO (and PPO) for any policy on gymnasium environments.

The loop is the one of the language-model trainer, with start states in place of prompts and
episodes in place of completions (seed 003's "general RL framework" reading of GRPO)::

    start states ──► G episodes each ──► group ──► group-relative advantages ──► clipped update
     (plan_starts)    (EpisodeCollector)  (grouping)  (grpokit.algorithms)        (policy_loss)

PPO (Schulman et al. 2017, arXiv 1707.06347) runs the same loop with a value network: its
advantages come from GAE and the value loss is added to the clipped policy loss. Only the advantage
source and the value update differ; all the maths is in :mod:`grpokit.algorithms`.

Deviations from the GRPO paper (DeepSeekMath, arXiv 2402.03300), numbered:

1. An "output" is an episode and a "token" an env step; the ratio, clip, KL and entropy are per step.
2. ``advantage_mode="returns_to_go"`` (the default) is not in the paper: the advantage of step t is
   the group-relative score of the discounted return-to-go G_t = sum_{k>=t} gamma^(k-t) r_k among
   the episodes of the same group that are still running at step t (estimator applied per
   (group, t) cell). From a shared start state this is a time-indexed baseline, which gives the
   credit assignment that the paper's outcome advantage (one value for every step) lacks; an
   episode alone at step t gets 0 there. ``outcome`` and ``process`` are the paper's two modes.
3. Episodes cut by the time limit are treated as ended by GRPO (no critic to bootstrap with), as a
   truncated completion is in the LLM setting; PPO bootstraps them with V(s_T).
4. The loss aggregation defaults to ``token_mean`` (every env step weighs the same, as in PPO):
   the paper's per-episode mean would down-weight every step of a long (in CartPole: good) episode.
5. The reference policy for the ``beta`` KL term is a frozen copy of the initial policy.
6. The entropy bonus of a Gaussian policy uses its closed-form entropy, aggregated like the loss;
   ``policy_loss`` computes entropies from categorical logits only.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from grpokit.algorithms import (
    LossInputs,
    LossSettings,
    compute_loss,
    group_reward_stats,
    kl_divergence,
    masked_mean,
)
from grpokit.engine import checkpoint as ckpt
from grpokit.engine.harness import RunHarness
from grpokit.engine.update import MicroLoss, OptimizerSlot, UpdateSchedule, UpdateStats, run_update
from grpokit.rl.advantages import episode_advantages, gae_advantages
from grpokit.rl.config import RLConfig
from grpokit.rl.grouping import Grouping, check_group_ids, make_grouping
from grpokit.rl.policies import CategoricalPolicy, Policy, make_policy, make_value_network
from grpokit.rl.rollout import EnvFactory, EpisodeBatch, EpisodeCollector, evaluation_starts, plan_starts


@dataclass
class RLResult:
    """What a training run produced. Times are wall-clock seconds since ``train()`` started."""

    run_dir: Path | None
    steps: int  # training steps completed
    env_steps: int  # environment steps of training episodes
    wall_time: float  # seconds, evaluations included
    cpu_time: float  # CPU seconds of this process over the same span (load-independent)
    eval_time: float  # seconds spent in evaluations
    final_eval_returns: np.ndarray  # (eval_episodes,) returns of the final evaluation
    solved_step: int | None = None  # first step whose evaluation reached target_return
    solved_env_steps: int | None = None
    solved_wall_time: float | None = None
    history: list[dict[str, Any]] = field(default_factory=list)  # the logged rows
    target_return: float | None = None  # the solved threshold in force (config, else the env's spec)
    stop_reason: str = "max_steps"  # "solved", "max_steps", "max_env_steps" or "max_wall_time"


class RLTrainer:
    """Trains a policy on a gymnasium environment with GRPO or PPO.

    Args:
        config: the run configuration.
        env: overrides ``config.environment.env``: a gymnasium id or a factory ``(**kwargs) -> Env``.
        policy: overrides the built-in MLP policy (any :class:`Policy`).
        value_network: PPO's critic, a module (M, *obs_shape) -> (M,); default: an MLP.
        grouping: overrides ``config.algorithm.grouping``: any ``(EpisodeBatch) -> group_ids (N,)``.
        run_dir: where to write config, metrics and checkpoints; default
            ``output_dir/run_name`` (``run_name`` defaults to ``rl-<algorithm>-<env>-<time>``), or the run
            being resumed. Pass ``run_dir=False`` to write nothing (a quick in-memory run).
    """

    def __init__(
        self,
        config: RLConfig,
        *,
        env: str | EnvFactory | None = None,
        policy: Policy | None = None,
        value_network: nn.Module | None = None,
        grouping: Grouping | None = None,
        run_dir: str | Path | bool | None = None,
    ):
        from grpokit.rl.envs import register_envs

        register_envs()
        if not isinstance(config, RLConfig):
            raise ValueError(f"config must be an RLConfig, got {type(config).__name__}")
        self.config = config
        env_cfg, alg = config.environment, config.algorithm
        self.is_ppo = alg.algorithm == "ppo"
        self.collector = EpisodeCollector(
            env if env is not None else env_cfg.env,
            env_kwargs=env_cfg.env_kwargs,
            tasks=env_cfg.tasks,
            num_envs=env_cfg.num_envs,
            max_episode_steps=env_cfg.max_episode_steps,
        )
        self.max_episode_steps = self.collector.time_limit
        #: The evaluation mean return that counts as solved: ``evaluation.target_return``, else the env's
        #: ``spec.reward_threshold`` (None: no target; training runs to its budget).
        self.target_return: float | None = config.evaluation.target_return
        if self.target_return is None:
            self.target_return = self.collector.reward_threshold
        #: (step, env steps, wall seconds) of the first evaluation that reached the target.
        self.solved: tuple[int, int, float] | None = None

        # Networks are built under the run's seed so that the same config gives the same weights.
        torch.manual_seed(config.seed)
        obs_space, act_space = self.collector.observation_space, self.collector.action_space
        pol_cfg = config.policy
        if policy is None:
            policy = make_policy(
                obs_space, act_space, pol_cfg.hidden_sizes, pol_cfg.activation, pol_cfg.init_log_std
            )
        self.policy = policy
        if not isinstance(self.policy, Policy):
            raise ValueError(f"policy must be a grpokit.rl.Policy, got {type(self.policy).__name__}")
        self.value_network: nn.Module | None = None
        if self.is_ppo:
            if value_network is None:
                value_network = make_value_network(obs_space, pol_cfg.hidden_sizes, pol_cfg.activation)
            self.value_network = value_network
        self.reference: Policy | None = None
        if alg.beta > 0:
            self.reference = copy.deepcopy(self.policy).requires_grad_(False).eval()

        if grouping is None:
            options = dict(alg.grouping_kwargs)
            if alg.grouping == "similarity":
                options.setdefault("num_clusters", alg.num_start_states)
                options.setdefault("seed", config.seed)
            grouping = make_grouping(alg.grouping, **options)
        if not callable(grouping):
            raise ValueError(f"grouping must be callable (EpisodeBatch -> group ids), got {grouping!r}")
        self.grouping = grouping

        params = list(self.policy.parameters())
        if self.value_network is not None:
            params += list(self.value_network.parameters())
        self.optimizer = torch.optim.Adam(
            params, lr=config.optim.learning_rate, eps=config.optim.adam_epsilon
        )
        self.generator = torch.Generator().manual_seed(config.seed)
        self.step = 0
        self.env_steps = 0
        self.wall_offset = 0.0  # seconds trained before a resume
        self.cpu_offset = 0.0  # CPU seconds of this process's training before a resume
        self.eval_time = 0.0

        # Run directory, checkpoints, logs, signals: the same harness as the language-model trainers.
        self.harness = RunHarness(
            config, prefix=f"rl-{alg.algorithm}-{env_cfg.env.replace('/', '_')}",
            max_consecutive_nonfinite=config.optim.max_consecutive_nonfinite, run_dir=run_dir,
            desc="rl", progress_keys=("episode/return_mean", "eval/return_mean"),
        )  # fmt: skip
        if self.harness.resume_from is not None:
            self._load(self.harness.resume_from)
        self.run_dir: Path | None = None

    # ------------------------------------------------------------------------------------------
    # The loop
    # ------------------------------------------------------------------------------------------

    def train(self) -> RLResult:
        """Run training until ``max_steps``, ``max_env_steps``, ``max_wall_time`` or, with
        ``evaluation.stop_when_solved``, the first evaluation that reaches :attr:`target_return`."""
        cfg = self.config
        stop_when_solved = cfg.evaluation.stop_when_solved
        self.run_dir = self.harness.open(self.step)
        self._start = time.perf_counter() - self.wall_offset
        self._cpu_start = time.process_time() - self.cpu_offset
        self._history: list[dict[str, Any]] = []
        eval_returns = np.zeros(0)
        stop_reason = "max_steps"
        with self.harness.running(save=self.save_checkpoint) as run:
            for step in run.steps():
                if self.solved is not None and stop_when_solved:  # a resumed run that had already stopped
                    stop_reason = "solved"
                    break
                budget = self._budget_spent(self._start)
                if budget is not None:
                    stop_reason = budget
                    break
                # Rollout: B start states, G episodes each (PPO: N distinct start states).
                t0 = time.perf_counter()
                batch = self.collector.collect(self.policy, self._starts(step - 1), generator=self.generator)
                self._score(batch)
                # Group, then advantages: group-relative (GRPO) or GAE with the value network (PPO).
                t1 = time.perf_counter()
                group_ids = check_group_ids(self.grouping(batch), batch.num_episodes)
                advantages, returns = self._advantages(batch, group_ids)
                # The engine's update: num_iterations passes of minibatched clipped loss.
                update = self._update(batch, advantages, returns)
                self.step, self.env_steps = step, self.env_steps + batch.num_steps
                metrics = {f"train/{k}": v for k, v in update.as_metrics().items() if k != "train_tokens"}
                metrics |= self._rollout_metrics(batch, group_ids)
                metrics |= {"time/rollout_s": t1 - t0, "time/update_s": time.perf_counter() - t1}
                # Evaluate, log; stop on a non-finite streak; periodic checkpoint.
                if cfg.evaluation.eval_steps and step % cfg.evaluation.eval_steps == 0:
                    eval_returns = self._timed_evaluate()
                    metrics |= _eval_metrics(eval_returns)
                    self._check_solved(eval_returns)
                self._log(run, metrics, self._sample_rows(batch, group_ids, advantages))
                run.end_step(step, update)
                if self.solved is not None and stop_when_solved:
                    stop_reason = "solved"
                    break

            # A final evaluation unless the last step just ran one.
            if not (self._history and "eval/return_mean" in self._history[-1]):
                eval_returns = self._timed_evaluate()
                self._check_solved(eval_returns)
                self._log(run, _eval_metrics(eval_returns), [], progress=False)
            wall = time.perf_counter() - self._start
            if self.harness.writes and self.harness.saved_step() != self.step:
                self.save_checkpoint(self.step)
        return RLResult(
            run_dir=self.run_dir,
            steps=self.step,
            env_steps=self.env_steps,
            wall_time=wall,
            cpu_time=time.process_time() - self._cpu_start,
            eval_time=self.eval_time,
            final_eval_returns=eval_returns,
            solved_step=self.solved[0] if self.solved else None,
            solved_env_steps=self.solved[1] if self.solved else None,
            solved_wall_time=self.solved[2] if self.solved else None,
            history=self._history,
            target_return=self.target_return,
            stop_reason=stop_reason,
        )

    def _check_solved(self, eval_returns: np.ndarray) -> None:
        """Record the first evaluation whose mean return reaches the target (at the current step)."""
        target = self.target_return
        if self.solved is None and target is not None and eval_returns.mean() >= target:
            self.solved = (self.step, self.env_steps, time.perf_counter() - self._start)

    # ------------------------------------------------------------------------------------------
    # Phases
    # ------------------------------------------------------------------------------------------

    def _starts(self, step: int):
        """GRPO: B start states x G episodes. PPO: N distinct start states (it has no groups)."""
        alg, tasks = self.config.algorithm, self.config.environment.tasks
        num_tasks = len(tasks) if tasks is not None else None
        if self.is_ppo:
            return plan_starts(self.config.seed, step, self.config.num_episodes, 1, num_tasks)
        return plan_starts(self.config.seed, step, alg.num_start_states, alg.num_generations, num_tasks)

    @torch.no_grad()
    def _score(self, batch: EpisodeBatch) -> None:
        """Fill the batch's reference log-probs (beta > 0) and values at collection time (PPO)."""
        reference, value_network = self.reference, self.value_network
        if reference is not None:
            batch.ref_log_probs = _per_step(
                batch, lambda obs, real: reference.distribution(obs).log_prob(batch.actions[real])
            )
        if value_network is not None:
            batch.values = _per_step(batch, lambda obs, real: value_network(obs))

    def _advantages(
        self, batch: EpisodeBatch, group_ids: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """GRPO: ((N,) or (N, T) advantages, None). PPO: ((N, T) GAE advantages, (N, T) value targets)."""
        alg, scale = self.config.algorithm, self.config.environment.reward_scale
        if self.value_network is not None:  # PPO
            with torch.no_grad():
                final_values = self.value_network(batch.final_observations)  # (N,)
            return gae_advantages(
                batch, final_values, gamma=alg.gamma, lam=alg.gae_lambda,
                normalize=alg.whiten_advantages, reward_scale=scale,
            )  # fmt: skip
        advantages = episode_advantages(
            batch, group_ids, alg.advantage_mode, alg.advantage_estimator,
            gamma=alg.gamma, eps=alg.advantage_eps, reward_scale=scale,
        )  # fmt: skip
        return advantages, None

    def _update(
        self, batch: EpisodeBatch, advantages: torch.Tensor, returns: torch.Tensor | None
    ) -> UpdateStats:
        """The engine's update: ``num_iterations`` passes over the batch, each split into ``num_minibatches`` of
        whole episodes; the loss is ``algorithm.loss_type``'s (PPO: the clipped loss plus the value loss)."""
        cfg, alg = self.config, self.config.algorithm
        self.policy.train()
        objective = EpisodeObjective(self, batch, advantages, returns)
        params = [p for group in self.optimizer.param_groups for p in group["params"]]
        stats = run_update(
            objective,
            batch.mask,
            aggregation=alg.loss_aggregation,
            optimizers=[OptimizerSlot(self.optimizer, params, cfg.optim.max_grad_norm)],
            schedule=UpdateSchedule(
                num_iterations=alg.num_iterations,
                mini_batch_size=math.ceil(batch.num_episodes / cfg.optim.num_minibatches),
            ),
            generator=self.generator,
        )
        return stats

    def _evaluate_actions(self, mb: EpisodeBatch) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """Log-probs and entropies (n, T) of the taken actions under the current policy, with gradient;
        plus the logits (n, T, A) for a categorical policy (``policy_loss`` derives its entropy from them)."""
        real = mb.mask > 0  # (n, T)
        dist = self.policy.distribution(mb.observations[real])  # batch shape (M,)
        logprobs = _scatter(dist.log_prob(mb.actions[real]), real)  # (n, T)
        entropy = _scatter(dist.entropy(), real)  # (n, T)
        logits = None
        if isinstance(self.policy, CategoricalPolicy) and isinstance(dist, torch.distributions.Categorical):
            logits = _scatter(dist.logits, real)  # (n, T, A)
        return logprobs, entropy, logits

    # ------------------------------------------------------------------------------------------
    # Evaluation, metrics, run directory, checkpoints
    # ------------------------------------------------------------------------------------------

    def evaluate(self, num_episodes: int | None = None, deterministic: bool | None = None) -> np.ndarray:
        """Returns (num_episodes,) of the current policy from the fixed evaluation start states."""
        ev = self.config.evaluation
        tasks = self.config.environment.tasks
        starts = evaluation_starts(
            self.config.seed, num_episodes or ev.eval_episodes, len(tasks) if tasks is not None else None
        )
        deterministic = ev.eval_deterministic if deterministic is None else deterministic
        # A dedicated generator: evaluating must not change the training run's random stream.
        generator = torch.Generator().manual_seed(self.config.seed + 1)
        batch = self.collector.collect(self.policy, starts, generator=generator, deterministic=deterministic)
        return batch.returns.numpy().astype(np.float64)

    def _timed_evaluate(self) -> np.ndarray:
        t0 = time.perf_counter()
        returns = self.evaluate()
        self.eval_time += time.perf_counter() - t0
        return returns

    def _rollout_metrics(self, batch: EpisodeBatch, group_ids: torch.Tensor) -> dict[str, float]:
        returns = batch.returns.double()
        lengths = batch.lengths.double()
        stats = group_reward_stats(returns, group_ids)
        return {
            "episode/return_mean": returns.mean().item(),
            "episode/return_std": returns.std().item() if len(returns) > 1 else 0.0,
            "episode/return_min": returns.min().item(),
            "episode/return_max": returns.max().item(),
            "episode/length_mean": lengths.mean().item(),
            "episode/terminated_fraction": batch.terminated.double().mean().item(),
            "groups/num_groups": stats["num_groups"],
            "groups/size_min": stats["group_size_min"],
            "groups/size_max": stats["group_size_max"],
            "groups/zero_std_fraction": stats["zero_std_group_fraction"],
            "groups/return_std_within_mean": stats["reward_std_within_group_mean"],
        }

    def _budget_spent(self, start: float) -> str | None:
        """The name of the budget spent (``max_env_steps``, ``max_wall_time``), or None."""
        cfg = self.config
        if cfg.max_env_steps is not None and self.env_steps >= cfg.max_env_steps:
            return "max_env_steps"
        if cfg.max_wall_time is not None and time.perf_counter() - start >= cfg.max_wall_time:
            return "max_wall_time"
        return None

    def _log(
        self, run: RunHarness, metrics: dict[str, Any], samples: list[dict[str, Any]], progress: bool = True
    ):
        # CPU seconds next to wall seconds: on a shared machine the wall clock also measures the others.
        metrics |= {"time/env_steps": self.env_steps, "time/wall_s": time.perf_counter() - self._start,
                    "time/cpu_s": time.process_time() - self._cpu_start, "time/eval_s": self.eval_time}  # fmt: skip
        self._history.append({"step": self.step, **metrics})
        run.log(self.step, metrics, samples, progress=progress)

    def _sample_rows(
        self, batch: EpisodeBatch, group_ids: torch.Tensor, advantages: torch.Tensor
    ) -> list[dict[str, Any]]:
        """The first ``log_sample_groups`` groups for ``samples.jsonl``: one "prompt" (the start state) and,
        per episode, a one-line summary, its return and its mean advantage over its steps."""
        count = self.config.logging.log_sample_groups
        if self.run_dir is None or count == 0:
            return []
        if advantages.dim() == 2:
            advantages = (advantages * batch.mask).sum(1) / batch.mask.sum(1)  # (N,)
        returns, lengths = batch.returns.tolist(), batch.lengths.tolist()
        rows = []
        for group in group_ids.unique().tolist()[:count]:
            members = (group_ids == group).nonzero().squeeze(1).tolist()
            starts = sorted({(batch.starts[i].seed, batch.starts[i].task) for i in members})
            rows.append({
                "prompt": "; ".join(f"seed {seed}" + ("" if task is None else f", task {task}") for seed, task in starts),
                "completions": [
                    f"{lengths[i]} steps, " + ("terminated" if batch.terminated[i] else "truncated") for i in members
                ],
                "rewards": [returns[i] for i in members],
                "advantages": [advantages[i].item() for i in members],
            })  # fmt: skip
        return rows

    def _modules(self) -> dict[str, nn.Module]:
        modules: dict[str, nn.Module] = {"policy": self.policy}
        if self.value_network is not None:
            modules["value"] = self.value_network
        if self.reference is not None:
            modules["reference"] = self.reference
        return modules

    def save_checkpoint(self, step: int) -> Path:
        """``RUN_DIR/checkpoints/step-XXXXXX``: the modules as safetensors, and the counters, optimizer, RNG."""
        state = {
            "step": step,
            "env_steps": self.env_steps,
            "wall_time": time.perf_counter() - self._start,
            "cpu_time": time.process_time() - self._cpu_start,
            "eval_time": self.eval_time,
            "optimizer": self.optimizer.state_dict(),
            "generator": self.generator.get_state(),
            "solved": list(self.solved) if self.solved is not None else None,
            **self.harness.state_dict(),
        }
        assert self.harness.checkpointer is not None, "save_checkpoint before harness.open"
        return self.harness.checkpointer.save(step, None, None, state, modules=self._modules())

    def _load(self, path: Path) -> None:
        state = ckpt.load_trainer_state(path)
        for name, module in self._modules().items():
            if not ckpt.load_module(module, path, name):
                raise ValueError(f"checkpoint {path} has no {name}.safetensors")
        self.optimizer.load_state_dict(state["optimizer"])
        self.generator.set_state(state["generator"])
        self.step = int(state["step"])
        self.env_steps = int(state["env_steps"])
        self.wall_offset = float(state["wall_time"])
        self.cpu_offset = float(state["cpu_time"])
        self.eval_time = float(state["eval_time"])
        solved = state.get("solved")  # absent from checkpoints written before it was recorded
        if solved is not None:
            self.solved = (int(solved[0]), int(solved[1]), float(solved[2]))
        self.harness.load_state_dict(state)


class EpisodeObjective:
    """The micro-batch loss of a batch of episodes (the engine's :class:`~grpokit.engine.update.Objective`).

    pi_old is exact here: the collector recorded each action's log-prob under the policy that acted, which is
    the policy before this update (no KV cache or other engine in between).
    """

    def __init__(
        self, trainer: RLTrainer, batch: EpisodeBatch, advantages: torch.Tensor, returns: torch.Tensor | None
    ):
        alg = trainer.config.algorithm
        self.trainer, self.batch, self.advantages, self.returns = trainer, batch, advantages, returns
        self.loss_type = "ppo" if trainer.is_ppo else alg.loss_type
        self.settings = LossSettings(
            beta=alg.beta, kl_estimator=alg.kl_estimator, epsilon_low=alg.epsilon_low,
            epsilon_high=alg.epsilon_high, ratio_level=alg.ratio_level, aggregation=alg.loss_aggregation,
            max_length=trainer.max_episode_steps, entropy_coef=alg.entropy_coef, vf_coef=alg.vf_coef,
            cliprange_value=alg.cliprange_value,
        )  # fmt: skip

    def pi_old(self) -> torch.Tensor:
        return self.batch.log_probs

    def micro_loss(self, rows: torch.Tensor, pi_old: torch.Tensor | None) -> MicroLoss:
        # The collector's log-probs are pi_old whether or not the engine froze it (pi_old() returns them).
        mb = self.batch.select(rows)
        T = mb.mask.shape[1]
        advantages = self.advantages[rows] if self.advantages.dim() == 1 else self.advantages[rows, :T]
        logprobs, entropy, logits = self.trainer._evaluate_actions(mb)  # (n, T), (n, T), (n, T, A) or None
        values = returns = None
        value_network = self.trainer.value_network
        if value_network is not None and self.returns is not None:
            values = _per_step(mb, lambda obs, real: value_network(obs))  # (n, T) with grad
            returns = self.returns[rows, :T]
        loss, metrics = compute_loss(
            self.loss_type,
            LossInputs(
                logprobs=logprobs, old_logprobs=mb.log_probs, advantages=advantages, mask=mb.mask,
                ref_logprobs=mb.ref_log_probs, logits=logits, entropy=entropy if logits is None else None,
                values=values, old_values=mb.values, returns=returns,
            ),
            self.settings,
        )  # fmt: skip
        with torch.no_grad():
            if "entropy" not in metrics:
                metrics["entropy"] = float(masked_mean(entropy.detach(), mb.mask))
            # KL(pi_old || pi_theta) with k3 on the sampled steps: cleanrl's approx_kl.
            metrics["approx_kl"] = float(
                masked_mean(kl_divergence(mb.log_probs, logprobs.detach(), "k3"), mb.mask)
            )
        return MicroLoss(loss, metrics, int(mb.mask.sum()))


def _scatter(flat: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
    """Values of the M real steps (M, *rest) into a zero-padded (n, T, *rest) tensor (keeps gradients)."""
    out = flat.new_zeros(real.shape + flat.shape[1:])
    out[real] = flat
    return out


def _per_step(batch: EpisodeBatch, fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]) -> torch.Tensor:
    """``fn(observations of the real steps (M, *obs_shape), real mask (N, T)) -> (M,)``, as (N, T)."""
    real = batch.mask > 0
    return _scatter(fn(batch.observations[real], real), real)


def _eval_metrics(returns: np.ndarray) -> dict[str, float]:
    return {
        "eval/return_mean": float(returns.mean()),
        "eval/return_std": float(returns.std()),
        "eval/return_min": float(returns.min()),
        "eval/return_max": float(returns.max()),
    }


def train(config: RLConfig, **kwargs: Any) -> RLResult:
    """Build an :class:`RLTrainer` (``kwargs`` as its constructor's) and run it."""
    return RLTrainer(config, **kwargs).train()
