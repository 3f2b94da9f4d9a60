"""The ``grpokit`` command line: ``train``, ``demo``, ``eval``, ``compare``, ``rm``, ``merge``, ``report``, ``rl``,
``reward-hacking``, ``vllm-serve``, ``presets``, ``config``, ``version``.

Heavy libraries (torch, transformers) are imported only by the command that needs them, so
``grpokit --help`` answers at once.
"""

from __future__ import annotations

import argparse
import sys
import textwrap
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from grpokit.config import GRPOConfig, PPOConfig
    from grpokit.trainers.grpo import TrainResult

__all__ = ["main", "parse_train_args"]

_COMMANDS = """commands:
  train     fine-tune a causal LM with GRPO, or PPO with --trainer ppo (config file + overrides;
            no arguments: the built-in demo, the preset 'demo')
  demo      the built-in demo: warm up a tiny model, GRPO on the addition task, before/after accuracy
            (--env calculator / guess_number: the multi-turn demo, a tool and a guessing game)
  eval      a checkpoint on held-out rows: your data scored by your config's rewards (mean reward,
            solved fraction, pass@k), or a built-in task's accuracy and pass@k
  compare   GRPO vs PPO on the same model, task and budget: memory, time, reward, accuracy, KL
  rm        train a reward model on preference pairs (chosen/rejected), for --reward_model
  merge     fold a LoRA run's adapters into the base model: a full model that plain transformers loads
  report    write a run's self-contained HTML report (curves, sampled groups, config)
  rl        GRPO and PPO for gymnasium environments (grpokit rl --help)
  reward-hacking  GRPO vs PPO optimising a learned proxy reward: gold vs proxy, length, repetition
  vllm-serve  serve a vLLM engine on its own devices or machine to trainers (generation.backend:
            vllm_server): generation, and weight updates the trainer pushes after each step
  presets   list the config presets shipped with grpokit and where their YAML files are
  config    write a commented starter config: grpokit config init --trainer grpo > my.yaml
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
        from grpokit.apps.rl import main as rl_main  # lazy: gymnasium

        return rl_main(rest)
    if command == "reward-hacking":
        from grpokit.apps.reward_hacking import main as reward_hacking_main

        return reward_hacking_main(rest)
    if command == "presets":
        from grpokit.config import available_presets, preset_path

        for name in available_presets():
            print(f"{name}\t{preset_path(name)}")
        return 0
    if command == "config":
        try:
            return _config(rest)
        except ValueError as err:
            print(f"grpokit config: error: {err}", file=sys.stderr)
            return 2
    if command == "version":
        from grpokit import __version__

        print(f"grpokit {__version__}")
        return 0
    try:
        if command == "eval":
            return _eval(rest)
        if command == "compare":
            return _compare(rest)
        if command == "merge":
            return _merge(rest)
        if command == "rm":
            from grpokit.apps.reward_model import main as rm_main  # lazy: torch

            return rm_main(rest)
        if command == "vllm-serve":
            from grpokit.apps.vllm_serve import main as serve_main  # lazy: vLLM

            return serve_main(rest)
        return _train(rest, demo=command == "demo")
    except (ValueError, FileNotFoundError) as err:
        # Config, data and reward errors are the user's to fix: one clear message, no traceback.
        print(f"grpokit {command}: error: {err}", file=sys.stderr)
        return 2
    except ImportError as err:
        # A missing optional package (vLLM, peft, pyarrow...): the message names what to install.
        if not isinstance(err, ModuleNotFoundError) and "pip install" not in str(err):
            raise
        hint = "" if "pip install" in str(err) else " (install the grpokit extra that provides it)"
        print(f"grpokit {command}: error: {err}{hint}", file=sys.stderr)
        return 2
    except RuntimeError as err:
        # A run stopped on purpose (signal, out of memory, non-finite updates, disk full): the message says
        # what happened and how to resume; the exit status tells a scheduler which it was (143 = SIGTERM).
        from grpokit.engine.faults import TrainingAborted
        from grpokit.rollout.vllm_client import VLLMServerError

        if isinstance(err, VLLMServerError):  # the message names the server and what was asked of it
            print(f"grpokit {command}: error: {err}", file=sys.stderr)
            return 1
        if not isinstance(err, TrainingAborted):
            raise
        print(f"grpokit {command}: stopped: {err}", file=sys.stderr)
        return err.exit_code


# ---------------------------------------------------------------------------------------------------------
# train / demo
# ---------------------------------------------------------------------------------------------------------

_TRAIN_USAGE = """usage: grpokit {command} [CONFIG.yaml | --preset NAME] [--resume RUN_DIR|latest] [--quiet] [--print-config] [--FIELD VALUE ...]

