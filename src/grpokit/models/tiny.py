"""The project's own tiny models and tokenizers, built fully offline.

Nothing here downloads anything: tokenizers are built or trained with the ``tokenizers`` library and
models are randomly initialised from a transformers config. They exist for tests, the built-in demo and
the sampler benchmark, and they load back with ``AutoTokenizer`` / ``AutoModelForCausalLM`` like any Hub
checkpoint.

Every tokenizer built here has the same special tokens, in this order, so ids are stable:
``<pad>`` = 0, ``<bos>`` = 1, ``<eos>`` = 2, ``<unk>`` = 3. Padding is on the left (RL prompts are
left-padded so that every completion starts at the same column). No BOS is prepended when encoding:
prompts are short and rotary position embeddings need no anchor token.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from transformers import PretrainedConfig, PreTrainedModel, PreTrainedTokenizerFast

SPECIAL_TOKENS: tuple[str, ...] = ("<pad>", "<bos>", "<eos>", "<unk>")
ARCHITECTURES: tuple[str, ...] = ("qwen2", "llama")

CHAR_CHAT_TEMPLATE = (
    "{%- for message in messages -%}"
    "{%- if message['role'] == 'assistant' -%}{{- message['content'] + eos_token -}}"
    "{%- else -%}{{- message['content'] + '\\n' -}}{%- endif -%}"
    "{%- endfor -%}"
)
"""A chat template for character tokenizers, as compact as a conversation can be written: every message is
its content, a system / user / tool message followed by a newline and an assistant message by EOS; no role
names and no generation prompt (the model writes right after the last newline).

Rendering a conversation that ends with an assistant turn is a prefix of rendering it with more messages
(and the generation prompt): the tokens of new messages are the difference, as multi-turn episodes need.
An assistant message's ``tool_calls`` are not rendered: its content is the text the model wrote, the call
included. Tool schemas (``tools=``) are ignored."""


def _wrap(tokenizer_object: Any, path: str | os.PathLike | None) -> PreTrainedTokenizerFast:
    from transformers import PreTrainedTokenizerFast

    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer_object,
        pad_token="<pad>",
        bos_token="<bos>",
        eos_token="<eos>",
        unk_token="<unk>",
        padding_side="left",
    )
    if path is not None:
        tokenizer.save_pretrained(os.fspath(path))
    return tokenizer


def build_char_tokenizer(alphabet: str, path: str | os.PathLike | None = None) -> PreTrainedTokenizerFast:
    """A character-level tokenizer: one token per character of ``alphabet``, plus the special tokens.

    Characters outside ``alphabet`` encode to ``<unk>``. Decoding concatenates the characters with no
    separator, so ``decode(encode(s)) == s`` for any ``s`` over the alphabet (whitespace included).

    Args:
        alphabet: the characters of the vocabulary; duplicates are ignored, order fixes the ids
            (character ``alphabet[i]`` gets id ``len(SPECIAL_TOKENS) + i`` when there are no duplicates).
        path: when given, the tokenizer is saved there with ``save_pretrained``.
    """
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers

    if not isinstance(alphabet, str) or not alphabet:
        raise ValueError(f"alphabet must be a non-empty string, got {alphabet!r}")
    vocab = {token: i for i, token in enumerate(SPECIAL_TOKENS)}
    for char in dict.fromkeys(alphabet):
        vocab[char] = len(vocab)
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    # [\s\S] rather than "." so that newlines are characters too.
    tokenizer.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")
    tokenizer.decoder = decoders.Fuse()
    return _wrap(tokenizer, path)


def train_bpe_tokenizer(
    texts: Iterable[str], vocab_size: int = 512, path: str | os.PathLike | None = None
) -> PreTrainedTokenizerFast:
    """A byte-level BPE tokenizer trained offline on ``texts`` (GPT-2 style byte alphabet).

    Byte-level means any string encodes without ``<unk>``: the 256 byte symbols are always in the
    vocabulary, so ``vocab_size`` must leave room for them and the special tokens.

    Args:
        texts: the training corpus, any iterable of strings (consumed once).
        vocab_size: the final vocabulary size, special tokens included; at least 256 + 4.
        path: when given, the tokenizer is saved there with ``save_pretrained``.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    minimum = 256 + len(SPECIAL_TOKENS)
    if vocab_size < minimum:
        raise ValueError(
            f"vocab_size must be at least {minimum} (256 bytes + special tokens), got {vocab_size}"
        )
    tokenizer = Tokenizer(models.BPE(unk_token=None))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(texts, trainer=trainer)
    return _wrap(tokenizer, path)


