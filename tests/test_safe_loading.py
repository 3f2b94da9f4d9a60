"""No file grpokit reads can run code: every ``torch.load`` passes ``weights_only=True``, nothing unpickles,
and model weights come from safetensors only.

The source scan walks the syntax tree (not the text), so a call split over lines, an alias
(``from torch import load``) or ``weights_only=False`` cannot slip through.
"""

import ast
from pathlib import Path

import pytest
import torch

SRC = Path(__file__).resolve().parents[1] / "src" / "grpokit"
UNPICKLERS = {("pickle", "load"), ("pickle", "loads"), ("pickle", "Unpickler"), ("dill", "load"),
              ("dill", "loads"), ("joblib", "load"), ("cloudpickle", "load"), ("cloudpickle", "loads"),
              ("marshal", "load"), ("marshal", "loads"), ("shelve", "open")}  # fmt: skip


def unsafe_calls(source: str) -> list[str]:
    """``line: text`` of each call in ``source`` that could unpickle."""
    tree = ast.parse(source)
    found = []
    aliases = {}  # local name -> (module, attribute), from "from torch import load as l"
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module in {"torch", *{m for m, _ in UNPICKLERS}}:
            for alias in node.names:
                aliases[alias.asname or alias.name] = (node.module, alias.name)
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        func = node.func
        if isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name):
            target = (func.value.id, func.attr)
        elif isinstance(func, ast.Name) and func.id in aliases:
            target = aliases[func.id]
        else:
            continue
        if target == ("torch", "load"):
            safe = any(
                k.arg == "weights_only" and isinstance(k.value, ast.Constant) and k.value.value is True
                for k in node.keywords
            )
            if not safe:
                found.append(f"{node.lineno}: torch.load without weights_only=True")
        elif target in UNPICKLERS:
            found.append(f"{node.lineno}: {target[0]}.{target[1]}")
        elif target in {("np", "load"), ("numpy", "load")} and any(k.arg == "allow_pickle" for k in node.keywords):
            found.append(f"{node.lineno}: numpy.load with allow_pickle")
    return found


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("import torch\ntorch.load(p)", ["2: torch.load without weights_only=True"]),
        (
            "import torch\ntorch.load(\n  p,\n  weights_only=False)",
            ["2: torch.load without weights_only=True"],
        ),
        ("from torch import load as l\nl(p)", ["2: torch.load without weights_only=True"]),
        ("import pickle\npickle.loads(b)", ["2: pickle.loads"]),
        ("import numpy as np\nnp.load(p, allow_pickle=True)", ["2: numpy.load with allow_pickle"]),
        ("import torch\ntorch.load(p, map_location='cpu', weights_only=True)", []),
    ],
)
def test_the_scan_catches_what_it_should(source, expected):
    assert unsafe_calls(source) == expected


def test_no_unsafe_deserialisation_in_the_package():
    files = sorted(SRC.rglob("*.py"))
    assert len(files) > 30
    found = {str(p.relative_to(SRC)): calls for p in files if (calls := unsafe_calls(p.read_text("utf-8")))}
    assert found == {}


def test_every_from_pretrained_insists_on_safetensors():
    """Loading a model from a directory must never fall back to pickled ``.bin`` weights."""
    offenders = []
    for path in sorted(SRC.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text("utf-8"))):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr == "from_pretrained"
                and isinstance(node.func.value, ast.Name)
                and node.func.value.id.startswith("AutoModel")
            ):
                keywords = {k.arg: k.value for k in node.keywords}
                value = keywords.get("use_safetensors")
                if not (isinstance(value, ast.Constant) and value.value is True):
                    offenders.append(f"{path.relative_to(SRC)}:{node.lineno}")
    assert offenders == []


def test_a_pickled_checkpoint_is_refused(tmp_path):
    """``weights_only=True`` in action: a trainer_state.pt holding an arbitrary object does not load."""
    from grpokit.engine import checkpoint as ckpt

    class Payload:
        def __reduce__(self):
            return (print, ("code ran",))

    path = tmp_path / "step-000001"
    path.mkdir()
    torch.save({"step": 1, "payload": Payload()}, path / ckpt.STATE_FILE)
    with pytest.raises(ValueError, match="trainer_state.pt cannot be read .*Weights only load failed"):
        ckpt.load_trainer_state(path)


def test_model_directory_with_only_pickled_weights_is_refused(tmp_path):
    from grpokit.models.loading import load_model

    (tmp_path / "config.json").write_text("{}")
    (tmp_path / "pytorch_model.bin").write_bytes(b"pickle")
    with pytest.raises(
        ValueError, match=r"has no \*.safetensors weights \(found: \['config.json', 'pytorch_model.bin'\]\)"
    ):
        load_model(tmp_path)
