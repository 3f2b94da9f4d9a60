"""Memory and speed of LoRA against full fine-tuning, GRPO on CPU, each in a fresh process.

Run: ``python benchmarks/lora_memory.py [--hidden 640] [--layers 8] [--steps 3] [--rank 8] [--out FILE.json]``

Each mode trains the same randomly initialised Qwen2 (``--hidden``, ``--layers``; character vocabulary)
for ``--steps`` GRPO steps with ``beta > 0`` (B = 4 prompts, G = 8, 32 new tokens, ``--micro-batches``
micro-batches per step so that activations stay small next to the weights), one CPU thread, in its own
subprocess, and reports:

- ``rss_loaded_mb`` / ``peak_rss_mb``: the process's peak resident set once the trainer is built (model,
  reference, torch and transformers) and after training (``ru_maxrss``);
- ``trainable_mb`` / ``optimizer_mb`` / ``reference_mb``: bytes of the trainable parameters, of their AdamW
  state and of the KL reference's own weights (a frozen copy for full fine-tuning; none for LoRA, whose
  reference is the base run with adapters disabled);
- ``step_s``: median seconds per training step after the first;
- ``generate_tokens_per_s``: the sampler at a fixed 32 tokens per completion (EOS suppressed); full
  fine-tuning decodes with the lean Llama-family step, a LoRA model falls back to the model's ``forward``
  (its projections are not plain ``nn.Linear``), and ``full, transformers decoder`` isolates that cost.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ALPHABET = "abcdefghijklmnopqrstuvwxyz "
PROMPTS = ["the cat", "a dog runs", "quick fox", "hello world", "lazy day", "big sky", "red sun", "blue sea"]


def fraction_of_a(prompts, completions, **columns):
    return [c.count("a") / max(len(c), 1) for c in completions]


def _child(mode: str, args: argparse.Namespace) -> dict:
    import torch

    torch.set_num_threads(1)
    from grpokit.config import GRPOConfig, build_config
    from grpokit.models import build_char_tokenizer, build_tiny_model
    from grpokit.models.lora import trainable_state_bytes
    from grpokit.tracking import read_metrics
    from grpokit.trainers.grpo import GRPOTrainer

    work = Path(tempfile.mkdtemp(prefix="lora-bench-"))
    build_tiny_model(
        build_char_tokenizer(ALPHABET), work / "model", hidden_size=args.hidden, num_layers=args.layers,
        num_heads=8, num_kv_heads=4, intermediate_size=args.hidden * 11 // 4, seed=0,
    )  # fmt: skip
    lora = {"r": args.rank} if mode == "lora" else {"r": 0}
    config = build_config(
        GRPOConfig,
        {
            "max_steps": args.steps,
            "model": {"name_or_path": str(work / "model"), "device": "cpu", "lora": lora},
            "data": {"prompts_per_step": 4},
            "optim": {"gradient_accumulation_steps": args.micro_batches},
            "generation": {"max_new_tokens": 32},
            "algorithm": {"num_generations": 8, "beta": 0.04},
            "logging": {"output_dir": str(work / "runs"), "quiet": True, "report_to": [], "report": False},
        },
    )
    trainer = GRPOTrainer(config, reward_funcs=[fraction_of_a], dataset=[{"prompt": p} for p in PROMPTS])
    rss_loaded_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    result = trainer.train()
    peak_rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    sizes = trainable_state_bytes(trainer.model, trainer.optimizer)
    reference = trainer.reference.checkpoint_module() if trainer.reference is not None else None
    reference_bytes = sum(p.numel() * p.element_size() for p in reference.parameters()) if reference else 0
    steps = [row["time/step"] for row in read_metrics(result.run_dir)][1:]

    from grpokit.rollout import TransformersSampler

    def tokens_per_s(decoder: str) -> float:
        sampler = TransformersSampler(
            trainer.model, trainer.tokenizer, max_new_tokens=32, min_new_tokens=32, seed=0, decoder=decoder
        )
        sampler.generate(PROMPTS[:4], 8)  # warm-up
        best = 0.0
        for _ in range(args.repeats):
            start = time.perf_counter()
            batch = sampler.generate(PROMPTS[:4], 8)
            best = max(best, batch.completion_mask.sum().item() / (time.perf_counter() - start))
        return best

    out = {
        "mode": mode,
        "parameters": sum(p.numel() for p in trainer.model.parameters()),
        "rss_loaded_mb": rss_loaded_mb,
        "peak_rss_mb": peak_rss_mb,
        "trainable_mb": sizes["trainable_params"] / 2**20,
        "optimizer_mb": sizes["optimizer_state"] / 2**20,
        "reference_mb": reference_bytes / 2**20,
        "step_s": statistics.median(steps) if steps else float("nan"),
        "generate_tokens_per_s": tokens_per_s("auto"),
    }
    if mode == "full":
        out["generate_tokens_per_s_transformers_decoder"] = tokens_per_s("transformers")
    return out


def _table(results: list[dict], args: argparse.Namespace) -> str:
    full = results[0]
    lines = [
        f"Qwen2 hidden {args.hidden}, {args.layers} layers ({full['parameters'] / 1e6:.1f}M parameters), "
        "LoRA "
        f"r={args.rank} on all linear layers; GRPO B=4 G=8, 32 tokens, {args.micro_batches} micro-batches, "
        "beta=0.04; 1 CPU thread",
        "",
        "| | RSS loaded (MiB) | peak RSS (MiB) | trainable (MiB) | AdamW state (MiB) | reference (MiB) "
        "| s / step | sampled tokens/s |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        lines.append(
            f"| {r['mode']} | {r['rss_loaded_mb']:.0f} | {r['peak_rss_mb']:.0f} | {r['trainable_mb']:.2f} | "
            f"{r['optimizer_mb']:.2f} | {r['reference_mb']:.1f} | {r['step_s']:.2f} | "
            f"{r['generate_tokens_per_s']:.0f} |"
        )
    decoder = full["generate_tokens_per_s_transformers_decoder"]
    lines.append(f"| full, transformers decoder | | | | | | | {decoder:.0f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hidden", type=int, default=640)
    parser.add_argument("--layers", type=int, default=8)
    parser.add_argument(
        "--micro-batches", type=int, default=8, help="gradient_accumulation_steps (of N = 32)"
    )
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--rank", type=int, default=8, help="LoRA r (alpha = 2r, all linear layers)")
    parser.add_argument("--repeats", type=int, default=3, help="timed generate calls (best is kept)")
    parser.add_argument("--out", default=None, help="also write the results as JSON here")
    parser.add_argument("--child", choices=["full", "lora"], help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(_child(args.child, args)))
        return []
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    forwarded = [f"--{k.replace('_', '-')}={v}" for k, v in vars(args).items() if k not in ("out", "child")]
    results = []
    for mode in ("full", "lora"):
        done = subprocess.run(
            [sys.executable, __file__, "--child", mode, *forwarded],
            env=env,
            capture_output=True,
            text=True,
            check=True,
        )
        results.append(json.loads(done.stdout.strip().splitlines()[-1]))
    print(_table(results, args))
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=2) + "\n")
    return results


if __name__ == "__main__":
    main()