Fine-tune a causal LM with GRPO, or with PPO (and a value model) when the config says 'trainer: ppo' or
--trainer ppo is given. A run needs a model, prompts (--data.path or --data.task) and a reward
(--reward_funcs, --reward_model or --process_reward_func). Without CONFIG and without --model, runs the
built-in demo (the preset 'demo': tiny model, addition task), or with --env calculator / --env guess_number
the multi-turn demo (the presets 'agent_calculator', 'agent_guess_number').

  CONFIG.yaml           a YAML file of fields (sections as nested mappings); optional (or --config FILE)
  --preset NAME         start from a config shipped with grpokit (grpokit presets lists them and their
                        files, to copy)
  --model PATH          the policy: a local Hugging Face model directory (= --model.name_or_path PATH)
  --FIELD VALUE         override one field, by name (--beta 0.04) or dotted path (--algorithm.beta 0.04);
                        --FIELD=VALUE works too. VALUE is read as YAML: 0.9, true, null, [0.7, 1.0].
                        A boolean field given alone (--quiet, --dynamic_sampling) is set to true.
  --resume RUN|latest   continue a run from its newest checkpoint (a run or checkpoint directory, or the
                        newest run in output_dir); without CONFIG the run's own config.yaml is reused
  --num_processes N     train on N local processes (DDP, one per GPU, or gloo on CPU): shorthand for
                        accelerate launch --multi_gpu --num_processes N -m grpokit train ...; for DeepSpeed,
                        FSDP or several machines use accelerate launch itself (docs/distributed.md)
  --print-config        print the resolved config as YAML and exit
  -h, --help            this message, with the fields set first
  --help-all            this message, with every field

The resolved config is saved as RUN_DIR/config.yaml.
"""

_TRAIN_HELP_MORE = """
  ... and {more} more fields, each settable the same way: grpokit {command} --help-all lists them all, and
  docs/configuration.md is their reference. A commented starter file with every field:
      grpokit config init --trainer {trainer} > my.yaml
