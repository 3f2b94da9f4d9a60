"""What ``grpokit reward-hacking`` writes: per-run curves, the table over seeds, the figure, the Markdown.

Every number comes from the runs' own logs:

- ``metrics.jsonl``, per step: the proxy (``rewards/reward_model/mean``, the reward optimised), the gold
  (``rewards/task/mean``, logged at weight 0), ``kl`` (mean per-token k3 against the start policy) and
  ``completions/mean_length``;
- ``samples.jsonl``, every completion of the step: the repeated n-gram rate (characters,
  :func:`grpokit.tracking.completion_stats.repeated_ngram_rate`) and the length in characters.

KL per completion at a step is estimated as ``kl * completions/mean_length`` (see the experiment's note 3).
A run's "start" and "end" are the means of its first and last ``window`` steps (a tenth of the run, at
least 5): one step's values are means over only N completions. "Gold at the best KL" is the highest value
of the run's gold curve after a centred moving average over ``window`` steps, with the KL per completion
(a centred moving median: one step's k3 estimate can spike) where it is reached. "At the matched KL": the
smoothed values at the first step whose smoothed KL reaches the lowest end-of-run KL of all runs, so both
systems are compared at the same distance from the start policy. The figure smooths the same way and
averages the smoothed curves over seeds.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from grpokit.apps.compare_report import SYSTEMS, difference_stats
from grpokit.tracking import read_metrics, read_samples
from grpokit.tracking.completion_stats import mean_repeated_ngram_rate

__all__ = ["NGRAM", "analyse", "at_kl", "moving_average", "moving_median", "plot", "render_markdown", "run_curves", "run_summary", "write_outputs"]

NGRAM = 3
"""n of the repeated n-gram rate (character n-grams: a 4-digit answer has 2, a padded one up to 10)."""

PROXY, GOLD = "rewards/reward_model/mean", "rewards/task/mean"

# (key, label, format) of the table's rows, in order.
_ROWS = (
    ("gold_best", "gold at the best KL (smoothed peak)", ".3f"),
    ("kl_at_gold_best", "KL per completion at that peak (nats)", ".2f"),
    ("gold_end", "gold at the end", ".3f"),
    ("proxy_end", "proxy at the end (RM score, start-policy std = 1)", ".2f"),
    ("kl_end", "KL per completion at the end (nats)", ".2f"),
    ("length_end", "mean completion length at the end (characters)", ".2f"),
    ("repetition_end", f"repeated {NGRAM}-gram rate at the end", ".3f"),
    ("gold_at_matched_kl", "gold at the matched KL (the lowest final KL of all runs)", ".3f"),
    ("length_at_matched_kl", "mean length at the matched KL", ".2f"),
    ("repetition_at_matched_kl", f"repeated {NGRAM}-gram rate at the matched KL", ".3f"),
    ("step_at_matched_kl", "step at which the run reaches the matched KL", ".0f"),
    ("held_out", "held-out greedy gold accuracy after training", ".3f"),
    ("kl_to_initial", "held-out KL per completion to the start policy (exact, final)", ".2f"),
)


def moving_average(values: Sequence[float], window: int) -> list[float]:
    """Centred moving average over ``window`` points (shrunk at the ends, so the length is kept)."""
    if window < 1:
        raise ValueError(f"window must be >= 1, got {window}")
    half = window // 2
    out = []
    for i in range(len(values)):
        chunk = values[max(0, i - half) : i + half + 1]
        out.append(sum(chunk) / len(chunk))
    return out


def moving_median(values: Sequence[float], window: int) -> list[float]:
    """Centred moving median over ``window`` points (shrunk at the ends): the KL curves' smoother, as one
    step's k3 estimate can spike (a single token with a large ratio) where a mean would carry the spike."""
    if window < 1:
        raise ValueError(f"window must be >= 1, got {window}")
    half = window // 2
    out = []
    for i in range(len(values)):
        chunk = sorted(values[max(0, i - half) : i + half + 1])
        mid = len(chunk) // 2
        out.append(chunk[mid] if len(chunk) % 2 else (chunk[mid - 1] + chunk[mid]) / 2)
    return out


def run_curves(run_dir: str | os.PathLike) -> dict[str, list[float]]:
    """Per-step curves of one run: ``step``, ``proxy``, ``gold``, ``kl`` (per completion), ``length`` and
    ``repetition`` (of the completions in ``samples.jsonl``)."""
    metrics = [m for m in read_metrics(run_dir) if PROXY in m]
    by_step: dict[int, list[str]] = {}
    for row in read_samples(run_dir):
        by_step.setdefault(int(row["step"]), []).extend(row["completions"])
    curves: dict[str, list[float]] = {k: [] for k in ("step", "proxy", "gold", "kl", "length", "repetition")}
    for m in metrics:
        step = int(m["step"])
        completions = by_step.get(step, [])
        curves["step"].append(step)
        curves["proxy"].append(float(m[PROXY]))
        curves["gold"].append(float(m[GOLD]))
        curves["kl"].append(float(m.get("kl", math.nan)) * float(m["completions/mean_length"]))
        curves["length"].append(float(m["completions/mean_length"]))
        curves["repetition"].append(mean_repeated_ngram_rate(completions, NGRAM) if completions else math.nan)
    return curves


