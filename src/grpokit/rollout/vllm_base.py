"""What the two vLLM samplers share: sampling knobs, per-request seeds, request planning and batch assembly.

:class:`~grpokit.rollout.vllm_sampler.VLLMSampler` runs the requests in an engine of its own process
(colocated); :class:`~grpokit.rollout.vllm_client.VLLMServerSampler` sends them to a ``grpokit vllm-serve``
server. Both plan the same requests from the same seeds and build the same :class:`RolloutBatch` from the
answers, so a run can switch between them without changing its sampling semantics (the conventions are in
:mod:`grpokit.rollout.vllm_sampler`'s docstring).

A *request spec* is a plain, JSON-serialisable dict, the wire format of the server and the input of
``VLLMSampler.run_requests``::

    {"prompt_token_ids": [int], "n": int, "temperature": float, "seed": int | None, "top_p": float,
     "top_k": int, "min_tokens": int, "max_tokens": int, "stop_token_ids": [int]}

and its answer is one ``(token_ids, logprobs)`` pair per sample, in the order of the samples' indices.

Prompts are token ids in both directions, so the same requests serve :meth:`VLLMSamplerBase.generate` (prompts
encoded here) and :meth:`VLLMSamplerBase.continue_from_ids` (multi-turn: the exact ids of a conversation so far,
never decoded and re-encoded).
"""

from __future__ import annotations

import copy
from abc import ABC, abstractmethod
from collections.abc import Mapping
from typing import Any

import torch

from grpokit.rollout.base import (
    Continuation,
    Prompt,
    check_continue_args,
    check_generate_args,
    check_sampling_knobs,
)
from grpokit.rollout.batch import RolloutBatch
from grpokit.rollout.prompts import encode_prompts
from grpokit.rollout.transformers_sampler import group_temperatures

__all__ = ["KNOBS", "Sample", "VLLMSamplerBase", "check_request_spec", "checked_state_dict"]

MAX_SEED = 2**31 - 1
# One sample: its token ids and the engine's log-prob of each of them.
Sample = tuple[list[int], list[float]]

KNOBS: tuple[str, ...] = (
    "max_new_tokens",
    "min_new_tokens",
    "temperature",
    "top_p",
    "top_k",
    "temperature_schedule",
    "max_prompt_length",
    "prompt_truncation",
    "seed",
    "do_sample",
)

_SPEC_FIELDS: dict[str, tuple[type, ...]] = {
    "prompt_token_ids": (list,),
    "n": (int,),
    "temperature": (int, float),
    "seed": (int, type(None)),
    "top_p": (int, float),
    "top_k": (int,),
    "min_tokens": (int,),
    "max_tokens": (int,),
    "stop_token_ids": (list,),
}


def check_request_spec(spec: Any, index: int) -> dict[str, Any]:
    """Validate one request spec (from the wire), naming the request and field; returns it."""
    if not isinstance(spec, dict):
        raise ValueError(f"request {index} is a {type(spec).__name__}, expected an object")
    missing = sorted(set(_SPEC_FIELDS) - set(spec))
    if missing:
        raise ValueError(f"request {index} lacks {missing}")
    for name, kinds in _SPEC_FIELDS.items():
        value = spec[name]
        if not isinstance(value, kinds) or isinstance(value, bool):
            raise ValueError(f"request {index}: {name} is {value!r}, expected {'/'.join(k.__name__ for k in kinds)}")
    for name in ("prompt_token_ids", "stop_token_ids"):
        if not all(isinstance(t, int) and not isinstance(t, bool) and t >= 0 for t in spec[name]):
            raise ValueError(f"request {index}: {name} must be a list of non-negative token ids")
    if not spec["prompt_token_ids"]:
        raise ValueError(f"request {index}: prompt_token_ids is empty")
    if spec["n"] < 1 or spec["max_tokens"] < 1 or not 0 <= spec["min_tokens"] <= spec["max_tokens"]:
        raise ValueError(
            f"request {index}: needs n >= 1, max_tokens >= 1 and 0 <= min_tokens <= max_tokens, got "
            f"n={spec['n']}, max_tokens={spec['max_tokens']}, min_tokens={spec['min_tokens']}"
        )
    if spec["temperature"] < 0 or not 0 < spec["top_p"] <= 1 or spec["top_k"] < 0:
        raise ValueError(
            f"request {index}: needs temperature >= 0, 0 < top_p <= 1, top_k >= 0, got temperature="
            f"{spec['temperature']}, top_p={spec['top_p']}, top_k={spec['top_k']}"
        )
    if spec["temperature"] == 0 and spec["n"] > 1:
        raise ValueError(f"request {index}: greedy decoding (temperature 0) with n={spec['n']} > 1")
    return spec


