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
      demo        DemoConfig            the built-in demo's tiny model and warm-up (shared)
      algorithm   GRPOAlgorithmConfig   clipped loss (PolicyLossConfig, shared) + GRPO-only knobs

A PPO trainer reuses everything in :class:`TrainConfig` and brings its own ``algorithm`` section built on
:class:`PolicyLossConfig`. Field names are unique across the tree, so a field can be overridden from the
command line by its name alone (``--beta 0.04``) or by its dotted path (``--algorithm.beta 0.04``).

All validation (unknown keys with a "did you mean", ranges, cross-field rules) happens when the config is
built, before any model is loaded; failures raise :class:`ConfigError` naming the field.
"""

from __future__ import annotations

import contextlib
import difflib
import os
from pathlib import Path
from typing import Any, ClassVar, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

__all__ = [
    "CheckpointConfig",
    "ConfigError",
    "DataConfig",
    "DemoConfig",
    "GRPOAlgorithmConfig",
    "GRPOConfig",
    "GenerationConfig",
    "LoRAConfig",
    "LoggingConfig",
    "ModelConfig",
    "OptimConfig",
    "PPOAlgorithmConfig",
    "PPOConfig",
    "PolicyLossConfig",
    "RewardConfig",
    "TRAINER_CONFIGS",
    "TrainConfig",
    "VLLMConfig",
    "LossConfig",
    "ValueLossConfig",
    "apply_overrides",
    "build_config",
    "field_help",
    "field_paths",
    "load_config",
    "read_config_file",
    "save_config",
    "trainer_config_class",
]


class ConfigError(ValueError):
    """A configuration is invalid; the message names every offending field by its dotted path."""


class Section(BaseModel):
    """Base of every config section: unknown keys are rejected with a suggestion, field docstrings are kept."""

    # allow_inf_nan=False: a NaN or inf in any float field (a weight, a rate) would poison training silently.
    model_config = ConfigDict(
        extra="forbid", use_attribute_docstrings=True, validate_assignment=True, allow_inf_nan=False
    )

    renamed_fields: ClassVar[dict[str, str]] = {}
    """Old field name -> its new dotted path, relative to the section's parent (``algorithm.value_clip`` ->
    ``algorithm.cliprange_value``): an old name fails with a message naming the new one."""

    @model_validator(mode="before")
    @classmethod
    def _reject_unknown_keys(cls, data: Any) -> Any:
        # pydantic's own extra="forbid" message ("Extra inputs are not permitted") gives no hint; typos in
        # a YAML file are the most common config error, so name the closest valid key.
        if isinstance(data, dict):
            known = set(cls.model_fields)
            for key in data:
                if key in cls.renamed_fields:
                    raise ValueError(f"{key} was renamed to {cls.renamed_fields[key]}")
                if key not in known:
                    raise ValueError(_unknown_key_message(cls, str(key)))
        return data


def _unknown_key_message(cls: type[BaseModel], key: str) -> str:
    candidates = list(cls.model_fields)
    # A key placed in the wrong section (``beta`` at the top level) is matched against the nested paths too.
    nested = {path.rsplit(".", 1)[-1]: path for path in field_paths(cls) if "." in path}
    if key in nested:
        return f"unknown field '{key}'; did you mean '{nested[key]}'?"
    close = difflib.get_close_matches(key, candidates + list(nested), n=1, cutoff=0.6)
    hint = ""
    if close:
        hint = f"; did you mean '{nested.get(close[0], close[0])}'?"
    return f"unknown field '{key}'{hint} (valid: {', '.join(candidates)})"


# Built-in losses of the "loss" registry: accepted even where ``grpokit.algorithms.objectives`` (which
# registers them) is not importable, so that configs naming them load before any torch import fails.
_BUILTIN_LOSSES = ("cispo", "grpo", "gspo", "ppo", "sapo")


def registered_names(kind: str) -> list[str]:
    """The names registered in ``grpokit.algorithms`` for ``kind``, looked up now (not at import time), so a
    name registered with ``grpokit.algorithms.register`` before the config is built is accepted."""
    import importlib

    import grpokit.algorithms  # noqa: F401  (its modules register the built-in names)
    from grpokit.algorithms import registry

    if kind == "loss":
        with contextlib.suppress(ImportError):
            importlib.import_module("grpokit.algorithms.objectives")
    if kind not in registry.KINDS:
        return sorted(_BUILTIN_LOSSES) if kind == "loss" else []
    names = registry.available(kind)
    if kind == "loss":
        names = sorted(set(names) | set(_BUILTIN_LOSSES))
    return names


def check_registered(kind: str, value: str, field: str) -> str:
    """``value`` if it is a registered ``kind`` name, else a ``ValueError`` listing the valid names."""
    names = registered_names(kind)
    if value not in names:
        raise ValueError(
            f"unknown {field} {value!r}; valid names: {', '.join(names)} (register your own with "
            f"grpokit.algorithms.register({kind!r}, name))"
        )
    return value


# ---------------------------------------------------------------------------------------------------------
# Shared sections
# ---------------------------------------------------------------------------------------------------------


class LoRAConfig(Section):
    """LoRA adapters through peft (Hu et al., 2021): only the low-rank update ``(alpha / r) B A`` of each
    targeted weight trains. See ``docs/lora.md``."""

    r: int = Field(0, ge=0)
    """LoRA rank; 0 fine-tunes every weight (no adapters). With r > 0 only the adapters train, the reference
    policy (beta > 0) is the same model with its adapters disabled (no second copy in memory), and checkpoints
    hold the adapters only (``grpokit merge`` writes a full model)."""

    alpha: float | None = Field(None, gt=0)
    """Scale numerator of the update ``(alpha / r) B A``; ``None``: 2 * r."""

    dropout: float = Field(0.0, ge=0, lt=1)
    """LoRA dropout; must stay 0: the policy is updated in eval mode (the ratio is exactly 1 on-policy), so
    dropout would never act."""

    target_modules: list[str] | str = "all-linear"
    """Modules that get adapters: names or name suffixes (``[q_proj, v_proj]``), a regular expression, or
    ``all-linear`` (every linear layer except the output head)."""

    load_in_4bit: bool = False
    """QLoRA (Dettmers et al., 2023): keep the frozen base in 4-bit NF4 through bitsandbytes. Needs a CUDA GPU
    (an error on CPU) and ``pip install bitsandbytes``."""

    @model_validator(mode="after")
    def _check(self) -> LoRAConfig:
        if self.r == 0:
            changed = [
                k for k in ("alpha", "load_in_4bit") if getattr(self, k) != type(self).model_fields[k].default
            ]
            if changed:
                raise ValueError(f"{', '.join(changed)} set but r is 0 (no adapters): set r >= 1 to use LoRA")
        if self.dropout > 0:
            raise ValueError(
                f"dropout {self.dropout}: LoRA dropout never acts in grpokit (the policy is updated in eval mode so "
                "that the importance ratio is exactly 1 on-policy); leave it at 0"
            )
        return self


class ModelConfig(Section):
    name_or_path: str | None = None
    """Local directory of a Hugging Face causal LM (``save_pretrained`` layout). ``None`` runs the built-in
    demo: a tiny model and character tokenizer are built, warmed up on the task's teacher, then trained."""

    tokenizer_name_or_path: str | None = None
    """Tokenizer directory when it differs from ``name_or_path``."""

    dtype: Literal["float32", "bfloat16", "float16"] = "float32"
    """Parameter dtype of the policy (and reference model). float32 on CPU; bfloat16 on recent GPUs."""

    device: str = "auto"
    """``cpu``, ``cuda``, ``cuda:1``... ``auto`` picks CUDA when available, else CPU."""

    mixed_precision: Literal["no", "bf16"] = "no"
    """``bf16`` runs every forward pass (generation, reference, policy) under ``torch.autocast`` in bfloat16
    while weights, gradients and optimizer states stay in ``dtype``: faster matmuls on CPUs with AVX-512 BF16
    or AMX and on Ampere+ GPUs; log-probs then carry bfloat16 rounding (~1e-2). See docs/benchmarks.md."""

    lora: LoRAConfig = Field(default_factory=LoRAConfig)
    """LoRA / QLoRA adapters (``r: 0``, the default, trains every weight)."""


