"""A short learning-rate sweep per system around ``grpokit compare`` (``--lr-sweep LR [LR ...]``).

GRPO and PPO do not share a workable range of learning rates (on the built-in task GRPO collapses at rates
where PPO only slides), so comparing both at one rate can favour either. The sweep runs one full
comparison per rate (both systems, every seed, ``optim.learning_rate`` set for both), picks each system's
best rate by its mean held-out quality (the last-5-steps training reward without held-out rows), and
reports the two at their own best rates: per seed, GRPO at its best rate minus PPO at its, with a 95%
t-interval. Choosing the best of several rates on the same seeds that score it flatters both systems alike
(a winner's curse); a held-out choice would need more seeds.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from grpokit.apps.compare_report import difference_stats

__all__ = ["best_rates", "render_sweep", "run_lr_sweep", "sweep_quality_key"]


def sweep_quality_key(summary: dict[str, Any]) -> str:
    """What ranks the rates: held-out quality when it was measured, else the final training reward."""
    for system in summary["systems"].values():
        if "held_out" in system["stats"]:
            return "held_out"
    return "final_reward"


def best_rates(summaries: dict[float, dict[str, Any]]) -> dict[str, float]:
    """Each system's learning rate with the highest mean quality (the lower rate on a tie)."""
    if not summaries:
        raise ValueError("no comparisons to choose from: give at least one learning rate")
    key = sweep_quality_key(next(iter(summaries.values())))
    best: dict[str, float] = {}
    for system in ("grpo", "ppo"):
        scored = [
            (summary["systems"][system]["stats"][key]["mean"], -rate, rate)
            for rate, summary in summaries.items()
            if key in summary["systems"][system]["stats"]
        ]
        if scored:
            best[system] = max(scored)[2]
    return best


def _per_seed(summary: dict[str, Any], system: str, key: str) -> dict[int, float]:
    return {r["seed"]: float(r[key]) for r in summary["systems"][system]["runs"] if r.get(key) is not None}


def render_sweep(summaries: dict[float, dict[str, Any]]) -> str:
    """``lr_sweep.md``: quality per rate and system, each system's best rate, and best against best."""
    key = sweep_quality_key(next(iter(summaries.values())))
    label = "held-out quality" if key == "held_out" else "training reward, last 5 steps"
    lines = [
        "# Learning-rate sweep: GRPO vs PPO",
        "",
        f"{label.capitalize()} per learning rate (mean ± sample std over seeds); each rate is one full "
        "comparison in `lr<RATE>/`.",
        "",
        "| learning rate | GRPO | PPO | GRPO − PPO [95% CI] |",
        "|---|---|---|---|",
    ]

    def cell(summary: dict[str, Any], system: str) -> str:
        s = summary["systems"][system]["stats"].get(key)
        return "n/a" if s is None else f"{s['mean']:.3f} ± {s['std']:.3f}"

    def difference(a: dict[int, float], b: dict[int, float]) -> str:
        paired = [a[seed] - b[seed] for seed in a if seed in b]
        if not paired:
            return "n/a"
        d = difference_stats(paired)
        if math.isnan(d["ci_low"]):
            return f"{d['mean']:+.3f} (one seed)"
        return f"{d['mean']:+.3f} [{d['ci_low']:+.3f}, {d['ci_high']:+.3f}]"

    for rate in sorted(summaries):
        summary = summaries[rate]
        lines.append(
            f"| {rate:g} | {cell(summary, 'grpo')} | {cell(summary, 'ppo')} | "
            f"{difference(_per_seed(summary, 'grpo', key), _per_seed(summary, 'ppo', key))} |"
        )
    best = best_rates(summaries)
    if len(best) == 2:
        grpo = _per_seed(summaries[best["grpo"]], "grpo", key)
        ppo = _per_seed(summaries[best["ppo"]], "ppo", key)
        lines += [
            "",
            f"Best rate: GRPO {best['grpo']:g}, PPO {best['ppo']:g}. Each at its best rate, GRPO − PPO per "
            f"seed: {difference(grpo, ppo)} (the best of {len(summaries)} rates chosen on the same seeds "
            "flatters both).",
        ]
    return "\n".join(lines) + "\n"


def run_lr_sweep(
    build: Callable[[dict[str, Any]], tuple[Any, Any]],
    learning_rates: Sequence[float],
    run: Callable[..., dict[str, Any]],
    *,
    seeds: Sequence[int],
    output_dir: str | os.PathLike,
    eval_data: str | None = None,
    log: Callable[[str], None] = print,
) -> dict[float, dict[str, Any]]:
    """One comparison per learning rate, then ``lr_sweep.md`` in ``output_dir``.

    Args:
        build: ``overrides -> (grpo_config, ppo_config)``, called with ``{"learning_rate": rate}`` added.
        learning_rates: the rates, each > 0, no duplicates.
        run: :func:`grpokit.apps.compare.run_comparison` (or a stand-in with its signature).
    Returns:
        ``{rate: summary}``.
    Raises:
        ValueError: no rates, a non-positive or duplicate rate, or an output directory with a sweep in it.
    """
    rates = [float(r) for r in learning_rates]
    if not rates:
        raise ValueError("--lr-sweep needs at least one learning rate")
    if any(not r > 0 for r in rates) or len(set(rates)) != len(rates):
        raise ValueError(f"--lr-sweep: learning rates must be > 0 and distinct, got {rates}")
    out = Path(output_dir)
    if (out / "lr_sweep.md").exists():
        raise ValueError(f"output directory {str(out)!r} already holds a learning-rate sweep; choose another")
    summaries: dict[float, dict[str, Any]] = {}
    for rate in rates:
        grpo, ppo = build({"learning_rate": rate})
        log(f"compare: learning rate {rate:g}")
        summaries[rate] = run(grpo, ppo, seeds=seeds, output_dir=out / f"lr{rate:g}", eval_data=eval_data, log=log)
    out.mkdir(parents=True, exist_ok=True)
    (out / "lr_sweep.md").write_text(render_sweep(summaries), encoding="utf-8")
    log(f"compare: wrote {out / 'lr_sweep.md'}")
    return summaries
