"""GRPO vs PPO on the same model, task and budget, measured: what ``grpokit compare`` runs.

The seeds claim that GRPO, by dropping PPO's value model, needs about half the memory and matches PPO's
quality. This module lets a user check that on their own model and reward::

    grpokit compare CONFIG.yaml --seeds 0 1 2        # or no CONFIG: the built-in task and tiny model

For every seed it trains both systems, each in a **fresh subprocess** (so peak memory is that system's alone),
from the same starting model, with the same prompts source, completions per step, generation settings,
optimizer and step budget, then writes ``compare.md`` / ``compare.json`` (mean and spread over seeds),
``compare.png`` (reward and KL curves) and ``compare.html`` (the run report's overlay of all runs).

How the two are matched, numbered:

1. Completions per step: GRPO samples G completions for each of B prompts; PPO (classic, one completion per
   prompt) gets B*G prompts with 1 completion each. Both generate and train on N = B*G completions a step,
   so after the same number of steps they have generated about the same number of tokens (GRPO more with
   dynamic sampling's extra rounds); the measured totals are reported.
2. Shared settings (model, data, generation, rewards, optim, logging, seed, max_steps, budgets, and the loss
   knobs both trainers have: ``beta``, ``kl_estimator``, ``epsilon_*``, ``loss_aggregation``,
   ``num_iterations``, ``entropy_coef``...) come from the one config, given to both. A knob only one trainer
   has goes to that one. ``grpo:`` / ``ppo:`` sections in the file (or ``--grpo.FIELD`` / ``--ppo.FIELD``)
   set a field for one system only. Where the trainers' own defaults differ and the config sets nothing,
   both get one value, :data:`COMPARE_DEFAULTS`: 1 pass, ``beta`` 0.04 with a reference model in both
   (GRPO's KL is a loss term, PPO's is in the reward: the same coefficient and estimator), k3, token mean;
   on the demo's model, the demo's tuned learning rate and schedule (3e-4, linear), as ``grpokit demo``.
   Every remaining difference between the two resolved configs heads ``compare.md``.
3. Runs log ``metrics.jsonl`` only (no TensorBoard or other tracker, whose imports would count as memory),
   and no progress bar.
4. Memory, per run: peak RSS of the process (``ru_maxrss``), the same minus the RSS measured after the
   imports and before any model is loaded (what the model state and activations add: at tiny-model scale
   RSS is dominated by ~400+ MiB of library imports), the exact bytes of model state (parameters of every
   model held, their gradients, optimizer moments) and, on a GPU, ``torch.cuda.max_memory_allocated``.
5. Quality: the mean reward of the last 5 steps, greedy held-out accuracy (built-in task: its ``test``
   split, ``data.num_eval_problems``, 500 by default; a user's data: ``eval_data`` rows scored by the
   configured rewards), and the KL of the trained policy to the starting one on held-out prompts:
   ``sum_t k3_t`` over a completion sampled at the training temperature, averaged (nats per completion; k3
   is unbiased and >= 0). Also the training reward at equal tokens and at equal CPU seconds (the last 5
   steps each run had finished when it had spent what the shortest run spent), and GRPO's fraction of
   zero-advantage groups (compare.md warns when most groups give no gradient).
6. Cost: wall time per step is the mean of ``time/step`` over steps 2..max_steps (step 1 pays one-off
   costs); generated tokens sum ``completions/generated_tokens`` (every sampling round, dynamic sampling's
   included); CPU seconds are ``time.process_time`` (all threads) of the training loop.
7. Budget (``--budget``): equal steps (``max_steps``), equal generated tokens (``max_generated_tokens``) or
   equal CPU seconds (``max_cpu_seconds``): each run stops after the step that spends its budget (so it
   overshoots by less than one step) and saves ``final`` as usual.
8. Spread: seeds 0 1 2 by default; per seed, GRPO and PPO share the seed, so each GRPO - PPO difference is
   taken per seed and reported as mean ± std with a 95% t-interval of the mean.
"""

from __future__ import annotations

import difflib
import itertools
import json
import math
import os
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

from grpokit.apps.compare_report import LAST_STEPS, SYSTEMS, config_differences, summarize, write_outputs
from grpokit.config import (
    ConfigError,
    DemoGRPOConfig,
    DemoPPOConfig,
    GRPOConfig,
    PPOConfig,
    TrainConfig,
    apply_overrides,
    build_config,
    field_paths,
    load_config,
    preset_path,
    read_config_file,
    save_config,
)