def _is_floating(safetensors_dtype: str) -> bool:
    return safetensors_dtype.upper() in {"F64", "F32", "F16", "BF16", "F8_E4M3", "F8_E5M2"}


def checked_state_dict(weights: Any, expected: Mapping[str, tuple[tuple[int, ...], str]]) -> dict[str, torch.Tensor]:
    """The tensors to push, keyed like the engine's checkpoint; ValueError on any mismatch.

    Tied weights: a transformers ``state_dict()`` lists ``lm_head.weight`` even when it *is* the
    embedding (the checkpoint does not), so a name absent from the checkpoint is dropped when it
    shares storage with a tensor that is pushed.
    """
    if isinstance(weights, Mapping):
        state = dict(weights)
    elif hasattr(weights, "state_dict"):
        state = weights.state_dict()
    else:
        raise ValueError(
            f"update_weights takes a model (with state_dict) or a dict of tensors, got {type(weights).__name__}"
        )
    for name, tensor in state.items():
        if not isinstance(tensor, torch.Tensor):
            raise ValueError(f"weight {name!r} is a {type(tensor).__name__}, not a tensor")
    if any("lora_" in name or name.startswith("base_model.model.") for name in state):
        raise ValueError(
            "these look like PEFT/LoRA weights; vLLM needs the full model: pass the merged weights "
            "(e.g. the state_dict of a merge_and_unload() copy)"
        )
    pushed_storage = {state[name].untyped_storage().data_ptr() for name in state if name in expected}
    unexpected = [
        name
        for name in state
        if name not in expected and state[name].untyped_storage().data_ptr() not in pushed_storage
    ]
    missing = [name for name in expected if name not in state]
    wrong_shape = [
        f"{name}: {tuple(state[name].shape)} != {expected[name][0]}"
        for name in expected
        if name in state and tuple(state[name].shape) != expected[name][0]
    ]
    wrong_kind = [
        name
        for name in expected
        if name in state and state[name].is_floating_point() != _is_floating(expected[name][1])
    ]
    problems = []
    for label, names in (
        ("missing", missing),
        ("unexpected", unexpected),
        ("wrong shape", wrong_shape),
        ("float vs integer dtype", wrong_kind),
    ):
        if names:
            shown = ", ".join(names[:5]) + (f", ... ({len(names)} in all)" if len(names) > 5 else "")
            problems.append(f"{label}: {shown}")
    if problems:
        raise ValueError(
            "update_weights: the weights do not match the checkpoint the engine was started from "
            f"({len(expected)} tensors); nothing was pushed. " + "; ".join(problems)
        )
    return {name: state[name] for name in expected}


