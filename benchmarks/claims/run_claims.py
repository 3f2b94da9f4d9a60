"""Run the experiments behind ``docs/claims.md`` and record every run's raw measurements.

    OMP_NUM_THREADS=1 GRPOKIT_CACHE=/tmp/claims-cache nice -n 10 \\
        python benchmarks/claims/run_claims.py [EXPERIMENT ...] [--seeds 0 1 2] [--runs-dir DIR]

Experiments (all on a built-in task and the demo's warmed-up tiny model, each run a fresh subprocess
measured by ``grpokit.apps.compare.measure_run``, the same measurement ``grpokit compare`` makes):

``budget``       claim 1: GRPO (default, and G=4 with dynamic sampling) vs PPO at equal generated tokens
                 and at equal CPU seconds.
``memory``       claim 2: GRPO and PPO memory at widths where the weights dominate (one seed: memory is
                 deterministic up to allocator noise); the demo size comes from ``budget``.
``group_size``   claim 3: GRPO with K in {2, 4, 8, 16} at 64 completions per step (equal samples).
``temperature``  claim 4: fixed temperatures 1.0 and 0.85 vs grpokit's schedule [0.7, 1.0] vs the founding
                 code's, plus a diversity probe of every trained model (distinct completions, within-group
                 reward std, zero-std groups, sampled accuracy); ``claims_probe.probe_sampling`` compares the
                 settings on the same models.
``beta``         claim 5: GRPO and PPO at beta in {0, 0.001, 0.01, 0.04, 0.1}.
``noise``        claim 6: GRPO and PPO trained on a corrupted reward (label flips, Gaussian noise, a
                 per-prompt offset; ``noisy_rewards.py``); held-out accuracy uses the true checker.
``probes``       after the runs: claims_probe's sampling-only temperature probe and the chain-step probe.
``lr_sweep``     claim 1: ``grpokit compare --lr-sweep 1e-4 3e-4 1e-3 --budget steps=200``.
``process``      claim 7: process vs outcome rewards on the ``chain`` task (two chained additions whose
                 intermediate sum is written and checked), GRPO, same budget; ``claims_probe.probe_chain``
                 reads what the trained models write, step by step.

Each run's result goes to ``benchmarks/results/claims/<experiment>/<condition>/<system>-seed<S>.json``
(with the overrides, the machine load before and after, and the date); a run whose file exists is skipped,
so an interrupted invocation resumes. ``render_claims.py`` turns the files into the tables of the page.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import shutil
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "benchmarks" / "results" / "claims"
NOISE = str(Path(__file__).resolve().parent / "noisy_rewards.py")

STEPS = 200
"""Steps of every steps-budgeted run (64 completions each: about 64k generated tokens)."""
TOKENS = 96_000
"""Claim 1's equal-token budget: what 300 steps of the default GRPO generate."""
CPU_SECONDS = 15.0
"""Claim 1's equal-CPU budget: about what 300 steps of the default GRPO cost on one core."""
BETAS = (0.0, 0.01, 0.04, 0.1, 0.001)  # 0.001 last: the lowest priority when time runs out
GROUP_SIZES = (2, 4, 8, 16)
COMPLETIONS = 64  # per step, every experiment

# Every run: the demo preset (task, model, lr 3e-4 linear) with compare's matched defaults.
BASE: dict[str, Any] = {"max_steps": STEPS}
BEST_GRPO: dict[str, Any] = {
    "data.prompts_per_step": 16, "algorithm.num_generations": 4, "algorithm.dynamic_sampling": True,
}  # fmt: skip


def _condition(systems: tuple[str, ...], overrides: dict[str, Any] | None = None, **per_system: Any) -> dict:
    return {"systems": systems, "overrides": {**BASE, **(overrides or {})}, "per_system": per_system}


