"""Render the tables of ``docs/claims.md`` from the recorded runs in ``benchmarks/results/claims/``.

    python benchmarks/claims/render_claims.py            # rewrite the tables in docs/claims.md in place
    python benchmarks/claims/render_claims.py --print    # print them instead

Every table sits between ``<!-- table:NAME -->`` and ``<!-- /table:NAME -->`` in the page; the text around
them is written by hand from these numbers. Statistics: mean ± sample std over seeds; "95% CI" is the
t-interval of the mean; a difference A − B is taken per seed (same seed, same prompts order) and reported
as mean [95% t-interval] with its t statistic and the number of seeds n. A cell marks ``(n=K)`` when it holds
other than three seeds (fewer: unfinished; five: claims 1 and 7, which got two more).
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "benchmarks" / "results" / "claims"
PAGE = ROOT / "docs" / "claims.md"
SEEDS = (0, 1, 2, 3, 4)


def runs(experiment: str, condition: str, system: str) -> dict[int, dict[str, Any]]:
    """The recorded runs of one condition and system, by seed."""
    out = {}
    for seed in SEEDS:
        path = RESULTS / experiment / condition / f"{system}-seed{seed}.json"
        if path.is_file():
            out[seed] = json.loads(path.read_text())
    return out


def _t(n: int) -> float:
    from scipy import stats

    return float(stats.t.ppf(0.975, n - 1))


def stats(values: list[float]) -> dict[str, float]:
    n = len(values)
    mean = sum(values) / n if n else math.nan
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1)) if n > 1 else math.nan
    half = _t(n) * std / math.sqrt(n) if n > 1 else math.nan
    t = mean / (std / math.sqrt(n)) if n > 1 and std > 0 else math.nan
    return {"n": n, "mean": mean, "std": std, "low": mean - half, "high": mean + half, "t": t}


def values(rs: dict[int, dict[str, Any]], key: str) -> list[float]:
    return [float(r[key]) for r in rs.values() if r.get(key) is not None]


def fmt(rs: dict[int, dict[str, Any]], key: str, digits: int = 3) -> str:
    v = values(rs, key)
    if not v:
        return "not run"
    s = stats(v)
    text = f"{s['mean']:.{digits}f}" + (f" ± {s['std']:.{digits}f}" if s["n"] > 1 else "")
    return text + ("" if s["n"] == 3 else f" (n={s['n']})")


def diff(a: dict[int, dict[str, Any]], b: dict[int, dict[str, Any]], key: str = "held_out") -> str:
    """Per-seed a − b: mean [95% CI], t, n."""
    paired = [float(a[s][key]) - float(b[s][key]) for s in a if s in b and a[s].get(key) is not None]
    if not paired:
        return "n/a"
    s = stats(paired)
    if s["n"] < 2:
        return f"{s['mean']:+.3f} (n=1)"
    if s["std"] == 0:
        return f"{s['mean']:+.3f} on every seed, n={s['n']}"
    return f"{s['mean']:+.3f} [{s['low']:+.3f}, {s['high']:+.3f}], t = {s['t']:.1f}, n={s['n']}"


def diff_stats(a: dict[int, dict[str, Any]], b: dict[int, dict[str, Any]], key: str = "held_out") -> dict:
    paired = [float(a[s][key]) - float(b[s][key]) for s in a if s in b and a[s].get(key) is not None]
    return stats(paired) if paired else {"n": 0}


def state_mb(r: dict[str, Any]) -> float:
    return (r["parameter_bytes"] + r["gradient_bytes"] + r["optimizer_bytes"]) / 2**20


def start_accuracy(task: str) -> str:
    path = RESULTS / "start" / f"{task}.json"
    return f"{json.loads(path.read_text())['held_out']:.3f}" if path.is_file() else "not measured"


# ---------------------------------------------------------------------------------------------------------
# One table per claim
# ---------------------------------------------------------------------------------------------------------


def table_budget() -> str:
    lines = [
        "| budget | system | held-out accuracy | steps | generated tokens (k) | CPU s | zero-advantage groups | vs PPO: held-out difference [95% CI] |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for budget, label in (("tokens", "96k tokens"), ("cpu", "15 CPU s")):
        ppo = runs("budget", budget, "ppo")
        for name, cond, system in (
            ("GRPO, default (B 8 × G 8)", budget, "grpo"),
            ("GRPO, G 4 + dynamic sampling (B 16 × G 4)", f"{budget}-grpo_g4_dynamic", "grpo"),
            ("PPO (64 prompts × 1)", budget, "ppo"),
        ):
            rs = runs("budget", cond, system)
            for r in rs.values():
                r["kilotokens"] = r["generated_tokens"] / 1000
            lines.append(
                f"| {label} | {name} | {fmt(rs, 'held_out')} | {fmt(rs, 'steps', 0)} | {fmt(rs, 'kilotokens', 1)} | "
                f"{fmt(rs, 'cpu_seconds', 1)} | {fmt(rs, 'zero_std_group_fraction', 2) if system == 'grpo' else 'n/a'} | "
                f"{diff(rs, ppo) if system == 'grpo' else ''} |"
            )
    return "\n".join(lines)


def table_memory_demo() -> str:
    grpo, ppo = runs("budget", "tokens", "grpo"), runs("budget", "tokens", "ppo")
    if not grpo or not ppo:
        return "(not run)"
    for rs in (grpo, ppo):
        for r in rs.values():
            r["state_mb"] = state_mb(r)
            r["parameters_m"] = r["parameters"] / 1e6
    lines = ["| | GRPO | PPO | GRPO / PPO |", "|---|---|---|---|"]
    for key, label, digits in (
        ("parameters_m", "parameters held (M; policy + reference [+ value model])", 3),
        ("state_mb", "model state: parameters + gradients + AdamW moments (MiB)", 2),
        ("peak_rss_above_baseline_mb", "peak RSS above the post-import baseline (MiB)", 1),
        ("peak_rss_mb", "peak RSS (MiB)", 0),
    ):
        g, p = stats(values(grpo, key)), stats(values(ppo, key))
        lines.append(f"| {label} | {fmt(grpo, key, digits)} | {fmt(ppo, key, digits)} | {g['mean'] / p['mean']:.2f} |")
    return "\n".join(lines)


def table_memory_scale() -> str:
    path = RESULTS / "memory" / "scale.json"
    if not path.is_file():
        return "(not run)"
    data = json.loads(path.read_text())
    lines = [
        "| hidden | parameters held GRPO / PPO (M) | model state GRPO / PPO (MiB) | ratio | peak RSS above baseline GRPO / PPO (MiB) | ratio | peak RSS GRPO / PPO (MiB) | ratio |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in data["rows"]:
        g, p = row["runs"]["grpo"], row["runs"]["ppo"]
        lines.append(
            f"| {row['hidden_size']} | {g['parameters'] / 1e6:.2f} / {p['parameters'] / 1e6:.2f} | "
            f"{state_mb(g):.0f} / {state_mb(p):.0f} | {state_mb(g) / state_mb(p):.2f} | "
            f"{g['peak_rss_above_baseline_mb']:.0f} / {p['peak_rss_above_baseline_mb']:.0f} | "
            f"{g['peak_rss_above_baseline_mb'] / p['peak_rss_above_baseline_mb']:.2f} | "
            f"{g['peak_rss_mb']:.0f} / {p['peak_rss_mb']:.0f} | {g['peak_rss_mb'] / p['peak_rss_mb']:.2f} |"
        )
    return "\n".join(lines)


def table_group_size() -> str:
    base = runs("group_size", "K8", "grpo")
    lines = [
        "| K (prompts × K = 64) | held-out accuracy | training reward, last 5 steps | zero-advantage groups | CPU s | vs K = 8: held-out difference [95% CI] |",
        "|---|---|---|---|---|---|",
    ]
    for k in (2, 4, 8, 16):
        rs = runs("group_size", f"K{k}", "grpo")
        lines.append(
            f"| {k} ({64 // k} × {k}) | {fmt(rs, 'held_out')} | {fmt(rs, 'final_reward')} | "
            f"{fmt(rs, 'zero_std_group_fraction', 2)} | {fmt(rs, 'cpu_seconds', 1)} | {diff(rs, base) if k != 8 else ''} |"
        )
    return "\n".join(lines)


def _probes(condition: str) -> dict[int, dict[str, Any]]:
    out = {}
    for seed in SEEDS:
        path = RESULTS / "temperature" / condition / f"probe-seed{seed}.json"
        if path.is_file():
            out[seed] = json.loads(path.read_text())
    return out


TEMPERATURES = (
    ("fixed-1.0", "fixed 1.0"),
    ("fixed-0.85", "fixed 0.85 (the mean of 0.7 → 1.0)"),
    ("inclusive-0.7-1.0", "0.7 → 1.0, i/(G−1) (grpokit's)"),
    ("founding-exclusive-0.7-1.0", "0.7 + 0.3·i/G (founding code's, ends at 0.9625)"),
)


def table_temperature() -> str:
    base, mid = runs("temperature", "fixed-1.0", "grpo"), runs("temperature", "fixed-0.85", "grpo")
    lines = [
        "| temperatures across the group (G = 8) | held-out accuracy | vs fixed 1.0 [95% CI] | vs fixed 0.85 [95% CI] | zero-advantage groups in training | probe: distinct completions of 8 | probe: within-group reward std | probe: zero-std groups | probe: sampled accuracy |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for cond, label in TEMPERATURES:
        rs, probes = runs("temperature", cond, "grpo"), _probes(cond)
        lines.append(
            f"| {label} | {fmt(rs, 'held_out')} | {diff(rs, base) if cond != 'fixed-1.0' else ''} | "
            f"{diff(rs, mid) if not cond.startswith('fixed') else ''} | "
            f"{fmt(rs, 'zero_std_group_fraction', 2)} | {fmt(probes, 'distinct_completions_per_group', 2)} | "
            f"{fmt(probes, 'reward_std_within_group_mean')} | {fmt(probes, 'zero_std_group_fraction', 2)} | "
            f"{fmt(probes, 'sampled_accuracy')} |"
        )
    lines += ["", "The starting model, probed the same way (one draw, no training):", "",
              "| temperatures | distinct completions of 8 | within-group reward std | zero-std groups | sampled accuracy |",
              "|---|---|---|---|---|"]  # fmt: skip
    for cond, label in TEMPERATURES:
        path = RESULTS / "temperature" / cond / "probe-start.json"
        if path.is_file():
            p = json.loads(path.read_text())
            lines.append(
                f"| {label} | {p['distinct_completions_per_group']:.2f} | {p['reward_std_within_group_mean']:.3f} | "
                f"{p['zero_std_group_fraction']:.2f} | {p['sampled_accuracy']:.3f} |"
            )
    return "\n".join(lines)


def table_temperature_sampling() -> str:
    """Sampling-only: the same models (start; trained at fixed 1.0) under every temperature setting."""
    folder = RESULTS / "temperature" / "sampling"
    files = sorted(folder.glob("*.json")) if folder.is_dir() else []
    if not files:
        return "(not run)"
    probes = {f.stem: json.loads(f.read_text()) for f in files}
    trained = {int(k.removeprefix("trained-seed")): v for k, v in probes.items() if k.startswith("trained-seed")}
    lines = [
        "| sampling (G = 8) | start: distinct of 8 | start: within-group std | start: zero-std groups | "
        f"trained (n={len(trained)}): distinct of 8 | trained: within-group std | trained: zero-std groups | trained: sampled accuracy |",
        "|---|---|---|---|---|---|---|---|",
    ]
    start = probes.get("start", {}).get("settings", {})
    for label in next(iter(probes.values()))["settings"]:
        st = start.get(label, {})
        by_seed = {seed: p["settings"][label] for seed, p in trained.items()}
        cells = [f"{st[k]:.2f}" if k in st else "n/a" for k in
                 ("distinct_completions_per_group", "reward_std_within_group_mean", "zero_std_group_fraction")]  # fmt: skip
        lines.append(
            f"| {label.replace('->', '→')} | " + " | ".join(cells) + " | "
            f"{fmt(by_seed, 'distinct_completions_per_group', 2)} | {fmt(by_seed, 'reward_std_within_group_mean')} | "
            f"{fmt(by_seed, 'zero_std_group_fraction', 2)} | {fmt(by_seed, 'sampled_accuracy')} |"
        )
    return "\n".join(lines)


def table_beta() -> str:
    lines = [
        "| β | GRPO held-out | PPO held-out | GRPO − PPO [95% CI] | GRPO held-out KL to start | PPO held-out KL to start |",
        "|---|---|---|---|---|---|",
    ]
    for beta in ("0", "0.001", "0.01", "0.04", "0.1"):
        g, p = runs("beta", beta, "grpo"), runs("beta", beta, "ppo")
        lines.append(
            f"| {beta} | {fmt(g, 'held_out')} | {fmt(p, 'held_out')} | {diff(g, p)} | "
            f"{fmt(g, 'kl_to_initial', 2)} | {fmt(p, 'kl_to_initial', 2)} |"
        )
    betas = ("0", "0.001", "0.01", "0.04", "0.1")
    lines.append(
        f"| spread: best − worst mean over β | {spread_over('beta', betas, 'grpo')} | "
        f"{spread_over('beta', betas, 'ppo')} | | | |"
    )
    return "\n".join(lines)


def spread_over(experiment: str, conditions: tuple[str, ...], system: str) -> str:
    """Range of the per-condition mean held-out accuracy (max − min): a system's sensitivity."""
    means = [stats(values(runs(experiment, c, system), "held_out"))["mean"] for c in conditions]
    means = [m for m in means if not math.isnan(m)]
    return f"{max(means) - min(means):.3f}" if len(means) > 1 else "n/a"


