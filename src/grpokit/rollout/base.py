"""The sampler interface: what the trainer needs from a generation backend, and nothing more.

Any object with this ``generate`` method can replace :class:`~grpokit.rollout.TransformersSampler`
(a vLLM engine, a remote server), because the trainer only ever sees the :class:`RolloutBatch`.
"""

from __future__ import annotations

import math
import operator
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from grpokit.rollout.batch import RolloutBatch

# A prompt is plain text, or a chat: a list of {"role": ..., "content": ...} messages.
Prompt = str | list[dict[str, Any]]


@dataclass
class Continuation:
    """One turn sampled after a prefix of token ids (:meth:`TurnSampler.continue_from_ids`)."""

    token_ids: list[int]  # the sampled ids, the stop token included when one was drawn
    logprobs: list[float]  # log-prob of each under the temperature-scaled distribution (sampler_logprobs)
    stopped: bool  # a stop token ended the turn; False: cut at max_new_tokens


@runtime_checkable
class TurnSampler(Protocol):
    """A sampler that continues token-id prefixes, for multi-turn episodes (token in, token out: the ids it
    sampled are kept exactly, never decoded and re-encoded)."""

    def continue_from_ids(
        self, prefixes: list[list[int]], temperatures: list[float], max_new_tokens: int | None = None
    ) -> list[Continuation]:
        """Sample one continuation of each prefix.

        Args:
            prefixes: n token-id lists (the rendered conversation so far, ending where the model writes).
            temperatures: n sampling temperatures (ignored by a greedy sampler).
            max_new_tokens: tokens per continuation at most; None: the sampler's ``max_new_tokens``.

        Returns:
            n :class:`Continuation`, in the order of ``prefixes``.
        """
        ...


@runtime_checkable
class Sampler(Protocol):
    """Turns B prompts into N = B*G sampled responses."""

    def generate(
        self,
        prompts: list[Prompt],
        num_generations: int,
        columns: dict[str, list[Any]] | None = None,
    ) -> RolloutBatch:
        """Sample ``num_generations`` (G) responses for each of the B ``prompts``.

        Args:
            prompts: B prompts (text or chat messages).
            num_generations: G, responses per prompt.
            columns: dataset columns, B entries each; repeated G times per prompt in the batch.

        Returns:
            A :class:`RolloutBatch` of N = B*G rows, ordered group by group, with ``group_ids`` equal
            to the prompt index and ``sampler_logprobs`` filled in.
        """
        ...


def check_generate_args(
    prompts: list[Prompt], num_generations: int, columns: dict[str, list[Any]] | None
) -> tuple[list[Prompt], dict[str, list[Any]]]:
    """Validate :meth:`Sampler.generate`'s arguments, naming the one at fault (shared by every sampler).

    Returns the prompts as a list and the columns as a dict (B entries each).
    """
    if num_generations < 1:
        raise ValueError(f"num_generations must be >= 1, got {num_generations}")
    prompts = list(prompts)
    if not prompts:
        raise ValueError("prompts is empty")
    B = len(prompts)
    columns = dict(columns or {})
    for name, values in columns.items():
        if len(values) != B:
            raise ValueError(f"column {name!r} has {len(values)} entries but there are {B} prompts")
    return prompts, columns


def check_continue_args(
    prefixes: list[list[int]], temperatures: list[float], max_new_tokens: int | None, default_max_new_tokens: int
) -> tuple[list[list[int]], list[float], int]:
    """Validate :meth:`TurnSampler.continue_from_ids`'s arguments, naming the prefix or temperature at fault
    (shared by every sampler).

    Returns the prefixes as lists of ints, the temperatures as floats, and the token limit
    (``default_max_new_tokens`` when ``max_new_tokens`` is None).
    """
    if len(temperatures) != len(prefixes):
        raise ValueError(f"{len(prefixes)} prefixes but {len(temperatures)} temperatures")
    limit = default_max_new_tokens if max_new_tokens is None else int(max_new_tokens)
    if limit < 1:
        raise ValueError(f"max_new_tokens must be >= 1, got {limit}")
    checked = []
    for index, ids in enumerate(prefixes):
        try:
            tokens = [operator.index(token) for token in ids]  # Python, numpy or torch integers
        except TypeError as error:
            raise ValueError(f"prefix {index} holds a non-integer token ({error})") from error
        if not tokens:
            raise ValueError(f"prefix {index} is empty: every turn continues at least one rendered token")
        if min(tokens) < 0:
            raise ValueError(f"prefix {index} holds a negative token id {min(tokens)}")
        checked.append(tokens)
    taus = [float(tau) for tau in temperatures]
    for index, tau in enumerate(taus):
        if not (math.isfinite(tau) and tau >= 0):
            raise ValueError(f"temperature {index} is {tau!r}, expected a number >= 0 (0: greedy)")
    return checked, taus, limit


def check_sampling_knobs(
    *,
    max_new_tokens: int,
    min_new_tokens: int,
    temperature: float,
    top_p: float,
    top_k: int,
    temperature_schedule: tuple[float, float] | None,
    do_sample: bool,
    max_prompt_length: int | None,
    prompt_truncation: str,
) -> None:
    """Reject sampling settings no sampler can honour, naming the argument (shared by every sampler)."""
    from grpokit.rollout.prompts import TRUNCATIONS

    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
    if not 0 <= min_new_tokens <= max_new_tokens:
        raise ValueError(f"min_new_tokens must be in [0, max_new_tokens={max_new_tokens}], got {min_new_tokens}")
    if temperature < 0:
        raise ValueError(f"temperature must be >= 0 (0 = greedy), got {temperature}")
    if not 0 < top_p <= 1:
        raise ValueError(f"top_p must be in (0, 1], got {top_p}")
    if top_k < 0:
        raise ValueError(f"top_k must be >= 0 (0 disables it), got {top_k}")
    if temperature_schedule is not None:
        if len(temperature_schedule) != 2 or not all(t > 0 for t in temperature_schedule):
            raise ValueError(
                f"temperature_schedule must be a pair (low, high) of positive temperatures, "
                f"got {temperature_schedule!r}"
            )
        if temperature == 0 or not do_sample:
            raise ValueError("temperature_schedule cannot be combined with greedy decoding")
    if max_prompt_length is not None and max_prompt_length < 1:
        raise ValueError(f"max_prompt_length must be >= 1 or None, got {max_prompt_length}")
    if prompt_truncation not in TRUNCATIONS:
        raise ValueError(f"prompt_truncation must be one of {TRUNCATIONS}, got {prompt_truncation!r}")