class DataConfig(Section):
    path: str | None = None
    """Prompt dataset: a ``.jsonl``, ``.csv`` or ``.parquet`` file, or a ``datasets`` dataset saved to disk.
    ``None`` generates problems from the built-in ``task``."""

    task: str | None = "addition"
    """Built-in task: the prompt source when ``path`` is unset, and the checker behind the ``task`` reward."""

    prompt_column: str = "prompt"
    """Column holding the prompt: a string, or a list of chat messages (then the chat template is applied)."""

    system_prompt: str | None = None
    """A system message put in front of every prompt (string prompts become chat messages, so the model's
    chat template applies), e.g. the answer-format instruction of a reasoning recipe."""

    required_columns: list[str] = Field(default_factory=list)
    """Extra columns every row must have (rewards receive all columns as keyword arguments)."""

    id_column: str | None = None
    """Column holding a unique id per row; a missing or repeated id is an error naming both rows."""

    prompts_per_step: int = Field(8, ge=1)
    """B: prompts drawn per training step; each gets ``num_generations`` completions."""

    shuffle: bool = True
    """Reshuffle the prompts at every pass over the dataset (seeded by ``seed``)."""

    num_train_problems: int = Field(20000, ge=1)
    """Problems generated from the built-in ``task`` for training (ignored when ``path`` is set): the GRPO
    prompts, and the demo's supervised demonstrations."""

    num_eval_problems: int = Field(500, ge=1)
    """Held-out problems of the built-in ``task`` for evaluation (its ``test`` split, disjoint from ``train``)."""