__all__ = [
    "BUDGETS",
    "COMPARE_DEFAULTS",
    "CompareRunFailed",
    "SYSTEMS",
    "budget_overrides",
    "build_compare_configs",
    "config_differences",
    "measure_run",
    "run_comparison",
]

C = TypeVar("C", bound=TrainConfig)


class CompareRunFailed(RuntimeError):
    """One system's training subprocess failed; the message names it and quotes the end of its log."""


# ---------------------------------------------------------------------------------------------------------
# Configs: one file, two matched systems
# ---------------------------------------------------------------------------------------------------------


def _resolves(cls: type[TrainConfig], key: str) -> bool:
    """Whether ``key`` (a field name or dotted path) names a field of ``cls``."""
    key = key.replace("-", "_")
    return any(path == key or path.rsplit(".", 1)[-1] == key for path in field_paths(cls))


def _leaf(key: str) -> str:
    return key.replace("-", "_").rsplit(".", 1)[-1]


def _flatten(section: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """A per-system section as ``--FIELD VALUE`` pairs: nested config sections become dotted paths (a mapping
    that is a field's value, like ``reward_kwargs``, stays whole)."""
    sections = {
        path.rsplit(".", 1)[0] for cls in SYSTEMS.values() for path in field_paths(cls) if "." in path
    }
    out: dict[str, Any] = {}
    for key, value in section.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict) and path in sections:
            out.update(_flatten(value, f"{path}."))
        else:
            out[path] = value
    return out


def _split_algorithm(data: dict[str, Any], cls: type[GRPOConfig] | type[PPOConfig]) -> dict[str, Any]:
    """``data`` with its ``algorithm`` section reduced to the fields ``cls``'s algorithm has."""
    algorithm = data.get("algorithm") or {}
    if not isinstance(algorithm, dict):
        raise ConfigError(f"algorithm: expected a mapping in the config file, got {type(algorithm).__name__}")
    known = {path.split(".")[1] for path in field_paths(cls) if path.startswith("algorithm.")}
    return {**data, "algorithm": {k: v for k, v in algorithm.items() if k in known}}