NOISES = (
    ("clean", "clean (exact match)"),
    ("flip-0.1", "label flips, p = 0.1"),
    ("flip-0.3", "label flips, p = 0.3"),
    ("gaussian-1", "Gaussian, σ = 1.0"),
    ("prompt_offset-1", "per-prompt offset, σ = 1.0"),
)


def retained(noisy: dict[int, dict[str, Any]], clean: dict[int, dict[str, Any]]) -> str:
    """Share of the clean run's gain over the starting model that the noisy run keeps (means over seeds)."""
    path = RESULTS / "start" / "addition.json"
    if not path.is_file() or not values(noisy, "held_out") or not values(clean, "held_out"):
        return "n/a"
    start = json.loads(path.read_text())["held_out"]
    gain = stats(values(clean, "held_out"))["mean"] - start
    return f"{(stats(values(noisy, 'held_out'))['mean'] - start) / gain:.0%}" if gain > 0 else "n/a"


def table_noise() -> str:
    lines = [
        "| training reward | GRPO held-out | GRPO change vs clean [95% CI] | GRPO gain kept | PPO held-out | PPO change vs clean [95% CI] | PPO gain kept | GRPO − PPO [95% CI] |",
        "|---|---|---|---|---|---|---|---|",
    ]
    clean = {s: runs("beta", "0.04", s) for s in ("grpo", "ppo")}
    for cond, label in NOISES:
        rs = clean if cond == "clean" else {s: runs("noise", cond, s) for s in ("grpo", "ppo")}
        noisy = cond != "clean"
        lines.append(
            f"| {label} | {fmt(rs['grpo'], 'held_out')} | {diff(rs['grpo'], clean['grpo']) if noisy else ''} | "
            f"{retained(rs['grpo'], clean['grpo']) if noisy else '100%'} | "
            f"{fmt(rs['ppo'], 'held_out')} | {diff(rs['ppo'], clean['ppo']) if noisy else ''} | "
            f"{retained(rs['ppo'], clean['ppo']) if noisy else '100%'} | {diff(rs['grpo'], rs['ppo'])} |"
        )
    return "\n".join(lines)


