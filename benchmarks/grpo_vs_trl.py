"""grpokit's GRPOTrainer against TRL's GRPOTrainer on the same GRPO work, in one invocation.

    OMP_NUM_THREADS=1 python benchmarks/grpo_vs_trl.py                  # the full benchmark (about 40 min)
    OMP_NUM_THREADS=1 python benchmarks/grpo_vs_trl.py --quick          # 64 tokens, beta 0.04, fp32, 1 repeat
    OMP_NUM_THREADS=1 python benchmarks/grpo_vs_trl.py --only-sweep     # grpokit's scaling sweep alone

Every run is a fresh subprocess (its peak RSS is its own), with torch on one thread. Runs of the two
systems alternate (TRL, grpokit, grpokit, TRL, ...) so that a busy machine slows both alike; each run
records the load average before and after. Per step both wall-clock and process-CPU seconds are kept:
on a shared machine CPU time is the steadier figure. The model (see ``bench_workload.py``) is built once
into a temporary directory that both systems load.

Reported per workload and system: seconds per training step (median of the steps after ``--warmup``,
pooled over repeats), generation tokens/s (completion tokens / generation time), training tokens/s
(prompt + completion tokens / the rest of the step), peak RSS, RSS after imports, and grpokit/TRL
ratios. ``--phases`` adds each phase's FLOPs and achieved GFLOP/s beside bare ``torch.matmul`` of the same
shapes on this machine. The sweep runs grpokit alone over G and the completion length.

Writes ``<out>.json`` (every run, every step) and ``<out>.md`` (the tables of docs/benchmarks.md).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_workload import (  # noqa: E402 - after the path setup, so the script runs from anywhere
    Dims,
    Workload,
    addition_rows,
    build_reference_model,
    decode_shapes,
    flops,
    forward_shapes,
    matmul_bound_seconds,
)
from machine import cpu_name  # noqa: E402 - after the path setup

# Extra runs on the first fp32 workload: default logging, gradient checkpointing, 4 micro-batches per update.
VARIANTS = ("grpokit:default", "grpokit:checkpointing", "trl:checkpointing", "grpokit:microbatch", "trl:microbatch")
THREAD_ENV = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}


# ---------------------------------------------------------------------------------------------------------
# Worker side (a fresh process per run)
# ---------------------------------------------------------------------------------------------------------


def padded_prompt_length(prompts_per_step: int) -> float:
    """Mean padded prompt length of a step (its longest prompt, in tokens) over the dataset."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(os.environ["GRPO_BENCH_MODEL_DIR"])
    lengths = [len(tokenizer(r["prompt"])["input_ids"]) for r in addition_rows()]
    chunks = [lengths[i : i + prompts_per_step] for i in range(0, len(lengths), prompts_per_step)]
    return statistics.mean(max(c) for c in chunks)


def phase_shapes(system: str, w: Workload, P: int, d: Dims) -> dict[str, list[tuple[int, int, int, int]]]:
    """The matmuls each phase of ``system`` performs for one step (see the module docstring of bench_workers)."""
    N = w.prompts * w.generations
    prefill_rows = w.prompts if system == "grpokit" else N  # grpokit prefills each prompt once
    # grpokit never feeds the last completion token; TRL's training forward takes the whole sequence.
    length = P + w.tokens - 1 if system == "grpokit" else P + w.tokens
    forward = forward_shapes(N, length, w.tokens, d)
    shapes = {
        "generation": decode_shapes(N, prefill_rows, P, w.tokens, d),
        "policy_forward": forward,
        "backward": forward,
    }
    if w.beta > 0:
        shapes["reference_forward"] = forward
    return shapes


