"""The update of a language-model trainer (GRPO's and PPO's) on the engine.

:class:`LanguageModelObjective` is the algorithm-specific half of :func:`grpokit.engine.update.run_update`:
a micro-batch's forward with gradient (policy log-probs, and the value model's values for PPO), then the
registered loss named by ``algorithm.loss_type`` (``grpokit.algorithms.objectives``). Minibatching,
accumulation, pi_old, the non-finite guard and data-parallel normalisation are the engine's.
:func:`update_policy` is GRPO's whole update in one call.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch

from grpokit.algorithms import LossInputs, LossSettings, compute_loss, masked_mean
from grpokit.config import GRPOAlgorithmConfig, OptimConfig
from grpokit.engine.parallel import DataParallel
from grpokit.engine.update import MicroLoss, OptimizerSlot, UpdateSchedule, UpdateStats, run_update
from grpokit.models.forward import TokenBatch, batch_to, policy_forward, sequence_logprobs
from grpokit.models.reference import Reference
from grpokit.rollout.batch import RolloutBatch
from grpokit.trainers.rollout_engine import rollout_importance_weights

__all__ = [
    "LanguageModelObjective",
    "ValueTargets",
    "loss_settings",
    "micro_batch_size",
    "row_tokens",
    "update_policy",
    "update_schedule",
]


@dataclass
class ValueTargets:
    """PPO's value-loss inputs for the whole batch: the value model (trained) and its targets, (N, T)."""

    model: torch.nn.Module  # (wrapped) value model: (**inputs) -> (n, T) values
    old_values: torch.Tensor  # (N, T) V(s_t) at rollout time
    returns: torch.Tensor  # (N, T) targets A_t + V(s_t)


