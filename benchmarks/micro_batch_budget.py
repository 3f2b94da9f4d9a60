"""Step time and peak memory of GRPO at several ``optim.micro_batch_tokens`` budgets, in one invocation.

    OMP_NUM_THREADS=1 python benchmarks/micro_batch_budget.py                 # 64 and 256 tokens, 2 repeats
    OMP_NUM_THREADS=1 python benchmarks/micro_batch_budget.py --repeats 3 --steps 6

The workload is grpo_vs_trl.py's reference one (the random ~3M-parameter Qwen2 of ``bench_workload.py``,
4 prompts x 8 completions, forced completion lengths, beta 0.04, fp32, one thread). Every run is a fresh
subprocess (its peak RSS is its own); budgets are interleaved within each repeat, their order rotated from
one repeat to the next, so that a busy machine slows all of them alike.

Reported per completion length and budget: seconds per step (median of the steps after ``--warmup``, pooled
over repeats; wall clock and process CPU), the update's share (policy forward + backward + reference
forward), peak RSS, and both against the unsplit run (budget ``None``). The default budget is the smallest
one whose step costs at most ``--max-slowdown`` more than unsplit on every workload.

Writes ``<out>.json`` (every run) and ``<out>.md`` (the table of docs/benchmarks.md).
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

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_workload import Workload, build_reference_model  # noqa: E402

BUDGETS: tuple[int | None, ...] = (None, 2048, 4096, 8192, 16384)
THREAD_ENV = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
UPDATE_PHASES = ("policy_forward", "backward", "reference_forward")


def run_worker(workload: Workload, model_dir: str, budget: int | None) -> dict[str, Any]:
    """grpokit's GRPOTrainer on the workload with ``optim.micro_batch_tokens = budget`` (trackers off)."""
    import torch

    torch.set_num_threads(1)
    from bench_workers import PhaseClock, peak_rss_mib, timed_grpo_trainer
    from grpokit.config import GRPOConfig

    w = workload
    clock = PhaseClock()
    config = GRPOConfig.model_validate(
        {
            "seed": w.seed,
            "max_steps": w.steps,
            "model": {"name_or_path": model_dir, "device": "cpu", "mixed_precision": "no"},
            "data": {"prompts_per_step": w.prompts},
            "generation": {"max_new_tokens": w.tokens, "min_new_tokens": w.tokens, "temperature": 1.0},
            "optim": {
                "learning_rate": w.learning_rate,
                "adam_beta2": 0.999,
                "max_grad_norm": 1.0,
                "micro_batch_tokens": budget,
            },
            "algorithm": {
                "num_generations": w.generations,
                "beta": w.beta,
                "num_iterations": 1,
                "loss_aggregation": "sequence_mean",
                "advantage_estimator": "grpo",
            },
            "logging": {
                "quiet": True,
                "output_dir": tempfile.mkdtemp(prefix="grpokit-budget-"),
                "log_sample_groups": 1,
                "report_to": [],
                "report": False,
            },
        }
    )

    trainer = timed_grpo_trainer(config, clock)
    trainer.train()
    return {"budget": budget, "workload": w.to_dict(), "steps": clock.steps(), "rss_peak_mib": peak_rss_mib()}


def spawn(workload: Workload, model_dir: str, budget: int | None) -> dict[str, Any]:
    """One run in a fresh Python process."""
    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as f:
        result_path = f.name
    command = [
        sys.executable, __file__, "--worker", "--workload", json.dumps(workload.to_dict()),
        "--budget", str(budget), "--model-dir", model_dir, "--result", result_path,
    ]  # fmt: skip
    env = {**os.environ, **THREAD_ENV, "PYTHONWARNINGS": "ignore"}
    started = time.perf_counter()
    proc = subprocess.run(command, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"run failed (budget {budget}, {workload}):\n{proc.stderr[-4000:]}")
    result = json.loads(Path(result_path).read_text())
    os.unlink(result_path)
    result["load_avg"] = os.getloadavg()[0]
    print(f"  T={workload.tokens:<4d} budget={budget!s:6s}: {time.perf_counter() - started:6.1f} s, "
          f"load {result['load_avg']:.1f}", flush=True)  # fmt: skip
    return result