class GenerationConfig(Section):
    max_new_tokens: int = Field(12, ge=1)
    """Maximum completion length in tokens; a completion cut there is *truncated* (see overlong options)."""

    min_new_tokens: int = Field(0, ge=0)
    """EOS is suppressed until this many tokens have been generated."""

    temperature: float = Field(1.0, gt=0)
    """Sampling temperature (log-probs for the loss are computed at the same temperature)."""

    temperature_schedule: tuple[float, float] | None = None
    """``(low, high)``: temperatures spread linearly across each group's G samples (e.g. ``[0.7, 1.0]``);
    overrides ``temperature``. ``None`` samples every completion at ``temperature``."""

    top_p: float = Field(1.0, gt=0, le=1)
    """Nucleus sampling: keep the smallest token set with this cumulative probability (1 disables)."""

    top_k: int = Field(0, ge=0)
    """Keep only the k most likely tokens (0 disables)."""

    max_prompt_length: int | None = Field(None, ge=1)
    """Prompts longer than this many tokens are truncated or rejected (``prompt_truncation``)."""

    prompt_truncation: Literal["left", "error", "skip"] = "left"
    """What a prompt longer than ``max_prompt_length`` gets: ``left`` keeps its end, ``skip`` drops the row
    before training, ``error`` raises naming the row. Checked for every row before the model is loaded;
    truncated or skipped rows are counted in ``data/truncated_prompts`` / ``data/skipped_prompts``."""

    per_group_seed: bool = False
    """Seed the sampling of each group from (seed, generation round, the prompt's index in the step's batch),
    so that a group's completions do not depend on how many processes share the batch or which one samples
    it: N processes then reproduce a 1-process run. Costs one generate call per prompt (slower sampling).
    Off: one seeded stream per process (per round and rank when there are several)."""

    backend: Literal["transformers", "vllm"] = "transformers"
    """Generation engine. ``transformers`` samples with the policy itself (same weights, nothing to sync).
    ``vllm`` runs a vLLM engine on a copy of the weights, pushed into it after every training step; its
    rollout log-probs feed ``algorithm.rollout_importance_sampling``; its own settings are in the ``vllm``
    section. Needs ``pip install grpokit[vllm]`` (CPU: ``scripts/test-vllm.sh``), one process and no
    ``model.lora``; see docs/vllm.md."""

    renamed_fields: ClassVar[dict[str, str]] = {
        "vllm_kv_cache_gib": "vllm.kv_cache_gib",
        "vllm_gpu_memory_utilization": "vllm.gpu_memory_utilization",
        "vllm_weight_sync_timeout_s": "vllm.weight_sync_timeout_s",
    }

    @model_validator(mode="after")
    def _check(self) -> GenerationConfig:
        if self.min_new_tokens > self.max_new_tokens:
            raise ValueError(
                f"min_new_tokens ({self.min_new_tokens}) must not exceed max_new_tokens ({self.max_new_tokens})"
            )
        if self.temperature_schedule is not None:
            lo, hi = self.temperature_schedule
            if not 0 < lo <= hi:
                raise ValueError(f"temperature_schedule must satisfy 0 < low <= high, got {[lo, hi]}")
        if self.prompt_truncation == "skip" and self.max_prompt_length is None:
            raise ValueError(
                "prompt_truncation 'skip' needs max_prompt_length (the length beyond which to skip)"
            )
        return self


class VLLMConfig(Section):
    """The vLLM engine of ``generation.backend: vllm`` (see docs/vllm.md)."""

    kv_cache_gib: float | None = Field(None, gt=0)
    """vLLM's KV-cache size in GiB. ``None``: vLLM sizes it, from ``gpu_memory_utilization`` on GPU and from
    free memory on CPU (where the environment variable ``VLLM_CPU_KVCACHE_SPACE``, when set, overrides this
    field)."""

    gpu_memory_utilization: float = Field(0.3, gt=0, le=1)
    """Fraction of the GPU's memory vLLM may take for its weights and KV cache (GPU only). The engine shares
    the GPU with the policy, its gradients and optimizer states, hence 0.3 (TRL's default when vLLM is
    colocated with training) rather than vLLM's own 0.9."""

    weight_sync_timeout_s: float = Field(300, gt=0)
    """Deadline in seconds of each push of the policy's weights into the vLLM engine; past it training stops
    with an error instead of hanging on a stuck engine."""


