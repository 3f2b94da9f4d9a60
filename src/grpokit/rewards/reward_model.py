"""A learned reward: any local ``AutoModelForSequenceClassification`` scores prompt + completion.

Reward normalisation: a model whose ``config.json`` holds ``reward_center`` and ``reward_scale`` (``grpokit rm``
writes them: the mean and standard deviation of its rewards on a reference set) scores
``(logit - reward_center) / reward_scale``, so every reward model reaches GRPO and PPO on a comparable scale
(mean 0, unit spread on the reference distribution) whatever offset its training left. Without them the raw
logit is the reward.
"""

from __future__ import annotations

import os
from typing import Any, cast

import torch

__all__ = ["RewardModel", "reward_text"]


def reward_text(tokenizer: Any, prompt: Any, response: Any) -> str:
    """The text a reward model reads for ``response`` to ``prompt``: one definition for training and scoring.

    Text prompt and response are concatenated; a chat prompt (list of messages) gets the response as an
    assistant message (or, when the response is itself a list of messages, those messages) and the
    tokenizer's chat template. ``prompt=None``: the response alone (text, or messages through the template).
    """
    if prompt is None and isinstance(response, str):
        return response
    if isinstance(prompt, str) and isinstance(response, str):
        return f"{prompt}{response}"
    if isinstance(prompt, str):
        raise ValueError("a text prompt cannot be followed by chat messages; give the prompt as messages too")
    turn = response if isinstance(response, list) else [{"role": "assistant", "content": response}]
    text = tokenizer.apply_chat_template([*(prompt or []), *turn], tokenize=False)
    return cast(str, text)  # tokenize=False returns the text


class RewardModel:
    """Reward function backed by a sequence-classification model; the reward is its logit 0, normalised by
    the model's ``reward_center`` / ``reward_scale`` when its config has them (module docstring).

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
        config = self.model.config
        #: (center, scale) applied to every score, from the model's config.json; None: raw logits.
        self.normalization: tuple[float, float] | None = None
        if getattr(config, "reward_center", None) is not None and getattr(config, "reward_scale", None):
            self.normalization = (float(config.reward_center), float(config.reward_scale))

    @torch.no_grad()
    def __call__(
        self, prompts: list[Any], completions: list[str], **columns: list[Any]
    ) -> list[float | None]:
        texts = [reward_text(self.tokenizer, p, c) for p, c in zip(prompts, completions)]
        scores: list[float] = []
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
        if self.normalization is None:
            return list(scores)
        center, scale = self.normalization
        return [(s - center) / scale for s in scores]
