"""The sections shared by every trainer of language models: model, data, generation, vLLM, rewards,
optimizer, logging, checkpoints."""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import Field, model_validator

from grpokit.config.base import Section
from grpokit.config.iterative_rm import IterativeRewardModelConfig


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
    """Local directory of a Hugging Face causal LM (``save_pretrained`` layout); required by ``grpokit train``
    except with the ``demo`` preset, which builds a tiny model and warms it up itself."""

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

    task: str | None = None
    """Built-in task (e.g. ``addition``): the prompt source when ``path`` is unset, and the checker behind
    the ``task`` reward. ``None``: prompts come from ``path``."""

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
    max_new_tokens: int = Field(256, ge=1)
    """Maximum completion length in tokens; a completion cut there is *truncated* (see overlong options)."""

    min_new_tokens: int = Field(0, ge=0)
    """EOS is suppressed until this many tokens have been generated."""

    temperature: float = Field(1.0, gt=0)
    """Sampling temperature (log-probs for the loss are computed at the same temperature)."""

    temperature_schedule: tuple[float, float] | None = None
    """``(low, high)``: temperatures spread linearly across each group's G samples (e.g. ``[0.7, 1.0]``);
    overrides ``temperature``. ``None`` samples every completion at ``temperature``."""

    temperature_schedule_spacing: Literal["inclusive", "exclusive"] = "inclusive"
    """How ``temperature_schedule`` spreads over a group's G samples: ``inclusive`` gives sample i
    ``low + (high - low) * i / (G - 1)`` (both ends reached); ``exclusive`` gives ``low + (high - low) * i / G``
    (``high`` never reached), the founding code's ``0.7 + 0.3 * i / K`` (0.7 to 0.9625 for K = 8)."""

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

    backend: Literal["transformers", "vllm", "vllm_server"] = "transformers"
    """Generation engine. ``transformers`` samples with the policy itself (same weights, nothing to sync).
    ``vllm`` runs a vLLM engine on a copy of the weights, pushed into it after every training step; its
    rollout log-probs feed ``algorithm.rollout_importance_sampling``; its own settings are in the ``vllm``
    section. Needs ``pip install grpokit[vllm]`` (CPU: ``scripts/test-vllm.sh``), one process and no
    ``model.lora``; see docs/vllm.md. ``vllm_server``: the same, with the engine in a ``grpokit vllm-serve``
    server (other devices or another machine) at ``vllm.server_host:vllm.server_port``; the trainer needs no
    vLLM."""

    async_rollouts: bool = False
    """Overlap generation with training: a rollout worker process (its own model copy and CPU thread) samples
    the next steps' batches while the trainer updates, with weights at most ``max_staleness`` policy versions
    old, corrected by ``algorithm.rollout_importance_sampling`` (``auto`` turns it on). One process,
    ``backend: transformers`` (or ``vllm_server``: the server samples instead of a worker process), no LoRA,
    no dynamic sampling; see docs/async.md."""

    max_staleness: int = Field(1, ge=1)
    """With ``async_rollouts``: how many policy versions (training steps) the weights that sampled a batch may
    lag the policy that trains on it; 1 is one-step-off (the batch of step s comes from the weights after step
    s - 2). Larger values keep more batches in flight, each staler."""

    async_timeout_s: float = Field(600, gt=0)
    """With ``async_rollouts``: deadline in seconds of every wait on the rollout worker (a batch, the
    acknowledgement of a weight version); past it the worker is stopped and the run ends with an error and a
    checkpoint of the last completed step."""

    async_start_timeout_s: float = Field(300, gt=0)
    """With ``async_rollouts``: deadline in seconds for the rollout worker to start (import, build its model)."""

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
        if not self.async_rollouts:
            defaults = type(self).model_fields
            changed = [
                k for k in ("max_staleness", "async_timeout_s", "async_start_timeout_s")
                if getattr(self, k) != defaults[k].default
            ]  # fmt: skip
            if changed:
                raise ValueError(
                    f"{', '.join(changed)} set but async_rollouts is off: set async_rollouts: true"
                )
        if self.prompt_truncation == "skip" and self.max_prompt_length is None:
            raise ValueError(
                "prompt_truncation 'skip' needs max_prompt_length (the length beyond which to skip)"
            )
        return self


