"""Model steppers for the sampler: prefill the B prompts once, then one token per call for N = B*G rows.

A decoder owns the KV cache of one ``generate`` call. Its contract:

- ``prefill(prompt_ids (B, P), prompt_mask (B, P), G, max_new_tokens) -> (N, V)`` runs the prompts
  once and returns the logits of each row's first completion token; the cache is then expanded to the
  G samples of each prompt (``repeat_interleave``) instead of prefilling B*G identical rows;
- ``step(tokens (N,)) -> (N, V)`` feeds the tokens just sampled and returns the next logits.

Positions follow the left padding: ``position = cumsum(mask) - 1``, so a row's numbers do not depend on
the padding the other rows forced on it.
"""

from __future__ import annotations

from typing import Any

import torch


class HFDecoder:
    """Decodes with the model's own ``forward`` and a transformers ``DynamicCache``.

    Works for any causal LM in transformers (and PEFT wrappers), at the cost of the per-layer Python
    overhead of the modelling code.
    """

    def __init__(self, model: Any):
        self.model = model

    def prefill(
        self, prompt_ids: torch.Tensor, prompt_mask: torch.Tensor, num_generations: int, max_new_tokens: int
    ) -> torch.Tensor:
        from transformers import DynamicCache

        B, P = prompt_ids.shape
        G = num_generations
        position_ids = (prompt_mask.cumsum(dim=1) - 1).clamp(min=0)  # (B, P)
        self.cache = DynamicCache(config=self.model.config)
        output = self.model(
            input_ids=prompt_ids,
            attention_mask=prompt_mask,
            position_ids=position_ids,
            past_key_values=self.cache,
            use_cache=True,
            logits_to_keep=1,
        )
        self.cache.batch_repeat_interleave(G)  # (B, ...) -> (B*G, ...), group by group
        # One mask for the whole call, sliced per step: prompt part, then all ones for the completion
        # (finished rows keep attending to their pad inputs, which only they can see).
        self.attention_mask = torch.ones(B * G, P + max_new_tokens, dtype=prompt_mask.dtype, device=prompt_ids.device)
        self.attention_mask[:, :P] = prompt_mask.repeat_interleave(G, dim=0)
        self.next_position = position_ids[:, -1:].repeat_interleave(G, dim=0) + 1  # (N, 1)
        self.length = P
        return output.logits[:, -1].repeat_interleave(G, dim=0)  # (N, V)

    def step(self, tokens: torch.Tensor) -> torch.Tensor:
        self.length += 1
        output = self.model(
            input_ids=tokens[:, None],  # (N, 1)
            attention_mask=self.attention_mask[:, : self.length],  # (N, P + t + 1)
            position_ids=self.next_position,  # (N, 1)
            past_key_values=self.cache,
            use_cache=True,
        )
        self.next_position = self.next_position + 1
        return output.logits[:, -1]  # (N, V)
