"""The sampler interface: what the trainer needs from a generation backend, and nothing more.

Any object with this ``generate`` method can replace :class:`~grpokit.rollout.TransformersSampler`
(a vLLM engine, a remote server), because the trainer only ever sees the :class:`RolloutBatch`.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

from grpokit.rollout.batch import RolloutBatch

# A prompt is plain text, or a chat: a list of {"role": ..., "content": ...} messages.
Prompt = str | list[dict[str, Any]]


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
            to the prompt index and ``old_logprobs`` filled in.
        """
        ...
