"""``grpokit rm`` on a synthetic preference, and what iterative RL costs a GRPO run; one thread, CPU seconds.

    OMP_NUM_THREADS=1 python benchmarks/reward_model.py [--out DIR]

1. A tiny Qwen2 (hidden 64, 2 layers, the project's character tokenizer) learns a rule it does not know at the
   start: of two random texts over ``abcdefgh`` the one with more ``a`` characters is preferred (240 training
   pairs, 80 held out). Printed: held-out pairwise accuracy every 10 steps, CPU seconds.
2. GRPO on that tiny model against the trained reward model for 20 steps, without and with
   ``rewards.iterative_rm`` (gold = fraction of ``a`` characters, retrained every 5 steps for 5 steps).
   Printed: CPU seconds of each run (the cost of labelling and retraining) and the retrainings' logged metrics.
"""

from __future__ import annotations

import argparse
import json
import random
import tempfile
import time
from pathlib import Path

GOLD = """
def fraction_of_a(prompts, completions, **columns):
    return [c.count("a") / max(len(c), 1) for c in completions]
"""


def pair(rng: random.Random) -> dict[str, str]:
    """Two random texts over ``abcdefgh``; the one with more ``a`` characters is preferred (ties redrawn)."""
    while True:
        x, y = ("".join(rng.choice("abcdefgh") for _ in range(rng.randint(3, 10))) for _ in range(2))
        if x.count("a") != y.count("a"):
            chosen, rejected = (x, y) if x.count("a") > y.count("a") else (y, x)
            return {"prompt": "h ", "chosen": chosen, "rejected": rejected}


def rows_of(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def main() -> None:
    import torch

    from grpokit.cli import main as grpokit
    from grpokit.models.tiny import build_char_tokenizer, build_tiny_model

    parser = argparse.ArgumentParser()
    parser.add_argument("--out", default=None)
    out = Path(parser.parse_args().out or tempfile.mkdtemp(prefix="rm-bench-"))
    torch.set_num_threads(1)
    model = out / "model"
    build_tiny_model(build_char_tokenizer("abcdefgh "), model, hidden_size=64, num_layers=2, num_heads=2,
                     intermediate_size=128, seed=0)  # fmt: skip
    rng = random.Random(0)
    pairs = [pair(rng) for _ in range(320)]
    for name, part in (("train", pairs[:240]), ("eval", pairs[240:])):
        (out / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in part))
    quiet = ["--quiet", "--report_to", "[]", "--report", "false", "--output_dir", str(out / "runs")]

    start = time.process_time()
    assert grpokit(["rm", "--model", str(model), "--train_file", str(out / "train.jsonl"), "--eval_file",
                    str(out / "eval.jsonl"), "--run_name", "rm", "--max_steps", "100", "--pairs_per_step", "16",
                    "--learning_rate", "3e-3", "--eval_steps", "10", *quiet]) == 0  # fmt: skip
    rm_cpu = time.process_time() - start
    metrics = rows_of(out / "runs" / "rm" / "metrics.jsonl")
    print(f"training-batch accuracy at step 1 (before any update): {metrics[0]['train/accuracy']:.3f}\n")
    print("| step | held-out pairwise accuracy | held-out loss |\n|---|---|---|")
    for row in metrics:
        if "eval/accuracy" in row:
            print(f"| {row['step']} | {row['eval/accuracy']:.3f} | {row['eval/loss']:.3f} |")
    final = out / "runs" / "rm" / "final"
    config = json.loads((final / "config.json").read_text())
    print(f"\nrm: {rm_cpu:.1f} CPU s; reward_center {config['reward_center']:.3f}, reward_scale "
          f"{config['reward_scale']:.3f}")  # fmt: skip

    (out / "gold.py").write_text(GOLD)
    (out / "prompts.jsonl").write_text(
        "".join(json.dumps({"prompt": p}) + "\n" for p in ["h ", "b ", "c ", "d "])
    )
    grpo = ["train", "--model", str(model), "--path", str(out / "prompts.jsonl"), "--task", "null",
            "--reward_model", str(final), "--max_steps", "20", "--prompts_per_step", "4", "--num_generations", "4",
            "--max_new_tokens", "8", "--learning_rate", "1e-3", *quiet]  # fmt: skip
    iterative = ["--gold_func", f"{out / 'gold.py'}:fraction_of_a", "--every_steps", "5", "--rm_steps", "5",
                 "--rm_learning_rate", "1e-3"]  # fmt: skip
    for name, extra in (("grpo", []), ("grpo-iterative", iterative)):
        start = time.process_time()
        assert grpokit([*grpo, "--run_name", name, *extra]) == 0
        cpu = time.process_time() - start
        rows = rows_of(out / "runs" / name / "metrics.jsonl")
        print(f"\n{name}: {cpu:.1f} CPU s for 20 steps")
        for row in rows:
            if "iterative_rm/agreement_before" in row:
                keys = ("agreement_before", "agreement_after", "retrained_pairs", "pool_pairs", "gold_mean")
                print(
                    f"  step {row['step']}: " + ", ".join(f"{k} {row['iterative_rm/' + k]:.3f}" for k in keys)
                )
    print(f"\nfiles: {out}")


if __name__ == "__main__":
    main()
