"""Models and tokenizers: loading from disk, the built-in tiny ones, and completion log-probs."""

from grpokit.models.loading import load_model, load_tokenizer, resolve_dtype
from grpokit.models.logprobs import completion_logprobs, compute_logits_for_completion
from grpokit.models.tiny import (
    build_char_tokenizer,
    build_tiny_model,
    qwen2_reference_config,
    train_bpe_tokenizer,
)

__all__ = [
    "build_char_tokenizer",
    "build_tiny_model",
    "completion_logprobs",
    "compute_logits_for_completion",
    "load_model",
    "load_tokenizer",
    "qwen2_reference_config",
    "resolve_dtype",
    "train_bpe_tokenizer",
]
