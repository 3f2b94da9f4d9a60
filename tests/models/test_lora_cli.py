"""``grpokit merge``: a LoRA run's final adapters become a full model that plain transformers loads."""

from __future__ import annotations

import pytest
import torch

from grpokit.cli import main
from grpokit.config import GRPOConfig, build_config
from grpokit.models import build_char_tokenizer, build_tiny_model
from grpokit.trainers.grpo import GRPOTrainer


def fraction_of_a(prompts, completions, **columns):
    return [c.count("a") / max(len(c), 1) for c in completions]


@pytest.fixture(scope="module")
def lora_run(tmp_path_factory):
    base = tmp_path_factory.mktemp("base")
    build_tiny_model(build_char_tokenizer("abcdefgh "), base, hidden_size=32, num_layers=1, num_heads=2,
                     intermediate_size=64, seed=1)  # fmt: skip
    out = tmp_path_factory.mktemp("runs")
    config = build_config(
        GRPOConfig,
        {
            "max_steps": 2,
            "model": {
                "name_or_path": str(base),
                "device": "cpu",
                "lora": {"r": 2, "target_modules": ["q_proj", "v_proj"]},
            },
            "data": {"prompts_per_step": 2},
            "generation": {"max_new_tokens": 5},
            "optim": {"learning_rate": 5e-2},
            "algorithm": {"num_generations": 4},
            "logging": {
                "output_dir": str(out),
                "run_name": "lora",
                "quiet": True,
                "report_to": [],
                "report": False,
            },
        },
    )
    trainer = GRPOTrainer(
        config, reward_funcs=[fraction_of_a], dataset=[{"prompt": p} for p in ["ab", "cd", "ef"]]
    )
    return trainer, trainer.train().final_dir


def test_merge_command_writes_a_plain_transformers_model(lora_run, tmp_path, capsys):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    trainer, final = lora_run
    output = tmp_path / "merged"
    assert main(["merge", "--adapter", str(final), "--output", str(output)]) == 0
    assert f"merged model: {output}" in capsys.readouterr().out
    merged = AutoModelForCausalLM.from_pretrained(output).eval()
    assert not any("lora" in name for name, _ in merged.named_parameters())
    ids = AutoTokenizer.from_pretrained(output)(["abba", "hgfe"], return_tensors="pt").input_ids
    with torch.no_grad():
        torch.testing.assert_close(merged(input_ids=ids).logits, trainer.model.eval()(input_ids=ids).logits,
                                   rtol=0, atol=1e-5)  # fmt: skip


def test_merge_errors_name_the_argument(lora_run, tmp_path, capsys):
    _, final = lora_run
    assert main(["merge", "--adapter", str(tmp_path), "--output", str(tmp_path / "m")]) == 2
    assert "--adapter" in capsys.readouterr().err
    assert main(["merge", "--adapter", str(final), "--output", str(final)]) == 2
    assert "--output" in capsys.readouterr().err
