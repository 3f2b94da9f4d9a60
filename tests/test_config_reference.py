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


def test_starter_yaml_comments_come_from_the_field_docstrings():
    import re

    import yaml

    from grpokit.config import COMMON_FIELDS, PPOConfig, build_config, field_help, starter_yaml
    from grpokit.config.starter import _check_common_fields

    _check_common_fields()  # every common field exists in its trainer's config
    for trainer, cls in (("grpo", GRPOConfig), ("ppo", PPOConfig)):
        text = starter_yaml(trainer)
        flat = " ".join(re.sub(r"^[#\s]+", "", line) for line in text.splitlines())
        flat = " ".join(flat.split())
        for path, default, doc in field_help(cls):
            name = path.rsplit(".", 1)[-1]
            assert " ".join(doc.replace("``", "`").split()) in flat, path  # the reference's text
            prefix = "" if path in (*COMMON_FIELDS[trainer], "trainer") else "# "
            assert re.search(
                rf"^\s*{re.escape(prefix)}\s*{re.escape(name)}: {re.escape(default)}$", text, re.M
            ), path
        # Uncommenting every field (and section header) gives the defaults too.
        names = {p.split(".")[i] for p in field_paths(cls) for i in range(p.count(".") + 1)}
        pattern = re.compile(r"^(\s*)# (\s*)(\w+):( .*)?$")
        lines = []
        for line in text.splitlines():
            match = pattern.match(line)
            if match and match.group(3) in names:
                line = match.group(1) + match.group(2) + line[match.end(2) :]
            lines.append(line)
        assert build_config(cls, yaml.safe_load("\n".join(lines))) == cls()