class LanguageModelObjective:
    """The micro-batch loss of a batch of N completions.

    Args:
        model: the policy as trained (DDP/DeepSpeed-wrapped or plain).
        policy: the plain policy, for the no-grad pi_old pass.
        batch: the N rollouts; ``temperatures`` give the distribution each row was sampled from.
        advantages: (N,) or (N, T), detached.
        loss_mask: (N, T) 1 on tokens that enter the loss.
        loss_type: a registered ``"loss"`` name.
        settings: the loss's hyper-parameters.
        ref_logprobs: (N, T) log pi_ref of the sampled tokens, or None without a reference.
        rollout_importance: ``"token"``/``"sequence"``: weight the surrogate by ``min(pi_old / pi_sampler, C)``
            against the sampler's log-probs (``batch.sampler_logprobs``); None: no weights.
        rollout_importance_cap: C.
        value: PPO's value model and targets; None for GRPO.
        micro_batch_size: rows per no-grad forward.
        pi_old_logprobs: (N, T) pi_old already computed by the trainer (PPO needs it for its KL reward);
            None: computed when the engine asks.
    """

    def __init__(
        self,
        *,
        model: torch.nn.Module,
        policy: torch.nn.Module,
        batch: RolloutBatch,
        advantages: torch.Tensor,
        loss_mask: torch.Tensor,
        loss_type: str,
        settings: LossSettings,
        ref_logprobs: torch.Tensor | None = None,
        rollout_importance: str | None = None,
        rollout_importance_cap: float = 2.0,
        value: ValueTargets | None = None,
        micro_batch_size: int = 1,
        pi_old_logprobs: torch.Tensor | None = None,
    ):
        self.model, self.policy, self.batch = model, policy, batch
        self.advantages, self.loss_mask = advantages, loss_mask
        self.loss_type, self.settings = loss_type, settings
        self.ref_logprobs = ref_logprobs
        self.rollout_importance, self.rollout_importance_cap = rollout_importance, rollout_importance_cap
        self.value = value
        self.micro_batch_size = micro_batch_size
        self.precomputed_pi_old = pi_old_logprobs
        self.device = next(policy.parameters()).device
        self.need_logits = settings.entropy_coef > 0
        # |log pi_old - log pi_sampler| over the loss tokens, before any weight moved (KV-cached decoding
        # rounds differently from a full forward): logged as logprobs/sampler_mismatch.
        self.mismatch_sum, self.mismatch_tokens = 0.0, 0.0

    def pi_old(self) -> torch.Tensor:
        """(N, T) log pi_old: the policy before this update, one no-grad pass (or the trainer's own)."""
        pi_old = self.precomputed_pi_old
        if pi_old is None:
            pi_old = sequence_logprobs(self.policy, self.batch, self.micro_batch_size)
        self._measure_mismatch(pi_old, self.loss_mask)
        return pi_old

    def micro_loss(self, rows: torch.Tensor, pi_old: torch.Tensor | None) -> MicroLoss:
        inputs = batch_to(self.batch, rows, self.device)
        T = inputs["completion_ids"].shape[1]
        mask = self.loss_mask[rows, :T].to(self.device)  # (n, T')
        temperatures = self.batch.temperatures[rows].to(self.device)
        logprobs, logits, entropy = policy_forward(
            self.model, inputs, temperatures, need_logits=self.need_logits
        )
        tokens = int(inputs["prompt_mask"].sum() + inputs["completion_mask"].sum())
        if mask.sum() == 0:  # another process has loss tokens here: join its gradient sync with a zero loss
            zero = logprobs.sum() * 0.0
            if self.value is not None:
                zero = zero + self.value.model(**inputs).sum() * 0.0
            return MicroLoss(zero, {}, tokens)
        if pi_old is None:  # the batch's only optimizer step: the current policy is pi_old
            old = logprobs.detach()
            self._measure_mismatch(old.cpu(), self.loss_mask[rows, :T], rows)
        else:
            old = pi_old[rows, :T].to(self.device)
        adv = self.advantages[rows] if self.advantages.dim() == 1 else self.advantages[rows, :T]
        weights: torch.Tensor | None = None
        is_metrics: dict[str, float] = {}
        if self.rollout_importance is not None:
            sampler = self.batch.sampler_logprobs
            weights, is_metrics = rollout_importance_weights(
                old, None if sampler is None else sampler[rows, :T].to(self.device), mask,
                self.rollout_importance, self.rollout_importance_cap,
            )  # fmt: skip
        values = old_values = returns = None
        if self.value is not None:
            values = self.value.model(**inputs)  # (n, T') with grad
            old_values = self.value.old_values[rows, :T].to(self.device)
            returns = self.value.returns[rows, :T].to(self.device)
        ref = None if self.ref_logprobs is None else self.ref_logprobs[rows, :T].to(self.device)
        loss, metrics = compute_loss(
            self.loss_type,
            LossInputs(
                logprobs=logprobs, old_logprobs=old, advantages=adv.to(self.device), mask=mask,
                ref_logprobs=ref, logits=logits, importance_weights=weights,
                values=values, old_values=old_values, returns=returns,
            ),
            self.settings,
        )  # fmt: skip
        metrics.update(is_metrics)
        metrics.pop("explained_variance", None)  # per micro-batch it is noise; PPO logs the batch's
        if entropy is not None:
            metrics["entropy"] = masked_mean(entropy.detach(), mask).item()
        return MicroLoss(loss, metrics, tokens)

    def metrics(self) -> dict[str, float]:
        """What the objective measured besides the loss (``logprobs/sampler_mismatch``)."""
        if not self.mismatch_tokens:
            return {}
        return {"logprobs/sampler_mismatch": self.mismatch_sum / self.mismatch_tokens}

    def _measure_mismatch(
        self, pi_old: torch.Tensor, mask: torch.Tensor, rows: torch.Tensor | None = None
    ) -> None:
        sampler = self.batch.sampler_logprobs
        if sampler is None:
            return
        sampler = sampler.cpu() if rows is None else sampler.cpu()[rows]
        T = pi_old.shape[1]
        mask = mask[:, :T].float()
        self.mismatch_sum += float(((pi_old.float() - sampler[:, :T].float()).abs() * mask).sum())
        self.mismatch_tokens += float(mask.sum())


def loss_settings(algorithm: Any, max_length: int | None, *, kl_in_loss: bool = True) -> LossSettings:
    """The loss hyper-parameters of an ``algorithm`` section (one set of names for every trainer).

    ``kl_in_loss=False`` (PPO, whose KL penalty is in the reward): no KL term, and the logged ``kl`` uses k3.
    """
    return LossSettings(
        beta=algorithm.beta if kl_in_loss else 0.0,
        kl_estimator=algorithm.kl_estimator if kl_in_loss else "k3",
        epsilon_low=algorithm.epsilon_low,
        epsilon_high=algorithm.epsilon_high,
        ratio_level=algorithm.ratio_level,
        aggregation=algorithm.loss_aggregation,
        max_length=max_length,
        entropy_coef=algorithm.entropy_coef,
        vf_coef=getattr(algorithm, "vf_coef", 0.0),
        cliprange_value=getattr(algorithm, "cliprange_value", None),
    )