class RewardConfig(Section):
    reward_funcs: list[str] = Field(default_factory=lambda: ["task"])
    """Reward functions ``f(prompts, completions, **columns) -> list[float | None]``: built-in names
    (``task``, ``accuracy``, ``format``, ``length_penalty``), ``package.module:function`` or
    ``path/to/file.py:function``. ``None`` in a result means "not applicable" for that sample."""

    reward_weights: list[float] | None = None
    """One weight per reward function, then one for ``reward_model`` if set (default: all 1)."""

    reward_kwargs: dict[str, dict[str, Any]] = Field(default_factory=dict)
    """Options per reward, keyed by its entry in ``reward_funcs``: e.g. ``{format: {pattern: '^\\d+$'}}``."""

    reward_model: str | None = None
    """Local directory of an ``AutoModelForSequenceClassification``; its logit 0 on prompt+completion is a
    reward, added after ``reward_funcs``."""

    process_reward_func: str | None = None
    """Process reward ``f(prompts, completions, **columns) -> list[list[(step_end, score)]]``: per-step scores
    that drive process-supervised advantages (DeepSeekMath); ``reward_funcs`` are then only logged."""

    process_reward_unit: Literal["token", "char"] = "token"
    """Whether a process reward's ``step_end`` is a completion token index or a character offset."""

    overlong_buffer_length: int = Field(0, ge=0)
    """DAPO soft overlong punishment: the last this many tokens before ``generation.max_new_tokens`` are a
    buffer where the reward falls linearly from 0 to ``-overlong_penalty`` (0 disables)."""

    overlong_penalty: float = Field(1.0, ge=0)
    """Penalty at ``generation.max_new_tokens`` for the soft overlong punishment."""

    answer_column: str = "answer"
    """Column with the reference answer, read by the ``task`` and ``accuracy`` rewards."""

    reward_failure: Literal["raise", "fallback"] = "raise"
    """A reward call that raises, times out or returns the wrong number of values, or a NaN value: ``raise``
    stops with an error naming the function and the batch or completion; ``fallback`` scores the affected
    completions with ``reward_fallback_value``, counts them in ``rewards/<name>/failures`` and logs the
    first traceback once."""

    reward_fallback_value: float | None = 0.0
    """Score of a failed completion under ``reward_failure: fallback``; ``null`` leaves it unscored (out of
    its group's baseline and of the loss)."""

    reward_timeout_s: float | None = Field(None, gt=0)
    """Seconds one reward call (all N completions) may take, enforced from a worker thread (a hung Python
    function keeps running in the background; the ``code_tests`` sandbox kills its processes). ``null``: no
    limit."""

    @model_validator(mode="after")
    def _check(self) -> RewardConfig:
        if not self.reward_funcs and self.reward_model is None and self.process_reward_func is None:
            raise ValueError("no reward: set reward_funcs, reward_model or process_reward_func")
        if len(set(self.reward_funcs)) != len(self.reward_funcs):
            raise ValueError(f"reward_funcs has duplicates: {self.reward_funcs}")
        n = len(self.reward_funcs) + (self.reward_model is not None)
        if self.reward_weights is not None and len(self.reward_weights) != n:
            raise ValueError(
                f"reward_weights has {len(self.reward_weights)} entries, expected {n} "
                "(one per reward_funcs entry, then one for reward_model)"
            )
        unknown = set(self.reward_kwargs) - set(self.reward_funcs)
        if unknown:
            raise ValueError(f"reward_kwargs names {sorted(unknown)}, which are not in reward_funcs")
        return self


class OptimConfig(Section):
    learning_rate: float = Field(1e-4, gt=0)
    """Peak AdamW learning rate."""

    weight_decay: float = Field(0.0, ge=0)
    """AdamW decoupled weight decay."""

    adam_beta1: float = Field(0.9, ge=0, lt=1)
    """AdamW beta1."""

    adam_beta2: float = Field(0.99, ge=0, lt=1)
    """AdamW beta2."""

    adam_epsilon: float = Field(1e-8, gt=0)
    """AdamW epsilon."""

    lr_scheduler: Literal["constant", "linear", "cosine"] = "constant"
    """Decay after warmup, over ``max_steps`` training steps."""

    warmup_steps: int = Field(0, ge=0)
    """Linear warmup length in training steps (one step = one generation batch)."""

    warmup_ratio: float = Field(0.0, ge=0, le=1)
    """Warmup as a fraction of ``max_steps``; exclusive with ``warmup_steps``."""

    max_grad_norm: float | None = Field(1.0, gt=0)
    """Clip the global gradient norm to this value before each optimizer step (``None``: no clipping)."""

    mini_batch_size: int | None = Field(None, ge=1)
    """Responses per optimizer step; each of the ``num_iterations`` passes over the N = B*G responses makes
    N / mini_batch_size optimizer steps. ``None``: one optimizer step per pass (fully on-policy)."""

    gradient_accumulation_steps: int = Field(1, ge=1)
    """Micro-batches per minibatch: gradients are accumulated over them (memory, not maths, changes)."""

    gradient_checkpointing: bool = False
    """Recompute each decoder layer's activations in backward instead of storing them: the update's
    activation memory drops to about one layer's worth for about a third more update compute (measured in
    docs/benchmarks.md). Results are unchanged."""

    max_consecutive_nonfinite: int = Field(3, ge=1)
    """An optimizer step whose loss or gradient norm is NaN/inf is skipped (weights and optimizer state
    unchanged) and counted in ``faults/nonfinite_skipped``; this many skipped in a row stop the run."""

    @model_validator(mode="after")
    def _check(self) -> OptimConfig:
        if self.warmup_steps and self.warmup_ratio:
            raise ValueError("set warmup_steps or warmup_ratio, not both")
        if self.mini_batch_size is not None and self.mini_batch_size % self.gradient_accumulation_steps:
            raise ValueError(
                f"mini_batch_size ({self.mini_batch_size}) must be divisible by "
                f"gradient_accumulation_steps ({self.gradient_accumulation_steps})"
            )
        return self


class LoggingConfig(Section):
    output_dir: str = "runs"
    """Parent directory of run directories."""

    run_name: str | None = None
    """Run directory name under ``output_dir`` (default: ``<trainer>-<date>-<time>``)."""

    log_sample_groups: int = Field(2, ge=0)
    """Groups per step written to ``samples.jsonl`` (prompt, completions, rewards, advantages)."""

    report_to: list[str] = Field(default_factory=lambda: ["tensorboard"])
    """Experiment trackers fed every step besides ``metrics.jsonl``: any of ``tensorboard``
    (``RUN_DIR/tensorboard``), ``wandb`` (offline unless configured), ``mlflow`` (local store in the run
    directory), ``trackio`` (local); ``[]`` for none. Optional ones need their extra, e.g. ``grpokit[wandb]``."""

    tracker_options: dict[str, dict[str, Any]] = Field(default_factory=dict)
    """Keyword arguments per tracker, e.g. ``{wandb: {project: my-project, mode: online}}``."""

    report: bool = True
    """Write the self-contained HTML report ``RUN_DIR/report.html`` at the end of the run."""

    quiet: bool = False
    """No progress bar and no console summaries."""

    json_logs: bool = False
    """Print one JSON line of metrics per step on stdout instead of the progress bar (for clusters)."""


