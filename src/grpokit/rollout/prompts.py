"""Prompt encoding: text or chat messages -> token ids, once per prompt."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, TypeGuard

TRUNCATIONS: tuple[str, ...] = ("error", "left")


def _is_chat(prompt: Any) -> TypeGuard[list[Any]]:
    return isinstance(prompt, list)


def _check_chat(prompt: list[Any], index: int) -> None:
    if not prompt:
        raise ValueError(f"prompt {index} is an empty list of chat messages")
    for j, message in enumerate(prompt):
        if not isinstance(message, dict) or "role" not in message or "content" not in message:
            raise ValueError(
                f"prompt {index}, message {j}: chat messages must be dicts with 'role' and 'content', "
                f"got {message!r}"
            )


def encode_prompts(
    tokenizer: Any,
    prompts: Sequence[str | list[dict[str, Any]]],
    max_prompt_length: int | None = None,
    truncation: str = "error",
) -> list[list[int]]:
    """Token ids of each prompt, without padding.

    Text prompts are encoded with the tokenizer's own special tokens (e.g. a BOS where the model expects
    one). Chat prompts (lists of ``{"role", "content"}`` messages) go through the tokenizer's chat
    template with ``add_generation_prompt=True``; the template already holds the special tokens, so
    none are added again.

    Args:
        tokenizer: a transformers tokenizer.
        prompts: B prompts, each a non-empty string or a non-empty list of chat messages.
        max_prompt_length: longest allowed prompt in tokens, or None for no limit.
        truncation: what to do with a longer prompt: ``"error"`` raises, ``"left"`` keeps the last
            ``max_prompt_length`` tokens (the end of a prompt is where the question usually is).

    Returns:
        B lists of token ids.
    """
    if truncation not in TRUNCATIONS:
        raise ValueError(f"truncation must be one of {TRUNCATIONS}, got {truncation!r}")
    if max_prompt_length is not None and max_prompt_length < 1:
        raise ValueError(f"max_prompt_length must be >= 1 or None, got {max_prompt_length}")
    if isinstance(prompts, (str, dict)):
        raise ValueError("prompts must be a list of prompts, not a single prompt")
    encoded: list[list[int]] = []
    for index, prompt in enumerate(prompts):
        if _is_chat(prompt):
            _check_chat(prompt, index)
            if not getattr(tokenizer, "chat_template", None):
                raise ValueError(
                    f"prompt {index} is a list of chat messages but the tokenizer has no chat template; "
                    "set tokenizer.chat_template or pass plain-text prompts"
                )
            text = tokenizer.apply_chat_template(prompt, tokenize=False, add_generation_prompt=True)
            ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        elif isinstance(prompt, str):
            if not prompt:
                raise ValueError(f"prompt {index} is an empty string")
            ids = tokenizer(prompt, add_special_tokens=True)["input_ids"]
        else:
            raise ValueError(
                f"prompt {index} must be a string or a list of chat messages, got {type(prompt).__name__}"
            )
        if not ids:
            raise ValueError(f"prompt {index} encodes to zero tokens")
        if max_prompt_length is not None and len(ids) > max_prompt_length:
            if truncation == "error":
                raise ValueError(
                    f"prompt {index} has {len(ids)} tokens, more than max_prompt_length={max_prompt_length} "
                    "(pass prompt_truncation='left' to keep its last tokens)"
                )
            ids = ids[-max_prompt_length:]
        encoded.append(list(ids))
    return encoded
