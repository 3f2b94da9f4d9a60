"""PPO for Hugging Face causal LMs: the actor-critic baseline that GRPO drops the critic from.

PPO (Schulman et al. 2017, arXiv 1707.06347) as used for language models (Ziegler et al. 2019, arXiv
1909.08593; InstructGPT, Ouyang et al. 2022; TRL's PPO trainer). One training step::

    rows          = next(prompts)                                  B prompts (G = 1 completion each, classic)
    batch         = generate_rollouts(sampler, rows, G)            N = B*G completions from pi_old
    scores        = score(rewards, batch)                          (N,) rewards, or step rewards
    rollouts      = evaluate_rollouts(...)                         no-grad pi_old, pi_ref and V(s_t) passes;
                      r_t = -beta*KL_t + [t = last]*score            per-token rewards, KL inside (seed 000)
                      A_t, R_t = GAE(r, V; gamma, lambda)            (N, T) advantages and value targets
    advantages    = whiten(A)                                      (N, T)
    update        = update_policy_and_value(...)                   mu epochs of minibatch steps on
                      L = -L_clip + c_v * L_V - c_H * H              the policy and the value model
    beta          = kl_controller.update(KL per completion)        fixed or adaptive (target, horizon)

Generation, rewards, data, logging, checkpoints and the loop itself are shared with GRPO
(:class:`PPOTrainer` subclasses :class:`~grpokit.trainers.language_model.LanguageModelTrainer` and gives only
the phases that differ: collecting rollouts, advantages, the update). The maths is :mod:`grpokit.algorithms`'
(``kl_penalized_rewards``, ``gae``, ``masked_whiten``, ``policy_loss`` with (N, T) advantages,
``value_loss``, the KL controllers).

Choices and deviations, numbered:

1. pi_old for the KL reward is a full no-grad forward of the policy (not the sampler's KV-cached log-probs,
   whose rounding differs); it is also the ratio's pi_old when the batch gets several optimizer steps;
   with exactly one, the current log-probs detached (ratio exactly 1, as in the GRPO trainer).
2. The KL in the reward uses ``kl_estimator`` (k1 by default) on pi_old vs pi_ref; the loss itself has no KL
   term (``policy_loss(beta=0)``). Its logged ``kl`` metric is KL(pi_theta || pi_ref) with k3 whatever the
   reward's estimator: non-negative, and the same quantity GRPO logs by default.
3. A completion cut at ``max_new_tokens`` is treated as finished (V = 0 after its last token), as GRPO
   scores it; unscored completions (every reward None) are masked out of both losses and of whitening.
4. Process rewards (``rewards.process_reward_func``) put each step's score on its last token; the KL
   penalty is added on every token as for outcome rewards.
5. Policy and value model have separate AdamW optimizers (``value_learning_rate``, same schedule) and
   separate gradient clipping; one backward of ``L`` feeds both, so with a shared body the value loss also
   trains the body through the policy's optimizer.
6. The adaptive KL controller is updated once per step with the batch's mean per-completion KL
   (sum over tokens) and ``n_steps = N``, as Ziegler et al.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from grpokit.config import OptimConfig, PPOAlgorithmConfig, PPOConfig
from grpokit.engine import checkpoint as ckpt
from grpokit.engine.optimization import build_optimizer, build_scheduler
from grpokit.engine.parallel import DataParallel
from grpokit.engine.update import OptimizerSlot, UpdateStats, run_update
from grpokit.models.forward import per_token_no_grad, sequence_logprobs
from grpokit.models.reference import Reference
from grpokit.models.value import ValueModel, build_value_model
from grpokit.rewards import RewardScores
from grpokit.rollout.batch import COMPLETION_SIDE, RolloutBatch
from grpokit.tracking.timing import PhaseTimer
from grpokit.trainers.language_model import LanguageModelTrainer, TrainResult
from grpokit.trainers.objective import (
    LanguageModelObjective,
    ValueTargets,
    loss_settings,
    micro_batch_size,
    row_tokens,
    update_schedule,
)
from grpokit.trainers.phases import generate_rollouts, score
from grpokit.trainers.step_log import Generation

__all__ = [
    "PPORollouts",
    "PPOTrainer",
    "VALUE_MODEL_FILE",
    "evaluate_rollouts",
    "gae_targets",
    "sequence_values",
    "token_scores",
    "train",
    "update_policy_and_value",
]

VALUE_MODEL_FILE = "value_model"
"""Checkpoints and ``RUN_DIR/final`` hold the value model as ``value_model.safetensors`` (the head only when
it shares the policy's body)."""


@dataclass
class PPORollouts(RolloutBatch):
    """A :class:`RolloutBatch` completed by PPO's no-grad passes: everything the update reads.

    ``sampler_logprobs`` stay the sampler's own; ``ref_logprobs`` are the reference policy's (None when beta = 0).
    """

    # Every (N, T), completion-aligned (right-padded when batches are concatenated).
    pi_old_logprobs: torch.Tensor = field(kw_only=True, metadata=COMPLETION_SIDE)  # log pi_old, full forward
    values: torch.Tensor = field(kw_only=True, metadata=COMPLETION_SIDE)  # V(s_t) at rollout time
    token_rewards: torch.Tensor = field(
        kw_only=True, metadata=COMPLETION_SIDE
    )  # KL-penalised per-token rewards
    # per-token KL(pi_old || pi_ref) estimate; None when beta = 0
    kl: torch.Tensor | None = field(kw_only=True, metadata=COMPLETION_SIDE)
    advantages: torch.Tensor = field(
        kw_only=True, metadata=COMPLETION_SIDE
    )  # GAE advantages, before whitening
    returns: torch.Tensor = field(kw_only=True, metadata=COMPLETION_SIDE)  # value targets A_t + V(s_t)
    train_mask: torch.Tensor = field(kw_only=True, metadata=COMPLETION_SIDE)  # float, tokens in the losses


# ---------------------------------------------------------------------------------------------------------
# The phases that differ from GRPO
# ---------------------------------------------------------------------------------------------------------


def token_scores(scores: RewardScores, completion_mask: torch.Tensor) -> torch.Tensor:
    """The task's reward in the shape ``kl_penalized_rewards`` takes; unscored rows get 0 (they are masked).

    Args:
        scores: outcome rewards (N,), or step rewards (N, S) with their end-token indices (N, S).
        completion_mask: (N, T) 1 on real completion tokens.
    Returns:
        (N,) outcome scores, or (N, T) with each step's score on its last token (note 4).
    """
    N, T = completion_mask.shape
    scored = scores.scored.cpu()  # (N,)
    if scores.step_rewards is None or scores.step_ends is None:
        return torch.where(scored, scores.rewards.cpu(), torch.zeros(()))  # (N,)
    ends = scores.step_ends.cpu()  # (N, S), -1 = padding
    valid = (ends >= 0) & scored[:, None]  # (N, S)
    if bool((ends >= T).any()):
        raise ValueError(f"step_ends has an index >= T = {T}, the completion length")
    dense = torch.zeros(N, T)  # (N, T)
    dense.scatter_add_(1, ends.clamp(min=0), torch.where(valid, scores.step_rewards.cpu().float(), 0.0))
    return dense


def gae_targets(
    scores: torch.Tensor,
    pi_old_logprobs: torch.Tensor,
    ref_logprobs: torch.Tensor | None,
    values: torch.Tensor,
    completion_mask: torch.Tensor,
    *,
    beta: float,
    kl_estimator: str = "k1",
    gamma: float = 1.0,
    gae_lambda: float = 0.95,
) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor, torch.Tensor]:
    """Per-token rewards with the KL inside, then GAE: PPO's advantages and value targets.

    ``r_t = -beta * KL_t(pi_old || pi_ref) + [t = last] * score`` (``kl_penalized_rewards``), then
    ``A_t = sum_l (gamma * lambda)^l delta_{t+l}``, ``delta_t = r_t + gamma V(s_{t+1}) - V(s_t)``,
    ``R_t = A_t + V(s_t)`` (``gae``; Schulman et al., arXiv 1506.02438).

    Args:
        scores: (N,) outcome scores or (N, T) per-token scores (:func:`token_scores`).
        pi_old_logprobs: (N, T) log pi_old of the sampled tokens.
        ref_logprobs: (N, T) log pi_ref, or None when there is no reference (beta must then be 0).
        values: (N, T) V(s_t) at rollout time.
        completion_mask: (N, T) 1 on real tokens; every row has at least one.
    Returns:
        ``(token_rewards, kl, advantages, returns)``: (N, T) each, ``kl`` (the per-token estimate) None
        without a reference; all detached and 0 on padding.
    """
    from grpokit.algorithms import gae, kl_divergence, kl_penalized_rewards

    if ref_logprobs is None:
        if beta > 0:
            raise ValueError(
                f"beta={beta} > 0 needs ref_logprobs (the reference policy's log-probs); got None"
            )
        # No reference: the KL term vanishes, leaving the score alone (reference = pi_old, beta = 0).
        ref_for_reward, kl = pi_old_logprobs, None
    else:
        ref_for_reward = ref_logprobs
        real = completion_mask > 0
        kl = torch.where(real, kl_divergence(pi_old_logprobs, ref_logprobs, kl_estimator), 0.0)  # (N, T)
    token_rewards = kl_penalized_rewards(
        scores, pi_old_logprobs, ref_for_reward, completion_mask, beta, kl_estimator
    )  # (N, T)
    advantages, returns = gae(token_rewards, values, completion_mask, gamma, gae_lambda)  # (N, T) each
    return token_rewards, kl, advantages, returns