def table_process() -> str:
    outcome, process = runs("process", "outcome", "grpo"), runs("process", "process", "grpo")
    lines = [
        "| supervision (GRPO, 200 steps × 64 completions) | held-out accuracy (final answer) | training reward, last 5 steps (process: mean step score) | zero-advantage groups | CPU s |",
        "|---|---|---|---|---|",
    ]
    for rs, label in ((outcome, "outcome: one reward at the end"), (process, "process: a reward per step")):
        lines.append(
            f"| {label} | {fmt(rs, 'held_out')} | {fmt(rs, 'final_reward')} | "
            f"{fmt(rs, 'zero_std_group_fraction', 2)} | {fmt(rs, 'cpu_seconds', 1)} |"
        )
    lines.append(f"| process − outcome | {diff(process, outcome)} | | | |")
    return "\n".join(lines)


def table_process_steps() -> str:
    """What the trained chain models write (``claims_probe.chain_steps``), greedy, on the held-out problems."""
    start_path = RESULTS / "process" / "steps-start.json"
    if not start_path.is_file():
        return "(not run)"
    start = json.loads(start_path.read_text())
    keys = (("accuracy", "final answer right"), ("accuracy_teacher_right", "… where the teacher is right"),
            ("accuracy_teacher_wrong", "… where the teacher is wrong"), ("step1_right", "step 1 right (a + b)"),
            ("step2_valid", "step 2 valid (written step 1 + c)"), ("teacher_copy", "completion = the teacher's"))  # fmt: skip
    probes = {}
    for condition in ("outcome", "process"):
        probes[condition] = {}
        for seed in SEEDS:
            path = RESULTS / "process" / condition / f"steps-seed{seed}.json"
            if path.is_file():
                probes[condition][seed] = json.loads(path.read_text())
    lines = ["| held-out, greedy | start | after outcome supervision | after process supervision |", "|---|---|---|---|"]
    for key, label in keys:
        lines.append(f"| {label} | {start[key]:.3f} | {fmt(probes['outcome'], key)} | {fmt(probes['process'], key)} |")
    return "\n".join(lines)


