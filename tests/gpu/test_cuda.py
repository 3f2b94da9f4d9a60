"""The GPU path on a CUDA device (marker ``gpu``; skipped without one). ``scripts/gpu-check.sh`` runs them.

Tolerances, and why:

- float32: sampler and trainer log-probs within ``FP32_ATOL`` (1e-4): the decoder's cached one-token steps
  and the trainer's full forward sum in other orders; TF32 matmuls (off by default in torch) would need more.
- bfloat16 autocast: within twice the distance bf16 moves the trainer's own forward from float32, plus
  ``FP32_ATOL`` (the CPU test of the decoder uses the same rule). A wrong mask, cache or RoPE is off by > 1.
- resume: CUDA kernels may sum in another order from one run to the next (the embedding backward's atomic
  adds), so the resumed steps' metrics must match the uninterrupted run's within rel ``RESUME_RTOL`` (1e-4),
  not bit for bit (on CPU the same test asks for equality).
"""

from __future__ import annotations

import copy
import shutil

import pytest
import torch

from grpokit.config import GRPOConfig, build_config
from grpokit.models import build_char_tokenizer, build_tiny_model, completion_logprobs
from grpokit.models.device import enable_autocast, peak_cuda_mb
from grpokit.rollout import TransformersSampler
from grpokit.tracking import read_metrics
from grpokit.trainers.grpo import GRPOTrainer

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (torch.cuda.is_available() is False)"),
]

FP32_ATOL = 1e-4
RESUME_RTOL = 1e-4
PROMPTS = ["12+34=", "1+2=", "123+456=", "9="]
SIZES = dict(hidden_size=64, num_layers=2, num_heads=4, num_kv_heads=2, intermediate_size=128, seed=1,
             initializer_range=0.2)  # fmt: skip
ROWS = [{"prompt": p} for p in ["ab", "cd", "ef", "gh", "ba", "dc", "fe", "hg"]]


@pytest.fixture(scope="module")
def tok():
    return build_char_tokenizer("0123456789+=")


def fraction_of_a(prompts, completions, **columns):
    return [c.count("a") / max(len(c), 1) for c in completions]


def config(model_dir, out, **sections) -> GRPOConfig:
    data = {
        "max_steps": 2,
        "model": {"name_or_path": str(model_dir), "device": "cuda"},
        "data": {"prompts_per_step": 2, "shuffle": False},
        "generation": {"max_new_tokens": 8},
        "optim": {"learning_rate": 3e-3},
        "algorithm": {"num_generations": 4, "beta": 0.1},
        "logging": {"output_dir": str(out), "run_name": "run", "quiet": True, "report_to": [], "report": False},
    }
    for section, values in sections.items():
        if isinstance(values, dict):
            data.setdefault(section, {}).update(values)
        else:
            data[section] = values
    return build_config(GRPOConfig, data)


def logprobs(model, batch):
    with torch.no_grad():
        out, _ = completion_logprobs(model, batch.prompt_ids, batch.prompt_mask, batch.completion_ids,
                                     batch.completion_mask, temperature=batch.temperatures)  # fmt: skip
    return out


@pytest.mark.parametrize("decoder", ["fast", "transformers"])
def test_sampler_and_trainer_logprobs_agree_in_fp32(tok, decoder):
    model = build_tiny_model(tok, **SIZES).to("cuda").eval()
    batch = TransformersSampler(model, tok, decoder=decoder, max_new_tokens=16, seed=3).generate(PROMPTS, 4)
    assert batch.completion_ids.device.type == "cuda"
    torch.testing.assert_close(batch.sampler_logprobs, logprobs(model, batch), rtol=0, atol=FP32_ATOL)


@pytest.mark.parametrize("decoder", ["fast", "transformers"])
def test_sampler_and_trainer_logprobs_agree_in_bf16_within_bf16_rounding(tok, decoder):
    plain = build_tiny_model(tok, **SIZES).to("cuda").eval()
    mixed = copy.deepcopy(plain)
    dtype = enable_autocast(mixed, "bf16")
    sampler = TransformersSampler(mixed, tok, decoder=decoder, max_new_tokens=16, seed=3, autocast_dtype=dtype)
    batch = sampler.generate(PROMPTS, 4)
    exact, trainer = logprobs(plain, batch), logprobs(mixed, batch)
    bf16_effect = (trainer - exact).abs().max()
    assert bf16_effect > 1e-5, "the trainer's forward did not run in bf16"
    assert (batch.sampler_logprobs - trainer).abs().max() <= 2 * bf16_effect + FP32_ATOL


