"""LoRA policies: only adapters train, the reference is the base with adapters disabled (no copy), checkpoints
hold adapters only, and merging gives a plain transformers model with the adapted model's logits."""

from __future__ import annotations

import json

import pytest
import torch

from grpokit.config import GRPOConfig, build_config
from grpokit.models import build_char_tokenizer, build_tiny_model, load_model
from grpokit.models.forward import sequence_logprobs
from grpokit.models.lora import (
    AdapterDisabledReference,
    apply_lora,
    is_adapter_dir,
    is_lora_model,
    load_policy,
    merge_adapter,
    trainable_state_bytes,
)
from grpokit.tracking import read_metrics
from grpokit.trainers import language_model
from grpokit.trainers.grpo import GRPOTrainer

PROMPTS = ["ab", "cd", "ef", "gh", "ba", "dc"]


@pytest.fixture(scope="module")
def base_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("tiny-lora")
    tokenizer = build_char_tokenizer("abcdefgh ")
    build_tiny_model(tokenizer, path, hidden_size=32, num_layers=2, num_heads=2, intermediate_size=64, seed=0)
    return path


def fraction_of_a(prompts, completions, **columns):
    return [c.count("a") / max(len(c), 1) for c in completions]


@pytest.fixture
def lora_config(base_dir, tmp_path):
    def make(steps=3, beta=0.1, resume=None, lora=None, save_steps=1) -> GRPOConfig:
        return build_config(
            GRPOConfig,
            {
                "max_steps": steps,
                "model": {"name_or_path": str(base_dir), "device": "cpu",
                          "lora": lora or {"r": 4, "alpha": 8}},
                "data": {"prompts_per_step": 2, "shuffle": False},
                "generation": {"max_new_tokens": 6},
                "optim": {"learning_rate": 3e-2},
                "algorithm": {"num_generations": 4, "beta": beta},
                "checkpoint": {"save_steps": save_steps, "save_total_limit": None, "resume": resume},
                "logging": {"output_dir": str(tmp_path / "runs"), "run_name": "lora", "quiet": True,
                            "report_to": [], "report": False},
            },
        )  # fmt: skip

    return make


@pytest.fixture(scope="module")
def trained(base_dir, tmp_path_factory):
    """One 3-step LoRA run with beta > 0, shared by the tests that only read it."""
    out = tmp_path_factory.mktemp("runs")
    config = build_config(
        GRPOConfig,
        {
            "max_steps": 3,
            "model": {"name_or_path": str(base_dir), "device": "cpu", "lora": {"r": 4, "alpha": 8}},
            "data": {"prompts_per_step": 2, "shuffle": False},
            "generation": {"max_new_tokens": 6},
            "optim": {"learning_rate": 3e-2},
            "algorithm": {"num_generations": 4, "beta": 0.1},
            "checkpoint": {"save_steps": 1, "save_total_limit": None},
            "logging": {
                "output_dir": str(out),
                "run_name": "lora",
                "quiet": True,
                "report_to": [],
                "report": False,
            },
        },
    )
    trainer = GRPOTrainer(config, reward_funcs=[fraction_of_a], dataset=[{"prompt": p} for p in PROMPTS])
    before = {name: p.detach().clone() for name, p in trainer.model.named_parameters()}
    result = trainer.train()
    return trainer, before, result


def test_only_the_adapters_train(trained):
    trainer, before, _ = trained
    assert is_lora_model(trainer.model)
    names = [name for name, _ in trainer.model.named_parameters()]
    adapters = [n for n in names if "lora_A" in n or "lora_B" in n]
    assert len(adapters) == 2 * 7 * 2  # A and B of 7 projections in each of 2 layers ("all-linear")
    changed = {n for n, p in trainer.model.named_parameters() if not torch.equal(before[n], p)}
    assert changed == set(adapters)  # every adapter moved (A from step 2, once B != 0), no base weight did
    assert all(not p.requires_grad for n, p in trainer.model.named_parameters() if n not in changed)
    assert {id(p) for group in trainer.optimizer.param_groups for p in group["params"]} == {
        id(p) for n, p in trainer.model.named_parameters() if n in changed
    }


def test_the_reference_is_the_base_with_adapters_disabled_exactly(trained, base_dir):
    trainer, _, _ = trained
    assert isinstance(trainer.reference, AdapterDisabledReference)
    batch = trainer.sampler.generate(PROMPTS[:2], 3)
    # The full-fine-tuning reference: a frozen copy of the base (requires_grad off, as ReferencePolicy makes
    # it; that flag picks the matmul kernel, so it must match for bitwise equality).
    frozen_base = load_model(base_dir).eval().requires_grad_(False)
    reference = sequence_logprobs(trainer.reference.model, batch, micro_batch_size=4)  # (N, T)
    assert torch.equal(reference, sequence_logprobs(frozen_base, batch, micro_batch_size=4))
    # ...while the trained policy has moved away from it, and stays in the mode it was in.
    assert not torch.equal(sequence_logprobs(trainer.model, batch, micro_batch_size=4), reference)
    trainer.model.train()
    trainer.reference.model(input_ids=batch.prompt_ids[:1])
    assert trainer.model.training
    trainer.model.eval()


