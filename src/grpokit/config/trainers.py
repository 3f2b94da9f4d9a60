"""The trainer configs, composed from the sections: :class:`GRPOConfig` and :class:`PPOConfig`."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from grpokit.config.base import Section
from grpokit.config.environment import EnvConfig
from grpokit.config.loss import GRPOAlgorithmConfig, PPOAlgorithmConfig
from grpokit.config.sections import (
    CheckpointConfig,
    DataConfig,
    GenerationConfig,
    LoggingConfig,
    ModelConfig,
    OptimConfig,
    RewardConfig,
    VLLMConfig,
    check_vllm_fields,
)

VLLM_MAX_TEMPERATURE = 2.0
"""The highest sampling temperature vLLM accepts (``SamplingParams`` refuses more)."""


class TrainConfig(Section):
    """Everything a trainer of language models shares (subclassed by GRPOConfig and PPOConfig)."""

    seed: int = 0
    """Seeds Python, NumPy, torch, the prompt order and sampling: the same seed gives the same run."""

    max_steps: int = Field(500, ge=1)
    """Training steps (one step = one batch of prompts, its rollouts and the updates on them)."""

    max_generated_tokens: int | None = Field(None, ge=1)
    """Stop after the first step at which the completion tokens generated (every sampling round, dynamic
    sampling's included; a resumed run counts from where it resumed) reach this many; ``None``: no token
    budget. The run then saves ``final`` as after ``max_steps`` (which still sets the schedule)."""

    max_cpu_seconds: float | None = Field(None, gt=0)
    """Stop after the first step at which the CPU time of the training loop (``time.process_time`` of the
    process, all threads, from the start of training; a resumed run counts from where it resumed) reaches
    this many seconds; ``None``: no CPU-time budget. The run then saves ``final`` as after ``max_steps``
    (which still sets the schedule)."""

    model: ModelConfig = Field(default_factory=ModelConfig)
    """The policy to fine-tune."""

    data: DataConfig = Field(default_factory=DataConfig)
    """Prompts."""

    generation: GenerationConfig = Field(default_factory=GenerationConfig)
    """Sampling of completions."""

    vllm: VLLMConfig = Field(default_factory=VLLMConfig)
    """The vLLM engine (``generation.backend: vllm``)."""

    rewards: RewardConfig = Field(default_factory=RewardConfig)
    """Scoring of completions."""

    optim: OptimConfig = Field(default_factory=OptimConfig)
    """Optimizer, schedule and minibatching."""

    logging: LoggingConfig = Field(default_factory=LoggingConfig)
    """Run directory, metrics and progress."""

    checkpoint: CheckpointConfig = Field(default_factory=CheckpointConfig)
    """Checkpoints and resume."""

    env: EnvConfig = Field(default_factory=EnvConfig)
    """Multi-turn episodes in a text environment (``env.name``) instead of single completions."""

    @model_validator(mode="after")
    def _check_cross_section(self) -> TrainConfig:
        if "task" in self.rewards.reward_funcs and self.data.task is None:
            raise ValueError("rewards.reward_funcs uses 'task' but data.task is unset")
        defaults = VLLMConfig.model_fields
        check_vllm_fields(
            self.generation.backend, [k for k in defaults if getattr(self.vllm, k) != defaults[k].default]
        )
        gen = self.generation
        hottest = max([gen.temperature, *(gen.temperature_schedule or ())])
        if gen.backend in ("vllm", "vllm_server") and hottest > VLLM_MAX_TEMPERATURE:
            raise ValueError(
                f"generation.temperature{'_schedule' if gen.temperature_schedule else ''} reaches {hottest}, "
                f"but vLLM samples at temperatures up to {VLLM_MAX_TEMPERATURE} (generation.backend "
                f"{gen.backend!r}); lower it or set generation.backend: transformers"
            )
        if self.generation.backend in ("vllm", "vllm_server") and self.model.lora.r > 0:
            raise ValueError(
                f"generation.backend {self.generation.backend!r} with model.lora: the engine needs full weights "
                "every step (merging the adapters each step is not implemented); set model.lora.r: 0 or "
                "generation.backend: transformers"
            )
        return self


def _check_step_batch(config: GRPOConfig | PPOConfig) -> None:
    """Minibatches must split the N = B*G responses of a step evenly; the overlong buffer must fit; a LoRA
    reference (the base, adapters disabled) cannot be re-synced."""
    if config.model.lora.r > 0 and config.algorithm.ref_model_sync_steps > 0:
        raise ValueError(
            "algorithm.ref_model_sync_steps needs a separate reference model; with model.lora the reference is "
            "the base model with its adapters disabled, which cannot be refreshed (set ref_model_sync_steps: 0)"
        )
    mbs = config.optim.mini_batch_size
    if mbs is not None and config.num_responses % mbs:
        raise ValueError(
            f"optim.mini_batch_size ({mbs}) must divide the N = prompts_per_step * num_generations = "
            f"{config.num_responses} responses of a step"
        )
    if mbs is None and config.num_responses % config.optim.gradient_accumulation_steps:
        raise ValueError(
            f"optim.gradient_accumulation_steps ({config.optim.gradient_accumulation_steps}) must divide the "
            f"N = {config.num_responses} responses of a step"
        )
    if config.rewards.iterative_rm.gold_func is not None and config.algorithm.num_generations < 2:
        raise ValueError(
            "rewards.iterative_rm pairs the best and worst sample of each group: it needs "
            f"algorithm.num_generations >= 2, got {config.algorithm.num_generations}"
        )
    if config.rewards.overlong_buffer_length >= config.generation.max_new_tokens:
        raise ValueError(
            f"rewards.overlong_buffer_length ({config.rewards.overlong_buffer_length}) must be smaller "
            f"than generation.max_new_tokens ({config.generation.max_new_tokens})"
        )


def _check_environment(config: GRPOConfig | PPOConfig) -> None:
    """``env.name`` with what it cannot run with, each refusal naming what to change."""
    if config.env.name is None:
        return
    off = "or unset env.name for single-turn training"
    if config.trainer == "ppo":
        raise ValueError(f"env (multi-turn episodes) is implemented for GRPO; use trainer: grpo {off}")
    rewards = config.rewards
    if rewards.reward_funcs or rewards.reward_model or rewards.process_reward_func:
        raise ValueError(
            "with env.name the environment gives the rewards (each turn's, summed or as process rewards, "
            "env.reward_mode); rewards.reward_funcs / reward_model / process_reward_func must be unset"
        )
    if rewards.overlong_buffer_length:
        raise ValueError("rewards.overlong_buffer_length applies to single completions; set it to 0 with env.name")
    if rewards.iterative_rm.gold_func is not None:
        raise ValueError("rewards.iterative_rm needs a reward model; it does not apply with env.name")
    if config.generation.async_rollouts:
        raise ValueError(f"generation.async_rollouts does not run multi-turn episodes yet: set it to false {off}")
    if config.env.reward_mode == "process" and getattr(config.algorithm, "advantage_estimator", "grpo") != "grpo":
        raise ValueError(
            f"algorithm.advantage_estimator '{config.algorithm.advantage_estimator}' applies to outcome rewards; "
            "with env.reward_mode: process the advantages are DeepSeekMath's process-supervised ones (leave "
            "advantage_estimator at 'grpo')"
        )
    if config.model.lora.r > 0 and config.generation.backend != "transformers":
        raise ValueError("model.lora needs generation.backend: transformers")


def _check_async_rollouts(config: GRPOConfig | PPOConfig) -> None:
    """``generation.async_rollouts`` with what it cannot run with yet, each refusal naming what to change."""
    gen = config.generation
    if not gen.async_rollouts:
        return
    off = "or set generation.async_rollouts: false"
    if config.trainer == "ppo":
        raise ValueError(f"generation.async_rollouts is implemented for GRPO only; use trainer: grpo {off}")
    if gen.backend not in ("transformers", "vllm_server"):
        raise ValueError(
            f"generation.async_rollouts runs a transformers rollout worker or requests to a vLLM server; "
            f"generation.backend {gen.backend!r} is not supported with it yet: set generation.backend: "
            f"transformers or vllm_server {off}"
        )
    if config.model.lora.r > 0:
        raise ValueError(
            f"generation.async_rollouts copies full weights into the rollout worker; with model.lora it would "
            f"need merged adapters every step (not implemented): set model.lora.r: 0 {off}"
        )
    if gen.per_group_seed:
        raise ValueError(
            "generation.per_group_seed seeds groups for data-parallel runs, which async rollouts do not support; "
            f"every async batch is seeded from (seed, step) already: set per_group_seed: false {off}"
        )
    if getattr(config.algorithm, "dynamic_sampling", False):
        raise ValueError(
            "algorithm.dynamic_sampling draws extra rounds of prompts depending on the rewards, which a pipeline "
            f"that samples ahead cannot know: set algorithm.dynamic_sampling: false {off}"
        )
    if config.algorithm.rollout_importance_sampling == "none":
        raise ValueError(
            "algorithm.rollout_importance_sampling 'none' with generation.async_rollouts would train on samples "
            "of older weights without correcting for them: set it to auto, token or sequence "
            f"(auto = token) {off}"
        )


class GRPOConfig(TrainConfig):
    """Configuration of :class:`grpokit.trainers.grpo.GRPOTrainer`."""

    trainer: Literal["grpo"] = "grpo"
    """Which trainer the file configures: ``grpo`` (this config), or ``ppo`` (the PPO baseline, whose fields
    differ in the ``algorithm`` section). ``grpokit train`` picks the config class from it."""

    algorithm: GRPOAlgorithmConfig = Field(default_factory=GRPOAlgorithmConfig)
    """GRPO loss and group options."""

    @property
    def num_responses(self) -> int:
        """Derived: N = B*G responses per step (before dynamic-sampling top-ups)."""
        return self.data.prompts_per_step * self.algorithm.num_generations

    @model_validator(mode="after")
    def _check_grpo(self) -> GRPOConfig:
        _check_step_batch(self)
        return self

    @model_validator(mode="after")
    def _check_async(self) -> GRPOConfig:
        _check_async_rollouts(self)
        _check_environment(self)
        return self

    @model_validator(mode="after")
    def _check_process_estimator(self) -> GRPOConfig:
        estimator = self.algorithm.advantage_estimator
        if self.rewards.process_reward_func is not None and estimator != "grpo":
            raise ValueError(
                f"algorithm.advantage_estimator '{estimator}' applies to outcome rewards; with "
                "rewards.process_reward_func the advantages are DeepSeekMath's process-supervised ones "
                "(leave advantage_estimator at 'grpo')"
            )
        aggregation = self.algorithm.multi_objective_aggregation
        if self.rewards.process_reward_func is not None and aggregation != "sum_then_normalize":
            raise ValueError(
                f"algorithm.multi_objective_aggregation '{aggregation}' combines outcome reward functions; with "
                "rewards.process_reward_func the advantages come from the step rewards (leave it at "
                "'sum_then_normalize')"
            )
        return self


class PPOConfig(TrainConfig):
    """Configuration of :class:`grpokit.trainers.ppo.PPOTrainer`: the shared sections plus PPO's algorithm."""

    trainer: Literal["ppo"] = "ppo"
    """Which trainer the file configures: ``ppo`` (this config), or ``grpo``. ``grpokit train`` picks the
    config class from it."""

    algorithm: PPOAlgorithmConfig = Field(default_factory=PPOAlgorithmConfig)
    """PPO loss, value model, GAE and KL-in-the-reward options."""

    @property
    def num_responses(self) -> int:
        """Derived: N = B*G responses per step (G = 1 in classic PPO)."""
        return self.data.prompts_per_step * self.algorithm.num_generations

    @model_validator(mode="after")
    def _check_ppo(self) -> PPOConfig:
        _check_step_batch(self)
        return self

    @model_validator(mode="after")
    def _check_async(self) -> PPOConfig:
        _check_async_rollouts(self)
        _check_environment(self)
        return self


TRAINER_CONFIGS: dict[str, type[GRPOConfig] | type[PPOConfig]] = {"grpo": GRPOConfig, "ppo": PPOConfig}
"""Config class of each trainer, by the name in the ``trainer`` field."""
