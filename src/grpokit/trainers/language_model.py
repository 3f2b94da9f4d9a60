"""What every language-model trainer shares: the loop, its models and data, checkpoints and the run.

A trainer says only what is specific to its algorithm, in three methods the loop calls::

    batch, scores, generated = collect_rollouts(timer)        sample and score (GRPO: groups; dynamic sampling)
    advantages, loss_mask    = compute_advantages(batch, scores)  group-relative (GRPO) or GAE (PPO)
    update                   = update_policy(batch, advantages, loss_mask)  the engine's update

:class:`~grpokit.trainers.grpo.GRPOTrainer` and :class:`~grpokit.trainers.ppo.PPOTrainer` implement them; the
policy, reference, sampler, prompts, rewards, optimizer, checkpoints and the run harness are built here.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, Generic, TypeVar

import torch

from grpokit.config import GRPOConfig, PPOConfig, build_config
from grpokit.engine import checkpoint as ckpt
from grpokit.engine import faults
from grpokit.engine.harness import RunHarness
from grpokit.engine.optimization import build_optimizer, build_scheduler
from grpokit.engine.parallel import DataParallel
from grpokit.engine.runs import resolve_device, seed_everything
from grpokit.engine.update import UpdateStats
from grpokit.models.lora import AdapterDisabledReference
from grpokit.models.reference import Reference, ReferencePolicy
from grpokit.rewards import RewardPipeline, RewardScores
from grpokit.rewards.failures import RewardFailurePolicy
from grpokit.rollout.batch import RolloutBatch
from grpokit.tracking.timing import PhaseTimer
from grpokit.trainers.episodes import EnvironmentSetup
from grpokit.trainers.iterative_rm import IterativeRewardModel
from grpokit.trainers.prompts import load_dataset, screen_prompt_lengths
from grpokit.trainers.rollout_engine import (
    build_sampler,
    check_rollout_backend,
    close_sampler,
    rollout_importance_level,
    sync_sampler_weights,
)
from grpokit.trainers.sharding import ShardedSampler, gather_step
from grpokit.trainers.step_log import Generation, StepRecord, sample_rows, step_metrics

__all__ = ["LanguageModelTrainer", "TrainResult"]

ConfigT = TypeVar("ConfigT", GRPOConfig, PPOConfig)


@dataclass
class TrainResult:
    """Where a finished run lives and its last logged metrics."""

    run_dir: Path
    final_dir: Path
    last_metrics: dict[str, Any]


class LanguageModelTrainer(Generic[ConfigT]):
    """The loop and everything around it for a causal LM; subclasses give the algorithm's three phases.

    Args:
        config: a validated trainer config (``model.name_or_path`` must be set).
        reward_funcs: Python reward callables to use instead of ``config.rewards.reward_funcs`` (weights,
            if configured, must match their number).
        dataset: prompt rows (dicts with the prompt column) to use instead of ``config.data``.
    """

    run_prefix = "run"
    """Default run directory name prefix (``<prefix>-<date>-<time>``)."""

    def __init__(
        self,
        config: ConfigT,
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
        self.config: ConfigT = config
        cfg = config
        model_path = config.model.name_or_path
        if model_path is None:  # validated again: a model_copy could have unset it
            raise ValueError("model.name_or_path is unset")
        # Run directory, checkpoints, logs, signals: the harness; the checkpoint to resume is found first.
        self.harness = RunHarness(
            cfg, prefix=self.run_prefix, max_consecutive_nonfinite=cfg.optim.max_consecutive_nonfinite
        )
        resume_from = self.harness.resume_from
        rewards = cfg.rewards
        # env.name: multi-turn episodes, whose environment gives the rewards; made (and checked) before any model.
        self.environment = EnvironmentSetup.from_config(cfg) if cfg.env.name is not None else None
        if self.environment is None and reward_funcs is None and not (
            rewards.reward_funcs or rewards.reward_model or rewards.process_reward_func
        ):
            raise ValueError(
                "no reward: name one in rewards.reward_funcs (--reward_funcs accuracy, or my_rewards.py:score), "
                "set rewards.reward_model / rewards.process_reward_func, or pass reward_funcs=[...]"
            )
        self.dataset: Sequence[dict[str, Any]]
        if self.environment is not None and dataset is None and cfg.data.path is None:
            self.dataset = self.environment.make_rows(cfg.data.num_train_problems, cfg.seed)
        else:
            self.dataset = load_dataset(cfg, dataset, config_rewards=reward_funcs is None)

        seed_everything(cfg.seed)
        # One process, or one of several started by accelerate launch (engine/parallel.py).
        self.parallel = DataParallel.from_config(cfg)
        check_rollout_backend(cfg, self.parallel)
        self.device = self.parallel.device or resolve_device(cfg.model.device)
        from grpokit.models.loading import load_model, load_tokenizer
        from grpokit.models.lora import is_lora_model, load_policy
        from grpokit.models.memory import enable_gradient_checkpointing
        from grpokit.models.precision import enable_autocast

        self.tokenizer = load_tokenizer(cfg.model.tokenizer_name_or_path or model_path)
        self.data_counts: dict[str, float] = {}
        if self.environment is None:  # episodes render their own openings (env.max_total_tokens bounds them)
            self.dataset, self.data_counts = screen_prompt_lengths(cfg, self.tokenizer, self.dataset)
        self.model = load_policy(cfg.model, resume_from, device=self.device)  # LoRA-wrapped when model.lora.r
        # Speed and memory options, before the reference copy (which inherits them); docs/benchmarks.md.
        autocast_dtype = enable_autocast(self.model, cfg.model.mixed_precision)
        if cfg.optim.gradient_checkpointing:
            enable_gradient_checkpointing(self.model)
        self.rewards: RewardPipeline | None = None  # None: the environment scores the episodes
        if self.environment is not None and reward_funcs is not None:
            raise ValueError("with env.name the environment gives the rewards: pass no reward_funcs")
        if self.environment is not None:
            pass
        elif reward_funcs is not None:
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
        # rewards.iterative_rm: the reward model keeps learning from gold-labelled samples (else None).
        self.iterative_rm = (
            None if self.rewards is None else IterativeRewardModel.from_config(cfg, self.rewards, self.parallel)
        )
        self.reference: Reference | None = None
        if cfg.algorithm.beta > 0 and is_lora_model(self.model):
            # The initial policy is the base model: the policy itself with its adapters disabled, no copy.
            self.reference = AdapterDisabledReference(self.model)
        elif cfg.algorithm.beta > 0:
            # The reference is the *initial* policy: on resume it comes from the checkpoint, not the weights.
            reference = ReferencePolicy(self.model, cfg.algorithm.ref_model_sync_steps)
            if resume_from is not None and not ckpt.load_reference(reference.model, resume_from):
                with ckpt.quiet_transformers():
                    initial = load_model(model_path, dtype=cfg.model.dtype, device=self.device)
                reference.model.load_state_dict(initial.state_dict())
                del initial
            self.reference = reference

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
        self.budget_cpu_start = time.process_time()  # max_cpu_seconds counts from here
        generated_tokens = 0.0  # max_generated_tokens counts from here
        try:
            with self.harness.running(save=self.save_checkpoint) as run:
                for step in run.steps():
                    timer = PhaseTimer()
                    before = self.resume_point()  # to checkpoint step - 1 if this step runs out of memory
                    with run.guard_memory(
                        partial(self.abort_out_of_memory, step, timer=timer, before=before)
                    ):
                        # 1. Sample G completions per prompt with the current policy (pi_old) and score them.
                        batch, scores, generated = self.collect_rollouts(timer)
                        # 2. Group-relative advantages, and the tokens that enter the loss.
                        advantages, loss_mask = self.compute_advantages(batch, scores)
                        # 3. The engine's update: mu passes of minibatch optimizer steps; the schedule steps.
                        with timer.phase("update"):
                            update = self.update_policy(batch, advantages, loss_mask)
                    # 4. Refresh the reference (iterative GRPO); push the weights to a separate sampler.
                    update.metrics.update(self.sync_policy(step, timer))
                    if self.iterative_rm is not None:  # iterative RL: retrain the reward model every K steps
                        update.metrics.update(self.iterative_rm.after_step(step, batch))
                    # 5. Log the step as one process would see it (every process's rows, pooled metrics).
                    step_view = gather_step(
                        self.parallel, batch, scores, generated, advantages, loss_mask, update.as_metrics(),
                        self.tokenizer.pad_token_id,
                    )  # fmt: skip
                    metrics = self.log(run, step, StepRecord(*step_view, timer))
                    # 6. Stop on a non-finite streak; periodic checkpoint (a signal stops after the step).
                    run.end_step(step, update)
                    # 7. A token or CPU-time budget spent: stop after this step (and save final as usual).
                    generated_tokens += metrics.get("completions/generated_tokens", 0.0)
                    spent = self.budget_spent(generated_tokens, metrics.get("time/process_cpu_seconds"))
                    if not self.parallel.all_true(not spent):
                        break
                final_dir = self.save_final()
        finally:
            close_sampler(self.sampler)  # vLLM's worker processes and scratch files
        self.release_wrappers()  # the DDP wrappers hold the process group that close() destroys
        self.parallel.close()
        return TrainResult(self.harness.directory, final_dir, metrics)

    def budget_spent(self, generated_tokens: float, cpu_seconds: float | None) -> bool:
        """Whether ``max_generated_tokens`` or ``max_cpu_seconds`` is reached (``cpu_seconds``: this process's
        ``time.process_time()`` when the step was logged; now when None)."""
        cfg = self.config
        if cfg.max_generated_tokens is not None and generated_tokens >= cfg.max_generated_tokens:
            return True
        used = (time.process_time() if cpu_seconds is None else cpu_seconds) - self.budget_cpu_start
        return cfg.max_cpu_seconds is not None and used >= cfg.max_cpu_seconds

    def release_wrappers(self) -> None:
        """Drop the data-parallel wrappers of the trained models (subclasses add their own)."""
        self.train_model, self.train_optimizer = self.model, self.optimizer

    def sync_policy(self, step: int, timer: PhaseTimer) -> dict[str, float]:
        """After the update: the reference follows the policy every ``ref_model_sync_steps`` (iterative GRPO),
        and a separate rollout engine (vLLM) gets the new weights before the next step samples."""
        if self.reference is not None:
            self.reference.maybe_sync(self.model, step)
        if not hasattr(self.sampler, "update_weights"):
            return {}
        with timer.phase("weight_sync"):
            return sync_sampler_weights(self.sampler, self.model)

    def log(self, run: RunHarness, step: int, record: StepRecord) -> dict[str, Any]:
        """Write one metrics row and a few sample groups; returns the row (apps extend it, e.g. the demo's
        held-out evaluation)."""
        metrics = step_metrics(record, data_counts=self.data_counts)
        samples = sample_rows(
            record.batch, record.scores, record.advantages, self.config.logging.log_sample_groups
        )
        run.log(step, metrics, samples)
        return metrics

    # -- the algorithm's phases ---------------------------------------------------------------------------

    def collect_rollouts(self, timer: PhaseTimer) -> tuple[RolloutBatch, RewardScores, Generation]:
        """Sample and score this step's batch; returns it, its scores, and everything generated (for the
        reward statistics, which must not be biased by a filter)."""
        raise NotImplementedError

    def compute_advantages(
        self, batch: RolloutBatch, scores: RewardScores
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(advantages, loss_mask)``: (N,) or (N, T), and (N, T)."""
        raise NotImplementedError

    def update_policy(
        self, batch: RolloutBatch, advantages: torch.Tensor, loss_mask: torch.Tensor
    ) -> UpdateStats:
        """The engine's update of the policy (and the algorithm's extra models), then the schedules step."""
        raise NotImplementedError

    # -- checkpoints -------------------------------------------------------------------------------------

    def state_dict(self, step: int) -> dict[str, Any]:
        """Everything besides the weights that an exact resume needs."""
        return {
            "step": step,
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            **self.resume_point(),
            **({"iterative_rm": self.iterative_rm.state_dict()} if self.iterative_rm is not None else {}),
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
        if checkpointer is None:
            raise RuntimeError("save_checkpoint before the run directory is open")
        saved = self.parallel.on_main(  # every process has the same state; rank 0 writes it
            lambda: checkpointer.save(step, self.model, self.tokenizer, state, reference, modules)
        )
        checkpointer.mark_saved(saved)
        return saved

    def abort_out_of_memory(
        self, step: int, error: str, *, timer: PhaseTimer, before: dict[str, Any]
    ) -> None:
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
        if self.iterative_rm is not None:
            self.iterative_rm.load_state_dict(state["iterative_rm"])
        self.start_step = int(state["step"])

    def save_final(self) -> Path:
        """The trained policy and tokenizer in ``RUN_DIR/final`` (written aside, fsynced, then renamed), with
        :meth:`checkpoint_modules` as ``<name>.safetensors`` (PPO's value model)."""
        final = self.harness.directory / "final"
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