def experiments() -> dict[str, dict[str, dict[str, Any]]]:
    """``{experiment: {condition: {"systems", "overrides", "per_system"[, "same_as"]}}}``."""
    long_budget = {"max_steps": 1000}  # budgets cut the demo's 1000-step linear schedule at the same point
    both = ("grpo", "ppo")
    out: dict[str, dict[str, dict[str, Any]]] = {
        "budget": {
            "tokens": _condition(both, {**long_budget, "max_generated_tokens": TOKENS}),
            "tokens-grpo_g4_dynamic": _condition(
                ("grpo",), {**long_budget, "max_generated_tokens": TOKENS}, grpo=BEST_GRPO
            ),
            "cpu": _condition(both, {**long_budget, "max_cpu_seconds": CPU_SECONDS}),
            "cpu-grpo_g4_dynamic": _condition(
                ("grpo",), {**long_budget, "max_cpu_seconds": CPU_SECONDS}, grpo=BEST_GRPO
            ),
        },
        "beta": {f"{b:g}": _condition(both, {"algorithm.beta": b}) for b in BETAS},
        "group_size": {
            f"K{k}": _condition(
                ("grpo",), {"algorithm.num_generations": k, "data.prompts_per_step": COMPLETIONS // k}
            )
            for k in GROUP_SIZES
        },
        "temperature": {
            "fixed-1.0": _condition(("grpo",), {}),
            "fixed-0.85": _condition(("grpo",), {"generation.temperature": 0.85}),  # the schedules' mean
            "inclusive-0.7-1.0": _condition(("grpo",), {"generation.temperature_schedule": [0.7, 1.0]}),
            "founding-exclusive-0.7-1.0": _condition(
                ("grpo",),
                {"generation.temperature_schedule": [0.7, 1.0], "generation.temperature_schedule_spacing": "exclusive"},
            ),
        },
        "noise": {},
        "process": {
            "outcome": _condition(("grpo",), {"data.task": "chain", "generation.max_new_tokens": 12}),
            "process": _condition(
                ("grpo",),
                {
                    "data.task": "chain", "generation.max_new_tokens": 12,
                    "rewards.process_reward_func": "task_steps", "rewards.process_reward_unit": "char",
                },
            ),  # fmt: skip
        },
    }
    out["group_size"]["K8"]["same_as"] = ("beta", "0.04")
    out["beta"]["0.001"]["tail"] = True
    out["temperature"]["fixed-1.0"]["same_as"] = ("beta", "0.04")
    noises = {"flip": (0.3, 0.1), "gaussian": (1.0,), "prompt_offset": (1.0,)}  # flip 0.1 last (priority)
    for kind, levels in noises.items():
        for level in levels:
            spec = f"{NOISE}:{kind}"
            out["noise"][f"{kind}-{level:g}"] = _condition(
                both,
                {"rewards.reward_funcs": [spec], "rewards.reward_kwargs": {spec: {"level": level}}},
            )
    out["noise"]["flip-0.1"]["tail"] = True
    return out


def _load() -> list[float]:
    return list(os.getloadavg())


def _write(path: Path, data: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=1) + "\n", encoding="utf-8")
    tmp.replace(path)


def _thin(result: dict[str, Any], every: int = 10) -> dict[str, Any]:
    """The result with its per-step curves kept every ``every`` steps (and the last), to keep files small."""
    out = dict(result)
    for key, value in result.items():
        if key.endswith("_curve") and isinstance(value, list) and len(value) > every:
            idx = list(range(0, len(value), every))
            if idx[-1] != len(value) - 1:
                idx.append(len(value) - 1)
            out[key] = [value[i] for i in idx]
            out[f"{key}_steps"] = [i + 1 for i in idx]
    return out


