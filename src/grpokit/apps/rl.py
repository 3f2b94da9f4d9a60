"""``grpokit rl``: train or evaluate a policy on a gymnasium environment.

    grpokit rl --env CartPole-v1                                   train (GRPO, same_start groups) until solved
    grpokit rl --env CartPole-v1 --keep-going                      train to max_steps even once solved
    grpokit rl --config rl.yaml --algorithm ppo --seed 3           YAML file, then overrides
    grpokit rl evaluate runs/rl-grpo-CartPole-v1-.../ --episodes 100
    grpokit rl --help                                              every option with its description

Options are the fields of :class:`grpokit.rl.RLConfig`, by name (``--num-generations 8``) or by
dotted path (``--algorithm.num_generations 8``); values are YAML (``--tasks '[{g: 8}, {g: 12}]'``). A
boolean option given alone is true (``--quiet``); ``--no-NAME`` alone sets it to false
(``--no-stop-when-solved``, also spelled ``--keep-going``).

Training stops at the first evaluation that reaches the env's ``spec.reward_threshold`` (or
``--target-return``); the summary says when (``solved_step``, ``solved_env_steps``, ``solved_wall_time_s``).
"""

from __future__ import annotations

import json
import os
import sys
import textwrap
from typing import TYPE_CHECKING, Any

import numpy as np

from grpokit.config import ConfigError, field_help, load_config

if TYPE_CHECKING:
    from grpokit.rl.config import RLConfig

USAGE = """usage: grpokit rl [--config FILE] [--keep-going] [--OPTION VALUE ...]
       grpokit rl evaluate CHECKPOINT_OR_RUN_DIR [--episodes N] [--stochastic]"""

# Options that are spelled differently from the field they set: --keep-going trains on once solved.
ALIASES: dict[str, tuple[str, str]] = {"keep-going": ("stop_when_solved", "false")}


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the process exit code (0 ok, 2 bad arguments or config)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] in (["-h"], ["--help"]):
        print(_help())
        return 0
    try:
        if argv[:1] == ["evaluate"]:
            return _evaluate(argv[1:])
        return _train(argv)
    except (ConfigError, ValueError) as err:
        print(f"grpokit rl: error: {err}", file=sys.stderr)
        return 2


def _parse_options(argv: list[str]) -> dict[str, str]:
    """``--key value`` / ``--key=value`` pairs; a bare ``--key`` (last, or before another option) is ``true``
    and a bare ``--no-key`` is ``key: false``; :data:`ALIASES` are replaced by the field they set."""
    options: dict[str, str] = {}
    i = 0
    while i < len(argv):
        arg = argv[i]
        if not arg.startswith("--") or arg == "--":
            raise ValueError(f"unexpected argument {arg!r}; options look like --name value\n{USAGE}")
        key, eq, value = arg[2:].partition("=")
        bare = not eq and not (i + 1 < len(argv) and not argv[i + 1].startswith("--"))
        if bare and key in ALIASES:
            key, value = ALIASES[key]
        elif bare and key.startswith("no-"):
            key, value = key[3:], "false"
        elif bare:
            value = "true"
        elif not eq:
            value = argv[i + 1]
            i += 1
        options[key] = value
        i += 1
    return options


def _load_rl_config(path: str | os.PathLike | None, overrides: dict[str, Any] | None = None) -> RLConfig:
    from grpokit.rl.config import RLConfig

    return load_config(path, overrides, cls=RLConfig)


def _train(argv: list[str]) -> int:
    from grpokit.trainers.rl import RLTrainer

    options = _parse_options(argv)
    config_file = options.pop("config", None)
    config = _load_rl_config(config_file, options)
    trainer = RLTrainer(config)
    result = trainer.train()
    returns = result.final_eval_returns
    logging = config.logging
    if not logging.quiet and not logging.json_logs:  # json_logs: stdout holds JSON lines only
        print(_solved_line(result, config))
    summary = {
        "run_dir": str(result.run_dir),
        "steps": result.steps,
        "env_steps": result.env_steps,
        "wall_time_s": round(result.wall_time, 2),
        "eval_return_mean": float(returns.mean()),
        "eval_return_std": float(returns.std()),
        "eval_episodes": int(returns.size),
        "solved_step": result.solved_step,
        "solved_env_steps": result.solved_env_steps,
        "solved_wall_time_s": None if result.solved_wall_time is None else round(result.solved_wall_time, 2),
        "target_return": result.target_return,
        "stop_reason": result.stop_reason,
    }
    print(json.dumps(summary))
    return 0