class CheckpointConfig(Section):
    save_steps: int = Field(0, ge=0)
    """Save a checkpoint every this many steps (0: only the final one)."""

    save_total_limit: int | None = Field(2, ge=1)
    """Keep at most this many periodic checkpoints, deleting the oldest (``None``: keep all)."""

    resume: str | None = None
    """Continue a run: its run directory, a checkpoint directory, or ``latest`` (newest run in output_dir)."""


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
    """A fixed number of supervised warm-up steps; ``None`` stops on ``sft_stop_accuracy`` instead."""

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


class LossConfig(Section):
    """The loss section shared by every trainer (GRPO and PPO for language models, classic RL): one set of
    names for the clipped surrogate, its KL term, its aggregation and its passes over a batch."""

    loss_type: str = "grpo"
    """Policy objective, a name registered in ``grpokit.algorithms`` (kind ``loss``): ``grpo`` (the clipped
    surrogate), ``gspo``, ``cispo``, ``sapo``, ``ppo``, or your own."""

    beta: float = Field(0.0, ge=0)
    """KL penalty coefficient against the reference model; 0 never loads a reference model."""

    kl_estimator: str = "k3"
    """Per-token KL estimator, a name registered in ``grpokit.algorithms`` (kind ``kl``): Schulman's k1/k2/k3
    (k3 is DeepSeekMath's unbiased, non-negative one), ``k3+`` (k3's value with k2's gradient), or your own.
    As a loss term (``beta > 0`` in GRPO and classic RL) k1 is refused: its expected gradient is zero."""

    epsilon_low: float = Field(0.2, gt=0)
    """Lower clip range: the ratio is clipped at 1 - epsilon_low."""

    epsilon_high: float | None = Field(None, gt=0)
    """Upper clip range, 1 + epsilon_high (DAPO's clip-higher uses 0.28). ``None``: same as epsilon_low."""

    ratio_level: str = "token"
    """Importance ratio per token (PPO/GRPO) or per sequence (GSPO's length-normalised sequence ratio); a
    name registered in ``grpokit.algorithms`` (kind ``ratio``)."""

    loss_aggregation: str = "sequence_mean"
    """How token losses become one number, a name registered in ``grpokit.algorithms`` (kind
    ``aggregation``): mean per sequence then over sequences (``sequence_mean``, GRPO paper), mean over all
    tokens of the batch (``token_mean``, DAPO), or sum divided by a constant (``constant``, Dr. GRPO)."""

    num_iterations: int = Field(1, ge=1)
    """mu: passes over each generation batch. 1 = on-policy (old log-probs are the current ones, detached)."""

    entropy_coef: float = Field(0.0, ge=0)
    """Entropy bonus coefficient (subtracted from the loss)."""

    kl_in_reward: ClassVar[bool] = False
    """Whether the trainer puts the KL in the reward (PPO for language models) rather than in the loss."""

    @field_validator("loss_type")
    @classmethod
    def _known_loss(cls, value: str) -> str:
        return check_registered("loss", value, "loss_type")

    @field_validator("kl_estimator")
    @classmethod
    def _known_kl(cls, value: str) -> str:
        return check_registered("kl", value, "kl_estimator")

    @field_validator("ratio_level")
    @classmethod
    def _known_ratio(cls, value: str) -> str:
        return check_registered("ratio", value, "ratio_level")

    @field_validator("loss_aggregation")
    @classmethod
    def _known_aggregation(cls, value: str) -> str:
        return check_registered("aggregation", value, "loss_aggregation")

    @model_validator(mode="after")
    def _check_kl_term(self) -> LossConfig:
        if self.beta > 0 and self.kl_estimator == "k1" and not self.kl_in_reward:
            raise ValueError(
                f"kl_estimator 'k1' with beta {self.beta}: as a loss term k1 = log(pi / pi_ref) has zero "
                "expected gradient, so it adds no regularisation toward the reference; use k2, k3 or 'k3+'"
            )
        return self


class ValueLossConfig(Section):
    """The value-model fields shared by PPO for language models and PPO in classic RL."""

    gamma: float = Field(1.0, ge=0, le=1)
    """GAE discount per step; 1 (no discount) is usual for language models (one step = one token)."""

    gae_lambda: float = Field(0.95, ge=0, le=1)
    """GAE lambda: 1 gives Monte-Carlo returns (no value bias, high variance), 0 one-step TD targets."""

    whiten_advantages: bool = True
    """Normalise the advantages of each batch to mean 0 and variance 1 over its real steps."""

    vf_coef: float = Field(0.1, ge=0)
    """c_v: value-loss weight in ``L = -L_clip + c_v * L_V - c_H * H``."""

    cliprange_value: float | None = Field(0.2, gt=0)
    """Clip range of the value loss around the rollout-time values (PPO2); ``None``: unclipped."""


