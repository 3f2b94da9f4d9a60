"""The GRPO benchmark workload shared by both systems: model, tokenizer, prompts, reward, FLOP counts.

Everything is built offline and deterministically (fixed seeds), once per benchmark invocation, into a
directory that both systems load with ``from_pretrained``: the same weights, the same tokenizer, the same
prompts and the same reward function.

Reference workload (see docs/benchmarks.md): a randomly initialised Qwen2 (hidden 256, 4 layers, 4 heads,
2 KV heads, MLP 688, tied embeddings, vocab 512, byte-level BPE), prompts like ``"37+48="``, B = 4
prompts x G = 8 completions per step of exactly T tokens (``min_new_tokens = max_new_tokens``).
"""

from __future__ import annotations

import random
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

NUM_PROBLEMS = 256  # prompts in the benchmark dataset (each step draws B of them)


def addition_rows(n: int = NUM_PROBLEMS, seed: int = 0) -> list[dict[str, str]]:
    """``n`` prompt rows ``{"prompt": "37+48=", "answer": "85"}`` with two-digit operands."""
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        a, b = rng.randint(10, 99), rng.randint(10, 99)
        rows.append({"prompt": f"{a}+{b}=", "answer": str(a + b)})
    return rows


def digit_reward(prompts: list[Any], completions: list[str], answer: list[str], **_: Any) -> list[float]:
    """1 for a completion that starts with the answer, else the share of digits among its characters.

    Cheap (the benchmark is about the trainer, not the reward) and it varies within a group, so the
    advantages and the policy gradient are not zero.
    """
    scores = []
    for completion, target in zip(completions, answer):
        text = completion.strip()
        if text.startswith(target):
            scores.append(1.0)
        else:
            scores.append(sum(c.isdigit() for c in text) / max(1, len(text)))
    return scores