"""


def _train_help(command: str, cls: Any = None, *, full: bool = False) -> str:
    """``grpokit train --help``: the usage, then the fields set first (``full``: every field)."""
    from grpokit.config import GRPOConfig, common_field_help, field_help

    cls = cls or GRPOConfig
    lines = [_TRAIN_USAGE.format(command=command)]
    if not full:
        common = common_field_help(cls)
        trainer = cls.model_fields["trainer"].default
        lines.append(f"fields set first ({trainer}; default, description):\n")
        for path, default, text in common:
            alias = f" | --{path.rsplit('.', 1)[-1]}" if "." in path else ""
            body = textwrap.fill(text.replace("``", "`"), width=100, initial_indent=" " * 8,
                                 subsequent_indent=" " * 8)  # fmt: skip
            lines.append(f"  --{path}{alias}  (default: {default})\n{body}")
        more = len(field_help(cls)) - len(common)
        return "\n".join(lines) + "\n" + _TRAIN_HELP_MORE.format(more=more, command=command, trainer=trainer)
    lines.append("fields (default, description):")
    section = None
    for path, default, text in field_help(cls):
        head = path.split(".")[0] if "." in path else ""
        if head != section:
            section = head
            lines.append(f"\n  [{head or 'top level'}]")
        alias = f" | --{path.rsplit('.', 1)[-1]}" if "." in path else ""
        body = textwrap.fill(text, width=100, initial_indent=" " * 8, subsequent_indent=" " * 8)
        lines.append(f"  --{path}{alias}  (default: {default})\n{body}")
    return "\n".join(lines) + "\n"


# Flags named after a section stand for its main field: --model PATH sets model.name_or_path.
_SHORTHANDS = {"model": "model.name_or_path", "env": "env.name"}


def parse_train_args(argv: Sequence[str]) -> tuple[str | None, dict[str, Any], dict[str, Any]]:
    """Split ``train`` arguments into (config path, field overrides, flags ``help``/``print_config``/``preset``).

    Raises ``ValueError`` for a stray positional argument or a non-boolean field given without a value.
    """
    from grpokit.config import DEMO_CONFIGS, TRAINER_CONFIGS, field_paths, split_command_line

    bool_fields = set()
    for cls in [*TRAINER_CONFIGS.values(), *DEMO_CONFIGS.values()]:  # the trainer is not known yet
        for path in field_paths(cls):
            section: Any = cls
            for part in path.split("."):
                info = section.model_fields[part]
                section = info.annotation
            if info.annotation is bool:
                bool_fields |= {path, path.rsplit(".", 1)[-1]}
    return split_command_line(argv, bool_fields, shorthands=_SHORTHANDS, options=("preset",))


def _config_source(
    config_path: str | None, overrides: dict[str, Any], preset: str | None, *, demo: bool
) -> str | None:
    """The config file a ``train``/``demo`` command reads: CONFIG, a preset, the resumed run's own, or, when
    neither a file nor a model is given, the ``demo`` preset (``grpokit train`` with no arguments) or the
    multi-turn demo's ``agent_<env>`` preset (``grpokit train --env calculator``)."""
    from grpokit.config import available_presets, preset_path

    if preset is not None and config_path is not None:
        raise ValueError(f"give a config file or --preset, not both ({config_path!r}, preset {preset!r})")
    if preset is not None:
        return str(preset_path(preset))
    if config_path is not None:
        return config_path
    resume = overrides.get("resume") or overrides.get("checkpoint.resume")
    if resume:
        return _resumed_config(str(resume), overrides)
    model_given = any(key in ("model.name_or_path", "name_or_path") for key in overrides)
    if demo or not model_given:
        env = overrides.get("env.name")
        if env is not None and f"agent_{env}" in available_presets():
            return str(preset_path(f"agent_{env}"))
        if env is not None:
            demos = sorted(name.removeprefix("agent_") for name in available_presets() if name.startswith("agent_"))
            raise ValueError(
                f"--env {env} has no built-in demo: set --model PATH to train a model in it (the multi-turn "
                f"demos: {', '.join('--env ' + name for name in demos)})"
            )
        return str(preset_path("demo"))
    return None


def _train(argv: Sequence[str], *, demo: bool) -> int:
    from grpokit.config import (
        PPOConfig,
        check_runnable,
        load_config,
        read_config_file,
        trainer_config_class,
    )
    from grpokit.engine.parallel import split_num_processes

    argv, num_processes = split_num_processes(argv)
    config_path, overrides, flags = parse_train_args(argv)
    config_path = _config_source(config_path, overrides, flags["preset"], demo=demo)
    if flags["help"]:
        cls = trainer_config_class(read_config_file(config_path) if config_path else {}, overrides)
        print(_train_help("demo" if demo else "train", cls, full=flags["help_all"]), end="")
        return 0
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
    check_runnable(config)  # a model, prompts and a reward: one line naming the option, before any loading
    if num_processes is not None and num_processes > 1:
        return _launch_processes(num_processes, config, argv, demo=demo)
    from grpokit.engine.parallel import launched_distributed

    if config.model.name_or_path is None and launched_distributed():
        raise ValueError("the built-in demo runs in one process: set model.name_or_path to train on several")
    _quiet_libraries()
    if config.model.name_or_path is None:  # the demo preset: the demo builds and warms up its own model
        result = _train_demo(config)
    elif isinstance(config, PPOConfig):
        from grpokit.trainers.ppo import train as train_ppo

        result = train_ppo(config)
    else:
        from grpokit.trainers.grpo import train as train_grpo

        result = train_grpo(config)
    if not config.logging.quiet:
        print(f"final model: {result.final_dir}")
    return 0


