"""One typed configuration for every trainer: YAML file + command-line overrides, validated up front.

The tree is a set of sections (pydantic models); every field has a docstring, which is its description in
``grpokit train --help`` and in the generated config reference::

    GRPOConfig
      seed, max_steps                   run length and reproducibility
      model       ModelConfig           what to fine-tune (shared with PPO)
      data        DataConfig            where prompts come from (shared)
      generation  GenerationConfig      how completions are sampled (shared)
      rewards     RewardConfig          how completions are scored (shared)
      optim       OptimConfig           AdamW, schedule, clipping, minibatches (shared)
      logging     LoggingConfig         run directory, metrics, samples, progress bar (shared)
      checkpoint  CheckpointConfig      periodic saves and resume (shared)
      vllm        VLLMConfig            the vLLM engine of generation.backend: vllm (shared)
      algorithm   GRPOAlgorithmConfig   the loss (LossConfig, shared with PPO and RL) + GRPO-only knobs

The defaults are those of a real model (no task, no reward, 256 new tokens); the built-in demo's values
are a preset, ``grpokit/config/presets/demo.yaml`` (``grpokit presets``), whose ``demo`` section makes
the config a :class:`DemoGRPOConfig` / :class:`DemoPPOConfig`.

A PPO trainer reuses everything in :class:`TrainConfig` and brings its own ``algorithm`` section built on
:class:`PolicyLossConfig`. Field names are unique across the tree, so a field can be overridden from the
command line by its name alone (``--beta 0.04``) or by its dotted path (``--algorithm.beta 0.04``).

The package holds one module per concern: :mod:`~grpokit.config.base` (the ``Section`` base, field paths,
renamed fields, registry lookups), :mod:`~grpokit.config.sections` (the shared sections),
:mod:`~grpokit.config.loss` (the loss section shared by GRPO, PPO and classic RL, and the algorithm
sections), :mod:`~grpokit.config.trainers` (the composed trainer configs), :mod:`~grpokit.config.demo`
(the demo's section and configs), :mod:`~grpokit.config.loading` (YAML, overrides, presets, saving),
:mod:`~grpokit.config.starter` (the fields set first, the starter YAML of ``grpokit config init``),
:mod:`~grpokit.config.reward_model` (reward-model training, ``grpokit rm``), :mod:`~grpokit.config.user_code`
(user code named ``module:attr`` or ``file.py:attr``: rewards, environments, tools). It imports none of
grpokit's trainers, engine, rollout, models, rewards, data or tracking; names are checked against the
``grpokit.algorithms`` registries when a config is built.

All validation (unknown keys with a "did you mean", ranges, cross-field rules) happens when the config is
built, before any model is loaded; failures raise :class:`ConfigError` naming the field.
"""

from grpokit.config.base import (
    ConfigError,
    Section,
    check_registered,
    field_paths,
    registered_names,
    renamed_paths,
)
from grpokit.config.demo import DEMO_CONFIGS, DemoConfig, DemoGRPOConfig, DemoPPOConfig, DemoTrainConfig
from grpokit.config.environment import EnvConfig
from grpokit.config.iterative_rm import IterativeRewardModelConfig
from grpokit.config.loading import (
    PRESETS_DIR,
    apply_overrides,
    available_presets,
    build_config,
    check_runnable,
    field_help,
    load_config,
    preset_path,
    read_config_file,
    save_config,
    split_command_line,
    trainer_config_class,
)
from grpokit.config.loss import (
    GRPOAlgorithmConfig,
    LossConfig,
    PolicyLossConfig,
    PPOAlgorithmConfig,
    ValueLossConfig,
)
from grpokit.config.reward_model import (
    PreferenceDataConfig,
    RewardEvalConfig,
    RewardModelConfig,
    RewardNormalizationConfig,
)
from grpokit.config.sections import (
    CheckpointConfig,
    DataConfig,
    GenerationConfig,
    LoggingConfig,
    LoRAConfig,
    ModelConfig,
    OptimConfig,
    RewardConfig,
    VLLMConfig,
)
from grpokit.config.starter import COMMON_FIELDS, common_field_help, starter_yaml
from grpokit.config.trainers import TRAINER_CONFIGS, GRPOConfig, PPOConfig, TrainConfig
from grpokit.config.user_code import load_object

__all__ = [
    "EnvConfig",
    "COMMON_FIELDS",
    "CheckpointConfig",
    "ConfigError",
    "DataConfig",
    "DEMO_CONFIGS",
    "DemoConfig",
    "DemoGRPOConfig",
    "DemoPPOConfig",
    "DemoTrainConfig",
    "PRESETS_DIR",
    "available_presets",
    "check_runnable",
    "preset_path",
    "GRPOAlgorithmConfig",
    "GRPOConfig",
    "GenerationConfig",
    "IterativeRewardModelConfig",
    "LoRAConfig",
    "LoggingConfig",
    "ModelConfig",
    "OptimConfig",
    "PPOAlgorithmConfig",
    "PPOConfig",
    "PolicyLossConfig",
    "RewardConfig",
    "Section",
    "TRAINER_CONFIGS",
    "TrainConfig",
    "VLLMConfig",
    "LossConfig",
    "ValueLossConfig",
    "apply_overrides",
    "split_command_line",
    "build_config",
    "check_registered",
    "common_field_help",
    "field_help",
    "field_paths",
    "load_config",
    "load_object",
    "read_config_file",
    "registered_names",
    "renamed_paths",
    "save_config",
    "starter_yaml",
    "PreferenceDataConfig",
    "RewardEvalConfig",
    "RewardModelConfig",
    "RewardNormalizationConfig",
    "trainer_config_class",
]