def run_bound(w: Workload, P: int) -> dict[str, Any]:
    """FLOPs of each phase and the seconds bare matmuls of its shapes take, for both systems."""
    import torch

    torch.set_num_threads(1)
    d = Dims()
    dtype = "bfloat16" if w.precision == "bf16" else "float32"
    out: dict[str, Any] = {}
    for system in ("grpokit", "trl"):
        out[system] = {}
        for phase, shapes in phase_shapes(system, w, P, d).items():
            backward = phase == "backward"
            out[system][phase] = {
                "gflop": flops(shapes) * (2 if backward else 1) / 1e9,
                **matmul_bound_seconds(shapes, dtype, backward=backward),
            }
    return out


def worker_main(args: argparse.Namespace) -> None:
    workload = Workload(**json.loads(args.workload))
    if args.worker == "bound":
        result = run_bound(workload, round(args.prompt_length))
    else:
        from bench_workers import run_worker

        result = run_worker(args.worker, workload, args.model_dir, args.variant)
    Path(args.result).write_text(json.dumps(result))


# ---------------------------------------------------------------------------------------------------------
# Driver side
# ---------------------------------------------------------------------------------------------------------


def spawn(worker: str, workload: Workload, model_dir: str, variant: str = "lean", prompt_length: float = 0) -> dict:
    """Run one worker in a fresh Python process and return its JSON result."""
    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as f:
        result_path = f.name
    command = [
        sys.executable, __file__, "--worker", worker, "--variant", variant, "--workload", json.dumps(workload.to_dict()),
        "--model-dir", model_dir, "--result", result_path, "--prompt-length", str(prompt_length),
    ]  # fmt: skip
    env = {**os.environ, **THREAD_ENV, "GRPO_BENCH_MODEL_DIR": model_dir, "PYTHONWARNINGS": "ignore"}
    started = time.perf_counter()
    proc = subprocess.run(command, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{worker} run failed ({workload}):\n{proc.stderr[-4000:]}")
    result = json.loads(Path(result_path).read_text())
    os.unlink(result_path)
    print(f"  {worker:8s} {variant:13s} T={workload.tokens:<4d} G={workload.generations:<3d} beta={workload.beta:<5} "
          f"{workload.precision}: {time.perf_counter() - started:6.1f} s, load {os.getloadavg()[0]:.1f}", flush=True)
    return result


def summarize(runs: list[dict[str, Any]], P: float) -> dict[str, Any]:
    """Medians over the steady-state steps of all ``runs`` of one system on one workload."""
    w = Workload(**runs[0]["workload"])
    N = w.prompts * w.generations
    steps = [s for r in runs for s in r["steps"][w.warmup :]]  # steps[0] is step 1
    out: dict[str, Any] = {"steps_measured": len(steps)}
    for clock in ("wall", "cpu"):
        step = statistics.median(s[clock] for s in steps)
        gen = statistics.median(s["phases"].get("generation", {}).get(clock, 0.0) for s in steps)
        out[f"step_{clock}_s"] = step
        out[f"generation_tokens_per_s_{clock}"] = N * w.tokens / gen if gen else float("nan")
        out[f"train_tokens_per_s_{clock}"] = N * (P + w.tokens) / (step - gen)
        out[f"phases_{clock}_s"] = {
            name: statistics.median(s["phases"].get(name, {}).get(clock, 0.0) for s in steps)
            for name in ("generation", "reference_forward", "policy_forward", "backward", "other")
        }
    out["rss_peak_mib"] = statistics.median(r["rss_peak_mib"] for r in runs)
    out["rss_imports_mib"] = statistics.median(r["rss_imports_mib"] for r in runs)
    out["rss_ready_mib"] = statistics.median(r["rss_ready_mib"] for r in runs)
    out["load_avg"] = [round(x, 2) for r in runs for x in (r["load_before"][0], r["load_after"][0])]
    return out


RATIO_KEYS = (
    "step_wall_s", "step_cpu_s", "generation_tokens_per_s_wall", "generation_tokens_per_s_cpu",
    "train_tokens_per_s_wall", "train_tokens_per_s_cpu", "rss_peak_mib",
)  # fmt: skip


def workload_label(w: Workload) -> str:
    return f"T={w.tokens}, beta={w.beta:g}, {w.precision}"


def comparison_table(entries: list[dict[str, Any]]) -> str:
    lines = [
        "| workload | system | s/step (CPU) | s/step (wall) | gen tok/s (CPU) | train tok/s (CPU) | peak RSS MiB "
        "| RSS after imports | RSS ready | peak above ready | load avg |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for e in entries:
        label = workload_label(Workload(**e["workload"]))
        for name in ("trl", "grpokit"):
            s = e[name]
            lines.append(
                f"| {label} | {name} | {s['step_cpu_s']:.3f} | {s['step_wall_s']:.3f} | "
                f"{s['generation_tokens_per_s_cpu']:.0f} | {s['train_tokens_per_s_cpu']:.0f} | "
                f"{s['rss_peak_mib']:.0f} | {s['rss_imports_mib']:.0f} | {s['rss_ready_mib']:.0f} | "
                f"{s['rss_peak_mib'] - s['rss_ready_mib']:.0f} | {min(s['load_avg']):.1f}-{max(s['load_avg']):.1f} |"
            )
        r = e["ratio"]
        lines.append(
            f"| {label} | **grpokit/TRL** | **{r['step_cpu_s']:.2f}** | {r['step_wall_s']:.2f} | "
            f"**{r['generation_tokens_per_s_cpu']:.2f}** | {r['train_tokens_per_s_cpu']:.2f} | "
            f"**{r['rss_peak_mib']:.2f}** | | | {r['rss_above_ready_mib']:.2f} | |"
        )
    return "\n".join(lines)


def phase_table(entries: list[dict[str, Any]]) -> str:
    lines = [
        "| workload | system | phase | CPU s | GFLOP | GFLOP/s | bare matmul GFLOP/s | x bound |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for e in entries:
        if "bound" not in e:
            continue
        label = workload_label(Workload(**e["workload"]))
        for name in ("trl", "grpokit"):
            phases = e[name]["phases_cpu_s"]
            for phase in ("generation", "reference_forward", "policy_forward", "backward", "other"):
                seconds = phases[phase]
                bound = e["bound"][name].get(phase)
                if bound is None:
                    if seconds > 0:
                        lines.append(f"| {label} | {name} | {phase} | {seconds:.3f} | | | | |")
                    continue
                lines.append(
                    f"| {label} | {name} | {phase} | {seconds:.3f} | {bound['gflop']:.2f} | "
                    f"{bound['gflop'] / seconds:.1f} | {bound['gflop'] / bound['cpu_s']:.1f} | "
                    f"{seconds / bound['cpu_s']:.2f} |"
                )
    return "\n".join(lines)


def sweep_table(sweep: list[dict[str, Any]]) -> str:
    lines = [
        "| G | T | G*T vs base | s/step (CPU) | x base | peak RSS MiB | peak above ready | x base |",
        "|---|---|---|---|---|---|---|---|",
    ]
    base = sweep[0]
    base_work = base["workload"]["generations"] * base["workload"]["tokens"]
    base_mem = base["summary"]["rss_peak_mib"] - base["summary"]["rss_ready_mib"]
    for e in sweep:
        w, s = e["workload"], e["summary"]
        work = w["generations"] * w["tokens"] / base_work
        mem = s["rss_peak_mib"] - s["rss_ready_mib"]
        lines.append(
            f"| {w['generations']} | {w['tokens']} | {work:.0f}x | {s['step_cpu_s']:.3f} | "
            f"{s['step_cpu_s'] / base['summary']['step_cpu_s']:.2f} | {s['rss_peak_mib']:.0f} | {mem:.0f} | "
            f"{mem / base_mem:.2f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, nargs="+", default=[64, 256], help="completion lengths T")
    parser.add_argument("--betas", type=float, nargs="+", default=[0.04, 0.0])
    parser.add_argument("--precisions", nargs="+", default=["fp32", "bf16"], choices=["fp32", "bf16"])
    parser.add_argument("--repeats", type=int, default=2, help="runs per system and workload (interleaved)")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=2, help="first steps left out of the medians")
    parser.add_argument("--systems", nargs="+", default=["trl", "grpokit"], choices=["trl", "grpokit"])
    parser.add_argument("--variants", nargs="*", default=list(VARIANTS),
                        help="extra SYSTEM:VARIANT runs on the first fp32 workload (one each)")
    parser.add_argument("--no-phases", action="store_true", help="skip the FLOP / matmul-bound measurement")
    parser.add_argument("--no-sweep", action="store_true")
    parser.add_argument("--only-sweep", action="store_true")
    parser.add_argument("--sweep-steps", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="T=64, beta 0.04, fp32, 1 repeat, 5 steps, no sweep")
    parser.add_argument("--out", default="benchmarks/results/grpo_vs_trl")
    # worker mode (internal)
    parser.add_argument("--worker", choices=["grpokit", "trl", "bound"], help=argparse.SUPPRESS)
    parser.add_argument("--variant", default="lean", help=argparse.SUPPRESS)
    parser.add_argument("--workload", help=argparse.SUPPRESS)
    parser.add_argument("--model-dir", help=argparse.SUPPRESS)
    parser.add_argument("--result", help=argparse.SUPPRESS)
    parser.add_argument("--prompt-length", type=float, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        worker_main(args)
        return {}
    if args.quick:
        args.tokens, args.betas, args.precisions, args.repeats = [64], [0.04], ["fp32"], 1
        args.steps, args.no_sweep, args.variants = 5, True, []
    if args.warmup >= args.steps - 1:
        raise ValueError(f"--warmup ({args.warmup}) must leave at least one measured step of --steps {args.steps}")

    model_dir = tempfile.mkdtemp(prefix="grpo-bench-model-")
    model_info = build_reference_model(model_dir)
    os.environ["GRPO_BENCH_MODEL_DIR"] = model_dir
    report: dict[str, Any] = {
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "machine": {"cpu": cpu_name(), "cores": os.cpu_count(), "python": platform.python_version(),
                    "versions": _versions()},
        "model": model_info,
        "started": time.strftime("%Y-%m-%d %H:%M:%S"),
        "comparisons": [],
        "variants": [],
        "sweep": [],
    }  # fmt: skip
    base = Workload(steps=args.steps, warmup=args.warmup)
    P = padded_prompt_length(base.prompts)
    report["padded_prompt_length"] = P

    if not args.only_sweep:
        for precision in args.precisions:
            for tokens in args.tokens:
                for beta in args.betas:
                    w = replace(base, tokens=tokens, beta=beta, precision=precision)
                    runs: dict[str, list[dict[str, Any]]] = {s: [] for s in args.systems}
                    for repeat in range(args.repeats):
                        order = args.systems if repeat % 2 == 0 else args.systems[::-1]
                        for system in order:
                            runs[system].append(spawn(system, w, model_dir))
                    entry: dict[str, Any] = {"workload": w.to_dict(), "runs": runs}
                    for system in args.systems:
                        entry[system] = summarize(runs[system], P)
                    if len(args.systems) == 2:
                        entry["ratio"] = {k: entry["grpokit"][k] / entry["trl"][k] for k in RATIO_KEYS}
                        entry["ratio"]["rss_above_ready_mib"] = (
                            entry["grpokit"]["rss_peak_mib"] - entry["grpokit"]["rss_ready_mib"]
                        ) / (entry["trl"]["rss_peak_mib"] - entry["trl"]["rss_ready_mib"])
                    if not args.no_phases:
                        entry["bound"] = spawn("bound", w, model_dir, prompt_length=round(P))
                    report["comparisons"].append(entry)
                    _print_entry(entry)
        first = replace(base, tokens=args.tokens[0], beta=args.betas[0], precision="fp32")
        for name in args.variants:
            if name not in VARIANTS:
                raise ValueError(f"--variants: {name!r} is not one of {VARIANTS}")
            system, variant = name.split(":")
            runs_v = [spawn(system, first, model_dir, variant=variant)]
            report["variants"].append(
                {"system": system, "variant": variant, "workload": first.to_dict(), "runs": runs_v,
                 "summary": summarize(runs_v, P)}
            )  # fmt: skip
    if not args.no_sweep:
        sweep_base = replace(base, steps=args.sweep_steps, warmup=1, beta=0.04, precision="fp32")
        points = [(g, 64) for g in (4, 8, 16, 32)] + [(8, t) for t in (128, 256, 512)]
        for g, t in points:
            w = replace(sweep_base, generations=g, tokens=t)
            runs_s = [spawn("grpokit", w, model_dir)]
            report["sweep"].append({"workload": w.to_dict(), "runs": runs_s, "summary": summarize(runs_s, P)})

    report["finished"] = time.strftime("%Y-%m-%d %H:%M:%S")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(report, indent=1))
    markdown = render_markdown(report)
    out.with_suffix(".md").write_text(markdown)
    print(markdown)
    return report


def render_markdown(report: dict[str, Any]) -> str:
    parts = [f"Command: `{report['command']}`  ", f"Machine: {report['machine']['cpu']}, "
             f"{report['machine']['cores']} cores, 1 torch thread per run; {report['machine']['versions']}  ",
             f"Run: {report['started']} to {report['finished']}; padded prompt length "
             f"{report['padded_prompt_length']:.2f} tokens", ""]  # fmt: skip
    if report["comparisons"]:
        parts += ["### grpokit vs TRL", "", comparison_table(report["comparisons"]), ""]
        if any("bound" in e for e in report["comparisons"]):
            parts += ["### Phases against the matmul bound (CPU time)", "", phase_table(report["comparisons"]), ""]
    if report["variants"]:
        label = workload_label(Workload(**report["variants"][0]["workload"]))
        parts += [f"### Variants ({label}, one run each)", "",
                  "| system | variant | s/step (CPU) | s/step (wall) | backward CPU s | peak RSS MiB | RSS ready "
                  "| peak above ready |", "|---|---|---|---|---|---|---|---|"]  # fmt: skip
        for v in report["variants"]:
            s = v["summary"]
            parts.append(f"| {v['system']} | {v['variant']} | {s['step_cpu_s']:.3f} | {s['step_wall_s']:.3f} | "
                         f"{s['phases_cpu_s']['backward']:.3f} | {s['rss_peak_mib']:.0f} | {s['rss_ready_mib']:.0f} | "
                         f"{s['rss_peak_mib'] - s['rss_ready_mib']:.0f} |")  # fmt: skip
        parts.append("")
    if report["sweep"]:
        parts += ["### grpokit scaling sweep (beta 0.04, fp32)", "", sweep_table(report["sweep"]), ""]
    return "\n".join(parts)


def _print_entry(entry: dict[str, Any]) -> None:
    label = workload_label(Workload(**entry["workload"]))
    for system in ("trl", "grpokit"):
        if system in entry:
            s = entry[system]
            print(f"    {label} {system:8s} {s['step_cpu_s']:.3f} s/step CPU ({s['step_wall_s']:.3f} wall), gen "
                  f"{s['generation_tokens_per_s_cpu']:.0f} tok/s, RSS {s['rss_peak_mib']:.0f} MiB", flush=True)  # fmt: skip
    if "ratio" in entry:
        r = entry["ratio"]
        print(f"    grpokit/TRL: step {r['step_cpu_s']:.2f} (CPU) {r['step_wall_s']:.2f} (wall), gen tok/s "
              f"{r['generation_tokens_per_s_cpu']:.2f}, RSS {r['rss_peak_mib']:.2f}", flush=True)  # fmt: skip


def _versions() -> str:
    from importlib.metadata import version

    return ", ".join(f"{name} {version(name)}" for name in ("torch", "transformers", "trl", "grpokit"))


if __name__ == "__main__":
    main()