def _train_demo(config: GRPOConfig | PPOConfig) -> TrainResult:
    """The built-in demo (GRPO), or PPO on the demo's warmed-up tiny model; returns the training result."""
    from grpokit.apps.demo import prepare_demo_model, run_demo
    from grpokit.config import DemoGRPOConfig, DemoPPOConfig

    if isinstance(config, DemoGRPOConfig) and config.env.name is not None:
        from grpokit.apps.agent_demo import run_agent_demo

        return run_agent_demo(config).train_result
    if isinstance(config, DemoGRPOConfig):
        return run_demo(config).train_result
    if not isinstance(config, DemoPPOConfig):
        raise ValueError(
            "model.name_or_path is unset and the config has no demo section: set --model PATH, or run the "
            "built-in demo with --preset demo"
        )
    from grpokit.trainers.ppo import train

    model_dir = prepare_demo_model(config, (lambda _: None) if config.logging.quiet else print)
    return train(
        config.model_copy(update={"model": config.model.model_copy(update={"name_or_path": str(model_dir)})})
    )


def _launch_processes(
    num_processes: int, config: GRPOConfig | PPOConfig, argv: Sequence[str], *, demo: bool
) -> int:
    """Re-run this command under ``accelerate launch`` on ``num_processes`` processes; returns its status."""
    import subprocess

    from grpokit.engine.parallel import accelerate_launch_command, check_splittable, launched_distributed

    if demo or config.model.name_or_path is None:
        raise ValueError("--num_processes needs model.name_or_path (the built-in demo runs in one process)")
    if launched_distributed():
        raise ValueError("--num_processes: this process was already started by a launcher (accelerate)")
    check_splittable(config, num_processes)  # a config error is reported once, before any process starts
    return subprocess.call(accelerate_launch_command(num_processes, ["train", *argv]))


def _resumed_config(resume: str, overrides: dict[str, Any]) -> str | None:
    """The run's own config.yaml when resuming without a config file (``latest`` needs output_dir)."""
    from grpokit.engine.checkpoint import find_checkpoint, run_dir_of

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
# config
# ---------------------------------------------------------------------------------------------------------


def _config(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="grpokit config",
        description="Write a commented starter config for grpokit train: the fields set first uncommented "
        "with their defaults, every other field commented out with its default, each under its description "
        "(the text of docs/configuration.md). Loaded back unchanged it is the trainer's default config.",
        epilog="example: grpokit config init --trainer grpo > my.yaml; edit it; grpokit train --config my.yaml",
    )
    sub = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    init = sub.add_parser("init", help="write a starter YAML config (stdout, or --output FILE)")
    init.add_argument("--trainer", default="grpo", choices=["grpo", "ppo"], help="default: grpo")
    init.add_argument("--minimal", action="store_true", help="only the fields set first")
    init.add_argument("-o", "--output", default=None, help="write this file (it must not exist yet)")
    args = parser.parse_args(list(argv))
    from grpokit.config import starter_yaml

    text = starter_yaml(args.trainer, minimal=args.minimal)
    if args.output is None:
        print(text, end="")
        return 0
    from pathlib import Path

    path = Path(args.output)
    if path.exists():
        raise ValueError(f"{path} exists; choose another --output or remove it")
    path.write_text(text, encoding="utf-8")
    print(f"wrote {path}: grpokit train --config {path}", file=sys.stderr)
    return 0


# ---------------------------------------------------------------------------------------------------------
# compare
# ---------------------------------------------------------------------------------------------------------