def sequence_values(value_model: ValueModel, batch: RolloutBatch, micro_batch_size: int) -> torch.Tensor:
    """(N, T) float32 V(s_t) of every completion token, no grad, ``micro_batch_size`` rows at a time."""
    return per_token_no_grad(value_model, batch, micro_batch_size, lambda inputs, rows: value_model(**inputs))


def evaluate_rollouts(
    batch: RolloutBatch,
    scores: RewardScores,
    *,
    policy: torch.nn.Module,
    value_model: ValueModel,
    reference: Reference | None,
    beta: float,
    algorithm: PPOAlgorithmConfig,
    micro_batch_size: int,
) -> PPORollouts:
    """Complete a scored batch with pi_old, pi_ref, V and the GAE targets (no gradient anywhere).

    Returns:
        :class:`PPORollouts` with every (N, T) field set (``ref_logprobs`` and ``kl`` None without a
        reference).
    """
    completion_mask = batch.completion_mask.cpu().float()  # (N, T)
    pi_old = sequence_logprobs(policy, batch, micro_batch_size)  # (N, T), note 1
    ref = sequence_logprobs(reference.model, batch, micro_batch_size) if reference is not None else None
    values = sequence_values(value_model, batch, micro_batch_size)  # (N, T)
    loss_mask = completion_mask * scores.scored.cpu()[:, None]  # (N, T), note 3
    if algorithm.overlong_filtering:
        loss_mask = loss_mask * (~batch.truncated.cpu())[:, None]
    token_rewards, kl, advantages, returns = gae_targets(
        token_scores(scores, completion_mask), pi_old, ref, values, completion_mask,
        beta=beta, kl_estimator=algorithm.kl_estimator, gamma=algorithm.gamma, gae_lambda=algorithm.gae_lambda,
    )  # fmt: skip
    fields = {f.name: getattr(batch, f.name) for f in dataclasses.fields(RolloutBatch)}
    fields["ref_logprobs"] = ref
    return PPORollouts(
        **fields, pi_old_logprobs=pi_old, values=values, token_rewards=token_rewards, kl=kl,
        advantages=advantages, returns=returns, train_mask=loss_mask,
    )  # fmt: skip