def run_one(
    experiment: str, condition: str, spec: dict[str, Any], system: str, seed: int, runs_dir: Path
) -> Path:
    """Train and measure one run in a fresh subprocess; returns its result file (skipped if it exists)."""
    from grpokit.apps.compare import _run_config, _starting_model, build_compare_configs
    from grpokit.config import save_config

    result_path = RESULTS / experiment / condition / f"{system}-seed{seed}.json"
    if result_path.is_file():
        return result_path
    if "same_as" in spec:  # the identical run measured by another experiment: record a pointer
        other = RESULTS / spec["same_as"][0] / spec["same_as"][1] / f"{system}-seed{seed}.json"
        if not other.is_file():
            raise FileNotFoundError(f"{experiment}/{condition} reuses {other}, which has not run yet")
        _write(result_path, {**json.loads(other.read_text()), "same_as": list(spec["same_as"])})
        return result_path
    grpo, ppo = build_compare_configs(
        {}, copy.deepcopy(spec["overrides"]), copy.deepcopy(spec["per_system"])
    )
    base = grpo if system == "grpo" else ppo
    model_dir = _starting_model(base, print)
    run_dir = runs_dir / experiment / condition / f"{system}-seed{seed}"
    config = _run_config(base, seed=seed, run_dir=run_dir, model_dir=model_dir)
    if run_dir.exists():  # an interrupted earlier attempt (it has no result file): start it again
        shutil.rmtree(run_dir)
    run_dir.parent.mkdir(parents=True, exist_ok=True)
    config_path = run_dir.parent / f"{system}-seed{seed}.yaml"
    save_config(config, config_path)
    raw = run_dir.parent / f"{system}-seed{seed}.measure.json"
    log_path = run_dir.parent / f"{system}-seed{seed}.log"
    load_before = _load()
    started = time.perf_counter()
    with open(log_path, "w", encoding="utf-8") as log_file:
        status = subprocess.run(
            [sys.executable, "-m", "grpokit.apps.compare", str(config_path), str(raw)],
            stdout=log_file, stderr=subprocess.STDOUT, check=False,
        ).returncode  # fmt: skip
    if status != 0:
        tail = "".join(log_path.read_text(errors="replace").splitlines(True)[-15:])
        raise RuntimeError(f"{experiment}/{condition}/{system}-seed{seed} failed ({status}):\n{tail}")
    result = json.loads(raw.read_text())
    result = _thin(result)
    result.update(
        experiment=experiment, condition=condition, overrides=spec["overrides"],
        per_system=spec["per_system"].get(system, {}), wall_seconds=time.perf_counter() - started,
        load_before=load_before, load_after=_load(), date=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        model_dir=model_dir,
    )  # fmt: skip
    _write(result_path, result)
    return result_path


def memory(runs_dir: Path, hidden_sizes: tuple[int, ...] = (256, 512)) -> None:
    """Claim 2 at larger widths: ``benchmarks/ppo_vs_grpo.py``'s scale part (compare's matched defaults)."""
    path = RESULTS / "memory" / "scale.json"
    if path.is_file():
        return
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import ppo_vs_grpo

    load_before = _load()
    rows = ppo_vs_grpo.scale(runs_dir / "memory", list(hidden_sizes))
    slim = []
    for row in rows:
        s = row["summary"]
        runs = {name: s["systems"][name]["runs"][0] for name in ("grpo", "ppo")}
        keep = ("parameters", "trainable_parameters", "parameter_bytes", "gradient_bytes", "optimizer_bytes",
                "state_mb", "peak_rss_mb", "baseline_rss_mb", "peak_rss_above_baseline_mb", "cpu_seconds")  # fmt: skip
        slim.append({"hidden_size": row["hidden_size"],
                     "runs": {n: {k: r.get(k) for k in keep} for n, r in runs.items()},
                     "ratios_grpo_over_ppo": s["ratios_grpo_over_ppo"]})  # fmt: skip
    _write(path, {"rows": slim, "load_before": load_before, "load_after": _load(),
                  "date": datetime.now(timezone.utc).isoformat(timespec="seconds")})  # fmt: skip


def lr_sweep(runs_dir: Path, seeds: list[int], rates: tuple[str, ...] = ("1e-4", "3e-4", "1e-3")) -> None:
    """``grpokit compare --lr-sweep`` at 200 steps; its page and a per-run summary go to ``lr_sweep/``."""
    out = RESULTS / "lr_sweep"
    if (out / "summary.json").is_file():
        return
    sweep_dir = runs_dir / "lr-sweep"
    command = ["grpokit", "compare", "--lr-sweep", *rates, "--budget", f"steps={STEPS}",
               "--seeds", *map(str, seeds), "--output-dir", str(sweep_dir)]  # fmt: skip
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    keep = ("seed", "held_out", "kl_to_initial", "cpu_seconds", "steps", "final_reward")
    summary: dict[str, Any] = {"command": " ".join(command), "rates": {}}
    for rate in rates:
        data = json.loads((sweep_dir / f"lr{float(rate):g}" / "compare.json").read_text())
        summary["rates"][str(float(rate))] = {
            name: [{k: r.get(k) for k in keep} for r in data["systems"][name]["runs"]] for name in ("grpo", "ppo")
        }
    out.mkdir(parents=True, exist_ok=True)
    shutil.copy(sweep_dir / "lr_sweep.md", out / "lr_sweep.md")
    _write(out / "summary.json", summary)


