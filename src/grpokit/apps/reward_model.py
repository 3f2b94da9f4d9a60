"""``grpokit rm``: train a reward model on preference pairs.

    grpokit rm --model BODY --train_file pairs.jsonl --output_dir runs       the pairs, a body, a place
    grpokit rm rm.yaml --eval_file held_out.jsonl --learning_rate 1e-5      YAML file, then overrides
    grpokit rm --resume latest --output_dir runs                            continue the newest run

Options are the fields of :class:`grpokit.config.RewardModelConfig`, by name (``--pairs_per_step 32``) or
dotted path (``--data.pairs_per_step 32``), read as YAML, exactly as ``grpokit train`` reads its own. The
trained model is ``RUN_DIR/final``: use it with ``grpokit train --reward_model RUN_DIR/final``.
"""

from __future__ import annotations

import os
import sys
import textwrap
from collections.abc import Sequence
from typing import Any

__all__ = ["main", "parse_rm_args"]

USAGE = """usage: grpokit rm [CONFIG.yaml] --model PATH --train_file PAIRS [--eval_file PAIRS] [--output_dir DIR]
                  [--resume RUN_DIR|latest] [--num_processes N] [--print-config] [--FIELD VALUE ...]

Train a reward model (a causal LM body with a scalar head) on preference pairs with the Bradley-Terry loss.
PAIRS is a .jsonl, .csv or .parquet file or a saved datasets folder with 'chosen' and 'rejected' columns
(text or chat messages), optionally 'prompt' and 'margin'. The model is saved in RUN_DIR/final in the
Hugging Face sequence-classification layout, with its reward center and scale: use it with
grpokit train --reward_model RUN_DIR/final.

  CONFIG.yaml           a YAML file of fields (sections as nested mappings); optional (or --config FILE)
  --model PATH          the body: a local Hugging Face causal LM directory (= --model.name_or_path PATH)
  --FIELD VALUE         override one field, by name (--pairs_per_step 32) or dotted path; VALUE is YAML.
                        A boolean field given alone (--quiet) is set to true.
  --resume RUN|latest   continue a run from its newest checkpoint; without CONFIG the run's config is reused
  --num_processes N     train on N local processes (DDP): accelerate launch ... -m grpokit rm ...
  --print-config        print the resolved config as YAML and exit
  -h, --help            this message, with every field
"""

# Flags named after a section stand for its main field: --model PATH sets model.name_or_path.
_SHORTHANDS = {"model": "model.name_or_path"}


def parse_rm_args(argv: Sequence[str]) -> tuple[str | None, dict[str, Any], dict[str, Any]]:
    """Split ``rm`` arguments into (config path, field overrides, flags ``help``/``print_config``).

    Raises ``ValueError`` for a stray positional argument or a non-boolean field given without a value.
    """
    from grpokit.config import RewardModelConfig, field_help, split_command_line

    bool_fields = {
        name for path, default, _ in field_help(RewardModelConfig) if default in ("true", "false")
        for name in (path, path.rsplit(".", 1)[-1])
    }  # fmt: skip
    return split_command_line(argv, bool_fields, shorthands=_SHORTHANDS)


def _help() -> str:
    from grpokit.config import RewardModelConfig, field_help

    lines = [USAGE, "fields (default, description):"]
    section = None
    for path, default, text in field_help(RewardModelConfig):
        head = path.split(".")[0] if "." in path else ""
        if head != section:
            section = head
            lines.append(f"\n  [{head or 'top level'}]")
        alias = f" | --{path.rsplit('.', 1)[-1]}" if "." in path else ""
        body = textwrap.fill(
            text.replace("``", "`"), width=100, initial_indent=" " * 8, subsequent_indent=" " * 8
        )
        lines.append(f"  --{path}{alias}  (default: {default})\n{body}")
    return "\n".join(lines) + "\n"


def _resumed_config(resume: str, overrides: dict[str, Any]) -> str | None:
    """The run's own config.yaml when resuming without a config file."""
    from grpokit.engine.checkpoint import find_checkpoint, run_dir_of

    output_dir = overrides.get("output_dir") or overrides.get("logging.output_dir") or "runs"
    saved = run_dir_of(find_checkpoint(resume, output_dir)) / "config.yaml"
    return str(saved) if saved.is_file() else None


def main(argv: Sequence[str]) -> int:
    """``grpokit rm ARGS``; returns the exit status (errors are raised for the CLI to report)."""
    from grpokit.config import RewardModelConfig, load_config
    from grpokit.engine.parallel import accelerate_launch_command, launched_distributed, split_num_processes

    argv, num_processes = split_num_processes(argv)
    config_path, overrides, flags = parse_rm_args(argv)
    if flags["help"]:
        print(_help(), end="")
        return 0
    resume = overrides.get("resume") or overrides.get("checkpoint.resume")
    if config_path is None and resume:
        config_path = _resumed_config(str(resume), overrides)
    config = load_config(config_path, overrides, cls=RewardModelConfig)
    if flags["print_config"]:
        import yaml

        print(
            yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False, default_flow_style=None), end=""
        )
        return 0
    if config.model.name_or_path is None:
        raise ValueError("no model: set --model PATH (a local Hugging Face causal LM directory, the body)")
    if config.data.train_file is None:
        raise ValueError(
            "no pairs: set --train_file FILE (.jsonl, .csv, .parquet with chosen/rejected columns)"
        )
    if num_processes is not None and num_processes > 1:
        import subprocess

        if launched_distributed():
            raise ValueError("--num_processes: this process was already started by a launcher (accelerate)")
        if config.data.pairs_per_step % num_processes:
            raise ValueError(
                f"data.pairs_per_step ({config.data.pairs_per_step}) must be divisible by --num_processes "
                f"({num_processes})"
            )
        return subprocess.call(accelerate_launch_command(num_processes, ["rm", *argv]))
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()  # the new head's "newly initialized" notice is expected
    from grpokit.trainers.reward_model import train_reward_model

    result = train_reward_model(config)
    if not config.logging.quiet and os.environ.get("RANK", "0") == "0":  # one summary, from rank 0
        center, scale = result.reward_center, result.reward_scale
        accuracy = result.last_metrics.get("eval/accuracy")
        if accuracy is not None:
            print(f"held-out pairwise accuracy: {accuracy:.3f}")
        if center is not None:
            print(f"reward normalisation: center {center:.4g}, scale {scale:.4g} (saved in config.json)")
        print(f"final reward model: {result.final_dir}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main(sys.argv[1:]))
