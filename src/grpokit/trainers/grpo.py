"""GRPO for Hugging Face causal LMs: Group Relative Policy Optimization (Shao et al., DeepSeekMath, 2024,
arXiv 2402.03300), with the DAPO (arXiv 2503.14476) and Dr. GRPO (arXiv 2503.20783) options.

One training step, as :meth:`GRPOTrainer.train` reads::

    rows            = next(prompts)                          B prompts
    batch           = generate_rollouts(sampler, rows, G)    N = B*G completions from pi_old = pi_theta
    scores          = score(rewards, batch)                  (N,) rewards, or (N, S) step rewards
    advantages      = compute_advantages(batch, scores)      (N,) group-relative, or (N, T) per token
    update_metrics  = update_policy(...)                     mu passes of clipped-loss minibatch steps
    log(...); checkpoint                                     metrics.jsonl, samples.jsonl, TensorBoard

Choices and deviations from the paper, numbered:

1. pi_old is the policy that generated the batch. With ``num_iterations == 1`` the old log-probs are the
   current log-probs detached (ratio exactly 1, no extra forward); with more, they are computed once,
   without grad, before the first update. The sampler's own log-probs are not used as pi_old (KV-cached
   decoding differs from a full forward by rounding); their gap is logged as ``logprobs/sampler_mismatch``.
2. The policy stays in eval mode (no dropout) during the update, so the ratio is 1 before the first step.
3. The reference model exists only when ``beta > 0``: a frozen copy of the initial policy, re-synced every
   ``ref_model_sync_steps`` steps when set (the paper's iterative GRPO also retrains the reward model; not here).
4. A sample no reward function applies to (all ``None``) is left out of its group's baseline and masked out
   of the loss; DAPO's overlong filtering masks truncated completions out of the loss but keeps them in the
   baseline.
5. Dynamic sampling (DAPO) keeps only groups whose scored rewards differ, drawing new prompts for at most
   ``max_dynamic_sampling_rounds`` extra rounds; a step that cannot fill B groups trains on those it has.
6. The learning-rate schedule advances once per training step, not per optimizer step, so warmup is
   counted in generation batches whatever the minibatching.
7. Faults (``docs/reliability.md``): an optimizer step with a non-finite loss or gradient norm is skipped
   and counted; SIGTERM/SIGINT finish the step, checkpoint it and stop; an out-of-memory error checkpoints
   the last completed step when no weight has changed since. A resumed run is the uninterrupted run: the
   checkpoint holds every RNG, the data position and the counters, and log rows after it are dropped.
8. ``generation.backend: vllm`` samples with a vLLM engine on a copy of the weights, pushed into it after
   every step, and weights the surrogate by truncated importance weights ``min(pi_old / pi_rollout, C)``
   against the engine's log-probs (``trainers/rollout_engine.py``, ``docs/vllm.md``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import torch

from grpokit.algorithms import LossSettings
from grpokit.config import GRPOAlgorithmConfig, GRPOConfig, OptimConfig, build_config
from grpokit.engine import checkpoint as ckpt
from grpokit.engine import faults
from grpokit.engine.harness import RunHarness
from grpokit.engine.optimization import build_optimizer, build_scheduler
from grpokit.engine.parallel import DataParallel
from grpokit.engine.runs import resolve_device, seed_everything
from grpokit.engine.update import OptimizerSlot, UpdateSchedule, run_update
from grpokit.models.forward import sequence_logprobs
from grpokit.models.reference import ReferencePolicy
from grpokit.rewards import RewardPipeline, RewardScores, soft_overlong_penalty
from grpokit.rewards.failures import RewardFailurePolicy
from grpokit.rollout.batch import RolloutBatch
from grpokit.tracking import peak_memory_mb
from grpokit.tracking.timing import PhaseTimer
from grpokit.trainers.objective import LanguageModelObjective
from grpokit.trainers.rollout_engine import (
    build_sampler,
    check_rollout_backend,
    close_sampler,
    rollout_importance_level,
    sync_sampler_weights,
)
from grpokit.trainers.sharding import ShardedSampler, gather_group_advantages, gather_step

__all__ = [
    "GRPOTrainer",
    "TrainResult",
    "compute_advantages",
    "generate_rollouts",
    "informative_groups",
    "score",
    "train",
    "update_policy",
]


@dataclass
class StepRecord:
    """What one step produced, for logging."""

    batch: RolloutBatch  # the N training rollouts
    scores: RewardScores  # their scores
    generated: dict[str, Any]  # everything generated this step ("batch", "scores") and sampling info
    advantages: torch.Tensor  # (N,) or (N, T)
    loss_mask: torch.Tensor  # (N, T)
    update: dict[str, float]  # update_policy's metrics
    timer: PhaseTimer


@dataclass
class TrainResult:
    """Where a finished run lives and its last logged metrics."""

    run_dir: Path
    final_dir: Path
    last_metrics: dict[str, Any]


# ---------------------------------------------------------------------------------------------------------
# The phases of a step
# ---------------------------------------------------------------------------------------------------------


def generate_rollouts(
    sampler: Any, rows: list[dict[str, Any]], num_generations: int, prompt_column: str
) -> RolloutBatch:
    """G completions for each of the B prompt rows; every other column rides along for the rewards."""
    prompts = [row[prompt_column] for row in rows]
    columns = {key: [row.get(key) for row in rows] for key in rows[0] if key != prompt_column}
    return sampler.generate(prompts, num_generations, columns)


def score(pipeline: RewardPipeline, batch: RolloutBatch, rewards: Any, max_new_tokens: int) -> RewardScores:
    """Rewards of every completion, plus DAPO's soft overlong punishment when ``rewards.overlong_buffer_length``.

    The penalty goes where the advantages come from: added to the outcome reward, or with process rewards to
    the reward of each completion's last step (the one its final token closes).
    """
    scores = pipeline.score(batch)
    if rewards.overlong_buffer_length > 0:
        lengths = batch.completion_mask.sum(1).cpu()  # (N,)
        penalty = soft_overlong_penalty(
            lengths, max_new_tokens, rewards.overlong_buffer_length, rewards.overlong_penalty
        )  # (N,)
        if scores.step_rewards is None:
            scores.rewards = torch.where(scores.scored, scores.rewards + penalty, scores.rewards)
        else:
            ends = scores.step_ends  # (N, S), -1 = padding
            last = torch.where(ends >= 0, torch.arange(ends.shape[1]), -1).max(1).values  # (N,) last step
            rows = (scores.scored & (last >= 0)).nonzero().squeeze(1)
            step_rewards = scores.step_rewards.clone()
            step_rewards[rows, last[rows]] += penalty[rows].to(step_rewards.dtype)
            scores.step_rewards = step_rewards
        scores.metrics["rewards/overlong_penalty/mean"] = penalty.mean().item()
    return scores


def informative_groups(scores: RewardScores, group_ids: torch.Tensor) -> torch.Tensor:
    """(N,) bool: rows of groups that carry a learning signal.

    Outcome rewards: the group's scored rewards are not all equal. Process rewards: the group's scored step
    rewards are not all equal (they are normalised over the group, so equal ones give zero advantages).
    """
    group_ids = group_ids.cpu()
    keep = torch.zeros_like(scores.scored)
    for g in group_ids.unique():
        rows = group_ids == g
        if scores.step_rewards is None:
            values = scores.rewards[rows & scores.scored]  # scored rewards of group g
            keep[rows] = values.numel() >= 2 and bool((values != values[0]).any())
        else:
            members = rows & scores.scored
            values = scores.step_rewards[members][scores.step_ends[members] >= 0]  # every step of group g
            keep[rows] = values.numel() >= 2 and bool((values != values[0]).any())
    return keep


def compute_advantages(
    batch: RolloutBatch,
    scores: RewardScores,
    algorithm: GRPOAlgorithmConfig,
    parallel: DataParallel | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Group-relative advantages and the loss mask.

    Outcome rewards give (N,) advantages from ``algorithms.group_advantages`` over the *scored* rows of each
    group; process rewards give (N, T) ones from ``algorithms.process_advantages``. Unscored rows get 0 and
    are masked out, as are truncated completions under overlong filtering.

    Returns:
        ``(advantages, loss_mask)``: (N,) or (N, T) float32, and (N, T) float32.
    """
    from grpokit.algorithms import process_advantages

    scored = scores.scored  # (N,)
    completion_mask = batch.completion_mask.cpu().float()  # (N, T)
    loss_mask = completion_mask * scored[:, None]  # (N, T)
    if algorithm.overlong_filtering:
        loss_mask = loss_mask * (~batch.truncated.cpu())[:, None]
    group_ids = batch.group_ids.cpu()
    rows = scored.nonzero().squeeze(1)  # (N',)
    if scores.step_rewards is not None:
        advantages = torch.zeros_like(completion_mask)  # (N, T)
        if rows.numel():
            advantages[rows] = process_advantages(
                scores.step_rewards[rows],
                scores.step_ends[rows],
                completion_mask[rows],
                group_ids[rows],
                eps=algorithm.advantage_eps,
            )  # (N', T)
    else:
        advantages = torch.zeros(batch.num_responses)  # (N,)
        # With several processes the estimator runs on every process's rewards (groups are whole anyway, but
        # batch-level estimators need the whole batch), so each process joins the gather.
        if rows.numel() or (parallel is not None and parallel.is_distributed):
            advantages[rows] = gather_group_advantages(
                scores.rewards[rows],
                group_ids[rows],
                algorithm.advantage_estimator,
                algorithm.advantage_eps,
                parallel=parallel,
            )  # (N',)
    return advantages, loss_mask


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
    )