_COMPARE_USAGE = """usage: grpokit compare [CONFIG.yaml] [--seeds S ...] [--budget KIND=AMOUNT] [--output-dir DIR]
                       [--eval-data FILE] [--lr-sweep LR ...]
                       [--FIELD VALUE ...] [--grpo.FIELD VALUE ...] [--ppo.FIELD VALUE ...] [--print-config]

Train GRPO and PPO on the same model, task, completions per step and step budget, each run in a fresh
process, and write a table (compare.md, compare.json), reward curves (compare.png) and the runs overlaid in
one report (compare.html): peak memory, parameters held, time per step, training reward, held-out accuracy
and KL to the starting policy, as mean and spread over seeds. Without CONFIG: the built-in addition task on
the demo's warmed-up tiny model.

  CONFIG.yaml           a grpokit train config (the same file mechanism); its grpo: and ppo: sections, if
                        any, set fields for one system only
  --FIELD VALUE         a field for both systems; a field only one trainer has goes to that one
  --grpo.FIELD VALUE    a field for GRPO only (--ppo.FIELD VALUE: PPO only)
  --budget KIND=AMOUNT  what both runs get equal: steps=N (max_steps), tokens=T (stop after the step at
                        which T completion tokens have been generated, every sampling round counted) or
                        cpu_seconds=S (stop after the step at which S seconds of process CPU time have been
                        spent); max_steps stays the upper bound and sets the learning-rate schedule
                        (default: the config's max_steps). --budget KIND --budget-value AMOUNT also works
  --seeds S [S ...]     one GRPO and one PPO run per seed, one after the other (default: 0 1 2; three or
                        more give the 95% interval of each GRPO - PPO difference)
  --output-dir DIR      where runs and results go (default: OUTPUT_DIR/compare-<date>-<time>)
  --eval-data FILE      held-out prompt rows for your own task, scored by the configured rewards (the
                        built-in task uses its test split)
  --lr-sweep LR [LR ...]
                        one comparison per learning rate (both systems, every seed) in OUTPUT_DIR/lr<LR>/,
                        then lr_sweep.md: quality per rate, each system's best rate, and the two compared
                        at their own best rates
  --print-config        print both resolved configs and exit
  -h, --help            this message

Matching: GRPO samples G completions for each of B prompts; PPO gets B*G prompts with one completion each
(classic PPO), so both generate and train on the same number of completions per step. Both get the same
epochs, beta, KL estimator, loss aggregation, learning rate and schedule: the config's values, else 1 pass,
beta 0.04, k3, token mean and (on the demo's model) the demo's tuned 3e-4 with linear decay. Every remaining
difference between the two resolved configs is listed at the top of compare.md.
"""