def whitened_advantages(
    rollouts: PPORollouts, whiten: bool, parallel: DataParallel | None = None
) -> torch.Tensor:
    """(N, T) advantages, normalised to mean 0 and variance 1 over the loss tokens when ``whiten``.

    With several processes the mean and the (unbiased) variance are those of every process's loss tokens,
    so W processes whiten as one would. Fewer than two loss tokens in all cannot be whitened (no variance);
    they are left as they are.
    """
    mask = rollouts.train_mask  # (N, T)
    advantages = torch.where(mask > 0, rollouts.advantages, 0.0)  # (N, T)
    if not whiten:
        return advantages
    dp = parallel if parallel is not None else DataParallel()
    sums = dp.all_reduce_sum(
        torch.stack([mask.sum().double(), advantages.double().sum(), (advantages.double() ** 2).sum()])
    )  # count, sum, sum of squares over every process
    count, total, squares = (float(v) for v in sums)
    if count < 2:
        return advantages
    mean = total / count
    var = max(squares - count * mean * mean, 0.0) / (count - 1)
    whitened = (rollouts.advantages - mean) / math.sqrt(var + 1e-8)
    return torch.where(mask > 0, whitened, 0.0).to(rollouts.advantages.dtype)


def update_policy_and_value(
    model: torch.nn.Module,
    value_model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    value_optimizer: torch.optim.Optimizer,
    rollouts: PPORollouts,
    advantages: torch.Tensor,
    *,
    algorithm: PPOAlgorithmConfig,
    optim: OptimConfig,
    max_new_tokens: int,
    parallel: DataParallel | None = None,
    policy: torch.nn.Module | None = None,
    value_model_owned: torch.nn.Module | None = None,
    rollout_importance: str | None = None,
) -> UpdateStats:
    """PPO's update of one batch: the engine's :func:`~grpokit.engine.update.run_update` on
    ``L = -L_clip + c_v * L_V - c_H * H`` (``algorithm.loss_type``, "ppo" by default), stepping the policy's
    and the value model's optimizers together (each clipped on its own parameters).

    Args:
        model, value_model: the policy and the value model as trained (accelerate's wrappers with several
            processes).
        rollouts: the N completed rollouts (:func:`evaluate_rollouts`); their ``pi_old_logprobs`` are pi_old.
        advantages: (N, T) detached advantages (whitened or not).
        policy: the plain policy (default ``model``); value_model_owned: the value model's own parameters'
            module (default ``value_model``; only the head when it shares the policy's body).
        rollout_importance: ``"token"``/``"sequence"``: truncated importance weights against the sampler's
            log-probs (a vLLM engine's), capped at ``algorithm.rollout_importance_cap``; None: none.
    Returns:
        The update's :class:`~grpokit.engine.update.UpdateStats` (the loss metrics, and the mean gradient norms
        ``grad_norm`` and ``value_grad_norm``).
    """
    dp = parallel if parallel is not None else DataParallel()
    model.eval()  # no dropout: pi_theta == pi_old before the first step
    value_model.eval()
    micro = micro_batch_size(optim, rollouts.num_responses, dp.world_size, rollouts)
    objective = LanguageModelObjective(
        model=model, policy=model if policy is None else policy, batch=rollouts, advantages=advantages,
        loss_mask=rollouts.train_mask, loss_type=algorithm.loss_type,
        settings=loss_settings(algorithm, max_new_tokens, kl_in_loss=False),
        ref_logprobs=rollouts.ref_logprobs,  # the kl metric only (note 2)
        value=ValueTargets(value_model, rollouts.values, rollouts.returns),
        micro_batch_size=micro, pi_old_logprobs=rollouts.pi_old_logprobs,
        rollout_importance=rollout_importance, rollout_importance_cap=algorithm.rollout_importance_cap,
    )  # fmt: skip
    owned = value_model if value_model_owned is None else value_model_owned
    stats = run_update(
        objective, rollouts.train_mask, aggregation=algorithm.loss_aggregation,
        optimizers=[
            OptimizerSlot(optimizer, [p for p in model.parameters() if p.requires_grad], optim.max_grad_norm),
            OptimizerSlot(
                value_optimizer, [p for p in owned.parameters() if p.requires_grad], optim.max_grad_norm,
                "value_grad_norm",
            ),
        ],
        schedule=update_schedule(algorithm, optim), models=[model, value_model], parallel=dp,
        row_tokens=row_tokens(rollouts),
    )  # fmt: skip
    stats.metrics.update(objective.metrics())  # logprobs/sampler_mismatch, as GRPO logs it
    return stats