def summarize(runs: list[dict[str, Any]], warmup: int) -> dict[str, float]:
    steps = [s for r in runs for s in r["steps"][warmup:]]
    out = {f"step_{c}_s": statistics.median(s[c] for s in steps) for c in ("wall", "cpu")}
    for c in ("wall", "cpu"):
        out[f"update_{c}_s"] = statistics.median(
            sum(s["phases"].get(p, {}).get(c, 0.0) for p in UPDATE_PHASES) for s in steps
        )
    out["rss_peak_mib"] = statistics.median(r["rss_peak_mib"] for r in runs)
    return out


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--workload", help=argparse.SUPPRESS)
    parser.add_argument("--budget", help=argparse.SUPPRESS)
    parser.add_argument("--model-dir", help=argparse.SUPPRESS)
    parser.add_argument("--result", help=argparse.SUPPRESS)
    parser.add_argument("--tokens", type=int, nargs="+", default=[64, 256])
    parser.add_argument("--budgets", nargs="+", default=[str(b) for b in BUDGETS])
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--max-slowdown", type=float, default=0.05)
    parser.add_argument("--out", default="benchmarks/results/micro_batch_budget")
    args = parser.parse_args(argv)
    if args.worker:
        budget = None if args.budget == "None" else int(args.budget)
        result = run_worker(Workload(**json.loads(args.workload)), args.model_dir, budget)
        Path(args.result).write_text(json.dumps(result))
        return result

    budgets = [None if b == "None" else int(b) for b in args.budgets]
    workloads = [Workload(tokens=t, steps=args.steps, warmup=args.warmup) for t in args.tokens]
    runs: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as model_dir:
        build_reference_model(model_dir)
        for repeat in range(args.repeats):
            order = budgets[repeat % len(budgets) :] + budgets[: repeat % len(budgets)]
            for w in workloads:
                for budget in order:
                    runs.append(spawn(w, model_dir, budget))
    table = []
    for w in workloads:
        base = summarize(
            [r for r in runs if r["budget"] is None and r["workload"]["tokens"] == w.tokens], w.warmup
        )
        for budget in budgets:
            s = summarize(
                [r for r in runs if r["budget"] == budget and r["workload"]["tokens"] == w.tokens], w.warmup
            )
            s.update(
                tokens=w.tokens,
                budget=budget,
                step_wall_vs_unsplit=s["step_wall_s"] / base["step_wall_s"],
                step_cpu_vs_unsplit=s["step_cpu_s"] / base["step_cpu_s"],
                rss_vs_unsplit=s["rss_peak_mib"] / base["rss_peak_mib"],
            )
            table.append(s)
    ok = [
        b
        for b in budgets
        if b is not None
        and all(r["step_cpu_vs_unsplit"] <= 1 + args.max_slowdown for r in table if r["budget"] == b)
    ]
    report = {"runs": runs, "table": table, "chosen": min(ok) if ok else None, "args": vars(args)}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(report, indent=1))
    out.with_suffix(".md").write_text(render(report))
    print(render(report))
    return report


def render(report: dict[str, Any]) -> str:
    lines = [
        "| T | budget (tokens) | step s (wall) | step s (CPU) | update s (CPU) | peak RSS MiB "
        "| step CPU vs unsplit | peak RSS vs unsplit |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in report["table"]:
        lines.append(
            f"| {r['tokens']} | {r['budget'] if r['budget'] is not None else 'None (unsplit)'} "
            f"| {r['step_wall_s']:.2f} | {r['step_cpu_s']:.2f} | {r['update_cpu_s']:.2f} | {r['rss_peak_mib']:.0f} "
            f"| {r['step_cpu_vs_unsplit']:.3f} | {r['rss_vs_unsplit']:.3f} |"
        )
    lines.append(f"\nSmallest budget within the slowdown limit on every workload: {report['chosen']}")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