class VLLMConfig(Section):
    """The vLLM engine of ``generation.backend: vllm`` or ``vllm_server`` (see docs/vllm.md)."""

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

    server_host: str = "127.0.0.1"
    """``generation.backend: vllm_server``: the address of the ``grpokit vllm-serve`` server."""

    server_port: int = Field(8000, ge=1, le=65535)
    """``generation.backend: vllm_server``: the server's port."""

    server_timeout_s: float = Field(300, gt=0)
    """``generation.backend: vllm_server``: deadline in seconds of the wait for the server at start and of each
    request (a whole batch's generation included); past it training stops with an error naming the server and
    what was asked. A weight push has ``weight_sync_timeout_s`` as a whole."""

    server_weight_chunk_mb: float = Field(256, gt=0)
    """``generation.backend: vllm_server``: largest request body of a weight push, in MiB; the weights travel
    in as many chunks as needed (a larger tensor alone in its chunk)."""


_SERVER_FIELDS = ("server_host", "server_port", "server_timeout_s", "server_weight_chunk_mb")
_ENGINE_FIELDS = ("kv_cache_gib", "gpu_memory_utilization")


def check_vllm_fields(backend: str, changed: list[str]) -> None:
    """Refuse ``vllm`` section fields (``changed``: those off their defaults) that ``backend`` does not use."""
    if backend == "transformers" and changed:
        names = ", ".join(f"vllm.{name}" for name in changed)
        raise ValueError(
            f"{names} set but generation.backend is 'transformers': set generation.backend: vllm (or vllm_server)"
        )
    server = [f"vllm.{name}" for name in changed if name in _SERVER_FIELDS]
    if backend == "vllm" and server:
        raise ValueError(
            f"{', '.join(server)} set but generation.backend is 'vllm' (an engine in this process): set "
            "generation.backend: vllm_server to use a grpokit vllm-serve server"
        )
    engine = [name for name in changed if name in _ENGINE_FIELDS]
    if backend == "vllm_server" and engine:
        flags = ", ".join("--" + name.replace("_", "-") for name in engine)
        raise ValueError(
            f"{', '.join('vllm.' + name for name in engine)} set but generation.backend is 'vllm_server': the "
            f"engine is the server's, so pass {flags} to grpokit vllm-serve instead"
        )


class RewardConfig(Section):
    reward_funcs: list[str] = Field(default_factory=list)
    """Reward functions ``f(prompts, completions, **columns) -> list[float | None]``: built-in names
    (``task``, ``accuracy``, ``format``, ``length_penalty``), ``package.module:function`` or
    ``path/to/file.py:function``. ``None`` in a result means "not applicable" for that sample. A run from
    the command line needs at least one reward (this, ``reward_model`` or ``process_reward_func``)."""

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

    iterative_rm: IterativeRewardModelConfig = Field(default_factory=IterativeRewardModelConfig)
    """Iterative RL: retrain ``reward_model`` on gold-labelled pairs of the policy's samples (off while
    ``iterative_rm.gold_func`` is unset)."""

    @model_validator(mode="after")
    def _check(self) -> RewardConfig:
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
        if self.iterative_rm.gold_func is not None and self.reward_model is None:
            raise ValueError("iterative_rm.gold_func is set but reward_model is not: there is no model to retrain")
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

    micro_batch_tokens: int | None = Field(2048, ge=1)
    """Token budget of one forward pass in the update and in the no-grad passes (pi_old, reference, values),
    per process: each micro-batch is split further so that none holds more than this many tokens (rows x the
    longest row's prompt + completion tokens; at least one row). Peak memory then stays bounded whatever
    N*T is; the update's maths is unchanged (micro-batch losses are weighted by their share). verl calls
    it ``ppo_max_token_len_per_gpu``, NeMo-RL ``train_mb_tokens``. The default was picked by measurement
    (docs/benchmarks.md, "Micro-batch token budget"). ``None``: no automatic split, only
    ``gradient_accumulation_steps``."""

    shuffle_minibatches: bool = True
    """With several minibatches per pass, draw each pass's partition at random. False: a fixed strided
    partition (minibatch k holds rows k, k + K, k + 2K, ...), the same on any number of processes, so a
    data-parallel run then equals a one-process run exactly."""

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