def _solved_line(result: Any, config: RLConfig) -> str:
    """One sentence on the target: when it was reached, or why there was none."""
    env = config.environment.env
    if result.target_return is None:
        return (
            f"{env} has no reward_threshold and no --target-return was given: trained to {result.stop_reason} "
            f"({result.steps} steps)"
        )
    source = "--target-return" if config.evaluation.target_return is not None else f"{env}'s reward_threshold"
    target = f"{result.target_return:g} ({source})"
    if result.solved_step is None:
        return f"not solved: no evaluation reached {target} in {result.steps} steps ({result.stop_reason})"
    line = (
        f"solved at step {result.solved_step} ({result.solved_env_steps:,} env steps, "
        f"{result.solved_wall_time:.1f} s): evaluation mean return >= {target}"
    )
    if result.steps > result.solved_step:
        line += f"; trained on to step {result.steps} ({result.stop_reason})"
    return line


def _evaluate(argv: list[str]) -> int:
    from grpokit.engine.checkpoint import find_checkpoint, load_module, run_dir_of
    from grpokit.trainers.rl import RLTrainer

    if not argv or argv[0].startswith("--"):
        raise ValueError(f"evaluate needs a checkpoint or run directory\n{USAGE}")
    target, options = argv[0], _parse_options(argv[1:])
    unknown = set(options) - {"episodes", "stochastic"}
    if unknown:
        raise ValueError(
            f"evaluate takes --episodes and --stochastic, got {sorted('--' + k for k in unknown)}"
        )
    checkpoint = find_checkpoint(target, ".")
    run_dir = run_dir_of(checkpoint)
    config = _load_rl_config(run_dir / "config.yaml")
    # Evaluation only: neither resume the run nor write into it.
    config = config.model_copy(update={"checkpoint": config.checkpoint.model_copy(update={"resume": None})})
    trainer = RLTrainer(config, run_dir=False)
    if not load_module(trainer.policy, checkpoint, "policy"):
        raise ValueError(f"checkpoint {checkpoint} has no policy.safetensors (not a `grpokit rl` checkpoint)")
    episodes = int(options.get("episodes", config.evaluation.eval_episodes))
    stochastic = options.get("stochastic", "false").lower() in ("1", "true", "yes")
    returns = trainer.evaluate(episodes, deterministic=not stochastic)
    print(
        json.dumps(
            {
                "checkpoint": str(checkpoint),
                "episodes": episodes,
                "deterministic": not stochastic,
                "return_mean": float(np.mean(returns)),
                "return_std": float(np.std(returns)),
                "return_min": float(np.min(returns)),
                "return_max": float(np.max(returns)),
            }
        )
    )
    return 0


def _help() -> str:
    from grpokit.rl.config import RLConfig

    lines = [
        USAGE,
        "",
        "Train GRPO (or PPO) on a gymnasium environment. Options (--name or --dotted.path):",
        "",
    ]
    for path, default, text in field_help(RLConfig):
        name = path.rsplit(".", 1)[-1].replace("_", "-")
        lines.append(f"  --{name} (default: {default})   [{path}]")
        lines += textwrap.wrap(text, width=100, initial_indent="      ", subsequent_indent="      ")
    lines.append("")
    lines.append("A boolean option alone is true (--quiet); --no-NAME alone sets it to false. Aliases:")
    for alias, (field, value) in ALIASES.items():
        lines.append(f"  --{alias}   same as --{field.replace('_', '-')} {value}")
    return "\n".join(lines)
