from pathlib import Path

from grpokit.config import GRPOConfig, field_paths
from grpokit.config_reference import render

DOC = Path(__file__).resolve().parents[1] / "docs" / "configuration.md"


def test_committed_reference_matches_the_config_classes():
    assert DOC.read_text(encoding="utf-8") == render(), (
        "docs/configuration.md is stale: run `python -m grpokit.config_reference > docs/configuration.md`"
    )


def test_every_grpo_field_is_documented_with_a_description():
    text = render()
    for path in field_paths(GRPOConfig):
        row = next(line for line in text.splitlines() if line.startswith(f"| `{path}` |"))
        assert row.rsplit("|", 2)[-2].strip(), f"{path} has no description"
