"""The transformers-based RL sampler: B prompts in, N = B*G sampled responses with their log-probs out.

Built for RL rollouts rather than chat, which is where its speed comes from:

1. each prompt is encoded and prefilled once; the KV cache is then expanded to its G samples;
2. a lean decode loop on token ids: one model call, one vectorised sampling step (inverse-CDF draws:
   one uniform number per row, see :func:`~grpokit.rollout.sampling.sample_next_token`) and one
   "all done?" check per token, no per-row Python, ``torch.inference_mode``, logits of the last
   position only;
3. for Llama-family models (Llama, Qwen2, Qwen3, Mistral) each token runs a lean re-implementation of
   the decoder layer on the model's own weights, packed once per call, with a preallocated KV cache
   (:class:`~grpokit.rollout.decoders.FastLlamaDecoder`); other models use their own ``forward``;
4. the log-prob of every sampled token is taken from the same logits (``sampler_logprobs``), so the trainer
   needs no extra forward pass for the old policy when it takes one gradient step per batch;
5. rows that finished leave the decode batch (once they are ``DROP_FINISHED_SHARE`` of it), so compute
   follows the responses still being written (2.4x faster generation when lengths vary; see
   docs/benchmarks.md).

Conventions:

- ``sampler_logprobs`` are under the temperature-scaled distribution ``softmax(z / tau_i)``, before
  top-k/top-p filtering and before ``min_new_tokens`` masks EOS: that is the distribution the trainer's
  :func:`~grpokit.models.logprobs.completion_logprobs` recomputes, so the ratio is 1 on-policy. Top-k /
  top-p / min-tokens make the true sampling distribution differ from it (as in TRL and verl).
- Greedy decoding (``temperature=0`` or ``do_sample=False``) records ``temperatures = 0`` and
  ``sampler_logprobs`` under the unscaled model (``tau = 1``); it is meant for evaluation, not training.
- ``temperature_schedule=(lo, hi)`` gives sample i of each group ``lo + (hi - lo) * i / (G - 1)``
  (endpoints included; G = 1 gets ``lo``): more diverse groups at no extra cost. The founding code's
  ``lo + (hi - lo) * i / G`` (``hi`` excluded) is the same formula on ``schedule_for_spacing``'s pair.
"""

from __future__ import annotations

import contextlib
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
from grpokit.rollout.decoders import FastLlamaDecoder, HFDecoder, fast_decoder_unsupported_reason
from grpokit.rollout.prompts import encode_prompts
from grpokit.rollout.sampling import sample_next_token

DECODERS: tuple[str, ...] = ("auto", "fast", "transformers")
# Finished rows leave the decoder's batch once they are this share of it: moving the KV cache costs about
# one decode step, so waiting for a few amortises it (a value above 1 never drops them).
DROP_FINISHED_SHARE = 1 / 8


def group_temperatures(
    temperature: float, schedule: tuple[float, float] | None, num_generations: int
) -> torch.Tensor:
    """(G,) float32 temperature of each sample of a group."""
    G = num_generations
    if schedule is None:
        return torch.full((G,), float(temperature))
    low, high = schedule
    if G == 1:
        return torch.tensor([float(low)])
    return low + (high - low) * torch.arange(G, dtype=torch.float32) / (G - 1)


def schedule_for_spacing(
    schedule: tuple[float, float] | None, num_generations: int, spacing: str = "inclusive"
) -> tuple[float, float] | None:
    """The ``(low, high)`` pair that :func:`group_temperatures` spreads with endpoints included, for a
    schedule meant with ``spacing``: ``inclusive`` returns it unchanged; ``exclusive`` (sample i at
    ``low + (high - low) * i / G``, the last at ``high - (high - low) / G``) returns
    ``(low, low + (high - low) * (G - 1) / G)``, which gives the same G temperatures."""
    if spacing not in ("inclusive", "exclusive"):
        raise ValueError(f"temperature_schedule_spacing must be 'inclusive' or 'exclusive', got {spacing!r}")
    if schedule is None or spacing == "inclusive":
        return schedule
    if num_generations < 1:
        raise ValueError(f"num_generations must be >= 1, got {num_generations}")
    low, high = schedule
    G = num_generations
    return (float(low), float(low + (high - low) * (G - 1) / G))