def build_compare_configs(
    data: dict[str, Any] | None = None,
    overrides: dict[str, Any] | None = None,
    system_overrides: dict[str, dict[str, Any]] | None = None,
) -> tuple[GRPOConfig, PPOConfig]:
    """The matched GRPO and PPO configs of one comparison (see the module docstring, notes 1-3).

    Args:
        data: the raw config mapping (``read_config_file``); its ``trainer`` is ignored, its ``grpo`` and
            ``ppo`` sections are per-system overrides.
        overrides: ``--FIELD VALUE`` pairs for both systems (a field only one has goes to that one).
        system_overrides: ``{"grpo": {...}, "ppo": {...}}`` per-system ``--FIELD VALUE`` pairs.
    Returns:
        ``(grpo_config, ppo_config)``, validated; PPO's ``prompts_per_step`` is GRPO's B*G divided by PPO's
        ``num_generations`` (1 unless set for PPO).
    Raises:
        ConfigError: an unknown field, a file section that is not a mapping, a PPO ``num_generations`` that
            does not divide B*G, or an invalid value (naming the system).
    """
    data = dict(data or {})
    data.pop("trainer", None)
    model_given = (data.get("model") or {}).get("name_or_path") is not None or any(
        key in ("model", "name_or_path", "model.name_or_path") for key in (overrides or {})
    )
    if not model_given and "demo" not in data:  # no model: the demo preset's task on the demo's model
        data = _merged(read_config_file(preset_path("demo")), data)
        data.pop("trainer", None)
    # A config with a demo section runs on the demo's warmed-up model when it names no model.
    demo = "demo" in data
    grpo_cls: type[GRPOConfig] = DemoGRPOConfig if demo else GRPOConfig
    ppo_cls: type[PPOConfig] = DemoPPOConfig if demo else PPOConfig
    systems: dict[str, type[GRPOConfig] | type[PPOConfig]] = {"grpo": grpo_cls, "ppo": ppo_cls}
    per_system: dict[str, dict[str, Any]] = {}
    for name in systems:
        section = data.pop(name, None) or {}
        if not isinstance(section, dict):
            raise ConfigError(f"{name}: expected a mapping of fields for the {name.upper()} run only")
        per_system[name] = {**_flatten(section), **((system_overrides or {}).get(name) or {})}
    overrides = dict(overrides or {})
    for key in overrides:
        if not any(_resolves(cls, key) for cls in systems.values()):
            known = sorted(
                {part for cls in systems.values() for p in field_paths(cls) for part in (p, _leaf(p))}
            )
            close = difflib.get_close_matches(key.replace("-", "_"), known, n=1, cutoff=0.6)
            raise ConfigError(f"unknown option --{key}" + (f"; did you mean --{close[0]}?" if close else ""))
    _shared_defaults(data, overrides, demo)
    ppo_own = per_system["ppo"]
    if any(_leaf(k) == "prompts_per_step" for k in ppo_own):
        raise ConfigError(
            "ppo.prompts_per_step is set by the comparison (GRPO's completions per step / PPO's "
            "num_generations); set data.prompts_per_step for GRPO instead"
        )
    ppo_generations = [v for k, v in ppo_own.items() if _leaf(k) == "num_generations"]
    ppo_own = {k: v for k, v in ppo_own.items() if _leaf(k) != "num_generations"}
    per_system["ppo"] = ppo_own

    configs = {}
    for name, cls in systems.items():
        system_data = _split_algorithm(data, cls)
        shared = {k: v for k, v in overrides.items() if _resolves(cls, k)}
        if name == "ppo":  # the shared G is GRPO's group size; PPO's completions per prompt follow note 1
            system_data["algorithm"].pop("num_generations", None)
            shared = {k: v for k, v in shared.items() if _leaf(k) != "num_generations"}
        configs[name] = apply_overrides(cls, system_data, {**shared, **per_system[name]})

    grpo = build_config(grpo_cls, configs["grpo"], source="compare config (GRPO)")
    completions = grpo.num_responses
    try:
        G_ppo = int(ppo_generations[-1]) if ppo_generations else 1
    except (TypeError, ValueError):
        raise ConfigError(f"ppo.num_generations must be an integer, got {ppo_generations[-1]!r}") from None
    if G_ppo < 1 or completions % G_ppo:
        raise ConfigError(
            f"ppo.num_generations ({G_ppo}) must be >= 1 and divide GRPO's completions per step B*G = {completions}"
        )
    configs["ppo"].setdefault("algorithm", {})["num_generations"] = G_ppo
    configs["ppo"].setdefault("data", {})["prompts_per_step"] = completions // G_ppo
    ppo = build_config(ppo_cls, configs["ppo"], source="compare config (PPO)")
    return grpo, ppo


COMPARE_DEFAULTS: dict[str, Any] = {
    "num_iterations": 1,
    "beta": 0.04,
    "kl_estimator": "k3",
    "loss_aggregation": "token_mean",
}
"""The loss knobs both trainers have but default differently (GRPO: 1 pass, beta 0, k3, sequence mean; PPO: 4
epochs, beta 0.05, k1, token mean), given to both systems when the config sets none (note 2): one pass over
each batch, DeepSeekMath's beta 0.04 with a reference model in both (GRPO's KL is a loss term, PPO's is in
the reward: the same coefficient and estimator either way), the unbiased k3 estimator (k1 is refused as a
loss term) and token-mean aggregation."""

BUDGETS = ("steps", "tokens", "cpu_seconds")
"""What ``--budget`` can hold equal: training steps, generated completion tokens, or CPU seconds."""


def budget_overrides(kind: str, amount: float) -> dict[str, Any]:
    """The ``--FIELD VALUE`` pairs of a budget for both systems: ``steps`` sets ``max_steps``; ``tokens`` and
    ``cpu_seconds`` set ``max_generated_tokens`` / ``max_cpu_seconds`` (``max_steps`` stays the upper bound
    and sets the learning-rate schedule).

    Raises:
        ConfigError: an unknown kind or a non-positive amount.
    """
    if kind not in BUDGETS:
        raise ConfigError(f"--budget: expected one of {', '.join(BUDGETS)}, got {kind!r}")
    if not amount > 0:
        raise ConfigError(f"--budget {kind}: the amount must be > 0, got {amount}")
    if kind == "steps":
        if amount != int(amount):
            raise ConfigError(f"--budget steps: a whole number of steps, got {amount}")
        return {"max_steps": int(amount)}
    if kind == "tokens":
        return {"max_generated_tokens": math.ceil(amount)}
    return {"max_cpu_seconds": float(amount)}