def update_schedule(algorithm: Any, optim: OptimConfig) -> UpdateSchedule:
    """How a generation batch becomes optimizer steps: mu passes of ``mini_batch_size`` minibatches."""
    return UpdateSchedule(
        num_iterations=algorithm.num_iterations,
        mini_batch_size=optim.mini_batch_size,
        gradient_accumulation_steps=optim.gradient_accumulation_steps,
        shuffle=optim.shuffle_minibatches,
        micro_batch_tokens=optim.micro_batch_tokens,
    )


def row_tokens(batch: TokenBatch) -> torch.Tensor:
    """(N,) prompt + completion tokens of each row: what ``optim.micro_batch_tokens`` counts."""
    return (batch.prompt_mask.sum(1) + batch.completion_mask.sum(1)).long()


def micro_batch_size(
    optim: OptimConfig, num_rows: int, world_size: int = 1, batch: TokenBatch | None = None
) -> int:
    """Rows per no-grad forward pass: a (per-process) minibatch split into its gradient-accumulation
    micro-batches, and with ``batch`` given, no more rows than ``optim.micro_batch_tokens`` holds at the
    batch's longest row (each row's prompt + completion tokens)."""
    minibatch = (optim.mini_batch_size or num_rows * world_size) // world_size
    rows = max(1, math.ceil(minibatch / optim.gradient_accumulation_steps))
    if optim.micro_batch_tokens is not None and batch is not None and batch.prompt_mask.shape[0]:
        longest = int(row_tokens(batch).max())
        rows = min(rows, max(1, optim.micro_batch_tokens // max(longest, 1)))
    return rows


def update_policy(
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    batch: RolloutBatch,
    advantages: torch.Tensor,
    loss_mask: torch.Tensor,
    *,
    algorithm: GRPOAlgorithmConfig,
    optim: OptimConfig,
    max_new_tokens: int,
    reference: Reference | None = None,
    parallel: DataParallel | None = None,
    rollout_importance: str | None = None,
    policy: torch.nn.Module | None = None,
) -> UpdateStats:
    """GRPO's update of one generation batch: the engine's :func:`~grpokit.engine.update.run_update` with the
    loss named by ``algorithm.loss_type``.

    Args:
        model: the policy as trained (accelerate's wrapper with several processes).
        batch: this process's N rollouts.
        advantages: (N,) or (N, T) detached advantages.
        loss_mask: (N, T) 1 on tokens that enter the loss.
        rollout_importance: ``"token"`` or ``"sequence"``: weight each surrogate by the truncated importance
            weight ``min(pi_old / pi_sampler, algorithm.rollout_importance_cap)`` against the sampler's
            log-probs; None: no weights.
        policy: the plain (unwrapped) policy for no-grad passes; default ``model``.
    Returns:
        The update's :class:`~grpokit.engine.update.UpdateStats`, ``logprobs/sampler_mismatch`` among its
        metrics.
    """
    policy = model if policy is None else policy
    dp = parallel if parallel is not None else DataParallel()
    model.eval()  # note 2: no dropout, so pi_theta == pi_old before the first step
    micro = micro_batch_size(optim, batch.num_responses, dp.world_size, batch)
    ref = None  # (N, T) log pi_ref
    if reference is not None:  # asynchronous rollouts bring it along (trainers/async_rollouts.py)
        ref = batch.ref_logprobs
        if ref is None:
            ref = sequence_logprobs(reference.model, batch, micro)
    objective = LanguageModelObjective(
        model=model, policy=policy, batch=batch, advantages=advantages, loss_mask=loss_mask,
        loss_type=algorithm.loss_type, settings=loss_settings(algorithm, max_new_tokens), ref_logprobs=ref,
        rollout_importance=rollout_importance, rollout_importance_cap=algorithm.rollout_importance_cap,
        micro_batch_size=micro,
    )  # fmt: skip
    params = [p for p in model.parameters() if p.requires_grad]
    stats = run_update(
        objective, loss_mask, aggregation=algorithm.loss_aggregation,
        optimizers=[OptimizerSlot(optimizer, params, optim.max_grad_norm)],
        schedule=update_schedule(algorithm, optim), models=[model], parallel=dp, row_tokens=row_tokens(batch),
    )  # fmt: skip
    stats.metrics.update(objective.metrics())
    return stats