class PolicyLossConfig(LossConfig):
    """The shared loss plus what both trainers of language models have: a refreshable reference model and
    DAPO's overlong filtering."""

    ref_model_sync_steps: int = Field(0, ge=0)
    """Copy the policy into the reference model every this many steps (iterative GRPO); 0 never."""

    overlong_filtering: bool = False
    """DAPO: completions cut at max_new_tokens are masked out of the loss (still in the group baseline)."""

    renamed_fields: ClassVar[dict[str, str]] = {
        "overlong_buffer_length": "rewards.overlong_buffer_length",
        "overlong_penalty": "rewards.overlong_penalty",
    }

    @model_validator(mode="after")
    def _check_reference(self) -> PolicyLossConfig:
        if self.ref_model_sync_steps > 0 and self.beta == 0:
            raise ValueError(
                "ref_model_sync_steps is set but beta is 0: there is no reference model to refresh "
                "(set beta > 0, or ref_model_sync_steps to 0)"
            )
        return self


class GRPOAlgorithmConfig(PolicyLossConfig):
    """The clipped loss plus what only GRPO has: groups, group advantages and dynamic sampling."""

    num_generations: int = Field(8, ge=2)
    """G: completions sampled per prompt (a group needs two to have a baseline)."""

    advantage_estimator: str = "grpo"
    """Group advantage, a name registered in ``grpokit.algorithms`` (kind ``advantage``): (r - mean)/std per
    group (``grpo``), std over the batch (``grpo_batch_norm``), no std (``dr_grpo``, Dr. GRPO), ranks
    (``rank``), leave-one-out mean (``rloo``), or your own."""

    @field_validator("advantage_estimator")
    @classmethod
    def _known_estimator(cls, value: str) -> str:
        return check_registered("advantage", value, "advantage_estimator")

    advantage_eps: float = Field(1e-4, gt=0)
    """Added to the standard deviation when advantages are normalised."""

    dynamic_sampling: bool = False
    """DAPO: drop groups whose rewards all equal (zero advantage) and draw more prompts to refill the batch."""

    max_dynamic_sampling_rounds: int = Field(3, ge=0)
    """Extra generation rounds dynamic sampling may use per step; the step goes on with fewer groups after."""

    rollout_importance_sampling: Literal["auto", "none", "token", "sequence"] = "auto"
    """Truncated importance sampling (Yao et al. 2025) against the rollout engine's log-probs: each token's
    surrogate is weighted by ``min(pi_trainer / pi_rollout, rollout_importance_cap)``, per token (``token``)
    or with the product over the response (``sequence``). ``auto``: ``token`` with ``generation.backend:
    vllm``, whose kernels compute other probabilities than the trainer's, ``none`` with ``transformers``,
    whose sampler is the policy itself. Logged as ``rollout_is/*``; see docs/vllm.md."""

    rollout_importance_cap: float = Field(2.0, gt=0)
    """C, the truncation of the rollout importance weights (2 in Yao et al. 2025)."""


class PPOAlgorithmConfig(ValueLossConfig, PolicyLossConfig):
    """The clipped loss plus PPO's own parts: KL in the reward, a value model, GAE (the baseline to GRPO).

    Defaults that differ from the shared loss follow the usual PPO for language models (InstructGPT, TRL):
    a KL-penalised reward with the k1 estimator, token-mean losses and 4 epochs per batch.
    """

    loss_type: str = "ppo"
    """Policy objective, a name registered in ``grpokit.algorithms`` (kind ``loss``); ``ppo``: the clipped
    surrogate on GAE advantages."""

    beta: float = Field(0.05, ge=0)
    """Initial KL coefficient. PPO puts the KL *in the reward*: every token gets ``-beta * KL_t`` and the last
    also gets the score (not a loss term as in GRPO). Fixed, or adapted when ``adaptive_kl``; 0 never loads a
    reference model."""

    kl_estimator: str = "k1"
    """Per-token KL estimator in the reward (k1 = log pi_old - log pi_ref, as InstructGPT and TRL), a name
    registered in ``grpokit.algorithms`` (kind ``kl``)."""

    kl_in_reward: ClassVar[bool] = True

    loss_aggregation: str = "token_mean"
    """How token losses (policy and value) become one number; token mean is PPO's usual (see the GRPO
    ``loss_aggregation`` for the others)."""

    num_iterations: int = Field(4, ge=1)
    """PPO epochs: passes over each generation batch (4 in TRL and cleanrl). With 1 the old log-probs are the
    current ones, detached."""

    num_generations: int = Field(1, ge=1)
    """Completions sampled per prompt; 1 is classic PPO (the value model is the baseline, not a group)."""

    vf_coef: float = Field(0.1, ge=0)
    """c_v: value-loss weight in ``L = -L_clip + c_v * L_V - c_H * H`` (TRL 0.1; the seed's example 0.5)."""

    value_model: Literal["separate", "shared"] = "separate"
    """``separate``: a copy of the policy's body with a scalar head (as large as the policy); ``shared``: a
    scalar head on the policy's own body (only the head is new; the value loss also trains the body)."""

    value_learning_rate: float | None = Field(None, gt=0)
    """AdamW learning rate of the value model (same schedule as the policy); ``None``: ``learning_rate``."""

    adaptive_kl: bool = False
    """Adapt ``beta`` to keep the KL near ``kl_target`` (Ziegler et al. 2019); False keeps it fixed."""

    kl_target: float = Field(6.0, gt=0)
    """Target of the adaptive controller: KL per completion (sum over its tokens, in nats)."""

    kl_horizon: int = Field(10000, ge=1)
    """Completions over which the adaptive controller applies a full 20% correction of ``beta``."""

    renamed_fields: ClassVar[dict[str, str]] = {
        **PolicyLossConfig.renamed_fields,
        "value_clip": "algorithm.cliprange_value",
    }