def test_beta_with_lora_loads_no_second_model(lora_config, monkeypatch, base_dir):
    import grpokit.models.loading as loading

    loads = []
    real_load = loading.load_model
    monkeypatch.setattr(loading, "load_model", lambda *a, **k: loads.append(a) or real_load(*a, **k))
    monkeypatch.setattr(language_model, "ReferencePolicy", None)  # a full copy would call it
    trainer = GRPOTrainer(
        lora_config(steps=1), reward_funcs=[fraction_of_a], dataset=[{"prompt": p} for p in PROMPTS]
    )
    assert len(loads) == 1  # the base, once
    reference = trainer.reference.model
    assert reference.state_dict() == {} and list(reference.named_parameters()) == []
    assert {id(p) for p in reference.parameters()} == {id(p) for p in trainer.model.parameters()}
    assert trainer.reference.checkpoint_module() is None


def test_checkpoints_hold_adapters_only_and_resume_exactly(trained, lora_config, base_dir):
    trainer, _, result = trained
    for directory in (result.run_dir / "checkpoints" / "step-000002", result.final_dir):
        files = {p.name for p in directory.iterdir()}
        assert {"adapter_model.safetensors", "adapter_config.json"} <= files
        assert not files & {"model.safetensors", "reference.safetensors"}
        assert is_adapter_dir(directory)
    config = json.loads((result.final_dir / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"] == str(base_dir.resolve()) and config["r"] == 4
    adapter_bytes = (result.final_dir / "adapter_model.safetensors").stat().st_size
    assert adapter_bytes < (base_dir / "model.safetensors").stat().st_size / 2

    # Resuming from step 2 re-runs step 3 exactly (same adapters, optimizer state, RNG and samples).
    resumed = GRPOTrainer(
        lora_config(resume=str(result.run_dir / "checkpoints" / "step-000002")),
        reward_funcs=[fraction_of_a],
        dataset=[{"prompt": p} for p in PROMPTS],
    )
    assert resumed.start_step == 2 and is_lora_model(resumed.model)
    resumed.train()
    for (name, p), q in zip(trainer.model.named_parameters(), resumed.model.parameters()):
        assert torch.equal(p, q), name
    assert read_metrics(resumed.run_dir)[-1]["reward/mean"] == read_metrics(result.run_dir)[-1]["reward/mean"]


def test_merge_gives_the_adapted_models_logits(trained, tmp_path, base_dir):
    trainer, _, result = trained
    from transformers import AutoModelForCausalLM

    merged_dir = merge_adapter(result.final_dir, tmp_path / "merged")
    assert (merged_dir / "model.safetensors").is_file() and (merged_dir / "tokenizer.json").is_file()
    merged = AutoModelForCausalLM.from_pretrained(merged_dir).eval()  # plain transformers, no peft
    ids = torch.tensor([[4, 5, 6, 7, 8, 9], [5, 5, 4, 12, 11, 4]])
    with torch.no_grad():
        adapted = trainer.model.eval()(input_ids=ids).logits
        plain = merged(input_ids=ids).logits
    # W + (alpha/r) B A rounds differently from W x + (alpha/r) B (A x): float32 rounding only.
    torch.testing.assert_close(plain, adapted, rtol=0, atol=1e-5)
    with torch.no_grad():
        base = load_model(base_dir).eval()(input_ids=ids).logits
    assert (plain - base).abs().max() > 1e-2  # the merge did change the weights
    with pytest.raises(ValueError, match="exists and is not empty"):
        merge_adapter(result.final_dir, merged_dir)
    with pytest.raises(ValueError, match="has no adapter_config.json"):
        merge_adapter(merged_dir, tmp_path / "again")


def test_qlora_needs_a_gpu(lora_config):
    config = lora_config(lora={"r": 4, "load_in_4bit": True})
    with pytest.raises(ValueError, match=r"load_in_4bit \(QLoRA\) needs a CUDA GPU"):
        load_policy(config.model, device="cpu")


def test_bad_target_modules_are_named(base_dir):
    from grpokit.config import LoRAConfig

    with pytest.raises(ValueError, match="model.lora.target_modules"):
        apply_lora(load_model(base_dir), LoRAConfig(r=2, target_modules=["no_such_proj"]))


def test_resume_with_other_lora_settings_is_an_error(trained, lora_config):
    _, _, result = trained
    checkpoint = result.run_dir / "checkpoints" / "step-000001"
    config = lora_config(lora={"r": 0})
    with pytest.raises(ValueError, match="holds LoRA adapters, but model.lora.r is 0"):
        load_policy(config.model, checkpoint, device="cpu")


def test_trainable_state_is_the_adapters_and_their_adam_moments(trained):
    trainer, _, _ = trained
    sizes = trainable_state_bytes(trainer.model, trainer.optimizer)
    adapter_bytes = sum(p.numel() * 4 for n, p in trainer.model.named_parameters() if "lora_" in n)
    assert sizes["trainable_params"] == adapter_bytes
    # AdamW keeps exp_avg and exp_avg_sq per trainable element, plus a scalar step per tensor.
    assert sizes["optimizer_state"] == 2 * adapter_bytes + 4 * 28
    assert sizes["all_params"] > 4 * sizes["trainable_params"]
