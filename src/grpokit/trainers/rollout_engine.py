"""The LLM trainers' rollout engine: which sampler generates, keeping a separate engine's weights in step with
the policy, and correcting for the engine's numbers with truncated importance sampling.

``generation.backend`` picks the sampler behind the :class:`~grpokit.rollout.Sampler` protocol:

- ``transformers``: :class:`~grpokit.rollout.TransformersSampler` decodes with the policy module itself,
  so it always samples from the current weights;
- ``vllm``: :class:`~grpokit.rollout.vllm_sampler.VLLMSampler` runs a vLLM engine on a *copy* of the
  weights. The trainer pushes the policy into it after every training step (:func:`sync_sampler_weights`),
  and weights each token's surrogate by ``min(pi_trainer / pi_rollout, C)``
  (:func:`rollout_importance_weights`), because vLLM's kernels compute slightly different probabilities
  than the trainer's forward pass (Yao et al. 2025, "Your Efficient RL Framework Secretly Brings You
  Off-Policy RL Training");
- ``vllm_server``: :class:`~grpokit.rollout.vllm_client.VLLMServerSampler`, the same with the engine in a
  ``grpokit vllm-serve`` server (its own devices, or another machine): the weights travel over HTTP, and
  the trainer needs no vLLM.

Choices, numbered:

1. One weight push per training step, after the update phase (and the reference sync), not one per
   optimizer step: the engine only generates at the start of the next step, so pushing after each of
   several minibatch steps would cost time and change nothing.
2. ``algorithm.rollout_importance_sampling: auto`` means ``token`` with vLLM (colocated or server) and ``none``
   with transformers.
   Yao et al. recommend token-level truncation with C = 2; TRL 1.16 corrects by default whenever vLLM
   generates (sequence-level masking, C = 3); verl leaves it off until a threshold is set. A correction that
   is on by default costs one element-wise op on log-probs the trainer computes anyway, and with matching
   numbers (fp32 engine) every weight is 1 to rounding.
3. ``pi_trainer`` is the loss's ``pi_old``: the trainer's forward under the weights that generated the batch
   (the pre-update policy, when ``num_iterations > 1`` or one optimizer step per pass). With
   ``num_iterations == 1`` and several minibatches, each minibatch's ``pi_old`` is the current policy (the
   GRPO trainer's note 1), so the weight also absorbs the earlier minibatches' drift, truncated at C; the
   product ``w * ratio`` is ``pi_theta / pi_rollout`` either way.
4. vLLM runs in one process without DeepSpeed/FSDP (the weights pushed are the whole, unsharded module) and
   without LoRA (the engine loads full weights; merging adapters every step is not implemented).
"""

from __future__ import annotations

import importlib.util
from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:
    from grpokit.config import GRPOConfig, PPOConfig, TrainConfig
    from grpokit.engine.parallel import DataParallel

__all__ = [
    "VLLM_INSTALL_HINT",
    "build_sampler",
    "check_rollout_backend",
    "close_sampler",
    "rollout_importance_level",
    "rollout_importance_weights",
    "sync_sampler_weights",
]

VLLM_INSTALL_HINT = (
    "install it with `pip install 'grpokit[vllm]'` on a GPU machine, or on CPU run scripts/test-vllm.sh, which "
    "builds a venv with vLLM's CPU build (docs/vllm.md)"
)


def check_rollout_backend(config: TrainConfig, parallel: DataParallel) -> None:
    """Reject ``generation.backend: vllm`` where it cannot run, before any model is loaded.

    Raises:
        ValueError: several processes, or DeepSpeed / FSDP (choice 4); ``generation.async_rollouts`` with
            several processes.
        ImportError: vLLM is not installed (the message says how to install it).
    """
    if config.generation.async_rollouts and parallel.accelerator is not None:
        raise ValueError(
            f"generation.async_rollouts runs one trainer process and its rollout worker, but this launch has "
            f"{parallel.world_size} process(es) on {parallel.engine}; run one process, or set "
            "generation.async_rollouts: false"
        )
    backend = config.generation.backend
    if backend not in ("vllm", "vllm_server"):
        return
    if parallel.accelerator is not None:
        raise ValueError(
            f"generation.backend {backend!r} runs in one process without DeepSpeed or FSDP, but this launch has "
            f"{parallel.world_size} process(es) on {parallel.engine}; run one process, or set "
            "generation.backend: transformers"
        )
    if backend == "vllm":
        _require_vllm()


def _require_vllm() -> None:
    if importlib.util.find_spec("vllm") is None:
        raise ImportError(
            f"generation.backend 'vllm' needs vLLM, which is not installed: {VLLM_INSTALL_HINT}"
        )


