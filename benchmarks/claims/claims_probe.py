"""Group diversity of trained models, for the temperature-schedule claim (``run_claims.py temperature``).

For every condition of the ``temperature`` experiment and every seed, the trained policy (and once the
starting model) samples G completions for each of ``PROBE_PROMPTS`` held-out prompts with the condition's
own temperatures, and we record per group: distinct completions, the within-group sample std of the task
reward, whether every completion got the same reward (zero-std group), and the sampled accuracy.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

PROBE_PROMPTS = 200
PROBE_SEED = 1234


def diversity(
    model_dir: str | Path, config_path: str | Path, num_prompts: int = PROBE_PROMPTS,
    sampling: dict[str, Any] | None = None,
) -> dict[str, float]:  # fmt: skip
    """Diversity of ``model_dir``'s groups, sampled with the generation settings of the run config (or
    ``sampling``'s ``temperature``, ``temperature_schedule`` and ``temperature_schedule_spacing``)."""
    import torch

    from grpokit.algorithms import group_reward_stats
    from grpokit.apps.demo import held_out_problems
    from grpokit.config import load_config
    from grpokit.data.tasks import get_task
    from grpokit.engine.checkpoint import quiet_transformers
    from grpokit.models.loading import load_model, load_tokenizer
    from grpokit.rollout import TransformersSampler, schedule_for_spacing

    config = load_config(config_path, cls=None)
    gen, G = config.generation, config.algorithm.num_generations
    if sampling is not None:
        gen = gen.model_copy(update=sampling)
    assert config.data.task is not None
    task = get_task(config.data.task)
    rows = held_out_problems(task, num_prompts)
    with quiet_transformers():
        model = load_model(str(model_dir))
    tokenizer = load_tokenizer(str(model_dir))
    sampler = TransformersSampler(
        model, tokenizer, max_new_tokens=gen.max_new_tokens, temperature=gen.temperature,
        temperature_schedule=schedule_for_spacing(gen.temperature_schedule, G, gen.temperature_schedule_spacing),
        seed=PROBE_SEED,
    )  # fmt: skip
    distinct, rewards, groups = [], [], []
    with torch.no_grad():
        for start in range(0, len(rows), 25):
            chunk = rows[start : start + 25]
            batch = sampler.generate([r["prompt"] for r in chunk], G)
            for g, row in enumerate(chunk):
                completions = batch.completions[g * G : (g + 1) * G]
                distinct.append(len({c.strip() for c in completions}))
                rewards += [float(task.check(row["prompt"], c, row["answer"])) for c in completions]
                groups += [start + g] * G
    stats = group_reward_stats(torch.tensor(rewards), torch.tensor(groups))
    return {
        "distinct_completions_per_group": sum(distinct) / len(distinct),
        "reward_std_within_group_mean": stats["reward_std_within_group_mean"],
        "zero_std_group_fraction": stats["zero_std_group_fraction"],
        "sampled_accuracy": stats["reward_mean"],
        "group_size": G,
        "num_prompts": len(rows),
    }


def probe_experiment(runs_dir: Path, seeds: list[int], results: Path) -> None:
    """Probe every trained model of the temperature experiment, and the starting model per condition."""
    from run_claims import experiments

    for condition, spec in experiments()["temperature"].items():
        exp, cond = spec.get("same_as", ("temperature", condition))
        # The config that sets this condition's temperatures: its own run's (a reused run shares them).
        for seed in seeds:
            out = results / "temperature" / condition / f"probe-seed{seed}.json"
            run = runs_dir / exp / cond / f"grpo-seed{seed}"
            config = run.parent / f"grpo-seed{seed}.yaml"
            if out.is_file() or not (run / "final").is_dir():
                continue
            _write(out, {"condition": condition, "seed": seed, **diversity(run / "final", config)})
            start = results / "temperature" / condition / "probe-start.json"
            if not start.is_file():
                model_dir = json.loads(
                    (results / "temperature" / condition / f"grpo-seed{seed}.json").read_text()
                )["model_dir"]
                _write(start, {"condition": condition, "model": "start", **diversity(model_dir, config)})
            print(f"probe temperature/{condition} seed {seed} done", flush=True)


def _write(path: Path, data: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=1) + "\n", encoding="utf-8")