def micro_batch_size(optim: OptimConfig, num_rows: int, world_size: int = 1) -> int:
    """Rows per forward pass: a (per-process) minibatch split into its gradient-accumulation micro-batches."""
    minibatch = (optim.mini_batch_size or num_rows * world_size) // world_size
    return max(1, math.ceil(minibatch / optim.gradient_accumulation_steps))


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
    reference: ReferencePolicy | None = None,
    parallel: DataParallel | None = None,
    rollout_importance: str | None = None,
    policy: torch.nn.Module | None = None,
) -> dict[str, float]:
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
        The update's metrics (:meth:`~grpokit.engine.update.UpdateStats.as_metrics`) and
        ``logprobs/sampler_mismatch``.
    """
    policy = model if policy is None else policy
    dp = parallel if parallel is not None else DataParallel()
    model.eval()  # note 2: no dropout, so pi_theta == pi_old before the first step
    micro = micro_batch_size(optim, batch.num_responses, dp.world_size)
    ref = sequence_logprobs(reference.model, batch, micro) if reference is not None else None  # (N, T)
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
        schedule=update_schedule(algorithm, optim), models=[model], parallel=dp,
    )  # fmt: skip
    return {**stats.as_metrics(), **objective.metrics()}


def _select_scores(scores: RewardScores, rows: torch.Tensor) -> RewardScores:
    idx = rows.tolist()
    return RewardScores(
        rewards=scores.rewards[rows],
        scored=scores.scored[rows],
        per_function={k: [v[i] for i in idx] for k, v in scores.per_function.items()},
        metrics=scores.metrics,
        step_rewards=None if scores.step_rewards is None else scores.step_rewards[rows],
        step_ends=None if scores.step_ends is None else scores.step_ends[rows],
    )


# ---------------------------------------------------------------------------------------------------------
# The trainer
# ---------------------------------------------------------------------------------------------------------


class GRPOTrainer:
    """Trains ``config.model.name_or_path`` with GRPO; see the module docstring for the step.

    Args:
        config: a validated :class:`GRPOConfig` (``model.name_or_path`` must be set; the demo sets it).
        reward_funcs: Python reward callables to use instead of ``config.rewards.reward_funcs`` (weights,
            if configured, must match their number).
        dataset: prompt rows (dicts with the prompt column) to use instead of ``config.data``.
    """

    run_prefix = "grpo"
    """Default run directory name prefix (``<prefix>-<date>-<time>``)."""

    def __init__(
        self,
        config: GRPOConfig,
        *,
        reward_funcs: Sequence[Callable] | None = None,
        dataset: Sequence[dict[str, Any]] | None = None,
    ):
        if config.model.name_or_path is None:
            raise ValueError(
                "model.name_or_path is unset: set --model, or run the built-in demo with `grpokit train`"
            )
        # Everything that can fail on user input is checked before the model is loaded, the config first
        # (again: a config changed with model_copy(update=...) was never validated).
        config = build_config(type(config), config.model_dump())
        self.config = config
        cfg = config
        # Run directory, checkpoints, logs, signals: the harness; the checkpoint to resume is found first.
        self.harness = RunHarness(
            cfg, prefix=self.run_prefix, max_consecutive_nonfinite=cfg.optim.max_consecutive_nonfinite
        )
        resume_from = self.harness.resume_from
        self.dataset = _load_dataset(cfg, dataset, config_rewards=reward_funcs is None)

        seed_everything(cfg.seed)
        # One process, or one of several started by accelerate launch (engine/parallel.py).
        self.parallel = DataParallel.from_config(cfg)
        check_rollout_backend(cfg, self.parallel)
        self.device = self.parallel.device or resolve_device(cfg.model.device)
        from grpokit.models.loading import load_model, load_tokenizer
        from grpokit.models.lora import AdapterDisabledReference, is_lora_model, load_policy
        from grpokit.models.memory import enable_gradient_checkpointing
        from grpokit.models.precision import enable_autocast

        self.tokenizer = load_tokenizer(cfg.model.tokenizer_name_or_path or cfg.model.name_or_path)
        self.dataset, self.data_counts = self._screen_prompt_lengths(self.dataset)
        self.model = load_policy(cfg.model, resume_from, device=self.device)  # LoRA-wrapped when model.lora.r
        # Speed and memory options, before the reference copy (which inherits them); docs/benchmarks.md.
        autocast_dtype = enable_autocast(self.model, cfg.model.mixed_precision)
        if cfg.optim.gradient_checkpointing:
            enable_gradient_checkpointing(self.model)
        if reward_funcs is not None:
            policy = RewardFailurePolicy(
                cfg.rewards.reward_failure, cfg.rewards.reward_fallback_value, cfg.rewards.reward_timeout_s
            )
            self.rewards = RewardPipeline(
                list(reward_funcs),
                cfg.rewards.reward_weights,
                tokenizer=self.tokenizer,
                failure_policy=policy,
            )
        else:
            self.rewards = RewardPipeline.from_config(
                cfg.rewards,
                task=cfg.data.task,
                max_new_tokens=cfg.generation.max_new_tokens,
                tokenizer=self.tokenizer,
                device=self.device,
            )
        self.reference = None
        if cfg.algorithm.beta > 0 and is_lora_model(self.model):
            # The initial policy is the base model: the policy itself with its adapters disabled, no copy.
            self.reference = AdapterDisabledReference(self.model)
        elif cfg.algorithm.beta > 0:
            # The reference is the *initial* policy: on resume it comes from the checkpoint, not the weights.
            self.reference = ReferencePolicy(self.model, cfg.algorithm.ref_model_sync_steps)
            if resume_from is not None and not ckpt.load_reference(self.reference.model, resume_from):
                with ckpt.quiet_transformers():
                    initial = load_model(cfg.model.name_or_path, dtype=cfg.model.dtype, device=self.device)
                self.reference.model.load_state_dict(initial.state_dict())
                del initial

        from grpokit.data import PromptIterator

        self.prompt_iter = PromptIterator(
            self.dataset, cfg.data.prompts_per_step, seed=cfg.seed, shuffle=cfg.data.shuffle
        )
        # generation.backend: the policy itself (transformers) or a vLLM engine on a copy of its weights.
        sampler = build_sampler(self.model, self.tokenizer, cfg, autocast_dtype=autocast_dtype)
        self.rollout_importance = rollout_importance_level(cfg)  # "token", "sequence" or None (note 8)
        # Samples this process's groups of each batch (all of them with one process).
        self.sampler = ShardedSampler(
            sampler, self.parallel, seed=cfg.seed, per_group_seed=cfg.generation.per_group_seed
        )
        self.optimizer = build_optimizer(self.model, cfg.optim)
        self.scheduler = build_scheduler(self.optimizer, cfg.optim, cfg.max_steps)
        # Counts optimizer steps, so an out-of-memory error knows whether the weights changed in its step.
        self.optimizer_steps_taken = 0
        self.optimizer.register_step_post_hook(self._count_optimizer_step)
        # Gradients flow through the (DDP / DeepSpeed) wrappers; sampling and saving use the plain model.
        self.train_model, self.train_optimizer = self.parallel.prepare(self.model, self.optimizer)
        self.start_step = 0
        self.resumed_from = resume_from  # the checkpoint this run continues, for subclasses' own state
        if resume_from is not None:
            self._restore(resume_from)
        self.harness.parallel = self.parallel
        self.run_dir = self.harness.open(self.start_step)  # rewound to the checkpoint when resuming

    # -- the loop ----------------------------------------------------------------------------------------

    def train(self) -> TrainResult:
        """Run steps ``start_step + 1 .. max_steps``, then save ``RUN_DIR/final``.

        Raises:
            faults.TrainingAborted: SIGTERM/SIGINT (after checkpointing the finished step), out of memory
                (after checkpointing the last completed step when the weights had not changed since), or
                ``max_consecutive_nonfinite`` skipped updates in a row.
        """
        metrics: dict[str, Any] = {}
        try:
            with self.harness.running(save=self.save_checkpoint) as run:
                for step in run.steps():
                    timer = PhaseTimer()
                    before = self.resume_point()  # to checkpoint step - 1 if this step runs out of memory
                    with run.guard_memory(partial(self.abort_out_of_memory, step, timer=timer, before=before)):
                        # 1. Sample G completions per prompt with the current policy (pi_old) and score them.
                        batch, scores, generated = self.collect_rollouts(timer)
                        # 2. Group-relative advantages, and the tokens that enter the loss.
                        advantages, loss_mask = self.compute_advantages(batch, scores)
                        # 3. The engine's update: mu passes of minibatch optimizer steps; the schedule steps.
                        with timer.phase("update"):
                            update = self.update_policy(batch, advantages, loss_mask)
                    # 4. Refresh the reference (iterative GRPO); push the weights to a separate sampler.
                    update.update(self.sync_policy(step, timer))
                    # 5. Log the step as one process would see it (every process's rows, pooled metrics).
                    step_view = gather_step(
                        self.parallel, batch, scores, generated, advantages, loss_mask, update,
                        self.tokenizer.pad_token_id,
                    )  # fmt: skip
                    metrics = self.log(run, step, StepRecord(*step_view, timer))
                    # 6. Stop on a non-finite streak; periodic checkpoint (a signal stops after the step).
                    run.end_step(
                        step, int(update["faults/nonfinite_skipped"]), int(update["optimizer_steps"])
                    )
                final_dir = self.save_final()
        finally:
            close_sampler(self.sampler)  # vLLM's worker processes and scratch files
        self.parallel.close()
        return TrainResult(self.run_dir, final_dir, metrics)

    def sync_policy(self, step: int, timer: PhaseTimer) -> dict[str, float]:
        """After the update: the reference follows the policy every ``ref_model_sync_steps`` (iterative GRPO),
        and a separate rollout engine (vLLM) gets the new weights before the next step samples."""
        if self.reference is not None:
            self.reference.maybe_sync(self.model, step)
        if not hasattr(self.sampler, "update_weights"):
            return {}
        with timer.phase("weight_sync"):
            return sync_sampler_weights(self.sampler, self.model)

    def compute_advantages(
        self, batch: RolloutBatch, scores: RewardScores
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """:func:`compute_advantages` with this trainer's algorithm (PPO's trainer overrides it with GAE)."""
        return compute_advantages(batch, scores, self.config.algorithm, self.parallel)

    def update_policy(
        self, batch: RolloutBatch, advantages: torch.Tensor, loss_mask: torch.Tensor
    ) -> dict[str, float]:
        """:func:`update_policy` with this trainer's model, optimizer and reference; then the schedule steps."""
        cfg = self.config
        update = update_policy(
            self.train_model, self.train_optimizer, batch, advantages, loss_mask, algorithm=cfg.algorithm,
            optim=cfg.optim, max_new_tokens=cfg.generation.max_new_tokens, reference=self.reference,
            parallel=self.parallel, rollout_importance=self.rollout_importance, policy=self.model,
        )  # fmt: skip
        update["lr"] = self.scheduler.get_last_lr()[0]  # the rate this step's updates used
        self.scheduler.step()
        return update

    def collect_rollouts(self, timer: PhaseTimer) -> tuple[RolloutBatch, RewardScores, dict[str, Any]]:
        """Generate and score B groups; with dynamic sampling keep drawing until B informative groups.

        Returns the training batch, its scores, and everything generated this step (for reward statistics,
        which must not be biased by the filter).
        """
        cfg, algo = self.config, self.config.algorithm
        B, G = cfg.data.prompts_per_step, algo.num_generations
        batches, all_scores, kept_rows = [], [], []
        kept_groups = 0
        rounds = 0
        while True:
            rows = next(self.prompt_iter)
            with timer.phase("generate"):
                batch = generate_rollouts(self.sampler, rows, G, cfg.data.prompt_column)
            with timer.phase("score"):
                scores = score(self.rewards, batch, cfg.rewards, cfg.generation.max_new_tokens)
            batches.append(batch)
            all_scores.append(scores)
            if not algo.dynamic_sampling:
                return batch, scores, {"batch": batch, "scores": scores, "rounds": 1}
            keep = informative_groups(scores, batch.group_ids)  # (N,)
            kept_rows.append(keep)
            kept_groups += int(batch.group_ids.cpu()[keep].unique().numel())
            rounds += 1
            if kept_groups >= B or rounds > algo.max_dynamic_sampling_rounds:
                break
        pad_id = self.tokenizer.pad_token_id
        everything = RolloutBatch.concat(batches, pad_id)
        everything_scores = RewardScores.concat(all_scores)
        keep = torch.cat(kept_rows)  # (N_all,)
        info = {"rounds": rounds, "kept_groups": min(kept_groups, B)}
        if not keep.any():  # nothing informative: train on the first round (zero advantages; KL still acts)
            return batches[0], all_scores[0], {"batch": everything, "scores": everything_scores, **info}
        group_ids = everything.group_ids.cpu()
        chosen = group_ids[keep].unique(sorted=False)
        order = torch.stack([(group_ids == g).nonzero()[0, 0] for g in chosen]).argsort()
        chosen = chosen[order][:B]  # first B informative groups in generation order
        rows = torch.isin(group_ids, chosen).nonzero().squeeze(1)
        batch = everything.select(rows)
        return (
            batch,
            _select_scores(everything_scores, rows),
            {"batch": everything, "scores": everything_scores, **info},
        )

    def log(self, run: RunHarness, step: int, record: StepRecord) -> dict[str, Any]:
        """Write one metrics row (and a few sample groups); returns the row."""
        from grpokit.algorithms import group_reward_stats

        batch, scores, generated, advantages, loss_mask, update, timer = (
            record.batch, record.scores, record.generated, record.advantages, record.loss_mask, record.update,
            record.timer,
        )  # fmt: skip
        all_batch, all_scores = generated["batch"], generated["scores"]
        m: dict[str, Any] = {}
        scored = all_scores.scored
        rewards = all_scores.rewards[scored]
        m["reward/mean"] = rewards.mean().item() if rewards.numel() else math.nan
        m["reward/std"] = rewards.std().item() if rewards.numel() > 1 else 0.0
        m.update(all_scores.metrics)
        m.update(self.data_counts)
        if rewards.numel():
            stats = group_reward_stats(rewards, all_batch.group_ids.cpu()[scored])
            if stats["group_size_max"] > 1:  # a group of one (PPO's G = 1) has no spread to measure
                m["zero_std_group_fraction"] = stats["zero_std_group_fraction"]
        if "rounds" in generated and self.config.algorithm.dynamic_sampling:
            m["dynamic_sampling/rounds"] = generated["rounds"]
            m["dynamic_sampling/kept_groups"] = generated.get("kept_groups", 0)
        adv = advantages[scores.scored] if advantages.dim() == 1 else advantages[loss_mask > 0]
        if adv.numel():
            m.update(
                {
                    "advantages/mean": adv.mean().item(),
                    "advantages/std": adv.std().item() if adv.numel() > 1 else 0.0,
                    "advantages/min": adv.min().item(),
                    "advantages/max": adv.max().item(),
                }
            )
        lengths = all_batch.completion_mask.sum(1).float()
        m["completions/mean_length"] = lengths.mean().item()
        m["completions/max_length"] = lengths.max().item()
        m["completions/truncated_fraction"] = all_batch.truncated.float().mean().item()
        m["loss_mask/token_fraction"] = (loss_mask.sum() / batch.completion_mask.sum().clamp(min=1)).item()
        m.update({k: v for k, v in update.items() if k != "train_tokens"})
        gen_time = timer.seconds.get("generate", 0.0)
        m["throughput/generate_tokens_per_s"] = lengths.sum().item() / gen_time if gen_time else math.nan
        update_time = timer.seconds.get("update", 0.0)
        m["throughput/train_tokens_per_s"] = update["train_tokens"] / update_time if update_time else math.nan
        m.update(timer.metrics())
        m["memory/peak_rss_mb"] = peak_memory_mb()
        if torch.cuda.is_available():
            m["memory/peak_cuda_mb"] = torch.cuda.max_memory_allocated() / 2**20
        run.log(step, m, self._sample_rows(batch, scores, advantages))
        return m

    def _sample_rows(
        self, batch: RolloutBatch, scores: RewardScores, advantages: torch.Tensor
    ) -> list[dict[str, Any]]:
        """The first ``log_sample_groups`` groups: prompt, completions, rewards (None = unscored), advantages."""
        group_ids = batch.group_ids.cpu()
        out = []
        for g in group_ids.unique(sorted=False)[: self.config.logging.log_sample_groups]:
            rows = (group_ids == g).nonzero().squeeze(1).tolist()
            adv = (
                advantages
                if advantages.dim() == 1
                else advantages.sum(1) / batch.completion_mask.cpu().sum(1).clamp(min=1)
            )
            out.append(
                {
                    "prompt": batch.prompts[rows[0]],
                    "completions": [batch.completions[i] for i in rows],
                    "rewards": [scores.rewards[i].item() if scores.scored[i] else None for i in rows],
                    "advantages": [adv[i].item() for i in rows],
                    "truncated": [bool(batch.truncated[i]) for i in rows],
                }
            )
        return out

    # -- checkpoints -------------------------------------------------------------------------------------

    def state_dict(self, step: int) -> dict[str, Any]:
        """Everything besides the weights that an exact resume needs."""
        return {
            "step": step,
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            **self.resume_point(),
        }

    def resume_point(self) -> dict[str, Any]:
        """The state that moves during a step before any weight does: every RNG (Python, NumPy, torch, the
        sampler's generator), the data position and the fault counters. Taken between steps, it completes a
        checkpoint of the previous step when the next one fails before its first optimizer step."""
        return {
            "rng": ckpt.capture_rng_state(),
            "data": self.prompt_iter.state_dict(),
            "sampler": self.sampler.state_dict(),
            **self.harness.state_dict(),
            "optimizer_steps_taken": self.optimizer_steps_taken,
        }

    def _count_optimizer_step(self, optimizer: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
        self.optimizer_steps_taken += 1

    def checkpoint_modules(self) -> dict[str, torch.nn.Module]:
        """Modules besides the policy and reference that a checkpoint keeps (PPO: its value model)."""
        return {}

    def save_checkpoint(self, step: int, resume_point: dict[str, Any] | None = None) -> Path:
        """Checkpoint ``step``; ``resume_point`` (taken right after that step) replaces the moving state."""
        reference = self.reference.checkpoint_module() if self.reference is not None else None
        state = self.state_dict(step)
        state.update(resume_point or {})
        modules = self.checkpoint_modules()
        checkpointer = self.harness.checkpointer
        saved = self.parallel.on_main(  # every process has the same state; rank 0 writes it
            lambda: checkpointer.save(step, self.model, self.tokenizer, state, reference, modules)
        )
        checkpointer.mark_saved(saved)
        return saved

    def abort_out_of_memory(self, step: int, error: str, *, timer: PhaseTimer, before: dict[str, Any]) -> None:
        """Checkpoint step - 1 if no optimizer step of ``step`` ran (weights, optimizer and schedule are still
        those of step - 1, ``before`` holds its RNG and data state), then raise ``OutOfMemoryAbort``."""
        exact = self.optimizer_steps_taken == before["optimizer_steps_taken"] and step > 1
        # With several processes the others may be waiting in a collective of this step: writing (a
        # collective too) could hang, so only the newest periodic checkpoint is named.
        exact = exact and not self.parallel.is_distributed
        if exact and self.harness.saved_step() != step - 1:
            self.save_checkpoint(step - 1, before)
        raise faults.OutOfMemoryAbort(
            faults.out_of_memory_message(
                error,
                timer.current,
                step,
                self.config,
                self.harness.last_saved,
                exact=exact,
                run_dir=self.run_dir,
            )  # fmt: skip
        )

    def _restore(self, checkpoint: Path) -> None:
        state = ckpt.load_trainer_state(checkpoint)
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        ckpt.restore_rng_state(state["rng"])
        self.prompt_iter.load_state_dict(state["data"])
        self.sampler.load_state_dict(state["sampler"])
        self.harness.load_state_dict(state)
        self.start_step = int(state["step"])

    def save_final(self) -> Path:
        """The trained policy and tokenizer in ``RUN_DIR/final`` (written aside, fsynced, then renamed), with
        :meth:`checkpoint_modules` as ``<name>.safetensors`` (PPO's value model)."""
        final = self.run_dir / "final"
        modules = self.checkpoint_modules()
        weights = self.parallel.full_state_dict(
            self.model
        )  # gathered when sharded (ZeRO-3, FSDP2), else None

        def save() -> None:
            with ckpt.atomic_directory(final) as tmp:
                ckpt.save_pretrained(self.model, self.tokenizer, tmp, state_dict=weights)
                if modules:
                    from safetensors.torch import save_model

                    for name, module in modules.items():
                        save_model(module, str(tmp / f"{name}.safetensors"))

        self.parallel.on_main(save)  # rank 0 writes; the others wait for it
        return final

    def _screen_prompt_lengths(self, rows: Sequence[dict[str, Any]]) -> tuple[Sequence[dict[str, Any]], dict]:
        """Apply ``prompt_truncation`` to every row before training (an error names the row at once, not
        hours in); returns the rows and the ``data/truncated_prompts`` or ``data/skipped_prompts`` count."""
        gen = self.config.generation
        if gen.max_prompt_length is None:
            return rows, {}
        from grpokit.data import screen_prompt_lengths
        from grpokit.rollout.prompts import encode_prompts

        prompts = [row[self.config.data.prompt_column] for row in rows]
        lengths = [len(ids) for ids in encode_prompts(self.tokenizer, prompts)]
        kept, counts = screen_prompt_lengths(
            rows, lengths, gen.max_prompt_length, gen.prompt_truncation,
            source=getattr(rows, "source", "<dataset>"), setting="generation.max_prompt_length",
        )  # fmt: skip
        if gen.prompt_truncation == "error":
            return kept, {}
        key = "skipped" if gen.prompt_truncation == "skip" else "truncated"
        if counts[key]:
            faults.log.warning(
                "%d of %d prompts are longer than generation.max_prompt_length=%d and are %s "
                "(prompt_truncation: %s)", counts[key], len(rows), gen.max_prompt_length,
                "skipped" if key == "skipped" else "left-truncated", gen.prompt_truncation,
            )  # fmt: skip
        return kept, {f"data/{key}_prompts": float(counts[key])}


def _load_dataset(
    config: GRPOConfig, rows: Sequence[dict[str, Any]] | None = None, *, config_rewards: bool = True
) -> Sequence[dict[str, Any]]:
    """Prompt rows from ``rows``, ``data.path`` (JSONL/CSV/Parquet/saved dataset) or the built-in ``data.task``.

    Rows from a file or from ``rows`` are validated by :func:`grpokit.data.load_prompts`: a missing column or
    an empty prompt is an error naming the row, raised before any model is loaded. The answer column is
    required when a configured reward reads it (``config_rewards``: the config's rewards are the ones used).
    """
    from grpokit.data import load_prompts

    data = config.data
    if rows is None and data.path is None:
        from grpokit.data.tasks import get_task

        return get_task(data.task).make_problems(data.num_train_problems, seed=config.seed, split="train")
    required = list(data.required_columns)
    if config_rewards and {"task", "accuracy", "math_verify"} & set(config.rewards.reward_funcs):
        required.append(config.rewards.answer_column)
    source = data.path if rows is None else list(rows)
    dataset = load_prompts(
        source, prompt_column=data.prompt_column, required_columns=tuple(required), id_column=data.id_column
    )
    return dataset.with_system_prompt(data.system_prompt) if data.system_prompt else dataset


def train(config: GRPOConfig, **kwargs: Any) -> TrainResult:
    """Run GRPO as configured (``model.name_or_path`` must be set; the demo is ``grpokit.apps.demo``)."""
    return GRPOTrainer(config, **kwargs).train()
