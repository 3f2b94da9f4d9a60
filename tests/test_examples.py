"""The example configs stay valid, and the GSM8K and process-supervision recipes run end to end."""

import json
import string
from pathlib import Path

import pytest

from grpokit.cli import main
from grpokit.config import GRPOConfig, load_config

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
QUIET = ["--quiet", "--report_to", "[]", "--report", "false"]


@pytest.mark.parametrize("path", sorted(EXAMPLES.glob("*.yaml")), ids=lambda p: p.name)
def test_example_config_validates(path):
    config = load_config(str(path), {}, cls=GRPOConfig)
    assert config.algorithm.num_generations >= 2


@pytest.fixture(scope="module")
def chat_model_dir(tmp_path_factory):
    """A tiny Qwen2 whose character tokenizer has a chat template, like an instruct model."""
    from grpokit.models.tiny import build_char_tokenizer, build_tiny_model

    path = tmp_path_factory.mktemp("chat-tiny")
    tokenizer = build_char_tokenizer(string.printable[:95])
    tokenizer.chat_template = (
        "{% for m in messages %}<{{ m['role'] }}>{{ m['content'] }}\n{% endfor %}"
        "{% if add_generation_prompt %}<assistant>{% endif %}"
    )
    build_tiny_model(tokenizer, path, hidden_size=32, num_layers=2, num_heads=2, intermediate_size=64, seed=0)
    return path


def test_gsm8k_recipe_runs_on_a_local_model_with_gsm8k_rows(chat_model_dir, tmp_path):
    data = tmp_path / "gsm8k.jsonl"
    rows = [
        {"question": "Tom has 3 apples and buys 4 more. How many apples?", "answer": "3 + 4 = 7\n#### 7"},
        {"question": "A box holds 6 eggs. How many eggs in 2 boxes?", "answer": "6 * 2 = 12\n#### 12"},
    ]
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    args = ["train", "--config", str(EXAMPLES / "gsm8k.yaml"), "--model", str(chat_model_dir)]
    args += ["--data.path", str(data), "--prompts_per_step", "2", "--num_generations", "2"]
    args += ["--max_new_tokens", "8", "--max_steps", "1", "--dtype", "float32", "--device", "cpu"]
    args += ["--gradient_accumulation_steps", "1", "--output_dir", str(tmp_path / "runs"), "--run_name", "r"]
    assert main(args + QUIET) == 0
    row = json.loads((tmp_path / "runs" / "r" / "metrics.jsonl").read_text().splitlines()[0])
    assert {"rewards/math_verify/mean", "rewards/think_answer_format/mean"} <= set(row)
    # the system prompt went through the chat template into the prompts the model saw
    sample = json.loads((tmp_path / "runs" / "r" / "samples.jsonl").read_text().splitlines()[0])
    assert sample["prompt"][0]["role"] == "system" and "<answer>" in sample["prompt"][0]["content"]


def test_process_supervision_recipe_runs(tmp_path, monkeypatch):
    from grpokit.models.tiny import build_char_tokenizer, build_tiny_model

    monkeypatch.chdir(EXAMPLES.parent)  # the recipe names examples/process_rewards.py relative to the repo
    model = tmp_path / "model"
    build_tiny_model(build_char_tokenizer("0123456789+="), model, hidden_size=32, num_layers=2, num_heads=2,
                     intermediate_size=64, seed=0)  # fmt: skip
    args = ["train", "--config", str(EXAMPLES / "process_supervision.yaml"), "--model", str(model)]
    args += ["--prompts_per_step", "2", "--num_generations", "4", "--max_new_tokens", "4", "--max_steps", "2"]
    args += ["--device", "cpu", "--output_dir", str(tmp_path / "runs"), "--run_name", "p"]
    assert main(args + QUIET) == 0
    rows = [json.loads(line) for line in (tmp_path / "runs" / "p" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2]
