"""The ``grpokit`` command line: ``train``, ``demo``, ``eval``, ``report``, ``rl``, ``version``.

Heavy libraries (torch, transformers) are imported only by the command that needs them, so
``grpokit --help`` answers at once.
"""

from __future__ import annotations

import argparse
import sys
import textwrap
from collections.abc import Sequence
from typing import Any

__all__ = ["main", "parse_train_args"]

_COMMANDS = """commands:
  train     fine-tune a causal LM with GRPO, or PPO with --trainer ppo (config file + overrides;
            no arguments: the built-in demo)
  demo      the built-in demo: warm up a tiny model, GRPO on the addition task, before/after accuracy
  eval      accuracy and pass@k of a checkpoint on a built-in task
  report    write a run's self-contained HTML report (curves, sampled groups, config)
  rl        GRPO and PPO for gymnasium environments (grpokit rl --help)
  version   print the grpokit version

Run 'grpokit COMMAND --help' for a command's options."""


_COMMAND_NAMES = [
    line.split()[0] for line in _COMMANDS.splitlines()[1:] if line.startswith("  ") and line[2] != " "
]


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``grpokit`` console script; returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(
        prog="grpokit",
        description="Group Relative Policy Optimization (GRPO) and PPO for language models and any policy.",
        epilog=_COMMANDS,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("command", choices=_COMMAND_NAMES, metavar="COMMAND")
    if not argv or argv[0] in ("-h", "--help"):
        parser.print_help()
        return 0
    command, rest = argv[0], argv[1:]
    if command not in _COMMAND_NAMES:
        parser.parse_args([command])  # prints the usage error with the valid choices, exits 2
    if command == "report":
        from grpokit.tracking.report import main as report_main  # lazy: only this command needs it

        return report_main(rest)
    if command == "rl":
        from grpokit.rl.cli import main as rl_main  # lazy: gymnasium

        return rl_main(rest)
    if command == "version":
        from grpokit import __version__

        print(f"grpokit {__version__}")
        return 0
    try:
        if command == "eval":
            return _eval(rest)
        return _train(rest, demo=command == "demo")
    except (ValueError, FileNotFoundError) as err:
        # Config, data and reward errors are the user's to fix: one clear message, no traceback.
        print(f"grpokit {command}: error: {err}", file=sys.stderr)
        return 2
    except RuntimeError as err:
        # A run stopped on purpose (signal, out of memory, non-finite updates, disk full): the message says
        # what happened and how to resume; the exit status tells a scheduler which it was (143 = SIGTERM).
        from grpokit.trainers.faults import TrainingAborted

        if not isinstance(err, TrainingAborted):
            raise
        print(f"grpokit {command}: stopped: {err}", file=sys.stderr)
        return err.exit_code


# ---------------------------------------------------------------------------------------------------------
# train / demo
# ---------------------------------------------------------------------------------------------------------

_TRAIN_USAGE = """usage: grpokit {command} [CONFIG.yaml] [--resume RUN_DIR|latest] [--quiet] [--print-config] [--FIELD VALUE ...]

Fine-tune a causal LM with GRPO, or with PPO (and a value model) when the config says ``trainer: ppo`` or
--trainer ppo is given. Without CONFIG and without --model.name_or_path, runs the built-in demo (tiny model,
addition task).

  CONFIG.yaml           a YAML file of fields (sections as nested mappings); optional (or --config FILE)
  --model PATH          the policy: a local Hugging Face model directory (= --model.name_or_path PATH)
  --FIELD VALUE         override one field, by name (--beta 0.04) or dotted path (--algorithm.beta 0.04);
                        --FIELD=VALUE works too. VALUE is read as YAML: 0.9, true, null, [0.7, 1.0].
                        A boolean field given alone (--quiet, --dynamic_sampling) is set to true.
  --resume RUN|latest   continue a run from its newest checkpoint (a run or checkpoint directory, or the
                        newest run in output_dir); without CONFIG the run's own config.yaml is reused
  --print-config        print the resolved config as YAML and exit
  -h, --help            this message

The resolved config is saved as RUN_DIR/config.yaml.

fields (default, description):
"""


def _train_help(command: str, cls: type | None = None) -> str:
    from grpokit.config import GRPOConfig, field_help

    lines = [_TRAIN_USAGE.format(command=command)]
    section = None
    for path, default, text in field_help(cls or GRPOConfig):
        head = path.split(".")[0] if "." in path else ""
        if head != section:
            section = head
            lines.append(f"\n  [{head or 'top level'}]")
        alias = f" | --{path.rsplit('.', 1)[-1]}" if "." in path else ""
        body = textwrap.fill(text, width=100, initial_indent=" " * 8, subsequent_indent=" " * 8)
        lines.append(f"  --{path}{alias}  (default: {default})\n{body}")
    return "\n".join(lines) + "\n"


# Flags named after a section stand for its main field: --model PATH sets model.name_or_path.
_SHORTHANDS = {"model": "model.name_or_path"}


def parse_train_args(argv: Sequence[str]) -> tuple[str | None, dict[str, Any], dict[str, bool]]:
    """Split ``train`` arguments into (config path, field overrides, flags ``help``/``print_config``).

    Raises ``ValueError`` for a stray positional argument or a non-boolean field given without a value.
    """
    from grpokit.config import TRAINER_CONFIGS, field_paths

    bool_fields = set()
    for cls in TRAINER_CONFIGS.values():  # the trainer is not known yet: any trainer's booleans
        for path in field_paths(cls):
            section: Any = cls
            for part in path.split("."):
                info = section.model_fields[part]
                section = info.annotation
            if info.annotation is bool:
                bool_fields |= {path, path.rsplit(".", 1)[-1]}
    config_path: str | None = None
    overrides: dict[str, Any] = {}
    flags = {"help": False, "print_config": False}
    args = list(argv)
    i = 0
    while i < len(args):
        arg = args[i]
        i += 1
        if arg in ("-h", "--help"):
            flags["help"] = True
        elif arg in ("--print-config", "--print_config"):
            flags["print_config"] = True
        elif arg.startswith("--") and len(arg) > 2:
            key, eq, value = arg[2:].partition("=")
            if not eq:
                if i < len(args) and not args[i].startswith("--"):
                    value = args[i]
                    i += 1
                elif key.replace("-", "_") in bool_fields:
                    value = "true"
                else:
                    raise ValueError(f"--{key} needs a value")
            if key == "config":  # --config FILE: the same as the positional CONFIG
                if config_path is not None:
                    raise ValueError(f"two config files given: {config_path!r} and {value!r}")
                config_path = value
            else:
                overrides[_SHORTHANDS.get(key, key)] = value
        elif config_path is None and not arg.startswith("-"):
            config_path = arg
        else:
            raise ValueError(f"unexpected argument {arg!r} (one config file, then --FIELD VALUE pairs)")
    return config_path, overrides, flags


def _train(argv: Sequence[str], *, demo: bool) -> int:
    from grpokit.config import PPOConfig, load_config, read_config_file, trainer_config_class

    config_path, overrides, flags = parse_train_args(argv)
    if flags["help"]:
        cls = trainer_config_class(read_config_file(config_path) if config_path else {}, overrides)
        print(_train_help("demo" if demo else "train", cls), end="")
        return 0
    resume = overrides.get("resume") or overrides.get("checkpoint.resume")
    if config_path is None and resume:
        config_path = _resumed_config(str(resume), overrides)
    config = load_config(config_path, overrides, cls=None)  # the class named by the ``trainer`` field
    if demo and config.model.name_or_path is not None:
        raise ValueError(
            "grpokit demo trains the built-in tiny model; use grpokit train for model.name_or_path"
        )
    if demo and isinstance(config, PPOConfig):
        raise ValueError("grpokit demo runs GRPO; PPO on the demo's model is grpokit train --trainer ppo")
    if flags["print_config"]:
        import yaml

        print(
            yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False, default_flow_style=None), end=""
        )
        return 0
    _quiet_libraries()
    if isinstance(config, PPOConfig):
        from grpokit.trainers.ppo import train
    else:
        from grpokit.trainers.grpo import train

    result = train(config)
    if not config.logging.quiet:
        print(f"final model: {result.final_dir}")
    return 0