def table_lr_sweep() -> str:
    """``grpokit compare --lr-sweep`` at 200 steps (its summary copied to ``lr_sweep/summary.json``)."""
    path = RESULTS / "lr_sweep" / "summary.json"
    if not path.is_file():
        return "(not run)"
    data = json.loads(path.read_text())["rates"]
    by_rate = {rate: {n: {r["seed"]: r for r in data[rate][n]} for n in ("grpo", "ppo")} for rate in data}
    lines = [
        "| learning rate | GRPO held-out | PPO held-out | GRPO − PPO [95% CI] | GRPO held-out KL to start | PPO held-out KL to start |",
        "|---|---|---|---|---|---|",
    ]
    for rate in sorted(by_rate, key=float):
        g, p = by_rate[rate]["grpo"], by_rate[rate]["ppo"]
        lines.append(
            f"| {float(rate):g} | {fmt(g, 'held_out')} | {fmt(p, 'held_out')} | {diff(g, p)} | "
            f"{fmt(g, 'kl_to_initial', 2)} | {fmt(p, 'kl_to_initial', 2)} |"
        )
    best = {n: max(by_rate, key=lambda r, n=n: stats(values(by_rate[r][n], "held_out"))["mean"]) for n in ("grpo", "ppo")}
    g, p = by_rate[best["grpo"]]["grpo"], by_rate[best["ppo"]]["ppo"]
    lines.append(
        f"| each at its best (GRPO {float(best['grpo']):g}, PPO {float(best['ppo']):g}) | {fmt(g, 'held_out')} | "
        f"{fmt(p, 'held_out')} | {diff(g, p)} | | |"
    )
    return "\n".join(lines)


