"""Generation speed: grpokit's sampler against transformers' ``model.generate`` (TRL's non-vLLM path).

Run: ``python -m grpokit.rollout.benchmark [--repeats 5] [--prompts 4] [--generations 8] [--tokens 64]
[--prompt-words 12]``

Both sides sample B*G completions of exactly ``--tokens`` tokens (EOS suppressed by ``min_new_tokens``)
from the same random-init benchmark model (:func:`grpokit.models.qwen2_reference_config`, 3.0M
parameters, byte-level BPE vocab 512) at temperature 1, no top-k/top-p, on one CPU thread.
``model.generate`` gets the B*G repeated prompt rows and TRL's generation config; the grpokit sampler
gets the B prompts and ``num_generations=G`` (and also returns the sampled tokens' log-probs, which
TRL computes with a further forward pass). Runs alternate between the contenders so that a busy
machine slows both alike; best and median tokens/s are reported.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from grpokit.rollout.base import Prompt


def _corpus(n: int, seed: int = 0, words: tuple[int, int] = (8, 16)) -> list[str]:
    """Sentences of ``words`` (min, max) words over a fixed random lexicon of 400 words (rich enough for a
    512-token BPE)."""
    lexicon_rng, rng = random.Random(1234), random.Random(seed)
    letters = "abcdefghijklmnopqrstuvwxyz"
    lexicon = ["".join(lexicon_rng.choice(letters) for _ in range(lexicon_rng.randint(2, 9))) for _ in range(400)]
    return [" ".join(rng.choice(lexicon) for _ in range(rng.randint(*words))) for _ in range(n)]


def main(argv: list[str] | None = None) -> dict[str, dict[str, list[float]]]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--prompts", type=int, default=4, help="B")
    parser.add_argument("--generations", type=int, default=8, help="G")
    parser.add_argument("--tokens", type=int, default=64, help="completion tokens per response")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--prompt-words", type=int, default=12,
                        help="words per prompt (about 3.5 BPE tokens each); prompts vary by +-4 words")
    args = parser.parse_args(argv)

    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import torch
    from transformers import GenerationConfig

    from grpokit.models import build_tiny_model, qwen2_reference_config, train_bpe_tokenizer
    from grpokit.rollout import TransformersSampler

    torch.set_num_threads(args.threads)
    tokenizer = train_bpe_tokenizer(_corpus(2000), vocab_size=512)
    model = build_tiny_model(tokenizer, config=qwen2_reference_config()).eval()
    B, G, T = args.prompts, args.generations, args.tokens
    prompts = _corpus(B, seed=1, words=(max(1, args.prompt_words - 4), args.prompt_words + 4))
    N = B * G

    encoded = tokenizer([p for p in prompts for _ in range(G)], padding=True, return_tensors="pt")
    trl_config = GenerationConfig(
        max_new_tokens=T,
        min_new_tokens=T,
        do_sample=True,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        temperature=1.0,
        top_p=1.0,
        top_k=0,
        min_p=None,
        repetition_penalty=1.0,
        disable_compile=True,
    )

    def hf_generate() -> int:
        with torch.no_grad():
            out = model.generate(**encoded, generation_config=trl_config)
        return out.shape[1] - encoded["input_ids"].shape[1]

    def sampler(decoder: str) -> Callable[[], int]:
        engine = TransformersSampler(model, tokenizer, max_new_tokens=T, min_new_tokens=T, decoder=decoder)
        texts: list[Prompt] = list(prompts)
        return lambda: engine.generate(texts, G).completion_ids.shape[1]

    contenders = {
        "transformers generate (TRL path)": hf_generate,
        "grpokit sampler, model forward": sampler("transformers"),
        "grpokit sampler (default, fast step)": sampler("auto"),
    }
    for run in contenders.values():  # warm-up: first-call allocations and lazy imports
        run()
    # Wall-clock and process-CPU tokens/s: on a shared machine the CPU-time figure is the steadier one.
    results: dict[str, list[float]] = {name: [] for name in contenders}
    cpu_results: dict[str, list[float]] = {name: [] for name in contenders}
    for _ in range(args.repeats):
        for name, run in contenders.items():
            start, start_cpu = time.perf_counter(), time.process_time()
            generated = run()
            elapsed, elapsed_cpu = time.perf_counter() - start, time.process_time() - start_cpu
            if generated != T:
                raise RuntimeError(f"{name} generated {generated} tokens, expected {T}")
            results[name].append(N * T / elapsed)
            cpu_results[name].append(N * T / elapsed_cpu)

    params = sum(p.numel() for p in model.parameters())
    print(f"model: Qwen2 {params / 1e6:.2f}M params, vocab {len(tokenizer)}, prompt tokens {encoded['input_ids'].shape[1]}")
    print(f"B={B} prompts x G={G} x {T} tokens = {N * T} tokens per call, {args.threads} thread(s), "
          f"{args.repeats} repeats")
    for label, table in (("wall clock", results), ("process CPU time", cpu_results)):
        print(f"-- tokens/s by {label}")
        baseline = statistics.median(table["transformers generate (TRL path)"])
        for name, values in table.items():
            median = statistics.median(values)
            print(f"{name:40s} best {max(values):8.0f}   median {median:8.0f}   x{median / baseline:.2f} (medians)")
    return {"wall": results, "cpu": cpu_results}


if __name__ == "__main__":
    main()
