"""A reward model to train: a causal LM's body with a scalar head (``AutoModelForSequenceClassification``).

The head (``score``: hidden -> 1, no bias) reads the hidden state of each row's last non-pad token, so the
model must know the pad id. Loading a causal LM's directory this way keeps its body and initialises the head
(seeded by the caller's RNG); a directory saved by a reward-model run loads whole. With ``model.lora.r > 0``
peft wraps it for sequence classification: adapters on the body and the whole head train (peft's
``modules_to_save``), and :func:`merged_reward_model` folds the adapters back for a plain-transformers save.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import torch

from grpokit.models.loading import _check_model_dir, resolve_dtype
from grpokit.models.lora import _peft, is_adapter_dir, is_lora_model

if TYPE_CHECKING:
    from grpokit.config import ModelConfig

__all__ = ["load_reward_model", "merged_reward_model"]


def load_reward_model(
    settings: ModelConfig,
    pad_token_id: int,
    checkpoint: str | os.PathLike | None = None,
    *,
    device: str | torch.device = "cpu",
) -> Any:
    """The reward model to train, from ``settings.name_or_path`` (or, resuming, from ``checkpoint``).

    Args:
        settings: ``config.model`` (``name_or_path``, ``dtype``, ``lora``).
        pad_token_id: the tokenizer's pad id, set in the model's config.
        checkpoint: a checkpoint of this run: the full model, or (LoRA) the adapters and head over the base.

    Raises:
        ValueError: a checkpoint whose kind (adapters or full model) does not match ``model.lora``, QLoRA.
    """
    from transformers import AutoModelForSequenceClassification

    lora = settings.lora
    if lora.load_in_4bit:
        raise ValueError("model.lora.load_in_4bit is not supported for reward models; use plain LoRA")
    if checkpoint is not None and is_adapter_dir(checkpoint) != (lora.r > 0):
        kind = "LoRA adapters" if is_adapter_dir(checkpoint) else "a full model"
        raise ValueError(
            f"checkpoint {str(checkpoint)!r} holds {kind}, but model.lora.r is {lora.r}: resume with the "
            "model.lora settings the run was started with"
        )
    if settings.name_or_path is None:
        raise ValueError("model.name_or_path is unset: set --model PATH (the body of the reward model)")
    source = checkpoint if checkpoint is not None and lora.r == 0 else settings.name_or_path
    directory = _check_model_dir(source)
    model = AutoModelForSequenceClassification.from_pretrained(
        directory, num_labels=1, pad_token_id=pad_token_id, dtype=resolve_dtype(settings.dtype),
        use_safetensors=True, local_files_only=True,
    )  # fmt: skip
    model = model.to(torch.device(device))
    if lora.r == 0:
        return model
    peft = _peft()
    if checkpoint is not None:
        with _quiet_peft():
            return peft.PeftModel.from_pretrained(model, os.fspath(checkpoint), is_trainable=True)
    config = peft.LoraConfig(
        r=lora.r, lora_alpha=lora.alpha if lora.alpha is not None else 2 * lora.r, lora_dropout=lora.dropout,
        target_modules=lora.target_modules, task_type="SEQ_CLS",
        base_model_name_or_path=str(directory.resolve()),
    )  # fmt: skip
    try:
        with _quiet_peft():
            return peft.get_peft_model(model, config)
    except ValueError as err:  # e.g. target modules not found: name the field
        raise ValueError(f"model.lora.target_modules: {err}") from None


@contextmanager
def _quiet_peft() -> Iterator[None]:
    """peft reads transformers' deprecated ``is_gradient_checkpointing`` when it wraps a model (as in
    models/lora.py): a warning about peft's code that no user can act on."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
        yield


def merged_reward_model(model: Any) -> Any:
    """A plain ``...ForSequenceClassification`` with ``model``'s LoRA adapters folded in (``W + (alpha/r) B A``)
    and its trained head; ``model`` itself when it has no adapters. The peft wrapper is consumed."""
    if not is_lora_model(model):
        return model
    return model.merge_and_unload()