def build_sampler(
    model: torch.nn.Module, tokenizer: Any, config: GRPOConfig | PPOConfig, *, autocast_dtype: torch.dtype | None = None
) -> Any:
    """The sampler ``config.generation.backend`` names, with the generation section's knobs.

    Args:
        model: the policy (the transformers sampler decodes with it; vLLM starts from a copy of its weights).
        tokenizer: the policy's tokenizer (with a pad token).
        config: the run's config; reads ``generation``, ``seed`` and ``model.dtype``.
        autocast_dtype: the policy's mixed-precision dtype, for the transformers sampler's decoding.
    """
    from grpokit.rollout import schedule_for_spacing

    gen = config.generation
    knobs: dict[str, Any] = dict(
        max_new_tokens=gen.max_new_tokens,
        min_new_tokens=gen.min_new_tokens,
        temperature=gen.temperature,
        top_p=gen.top_p,
        top_k=gen.top_k,
        temperature_schedule=schedule_for_spacing(
            gen.temperature_schedule, config.algorithm.num_generations, gen.temperature_schedule_spacing
        ),
        max_prompt_length=gen.max_prompt_length,
        # 'skip' already removed the long rows before training, so none can reach the sampler.
        prompt_truncation="error" if gen.prompt_truncation == "skip" else gen.prompt_truncation,
        seed=config.seed,
    )
    if gen.backend == "transformers":
        from grpokit.rollout import TransformersSampler

        return TransformersSampler(model, tokenizer, autocast_dtype=autocast_dtype, **knobs)
    if gen.backend == "vllm_server":
        from grpokit.rollout.vllm_client import VLLMServerSampler

        vllm = config.vllm
        # Waits for the server (deadline server_timeout_s), then pushes the policy: the server samples from
        # the trainer's weights from the first step on, also on resume.
        return VLLMServerSampler(
            tokenizer,
            host=vllm.server_host,
            port=vllm.server_port,
            model=model,
            timeout_s=vllm.server_timeout_s,
            weight_sync_timeout_s=vllm.weight_sync_timeout_s,
            weight_chunk_mb=vllm.server_weight_chunk_mb,
            **knobs,
        )
    _require_vllm()
    from grpokit.rollout.vllm_sampler import VLLMSampler

    return VLLMSampler(
        model,
        tokenizer,
        dtype=config.model.dtype,
        kv_cache_gib=config.vllm.kv_cache_gib,
        gpu_memory_utilization=config.vllm.gpu_memory_utilization,
        weight_sync_timeout_s=config.vllm.weight_sync_timeout_s,
        **knobs,
    )


def rollout_importance_level(config: GRPOConfig | PPOConfig) -> str | None:
    """The truncated-importance-sampling level the run uses: ``"token"``, ``"sequence"`` or None (off).

    Resolves ``algorithm.rollout_importance_sampling: auto`` from ``generation.backend`` (choice 2), and to
    ``token`` with ``generation.async_rollouts``, whose samples come from weights up to ``max_staleness``
    versions old (``docs/async.md``).
    """
    level = config.algorithm.rollout_importance_sampling
    if level == "auto":
        separate = config.generation.backend in ("vllm", "vllm_server") or config.generation.async_rollouts
        level = "token" if separate else "none"
    return None if level == "none" else level


def rollout_importance_weights(
    trainer_logprobs: torch.Tensor,
    rollout_logprobs: torch.Tensor | None,
    mask: torch.Tensor,
    level: str,
    cap: float,
) -> tuple[torch.Tensor, dict[str, float]]:
    """:func:`~grpokit.algorithms.truncated_importance_weights` with the trainer's metric names.

    ``w = min(pi_trainer / pi_rollout, cap)`` per token (``level="token"``) or ``min(prod_t ratio_t, cap)``
    on every token of a response (``"sequence"``); Yao et al. 2025.

    Args:
        trainer_logprobs: (n, T) the loss's ``pi_old`` log-probs of the sampled tokens (choice 3).
        rollout_logprobs: (n, T) the log-probs the rollout engine reported for them (``batch.sampler_logprobs``).
        mask: (n, T) 1 on the tokens that enter the loss.
        level: ``"token"`` or ``"sequence"``.
        cap: the truncation C > 0.

    Returns:
        ``(weights, metrics)``: (n, T) detached weights, and ``rollout_is/logprob_abs_diff`` (token mean of
        ``|log pi_trainer - log pi_rollout|``), ``rollout_is/capped_fraction`` (of tokens, or of responses at
        sequence level), ``rollout_is/weight_mean`` (token mean of w), ``rollout_is/weight_min`` and
        ``rollout_is/weight_max`` (its spread over the loss tokens).

    Raises:
        ValueError: the sampler reported no rollout log-probs (``rollout_logprobs`` is None).
    """
    from grpokit.algorithms import truncated_importance_weights

    if rollout_logprobs is None:
        raise ValueError(
            f"algorithm.rollout_importance_sampling is {level!r} but the sampler returned no rollout log-probs "
            "(RolloutBatch.sampler_logprobs is None); set rollout_importance_sampling: none"
        )
    weights, metrics = truncated_importance_weights(
        trainer_logprobs, rollout_logprobs, mask, level=level, cap=cap
    )
    names = {
        "rollout_logprob_abs_diff": "rollout_is/logprob_abs_diff",
        "is_capped_fraction": "rollout_is/capped_fraction",
        "is_weight_mean": "rollout_is/weight_mean",
        "is_weight_min": "rollout_is/weight_min",
        "is_weight_max": "rollout_is/weight_max",
    }
    return weights, {names[key]: value for key, value in metrics.items()}


def sync_sampler_weights(sampler: Any, model: torch.nn.Module) -> dict[str, float]:
    """Push ``model``'s weights into a sampler that keeps its own copy (``update_weights``), and return its
    ``weight_sync/*`` metrics; a sampler without one (the transformers sampler decodes with ``model``
    itself) needs nothing and gives ``{}``."""
    update_weights = getattr(sampler, "update_weights", None)
    if update_weights is None:
        return {}
    return dict(update_weights(model))


def close_sampler(sampler: Any) -> None:
    """Release a sampler's engine (vLLM's worker processes and scratch files); no-op for samplers without
    ``close``."""
    close = getattr(sampler, "close", None)
    if close is not None:
        close()
