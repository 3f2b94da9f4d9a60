"""``grpokit rl``: train or evaluate a policy on a gymnasium environment.

    grpokit rl --env CartPole-v1 --target-return 475             train (GRPO, same_start groups)
    grpokit rl --config rl.yaml --algorithm ppo --seed 3           YAML file, then overrides
    grpokit rl evaluate runs/rl-grpo-CartPole-v1-.../ --episodes 100
    grpokit rl --help                                              every option with its description

Options are the fields of :class:`grpokit.rl.RLConfig`, by name (``--num-generations 8``) or by
dotted path (``--algorithm.num_generations 8``); values are YAML (``--tasks '[{g: 8}, {g: 12}]'``).
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

USAGE = """usage: grpokit rl [--config FILE] [--OPTION VALUE ...]
       grpokit rl evaluate CHECKPOINT_OR_RUN_DIR [--episodes N] [--stochastic]"""


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
    """``--key value`` / ``--key=value`` pairs; a bare ``--key`` (last, or before another option) is ``true``."""
    options: dict[str, str] = {}
    i = 0
    while i < len(argv):
        arg = argv[i]
        if not arg.startswith("--") or arg == "--":
            raise ValueError(f"unexpected argument {arg!r}; options look like --name value\n{USAGE}")
        key, eq, value = arg[2:].partition("=")
        if not eq:
            if i + 1 < len(argv) and not argv[i + 1].startswith("--"):
                value = argv[i + 1]
                i += 1
            else:
                value = "true"
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
    }
    print(json.dumps(summary))
    return 0


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
    return "\n".join(lines)
