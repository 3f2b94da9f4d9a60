"""The multi-turn benchmark workload shared by grpokit and TRL: environment, prompts, tokenizer, warm-started model.

An episode (Qwen 2.5's chat template, the one TRL parses tool calls for)::

    system     the template's tool preamble with multiply's JSON schema
    user       347*26=
    assistant  <tool_call>\\n{"name": "multiply", "arguments": {"a": 347, "b": 26}}\\n</tool_call><|im_end|>
    tool       9022                         (rendered as a user turn holding <tool_response>...</tool_response>)
    assistant  9022<|im_end|>               no tool call: the episode ends and get_reward() scores it

:class:`MultiplyEnv` is written to TRL's ``environment_factory`` contract (``reset(**row)``, public methods are
tools, ``get_reward()``); grpokit runs the same class through ``env.adapter: trl``. Its reward is 1.0 when the
episode called ``multiply`` with the problem's two operands, 0.5 when it called it with others, 0.0 without a
call (TRL's ``get_reward`` sees the environment's state, not the answer text).

A random model almost never writes a well-formed call, so the model both systems load is warm-started once by
imitation (:func:`build_warm_model`) on a teacher that calls the tool on 85% of problems and guesses the
product at once on the others: most episodes then take two turns and one tool call, some one turn.
"""

from __future__ import annotations

import random
import statistics
import time
from pathlib import Path
from typing import Any

NUM_PROBLEMS = 256  # rows in the benchmark dataset
TOOL_RATE = 0.85  # share of the teacher's episodes that call the tool


class MultiplyEnv:
    """TRL ``environment_factory`` contract: ``reset(**row)``, the tool ``multiply``, ``get_reward()``."""

    def reset(self, **row: Any) -> None:
        self.a, self.b = int(row["a"]), int(row["b"])
        self.calls, self.right_call = 0, False
        return None

    def multiply(self, a: int, b: int) -> int:
        """Multiply two whole numbers.

        Args:
            a: the first factor.
            b: the second factor.
        """
        self.calls += 1
        if sorted((int(a), int(b))) == sorted((self.a, self.b)):
            self.right_call = True
        return int(a) * int(b)

    def get_reward(self) -> float:
        """1.0 after a call on the problem's operands, 0.5 after calls on others only, 0.0 without a call."""
        return 1.0 if self.right_call else 0.5 if self.calls else 0.0


def problem_rows(n: int = NUM_PROBLEMS, seed: int = 0) -> list[dict[str, Any]]:
    """``n`` rows ``{"prompt": [user message "347*26="], "a": 347, "b": 26}`` (conversational prompts, as TRL
    needs for tools)."""
    rng = random.Random(f"multiturn-{seed}")
    rows = []
    for _ in range(n):
        a, b = rng.randint(100, 999), rng.randint(10, 99)
        rows.append({"prompt": [{"role": "user", "content": f"{a}*{b}="}], "a": a, "b": b})
    return rows


def qwen25_template() -> str:
    """TRL's copy of the Qwen 2.5 chat template, byte for byte: TRL recognises it by equality and then knows
    how to parse its tool calls (``trl.chat_template_utils.add_response_schema``)."""
    import trl

    return (Path(trl.__file__).parent / "chat_templates" / "qwen2_5.jinja").read_text()


def call_text(a: int, b: int) -> str:
    """The text of a tool call as the template renders it after ``<|im_start|>assistant\\n``."""
    return f'<tool_call>\n{{"name": "multiply", "arguments": {{"a": {a}, "b": {b}}}}}\n</tool_call>'


def teacher_conversation(a: int, b: int, rng: random.Random) -> list[dict[str, Any]]:
    """A demonstration: call the tool and copy its result (``TOOL_RATE``), or guess at once (a wrong number
    with the product's digit count)."""
    user = {"role": "user", "content": f"{a}*{b}="}
    if rng.random() < TOOL_RATE:
        return [
            user,
            {"role": "assistant", "content": call_text(a, b)},
            {"role": "tool", "name": "multiply", "content": str(a * b)},
            {"role": "assistant", "content": str(a * b)},
        ]
    digits = len(str(a * b))
    guess = rng.randint(10 ** (digits - 1), 10**digits - 1)
    return [user, {"role": "assistant", "content": str(guess)}]


def _rendered_corpus(tokenizer: Any, tools: list[Any], n: int, seed: int) -> list[str]:
    rng = random.Random(f"corpus-{seed}")
    texts = []
    for _ in range(n):
        a, b = rng.randint(100, 999), rng.randint(10, 99)
        messages = teacher_conversation(a, b, rng)
        rendered = [
            {**m, "content": "", "tool_calls": [{"type": "function", "function": {"name": "multiply",
                                                                                 "arguments": {"a": a, "b": b}}}]}
            if m["role"] == "assistant" and m["content"].startswith("<tool_call>") else m
            for m in messages
        ]  # fmt: skip
        texts.append(tokenizer.apply_chat_template(rendered, tools=tools, tokenize=False))
    return texts