def _tokenizer_corpus(seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    letters = "abcdefghijklmnopqrstuvwxyz"
    lexicon = ["".join(rng.choice(letters) for _ in range(rng.randint(2, 8))) for _ in range(300)]
    corpus = []
    for _ in range(3000):
        a, b = rng.randint(0, 999), rng.randint(0, 999)
        words = " ".join(rng.choice(lexicon) for _ in range(rng.randint(3, 10)))
        corpus.append(f"{a}+{b}={a + b} {words}")
    return corpus


def build_reference_model(path: str | Path, max_position_embeddings: int = 1024) -> dict[str, Any]:
    """Save the benchmark model and tokenizer to ``path``; returns a description of the model.

    ``max_position_embeddings`` only bounds the sequence length (Qwen2's default RoPE does not depend on
    it); 1024 leaves room for the 512-token point of the scaling sweep.
    """
    from grpokit.models import build_tiny_model, qwen2_reference_config, train_bpe_tokenizer

    tokenizer = train_bpe_tokenizer(_tokenizer_corpus(), vocab_size=512)
    config = qwen2_reference_config(vocab_size=len(tokenizer), max_position_embeddings=max_position_embeddings)
    model = build_tiny_model(tokenizer, path, config=config, seed=0)
    return {
        "architecture": "qwen2",
        "parameters": sum(p.numel() for p in model.parameters()),
        "hidden_size": config.hidden_size,
        "num_layers": config.num_hidden_layers,
        "num_heads": config.num_attention_heads,
        "num_kv_heads": config.num_key_value_heads,
        "intermediate_size": config.intermediate_size,
        "vocab_size": config.vocab_size,
        "prompt_tokens": [len(tokenizer(r["prompt"])["input_ids"]) for r in addition_rows()[:8]],
    }


# ---------------------------------------------------------------------------------------------------------
# FLOPs and the matmul bound
# ---------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Dims:
    """Model dimensions: C hidden, I MLP, H query heads, H_kv key/value heads, D head dim, V vocab, L layers."""

    C: int = 256
    I: int = 688  # noqa: E741 - the MLP width's usual letter
    H: int = 4
    H_kv: int = 2
    D: int = 64
    V: int = 512
    L: int = 4


def layer_matmuls(M: int, d: Dims) -> list[tuple[int, int, int]]:
    """(M, K, N) shapes of one decoder layer's projections for M token rows (as transformers runs them)."""
    return [
        (M, d.C, d.H * d.D),  # q_proj
        (M, d.C, d.H_kv * d.D),  # k_proj
        (M, d.C, d.H_kv * d.D),  # v_proj
        (M, d.H * d.D, d.C),  # o_proj
        (M, d.C, d.I),  # gate_proj
        (M, d.C, d.I),  # up_proj
        (M, d.I, d.C),  # down_proj
    ]


def forward_shapes(rows: int, length: int, logit_positions: int, d: Dims) -> list[tuple[int, int, int, int]]:
    """(batch, M, K, N) matmuls of a full-sequence forward: ``rows`` sequences of ``length`` tokens, logits for
    the last ``logit_positions`` of each. Attention is counted as the full (unmasked) square, which is what
    a dense kernel computes."""
    shapes = [(1, *s) for s in layer_matmuls(rows * length, d)] * d.L
    shapes += [(rows * d.H, length, d.D, length), (rows * d.H, length, length, d.D)] * d.L  # QK^T, PV
    shapes.append((1, rows * logit_positions, d.C, d.V))  # lm_head
    return shapes


def decode_shapes(
    rows: int, prompt_rows: int, prompt_length: int, new_tokens: int, d: Dims
) -> list[tuple[int, int, int, int]]:
    """Matmuls of generation: a prefill of ``prompt_rows`` prompts, then ``new_tokens - 1`` one-token steps of
    ``rows`` rows attending to a growing cache (the last sampled token is never fed back)."""
    shapes = forward_shapes(prompt_rows, prompt_length, 1, d)
    for t in range(new_tokens - 1):
        context = prompt_length + t + 1
        shapes += [(1, *s) for s in layer_matmuls(rows, d)] * d.L
        shapes += [(rows * d.H, 1, d.D, context), (rows * d.H, 1, context, d.D)] * d.L
        shapes.append((1, rows, d.C, d.V))
    return shapes


def flops(shapes: list[tuple[int, int, int, int]]) -> float:
    """2 * batch * M * K * N summed: multiply-adds counted as two FLOPs."""
    return float(sum(2 * b * m * k * n for b, m, k, n in shapes))


def matmul_bound_seconds(
    shapes: list[tuple[int, int, int, int]], dtype: str = "float32", backward: bool = False, repeats: int = 3
) -> dict[str, float]:
    """Seconds that bare ``torch.matmul`` calls of ``shapes`` take here (best of ``repeats``; wall and CPU).

    ``backward=True`` times the two matmuls of each shape's backward (grad of input and of weight), which is
    what an autograd backward through those matmuls costs at least.
    """
    import torch

    torch_dtype = getattr(torch, dtype)
    unique: dict[tuple[int, int, int, int], int] = {}
    for s in shapes:
        unique[s] = unique.get(s, 0) + 1
    best_wall, best_cpu = float("inf"), float("inf")
    operands = []
    for (b, m, k, n), count in unique.items():
        a = torch.randn(b, m, k, dtype=torch_dtype)
        w = torch.randn(b, k, n, dtype=torch_dtype)
        g = torch.randn(b, m, n, dtype=torch_dtype)
        operands.append((a, w, g, count))
    for _ in range(repeats):
        start, start_cpu = time.perf_counter(), time.process_time()
        for a, w, g, count in operands:
            for _ in range(count):
                if backward:
                    torch.matmul(g, w.transpose(1, 2))  # dL/dA
                    torch.matmul(a.transpose(1, 2), g)  # dL/dW
                else:
                    torch.matmul(a, w)
        best_wall = min(best_wall, time.perf_counter() - start)
        best_cpu = min(best_cpu, time.process_time() - start_cpu)
    return {"wall_s": best_wall, "cpu_s": best_cpu}


@dataclass(frozen=True)
class Workload:
    """One benchmark configuration (the same for both systems)."""

    prompts: int = 4  # B
    generations: int = 8  # G
    tokens: int = 64  # T, forced: min_new_tokens = max_new_tokens
    beta: float = 0.04
    precision: str = "fp32"  # "fp32" or "bf16" (autocast)
    steps: int = 10
    warmup: int = 2
    learning_rate: float = 1e-5
    seed: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