SAMPLING = {
    "fixed 0.7": {"temperature": 0.7, "temperature_schedule": None},
    "fixed 0.85": {"temperature": 0.85, "temperature_schedule": None},
    "fixed 1.0": {"temperature": 1.0, "temperature_schedule": None},
    "0.7 -> 1.0, i/(G-1)": {"temperature_schedule": (0.7, 1.0), "temperature_schedule_spacing": "inclusive"},
    "0.7 + 0.3 i/G": {"temperature_schedule": (0.7, 1.0), "temperature_schedule_spacing": "exclusive"},
}
"""Sampling settings compared on the same models: the two schedules against fixed temperatures at their low
end (the founding code's base 0.7), near their mean (0.85) and at their high end (1.0)."""


def probe_sampling(runs_dir: Path, seeds: list[int], results: Path) -> None:
    """Diversity of the same models under every setting of :data:`SAMPLING`: the starting model and the
    models trained at a fixed temperature 1.0 (no training run per setting: a sampling-only comparison)."""
    config = runs_dir / "beta" / "0.04" / "grpo-seed0.yaml"
    models = {"start": json.loads((results / "start" / "addition.json").read_text())["model_dir"]}
    for seed in seeds:
        run = runs_dir / "beta" / "0.04" / f"grpo-seed{seed}" / "final"
        if run.is_dir():
            models[f"trained-seed{seed}"] = str(run)
    for name, model_dir in models.items():
        out = results / "temperature" / "sampling" / f"{name}.json"
        if out.is_file():
            continue
        rows = {label: diversity(model_dir, config, sampling=setting) for label, setting in SAMPLING.items()}
        _write(out, {"model": name, "model_dir": model_dir, "settings": rows})
        print(f"sampling probe {name} done", flush=True)


def chain_steps(model_dir: str | Path, num_prompts: int = 500) -> dict[str, float]:
    """What a model trained on ``chain`` writes, greedily, on the held-out problems: how often each step is
    right or valid, how often the final answer is right on the problems the teacher gets right and wrong,
    and how often the whole completion is the teacher's."""
    from grpokit.apps.demo import held_out_problems
    from grpokit.data.tasks import get_task
    from grpokit.engine.checkpoint import quiet_transformers
    from grpokit.models.loading import load_model, load_tokenizer
    from grpokit.rollout import TransformersSampler

    task = get_task("chain")
    rows = held_out_problems(task, num_prompts)
    with quiet_transformers():
        model = load_model(str(model_dir))
    sampler = TransformersSampler(model, load_tokenizer(str(model_dir)), max_new_tokens=12, temperature=0)
    completions: list[str] = []
    for start in range(0, len(rows), 100):
        completions += sampler.generate([r["prompt"] for r in rows[start : start + 100]], 1).completions
    counts = {"step1_right": 0, "step2_valid": 0, "teacher_copy": 0}
    right = {True: [0, 0], False: [0, 0]}  # teacher wrong? -> [right answers, problems]
    for row, completion in zip(rows, completions):
        steps = task.step_scores(row["prompt"], completion) or []
        counts["step1_right"] += bool(steps and steps[0][1] == 1.0)
        counts["step2_valid"] += bool(len(steps) > 1 and steps[1][1] == 1.0)
        counts["teacher_copy"] += completion.strip() == task.teacher_completion(row)
        wrong = task.teacher_is_wrong(row)
        right[wrong][0] += task.check(row["prompt"], completion, row["answer"])
        right[wrong][1] += 1
    out = {k: v / len(rows) for k, v in counts.items()}
    out["accuracy_teacher_right"] = right[False][0] / max(1, right[False][1])
    out["accuracy_teacher_wrong"] = right[True][0] / max(1, right[True][1])
    out["accuracy"] = (right[False][0] + right[True][0]) / len(rows)
    return out


def probe_chain(runs_dir: Path, seeds: list[int], results: Path) -> None:
    """:func:`chain_steps` of the starting model and of every trained model of the ``process`` experiment."""
    start = results / "process" / "steps-start.json"
    if not start.is_file():
        model_dir = json.loads((results / "start" / "chain.json").read_text())["model_dir"]
        _write(start, {"model": "start", **chain_steps(model_dir)})
    for condition in ("outcome", "process"):
        for seed in seeds:
            out = results / "process" / condition / f"steps-seed{seed}.json"
            run = runs_dir / "process" / condition / f"grpo-seed{seed}" / "final"
            if out.is_file() or not run.is_dir():
                continue
            _write(out, {"condition": condition, "seed": seed, **chain_steps(run)})
            print(f"chain steps probe {condition} seed {seed} done", flush=True)
