"""What ``grpokit compare`` writes: the summary over seeds (mean, spread, GRPO/PPO ratios), ``compare.md``,
``compare.json``, ``compare.png`` and ``compare.html`` (:mod:`grpokit.apps.compare` runs the comparison)."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

from grpokit.config import GRPOConfig, PPOConfig

__all__ = [
    "LAST_STEPS",
    "SYSTEMS",
    "config_differences",
    "difference_stats",
    "plot_curves",
    "render_markdown",
    "summarize",
    "write_outputs",
]

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
    ("steps", "steps trained", 1.0, "{:.0f}"),
    ("generated_tokens", "generated tokens (every sampling round)", 1.0, "{:.0f}"),
    ("cpu_seconds", "CPU seconds of training (process time, all threads)", 1.0, "{:.1f}"),
    ("final_reward", f"training reward, last {LAST_STEPS} steps", 1.0, "{:.3f}"),
    ("reward_at_equal_tokens", "training reward at equal generated tokens", 1.0, "{:.3f}"),
    ("reward_at_equal_cpu", "training reward at equal CPU seconds", 1.0, "{:.3f}"),
    ("zero_std_group_fraction", "zero-advantage groups (fraction, mean over steps)", 1.0, "{:.3f}"),
    ("held_out", "held-out {metric} after training", 1.0, "{:.3f}"),
    ("kl_to_initial", "held-out KL to the starting policy (nats per completion)", 1.0, "{:.4f}"),
    ("kl_mean", "training KL to the reference (k3 per token, mean over steps)", 1.0, "{:.4f}"),
)


def _stats(values: list[float]) -> dict[str, float]:
    n = len(values)
    mean = sum(values) / n
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1)) if n > 1 else 0.0
    return {"mean": mean, "std": std, "min": min(values), "max": max(values), "n": n}


def config_differences(grpo: GRPOConfig, ppo: PPOConfig) -> dict[str, Any]:
    """Every difference between two resolved configs: ``{"differ": {path: [grpo, ppo]}, "grpo_only":
    {path: value}, "ppo_only": {path: value}}`` over dotted field paths (the seed and run directory, set
    per run, are not compared)."""
    a, b = _flat(grpo.model_dump(mode="json")), _flat(ppo.model_dump(mode="json"))
    return {
        "differ": {k: [a[k], b[k]] for k in a if k in b and a[k] != b[k]},
        "grpo_only": {k: v for k, v in a.items() if k not in b},
        "ppo_only": {k: v for k, v in b.items() if k not in a},
    }


def _flat(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, dict) and value:
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


ZERO_GRADIENT_WARNING = 0.5
"""compare.md warns when more than this fraction of a system's groups have zero advantage (no gradient)."""


def difference_stats(values: list[float]) -> dict[str, float]:
    """Mean and sample std of per-seed GRPO - PPO differences, and the 95% t-interval of their mean (NaN
    bounds with one seed)."""
    from scipy import stats as scipy_stats

    out = _stats(values)
    n = out["n"]
    half = float(scipy_stats.t.ppf(0.975, n - 1)) * out["std"] / math.sqrt(n) if n > 1 else math.nan
    out.update(ci_low=out["mean"] - half, ci_high=out["mean"] + half)
    return out


def _reward_at(run: dict[str, Any], curve_key: str, limit: float) -> float | None:
    """Mean training reward of the last ``LAST_STEPS`` steps a run had finished when its cumulative
    ``curve_key`` (tokens or CPU seconds) reached ``limit``; None without the curve."""
    curve = run.get(curve_key) or []
    rewards = run.get("reward_curve") or []
    if not curve or not rewards or any(math.isnan(v) for v in curve):
        return None
    end = max(1, sum(1 for v in curve if v <= limit * (1 + 1e-9)))
    window = rewards[max(0, end - LAST_STEPS) : end]
    return sum(window) / len(window)


def summarize(
    results: list[dict[str, Any]], grpo_config: GRPOConfig, ppo_config: PPOConfig, *, model_dir: str
) -> dict[str, Any]:
    """Mean, sample std, min and max over seeds of every measured quantity, per system; the ratios
    GRPO / PPO of the means and the per-seed differences GRPO - PPO (mean, std, 95% t-interval); the
    training reward of every run at the tokens and CPU seconds the shortest run spent; the per-run results;
    the mean reward curve per system; every difference between the two configs.
    """
    limits = {}
    for key, curve_key in (("reward_at_equal_tokens", "tokens_curve"), ("reward_at_equal_cpu", "cpu_curve")):
        ends = [r[curve_key][-1] for r in results if r.get(curve_key)]
        if ends and not any(math.isnan(v) for v in ends):
            limits[key] = (curve_key, min(ends))
    systems: dict[str, Any] = {}
    for name in SYSTEMS:
        runs = [r for r in results if r["system"] == name]
        for r in runs:
            for key, (curve_key, limit) in limits.items():
                r[key] = _reward_at(r, curve_key, limit)
            r["state_mb"] = (r["parameter_bytes"] + r["gradient_bytes"] + r["optimizer_bytes"]) / 2**20
            kl = [v for v in r.get("kl_curve", []) if v is not None and not math.isnan(v)]
            if kl:  # logged only with a reference model (beta > 0)
                r["kl_mean"] = sum(kl) / len(kl)
        stats: dict[str, Any] = {}
        for key, *_ in _ROWS:
            values = [r[key] for r in runs if _number(r.get(key))]
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
    differences = {}
    for key, *_ in _ROWS:
        by_seed = {
            name: {r["seed"]: r[key] for r in systems[name]["runs"] if _number(r.get(key))}
            for name in SYSTEMS
        }
        paired = [
            by_seed["grpo"][seed] - by_seed["ppo"][seed] for seed in by_seed["grpo"] if seed in by_seed["ppo"]
        ]
        if paired:
            differences[key] = difference_stats(paired)
    held_out_metric = next((r.get("held_out_metric") for r in results if r.get("held_out_metric")), None)
    num_held_out = next((r.get("num_held_out") for r in results if r.get("num_held_out")), None)
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
            "max_generated_tokens": grpo_config.max_generated_tokens,
            "max_cpu_seconds": grpo_config.max_cpu_seconds,
        },  # fmt: skip
        "config_differences": config_differences(grpo_config, ppo_config),
        "equal_budget_limits": {key: limit for key, (_, limit) in limits.items()},
        "held_out_metric": held_out_metric,
        "num_held_out": num_held_out,
        "systems": systems,
        "ratios_grpo_over_ppo": ratios,
        "differences_grpo_minus_ppo": differences,
    }


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not math.isnan(value)


