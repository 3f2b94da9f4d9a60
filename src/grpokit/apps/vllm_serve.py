"""``grpokit vllm-serve``: a vLLM engine behind an HTTP server, for ``generation.backend: vllm_server``.

Start it where vLLM should run (its own GPUs, or another machine), then point the trainer at it::

    grpokit vllm-serve --model Qwen/Qwen2.5-0.5B-Instruct --port 8000          # machine A, or GPUs 1..7
    grpokit train my.yaml --backend vllm_server --vllm.server_host A           # the trainer

The trainer pushes its weights after every update; the server loads them into the live engine the way
the colocated ``generation.backend: vllm`` does (:mod:`grpokit.rollout.vllm_server`, docs/vllm.md).
"""

from __future__ import annotations

import argparse
import signal
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = ["main", "parse_args"]


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="grpokit vllm-serve",
        description="Serve a vLLM engine to a grpokit trainer (generation.backend: vllm_server): generation "
        "with rollout log-probs, and in-place weight updates pushed by the trainer after each step.",
        epilog="then: grpokit train CONFIG --backend vllm_server --vllm.server_host HOST --vllm.server_port PORT",
    )
    parser.add_argument("--model", required=True, help="a local save_pretrained directory (safetensors weights)")
    parser.add_argument("--tokenizer", default=None, help="tokenizer directory (default: --model)")
    parser.add_argument("--host", default="0.0.0.0", help="address to bind (default: 0.0.0.0, every interface)")
    parser.add_argument("--port", type=int, default=8000, help="TCP port (default: 8000)")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16", "auto"],
                        help="engine dtype; rollout log-probs are only as exact as this (default: float32)")  # fmt: skip
    parser.add_argument("--max-model-len", type=int, default=None, help="longest prompt + completion")
    parser.add_argument("--gpu-memory-utilization", type=float, default=0.9,
                        help="fraction of each GPU vLLM may take (default: 0.9, the GPUs are the server's own)")  # fmt: skip
    parser.add_argument("--tensor-parallel-size", type=int, default=1, help="GPUs per engine (default: 1)")
    parser.add_argument("--kv-cache-gib", type=float, default=None, help="KV-cache size in GiB (default: vLLM's)")
    parser.add_argument("--max-num-seqs", type=int, default=256, help="sequences decoded at once (default: 256)")
    parser.add_argument("--seed", type=int, default=0, help="the engine's seed (requests carry their own)")
    parser.add_argument("--weight-sync-timeout-s", type=float, default=300.0,
                        help="deadline of loading one pushed weight version (default: 300)")  # fmt: skip
    parser.add_argument("--request-timeout-s", type=float, default=600.0,
                        help="how long a request may wait for the busy engine, or take to arrive (default: 600)")  # fmt: skip
    parser.add_argument("--max-request-mb", type=float, default=2048.0,
                        help="largest request body, i.e. weight chunk, in MiB (default: 2048)")  # fmt: skip
    parser.add_argument("--quiet", action="store_true", help="no line per request")
    args = parser.parse_args(list(argv))
    for name in ("port", "tensor_parallel_size", "max_num_seqs"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1")
    if not 0 < args.gpu_memory_utilization <= 1:
        parser.error("--gpu-memory-utilization must be in (0, 1]")
    for name in ("weight_sync_timeout_s", "request_timeout_s", "max_request_mb"):
        if not getattr(args, name) > 0:
            parser.error(f"--{name.replace('_', '-')} must be > 0")
    return args


def main(argv: Sequence[str]) -> int:
    """``grpokit vllm-serve ARGS``: serve until SIGINT/SIGTERM or ``POST /close``; returns the exit status."""
    args = parse_args(argv)
    model = Path(args.model)
    if not (model / "config.json").is_file():
        raise FileNotFoundError(f"--model {str(model)!r} is not a model directory (no config.json)")
    from grpokit.models.loading import load_tokenizer
    from grpokit.rollout.vllm_sampler import VLLMSampler
    from grpokit.rollout.vllm_server import VLLMEngineHost, VLLMServer

    tokenizer = load_tokenizer(args.tokenizer or model)

    def log(line: str) -> None:
        print(f"[grpokit vllm-serve {time.strftime('%H:%M:%S')}] {line}", file=sys.stderr, flush=True)

    started = time.perf_counter()
    engine_kwargs: dict[str, Any] = {}
    if args.tensor_parallel_size > 1:
        engine_kwargs["tensor_parallel_size"] = args.tensor_parallel_size
    sampler = VLLMSampler(
        model,
        tokenizer,
        dtype=args.dtype,
        max_model_len=args.max_model_len,
        max_num_seqs=args.max_num_seqs,
        gpu_memory_utilization=args.gpu_memory_utilization,
        kv_cache_gib=args.kv_cache_gib,
        seed=args.seed,
        weight_sync_timeout_s=args.weight_sync_timeout_s,
        engine_kwargs=engine_kwargs,
    )
    try:
        server = VLLMServer(
            VLLMEngineHost(sampler, str(model)),
            args.host,
            args.port,
            request_timeout_s=args.request_timeout_s,
            max_request_bytes=int(args.max_request_mb * 2**20),
            log=None if args.quiet else log,
        )
    except OSError as error:
        sampler.close()
        raise ValueError(f"cannot listen on {args.host}:{args.port}: {error}") from error

    def stop(signum: int, frame: Any) -> None:
        log(f"signal {signum}: stopping")
        server.close_later()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    log(
        f"serving {model} ({args.dtype}, max_model_len {sampler.max_model_len}) on http://{args.host}:{server.port} "
        f"after {time.perf_counter() - started:.1f} s; stop with Ctrl-C or POST /close"
    )
    try:
        server.serve_forever()
    finally:
        server.httpd.server_close()
        sampler.close()
        log("stopped")
    return 0