def starting_accuracy(task: str) -> None:
    """Held-out accuracy of the starting model of ``task``'s runs (the same for every run of that task)."""
    from grpokit.apps.compare import _held_out_before, _starting_model, build_compare_configs

    path = RESULTS / "start" / f"{task}.json"
    if path.is_file():
        return
    grpo, _ = build_compare_configs({}, {"data.task": task, "generation.max_new_tokens": 12})
    model_dir = _starting_model(grpo, print)
    _write(path, {"task": task, "model_dir": model_dir, "held_out": _held_out_before(grpo, model_dir, None),
                  "num_held_out": grpo.data.num_eval_problems})  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    all_experiments = experiments()
    names = [*all_experiments, "memory", "probes", "lr_sweep"]
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("experiments", nargs="*", default=names, help=f"any of {names} (default: all)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--runs-dir", default="/tmp/claims-runs", help="where the runs themselves go")
    parser.add_argument("--conditions", nargs="*", default=None, help="only these conditions")
    args = parser.parse_args(argv)
    runs_dir = Path(args.runs_dir)
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    for experiment in args.experiments:
        if experiment not in names:
            parser.error(f"unknown experiment {experiment!r}; choose from {names}")
    # Seed-major order across experiments, the lowest-priority conditions ("tail") last: a run cut short
    # still has every claim measured at its first seeds.
    queue: list[tuple[str, str, str, int] | tuple[str]] = []
    for tail in (False, True):
        for seed in args.seeds:
            for experiment in args.experiments:
                if experiment in ("memory", "probes", "lr_sweep"):
                    continue
                for condition, spec in all_experiments[experiment].items():
                    if bool(spec.get("tail")) != tail or (args.conditions and condition not in args.conditions):
                        continue
                    queue += [(experiment, condition, system, seed) for system in spec["systems"]]
            if seed == args.seeds[0] and not tail and "memory" in args.experiments:
                queue.append(("memory",))
    failures = 0
    for item in queue:
        if item[0] == "memory":
            try:
                memory(runs_dir)
            except RuntimeError as err:  # CompareRunFailed included: the other experiments go on
                failures += 1
                print(f"{datetime.now():%H:%M:%S} FAILED memory: {err}", flush=True)
            else:
                print(f"{datetime.now():%H:%M:%S} memory done", flush=True)
            continue
        experiment, condition, system, seed = item  # type: ignore[misc]
        t0 = time.process_time()
        try:
            path = run_one(experiment, condition, all_experiments[experiment][condition], system, seed, runs_dir)
        except (RuntimeError, FileNotFoundError) as err:  # one failed run must not stop the others
            failures += 1
            print(f"{datetime.now():%H:%M:%S} FAILED {experiment}/{condition}/{system}-seed{seed}: {err}", flush=True)
            continue
        result = json.loads(path.read_text())
        print(
            f"{datetime.now():%H:%M:%S} {experiment}/{condition}/{system}-seed{seed}: "
            f"held-out {result.get('held_out', float('nan')):.3f}, {result['steps']} steps, "
            f"{result['cpu_seconds']:.1f} CPU s (runner {time.process_time() - t0:.1f} s)",
            flush=True,
        )
        if experiment == "temperature":
            from claims_probe import probe_experiment

            probe_experiment(runs_dir, [seed], RESULTS)
    for task in ("addition", "chain"):
        starting_accuracy(task)
    if "probes" in args.experiments:  # after the runs they read
        from claims_probe import probe_chain, probe_sampling

        probe_sampling(runs_dir, args.seeds, RESULTS)
        probe_chain(runs_dir, args.seeds, RESULTS)
    if "lr_sweep" in args.experiments:
        lr_sweep(runs_dir, args.seeds)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    sys.exit(main())