def build_tokenizer(vocab_size: int = 1024) -> Any:
    """A byte-level BPE tokenizer (``grpokit.models.train_bpe_tokenizer``) trained on rendered episodes, with
    Qwen's chat tokens: ``<|im_start|>`` / ``<|im_end|>`` special (``<|im_end|>`` is EOS, the stop token) and
    the tool tags as added non-special tokens (kept by ``decode(skip_special_tokens=True)``, as in Qwen).

    Saved next to a Qwen2 model, it loads back as transformers' ``Qwen2Tokenizer``, which splits text with
    Qwen's own pre-tokenizer: use the reloaded tokenizer for anything tokenized before training (see
    :func:`build_warm_model`).
    """
    from grpokit.models import train_bpe_tokenizer

    template = qwen25_template()
    draft = train_bpe_tokenizer(["x"], vocab_size=260 + 4)  # only renders text
    draft.chat_template = template
    corpus = _rendered_corpus(draft, [MultiplyEnv().multiply], 2000, seed=0)
    tokenizer = train_bpe_tokenizer(corpus, vocab_size=vocab_size)
    tokenizer.add_special_tokens({"additional_special_tokens": ["<|im_start|>", "<|im_end|>"]})
    tokenizer.add_tokens(["<tool_call>", "</tool_call>", "<tool_response>", "</tool_response>"])
    tokenizer.eos_token = "<|im_end|>"
    tokenizer.chat_template = template
    return tokenizer


def build_warm_model(
    path: str | Path, *, steps: int = 300, batch_size: int = 8, learning_rate: float = 2e-3, seed: int = 0
) -> dict[str, Any]:
    """Save the warm-started benchmark model and its tokenizer to ``path``; returns a description.

    A Qwen2 (``qwen2_reference_config``: hidden 256, 4 layers, tied embeddings) initialised at random, then
    ``steps`` imitation steps (``grpokit.trainers.sft.SupervisedTrainer``, token-mean loss, learning rate
    decaying linearly to 0) on teacher episodes laid out exactly as the episode runner lays them out
    (``conversation_example``), the assistant's tokens trained.
    """
    import torch
    from transformers import AutoTokenizer

    from grpokit.agents.chat import ChatRenderer
    from grpokit.agents.tools import tool_schema
    from grpokit.models import build_tiny_model, qwen2_reference_config
    from grpokit.trainers.sft import SupervisedTrainer, conversation_example

    torch.manual_seed(seed)
    started = time.perf_counter()
    trained = build_tokenizer()
    config = qwen2_reference_config(vocab_size=len(trained), max_position_embeddings=1024)
    model = build_tiny_model(trained, path, config=config, seed=seed)
    # The demonstrations are tokenized by the tokenizer both trainers will load (AutoTokenizer picks
    # Qwen2Tokenizer for a Qwen2 model, whose pre-tokenizer differs from the one the BPE was trained with).
    tokenizer = AutoTokenizer.from_pretrained(str(path))
    stop = tokenizer.eos_token_id
    renderer = ChatRenderer(tokenizer, [stop], tools=[tool_schema(MultiplyEnv().multiply)])
    rng = random.Random(f"warmup-{seed}")
    examples = []
    for _ in range(2000):
        a, b = rng.randint(100, 999), rng.randint(10, 99)
        examples.append(conversation_example(renderer, tokenizer, teacher_conversation(a, b, rng), stop))
    trainer = SupervisedTrainer(
        model, tokenizer, examples, learning_rate=learning_rate, batch_size=batch_size, seed=seed,
        total_steps=steps, loss_reduction="token_mean",
    )  # fmt: skip
    losses = []
    for step in range(1, steps + 1):
        losses.append(trainer.step())
        if step % 50 == 0 or step == steps:
            print(f"  warm-up step {step}/{steps}: loss {statistics.mean(losses[-50:]):.3f}", flush=True)
    model.save_pretrained(str(path), safe_serialization=True)
    tokenizer.save_pretrained(str(path))
    return {
        "architecture": "qwen2",
        "parameters": sum(p.numel() for p in model.parameters()),
        "hidden_size": config.hidden_size,
        "num_layers": config.num_hidden_layers,
        "vocab_size": len(tokenizer),
        "warmup_steps": steps,
        "warmup_batch_size": batch_size,
        "warmup_loss_first_last": [losses[0], losses[-1]],
        "warmup_seconds": time.perf_counter() - started,
        "prompt_tokens": len(examples[0].prompt_ids),
        "teacher_tool_rate": TOOL_RATE,
    }