def run_summary(curves: dict[str, list[float]]) -> dict[str, float]:
    """A run's start, end and best-gold numbers (see the module docstring)."""
    n = len(curves["step"])
    if n == 0:
        raise ValueError("the run logged no step with the proxy reward")
    window = max(5, n // 10)
    mean = lambda xs: sum(xs) / len(xs)  # noqa: E731
    out: dict[str, float] = {}
    for key in ("proxy", "gold", "kl", "length", "repetition"):
        values = curves[key]
        out[f"{key}_start"] = mean(values[:window])
        out[f"{key}_end"] = mean(values[-window:])
    gold = moving_average(curves["gold"], window)
    kl = moving_median(curves["kl"], window)
    best = max(range(n), key=lambda i: gold[i])
    out.update(gold_best=gold[best], kl_at_gold_best=kl[best], step_at_gold_best=float(curves["step"][best]))
    return out


def at_kl(curves: dict[str, list[float]], target: float) -> dict[str, float]:
    """The run's smoothed gold, proxy, length and repetition at the first step whose smoothed KL per
    completion reaches ``target`` (the last step if it never does), and that step."""
    n = len(curves["step"])
    window = max(5, n // 10)
    kl = moving_median(curves["kl"], window)
    i = next((i for i, value in enumerate(kl) if value >= target), n - 1)
    out = {f"{key}_at_matched_kl": moving_average(curves[key], window)[i] for key in ("gold", "proxy", "length", "repetition")}
    out["step_at_matched_kl"] = float(curves["step"][i])
    return out


def _stats(values: list[float]) -> dict[str, float]:
    n = len(values)
    mean = sum(values) / n
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1)) if n > 1 else 0.0
    return {"mean": mean, "std": std, "n": n}


def analyse(comparison: dict[str, Any], *, task_name: str = "addition") -> dict[str, Any]:
    """Curves, per-run numbers, mean ± std over seeds per system and per-seed GRPO - PPO differences, from
    ``compare``'s summary (its runs' directories, held-out accuracy and exact final KL)."""
    systems: dict[str, Any] = {}
    for name in SYSTEMS:
        runs = []
        for measured in comparison["systems"][name]["runs"]:
            curves = run_curves(measured["run_dir"])
            numbers = run_summary(curves)
            for key in ("held_out", "kl_to_initial", "cpu_seconds", "seconds_per_step"):
                if key in measured:
                    numbers[key] = measured[key]
            runs.append({"seed": measured["seed"], "run_dir": measured["run_dir"], "curves": curves, **numbers})
        systems[name] = {"runs": runs}
    # Gold, length and repetition at one KL every run reaches: the comparison at equal drift from the start.
    matched_kl = min(r["kl_end"] for name in SYSTEMS for r in systems[name]["runs"])
    for name in SYSTEMS:
        runs = systems[name]["runs"]
        for r in runs:
            r.update(at_kl(r["curves"], matched_kl))
        keys = [k for k in runs[0] if isinstance(runs[0][k], float)] if runs else []
        systems[name]["stats"] = {k: _stats([r[k] for r in runs if not math.isnan(r[k])]) for k in keys}
    differences = {}
    for key, *_ in _ROWS:
        grpo = {r["seed"]: r.get(key) for r in systems["grpo"]["runs"]}
        paired = [grpo[r["seed"]] - r[key] for r in systems["ppo"]["runs"] if grpo.get(r["seed"]) is not None and key in r]
        if paired:
            differences[key] = difference_stats(paired)
    return {
        "task": task_name,
        "held_out_before": comparison.get("before"),
        "matched_kl": matched_kl,
        "matching": comparison["matching"],
        "config_differences": comparison["config_differences"],
        "systems": systems,
        "differences_grpo_minus_ppo": differences,
    }


def _smooth(values: Sequence[float], key: str, window: int) -> list[float]:
    return moving_median(values, window) if key == "kl" else moving_average(values, window)


def _mean_curve(runs: list[dict[str, Any]], key: str, window: int) -> list[float]:
    length = min(len(r["curves"][key]) for r in runs)
    curves = [_smooth(r["curves"][key][:length], key, window) for r in runs]
    return [sum(c[i] for c in curves) / len(curves) for i in range(length)]


