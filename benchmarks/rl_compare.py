"""GRPO against PPO on classic control, and GRPO's groupings on a multi-task env: measured, not assumed.

    OMP_NUM_THREADS=1 python benchmarks/rl_compare.py                       # everything, 3 seeds
    OMP_NUM_THREADS=1 python benchmarks/rl_compare.py --only cue_tasks --seeds 0
    OMP_NUM_THREADS=1 python benchmarks/rl_compare.py --quick               # smoke test, seconds

Writes ``<out>.json`` (one record per run, with the machine load before and after it) and
``<out>.md`` (the tables of docs/rl.md). Every run trains with one torch thread for a fixed budget
of environment steps, evaluating the greedy policy every ``eval_steps`` steps on fixed start
states; "to threshold" is the first evaluation whose mean return reaches the env's threshold, and
its wall time includes the evaluations run until then (they are part of getting the answer). The
final return is a separate 100-episode evaluation after the budget, greedy and sampled.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path
from typing import Any

import torch

from grpokit.rl import RLConfig
from grpokit.trainers.rl import RLTrainer

COMMON = {"logging": {"quiet": True, "report_to": [], "report": False}}

# name -> (environment section, threshold, budget in env steps, evaluation section, per-algorithm overrides)
ENVS: dict[str, dict[str, Any]] = {
    "cartpole": {
        "environment": {"env": "CartPole-v1"},
        "threshold": 475.0,
        "budget": 400_000,
        "evaluation": {"eval_steps": 2, "eval_episodes": 100},
    },
    "pendulum": {
        # Rewards scaled by 0.1 for both: it keeps PPO's value targets near unit scale; GRPO's
        # "grpo" estimator is invariant to the scale.
        "environment": {"env": "Pendulum-v1", "reward_scale": 0.1},
        "threshold": -200.0,
        "budget": 800_000,
        "evaluation": {"eval_steps": 5, "eval_episodes": 20},
    },
    "cue_tasks": {
        # The four tasks as explicit variants: training still draws one uniformly per start state, and
        # evaluation cycles through them, so its mean return is 8 * 3.5 = 28 (the bonuses) plus the
        # mean number of right actions: 30 for a random policy, 36 for a perfect one.
        "environment": {"env": "grpokit/CueTasks-v0", "tasks": [{"task": k} for k in range(4)]},
        "threshold": 35.0,
        "budget": 40_000,
        "evaluation": {"eval_steps": 1, "eval_episodes": 40},
    },
}

GROUPINGS = {
    "same_start": {"grouping": "same_start"},
    "task": {"grouping": "task"},
    # Cluster on the task part of the observation (the first 4 columns: one-hot task).
    "similarity": {
        "grouping": "similarity",
        "grouping_kwargs": {"feature_indices": [0, 1, 2, 3], "num_clusters": 4},
    },
    "batch": {"grouping": "batch"},
}


def experiments(only: set[str]) -> list[dict[str, Any]]:
    """(suite, env, label, algorithm section) for every run of the benchmark, seeds excluded."""
    runs = []
    for env in ("cartpole", "pendulum", "cue_tasks"):
        if "main" in only or env in only:
            runs.append({"suite": "main", "env": env, "label": "GRPO (same_start)", "algorithm": {}})
            runs.append({"suite": "main", "env": env, "label": "PPO", "algorithm": {"algorithm": "ppo"}})
    if "groupings" in only:
        for mode in ("returns_to_go", "outcome"):
            for name, options in GROUPINGS.items():
                runs.append(
                    {
                        "suite": "groupings",
                        "env": "cue_tasks",
                        "label": f"{name} / {mode}",
                        "algorithm": {**options, "advantage_mode": mode},
                    }
                )
    return runs


def run_one(spec: dict[str, Any], seed: int, quick: bool) -> dict[str, Any]:
    env = ENVS[spec["env"]]
    budget = env["budget"] if not quick else 3_000
    data = {
        **COMMON,
        "seed": seed,
        "max_steps": 100_000,
        "max_env_steps": budget,
        "environment": env["environment"],
        "algorithm": spec["algorithm"],
        "evaluation": {**env["evaluation"], "target_return": None, "stop_when_solved": False},
    }
    if quick:
        data["evaluation"] = {**data["evaluation"], "eval_episodes": 4}
    config = RLConfig.model_validate(data)
    load_before = os.getloadavg()
    trainer = RLTrainer(config, run_dir=False)
    episodes = 4 if quick else 100
    # Evaluation draws from its own generator, so measuring the initial policy leaves the run unchanged.
    initial = trainer.evaluate(episodes, deterministic=True)
    result = trainer.train()
    # First evaluation that reached the threshold, read from the logged history.
    crossing = next(
        (row for row in result.history if row.get("eval/return_mean", -float("inf")) >= env["threshold"]),
        None,
    )
    t0 = time.perf_counter()
    greedy = trainer.evaluate(episodes, deterministic=True)
    sampled = trainer.evaluate(episodes, deterministic=False)
    return {
        **{k: spec[k] for k in ("suite", "env", "label")},
        "seed": seed,
        "threshold": env["threshold"],
        "budget_env_steps": budget,
        "env_steps": result.env_steps,
        "steps": result.steps,
        "wall_s": result.wall_time,
        "cpu_s": result.cpu_time,
        "eval_s": result.eval_time,
        "solved": crossing is not None,
        "env_steps_to_threshold": crossing["time/env_steps"] if crossing else None,
        "wall_s_to_threshold": crossing["time/wall_s"] if crossing else None,
        "cpu_s_to_threshold": crossing["time/cpu_s"] if crossing else None,
        "eval_s_to_threshold": crossing["time/eval_s"] if crossing else None,
        "initial_return_greedy": float(initial.mean()),
        "final_return_greedy": float(greedy.mean()),
        "final_return_greedy_std": float(greedy.std()),
        "final_return_sampled": float(sampled.mean()),
        "final_eval_s": time.perf_counter() - t0,
        "loadavg_before": load_before[0],
        "loadavg_after": os.getloadavg()[0],
        "config": config.model_dump(mode="json"),
    }


def _mean_std(values: list[float], fmt: str) -> str:
    if not values:
        return "–"
    if len(values) == 1:
        return format(values[0], fmt)
    return f"{format(statistics.mean(values), fmt)} ± {format(statistics.stdev(values), fmt)}"


def markdown(records: list[dict[str, Any]]) -> str:
    lines = []
    for suite, title in (("main", "GRPO vs PPO"), ("groupings", "GRPO groupings on grpokit/CueTasks-v0")):
        rows = [r for r in records if r["suite"] == suite]
        if not rows:
            continue
        lines += [
            f"### {title}",
            "",
            "| env | method | seeds solved | env steps to threshold | wall s to threshold | CPU s to threshold "
            "| return before | final return, greedy | final return, sampled | wall s / CPU s, whole budget | load avg |",
            "|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        keys = list(dict.fromkeys((r["env"], r["label"]) for r in rows))
        for env, label in keys:
            group = [r for r in rows if (r["env"], r["label"]) == (env, label)]
            solved = [r for r in group if r["solved"]]
            threshold = group[0]["threshold"]
            budget = group[0]["budget_env_steps"]
            lines.append(
                f"| {env} (≥ {threshold:g}, {budget:,} steps) | {label} | {len(solved)}/{len(group)} "
                f"| {_mean_std([r['env_steps_to_threshold'] for r in solved], ',.0f')} "
                f"| {_mean_std([r['wall_s_to_threshold'] for r in solved], '.1f')} "
                f"| {_mean_std([r['cpu_s_to_threshold'] for r in solved], '.1f')} "
                f"| {_mean_std([r['initial_return_greedy'] for r in group], '.1f')} "
                f"| {_mean_std([r['final_return_greedy'] for r in group], '.1f')} "
                f"| {_mean_std([r['final_return_sampled'] for r in group], '.1f')} "
                f"| {_mean_std([r['wall_s'] for r in group], '.0f')} / {_mean_std([r['cpu_s'] for r in group], '.0f')} "
                f"| {min(r['loadavg_before'] for r in group):.1f}–{max(r['loadavg_after'] for r in group):.1f} |"
            )
        lines.append("")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", default="benchmarks/rl_compare", help="output prefix for .json and .md")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument(
        "--only",
        default="main,groupings",
        help="comma list of: main (all three envs), cartpole, pendulum, cue_tasks, groupings",
    )
    parser.add_argument("--quick", action="store_true", help="tiny budgets: checks that the script runs")
    parser.add_argument(
        "--append",
        action="store_true",
        help="merge into an existing <out>.json: its runs of the same env, method and seed are replaced",
    )
    args = parser.parse_args()
    torch.set_num_threads(1)
    only = set(args.only.split(","))
    records = []
    for spec in experiments(only):
        for seed in args.seeds:
            record = run_one(spec, seed, args.quick)
            records.append(record)
            print(
                f"{record['env']:>10} {record['label']:<28} seed {seed}: "
                f"to threshold {record['env_steps_to_threshold']} steps / {record['wall_s_to_threshold']} s, "
                f"final {record['final_return_greedy']:.1f} (sampled {record['final_return_sampled']:.1f}), "
                f"load {record['loadavg_before']:.1f}->{record['loadavg_after']:.1f}",
                flush=True,
            )
    meta = {
        "command": "OMP_NUM_THREADS=1 python benchmarks/rl_compare.py " + " ".join(os.sys.argv[1:]),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    commands = [meta["command"]]
    if args.append and out.with_suffix(".json").is_file():
        previous = json.loads(out.with_suffix(".json").read_text())
        key = lambda r: (r["suite"], r["env"], r["label"], r["seed"])  # noqa: E731
        replaced = {key(r) for r in records}
        records = [r for r in previous["runs"] if key(r) not in replaced] + records
        commands = previous["meta"].get("commands", [previous["meta"].get("command")]) + commands
    meta["commands"] = commands
    out.with_suffix(".json").write_text(json.dumps({"meta": meta, "runs": records}, indent=1) + "\n")
    header = "Commands, in order:\n\n" + "".join(f"    {c}\n" for c in commands) + "\n"
    out.with_suffix(".md").write_text(header + markdown(records))
    print(markdown(records))


if __name__ == "__main__":
    main()