# ---------------------------------------------------------------------------------------------------------
# The trainer
# ---------------------------------------------------------------------------------------------------------


class PPOTrainer(LanguageModelTrainer[PPOConfig]):
    """Trains ``config.model.name_or_path`` with PPO and a value model; see the module docstring.

    Everything but collecting rollouts, the advantages and the update is
    :class:`~grpokit.trainers.language_model.LanguageModelTrainer`'s: the same loop, sampler, rewards, prompts,
    logs and checkpoints (which also hold the value model).

    Args:
        config: a validated :class:`~grpokit.config.PPOConfig` (``model.name_or_path`` must be set).
        reward_funcs: Python reward callables to use instead of ``config.rewards.reward_funcs``.
        dataset: prompt rows to use instead of ``config.data``.
    """

    run_prefix = "ppo"

    def __init__(
        self,
        config: PPOConfig,
        *,
        reward_funcs: Sequence[Callable] | None = None,
        dataset: Sequence[dict[str, Any]] | None = None,
    ):
        if not isinstance(config, PPOConfig):
            raise ValueError(f"PPOTrainer needs a PPOConfig, got {type(config).__name__}")
        if config.checkpoint.resume is not None:  # before any model is loaded
            checkpoint = ckpt.find_checkpoint(config.checkpoint.resume, config.logging.output_dir)
            if not (checkpoint / f"{VALUE_MODEL_FILE}.safetensors").is_file():
                raise ValueError(
                    f"resume: checkpoint {str(checkpoint)!r} has no {VALUE_MODEL_FILE}.safetensors, so it is "
                    "not a PPO checkpoint; resume it with the trainer that wrote it"
                )
        super().__init__(config, reward_funcs=reward_funcs, dataset=dataset)
        if self.parallel.shards_optimizer:
            raise ValueError(
                f"PPO with {self.parallel.engine}: the policy and the value model would be two sharded engines; "
                "run PPO with DDP (several processes) or in one process"
            )
        from grpokit.algorithms import AdaptiveKLController, FixedKLController
        from grpokit.models.precision import enable_autocast

        algo = config.algorithm
        # A separate body is a copy of the policy's, so it keeps the policy's activation checkpointing.
        self.value_model = build_value_model(self.model, shared=algo.value_model == "shared")
        enable_autocast(self.value_model, config.model.mixed_precision)  # the policy's forward precision
        value_optim = config.optim.model_copy(
            update={"learning_rate": algo.value_learning_rate or config.optim.learning_rate}
        )
        self.value_optimizer = build_optimizer(self.value_model.owned, value_optim)
        self.value_scheduler = build_scheduler(self.value_optimizer, value_optim, config.max_steps)
        # With several processes the value model is DDP-wrapped like the policy (its gradients averaged).
        self.train_value_model, self.train_value_optimizer = self.parallel.prepare(
            self.value_model, self.value_optimizer
        )
        self.kl_controller = (
            AdaptiveKLController(algo.beta, algo.kl_target, algo.kl_horizon)
            if algo.adaptive_kl
            else FixedKLController(algo.beta)
        )
        if self.resumed_from is not None:
            self._restore_value(self.resumed_from)

    def micro_batch_size(self, batch: RolloutBatch | None = None) -> int:
        """Rows per no-grad forward pass: a (per-process) minibatch split into its gradient-accumulation
        micro-batches, and into ``optim.micro_batch_tokens`` at ``batch``'s longest row."""
        local_rows = self.config.num_responses // self.parallel.world_size
        return micro_batch_size(self.config.optim, local_rows, self.parallel.world_size, batch)

    # -- the phases ----------------------------------------------------------------------------------------

    def collect_rollouts(self, timer: PhaseTimer) -> tuple[PPORollouts, RewardScores, Generation]:
        """Generate and score B prompts x G completions, then the no-grad pi_old / pi_ref / V passes."""
        cfg, algo = self.config, self.config.algorithm
        rows = next(self.prompt_iter)
        with timer.phase("generate"):
            batch = generate_rollouts(self.sampler, rows, algo.num_generations, cfg.data.prompt_column)
        assert self.rewards is not None  # PPO runs without environments (config/trainers.py)
        with timer.phase("score"):
            scores = score(self.rewards, batch, cfg.rewards, cfg.generation.max_new_tokens)
        with timer.phase("forward"):
            rollouts = evaluate_rollouts(
                batch, scores, policy=self.model, value_model=self.value_model, reference=self.reference,
                beta=self.kl_controller.beta, algorithm=algo, micro_batch_size=self.micro_batch_size(batch),
            )  # fmt: skip
        return rollouts, scores, Generation(batch, scores)

    def compute_advantages(
        self, batch: RolloutBatch, scores: RewardScores
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The rollouts' GAE advantages, whitened over the loss tokens; and the loss mask. (N, T) each."""
        if not isinstance(batch, PPORollouts):
            raise ValueError("PPOTrainer.compute_advantages needs the PPORollouts of collect_rollouts")
        return whitened_advantages(
            batch, self.config.algorithm.whiten_advantages, self.parallel
        ), batch.train_mask

    def update_policy(
        self, batch: RolloutBatch, advantages: torch.Tensor, loss_mask: torch.Tensor
    ) -> UpdateStats:
        """Policy and value update, then both schedules step and the KL coefficient adapts (note 6)."""

        cfg, algo = self.config, self.config.algorithm
        if not isinstance(batch, PPORollouts):
            raise ValueError("PPOTrainer.update_policy needs the PPORollouts of collect_rollouts")
        stats = update_policy_and_value(
            self.train_model, self.train_value_model, self.train_optimizer, self.train_value_optimizer, batch,
            advantages, algorithm=algo, optim=cfg.optim, max_new_tokens=cfg.generation.max_new_tokens,
            parallel=self.parallel, policy=self.model, value_model_owned=self.value_model.owned,
            rollout_importance=self.rollout_importance,
        )  # fmt: skip
        update = stats.metrics  # PPO's own metrics join the loss's
        update["lr"] = float(self.scheduler.get_last_lr()[0])
        update["value_lr"] = float(self.value_scheduler.get_last_lr()[0])
        self.scheduler.step()
        self.value_scheduler.step()

        real = batch.completion_mask.cpu() > 0  # (N, T)
        update.update(self.value_fit(batch))
        update["kl_coef"] = self.kl_controller.beta
        if batch.kl is not None:
            # Every process's completions: the controller moves the same way on all of them.
            kl_sum, rows = (float(v) for v in self.parallel.all_reduce_sum(
                torch.tensor([float(torch.where(real, batch.kl, 0.0).sum()), float(batch.num_responses)])
            ))  # fmt: skip
            kl_per_completion = kl_sum / rows
            update["kl/rollout_per_completion"] = kl_per_completion
            update["rewards/kl_penalty/mean"] = -self.kl_controller.beta * kl_per_completion
            self.kl_controller.update(kl_per_completion, int(rows))
        return stats

    def value_fit(self, batch: PPORollouts) -> dict[str, float]:
        """``explained_variance`` of the rollout-time values (``1 - Var[R - V] / Var[R]`` over the loss tokens,
        population variances as cleanrl) and ``returns/mean``, over every process's tokens."""
        loss = batch.train_mask > 0  # (N, T)
        returns, residual = batch.returns[loss].double(), (batch.returns - batch.values)[loss].double()
        sums = self.parallel.all_reduce_sum(
            torch.stack([
                torch.tensor(float(returns.numel()), dtype=torch.float64), returns.sum(), (returns**2).sum(),
                residual.sum(), (residual**2).sum(),
            ])
        )  # fmt: skip
        n, r_sum, r_sq, e_sum, e_sq = (float(v) for v in sums)
        if n == 0:
            return {}
        var_returns = r_sq / n - (r_sum / n) ** 2
        var_residual = e_sq / n - (e_sum / n) ** 2
        explained = 1.0 - var_residual / var_returns if var_returns > 0 else math.nan
        return {"explained_variance": explained, "returns/mean": r_sum / n}

    def release_wrappers(self) -> None:
        super().release_wrappers()
        self.train_value_model, self.train_value_optimizer = self.value_model, self.value_optimizer

    # -- checkpoints -------------------------------------------------------------------------------------

    def checkpoint_modules(self) -> dict[str, torch.nn.Module]:
        return {VALUE_MODEL_FILE: self.value_model.owned}

    def state_dict(self, step: int) -> dict[str, Any]:
        state = super().state_dict(step)
        state["value_optimizer"] = self.value_optimizer.state_dict()
        state["value_scheduler"] = self.value_scheduler.state_dict()
        state["kl_controller"] = self.kl_controller.state_dict()
        return state

    def _restore_value(self, checkpoint: Path) -> None:
        """The value model, its optimizer and schedule, and the KL coefficient of a PPO checkpoint."""
        ckpt.load_module(self.value_model.owned, checkpoint, VALUE_MODEL_FILE)  # presence checked in __init__
        state = ckpt.load_trainer_state(checkpoint)
        self.value_optimizer.load_state_dict(state["value_optimizer"])
        self.value_scheduler.load_state_dict(state["value_scheduler"])
        self.kl_controller.load_state_dict(state["kl_controller"])


def train(config: PPOConfig, **kwargs: Any) -> TrainResult:
    """Run PPO as configured (``model.name_or_path`` must be set)."""
    return PPOTrainer(config, **kwargs).train()
