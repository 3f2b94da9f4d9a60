"""The rollout container that flows from the sampler to rewards, advantages and the update.

Shape letters, the same everywhere in grpokit: B prompts, G group size (``num_generations``),
N = B*G responses, P prompt tokens (left-padded), T completion tokens (right-padded), V vocabulary.
"""

from __future__ import annotations

import io
import pickle
from collections.abc import Sequence
from dataclasses import dataclass, field, fields, replace
from typing import Any

import torch
from typing_extensions import Self

PROMPT_SIDE = {"pad": "left"}
"""Field metadata: a (N, P) prompt-aligned tensor, left-padded (new rows are padded on the left)."""
COMPLETION_SIDE = {"pad": "right"}
"""Field metadata: a (N, T) completion-aligned tensor, right-padded."""


@dataclass
class RolloutBatch:
    """N sampled responses, grouped by prompt.

    Rows are ordered group by group: rows ``g*G .. g*G+G-1`` belong to prompt ``g`` in the
    common fixed-G case, but consumers must rely on ``group_ids`` only (groups may differ in size).
    Every field is per response; :meth:`select` and :meth:`concat` work on all of them (subclasses' too),
    padding (N, P) fields on the left and (N, T) fields on the right as their metadata says.
    """

    prompt_ids: torch.Tensor = field(metadata=PROMPT_SIDE)  # (N, P) long, left-padded with the pad id
    prompt_mask: torch.Tensor = field(metadata=PROMPT_SIDE)  # (N, P) long, 1 on real prompt tokens
    # (N, T) long, right-padded; includes the EOS token when one was sampled
    completion_ids: torch.Tensor = field(metadata=COMPLETION_SIDE)
    completion_mask: torch.Tensor = field(
        metadata=COMPLETION_SIDE
    )  # (N, T) float, 1 on real tokens (EOS too)
    group_ids: torch.Tensor  # (N,) long, equal ids = same prompt
    temperatures: torch.Tensor  # (N,) float, sampling temperature of each response
    truncated: torch.Tensor  # (N,) bool, True when max_new_tokens was hit before EOS
    prompts: list[Any]  # N prompt objects (str, or a list of chat messages), repeated per response
    completions: list[str]  # N decoded completions (special tokens stripped)
    columns: dict[str, list[Any]] = field(default_factory=dict)  # dataset columns, N entries each
    # (N, T) behaviour log-probs: what the sampler saw for each sampled token (not pi_old, which the trainer
    # computes; a KV-cached or vLLM decode rounds differently)
    sampler_logprobs: torch.Tensor | None = field(default=None, metadata=COMPLETION_SIDE)
    ref_logprobs: torch.Tensor | None = field(default=None, metadata=COMPLETION_SIDE)  # (N, T) under pi_ref
    # (N,) long, asynchronous rollouts: the policy version (training steps completed) whose weights sampled
    # each row; None when the policy itself samples (synchronous runs)
    policy_version: torch.Tensor | None = None
    # (N, T) float, multi-turn episodes: 1 on the tokens the policy sampled, 0 on the environment's and tools'
    # tokens between turns (real tokens, attended to, never trained on); None: every completion token is sampled
    loss_mask: torch.Tensor | None = field(default=None, metadata=COMPLETION_SIDE)
    # N conversations, multi-turn episodes: every message of each episode after the opening prompt, in order
    # ({"role": "assistant" | "tool" | "user", "content": str, ...}; assistant turns carry "tool_calls" when
    # they called tools and "reward" when the environment answered them); None for single completions
    conversations: list[list[dict[str, Any]]] | None = None

    @property
    def num_responses(self) -> int:
        return self.completion_ids.shape[0]

    @property
    def sampled_mask(self) -> torch.Tensor:
        """(N, T) float: 1 on the tokens the policy sampled (``loss_mask`` for multi-turn episodes, else
        ``completion_mask``)."""
        return self.completion_mask if self.loss_mask is None else self.loss_mask

    def select(self, index: torch.Tensor | list[int]) -> Self:
        """Rows ``index`` of every per-response field (tensors, lists and columns alike)."""
        idx = torch.as_tensor(index, dtype=torch.long)
        rows = idx.tolist()

        def take(value: Any) -> Any:
            if value is None:
                return None
            if isinstance(value, torch.Tensor):
                return value[idx]
            if isinstance(value, dict):
                return {k: take(v) for k, v in value.items()}
            return [value[i] for i in rows]

        return replace(self, **{f.name: take(getattr(self, f.name)) for f in fields(self)})

    def state_dict(self) -> dict[str, Any]:
        """Every field, as tensors, lists and dicts: what ``torch.load(..., weights_only=True)`` reads back."""
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @classmethod
    def from_state_dict(cls, state: dict[str, Any]) -> Self:
        return cls(**state)

    def to_bytes(self) -> bytes:
        """The batch serialised for another process (``torch.save`` of :meth:`state_dict`, no pickled objects)."""
        buffer = io.BytesIO()
        torch.save(self.state_dict(), buffer)
        return buffer.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes) -> Self:
        """The batch :meth:`to_bytes` wrote; loads with ``weights_only=True``, so the bytes cannot run code."""
        try:
            state = torch.load(io.BytesIO(data), weights_only=True)
        except pickle.UnpicklingError as error:
            raise ValueError(
                "a rollout batch holds a value that cannot cross processes safely (only tensors, lists, dicts, "
                "strings, numbers and None can): check the dataset's extra columns and the prompts' types"
            ) from error
        return cls.from_state_dict(state)

    @classmethod
    def concat(cls, batches: Sequence[Self], pad_id: int) -> Self:
        """One batch from several (e.g. generation rounds): every field concatenated, prompts re-padded on the
        left (ids with ``pad_id``), completions on the right, group ids made distinct across batches.

        A field that is None in any batch is None in the result.
        """
        if len(batches) == 1:
            return batches[0]
        offset, group_ids = 0, []
        for b in batches:
            group_ids.append(b.group_ids - b.group_ids.min() + offset)
            offset = int(group_ids[-1].max()) + 1
        merged: dict[str, Any] = {"group_ids": torch.cat(group_ids)}
        for f in fields(batches[0]):
            if f.name == "group_ids":
                continue
            values = [getattr(b, f.name) for b in batches]
            if any(v is None for v in values):
                merged[f.name] = None
            elif isinstance(values[0], torch.Tensor):
                merged[f.name] = torch.cat(_padded(values, f.metadata.get("pad"), pad_id, f.name))
            elif isinstance(values[0], dict):
                merged[f.name] = {k: [x for v in values for x in v[k]] for k in values[0]}
            else:
                merged[f.name] = [x for v in values for x in v]
        return replace(batches[0], **merged)


def _padded(values: list[torch.Tensor], side: str | None, pad_id: int, name: str) -> list[torch.Tensor]:
    """(n_i, L_i) tensors padded to the widest L on ``side`` ("left"/"right"); None: (n_i, ...) as they are."""
    if side is None:
        return values
    width = max(v.shape[1] for v in values)
    fill = pad_id if name.endswith("_ids") else 0
    return [
        torch.nn.functional.pad(
            v, (width - v.shape[1], 0) if side == "left" else (0, width - v.shape[1]), value=fill
        )
        for v in values
    ]
