"""The rollout container that flows from the sampler to rewards, advantages and the update.

Shape letters, the same everywhere in grpokit: B prompts, G group size (``num_generations``),
N = B*G responses, P prompt tokens (left-padded), T completion tokens (right-padded), V vocabulary.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch


@dataclass
class RolloutBatch:
    """N sampled responses, grouped by prompt.

    Rows are ordered group by group: rows ``g*G .. g*G+G-1`` belong to prompt ``g`` in the
    common fixed-G case, but consumers must rely on ``group_ids`` only (groups may differ in size).
    """

    prompt_ids: torch.Tensor  # (N, P) long, left-padded with the pad id
    prompt_mask: torch.Tensor  # (N, P) long, 1 on real prompt tokens
    completion_ids: torch.Tensor  # (N, T) long, right-padded; includes the EOS token when one was sampled
    completion_mask: torch.Tensor  # (N, T) float, 1 on real completion tokens (EOS included)
    group_ids: torch.Tensor  # (N,) long, equal ids = same prompt
    temperatures: torch.Tensor  # (N,) float, sampling temperature of each response
    truncated: torch.Tensor  # (N,) bool, True when max_new_tokens was hit before EOS
    prompts: list[Any]  # N prompt objects (str, or a list of chat messages), repeated per response
    completions: list[str]  # N decoded completions (special tokens stripped)
    columns: dict[str, list[Any]] = field(default_factory=dict)  # dataset columns, N entries each
    old_logprobs: torch.Tensor | None = None  # (N, T) sampled-token log-probs under the sampling policy
    ref_logprobs: torch.Tensor | None = None  # (N, T) under the reference policy, when beta > 0

    @property
    def num_responses(self) -> int:
        return self.completion_ids.shape[0]

    def select(self, index: torch.Tensor | list[int]) -> RolloutBatch:
        """Rows ``index`` of every per-response field (tensors and lists alike)."""
        idx = torch.as_tensor(index, dtype=torch.long)
        rows = idx.tolist()

        def take(value: Any) -> Any:
            if value is None:
                return None
            if isinstance(value, torch.Tensor):
                return value[idx]
            return [value[i] for i in rows]

        return RolloutBatch(
            prompt_ids=take(self.prompt_ids),
            prompt_mask=take(self.prompt_mask),
            completion_ids=take(self.completion_ids),
            completion_mask=take(self.completion_mask),
            group_ids=take(self.group_ids),
            temperatures=take(self.temperatures),
            truncated=take(self.truncated),
            prompts=take(self.prompts),
            completions=take(self.completions),
            columns={k: take(v) for k, v in self.columns.items()},
            old_logprobs=take(self.old_logprobs),
            ref_logprobs=take(self.ref_logprobs),
        )
