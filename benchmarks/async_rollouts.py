"""Training steps per wall second: grpokit synchronous (1 thread), grpokit with asynchronous rollouts (trainer
1 thread + rollout worker 1 thread), and TRL's GRPOTrainer (2 threads), on the reference workload.

The measurement behind docs/async.md, to run on a quiet 2-core machine (nothing else running)::

    OMP_NUM_THREADS=1 PYTHONPATH=src python benchmarks/async_rollouts.py --repeats 3
    OMP_NUM_THREADS=1 PYTHONPATH=src python benchmarks/async_rollouts.py --quick     # a check that it runs

The workload is ``bench_workload.py``'s (the one of ``grpo_vs_trl.py``): the reference Qwen2, B = 4 prompts x
G = 8 completions of exactly T = 64 tokens, beta 0.04, fp32, ``--steps`` steps of which the first ``--warmup``
are left out. Every run is a fresh subprocess (``bench_workers.py`` drives both trainers); the three systems
alternate in a rotating order over ``--repeats`` so that a change of load hits them alike, and the load average
is recorded before and after every run.

Throughput is the steady state: measured steps / the wall seconds from the start of the first measured step to
the start of the step after the last (``bench_workers.PhaseClock``). CPU seconds are reported too: the
trainer process's own, and with async rollouts the rollout worker's (``RUSAGE_CHILDREN`` once it is reaped),
so the extra work of the second process is visible.

Goal of the feature: async >= 1.6x sync@1 thread and >= 1.3x TRL@2 threads in steps per wall second.

Writes ``<out>.json`` (every run, every step) and ``<out>.md`` (the table of docs/async.md).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_workload import Workload, build_reference_model  # noqa: E402 - after the path setup
from machine import cpu_name  # noqa: E402 - after the path setup

SYSTEMS = {
    # name: (trainer, torch threads of the trainer process, grpokit generation fields)
    "grpokit-sync-1t": ("grpokit", 1, {}),
    "grpokit-async-1t+worker": ("grpokit", 1, {"async_rollouts": True, "max_staleness": 1}),
    "trl-2t": ("trl", 2, {}),
}


# ---------------------------------------------------------------------------------------------------------
# One run (a fresh process)
# ---------------------------------------------------------------------------------------------------------


def run_one(system: str, workload: Workload, model_dir: str) -> dict[str, Any]:
    from bench_workers import run_grpokit, run_trl

    trainer, threads, generation = SYSTEMS[system]
    load_before = os.getloadavg()
    started = time.perf_counter()
    if trainer == "grpokit":
        result = run_grpokit(workload, model_dir, "lean", threads=threads, generation=generation)
    else:
        result = run_trl(workload, model_dir, "lean", threads=threads)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    result.update(
        system=system,
        threads=threads,
        workload=workload.to_dict(),
        load_before=load_before,
        load_after=os.getloadavg(),
        seconds_total=time.perf_counter() - started,
        worker_cpu_s=children.ru_utime + children.ru_stime,  # the rollout worker's, once reaped
    )
    return result


def spawn(system: str, workload: Workload, model_dir: str) -> dict[str, Any]:
    _, threads, _ = SYSTEMS[system]
    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as f:
        result_path = f.name
    command = [
        sys.executable, __file__, "--worker", system, "--workload", json.dumps(workload.to_dict()),
        "--model-dir", model_dir, "--result", result_path,
    ]  # fmt: skip
    threads_env = {"OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    env = {**os.environ, **threads_env, "TOKENIZERS_PARALLELISM": "false", "PYTHONWARNINGS": "ignore"}
    started = time.perf_counter()
    proc = subprocess.run(command, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{system} run failed:\n{proc.stderr[-4000:]}")
    result = json.loads(Path(result_path).read_text())
    os.unlink(result_path)
    print(f"  {system:24s} {time.perf_counter() - started:6.1f} s, load {os.getloadavg()[0]:.2f}", flush=True)
    return result


# ---------------------------------------------------------------------------------------------------------
# Summaries
# ---------------------------------------------------------------------------------------------------------


def throughput(run: dict[str, Any]) -> dict[str, float]:
    """Steady-state steps per wall second of one run, and CPU seconds per step (trainer, worker)."""
    w = Workload(**run["workload"])
    steps = run["steps"][w.warmup :]  # steps[0] is step 1; the last step has no successor and is absent
    wall = sum(s["wall"] for s in steps)
    cpu = sum(s["cpu"] for s in steps)
    return {
        "steps_measured": len(steps),
        "steps_per_s": len(steps) / wall,
        "trainer_cpu_s_per_step": cpu / len(steps),
        "worker_cpu_s_total": run["worker_cpu_s"],
    }


def summarize(runs: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for system, system_runs in runs.items():
        figures = [throughput(r) for r in system_runs]
        rates = [f["steps_per_s"] for f in figures]
        out[system] = {
            "steps_per_s_median": statistics.median(rates),
            "steps_per_s_each": rates,
            "trainer_cpu_s_per_step_median": statistics.median(f["trainer_cpu_s_per_step"] for f in figures),
            "worker_cpu_s_total_median": statistics.median(f["worker_cpu_s_total"] for f in figures),
            "load_avg": [round(x, 2) for r in system_runs for x in (r["load_before"][0], r["load_after"][0])],
        }
    async_rate = out.get("grpokit-async-1t+worker", {}).get("steps_per_s_median")
    if async_rate is not None:
        for base in ("grpokit-sync-1t", "trl-2t"):
            if base in out:
                out[f"async_over_{base}"] = async_rate / out[base]["steps_per_s_median"]
    return out


def render_markdown(report: dict[str, Any]) -> str:
    s = report["summary"]
    lines = [
        f"Command: `{report['command']}`  ",
        f"Machine: {report['machine']['cpu']}, {report['machine']['cores']} cores; {report['machine']['versions']}  ",
        f"Run: {report['started']} to {report['finished']}; workload {report['workload']}",
        "",
        "| system | steps / wall s (median) | each repeat | trainer CPU s / step | worker CPU s (run) | load avg |",
        "|---|---|---|---|---|---|",
    ]
    for system in SYSTEMS:
        if system not in s:
            continue
        x = s[system]
        each = ", ".join(f"{r:.3f}" for r in x["steps_per_s_each"])
        lines.append(
            f"| {system} | {x['steps_per_s_median']:.3f} | {each} | {x['trainer_cpu_s_per_step_median']:.3f} | "
            f"{x['worker_cpu_s_total_median']:.1f} | {min(x['load_avg']):.2f}-{max(x['load_avg']):.2f} |"
        )
    for base, goal in (("grpokit-sync-1t", 1.6), ("trl-2t", 1.3)):
        if f"async_over_{base}" in s:
            lines.append(f"\nasync / {base}: **{s[f'async_over_{base}']:.2f}x** (goal >= {goal}x)")
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------------------------
# Driver
# ---------------------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--repeats", type=int, default=3, help="runs per system (interleaved, rotating order)"
    )
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--warmup", type=int, default=2, help="first steps left out of the throughput")
    parser.add_argument("--tokens", type=int, default=64, help="completion length T")
    parser.add_argument("--systems", nargs="+", default=list(SYSTEMS), choices=list(SYSTEMS))
    parser.add_argument(
        "--quick", action="store_true", help="1 repeat of 5 steps of T = 16: checks that it runs"
    )
    parser.add_argument("--out", default="benchmarks/results/async_rollouts")
    parser.add_argument("--worker", choices=list(SYSTEMS), help=argparse.SUPPRESS)
    parser.add_argument("--workload", help=argparse.SUPPRESS)
    parser.add_argument("--model-dir", help=argparse.SUPPRESS)
    parser.add_argument("--result", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        result = run_one(args.worker, Workload(**json.loads(args.workload)), args.model_dir)
        Path(args.result).write_text(json.dumps(result))
        return {}
    if args.quick:
        args.repeats, args.steps, args.warmup, args.tokens = 1, 5, 1, 16
    if args.warmup >= args.steps - 1:
        raise ValueError(
            f"--warmup ({args.warmup}) must leave at least one measured step of --steps {args.steps}"
        )

    model_dir = tempfile.mkdtemp(prefix="async-bench-model-")
    model_info = build_reference_model(model_dir)
    workload = replace(Workload(), steps=args.steps, warmup=args.warmup, tokens=args.tokens)
    report: dict[str, Any] = {
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "machine": {"cpu": cpu_name(), "cores": os.cpu_count(), "python": platform.python_version(),
                    "versions": _versions()},
        "model": model_info,
        "workload": workload.to_dict(),
        "started": time.strftime("%Y-%m-%d %H:%M:%S"),
    }  # fmt: skip
    runs: dict[str, list[dict[str, Any]]] = {s: [] for s in args.systems}
    for repeat in range(args.repeats):
        shift = repeat % len(args.systems)
        for system in args.systems[shift:] + args.systems[:shift]:  # a rotating order
            runs[system].append(spawn(system, workload, model_dir))
    report["runs"] = runs
    report["summary"] = summarize(runs)
    report["finished"] = time.strftime("%Y-%m-%d %H:%M:%S")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(report, indent=1))
    markdown = render_markdown(report)
    out.with_suffix(".md").write_text(markdown)
    print(markdown)
    return report


def _versions() -> str:
    from importlib.metadata import version

    return ", ".join(f"{name} {version(name)}" for name in ("torch", "transformers", "trl"))


if __name__ == "__main__":
    main()
