"""The built-in demo's configs: its own section (tiny model, warm-up, evaluation) on top of the GRPO and PPO
configs. Its values are the preset ``grpokit/config/presets/demo.yaml`` (``agent_calculator.yaml`` and
``agent_guess_number.yaml`` for the multi-turn demo, whose ``env.name`` is set); a config with a ``demo``
section (one of those presets, or a copy) is a demo run."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from grpokit.config.base import Section
from grpokit.config.trainers import GRPOConfig, PPOConfig, TrainConfig


class DemoConfig(Section):
    """The built-in demo (``grpokit demo``, or ``grpokit train`` without a model): a tiny model built from a
    config, warmed up by imitating the task's flawed teacher until it imitates it well, then GRPO with the
    task's checker. The warm-up is cached under ``$GRPOKIT_CACHE/demo``, keyed by every field it depends
    on."""

    architecture: Literal["llama", "qwen2"] = "llama"
    """Transformers architecture of the demo's tiny model (randomly initialised from a config, never
    downloaded)."""

    hidden_size: int = Field(64, ge=8)
    """Hidden size of the demo's tiny model."""

    num_layers: int = Field(2, ge=1)
    """Transformer layers of the demo's tiny model."""

    num_heads: int = Field(4, ge=1)
    """Attention heads of the demo's tiny model (must divide ``hidden_size``)."""

    intermediate_size: int | None = Field(None, ge=1)
    """MLP width of the demo's tiny model; ``None``: 4 x ``hidden_size``."""

    num_threads: int = Field(1, ge=1)
    """torch CPU threads for the whole demo (``torch.set_num_threads``). Two threads are about 1.4x faster
    on an idle 2-core machine, but stall whenever another process wants a core."""

    sft_steps: int | None = Field(None, ge=0)
    """A fixed number of supervised warm-up steps; ``None`` stops on ``sft_stop_accuracy`` instead (single-turn
    tasks only: the multi-turn demo's teachers are random, so it needs a number of steps)."""

    sft_stop_accuracy: float = Field(0.9, gt=0, le=1)
    """The warm-up stops at the first check where the model's greedy answers reproduce the teacher's on
    this fraction of the validation problems. Imitation accuracy jumps suddenly, at a step that depends on
    the seed, so a threshold gives the same kind of start whatever the seed; a fixed step count does not."""

    sft_eval_every: int = Field(50, ge=1)
    """Steps between two checks of the warm-up's imitation accuracy."""

    sft_eval_problems: int = Field(200, ge=1)
    """Validation problems of the warm-up's checks: ``train``-split problems after the training ones, so
    disjoint from the training prompts and from the held-out ``test`` split."""

    sft_max_steps: int = Field(3000, ge=1)
    """Upper bound on the warm-up when ``sft_steps`` is ``None``; reaching it without the threshold is logged
    and the demo goes on from there."""

    sft_learning_rate: float = Field(3e-3, gt=0)
    """Learning rate of the supervised warm-up (AdamW; constant when stopping on the threshold, linear decay
    to 0 with a fixed ``sft_steps``)."""

    sft_batch_size: int = Field(128, ge=1)
    """Examples per supervised warm-up step."""

    grpo_learning_rate: float = Field(3e-4, gt=0)
    """Peak learning rate of the demo's GRPO phase, used unless ``optim.learning_rate`` is set explicitly.
    With a linear decay, 3e-4 beat 1e-4, 2e-4 and 5e-4 on three seeds (docs/demo.md)."""

    grpo_lr_scheduler: Literal["constant", "linear", "cosine"] = "linear"
    """Learning-rate schedule of the demo's GRPO phase, used unless ``optim.lr_scheduler`` is set
    explicitly."""

    eval_every: int = Field(100, ge=0)
    """Held-out greedy accuracy every this many GRPO steps: the learning curve in ``demo_summary.json`` and
    ``metrics.jsonl`` (``eval/accuracy``); 0: before and after only."""

    control: bool = False
    """Also run the control: from the same warm-started model, ``max_steps`` more supervised steps on the
    teacher's demonstrations (``prompts_per_step * num_generations`` examples a step, as many completions as
    a GRPO step trains on), evaluated at the same steps as GRPO."""

    eval_k: int = Field(1, ge=1)
    """Samples per held-out problem in the before/after evaluation (reports pass@k)."""

    @model_validator(mode="after")
    def _check(self) -> DemoConfig:
        if self.hidden_size % self.num_heads:
            raise ValueError(
                f"hidden_size ({self.hidden_size}) must be divisible by num_heads ({self.num_heads})"
            )
        return self


def _check_demo(config: TrainConfig) -> None:
    if config.model.name_or_path is None and config.data.task is None and config.env.name is None:
        raise ValueError(
            "the demo builds its own model for a built-in task or environment: set data.task (e.g. addition) "
            "or env.name (calculator, guess_number)"
        )
    demo = getattr(config, "demo", None)
    if config.env.name is not None and config.model.name_or_path is None and demo and demo.sft_steps is None:
        raise ValueError(
            "demo.sft_steps is unset: the multi-turn demo (env.name) warms up for a fixed number of steps; set it "
            "(the presets agent_calculator and agent_guess_number use 1500 and 1000)"
        )


class DemoGRPOConfig(GRPOConfig):
    """A GRPO config with the demo's section: ``grpokit train`` without a model runs the built-in demo."""

    demo: DemoConfig = Field(default_factory=DemoConfig)
    """The built-in demo (used when model.name_or_path is unset)."""

    @model_validator(mode="after")
    def _check_demo(self) -> DemoGRPOConfig:
        _check_demo(self)
        return self


class DemoPPOConfig(PPOConfig):
    """A PPO config with the demo's section: PPO on the demo's warmed-up tiny model."""

    demo: DemoConfig = Field(default_factory=DemoConfig)
    """The built-in demo (its warmed-up model is PPO's starting point when model.name_or_path is unset)."""

    @model_validator(mode="after")
    def _check_demo(self) -> DemoPPOConfig:
        _check_demo(self)
        return self


DemoTrainConfig = DemoGRPOConfig | DemoPPOConfig
"""A config of a demo run: either trainer's config with the ``demo`` section."""

DEMO_CONFIGS: dict[str, type[DemoGRPOConfig] | type[DemoPPOConfig]] = {
    "grpo": DemoGRPOConfig,
    "ppo": DemoPPOConfig,
}
"""Config class of each trainer for a demo run (a config with a ``demo`` section)."""
