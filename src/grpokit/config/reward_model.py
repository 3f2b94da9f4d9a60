"""Configuration of reward-model training (``grpokit rm``): preference pairs in, a scalar-head model out.

The tree reuses the shared sections where they mean the same thing::

    RewardModelConfig
      seed, max_steps                   run length and reproducibility
      model         ModelConfig         the body to put a scalar head on (LoRA included)
      data          PreferenceDataConfig  the pairs file, its columns, the held-out split, pairs per step
      evaluation    RewardEvalConfig    held-out pairwise accuracy every ``eval_steps``
      normalization RewardNormalizationConfig  center/scale saved with the model
      optim         OptimConfig         AdamW, schedule, clipping, accumulation (shared)
      logging       LoggingConfig       run directory, metrics, report (shared)
      checkpoint    CheckpointConfig    periodic saves and resume (shared)
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from grpokit.config.base import Section
from grpokit.config.sections import CheckpointConfig, LoggingConfig, ModelConfig, OptimConfig

__all__ = [
    "PreferenceDataConfig",
    "RewardEvalConfig",
    "RewardModelConfig",
    "RewardNormalizationConfig",
]


class PreferenceDataConfig(Section):
    """Preference pairs: one row per comparison, the preferred response and the other one."""

    train_file: str | None = None
    """Pairs to train on: a ``.jsonl``, ``.csv`` or ``.parquet`` file, or a ``datasets`` dataset saved to disk.
    Required. Every row must have a non-empty ``chosen_column`` and ``rejected_column``; a row without them
    is an error naming the file and the row, before the model loads."""

    eval_file: str | None = None
    """Held-out pairs (same format) for the pairwise accuracy logged as ``eval/accuracy``. ``None``: hold out
    ``eval_fraction`` of ``train_file`` instead."""

    eval_fraction: float = Field(0.0, ge=0, lt=1)
    """Without ``eval_file``: this fraction of the training pairs (a seeded random subset) is held out for
    evaluation and never trained on. 0: no held-out evaluation."""

    chosen_column: str = "chosen"
    """Column of the preferred response: text, or a list of chat messages (the tokenizer's chat template is
    applied)."""

    rejected_column: str = "rejected"
    """Column of the response that lost the comparison (same kind as ``chosen_column``)."""

    prompt_column: str | None = "prompt"
    """Column of the prompt, put in front of both responses (text is concatenated; chat messages get the
    response as an assistant message), exactly as ``rewards.reward_model`` scores prompt + completion. Used
    when the file has it (then every row needs it); ``None``: never (the responses are whole texts)."""

    margin_column: str | None = "margin"
    """Column of a per-pair margin m in the loss -log sigma(r_c - r_r - m) (Llama 2), used when the file has
    it; ``None``: never (m = 0)."""

    pairs_per_step: int = Field(16, ge=1)
    """Pairs per training step (drawn without replacement, epoch after epoch, reshuffled with ``seed``)."""

    shuffle: bool = True
    """Reshuffle the pairs at every pass over the training set (seeded by ``seed``)."""


class RewardEvalConfig(Section):
    eval_steps: int = Field(0, ge=0)
    """Log the held-out pairwise accuracy (``eval/accuracy``, ``eval/loss``) every this many steps and at the
    end (0: at the end only). Needs ``data.eval_file`` or ``data.eval_fraction``."""

    eval_batch_size: int = Field(32, ge=1)
    """Pairs per forward pass of the evaluation and of the normalisation statistics."""


class RewardNormalizationConfig(Section):
    enabled: bool = True
    """After training, score a reference set with the trained model and save the mean (``reward_center``)
    and standard deviation (``reward_scale``) of its rewards in ``final/config.json``; ``rewards.reward_model``
    then returns ``(r - reward_center) / reward_scale``, so GRPO and PPO see rewards of mean 0 and unit
    scale on the reference distribution, whatever the reward model's raw offset."""

    reference_file: str | None = None
    """Pairs file (same format and columns as ``data.train_file``) whose chosen and rejected texts are the
    reference set. ``None``: the training pairs' chosen and rejected texts."""


class RewardModelConfig(Section):
    """Configuration of :class:`grpokit.trainers.reward_model.RewardModelTrainer`."""

    trainer: Literal["rm"] = "rm"
    """What the file configures: a reward model trained with ``grpokit rm``."""

    seed: int = 0
    """Seeds Python, NumPy, torch, the head's initialisation and the pair order: the same seed gives the same
    run."""

    max_steps: int = Field(200, ge=1)
    """Training steps (one step = ``data.pairs_per_step`` pairs and the optimizer steps on them)."""

    model: ModelConfig = Field(default_factory=ModelConfig)
    """The body: a local Hugging Face causal LM; a scalar head (``AutoModelForSequenceClassification``,
    ``num_labels=1``) is put on it. With ``model.lora.r > 0`` the adapters and the head train."""

    data: PreferenceDataConfig = Field(default_factory=PreferenceDataConfig)
    """Preference pairs."""

    evaluation: RewardEvalConfig = Field(default_factory=RewardEvalConfig)
    """Held-out pairwise accuracy."""

    normalization: RewardNormalizationConfig = Field(default_factory=RewardNormalizationConfig)
    """Reward center and scale saved with the model."""

    optim: OptimConfig = Field(default_factory=lambda: OptimConfig(learning_rate=1e-5))
    """Optimizer and schedule. ``mini_batch_size`` counts pairs (``None``: one optimizer step per step),
    ``micro_batch_tokens`` the tokens of both sides of a micro-batch's pairs."""

    logging: LoggingConfig = Field(default_factory=LoggingConfig)
    """Run directory, metrics and progress."""

    checkpoint: CheckpointConfig = Field(default_factory=CheckpointConfig)
    """Checkpoints and resume."""

    @model_validator(mode="after")
    def _check(self) -> RewardModelConfig:
        mbs = self.optim.mini_batch_size
        if mbs is not None and self.data.pairs_per_step % mbs:
            raise ValueError(
                f"optim.mini_batch_size ({mbs}) must divide data.pairs_per_step ({self.data.pairs_per_step})"
            )
        if self.data.eval_file is not None and self.data.eval_fraction > 0:
            raise ValueError("set data.eval_file or data.eval_fraction, not both")
        if self.evaluation.eval_steps and self.data.eval_file is None and self.data.eval_fraction == 0:
            raise ValueError(
                "evaluation.eval_steps needs held-out pairs: set data.eval_file or data.eval_fraction"
            )
        return self