class VLLMSamplerBase(ABC):
    """The sampling half of a vLLM sampler. Subclasses set ``tokenizer``, ``pad_id`` and ``stop_ids`` and
    provide :meth:`run_requests`, :meth:`_check_usable` and :attr:`max_model_len`."""

    tokenizer: Any
    pad_id: int
    stop_ids: list[int]

    def _configure(
        self,
        *,
        max_new_tokens: int,
        min_new_tokens: int,
        temperature: float,
        top_p: float,
        top_k: int,
        temperature_schedule: tuple[float, float] | None,
        max_prompt_length: int | None,
        prompt_truncation: str,
        seed: int,
        do_sample: bool,
    ) -> None:
        """Validate and set the sampling knobs (the arguments :meth:`with_sampling` may change)."""
        check_sampling_knobs(
            max_new_tokens=max_new_tokens, min_new_tokens=min_new_tokens, temperature=temperature, top_p=top_p,
            top_k=top_k, temperature_schedule=temperature_schedule, do_sample=do_sample,
            max_prompt_length=max_prompt_length, prompt_truncation=prompt_truncation,
        )  # fmt: skip
        self.max_new_tokens = int(max_new_tokens)
        self.min_new_tokens = int(min_new_tokens)
        self.temperature = float(temperature)
        self.top_p = float(top_p)
        self.top_k = int(top_k)
        self.temperature_schedule: tuple[float, float] | None = None
        if temperature_schedule is not None:  # (lo, hi), checked above
            lo, hi = temperature_schedule
            self.temperature_schedule = (float(lo), float(hi))
        self.max_prompt_length = max_prompt_length
        self.prompt_truncation = prompt_truncation
        self.do_sample = bool(do_sample)
        self.greedy = temperature == 0 or not do_sample
        self.generator = torch.Generator()
        self.set_seed(seed)

    def with_sampling(self, **overrides: Any) -> Any:
        """A sampler on the *same* engine (same weights, no second model in memory) with other knobs.

        For example ``sampler.with_sampling(temperature=0)`` for greedy evaluation during training.
        Weight updates made through either sampler are seen by both; closing either closes the engine.

        Args:
            overrides: any of ``max_new_tokens``, ``min_new_tokens``, ``temperature``, ``top_p``,
                ``top_k``, ``temperature_schedule``, ``max_prompt_length``, ``prompt_truncation``,
                ``seed``, ``do_sample``; the others are copied. The copy gets a fresh generator seeded
                with ``seed``.
        """
        unknown = sorted(set(overrides) - set(KNOBS))
        if unknown:
            raise ValueError(f"with_sampling got unknown knobs {unknown}; valid names: {list(KNOBS)}")
        knobs = {name: getattr(self, name) for name in KNOBS} | overrides
        # Shallow: the copy shares the engine (or connection) and its state with this sampler.
        twin = copy.copy(self)
        twin._configure(**knobs)
        return twin

    @property
    @abstractmethod
    def max_model_len(self) -> int:
        """Longest prompt + completion the engine accepts."""

    @abstractmethod
    def _check_usable(self) -> None:
        """Raise when the engine cannot generate now (closed, or a failed weight sync)."""

    @abstractmethod
    def run_requests(self, specs: list[dict[str, Any]]) -> list[list[Sample]]:
        """Run request specs (module docstring); one list of samples per spec, ordered by sample index."""

    # -- RNG state (exact resume) -----------------------------------------------------------------

    def set_seed(self, seed: int) -> None:
        """Reseed the generator that draws the per-request vLLM seeds."""
        self.seed = int(seed)
        self.generator.manual_seed(self.seed)

    def state_dict(self) -> dict[str, Any]:
        return {"seed": self.seed, "generator": self.generator.get_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.seed = int(state["seed"])
        self.generator.set_state(state["generator"])

    # -- sampling ---------------------------------------------------------------------------------

    def request_spec(self, prompt_ids: list[int], n: int, temperature: float, seed: int | None) -> dict[str, Any]:
        """One request spec (module docstring) with this sampler's knobs."""
        return {
            "prompt_token_ids": list(prompt_ids),
            "n": int(n),
            "temperature": 0.0 if self.greedy else float(temperature),
            "seed": None if self.greedy else seed,
            "top_p": self.top_p,
            "top_k": self.top_k,
            "min_tokens": self.min_new_tokens,
            "max_tokens": self.max_new_tokens,
            "stop_token_ids": list(self.stop_ids),
        }

    def generate(
        self,
        prompts: list[Prompt],
        num_generations: int,
        columns: dict[str, list[Any]] | None = None,
    ) -> RolloutBatch:
        """Sample ``num_generations`` (G) responses for each of the B ``prompts``.

        Args:
            prompts: B prompts, text or chat messages.
            num_generations: G >= 1.
            columns: dataset columns with B entries each, repeated per response.

        Returns:
            A :class:`RolloutBatch` with N = B*G rows ordered group by group; T is the longest
            completion of this batch (at most ``max_new_tokens``). ``sampler_logprobs`` (N, T) are the
            engine's ROLLOUT log-probs (:mod:`grpokit.rollout.vllm_sampler`, convention 1).
        """
        self._check_usable()
        prompts, columns = check_generate_args(prompts, num_generations, columns)
        B, G = len(prompts), num_generations
        encoded = encode_prompts(self.tokenizer, prompts, self.max_prompt_length, self.prompt_truncation)
        for index, ids in enumerate(encoded):
            if len(ids) + self.max_new_tokens > self.max_model_len:
                raise ValueError(
                    f"prompt {index} has {len(ids)} tokens; with max_new_tokens={self.max_new_tokens} it exceeds "
                    f"the engine's max_model_len={self.max_model_len} (set max_prompt_length or max_model_len)"
                )

        group_temps = group_temperatures(self.temperature, self.temperature_schedule, G)  # (G,)
        seeds = torch.randint(0, MAX_SEED - G, (B,), generator=self.generator).tolist()  # one per prompt
        specs = []
        for ids, seed in zip(encoded, seeds):
            if self.greedy:
                specs.append(self.request_spec(ids, 1, 0.0, None))
            elif self.temperature_schedule is None:
                specs.append(self.request_spec(ids, G, self.temperature, seed))
            else:
                for i in range(G):
                    specs.append(self.request_spec(ids, 1, float(group_temps[i]), seed + i))
        answers = self.run_requests(specs)

        samples: list[Sample] = []  # N (token ids, log-probs), group by group
        for b in range(B):
            if self.greedy:
                completions = [answers[b][0]] * G
            elif self.temperature_schedule is None:
                completions = list(answers[b])
            else:
                completions = [answers[b * G + i][0] for i in range(G)]
            if len(completions) != G:
                raise RuntimeError(f"vLLM returned {len(completions)} completions for prompt {b}, expected {G}")
            samples.extend(completions)
        return self._to_batch(prompts, encoded, columns, samples, group_temps.repeat(B), G)

    def continue_from_ids(
        self, prefixes: list[list[int]], temperatures: list[float], max_new_tokens: int | None = None
    ) -> list[Continuation]:
        """One sampled continuation of each token-id prefix (multi-turn episodes; the
        :class:`~grpokit.rollout.base.TurnSampler` protocol).

        Each prefix is one request (``n=1``) sent as token ids, with its own temperature and its own seed
        (drawn from the sampler's generator, so ``state_dict`` resumes them too), the sampler's ``top_k`` /
        ``top_p`` and stop ids, ``max_tokens=max_new_tokens`` and ``min_tokens=0`` (``min_new_tokens`` bounds
        whole completions, not turns). The log-probs follow convention 1 of :mod:`grpokit.rollout.vllm_sampler`
        (the distribution vLLM sampled from: ``softmax(z / tau)``, after top-k/top-p when those are set). A
        greedy sampler ignores ``temperatures``; a row at temperature 0 is decoded greedily, with log-probs under
        ``tau = 1``, as in greedy :meth:`generate`. vLLM's prefix cache (on by default) reuses the KV blocks of
        a conversation's earlier turns, and :meth:`update_weights` clears it.

        Args:
            prefixes: n non-empty token-id lists.
            temperatures: n temperatures >= 0.
            max_new_tokens: tokens per continuation at most; None: ``self.max_new_tokens``.

        Returns:
            n :class:`~grpokit.rollout.base.Continuation`, in the order of ``prefixes``.

        Raises:
            ValueError: a bad argument, or a prefix that leaves no room for ``max_new_tokens`` in the engine's
                ``max_model_len`` (named by its index; nothing is sent).
        """
        self._check_usable()
        checked, taus, limit = check_continue_args(prefixes, temperatures, max_new_tokens, self.max_new_tokens)
        if not checked:
            return []
        for index, ids in enumerate(checked):
            if len(ids) + limit > self.max_model_len:
                raise ValueError(
                    f"prefix {index} has {len(ids)} tokens; with max_new_tokens={limit} it exceeds the engine's "
                    f"max_model_len={self.max_model_len} (end the episode earlier, or raise max_model_len)"
                )

        seeds = torch.randint(0, MAX_SEED, (len(checked),), generator=self.generator).tolist()  # one per row
        specs = []
        for ids, tau, seed in zip(checked, taus, seeds):
            greedy = self.greedy or tau == 0
            spec = self.request_spec(ids, 1, 0.0 if greedy else tau, None if greedy else seed)
            specs.append(spec | {"min_tokens": 0, "max_tokens": limit})
        answers = self._run_turn_requests(specs)

        stop_ids = set(self.stop_ids)
        turns = []
        for index, samples in enumerate(answers):
            if len(samples) != 1:
                raise RuntimeError(f"vLLM returned {len(samples)} continuations of prefix {index}, not 1")
            ids, logprobs = samples[0]
            # vLLM stops right after a stop token and keeps it; the only other ending is max_tokens.
            turns.append(Continuation(list(ids), list(logprobs), stopped=bool(ids) and ids[-1] in stop_ids))
        return turns

    def _run_turn_requests(self, specs: list[dict[str, Any]]) -> list[list[Sample]]:
        """Run the requests of one :meth:`continue_from_ids` call (the server sampler names the call in its
        errors)."""
        return self.run_requests(specs)

    def _to_batch(
        self,
        prompts: list[Prompt],
        encoded: list[list[int]],
        columns: dict[str, list[Any]],
        samples: list[Sample],
        temperatures: torch.Tensor,
        G: int,
    ) -> RolloutBatch:
        """Pad the N samples into a :class:`RolloutBatch` (prompts left-padded, completions right-padded)."""
        B, N = len(prompts), len(samples)
        P = max(len(ids) for ids in encoded)
        prompt_ids = torch.full((B, P), self.pad_id, dtype=torch.long)
        prompt_mask = torch.zeros((B, P), dtype=torch.long)
        for row, ids in enumerate(encoded):
            prompt_ids[row, P - len(ids) :] = torch.tensor(ids, dtype=torch.long)
            prompt_mask[row, P - len(ids) :] = 1

        T = max(1, max(len(ids) for ids, _ in samples))
        completion_ids = torch.full((N, T), self.pad_id, dtype=torch.long)
        sampler_logprobs = torch.zeros((N, T), dtype=torch.float32)
        completion_mask = torch.zeros((N, T), dtype=torch.float32)
        truncated = torch.ones(N, dtype=torch.bool)
        stop_ids = set(self.stop_ids)
        for row, (ids, logprobs) in enumerate(samples):
            # vLLM stops right after a stop token and includes it, as the transformers sampler does.
            completion_ids[row, : len(ids)] = torch.tensor(ids, dtype=torch.long)
            sampler_logprobs[row, : len(ids)] = torch.tensor(logprobs, dtype=torch.float32)
            completion_mask[row, : len(ids)] = 1.0
            truncated[row] = not (ids and ids[-1] in stop_ids)
        lengths = completion_mask.sum(dim=1).long().tolist()  # (N,)
        texts = self.tokenizer.batch_decode(
            [row[:n] for row, n in zip(completion_ids.tolist(), lengths)], skip_special_tokens=True
        )
        return RolloutBatch(
            prompt_ids=prompt_ids.repeat_interleave(G, dim=0),
            prompt_mask=prompt_mask.repeat_interleave(G, dim=0),
            completion_ids=completion_ids,
            completion_mask=completion_mask,
            group_ids=torch.arange(B).repeat_interleave(G),
            temperatures=torch.zeros(N) if self.greedy else temperatures.float(),
            truncated=truncated,
            prompts=[prompt for prompt in prompts for _ in range(G)],
            completions=texts,
            columns={name: [value for value in values for _ in range(G)] for name, values in columns.items()},
            sampler_logprobs=sampler_logprobs,
        )
