"""Loading causal LMs and tokenizers from a local directory, with the checks RL training needs.

Only local directories in the Hugging Face layout are accepted (``config.json`` plus safetensors
weights): nothing is fetched from a hub, and pickled ``.bin`` weights are refused (``use_safetensors``).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

DTYPES: tuple[str, ...] = ("float32", "bfloat16", "float16", "auto")


def resolve_dtype(name: str | torch.dtype) -> torch.dtype | str:
    """``"float32"`` / ``"bfloat16"`` / ``"float16"`` -> the torch dtype; ``"auto"`` is passed through.

    ``"auto"`` means "the dtype recorded in the checkpoint's config", which transformers resolves.
    """
    import torch

    if isinstance(name, torch.dtype):
        return name
    aliases = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16", "half": "float16"}
    key = aliases.get(str(name).lower(), str(name).lower())
    if key == "auto":
        return "auto"
    if key not in DTYPES:
        raise ValueError(f"dtype must be one of {DTYPES}, got {name!r}")
    return getattr(torch, key)


def _check_model_dir(path: str | os.PathLike) -> Path:
    directory = Path(path)
    if not directory.exists():
        raise FileNotFoundError(f"model path {str(directory)!r} does not exist")
    if not directory.is_dir():
        raise ValueError(f"model path {str(directory)!r} is not a directory (expected a save_pretrained folder)")
    if not (directory / "config.json").is_file():
        raise ValueError(f"model path {str(directory)!r} has no config.json: not a transformers model directory")
    if not any(directory.glob("*.safetensors")):
        found = sorted(p.name for p in directory.iterdir())
        raise ValueError(
            f"model path {str(directory)!r} has no *.safetensors weights (found: {found}); "
            "re-save the model with save_pretrained(path, safe_serialization=True)"
        )
    return directory


def load_model(
    path: str | os.PathLike,
    *,
    dtype: str | torch.dtype = "float32",
    device: str | torch.device = "cpu",
    trust_remote_code: bool = False,
    **kwargs: Any,
) -> PreTrainedModel:
    """Load ``AutoModelForCausalLM`` from a local directory of safetensors weights.

    Args:
        path: a directory written by ``save_pretrained``.
        dtype: ``"float32"``, ``"bfloat16"``, ``"float16"`` or ``"auto"`` (the checkpoint's own dtype).
        device: where to put the model.
        trust_remote_code: allow custom modelling code shipped in the directory.
        kwargs: passed to ``from_pretrained`` (e.g. ``attn_implementation``).
    """
    from transformers import AutoModelForCausalLM

    directory = _check_model_dir(path)
    model = AutoModelForCausalLM.from_pretrained(
        directory,
        dtype=resolve_dtype(dtype),
        use_safetensors=True,
        trust_remote_code=trust_remote_code,
        local_files_only=True,
        **kwargs,
    )
    # transformers decorates PreTrainedModel.to, which hides its bound signature from type checkers.
    return model.to(device)  # type: ignore[arg-type]


def load_tokenizer(path: str | os.PathLike, *, trust_remote_code: bool = False) -> PreTrainedTokenizerBase:
    """Load a tokenizer ready for RL sampling: a pad token set, padding on the left.

    A tokenizer without a pad token gets its EOS token as pad (the completion mask, not the token id,
    is what tells padding from a real EOS); one with neither is an error.
    """
    from transformers import AutoTokenizer

    directory = Path(path)
    if not directory.is_dir():
        raise FileNotFoundError(f"tokenizer path {str(directory)!r} is not a directory")
    try:
        tokenizer = AutoTokenizer.from_pretrained(
            directory, trust_remote_code=trust_remote_code, local_files_only=True
        )
    except (OSError, ValueError) as error:
        raise ValueError(f"could not load a tokenizer from {str(directory)!r}: {error}") from error
    if tokenizer.pad_token is None:
        if tokenizer.eos_token is None:
            raise ValueError(f"tokenizer at {str(directory)!r} has neither a pad token nor an EOS token")
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "left"
    return tokenizer