def plot(summary: dict[str, Any], path: Path) -> Path | None:
    """The four panels of the figure (Gao et al.'s over-optimisation curves, and length and repetition over
    steps), mean over seeds, faint lines per seed; None without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    fig, axes = plt.subplots(2, 2, figsize=(11, 8))
    colors = {"grpo": "tab:blue", "ppo": "tab:orange"}
    length = min(len(r["curves"]["step"]) for name in SYSTEMS for r in summary["systems"][name]["runs"])
    window = max(5, length // 10)
    root = lambda xs: [math.sqrt(max(x, 0.0)) for x in xs]  # noqa: E731
    twin = axes[1, 1].twinx()  # the repetition rate, on its own scale
    for name in SYSTEMS:
        runs = summary["systems"][name]["runs"]
        color, label = colors[name], f"{name.upper()} (mean of {len(runs)} seeds)"
        mean = {k: _mean_curve(runs, k, window) for k in ("step", "proxy", "gold", "kl", "length", "repetition")}
        for r in runs:
            kl = root(moving_median(r["curves"]["kl"], window))
            axes[0, 0].plot(kl, moving_average(r["curves"]["proxy"], window), color=color, alpha=0.2, lw=0.8)
            axes[0, 1].plot(kl, moving_average(r["curves"]["gold"], window), color=color, alpha=0.2, lw=0.8)
        axes[0, 0].plot(root(mean["kl"]), mean["proxy"], color=color, label=label)
        axes[0, 1].plot(root(mean["kl"]), mean["gold"], color=color, label=label)
        axes[1, 0].plot(mean["step"], mean["proxy"], color=color, label=f"{name.upper()} proxy")
        axes[1, 0].plot(mean["step"], mean["gold"], color=color, ls="--", label=f"{name.upper()} gold")
        axes[1, 1].plot(mean["step"], mean["length"], color=color, label=f"{name.upper()} length")
        twin.plot(mean["step"], mean["repetition"], color=color, ls=":", label=f"{name.upper()} repetition")
    twin.set_ylabel(f"repeated {NGRAM}-gram rate (dotted)")
    axes[0, 0].set(xlabel="√KL per completion to the start policy (√nats)", ylabel="proxy reward (RM score)",
                   title="proxy vs KL")  # fmt: skip
    axes[0, 1].set(xlabel="√KL per completion to the start policy (√nats)", ylabel="gold reward (accuracy)",
                   title="gold vs KL")  # fmt: skip
    axes[1, 0].set(xlabel="step", ylabel="reward", title="proxy (solid) and gold (dashed) vs steps")
    axes[1, 1].set(xlabel="step", ylabel="mean length (characters, solid)", title="length and repetition")
    for ax in axes.flat:
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    match = summary["matching"]
    fig.suptitle(
        f"Optimising a learned proxy: GRPO vs PPO, {match['max_steps']} steps of "
        f"{match['completions_per_step']} completions (moving average over {window} steps)"
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _cell(stats: dict[str, float] | None, fmt: str) -> str:
    if not stats:
        return "–"
    return f"{stats['mean']:{fmt}} ± {stats['std']:{fmt}}"


def render_markdown(summary: dict[str, Any]) -> str:
    """The table (mean ± sample std over seeds, and the per-seed GRPO - PPO difference with its 95%
    t-interval) and the setting, as Markdown."""
    grpo, ppo = summary["systems"]["grpo"]["stats"], summary["systems"]["ppo"]["stats"]
    seeds = len(summary["systems"]["grpo"]["runs"])
    lines = [
        f"| {seeds} seeds, mean ± std | GRPO | PPO | GRPO − PPO (per seed, 95% CI) |",
        "|---|---|---|---|",
    ]
    start = {k: grpo.get(f"{k}_start") for k in ("proxy", "gold", "kl", "length", "repetition")}
    for key, label, fmt in _ROWS:
        diff = summary["differences_grpo_minus_ppo"].get(key)
        ci = "–" if not diff else f"{diff['mean']:+{fmt}} [{diff['ci_low']:+{fmt}}, {diff['ci_high']:+{fmt}}]"
        lines.append(f"| {label} | {_cell(grpo.get(key), fmt)} | {_cell(ppo.get(key), fmt)} | {ci} |")
    before = summary.get("held_out_before")
    lines += [
        "",
        "At the start (first steps, both systems from the same start policy; GRPO's runs): "
        + ", ".join(
            f"{name} {_cell(stats, '.3f')}" for name, stats in start.items() if stats is not None
        )
        + (f"; held-out greedy gold accuracy {before:.3f}." if isinstance(before, float) else "."),
        "",
        f"Matched KL: {summary['matched_kl']:.2f} nats per completion.",
    ]
    return "\n".join(lines) + "\n"


def write_outputs(summary: dict[str, Any], output_dir: str | os.PathLike) -> dict[str, Path]:
    """``reward_hacking.json``, ``reward_hacking.md`` and ``reward_hacking.png`` (with matplotlib)."""
    out = Path(output_dir)
    paths = {"json": out / "reward_hacking.json", "markdown": out / "reward_hacking.md"}
    paths["json"].write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    paths["markdown"].write_text(render_markdown(summary), encoding="utf-8")
    png = plot(summary, out / "reward_hacking.png")
    if png is not None:
        paths["png"] = png
    return paths
