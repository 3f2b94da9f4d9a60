"""What ``grpokit compare`` writes: the summary over seeds (mean, spread, GRPO/PPO ratios), ``compare.md``,
``compare.json``, ``compare.png`` and ``compare.html`` (:mod:`grpokit.apps.compare` runs the comparison)."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

from grpokit.config import GRPOConfig, PPOConfig

__all__ = ["LAST_STEPS", "SYSTEMS", "plot_curves", "render_markdown", "summarize", "write_outputs"]

SYSTEMS: dict[str, type[GRPOConfig] | type[PPOConfig]] = {"grpo": GRPOConfig, "ppo": PPOConfig}
"""The compared systems, in table order, and their config classes."""
LAST_STEPS = 5
"""Steps averaged for the final training reward."""


# (key in a run's result, label, unit scale, format)
_ROWS: tuple[tuple[str, str, float, str], ...] = (
    ("peak_rss_mb", "peak RSS (MiB)", 1.0, "{:.0f}"),
    ("peak_rss_above_baseline_mb", "peak RSS above post-import baseline (MiB)", 1.0, "{:.1f}"),
    ("state_mb", "model state: params + grads + optimizer (MiB)", 1.0, "{:.2f}"),
    ("peak_cuda_allocated_mb", "peak CUDA allocated (MiB)", 1.0, "{:.0f}"),
    ("parameters", "parameters held in memory (M)", 1e-6, "{:.3f}"),
    ("trainable_parameters", "trainable parameters (M)", 1e-6, "{:.3f}"),
    ("seconds_per_step", "wall time per step (s)", 1.0, "{:.3f}"),
    ("generated_tokens", "generated tokens", 1.0, "{:.0f}"),
    ("final_reward", f"training reward, last {LAST_STEPS} steps", 1.0, "{:.3f}"),
    ("held_out", "held-out {metric} after training", 1.0, "{:.3f}"),
    ("kl_to_initial", "held-out KL to the starting policy (nats per completion)", 1.0, "{:.4f}"),
    ("kl_mean", "training KL to the reference (k3 per token, mean over steps)", 1.0, "{:.4f}"),
)


def _stats(values: list[float]) -> dict[str, float]:
    n = len(values)
    mean = sum(values) / n
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1)) if n > 1 else 0.0
    return {"mean": mean, "std": std, "min": min(values), "max": max(values), "n": n}


def summarize(
    results: list[dict[str, Any]], grpo_config: GRPOConfig, ppo_config: PPOConfig, *, model_dir: str
) -> dict[str, Any]:
    """Mean, sample std, min and max over seeds of every measured quantity, per system; the ratios
    GRPO / PPO of the means; the per-run results; the mean reward curve per system.
    """
    systems: dict[str, Any] = {}
    for name in SYSTEMS:
        runs = [r for r in results if r["system"] == name]
        for r in runs:
            r["state_mb"] = (r["parameter_bytes"] + r["gradient_bytes"] + r["optimizer_bytes"]) / 2**20
            kl = [v for v in r.get("kl_curve", []) if v is not None and not math.isnan(v)]
            if kl:  # logged only with a reference model (beta > 0)
                r["kl_mean"] = sum(kl) / len(kl)
        stats: dict[str, Any] = {}
        for key, *_ in _ROWS:
            values = [r[key] for r in runs if key in r and r[key] is not None and not math.isnan(r[key])]
            if values:
                stats[key] = _stats(values)
        curves = [r["reward_curve"] for r in runs]
        length = min(len(c) for c in curves) if curves else 0
        stats["reward_curve_mean"] = [sum(c[i] for c in curves) / len(curves) for i in range(length)]
        systems[name] = {"runs": runs, "stats": stats}
    ratios = {}
    for key, *_ in _ROWS:
        grpo, ppo = systems["grpo"]["stats"].get(key), systems["ppo"]["stats"].get(key)
        if grpo and ppo and ppo["mean"]:
            ratios[key] = grpo["mean"] / ppo["mean"]
    held_out_metric = next((r.get("held_out_metric") for r in results if r.get("held_out_metric")), None)
    return {
        "model": model_dir,
        "seeds": sorted({r["seed"] for r in results}),
        "matching": {
            "grpo": {
                "prompts_per_step": grpo_config.data.prompts_per_step,
                "completions_per_prompt": grpo_config.algorithm.num_generations,
            },
            "ppo": {
                "prompts_per_step": ppo_config.data.prompts_per_step,
                "completions_per_prompt": ppo_config.algorithm.num_generations,
            },
            "completions_per_step": grpo_config.num_responses,
            "max_steps": grpo_config.max_steps,
        },  # fmt: skip
        "held_out_metric": held_out_metric,
        "systems": systems,
        "ratios_grpo_over_ppo": ratios,
    }


def render_markdown(summary: dict[str, Any]) -> str:
    """The comparison table: mean ± sample std over seeds [min, max], and GRPO/PPO of the means."""
    match = summary["matching"]
    seeds = summary["seeds"]
    lines = [
        "# GRPO vs PPO",
        "",
        f"Model `{summary['model']}`; {match['max_steps']} steps of {match['completions_per_step']} completions "
        f"(GRPO: {match['grpo']['prompts_per_step']} prompts x {match['grpo']['completions_per_prompt']}; "
        f"PPO: {match['ppo']['prompts_per_step']} prompts x {match['ppo']['completions_per_prompt']}); "
        f"seeds {', '.join(map(str, seeds))}. Mean ± sample std over seeds, [min, max].",
        "",
        "| | GRPO | PPO | GRPO / PPO |",
        "|---|---|---|---|",
    ]
    metric = summary.get("held_out_metric") or "quality"
    for key, label, scale, fmt in _ROWS:
        cells = []
        for name in SYSTEMS:
            s = summary["systems"][name]["stats"].get(key)
            if s is None:
                cells.append("n/a")
                continue
            mean, std, lo, hi = (s[k] * scale for k in ("mean", "std", "min", "max"))
            cells.append(f"{fmt.format(mean)} ± {fmt.format(std)} [{fmt.format(lo)}, {fmt.format(hi)}]")
        if cells == ["n/a", "n/a"]:
            continue
        ratio = summary["ratios_grpo_over_ppo"].get(key)
        lines.append(
            f"| {label.format(metric=metric)} | {cells[0]} | {cells[1]} | "
            f"{'n/a' if ratio is None else f'{ratio:.2f}'} |"
        )
    if summary.get("before") is not None:
        lines += ["", f"Held-out {metric} of the starting model: {summary['before']:.3f}."]
    return "\n".join(lines) + "\n"


def _moving_average(values: list[float], window: int) -> list[float]:
    """Trailing mean over the last ``window`` values (fewer at the start)."""
    out, total = [], 0.0
    for i, value in enumerate(values):
        total += value - (values[i - window] if i >= window else 0.0)
        out.append(total / min(i + 1, window))
    return out


def plot_curves(summary: dict[str, Any], path: Path) -> Path | None:
    """Training reward and KL to the reference per step, both systems, as a PNG; None without matplotlib.

    Each curve is a trailing moving average (a step's reward is the mean of only N completions), the line
    the mean over seeds and the band the seeds' min and max.
    """
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    length = min(len(r["reward_curve"]) for name in SYSTEMS for r in summary["systems"][name]["runs"])
    window = max(1, length // 20)
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for ax, key, ylabel in (
        (axes[0], "reward_curve", "training reward"),
        (axes[1], "kl_curve", "KL(π ‖ π_ref), k3 per token"),
    ):
        for name, color in (("grpo", "tab:blue"), ("ppo", "tab:orange")):
            runs = summary["systems"][name]["runs"]
            curves = [_moving_average(r[key][:length], window) for r in runs if key in r]
            if not curves or any(math.isnan(v) for c in curves for v in c):
                continue
            steps = list(range(1, length + 1))
            seeds = "seed" if len(curves) == 1 else "seeds"
            mean = [sum(c[i] for c in curves) / len(curves) for i in range(length)]
            ax.plot(steps, mean, color=color, label=f"{name.upper()} (mean of {len(curves)} {seeds})")
            low = [min(c[i] for c in curves) for i in range(length)]
            high = [max(c[i] for c in curves) for i in range(length)]
            ax.fill_between(steps, low, high, color=color, alpha=0.2, linewidth=0)
        match = summary["matching"]
        ax.set_xlabel(f"step ({match['completions_per_step']} completions each)")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        if ax.lines:
            ax.legend()
    axes[0].set_title("reward")
    axes[1].set_title("KL to the reference (logged with beta > 0)")
    smoothing = f"moving average over {window} steps, " if window > 1 else ""
    fig.suptitle(f"GRPO vs PPO ({smoothing}line: mean over seeds, band: min to max)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def write_outputs(summary: dict[str, Any], output_dir: str | os.PathLike) -> dict[str, Path]:
    """``compare.json``, ``compare.md``, ``compare.png`` (with matplotlib) and ``compare.html`` (all runs
    overlaid by the run report) in ``output_dir``; returns the paths written."""
    out = Path(output_dir)
    paths = {"json": out / "compare.json", "markdown": out / "compare.md"}
    paths["json"].write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    paths["markdown"].write_text(render_markdown(summary), encoding="utf-8")
    png = plot_curves(summary, out / "compare.png")
    if png is not None:
        paths["png"] = png
    run_dirs = [r["run_dir"] for name in SYSTEMS for r in summary["systems"][name]["runs"]]
    if run_dirs:
        from grpokit.tracking.report import write_report

        paths["html"] = write_report(run_dirs[0], out / "compare.html", other_runs=run_dirs[1:])
    return paths
