"""A learned reward: any local ``AutoModelForSequenceClassification`` scores prompt + completion."""

from __future__ import annotations

import os
from typing import Any, cast

import torch

__all__ = ["RewardModel"]


class RewardModel:
    """Reward function backed by a sequence-classification model; the reward is its logit 0.

    Plain-text prompts are concatenated with the completion; chat prompts (lists of messages) get the
    completion appended as an assistant message and the reward tokenizer's chat template. Scores are
    computed in batches of ``batch_size`` with right padding and the attention mask, so a sample's score
    does not depend on its batch neighbours.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        *,
        device: str | torch.device = "cpu",
        dtype: torch.dtype = torch.float32,
        batch_size: int = 16,
        max_length: int | None = None,
    ):
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        if not os.path.isdir(path):
            raise ValueError(f"reward_model {str(path)!r} is not a local model directory")
        self.name = os.path.basename(os.path.normpath(path))
        self.tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
        # use_safetensors: a pickled .bin reward model is refused, never unpickled.
        self.model = AutoModelForSequenceClassification.from_pretrained(
            path, dtype=dtype, local_files_only=True, use_safetensors=True
        )
        self.model.to(device).eval().requires_grad_(False)
        self.device = torch.device(device)
        self.batch_size = batch_size
        self.max_length = max_length
        if self.tokenizer.pad_token_id is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        if self.model.config.pad_token_id is None:
            # The classification head reads the last non-pad token, so the model must know the pad id.
            self.model.config.pad_token_id = self.tokenizer.pad_token_id
        self.tokenizer.padding_side = "right"

    def _text(self, prompt: Any, completion: str) -> str:
        if isinstance(prompt, list):
            messages = [*prompt, {"role": "assistant", "content": completion}]
            text = self.tokenizer.apply_chat_template(messages, tokenize=False)
            return cast(str, text)  # tokenize=False returns the text
        return f"{prompt}{completion}"

    @torch.no_grad()
    def __call__(
        self, prompts: list[Any], completions: list[str], **columns: list[Any]
    ) -> list[float | None]:
        texts = [self._text(p, c) for p, c in zip(prompts, completions)]
        scores: list[float | None] = []
        for start in range(0, len(texts), self.batch_size):
            enc = self.tokenizer(
                texts[start : start + self.batch_size],
                return_tensors="pt",
                padding=True,
                truncation=self.max_length is not None,
                max_length=self.max_length,
            ).to(self.device)
            logits = self.model(**enc).logits  # (b, num_labels)
            scores += logits[:, 0].float().tolist()
        return scores