def _compare(argv: Sequence[str]) -> int:
    from grpokit.config import read_config_file

    seeds: list[int] = [0, 1, 2]
    lr_sweep: list[float] | None = None
    output_dir: str | None = None
    eval_data: str | None = None
    budget: str | None = None
    budget_value: str | None = None
    per_system: dict[str, dict[str, Any]] = {"grpo": {}, "ppo": {}}
    rest: list[str] = []
    args = list(argv)
    i = 0
    while i < len(args):
        arg = args[i]
        i += 1
        key, eq, value = arg[2:].partition("=") if arg.startswith("--") else ("", "", "")
        if key in (
            "seeds", "output-dir", "output_dir", "eval-data", "eval_data", "budget", "budget-value",
            "budget_value", "lr-sweep", "lr_sweep",
        ) or key.startswith(("grpo.", "ppo.")):  # fmt: skip
            values = [value] if eq else []
            while not eq and i < len(args) and not args[i].startswith("--"):
                values.append(args[i])
                i += 1
                if key not in ("seeds", "lr-sweep", "lr_sweep"):
                    break
            if key in ("lr-sweep", "lr_sweep"):
                try:
                    lr_sweep = [float(v) for v in values]
                except ValueError:
                    raise ValueError(f"--lr-sweep takes learning rates, got {values}") from None
                if not lr_sweep:
                    raise ValueError("--lr-sweep needs at least one learning rate")
            elif key == "seeds":
                try:
                    seeds = [int(v) for v in values]
                except ValueError:
                    raise ValueError(f"--seeds takes integers, got {values}") from None
                if not seeds:
                    raise ValueError("--seeds needs at least one seed")
            elif key.startswith(("grpo.", "ppo.")):
                system, field = key.split(".", 1)
                per_system[system][field] = values[0] if values else "true"  # a boolean given alone
            elif not values:
                raise ValueError(f"--{key} needs a value")
            elif key.startswith("output"):
                output_dir = values[0]
            elif key == "budget":
                budget = values[0]
            elif key.startswith("budget"):
                budget_value = values[0]
            else:
                eval_data = values[0]
        else:
            rest.append(arg)
    config_path, overrides, flags = parse_train_args(rest)
    if flags["help"]:
        print(_COMPARE_USAGE, end="")
        return 0
    if flags["preset"] is not None:
        from grpokit.config import preset_path

        if config_path is not None:
            raise ValueError("give a config file or --preset, not both")
        config_path = str(preset_path(flags["preset"]))
    from grpokit.apps.compare import CompareRunFailed, budget_overrides, build_compare_configs, run_comparison
    from grpokit.apps.compare_report import render_markdown

    if budget is not None or budget_value is not None:
        kind, eq, amount = (budget or "").partition("=")
        if eq and budget_value is not None:
            raise ValueError("give the budget's amount once: --budget KIND=AMOUNT or --budget-value AMOUNT")
        amount = amount if eq else (budget_value or "")
        if not kind or not amount:
            raise ValueError(
                "--budget needs a kind and an amount: --budget steps=N, --budget tokens=T or "
                "--budget cpu_seconds=S (or --budget KIND --budget-value AMOUNT)"
            )
        try:
            budget_amount = float(amount)
        except ValueError:
            raise ValueError(f"--budget {kind}: the amount must be a number, got {amount!r}") from None
        overrides = {**overrides, **budget_overrides(kind, budget_amount)}
    data = read_config_file(config_path) if config_path else {}
    grpo, ppo = build_compare_configs(data, overrides, per_system)
    from grpokit.config import check_runnable

    check_runnable(grpo)  # a model (or the demo), prompts and a reward, before any run starts
    if flags["print_config"]:
        import yaml

        for name, config in (("GRPO", grpo), ("PPO", ppo)):
            dumped = yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False, default_flow_style=None)
            print(f"# {name}\n{dumped}", end="")
        return 0
    _quiet_libraries()
    log = (lambda _: None) if grpo.logging.quiet else print
    if lr_sweep is not None:
        import os
        from datetime import datetime

        from grpokit.apps.compare_sweep import render_sweep, run_lr_sweep

        stamp = f"compare-lr-sweep-{datetime.now():%Y%m%d-%H%M%S}"
        sweep_dir = output_dir or os.path.join(grpo.logging.output_dir, stamp)
        try:
            summaries = run_lr_sweep(
                lambda extra: build_compare_configs(data, {**overrides, **extra}, per_system), lr_sweep,
                run_comparison, seeds=seeds, output_dir=sweep_dir, eval_data=eval_data, log=log,
            )  # fmt: skip
        except CompareRunFailed as err:
            print(f"grpokit compare: error: {err}", file=sys.stderr)
            return 1
        print(render_sweep(summaries), end="")
        return 0
    try:
        summary = run_comparison(grpo, ppo, seeds=seeds, output_dir=output_dir, eval_data=eval_data, log=log)
    except CompareRunFailed as err:
        print(f"grpokit compare: error: {err}", file=sys.stderr)
        return 1
    print(render_markdown(summary), end="")
    return 0


# ---------------------------------------------------------------------------------------------------------
# merge
# ---------------------------------------------------------------------------------------------------------


def _merge(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="grpokit merge",
        description="Fold the LoRA adapters of a checkpoint (RUN_DIR/final or RUN_DIR/checkpoints/step-N) "
        "into their base model and save a full model with its tokenizer, loadable by plain transformers.",
    )
    parser.add_argument("--adapter", required=True, help="LoRA checkpoint directory (adapter_config.json)")
    parser.add_argument("--output", required=True, help="directory of the merged model (new or empty)")
    parser.add_argument("--base", default=None, help="base model directory (default: the run's own)")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    args = parser.parse_args(list(argv))
    _quiet_libraries()
    from grpokit.models.lora import merge_adapter

    output = merge_adapter(args.adapter, args.output, base=args.base, dtype=args.dtype)
    print(f"merged model: {output}")
    return 0


# ---------------------------------------------------------------------------------------------------------
# eval
# ---------------------------------------------------------------------------------------------------------