def _stop_token_ids(model: Any, tokenizer: Any, eos_token_id: int | list[int] | None) -> list[int]:
    """EOS ids: the argument, else the model's generation config, plus the tokenizer's EOS."""
    ids: list[int] = []
    sources = [eos_token_id] if eos_token_id is not None else [
        getattr(getattr(model, "generation_config", None), "eos_token_id", None),
        tokenizer.eos_token_id,
    ]
    for source in sources:
        if source is None:
            continue
        for token in [source] if isinstance(source, int) else source:
            if token not in ids:
                ids.append(int(token))
    if not ids:
        raise ValueError("no EOS token: the tokenizer has no eos_token_id; pass eos_token_id=")
    return ids


class TransformersSampler:
    """RL sampler on a transformers causal LM (see the module docstring for the conventions).

    Args:
        model: a causal LM; it is put in eval mode during ``generate`` and restored afterwards.
        tokenizer: its tokenizer; needs a pad token (see :func:`grpokit.models.loading.load_tokenizer`).
        max_new_tokens: completion length limit; a row that reaches it without EOS is ``truncated``.
        min_new_tokens: EOS is masked out until this many tokens were generated.
        temperature: sampling temperature; 0 means greedy.
        top_p: nucleus filtering threshold, 1 disables it.
        top_k: keep the k most likely tokens, 0 disables it.
        temperature_schedule: ``(lo, hi)`` per-sample temperatures across each group, or None.
        max_prompt_length: longest prompt in tokens, None for no limit.
        prompt_truncation: ``"error"`` or ``"left"`` (keep the last ``max_prompt_length`` tokens).
        seed: seed of the sampling generator.
        do_sample: False forces greedy decoding whatever the temperature.
        eos_token_id: stop token(s); default: the model's generation config plus the tokenizer's EOS.
        decoder: ``"auto"`` uses the lean Llama-family decode step
            (:class:`~grpokit.rollout.decoders.FastLlamaDecoder`) when the model supports it and the model's
            own forward otherwise; ``"fast"`` requires the lean step (error if unsupported);
            ``"transformers"`` always uses the model's forward with a ``DynamicCache``.
        autocast_dtype: sample under ``torch.autocast`` in this dtype (``torch.bfloat16``, see
            :mod:`grpokit.models.precision`); None keeps the model's dtype (or the caller's autocast).
    """

    def __init__(
        self,
        model: Any,
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
        decoder: str = "auto",
        autocast_dtype: torch.dtype | None = None,
    ):
        check_sampling_knobs(
            max_new_tokens=max_new_tokens, min_new_tokens=min_new_tokens, temperature=temperature, top_p=top_p,
            top_k=top_k, temperature_schedule=temperature_schedule, do_sample=do_sample,
            max_prompt_length=max_prompt_length, prompt_truncation=prompt_truncation,
        )  # fmt: skip
        if decoder not in DECODERS:
            raise ValueError(f"decoder must be one of {DECODERS}, got {decoder!r}")
        if autocast_dtype is not None and not isinstance(autocast_dtype, torch.dtype):
            raise ValueError(f"autocast_dtype must be a torch.dtype or None, got {autocast_dtype!r}")
        if tokenizer.pad_token_id is None:
            raise ValueError("the tokenizer has no pad token; load it with grpokit.models.load_tokenizer")
        self.model = model
        self.tokenizer = tokenizer
        self.max_new_tokens = max_new_tokens
        self.min_new_tokens = min_new_tokens
        self.temperature = float(temperature)
        self.top_p = float(top_p)
        self.top_k = int(top_k)
        self.temperature_schedule: tuple[float, float] | None = None
        if temperature_schedule is not None:  # (lo, hi), checked above
            lo, hi = temperature_schedule
            self.temperature_schedule = (float(lo), float(hi))
        self.max_prompt_length = max_prompt_length
        self.prompt_truncation = prompt_truncation
        self.greedy = temperature == 0 or not do_sample
        self.stop_ids = _stop_token_ids(model, tokenizer, eos_token_id)
        self.pad_id = int(tokenizer.pad_token_id)
        self.decoder = decoder
        self.autocast_dtype = autocast_dtype
        self.device = next(model.parameters()).device
        self.generator = torch.Generator(device=self.device)
        self.set_seed(seed)

    # -- RNG state (exact resume) -----------------------------------------------------------------

    def set_seed(self, seed: int) -> None:
        """Reseed the sampling generator."""
        self.seed = int(seed)
        self.generator.manual_seed(self.seed)

    def state_dict(self) -> dict[str, Any]:
        return {"seed": self.seed, "generator": self.generator.get_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.seed = int(state["seed"])
        self.generator.set_state(state["generator"])

    # -- sampling ---------------------------------------------------------------------------------

    def _pad_left(self, encoded: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
        """Left-pad B id lists -> (B, P) ids and (B, P) mask."""
        B, P = len(encoded), max(len(ids) for ids in encoded)
        prompt_ids = torch.full((B, P), self.pad_id, dtype=torch.long)
        prompt_mask = torch.zeros((B, P), dtype=torch.long)
        for row, ids in enumerate(encoded):
            prompt_ids[row, P - len(ids) :] = torch.tensor(ids, dtype=torch.long)
            prompt_mask[row, P - len(ids) :] = 1
        return prompt_ids.to(self.device), prompt_mask.to(self.device)

    def _autocast(self) -> Any:
        if self.autocast_dtype is None:
            return contextlib.nullcontext()  # leaves a caller's autocast on
        return torch.autocast(self.device.type, dtype=self.autocast_dtype)

    def _decoder(self, total_length: int) -> Any:
        if self.decoder == "transformers":
            return HFDecoder(self.model)
        reason = fast_decoder_unsupported_reason(self.model, total_length)
        if reason is None:
            return FastLlamaDecoder(self.model)
        if self.decoder == "fast":
            raise ValueError(f"decoder='fast' cannot decode this model: {reason}")
        return HFDecoder(self.model)

    @torch.inference_mode()
    def _decode(
        self,
        prompt_ids: torch.Tensor,
        prompt_mask: torch.Tensor,
        G: int,
        temperatures: torch.Tensor,
        max_new_tokens: int | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The decode loop. Returns (N, T_max) sampled ids (pad after a row finished) and their log-probs.

        Finished rows are dropped from the decoder's batch (``decoder.select``) once they are at least
        ``DROP_FINISHED_SHARE`` of it, so compute follows the rows still generating; ``rows`` maps the decoder's batch back
        to the N responses. A finished row that is not dropped yet is fed pad tokens, which only it sees.
        """
        N = prompt_ids.shape[0] * G
        T_max = self.max_new_tokens if max_new_tokens is None else max_new_tokens
        tau = temperatures.clamp(min=1e-6)[:, None] if not self.greedy else torch.ones(N, 1, device=self.device)
        stop_ids = torch.tensor(self.stop_ids, device=self.device)
        tokens = torch.full((N, T_max), self.pad_id, dtype=torch.long, device=self.device)
        logprobs = torch.zeros((N, T_max), dtype=torch.float32, device=self.device)
        rows = torch.arange(N, device=self.device)  # (n,) response of each decoder row
        finished = torch.zeros(N, dtype=torch.bool, device=self.device)  # (n,)
        pad = torch.tensor(self.pad_id, device=self.device)

        decoder = self._decoder(prompt_ids.shape[1] + T_max)
        logits = decoder.prefill(prompt_ids, prompt_mask, G, T_max)  # (N, V)
        for t in range(T_max):
            scaled = logits.float() / tau  # (n, V)
            log_norm = torch.logsumexp(scaled, dim=-1)  # (n,), of the distribution sampler_logprobs refer to
            candidates = scaled.index_fill(-1, stop_ids, float("-inf")) if t < self.min_new_tokens else scaled
            next_tokens = sample_next_token(
                candidates, greedy=self.greedy, top_k=self.top_k, top_p=self.top_p, generator=self.generator
            )  # (n,)
            next_tokens = torch.where(finished, pad, next_tokens)
            tokens[rows, t] = next_tokens
            logprobs[rows, t] = scaled.gather(-1, next_tokens[:, None]).squeeze(-1) - log_norm
            finished |= torch.isin(next_tokens, stop_ids)
            done = int(finished.sum())
            if t == T_max - 1 or done == rows.numel():
                break
            if done >= max(1.0, DROP_FINISHED_SHARE * rows.numel()):
                keep = (~finished).nonzero().squeeze(1)  # (n',) ascending
                decoder.select(keep)
                rows, tau, next_tokens = rows[keep], tau[keep], next_tokens[keep]
                finished = finished[keep]
            logits = decoder.step(next_tokens)
        return tokens[:, : t + 1], logprobs[:, : t + 1]

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
            completion of this batch (at most ``max_new_tokens``).
        """
        prompts, columns = check_generate_args(prompts, num_generations, columns)
        B, G = len(prompts), num_generations

        encoded = encode_prompts(self.tokenizer, prompts, self.max_prompt_length, self.prompt_truncation)
        prompt_ids, prompt_mask = self._pad_left(encoded)  # (B, P) each
        temperatures = group_temperatures(self.temperature, self.temperature_schedule, G).repeat(B)  # (N,)
        temperatures = temperatures.to(self.device)

        was_training = self.model.training
        self.model.eval()
        try:
            with self._autocast():
                tokens, logprobs = self._decode(prompt_ids, prompt_mask, G, temperatures)  # (N, T) each
        finally:
            self.model.train(was_training)

        # A token is part of the completion when no stop token came strictly before it.
        is_stop = torch.isin(tokens, torch.tensor(self.stop_ids, device=self.device))  # (N, T)
        completion_mask = (is_stop.cumsum(dim=1) - is_stop.long()) == 0  # (N, T), EOS included
        truncated = ~is_stop.any(dim=1)  # (N,)
        lengths = completion_mask.sum(dim=1)  # (N,)
        T = int(lengths.max())
        completion_ids = tokens[:, :T].masked_fill(~completion_mask[:, :T], self.pad_id)  # (N, T)
        completion_mask = completion_mask[:, :T]
        sampler_logprobs = logprobs[:, :T].masked_fill(~completion_mask, 0.0)  # (N, T)
        texts = self.tokenizer.batch_decode(
            [row[:n] for row, n in zip(completion_ids.tolist(), lengths.tolist())], skip_special_tokens=True
        )
        return RolloutBatch(
            prompt_ids=prompt_ids.repeat_interleave(G, dim=0),
            prompt_mask=prompt_mask.repeat_interleave(G, dim=0),
            completion_ids=completion_ids,
            completion_mask=completion_mask.float(),
            group_ids=torch.arange(B, device=self.device).repeat_interleave(G),
            temperatures=torch.zeros_like(temperatures) if self.greedy else temperatures,
            truncated=truncated,
            prompts=[prompt for prompt in prompts for _ in range(G)],
            completions=texts,
            columns={name: [value for value in values for _ in range(G)] for name, values in columns.items()},
            sampler_logprobs=sampler_logprobs,
        )

    def continue_from_ids(
        self, prefixes: list[list[int]], temperatures: list[float], max_new_tokens: int | None = None
    ) -> list[Continuation]:
        """One sampled continuation of each token-id prefix (multi-turn episodes; the
        :class:`~grpokit.rollout.base.TurnSampler` protocol).

        The prefixes are left-padded into one batch and decoded together: a row's numbers do not depend on the
        others' padding (positions follow the mask). When they come in equal runs of identical prefixes (the
        first turn of G episodes per start state), each distinct prefix is prefilled once, as in
        :meth:`generate`. ``min_new_tokens`` does not apply (it bounds whole completions, not turns).
        """
        prefixes, temperatures, limit = check_continue_args(
            prefixes, temperatures, max_new_tokens, self.max_new_tokens
        )
        if not prefixes:
            return []
        # The G episodes of a start state open with the same prefix: prefill it once and copy its cache to
        # the G rows, as generate() does, when the prefixes come in equal runs of identical ones.
        starts = [i for i in range(len(prefixes)) if i == 0 or prefixes[i] != prefixes[i - 1]]
        runs = {b - a for a, b in zip(starts, [*starts[1:], len(prefixes)])}
        G = runs.pop() if len(runs) == 1 else 1
        unique = [prefixes[i] for i in starts] if G > 1 else prefixes
        prompt_ids, prompt_mask = self._pad_left(unique)  # (n / G, P) each
        tau = torch.tensor([float(t) for t in temperatures], dtype=torch.float32, device=self.device)
        was_training = self.model.training
        self.model.eval()
        saved_min, self.min_new_tokens = self.min_new_tokens, 0
        try:
            with self._autocast():
                tokens, logprobs = self._decode(prompt_ids, prompt_mask, G, tau, limit)  # (n, t) each
        finally:
            self.min_new_tokens = saved_min
            self.model.train(was_training)
        turns = []
        for ids, lps in zip(tokens.tolist(), logprobs.tolist()):
            end = next((i for i, token in enumerate(ids) if token in self.stop_ids), None)
            length = len(ids) if end is None else end + 1
            turns.append(Continuation(ids[:length], lps[:length], stopped=end is not None))
        return turns