def _shared_defaults(data: dict[str, Any], overrides: dict[str, Any], demo: bool) -> None:
    """Give both systems one value of every training knob their trainers default differently, unless the
    config (or a ``--FIELD`` for both) sets it: :data:`COMPARE_DEFAULTS`, and with the demo's model the demo's
    tuned GRPO learning rate and schedule (``demo.grpo_learning_rate`` / ``demo.grpo_lr_scheduler``, which
    ``grpokit demo`` uses) instead of the general constant 1e-4. Changes ``data`` in place."""
    given = {_leaf(k) for k in overrides}
    algorithm = data.get("algorithm")
    if algorithm is None:
        algorithm = data["algorithm"] = {}
    if isinstance(algorithm, dict):
        for key, value in COMPARE_DEFAULTS.items():
            if key not in algorithm and key not in given:
                algorithm[key] = value
    if demo:
        from grpokit.config import DemoConfig

        section = data.get("demo")
        section = section if isinstance(section, dict) else {}
        optim = data.get("optim")
        if optim is None:
            optim = data["optim"] = {}
        tuned = {"learning_rate": "grpo_learning_rate", "lr_scheduler": "grpo_lr_scheduler"}
        if isinstance(optim, dict):
            for key, field in tuned.items():
                if key not in optim and key not in given:
                    optim[key] = section.get(field, DemoConfig.model_fields[field].default)