_EVAL_EPILOG = """With a config (--config FILE, or any --FIELD VALUE of grpokit train), the rows of data.path (or
the held-out problems of data.task) are scored by the config's rewards (rewards.reward_funcs,
reward_weights, reward_kwargs, reward_model) with its generation settings, as in training:

  grpokit eval --config my.yaml --model runs/RUN/final [--data.path held_out.jsonl] [--k 8]

The JSON summary has the mean reward of the greedy completions (and of the samples when k > 1), each
function's own mean, and, where "solved" is defined, the solved fraction of the greedy completions
(accuracy) and pass@k (unbiased estimator, Chen et al. 2021). A completion is solved when its reward is
>= --threshold; without it, when the rewards are pass/fail (every observed reward 0 or 1), a reward of 1;
with graded rewards and no --threshold, only the means are reported.

Without a config: a built-in task's held-out problems and its checker (--task, default addition)."""


def _eval(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="grpokit eval",
        description="Score a checkpoint on held-out rows: your data with your config's rewards (mean reward,\n"
        "solved fraction, pass@k), or a built-in task's problems with its checker (accuracy, pass@k).",
        epilog=_EVAL_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        allow_abbrev=False,  # --FIELD VALUE config overrides must not be taken for abbreviated options
    )
    parser.add_argument("--config", default=None, help="a grpokit train config file (the one trained with)")
    parser.add_argument(
        "--model", default=None, help="checkpoint directory (save_pretrained layout; default with --config: "
        "its model.name_or_path, the starting model)",
    )  # fmt: skip
    parser.add_argument(
        "--task", default=None, help="built-in task (default without a config: addition; with one: sets "
        "data.task and evaluates its held-out problems instead of data.path)",
    )  # fmt: skip
    parser.add_argument("--k", type=int, default=1, help="pass@k's k; samples per problem (default: 1)")
    parser.add_argument(
        "--num-samples", type=int, default=None, help="samples per problem, >= k (default: k)"
    )
    parser.add_argument(
        "--num-problems", type=int, default=None,
        help="held-out problems (default: every row of data.path, or data.num_eval_problems of data.task; "
        "without a config: 200)",
    )  # fmt: skip
    parser.add_argument(
        "--threshold", type=float, default=None,
        help="with a config: a completion is solved when its reward is >= this (default: see below)",
    )  # fmt: skip
    parser.add_argument(
        "--max-new-tokens", type=int, default=None, help="completion budget (default: the config's or task's)"
    )
    parser.add_argument(
        "--temperature",
        type=float,
        default=None,
        help="sampling temperature for k > 1 (default: the config's)",
    )
    parser.add_argument(
        "--seed", type=int, default=None, help="sampling seed (default: the config's seed, or 0)"
    )
    parser.add_argument("--device", default=None, help="cpu, cuda or auto (default: the config's, or auto)")
    parser.add_argument(
        "--batch-size", type=int, default=64, help="completions per generate call (default: 64)"
    )
    args, rest = parser.parse_known_args(list(argv))
    config_path, overrides, flags = parse_train_args(rest)
    if args.config is not None:
        if config_path is not None:
            raise ValueError(f"two config files given: {config_path!r} and {args.config!r}")
        config_path = args.config
    if flags["preset"] is not None:
        from grpokit.config import preset_path

        if config_path is not None:
            raise ValueError("give a config file or --preset, not both")
        config_path = str(preset_path(flags["preset"]))
    for name in ("k", "num_samples", "num_problems", "batch_size"):
        value = getattr(args, name)
        if value is not None and value < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be >= 1, got {value}")
    if args.num_samples is not None and args.num_samples < args.k:
        raise ValueError(f"--num-samples ({args.num_samples}) must be >= --k ({args.k})")
    if config_path is not None or overrides:
        return _eval_with_config(args, config_path, overrides)
    if args.model is None:
        parser.error("--model is required (or --config FILE, whose model.name_or_path is the default)")
    if args.threshold is not None:
        raise ValueError("--threshold applies to rewards (with --config); a task's checker is pass/fail")
    _quiet_libraries()
    import json

    from grpokit.apps.demo import held_out_problems
    from grpokit.apps.evaluation import evaluate
    from grpokit.data.tasks import get_task
    from grpokit.engine.runs import resolve_device
    from grpokit.models.loading import load_model, load_tokenizer

    task_name = args.task or "addition"
    task = get_task(task_name)
    tokenizer = load_tokenizer(args.model)
    model = load_model(args.model, device=resolve_device(args.device or "auto"))
    rows = held_out_problems(task, args.num_problems or 200)
    options: dict[str, Any] = {"k": args.k, "seed": args.seed or 0, "batch_size": args.batch_size}
    if args.num_samples is not None:
        options["num_samples"] = args.num_samples
    if args.max_new_tokens is not None:
        options["max_new_tokens"] = args.max_new_tokens
    if args.temperature is not None:
        options["temperature"] = args.temperature
    result = evaluate(model, tokenizer, rows, task.check, **options)
    print(json.dumps({"model": args.model, "task": task_name, "num_problems": len(rows), **result}, indent=2))
    return 0