def _value(value: Any) -> str:
    return json.dumps(value) if not isinstance(value, str) else value


def _budget_text(match: dict[str, Any]) -> str:
    stops = [f"{match['max_steps']} steps"]
    if match.get("max_generated_tokens") is not None:
        stops.append(f"{match['max_generated_tokens']} generated tokens")
    if match.get("max_cpu_seconds") is not None:
        stops.append(f"{match['max_cpu_seconds']:g} CPU seconds")
    return stops[0] if len(stops) == 1 else "whichever comes first of " + ", ".join(stops)


def render_markdown(summary: dict[str, Any]) -> str:
    """The comparison: every difference between the two configs, then the table (mean ± sample std over
    seeds [min, max], GRPO/PPO of the means, and GRPO - PPO per seed: mean ± std with its 95% t-interval),
    then warnings (most groups without gradient)."""
    match = summary["matching"]
    seeds = summary["seeds"]
    lines = [
        "# GRPO vs PPO",
        "",
        f"Model `{summary['model']}`; budget per run: {_budget_text(match)}, of "
        f"{match['completions_per_step']} completions a step "
        f"(GRPO: {match['grpo']['prompts_per_step']} prompts x {match['grpo']['completions_per_prompt']}; "
        f"PPO: {match['ppo']['prompts_per_step']} prompts x {match['ppo']['completions_per_prompt']}); "
        f"seeds {', '.join(map(str, seeds))}. Mean ± sample std over seeds, [min, max].",
        "",
    ]
    diff = summary.get("config_differences")
    if diff is not None:
        lines += ["## Where the two configs differ", ""]
        lines += [f"- `{path}`: GRPO {_value(g)}, PPO {_value(p)}" for path, (g, p) in diff["differ"].items()]
        for name in SYSTEMS:
            own = diff[f"{name}_only"]
            if own:
                fields = ", ".join(f"`{k.split('.', 1)[-1]}` {_value(v)}" for k, v in own.items())
                lines.append(f"- only {name.upper()} has: {fields}")
        lines += [
            "",
            "Every other field is the same in both. PPO's KL coefficient and estimator act in its reward, "
            "GRPO's in its loss.",
            "",
        ]
    lines += [
        "## Results",
        "",
        "| | GRPO | PPO | GRPO / PPO | GRPO − PPO per seed: mean ± std [95% CI] |",
        "|---|---|---|---|---|",
    ]
    metric = summary.get("held_out_metric") or "quality"
    differences = summary.get("differences_grpo_minus_ppo", {})
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
        d = differences.get(key)
        if d is None:
            delta = "n/a"
        else:
            mean, std, lo, hi = (d[k] * scale for k in ("mean", "std", "ci_low", "ci_high"))
            interval = "n/a (one seed)" if math.isnan(lo) else f"{fmt.format(lo)}, {fmt.format(hi)}"
            delta = f"{fmt.format(mean)} ± {fmt.format(std)} [{interval}]"
        lines.append(
            f"| {label.format(metric=metric)} | {cells[0]} | {cells[1]} | "
            f"{'n/a' if ratio is None else f'{ratio:.2f}'} | {delta} |"
        )
    limits = summary.get("equal_budget_limits", {})
    if limits:
        parts = []
        if "reward_at_equal_tokens" in limits:
            parts.append(f"{limits['reward_at_equal_tokens']:.0f} generated tokens")
        if "reward_at_equal_cpu" in limits:
            parts.append(f"{limits['reward_at_equal_cpu']:.1f} CPU seconds")
        lines += [
            "",
            f"Training reward at equal tokens / CPU seconds: the mean of the last {LAST_STEPS} steps each run "
            f"had finished at {' / '.join(parts)} (what the shortest run spent).",
        ]
    num_held_out = summary.get("num_held_out")
    if num_held_out:
        lines += ["", f"Held-out {metric}: {num_held_out} problems (or rows) per run."]
    if summary.get("before") is not None:
        lines += ["", f"Held-out {metric} of the starting model: {summary['before']:.3f}."]
    for name in SYSTEMS:
        zero = summary["systems"][name]["stats"].get("zero_std_group_fraction")
        if zero is not None and zero["mean"] > ZERO_GRADIENT_WARNING:
            lines += [
                "",
                f"**Warning:** {zero['mean']:.0%} of {name.upper()}'s groups had the same reward for every "
                "completion, so zero advantage and no gradient: most of its samples taught nothing. Try "
                "dynamic sampling (`--grpo.dynamic_sampling true`, which refills the batch with informative "
                "groups and counts the extra generated tokens), or another split of the same completions "
                "per step between prompts and G (`--prompts_per_step`, `--num_generations`).",
            ]
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
