"""Memory and time of the policy's log-prob forward + backward with a large vocabulary: fused LM head vs logits.

    OMP_NUM_THREADS=1 python benchmarks/logprobs_memory.py [--vocab 151936] [--rows 4] [--tokens 256]

A random Qwen2 with Qwen2.5's vocabulary (151,936) and a small body (hidden 256, 2 layers) makes the LM
head dominate, as it does for small real models (Qwen2.5-0.5B: 136M of its 494M parameters are the
embedding). Each variant runs in a fresh process (its peak RSS is its own): ``completion_logprobs`` with
grad, backward, twice, on N rows of P = 16 prompt + T completion tokens. ``fused`` is grpokit's default
for such a vocabulary (:func:`grpokit.models.logprobs.completion_logprobs`, note 5); ``logits`` forces
the model's own (N, T, V) logits (one chunk). Prints peak RSS above the RSS before the first forward, and
CPU seconds of the second forward + backward.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time


def rss_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def worker(variant: str, vocab: int, rows: int, tokens: int) -> dict[str, float]:
    import torch
    from transformers import AutoModelForCausalLM, Qwen2Config

    from grpokit.models import completion_logprobs

    torch.set_num_threads(1)
    config = Qwen2Config(vocab_size=vocab, hidden_size=256, num_hidden_layers=2, num_attention_heads=4,
                         num_key_value_heads=2, intermediate_size=688, tie_word_embeddings=True)  # fmt: skip
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = AutoModelForCausalLM.from_config(config).eval()
    g = torch.Generator().manual_seed(0)
    prompt_ids = torch.randint(0, vocab, (rows, 16), generator=g)
    completion_ids = torch.randint(0, vocab, (rows, tokens), generator=g)
    inputs = (prompt_ids, torch.ones_like(prompt_ids), completion_ids, torch.ones(rows, tokens))
    chunk = rows * tokens if variant == "logits" else None
    before = rss_mib()
    for _ in range(2):
        model.zero_grad(set_to_none=True)
        start = time.process_time()
        logprobs, _ = completion_logprobs(model, *inputs, return_entropy=True, chunk_size=chunk)
        logprobs.sum().backward()
        seconds = time.process_time() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"peak_above_start_mib": peak - before, "cpu_s": seconds, "logits_mib": rows * tokens * vocab * 4 / 2**20}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vocab", type=int, default=151936)
    parser.add_argument("--rows", type=int, default=4)
    parser.add_argument("--tokens", type=int, default=256)
    parser.add_argument("--worker", choices=["fused", "logits"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker, args.vocab, args.rows, args.tokens)))
        return
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    results = {}
    for variant in ("logits", "fused", "logits", "fused"):  # interleaved; the second run of each is kept
        out = subprocess.run([sys.executable, __file__, "--worker", variant, "--vocab", str(args.vocab),
                              "--rows", str(args.rows), "--tokens", str(args.tokens)],
                             env=env, capture_output=True, text=True, check=True)  # fmt: skip
        results[variant] = json.loads(out.stdout.strip().splitlines()[-1])
    print(f"vocab {args.vocab}, N={args.rows} rows x T={args.tokens} completion tokens, "
          f"float32 logits would be {results['fused']['logits_mib']:.0f} MiB; load {os.getloadavg()[0]:.1f}")  # fmt: skip
    print("| path | peak RSS above start (MiB) | forward + backward CPU s |\n|---|---|---|")
    for variant, r in results.items():
        print(f"| {variant} | {r['peak_above_start_mib']:.0f} | {r['cpu_s']:.2f} |")


if __name__ == "__main__":
    main()