def _eval_with_config(args: argparse.Namespace, config_path: str | None, overrides: dict[str, Any]) -> int:
    """``grpokit eval`` with a config: the config's held-out rows scored by its rewards; prints JSON."""
    from pathlib import Path

    from grpokit.config import check_runnable, load_config

    overrides = dict(overrides)
    if args.task is not None:
        overrides.update({"data.task": args.task, "data.path": None})
    if args.model is not None:
        overrides["model.name_or_path"] = args.model
    config = load_config(config_path, overrides, cls=None)
    model_path = config.model.name_or_path
    if model_path is None:
        raise ValueError("no model: set --model PATH (the checkpoint to evaluate, e.g. runs/RUN/final)")
    check_runnable(config)  # prompts and a reward, named before any model loads
    _quiet_libraries()
    import json

    from grpokit.apps.evaluation import evaluate_rewards, held_out_rows
    from grpokit.engine.runs import resolve_device
    from grpokit.models.loading import load_model, load_tokenizer
    from grpokit.rewards import RewardPipeline
    from grpokit.trainers.prompts import screen_prompt_lengths

    problems = None
    if config.data.path is None and config.data.task is not None:  # the task's held-out (test) problems
        from grpokit.apps.demo import held_out_problems
        from grpokit.data.tasks import get_task

        problems = held_out_problems(
            get_task(config.data.task), args.num_problems or config.data.num_eval_problems
        )
    rows = held_out_rows(config, args.num_problems, problems)
    # A checkpoint saves its tokenizer; a bare model directory may rely on model.tokenizer_name_or_path.
    has_tokenizer = any(
        (Path(model_path) / name).is_file() for name in ("tokenizer.json", "tokenizer_config.json")
    )
    tokenizer = load_tokenizer(
        model_path
        if has_tokenizer or config.model.tokenizer_name_or_path is None
        else config.model.tokenizer_name_or_path
    )
    kept, counts = screen_prompt_lengths(config, tokenizer, rows)  # prompt_truncation: skip drops rows
    rows = list(kept)
    if not rows:
        raise ValueError("every held-out prompt is longer than generation.max_prompt_length")
    device = resolve_device(args.device or config.model.device)
    model = load_model(model_path, dtype=config.model.dtype, device=device)
    gen = config.generation
    rewards = RewardPipeline.from_config(
        config.rewards, task=config.data.task, max_new_tokens=gen.max_new_tokens, tokenizer=tokenizer,
        device=device,
    )  # fmt: skip
    result = evaluate_rewards(
        model, tokenizer, rows, rewards, k=args.k, num_samples=args.num_samples, threshold=args.threshold,
        temperature=gen.temperature if args.temperature is None else args.temperature, top_p=gen.top_p,
        top_k=gen.top_k, max_new_tokens=args.max_new_tokens or gen.max_new_tokens,
        max_prompt_length=gen.max_prompt_length,
        prompt_truncation="left" if gen.prompt_truncation == "left" else "error",
        batch_size=args.batch_size, seed=config.seed if args.seed is None else args.seed,
        prompt_column=config.data.prompt_column,
    )  # fmt: skip
    summary = {
        "model": model_path,
        "data": config.data.path or f"task:{config.data.task}",
        "rewards": rewards.names + (["process"] if rewards.process_function is not None else []),
        **{key: int(value) for key, value in counts.items()},
        **result,
    }
    print(json.dumps(summary, indent=2))
    return 0