# ---------------------------------------------------------------------------------------------------------
# Trainer configs
# ---------------------------------------------------------------------------------------------------------


class TrainConfig(Section):
    """Everything a trainer of language models shares (subclassed by GRPOConfig and PPOConfig)."""

    seed: int = 0
    """Seeds Python, NumPy, torch, the prompt order and sampling: the same seed gives the same run."""

    max_steps: int = Field(1000, ge=1)
    """Training steps (one step = one batch of prompts, its rollouts and the updates on them). The default
    is the built-in demo's GRPO phase (0.5 to 3 minutes on one CPU core, see docs/demo.md)."""

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

    demo: DemoConfig = Field(default_factory=DemoConfig)
    """The built-in demo (used when model.name_or_path is unset)."""

    @model_validator(mode="after")
    def _check_cross_section(self) -> TrainConfig:
        if self.data.path is None and self.data.task is None:
            raise ValueError("data: set data.path (a prompt file) or data.task (a built-in task)")
        if "task" in self.rewards.reward_funcs and self.data.task is None:
            raise ValueError("rewards.reward_funcs uses 'task' but data.task is unset")
        if self.model.name_or_path is None and self.data.task is None:
            raise ValueError("model.name_or_path is unset (demo mode), which needs data.task")
        if self.generation.backend != "vllm":
            defaults = VLLMConfig.model_fields
            changed = [f"vllm.{k}" for k in defaults if getattr(self.vllm, k) != defaults[k].default]
            if changed:
                raise ValueError(
                    f"{', '.join(changed)} set but generation.backend is {self.generation.backend!r}: set "
                    "generation.backend: vllm"
                )
        if self.generation.backend == "vllm" and self.model.lora.r > 0:
            raise ValueError(
                "generation.backend 'vllm' with model.lora: the engine needs full weights every step (merging "
                "the adapters each step is not implemented); set model.lora.r: 0 or generation.backend: "
                "transformers"
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
    if config.rewards.overlong_buffer_length >= config.generation.max_new_tokens:
        raise ValueError(
            f"rewards.overlong_buffer_length ({config.rewards.overlong_buffer_length}) must be smaller "
            f"than generation.max_new_tokens ({config.generation.max_new_tokens})"
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
    def _check_process_estimator(self) -> GRPOConfig:
        estimator = self.algorithm.advantage_estimator
        if self.rewards.process_reward_func is not None and estimator != "grpo":
            raise ValueError(
                f"algorithm.advantage_estimator '{estimator}' applies to outcome rewards; with "
                "rewards.process_reward_func the advantages are DeepSeekMath's process-supervised ones "
                "(leave advantage_estimator at 'grpo')"
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


TRAINER_CONFIGS: dict[str, type[TrainConfig]] = {"grpo": GRPOConfig, "ppo": PPOConfig}
"""Config class of each trainer, by the name in the ``trainer`` field."""


# ---------------------------------------------------------------------------------------------------------
# Loading, overrides, saving
# ---------------------------------------------------------------------------------------------------------


def field_paths(cls: type[BaseModel], prefix: str = "") -> list[str]:
    """Dotted paths of every leaf field of a config class, in declaration order."""
    paths = []
    for name, info in cls.model_fields.items():
        ann = info.annotation
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            paths += field_paths(ann, f"{prefix}{name}.")
        else:
            paths.append(prefix + name)
    return paths


def renamed_paths(cls: type[BaseModel], prefix: str = "") -> dict[str, str]:
    """Old dotted path -> new dotted path of every renamed field in a config class's tree."""
    parent = prefix.rsplit(".", 2)[0] + "." if prefix.count(".") > 1 else ""
    out = {prefix + old: parent + new for old, new in getattr(cls, "renamed_fields", {}).items()}
    for name, info in cls.model_fields.items():
        ann = info.annotation
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            out.update(renamed_paths(ann, f"{prefix}{name}."))
    return out


def _check_renamed(cls: type[BaseModel], data: dict[str, Any], source: str) -> None:
    renamed = renamed_paths(cls)

    def walk(node: dict[str, Any], prefix: str) -> None:
        for key, value in node.items():
            path = f"{prefix}{key}"
            if path in renamed:
                raise ConfigError(f"invalid {source}:\n  {path} was renamed to {renamed[path]}")
            if isinstance(value, dict):
                walk(value, path + ".")

    walk(data, "")


def field_help(cls: type[BaseModel]) -> list[tuple[str, str, str]]:
    """``(dotted path, default as YAML, description)`` for every leaf field: the config reference."""
    rows = []
    default = cls()
    for path in field_paths(cls):
        section: Any = cls
        value: Any = default
        for part in path.split("."):
            info = section.model_fields[part]
            value = getattr(value, part)
            section = info.annotation
        text = " ".join((info.description or "").split())
        shown = yaml.safe_dump(_to_plain(value), default_flow_style=True).replace("\n...\n", "").strip()
        rows.append((path, shown, text))
    return rows


def _to_plain(value: Any) -> Any:
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    if isinstance(value, tuple):
        return list(value)
    return value


def apply_overrides(cls: type[BaseModel], data: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """Set ``overrides`` (keys: a field name or its dotted path) into the nested dict ``data``.

    Values given as strings are parsed as YAML scalars/flow collections (``0.04``, ``true``, ``null``,
    ``[0.7, 1.0]``), so the command line and the file mean the same thing.
    """
    paths = field_paths(cls)
    by_name: dict[str, list[str]] = {}
    for path in paths:
        by_name.setdefault(path.rsplit(".", 1)[-1], []).append(path)
    out = _deep_copy(data)
    for key, raw in overrides.items():
        key = key.replace("-", "_")
        if key in paths:
            path = key
        elif key in by_name and len(by_name[key]) == 1:
            path = by_name[key][0]
        elif key in by_name:
            raise ConfigError(f"--{key} is ambiguous: use one of {', '.join('--' + p for p in by_name[key])}")
        elif renamed := [old for old in renamed_paths(cls) if key in (old, old.rsplit(".", 1)[-1])]:
            raise ConfigError(f"--{renamed[0]} was renamed to --{renamed_paths(cls)[renamed[0]]}")
        else:
            close = difflib.get_close_matches(key, paths + list(by_name), n=1, cutoff=0.6)
            hint = f"; did you mean --{close[0]}?" if close else ""
            raise ConfigError(f"unknown option --{key}{hint}")
        value = yaml.safe_load(raw) if isinstance(raw, str) else raw
        node = out
        *parents, leaf = path.split(".")
        for part in parents:
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            elif not isinstance(child, dict):
                raise ConfigError(
                    f"{part}: expected a mapping in the config file, got {type(child).__name__}"
                )
            node = child
        node[leaf] = value
    return out


def _deep_copy(data: dict[str, Any]) -> dict[str, Any]:
    return {k: _deep_copy(v) if isinstance(v, dict) else v for k, v in data.items()}


def build_config(cls: type[TrainConfig], data: dict[str, Any], *, source: str = "config") -> TrainConfig:
    """Validate ``data`` into ``cls``; every problem is reported as ``ConfigError`` naming its field path."""
    _check_renamed(cls, data, source)
    try:
        return cls.model_validate(data)
    except ValidationError as err:
        lines = []
        for e in err.errors():
            loc = ".".join(str(p) for p in e["loc"]) or "(top level)"
            msg = e["msg"].removeprefix("Value error, ")
            if e["type"] not in ("value_error", "assertion_error") and "input" in e:
                msg += f" (got {e['input']!r})"
            lines.append(f"{loc}: {msg}")
        raise ConfigError(f"invalid {source}:\n  " + "\n  ".join(lines)) from None


def read_config_file(path: str | os.PathLike) -> dict[str, Any]:
    """The raw mapping of a YAML config file, not yet validated (an empty file is ``{}``).

    Raises ``ConfigError`` for a missing file, invalid YAML or a top level that is not a mapping.
    """
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as err:
        raise ConfigError(f"cannot read config file {path}: {err.strerror}") from None
    try:
        loaded = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise ConfigError(f"{path} is not valid YAML: {err}") from None
    if loaded is None:
        return {}
    if not isinstance(loaded, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of fields, got {type(loaded).__name__}")
    return loaded


def trainer_config_class(data: dict[str, Any], overrides: dict[str, Any] | None = None) -> type[TrainConfig]:
    """The config class named by the ``trainer`` field (an override wins over the file; default ``grpo``)."""
    overrides = overrides or {}
    name = overrides.get("trainer", data.get("trainer", "grpo"))
    if name not in TRAINER_CONFIGS:
        raise ConfigError(f"trainer: unknown trainer {name!r}; valid: {', '.join(TRAINER_CONFIGS)}")
    return TRAINER_CONFIGS[name]


def load_config(
    path: str | os.PathLike | None = None,
    overrides: dict[str, Any] | None = None,
    *,
    cls: type[TrainConfig] | None = GRPOConfig,
) -> TrainConfig:
    """Read a YAML config (or start from the defaults), apply overrides, validate.

    ``cls=None`` picks the class from the ``trainer`` field of the file or the overrides
    (:data:`TRAINER_CONFIGS`). Raises ``ConfigError`` for a missing or malformed file, unknown keys (with a
    suggestion) and invalid values, always naming the file and the field.
    """
    data: dict[str, Any] = {}
    source = "config"
    if path is not None:
        source = str(path)
        data = read_config_file(path)
    if cls is None:
        cls = trainer_config_class(data, overrides)
    if overrides:
        data = apply_overrides(cls, data, overrides)
    return build_config(cls, data, source=source)


def save_config(config: BaseModel, path: str | os.PathLike) -> None:
    """Write the fully resolved config (every field, defaults included) as YAML."""
    Path(path).write_text(
        yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False, default_flow_style=None),
        encoding="utf-8",
    )
