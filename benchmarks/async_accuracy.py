"""Held-out accuracy of the built-in demo with synchronous and asynchronous rollouts, over several seeds.

    OMP_NUM_THREADS=1 PYTHONPATH=src python benchmarks/async_accuracy.py --seeds 0 1 2 --max-steps 500

Each (seed, mode) is one ``grpokit train --preset demo`` run in a fresh process (the two modes of a seed
share its cached warm-up model; the modes alternate in order from seed to seed). The demo measures held-out
accuracy (500 problems never trained on, greedy) every ``demo.eval_every`` steps; each point is reported
against the samples generated so far (steps x B x G) and the training wall seconds so far (the sum of
``time/step``, evaluations excluded), with the load average before and after every run.

Writes ``<out>.json`` (every point of every run), ``<out>.md`` (mean and standard deviation over the seeds at
each evaluation) and ``<out>.png`` (the curves, when matplotlib is installed).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

MODES = {"sync": [], "async": ["--async_rollouts", "true"]}


def run(mode: str, seed: int, max_steps: int, eval_every: int, root: Path) -> dict[str, Any]:
    name = f"{mode}-seed{seed}"
    command = [
        sys.executable, "-m", "grpokit", "train", "--preset", "demo", "--seed", str(seed), "--max_steps",
        str(max_steps), "--eval_every", str(eval_every), "--output_dir", str(root), "--run_name", name, "--quiet",
        *MODES[mode],
    ]  # fmt: skip
    load_before = os.getloadavg()
    started = time.perf_counter()
    proc = subprocess.run(command, env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{name} failed:\n{proc.stderr[-4000:]}")
    rows = [json.loads(line) for line in (root / name / "metrics.jsonl").read_text().splitlines()]
    wall, points = 0.0, []
    per_step = {}
    for row in rows:
        if "time/step" in row:
            per_step[row["step"]] = row
    for step in sorted(per_step):
        wall += per_step[step]["time/step"]
        per_step[step]["_wall"] = wall
    for row in rows:
        if "eval/accuracy" in row:
            step = row["step"]
            points.append({"step": step, "accuracy": row["eval/accuracy"], "wall_s": per_step[step]["_wall"]})
    print(f"  {name}: {time.perf_counter() - started:.0f} s, load {os.getloadavg()[0]:.2f}", flush=True)
    return {
        "mode": mode,
        "seed": seed,
        "points": points,
        "load_before": load_before,
        "load_after": os.getloadavg(),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--max-steps", type=int, default=500)
    parser.add_argument("--eval-every", type=int, default=100)
    parser.add_argument("--samples-per-step", type=int, default=64, help="B x G of the demo preset (8 x 8)")
    parser.add_argument("--out", default="benchmarks/results/async_accuracy")
    args = parser.parse_args(argv)
    root = Path(tempfile.mkdtemp(prefix="async-accuracy-"))
    runs = []
    for i, seed in enumerate(args.seeds):
        for mode in list(MODES) if i % 2 == 0 else list(MODES)[::-1]:
            runs.append(run(mode, seed, args.max_steps, args.eval_every, root))
    report = {"command": " ".join([Path(sys.executable).name, *sys.argv]), "args": vars(args), "runs": runs}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(report, indent=1))
    lines = [
        f"Command: `{report['command']}`",
        "",
        "| step | samples | sync accuracy (mean ± sd) | async accuracy (mean ± sd) | sync train wall s | async train wall s |",
        "|---|---|---|---|---|---|",
    ]
    steps = sorted({p["step"] for r in runs for p in r["points"]})
    for step in steps:
        cells = []
        for key in ("accuracy", "wall_s"):
            for mode in MODES:
                values = [p[key] for r in runs if r["mode"] == mode for p in r["points"] if p["step"] == step]
                sd = statistics.stdev(values) if len(values) > 1 else 0.0
                cells.append(
                    f"{statistics.mean(values):.3f} ± {sd:.3f}"
                    if key == "accuracy"
                    else f"{statistics.mean(values):.1f}"
                )
        lines.append(f"| {step} | {step * args.samples_per_step} | " + " | ".join(cells) + " |")
    loads = [x for r in runs for x in (r["load_before"][0], r["load_after"][0])]
    lines.append(f"\nLoad average during the runs: {min(loads):.2f}-{max(loads):.2f}")
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for r in runs:
        style = {"color": "tab:blue" if r["mode"] == "sync" else "tab:orange", "alpha": 0.8}
        label = f"{r['mode']} seed {r['seed']}"
        xs = [p["step"] * args.samples_per_step for p in r["points"]]
        axes[0].plot(xs, [p["accuracy"] for p in r["points"]], marker="o", label=label, **style)
        axes[1].plot(
            [p["wall_s"] for p in r["points"]], [p["accuracy"] for p in r["points"]], marker="o", **style
        )
    axes[0].set_xlabel("generated samples")
    axes[1].set_xlabel("training wall seconds (evaluations excluded)")
    for ax in axes:
        ax.set_ylabel("held-out accuracy")
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out.with_suffix(".png"), dpi=100)


if __name__ == "__main__":
    main()