def _resumed_config(resume: str, overrides: dict[str, Any]) -> str | None:
    """The run's own config.yaml when resuming without a config file (``latest`` needs output_dir)."""
    from grpokit.trainers.checkpoint import find_checkpoint, run_dir_of

    output_dir = overrides.get("output_dir") or overrides.get("logging.output_dir") or "runs"
    run_dir = run_dir_of(find_checkpoint(resume, output_dir))
    saved = run_dir / "config.yaml"
    return str(saved) if saved.is_file() else None


def _quiet_libraries() -> None:
    import os

    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()


# ---------------------------------------------------------------------------------------------------------
# eval
# ---------------------------------------------------------------------------------------------------------


def _eval(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="grpokit eval",
        description="Accuracy and pass@k of a checkpoint on a built-in task's held-out problems "
        "(the ones the demo reports).",
    )
    parser.add_argument("--model", required=True, help="checkpoint directory (save_pretrained layout)")
    parser.add_argument("--task", default="addition", help="built-in task (default: addition)")
    parser.add_argument("--k", type=int, default=1, help="samples per problem for pass@k (default: 1)")
    parser.add_argument("--num-problems", type=int, default=200, help="held-out problems (default: 200)")
    parser.add_argument(
        "--max-new-tokens", type=int, default=None, help="completion budget (default: task's)"
    )
    parser.add_argument("--temperature", type=float, default=None, help="sampling temperature for k > 1")
    parser.add_argument("--seed", type=int, default=0, help="sampling seed (default: 0)")
    parser.add_argument("--device", default="auto", help="cpu, cuda or auto (default: auto)")
    args = parser.parse_args(list(argv))
    if args.k < 1 or args.num_problems < 1:
        raise ValueError("--k and --num-problems must be >= 1")
    _quiet_libraries()
    import json

    from grpokit.data.tasks import get_task
    from grpokit.evaluation import evaluate
    from grpokit.models.loading import load_model, load_tokenizer
    from grpokit.trainers.common import resolve_device
    from grpokit.trainers.demo import held_out_problems

    task = get_task(args.task)
    tokenizer = load_tokenizer(args.model)
    model = load_model(args.model, device=resolve_device(args.device))
    rows = held_out_problems(task, args.num_problems)
    options: dict[str, Any] = {"k": args.k, "seed": args.seed}
    if args.max_new_tokens is not None:
        options["max_new_tokens"] = args.max_new_tokens
    if args.temperature is not None:
        options["temperature"] = args.temperature
    result = evaluate(model, tokenizer, rows, task.check, **options)
    print(json.dumps({"model": args.model, "task": args.task, "num_problems": len(rows), **result}, indent=2))
    return 0