def qwen2_reference_config(vocab_size: int = 512, **overrides: Any) -> PretrainedConfig:
    """The benchmark model's config: Qwen2, hidden 256, 4 layers, 4 heads, 2 KV heads, MLP 688, tied.

    About 3.0M parameters at ``vocab_size=512``. ``overrides`` are passed to ``Qwen2Config``.
    """
    from transformers import Qwen2Config

    kwargs: dict[str, Any] = dict(
        vocab_size=vocab_size,
        hidden_size=256,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=2,
        intermediate_size=688,
        max_position_embeddings=512,
        tie_word_embeddings=True,
    )
    kwargs.update(overrides)
    return Qwen2Config(**kwargs)


def build_tiny_model(
    tokenizer: PreTrainedTokenizerFast,
    path: str | os.PathLike | None = None,
    *,
    architecture: str = "qwen2",
    hidden_size: int = 128,
    num_layers: int = 4,
    num_heads: int = 4,
    num_kv_heads: int | None = None,
    intermediate_size: int = 512,
    max_position_embeddings: int = 256,
    tie_word_embeddings: bool = True,
    seed: int = 0,
    config: PretrainedConfig | None = None,
    **config_kwargs: Any,
) -> PreTrainedModel:
    """A randomly initialised causal LM sized for ``tokenizer``, optionally saved with it.

    The vocabulary size and the pad/bos/eos ids are taken from ``tokenizer``. Initialisation uses
    ``seed`` in a forked RNG, so the same arguments give the same weights and the caller's global RNG
    is left untouched.

    Args:
        tokenizer: the tokenizer the model will be used with.
        path: when given, model (safetensors) and tokenizer are saved there with ``save_pretrained``.
        architecture: ``"qwen2"`` or ``"llama"``.
        hidden_size, num_layers, num_heads, num_kv_heads, intermediate_size, max_position_embeddings,
            tie_word_embeddings: the usual config fields; ``num_kv_heads=None`` means ``num_heads``.
        seed: initialisation seed.
        config: a full config (e.g. :func:`qwen2_reference_config`) used instead of the size arguments;
            its vocabulary size and special-token ids are still set from ``tokenizer``.
        config_kwargs: further config fields (e.g. ``initializer_range``, ``attn_implementation``).
    """
    import torch
    from transformers import AutoModelForCausalLM, LlamaConfig, Qwen2Config

    special_ids = dict(
        vocab_size=len(tokenizer),
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    if config is None:
        if architecture not in ARCHITECTURES:
            raise ValueError(f"architecture must be one of {ARCHITECTURES}, got {architecture!r}")
        if hidden_size % num_heads:
            raise ValueError(f"hidden_size ({hidden_size}) must be divisible by num_heads ({num_heads})")
        num_kv_heads = num_heads if num_kv_heads is None else num_kv_heads
        if num_heads % num_kv_heads:
            raise ValueError(f"num_heads ({num_heads}) must be divisible by num_kv_heads ({num_kv_heads})")
        config_class = Qwen2Config if architecture == "qwen2" else LlamaConfig
        config = config_class(
            hidden_size=hidden_size,
            num_hidden_layers=num_layers,
            num_attention_heads=num_heads,
            num_key_value_heads=num_kv_heads,
            intermediate_size=intermediate_size,
            max_position_embeddings=max_position_embeddings,
            tie_word_embeddings=tie_word_embeddings,
            **special_ids,
            **config_kwargs,
        )
    else:
        config = config.__class__.from_dict({**config.to_dict(), **special_ids, **config_kwargs})
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = AutoModelForCausalLM.from_config(config)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.bos_token_id = tokenizer.bos_token_id
    if path is not None:
        model.save_pretrained(os.fspath(path), safe_serialization=True)
        tokenizer.save_pretrained(os.fspath(path))
    return model
