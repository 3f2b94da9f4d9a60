"""The configuration reference (``docs/configuration.md``), generated from the config classes.

Regenerate after changing a config field::

    python -m grpokit.config_reference > docs/configuration.md

``tests/test_config_reference.py`` fails when the committed file and the classes disagree.
"""

from __future__ import annotations

from pydantic import BaseModel

from grpokit.config import GRPOConfig, PPOConfig, RewardModelConfig, field_help

_HEADER = """# Configuration reference

Generated from the config classes by `python -m grpokit.config_reference`; do not edit by hand.

Every field can be set in the YAML file (sections as nested mappings) or on the command line by its name
or dotted path: `grpokit train config.yaml --beta 0.04 --generation.temperature 0.9`. Unknown fields
are rejected with a suggestion. `grpokit train --help` shows the fields set first; `grpokit config init
--trainer grpo > my.yaml` writes a starter file with every field below, commented with the same text.
"""


def _table(title: str, command: str, cls: type[BaseModel]) -> str:
    lines = [f"## {title}", "", f"Used by `{command}`.", "", "| field | default | description |", "|---|---|---|"]
    for path, default, text in field_help(cls):
        # Docstrings use reST ``code``; Markdown wants `code`. A bare pipe would end the table cell.
        escaped = text.replace("``", "`").replace("|", "\\|")
        lines.append(f"| `{path}` | `{default}` | {escaped} |")
    return "\n".join(lines)


def render() -> str:
    """The whole reference as Markdown: GRPO, PPO, classic-RL and reward-model configs, one table each."""
    from grpokit.rl.config import RLConfig  # the classic-RL config lives with its trainer

    sections = [
        _table("GRPO (`GRPOConfig`)", "grpokit train", GRPOConfig),
        _table("PPO (`PPOConfig`)", "grpokit train --trainer ppo / grpokit compare", PPOConfig),
        _table("Classic RL (`RLConfig`)", "grpokit rl", RLConfig),
        _table("Reward model (`RewardModelConfig`)", "grpokit rm", RewardModelConfig),
    ]
    return _HEADER + "\n" + "\n\n".join(sections) + "\n"


if __name__ == "__main__":
    print(render(), end="")