TABLES = {
    "budget": table_budget,
    "lr_sweep": table_lr_sweep,
    "memory_demo": table_memory_demo,
    "memory_scale": table_memory_scale,
    "group_size": table_group_size,
    "temperature": table_temperature,
    "temperature_sampling": table_temperature_sampling,
    "beta": table_beta,
    "noise": table_noise,
    "process": table_process,
    "process_steps": table_process_steps,
}


def render(page: str) -> str:
    for name, make in TABLES.items():
        pattern = re.compile(rf"(<!-- table:{name} -->\n)(?:.*?\n)?(<!-- /table:{name} -->)", re.S)
        if not pattern.search(page):
            raise ValueError(f"{PAGE}: no <!-- table:{name} --> ... <!-- /table:{name} --> block")
        table = make()
        page = pattern.sub(lambda m, table=table: m.group(1) + table + "\n" + m.group(2), page)
    for task in ("addition", "chain"):
        page = re.sub(rf"(<!-- start:{task} -->).*?(<!-- /start:{task} -->)",
                      lambda m, task=task: m.group(1) + start_accuracy(task) + m.group(2), page)  # fmt: skip
    return page


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--print", action="store_true", help="print the tables instead of rewriting the page")
    args = parser.parse_args(argv)
    if args.print:
        for name, make in TABLES.items():
            print(f"## {name}\n\n{make()}\n")
        return 0
    PAGE.write_text(render(PAGE.read_text(encoding="utf-8")), encoding="utf-8")
    print(f"rewrote the tables of {PAGE}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