def _merged(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """``over`` laid on ``base``, section by section."""
    out = dict(base)
    for key, value in over.items():
        out[key] = (
            _merged(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
        )
    return out


def _run_config(config: C, *, seed: int, run_dir: Path, model_dir: str) -> C:
    """``config`` for one run: its seed, its run directory, the starting model, metrics.jsonl only (note 3)."""
    logging = config.logging.model_copy(
        update={"output_dir": str(run_dir.parent), "run_name": run_dir.name, "quiet": True,
                "report_to": [], "report": False}
    )  # fmt: skip
    data = config.model_dump(mode="json")
    data.update(seed=seed, logging=logging.model_dump(mode="json"))
    data["model"]["name_or_path"] = model_dir
    data["checkpoint"]["resume"] = None
    return build_config(type(config), data)


# ---------------------------------------------------------------------------------------------------------
# One run, in its own process
# ---------------------------------------------------------------------------------------------------------


def _rss_mb() -> float:
    import psutil

    return psutil.Process().memory_info().rss / 2**20


def _import_model_code(model_dir: str) -> None:
    """Import the model's modelling module now, so the baseline RSS counts it as an import (note 4)."""
    try:
        from transformers import AutoConfig
        from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING

        MODEL_FOR_CAUSAL_LM_MAPPING[type(AutoConfig.from_pretrained(model_dir, local_files_only=True))]
    except (KeyError, OSError, ValueError):  # custom code: it is imported with the model instead
        pass


def _state_bytes(trainer: Any) -> dict[str, float]:
    """Parameters held (every model, shared tensors once), their gradients and optimizer moments."""
    import torch

    modules = [trainer.model]
    if trainer.reference is not None:
        modules.append(trainer.reference.model)
    optimizers = [trainer.optimizer]
    if hasattr(trainer, "value_model"):
        modules.append(trainer.value_model)
        optimizers.append(trainer.value_optimizer)
    params = {p.data_ptr(): p for module in modules for p in module.parameters()}
    trainable = [p for p in params.values() if p.requires_grad]
    moments = [
        t for opt in optimizers for state in opt.state.values() for t in state.values()
        if isinstance(t, torch.Tensor) and t.dim() > 0
    ]  # fmt: skip
    size = lambda ts: float(sum(t.numel() * t.element_size() for t in ts))  # noqa: E731
    return {
        "parameters": float(sum(p.numel() for p in params.values())),
        "trainable_parameters": float(sum(p.numel() for p in trainable)),
        "parameter_bytes": size(params.values()),
        "gradient_bytes": size(trainable),  # one gradient per trainable parameter during the update
        "optimizer_bytes": size(moments),
    }


def _held_out_rows(config: TrainConfig, eval_data: str | None) -> tuple[list[dict[str, Any]], Any]:
    """Held-out rows and the built-in task (None for a user's ``eval_data``); ``([], None)`` when neither."""
    if eval_data is not None:
        from grpokit.data import load_prompts

        return list(load_prompts(eval_data, prompt_column=config.data.prompt_column)), None
    if config.data.path is None and config.data.task is not None:
        from grpokit.apps.demo import held_out_problems
        from grpokit.data.tasks import get_task

        task = get_task(config.data.task)
        return held_out_problems(task, config.data.num_eval_problems), task
    return [], None


def held_out_quality(
    model: Any, tokenizer: Any, rows: list[dict[str, Any]], task: Any, config: TrainConfig, rewards: Any
) -> float:
    """Greedy held-out accuracy (built-in task) or mean configured reward of greedy completions (note 5)."""
    from grpokit.apps.evaluation import evaluate
    from grpokit.rollout import TransformersSampler

    gen = config.generation
    if task is not None:
        return evaluate(
            model, tokenizer, rows, task.check, max_new_tokens=gen.max_new_tokens,
            prompt_column=config.data.prompt_column, answer_column=config.rewards.answer_column,
        )["accuracy"]  # fmt: skip
    sampler = TransformersSampler(model, tokenizer, max_new_tokens=gen.max_new_tokens, temperature=0.0)
    total, count = 0.0, 0
    for start in range(0, len(rows), 64):
        chunk = rows[start : start + 64]
        prompts = [row[config.data.prompt_column] for row in chunk]
        columns = {k: [row.get(k) for row in chunk] for k in chunk[0] if k != config.data.prompt_column}
        scores = rewards.score(sampler.generate(prompts, 1, columns))
        values = scores.rewards[scores.scored]
        total += float(values.sum())
        count += int(values.numel())
    return total / count if count else math.nan


def kl_to_initial(
    model: Any, initial: Any, tokenizer: Any, rows: list[dict[str, Any]], config: TrainConfig
) -> float:
    """Mean over held-out prompts of ``sum_t k3_t(pi || pi_initial)`` on a sampled completion (note 5)."""
    import torch

    from grpokit.algorithms import kl_divergence
    from grpokit.models.forward import sequence_logprobs
    from grpokit.rollout import TransformersSampler

    gen = config.generation
    sampler = TransformersSampler(
        model, tokenizer, max_new_tokens=gen.max_new_tokens, temperature=gen.temperature, top_p=gen.top_p,
        top_k=gen.top_k, seed=config.seed,
    )  # fmt: skip
    per_completion = []
    for start in range(0, len(rows), 64):
        prompts = [row[config.data.prompt_column] for row in rows[start : start + 64]]
        batch = sampler.generate(prompts, 1)
        mask = batch.completion_mask.cpu() > 0  # (n, T)
        logprobs = sequence_logprobs(model, batch, 64)  # (n, T)
        initial_logprobs = sequence_logprobs(initial, batch, 64)  # (n, T)
        k3 = torch.where(mask, kl_divergence(logprobs, initial_logprobs, "k3"), 0.0)  # (n, T)
        per_completion.append(k3.sum(1))
    return float(torch.cat(per_completion).mean())


def measure_run(config_path: str | os.PathLike, eval_data: str | None = None) -> dict[str, Any]:
    """Train the config at ``config_path`` in this process and measure it (notes 4-6).

    Meant to run in a fresh process (``python -m grpokit.apps.compare CONFIG RESULT``): the peak RSS
    is the process's.
    """

    from grpokit.engine.checkpoint import quiet_transformers
    from grpokit.models.device import peak_cuda_mb, peak_rss_mb
    from grpokit.models.loading import load_model
    from grpokit.tracking import read_metrics
    from grpokit.trainers.grpo import GRPOTrainer
    from grpokit.trainers.ppo import PPOTrainer

    config = load_config(config_path, cls=None)
    model_dir = config.model.name_or_path
    if model_dir is None:
        raise ValueError(
            f"{config_path}: model.name_or_path is unset; a measured run needs its starting model"
        )
    _import_model_code(model_dir)
    baseline = _rss_mb()
    started = time.perf_counter()
    trainer = PPOTrainer(config) if isinstance(config, PPOConfig) else GRPOTrainer(config)
    result = trainer.train()
    train_seconds = time.perf_counter() - started
    cpu_seconds = time.process_time() - trainer.budget_cpu_start  # the training loop and saving final
    peak = peak_rss_mb()
    out: dict[str, Any] = {
        "system": config.trainer,
        "seed": config.seed,
        "run_dir": str(result.run_dir),
        "peak_rss_mb": peak,
        "baseline_rss_mb": baseline,
        "peak_rss_above_baseline_mb": peak - baseline,
        "train_seconds": train_seconds,
        **_state_bytes(trainer),
    }
    cuda_peak = peak_cuda_mb()
    if cuda_peak is not None:
        out["peak_cuda_allocated_mb"] = cuda_peak

    metrics = read_metrics(result.run_dir)
    steps = [m for m in metrics if "reward/mean" in m]
    N = config.num_responses
    out["steps"] = len(steps)
    out["completions_per_step"] = N
    out["prompts_per_step"] = config.data.prompts_per_step
    out["reward_curve"] = [m["reward/mean"] for m in steps]
    out["kl_curve"] = [m.get("kl", math.nan) for m in steps]
    # Every sampling round counts (dynamic sampling's extra rounds too); older logs: the mean length x N.
    step_tokens = [m.get("completions/generated_tokens", m["completions/mean_length"] * N) for m in steps]
    out["tokens_curve"] = list(itertools.accumulate(float(t) for t in step_tokens))
    out["generated_tokens"] = out["tokens_curve"][-1] if steps else 0.0
    start = trainer.budget_cpu_start
    out["cpu_curve"] = [m.get("time/process_cpu_seconds", math.nan) - start for m in steps]
    out["cpu_seconds"] = cpu_seconds
    zero = [m["zero_std_group_fraction"] for m in steps if "zero_std_group_fraction" in m]
    if zero:  # GRPO's groups (PPO's G = 1 has none)
        out["zero_std_group_fraction"] = sum(zero) / len(zero)
    out["budget"] = {"max_steps": config.max_steps, "max_generated_tokens": config.max_generated_tokens,
                     "max_cpu_seconds": config.max_cpu_seconds}  # fmt: skip
    times = [m["time/step"] for m in steps[1:]] or [m["time/step"] for m in steps]
    out["seconds_per_step"] = sum(times) / len(times)
    out["final_reward"] = sum(out["reward_curve"][-LAST_STEPS:]) / len(out["reward_curve"][-LAST_STEPS:])

    rows, task = _held_out_rows(config, eval_data)
    if rows:
        out["held_out_metric"] = "accuracy" if task is not None else "mean reward"
        out["held_out"] = held_out_quality(
            trainer.model, trainer.tokenizer, rows, task, config, trainer.rewards
        )
        with quiet_transformers():
            initial = load_model(model_dir, dtype=config.model.dtype, device=trainer.device)
        out["kl_to_initial"] = kl_to_initial(trainer.model, initial, trainer.tokenizer, rows, config)
        out["num_held_out"] = len(rows)
    return out


def _worker_main(argv: Sequence[str] | None = None) -> int:
    """``python -m grpokit.apps.compare CONFIG.yaml RESULT.json [EVAL_DATA]``: one measured run."""
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) not in (2, 3):
        print(_worker_main.__doc__, file=sys.stderr)
        return 2
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()
    result = measure_run(args[0], args[2] if len(args) == 3 else None)
    Path(args[1]).write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    return 0


# ---------------------------------------------------------------------------------------------------------
# The comparison
# ---------------------------------------------------------------------------------------------------------


def _starting_model(config: TrainConfig, log: Callable[[str], None]) -> str:
    """The model both systems start from: the config's, or the demo's warmed-up tiny model (cached)."""
    if config.model.name_or_path is not None:
        return config.model.name_or_path
    if not isinstance(config, (DemoGRPOConfig, DemoPPOConfig)):
        raise ValueError(
            "model.name_or_path is unset and the config has no demo section: set the model both systems "
            "start from, or compare on the built-in demo's model (no model and no demo section)"
        )
    from grpokit.apps.demo import prepare_demo_model

    return str(prepare_demo_model(config, log))


def _run_subprocess(config_path: Path, result_path: Path, log_path: Path, eval_data: str | None) -> dict:
    command = [sys.executable, "-m", "grpokit.apps.compare", str(config_path), str(result_path)]
    if eval_data is not None:
        command.append(str(eval_data))
    with open(log_path, "w", encoding="utf-8") as log_file:
        status = subprocess.run(command, stdout=log_file, stderr=subprocess.STDOUT, check=False).returncode
    if status != 0:
        tail = "".join(log_path.read_text(encoding="utf-8", errors="replace").splitlines(True)[-20:])
        raise CompareRunFailed(f"{config_path.stem} failed (exit status {status}); log {log_path}:\n{tail}")
    return json.loads(result_path.read_text(encoding="utf-8"))


def run_comparison(
    grpo_config: GRPOConfig,
    ppo_config: PPOConfig,
    *,
    seeds: Sequence[int] = (0, 1, 2),
    output_dir: str | os.PathLike | None = None,
    eval_data: str | None = None,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Train and measure both systems for every seed, one fresh subprocess each; write the outputs.

    Args:
        grpo_config, ppo_config: from :func:`build_compare_configs`.
        seeds: one GRPO and one PPO run per seed, run one after the other (never two at once).
        output_dir: where everything goes (default ``logging.output_dir/compare-<date>-<time>``).
        eval_data: held-out prompt rows for a user's task (the built-in task uses its ``test`` split).
    Returns:
        The summary written to ``compare.json`` (see :func:`summarize`).
    Raises:
        CompareRunFailed: a run's subprocess failed.
    """
    if not seeds:
        raise ValueError("seeds is empty: give at least one seed")
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"seeds has duplicates: {list(seeds)}")
    if output_dir is None:
        output_dir = Path(grpo_config.logging.output_dir) / f"compare-{datetime.now():%Y%m%d-%H%M%S}"
    out = Path(output_dir)
    if (out / "compare.json").exists():
        raise ValueError(f"output directory {str(out)!r} already holds a comparison; choose another")
    for sub in ("configs", "logs"):
        (out / sub).mkdir(parents=True, exist_ok=True)
    model_dir = _starting_model(grpo_config, log)
    results: list[dict[str, Any]] = []
    for seed in seeds:
        bases: tuple[tuple[str, GRPOConfig | PPOConfig], ...] = (("grpo", grpo_config), ("ppo", ppo_config))
        for name, base in bases:
            run_name = f"{name}-seed{seed}"
            config = _run_config(base, seed=seed, run_dir=out / run_name, model_dir=model_dir)
            config_path = out / "configs" / f"{run_name}.yaml"
            save_config(config, config_path)
            log(
                f"compare: {run_name} ({config.max_steps} steps, {config.num_responses} completions per step)"
            )
            results.append(
                _run_subprocess(
                    config_path, out / run_name / "measure.json", out / "logs" / f"{run_name}.log", eval_data
                )
            )
    summary = summarize(results, grpo_config, ppo_config, model_dir=model_dir)
    summary["before"] = _held_out_before(grpo_config, model_dir, eval_data)
    write_outputs(summary, out)
    log(f"compare: wrote {out / 'compare.md'}")
    return summary


def _held_out_before(config: GRPOConfig, model_dir: str, eval_data: str | None) -> float | None:
    """Held-out quality of the starting model (the same for both systems)."""
    from grpokit.engine.checkpoint import quiet_transformers
    from grpokit.models.loading import load_model, load_tokenizer
    from grpokit.rewards import RewardPipeline

    rows, task = _held_out_rows(config, eval_data)
    if not rows:
        return None
    tokenizer = load_tokenizer(config.model.tokenizer_name_or_path or model_dir)
    with quiet_transformers():
        model = load_model(model_dir, dtype=config.model.dtype)
    rewards = None
    if task is None:
        rewards = RewardPipeline.from_config(
            config.rewards, task=config.data.task, max_new_tokens=config.generation.max_new_tokens,
            tokenizer=tokenizer,
        )  # fmt: skip
    return held_out_quality(model, tokenizer, rows, task, config, rewards)


if __name__ == "__main__":
    sys.exit(_worker_main())