@pytest.mark.parametrize("precision", ["no", "bf16"])
def test_fused_head_matches_the_logits_path(tok, precision):
    model = build_tiny_model(tok, **SIZES).to("cuda").eval()
    enable_autocast(model, precision)
    batch = TransformersSampler(model, tok, max_new_tokens=12, seed=4).generate(PROMPTS, 2)
    inputs = (batch.prompt_ids, batch.prompt_mask, batch.completion_ids, batch.completion_mask)
    grads = []
    outs = []
    for chunk_size in (3, 10_000):  # several chunks of the fused head, and one
        model.zero_grad()
        out, _ = completion_logprobs(model, *inputs, chunk_size=chunk_size)
        (out * batch.completion_mask).sum().backward()
        outs.append(out.detach())
        grads.append(model.get_input_embeddings().weight.grad.clone())
    atol = FP32_ATOL if precision == "no" else 2e-2
    torch.testing.assert_close(outs[0], outs[1], rtol=0, atol=atol)
    torch.testing.assert_close(grads[0], grads[1], rtol=1e-3, atol=atol)


def test_bf16_training_step_keeps_float32_state_on_cuda(tiny_model_dir, tmp_path):
    cfg = config(tiny_model_dir, tmp_path, model={"mixed_precision": "bf16"})
    trainer = GRPOTrainer(cfg, reward_funcs=[fraction_of_a], dataset=ROWS)
    before = {n: p.detach().clone() for n, p in trainer.model.named_parameters()}
    metrics = trainer.train().last_metrics
    assert torch.isfinite(torch.tensor(metrics["loss"]))
    for name, p in trainer.model.named_parameters():
        assert p.device.type == "cuda" and p.dtype == torch.float32, name
    changed = [n for n, p in trainer.model.named_parameters() if not torch.equal(p, before[n])]
    assert changed, "no weight moved in two bf16 steps"
    for state in trainer.optimizer.state.values():
        for value in state.values():
            if torch.is_tensor(value) and value.numel() > 1:
                assert value.dtype == torch.float32 and value.device.type == "cuda"
    assert metrics["memory/peak_cuda_mb"] > 0
    assert peak_cuda_mb() == pytest.approx(metrics["memory/peak_cuda_mb"], rel=0.5)


@pytest.mark.parametrize("precision", ["no", "bf16"])
def test_resume_on_cuda_reproduces_the_next_steps(tiny_model_dir, tmp_path, precision):
    full = config(tiny_model_dir, tmp_path / "runs", max_steps=4, model={"mixed_precision": precision},
                  checkpoint={"save_steps": 2, "save_total_limit": None})  # fmt: skip
    reference = GRPOTrainer(full, reward_funcs=[fraction_of_a], dataset=ROWS).train()
    resumed_run = tmp_path / "resumed"
    shutil.copytree(reference.run_dir, resumed_run)
    shutil.rmtree(resumed_run / "checkpoints" / "step-000004")
    lines = (resumed_run / "metrics.jsonl").read_text().splitlines()[:2]
    (resumed_run / "metrics.jsonl").write_text("\n".join(lines) + "\n")
    resume = full.model_copy(update={"checkpoint": full.checkpoint.model_copy(update={"resume": str(resumed_run)})})
    trainer = GRPOTrainer(resume, reward_funcs=[fraction_of_a], dataset=ROWS)
    assert trainer.start_step == 2
    trainer.train()
    keys = ("reward/mean", "loss", "kl", "grad_norm", "lr")
    got, want = read_metrics(resumed_run), read_metrics(reference.run_dir)
    assert [m["step"] for m in got] == [m["step"] for m in want] == [1, 2, 3, 4]
    for g, w in zip(got, want):
        for key in keys:
            assert g[key] == pytest.approx(w[key], rel=RESUME_RTOL, abs=1e-7), (g["step"], key)


def test_lora_trains_only_the_adapters_on_cuda(tiny_model_dir, tmp_path):
    cfg = config(tiny_model_dir, tmp_path, model={"mixed_precision": "bf16", "lora": {"r": 4, "alpha": 8}},
                 optim={"learning_rate": 3e-2})  # fmt: skip
    trainer = GRPOTrainer(cfg, reward_funcs=[fraction_of_a], dataset=ROWS)
    before = {n: p.detach().clone() for n, p in trainer.model.named_parameters()}
    trainer.train()
    moved = {n for n, p in trainer.model.named_parameters() if not torch.equal(p, before[n])}
    assert moved and all("lora_" in n for n in moved)
    assert all(p.device.type == "cuda" for p in trainer.model.parameters())
    assert all(p.dtype == torch.float32 for p in trainer.model.parameters() if p.requires_grad)
