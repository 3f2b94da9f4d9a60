"""Server mode (``grpokit vllm-serve`` + VLLMServerSampler): weight-push cost, generation speed, log-prob gap.

Run in the vLLM venv (see scripts/test-vllm.sh)::

    VLLM_CPU_KVCACHE_SPACE=1 ~/.venvs/grpokit-vllm/bin/python benchmarks/vllm_server.py [--pushes 5]
        [--prompts 4] [--generations 8] [--tokens 64] [--chunk-mb 256 1]

The benchmark model (:func:`grpokit.models.qwen2_reference_config`, 3.0M parameters, 11.6 MB in float32) is
served by ``grpokit vllm-serve`` in a subprocess on this machine; the client pushes perturbed weights
``--pushes`` times per chunk size and generates B*G completions of exactly ``--tokens`` tokens after each push.
Prints the medians of the client's ``weight_sync/*`` metrics, the generation tokens/s (wall clock: the engine
works in other processes) and the largest gap between the server's rollout log-probs and the trainer's forward.
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pushes", type=int, default=5)
    parser.add_argument("--prompts", type=int, default=4, help="B")
    parser.add_argument("--generations", type=int, default=8, help="G")
    parser.add_argument("--tokens", type=int, default=64, help="completion tokens per response")
    parser.add_argument("--chunk-mb", type=float, nargs="+", default=[256.0, 1.0])
    args = parser.parse_args(argv)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import torch

    from grpokit.models import (
        build_tiny_model,
        completion_logprobs,
        qwen2_reference_config,
        train_bpe_tokenizer,
    )
    from grpokit.rollout.benchmark import _corpus
    from grpokit.rollout.vllm_client import VLLMServerSampler

    torch.set_num_threads(1)
    B, G, T = args.prompts, args.generations, args.tokens
    tokenizer = train_bpe_tokenizer(_corpus(2000), vocab_size=512)
    model = build_tiny_model(tokenizer, config=qwen2_reference_config()).eval()
    prompts = _corpus(B, seed=1, words=(8, 16))
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]

    with tempfile.TemporaryDirectory() as directory:
        model.save_pretrained(directory)
        tokenizer.save_pretrained(directory)
        start = time.perf_counter()
        server = subprocess.Popen(
            [sys.executable, "-m", "grpokit", "vllm-serve", "--model", directory, "--host", "127.0.0.1",
             "--port", str(port), "--quiet"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        try:
            generator = torch.Generator().manual_seed(0)
            for chunk_mb in args.chunk_mb:
                sampler = VLLMServerSampler(tokenizer, port=port, model=model, max_new_tokens=T, min_new_tokens=T,
                                            timeout_s=300, weight_chunk_mb=chunk_mb)  # fmt: skip
                if chunk_mb == args.chunk_mb[0]:
                    print(f"server up and first push done after {time.perf_counter() - start:.1f} s")
                    sampler.generate(prompts, G)  # warm-up: vLLM builds its CPU kernels on first use
                syncs, speeds, gaps = [], [], []
                for _ in range(args.pushes):
                    with torch.no_grad():
                        for param in model.parameters():
                            param.add_(1e-3 * torch.randn(param.shape, generator=generator))
                    syncs.append(sampler.update_weights(model))
                    began = time.perf_counter()
                    sampler.generate(prompts, G)
                    speeds.append(B * G * T / (time.perf_counter() - began))
                    # Without min_new_tokens: its EOS mask is part of the rollout distribution (convention 1
                    # of grpokit.rollout.vllm_sampler), which the trainer's forward does not apply.
                    batch = sampler.with_sampling(min_new_tokens=0).generate(prompts, G)
                    with torch.no_grad():
                        trainer, _ = completion_logprobs(model, batch.prompt_ids, batch.prompt_mask,
                                                         batch.completion_ids, batch.completion_mask)  # fmt: skip
                    gaps.append(float(((trainer - batch.sampler_logprobs).abs() * batch.completion_mask).max()))
                print(f"chunk {chunk_mb:g} MB: {syncs[-1]['weight_sync/chunks']:.0f} chunks, "
                      f"{syncs[-1]['weight_sync/megabytes']:.1f} MB per push")  # fmt: skip
                for key in ("save_s", "transfer_s", "load_s", "total_s"):
                    values = [sync[f"weight_sync/{key}"] for sync in syncs]
                    print(f"  weight_sync/{key}: median {statistics.median(values):.3f} s, max {max(values):.3f} s")
                print(f"  generate {B}x{G}x{T}: median {statistics.median(speeds):.0f} tokens/s "
                      f"(best {max(speeds):.0f}); rollout vs trainer log-prob gap max {max(gaps):.1e}")  # fmt: skip
            sampler.shutdown_server()
            server.wait(60)
        finally:
            if server.poll() is None:
                server.terminate()
                server.wait(30)


if __name__ == "__main__":
    main()
