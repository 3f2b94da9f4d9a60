"""End-to-end runs of PPOTrainer on a tiny model (seconds each): learning, checkpoints, exact resume."""

import shutil

import pytest
import torch
from safetensors.torch import load_file

from grpokit.config import PPOConfig, build_config
from grpokit.models import forward
from grpokit.tracking import read_metrics
from grpokit.tracking.timing import PhaseTimer
from grpokit.trainers.ppo import PPOTrainer


def fraction_of_a(prompts, completions, **columns):
    """Trivially learnable: the share of 'a' characters in the completion."""
    return [c.count("a") / max(len(c), 1) for c in completions]


@pytest.fixture
def make_ppo_config(make_config):
    """The GRPO tests' tiny setup (model, logging, generation) as a PPOConfig: G = 1, 8 prompts per step."""

    def make(**sections) -> PPOConfig:
        data = make_config().model_dump(mode="json")
        del data["algorithm"], data["trainer"]
        data["data"]["prompts_per_step"] = 8
        data["algorithm"] = {"num_iterations": 1}
        for section, values in sections.items():
            if isinstance(values, dict):
                data.setdefault(section, {}).update(values)
            else:
                data[section] = values
        return build_config(PPOConfig, data)

    return make


@pytest.fixture
def ppo_rows():
    return [{"prompt": p} for p in ["ab", "cd", "ef", "gh", "ba", "dc", "fe", "hg"] * 4]


def test_reward_rises_and_every_parameter_changes(make_ppo_config, ppo_rows):
    config = make_ppo_config(
        max_steps=20,
        data={"prompts_per_step": 32},
        generation={"max_new_tokens": 8},
        algorithm={"num_iterations": 1, "vf_coef": 0.5},
    )
    trainer = PPOTrainer(config, reward_funcs=[fraction_of_a], dataset=ppo_rows)
    modules = {"policy": trainer.model, "value": trainer.value_model}
    before = {
        (m, n): p.detach().clone() for m, module in modules.items() for n, p in module.named_parameters()
    }
    result = trainer.train()

    unchanged = [key for key, p in before.items() if torch.equal(p, modules[key[0]].get_parameter(key[1]))]
    assert unchanged == []
    metrics = read_metrics(result.run_dir)
    rewards = [row["reward/mean"] for row in metrics]
    # Seeded run: the mean reward of the last 5 steps clearly exceeds that of the first 5 (0.12 -> 0.5 here).
    assert sum(rewards[-5:]) / 5 > sum(rewards[:5]) / 5 + 0.2
    # The value model learns too: its predictions explain more of the returns at the end than at the start.
    explained = [row["explained_variance"] for row in metrics]
    assert sum(explained[-5:]) / 5 > sum(explained[:5]) / 5 + 0.1
    assert result.run_dir.name == "run"


def test_metrics_and_run_directory(make_ppo_config, ppo_rows):
    config = make_ppo_config(max_steps=2, checkpoint={"save_steps": 2})
    result = PPOTrainer(config, reward_funcs=[fraction_of_a], dataset=ppo_rows).train()
    row = read_metrics(result.run_dir)[-1]
    expected = {
        "reward/mean", "policy_loss", "value_loss", "value_clip_fraction", "value_mean", "explained_variance",
        "returns/mean", "kl", "kl_coef", "kl/rollout_per_completion", "rewards/kl_penalty/mean", "entropy",
        "grad_norm", "value_grad_norm", "lr", "value_lr", "time/generate", "time/score", "time/forward",
        "time/update", "logprobs/sampler_mismatch", "advantages/mean", "faults/nonfinite_skipped",
    }  # fmt: skip
    assert expected <= set(row)
    assert "zero_std_group_fraction" not in row  # groups of one have no spread
    assert row["ratio_mean"] == 1.0 and row["kl_coef"] == 0.05
    assert row["logprobs/sampler_mismatch"] < 1e-4  # the sampler's log-probs and the full forward agree
    for directory in (result.run_dir / "checkpoints" / "step-000002", result.final_dir):
        saved = load_file(directory / "value_model.safetensors")
        assert "head.weight" in saved and any(key.startswith("body.") for key in saved)


def test_shared_value_model_keeps_only_its_head(make_ppo_config, ppo_rows):
    config = make_ppo_config(max_steps=1, algorithm={"value_model": "shared"})
    trainer = PPOTrainer(config, reward_funcs=[fraction_of_a], dataset=ppo_rows)
    assert trainer.value_model.body is trainer.model.base_model
    result = trainer.train()
    assert set(load_file(result.final_dir / "value_model.safetensors")) == {"weight", "bias"}


def test_default_run_name_says_ppo(make_ppo_config, ppo_rows):
    config = make_ppo_config(max_steps=1, logging={"run_name": None})
    trainer = PPOTrainer(config, reward_funcs=[fraction_of_a], dataset=ppo_rows)
    assert trainer.run_dir.name.startswith("ppo-")


def test_resume_restores_the_value_model_and_reproduces_the_run(make_ppo_config, ppo_rows, tmp_path):
    full = make_ppo_config(
        max_steps=4,
        checkpoint={"save_steps": 2, "save_total_limit": None},
        algorithm={"num_iterations": 2, "adaptive_kl": True, "kl_target": 0.01, "kl_horizon": 100},
    )
    reference = PPOTrainer(full, reward_funcs=[fraction_of_a], dataset=ppo_rows).train()
    # Continue the same run from its step-2 checkpoint.
    resumed_run = tmp_path / "resumed"
    shutil.copytree(reference.run_dir, resumed_run)
    shutil.rmtree(resumed_run / "checkpoints" / "step-000004")
    checkpoint = resumed_run / "checkpoints" / "step-000002"
    resume = full.model_copy(
        update={"checkpoint": full.checkpoint.model_copy(update={"resume": str(resumed_run)})}
    )
    trainer = PPOTrainer(resume, reward_funcs=[fraction_of_a], dataset=ppo_rows)
    assert trainer.start_step == 2
    saved = load_file(checkpoint / "value_model.safetensors")
    restored = trainer.value_model.state_dict()
    assert saved.keys() == restored.keys() and all(torch.equal(saved[k], restored[k]) for k in saved)
    assert saved["head.weight"].abs().sum() > 0  # trained, so not what a fresh (zero) head would hold
    assert trainer.value_optimizer.state_dict()["state"]  # the value model's Adam moments came back too
    trainer.train()
    keys = (
        "reward/mean",
        "loss",
        "value_loss",
        "explained_variance",
        "kl_coef",
        "grad_norm",
        "value_grad_norm",
    )
    got = [{k: m[k] for k in keys} for m in read_metrics(resumed_run)]
    want = [{k: m[k] for k in keys} for m in read_metrics(reference.run_dir)]
    assert got == want
    # The adaptive coefficient moved, and the resumed run continued from where it was.
    assert want[3]["kl_coef"] != want[0]["kl_coef"]


def test_a_grpo_checkpoint_is_not_resumed_as_ppo(make_config, make_ppo_config, ppo_rows, rows):
    from grpokit.trainers.grpo import GRPOTrainer

    grpo_run = GRPOTrainer(
        make_config(max_steps=1, checkpoint={"save_steps": 1}), reward_funcs=[fraction_of_a], dataset=rows
    ).train()
    config = make_ppo_config(checkpoint={"resume": str(grpo_run.run_dir)})
    with pytest.raises(ValueError, match="has no value_model.safetensors, so it is not a PPO checkpoint"):
        PPOTrainer(config, reward_funcs=[fraction_of_a], dataset=ppo_rows)


def test_a_grpo_config_is_refused(make_config, rows):
    with pytest.raises(ValueError, match="PPOTrainer needs a PPOConfig, got GRPOConfig"):
        PPOTrainer(make_config(), reward_funcs=[fraction_of_a], dataset=rows)


def test_cli_trains_ppo_from_the_trainer_field(tiny_model_dir, tmp_path, capsys):
    from grpokit.cli import main

    (tmp_path / "prompts.jsonl").write_text(
        "".join(f'{{"prompt": "{p}"}}\n' for p in ["ab", "cd", "ef", "gh"])
    )
    config = tmp_path / "ppo.yaml"
    config.write_text(
        f"trainer: ppo\nmax_steps: 2\nmodel: {{name_or_path: {tiny_model_dir}, device: cpu}}\n"
        f"data: {{path: {tmp_path / 'prompts.jsonl'}, prompts_per_step: 4}}\n"
        "rewards: {reward_funcs: [length_penalty]}\n"
        f"logging: {{output_dir: {tmp_path / 'runs'}, run_name: cli, quiet: true, report_to: [], report: false}}\n"
    )
    assert main(["train", str(config), "--adaptive_kl", "--vf_coef", "0.5"]) == 0
    saved = (tmp_path / "runs" / "cli" / "config.yaml").read_text()
    assert "trainer: ppo" in saved and "adaptive_kl: true" in saved and "vf_coef: 0.5" in saved
    assert (tmp_path / "runs" / "cli" / "final" / "value_model.safetensors").is_file()


@pytest.mark.parametrize("value_model", ["separate", "shared"])
def test_lora_policy_trains_with_either_value_model(make_ppo_config, ppo_rows, value_model):
    config = make_ppo_config(
        max_steps=2,
        model={"lora": {"r": 4, "target_modules": ["q_proj", "v_proj"]}},
        algorithm={"value_model": value_model, "num_iterations": 2},
    )
    trainer = PPOTrainer(config, reward_funcs=[fraction_of_a], dataset=ppo_rows)
    adapters = {n: p.detach().clone() for n, p in trainer.model.named_parameters() if p.requires_grad}
    assert adapters and all("lora_" in n for n in adapters)
    owned = sum(p.numel() for p in trainer.value_model.owned.parameters())
    assert (owned == 33) == (value_model == "shared")  # a head on the 32-wide body, or a whole copy
    trainer.train()
    assert all(not torch.equal(p, adapters[n]) for n, p in trainer.model.named_parameters() if n in adapters)


def test_value_model_follows_mixed_precision_and_checkpointing(make_ppo_config, ppo_rows):
    config = make_ppo_config(
        max_steps=1, model={"mixed_precision": "bf16"}, optim={"gradient_checkpointing": True}
    )
    trainer = PPOTrainer(config, reward_funcs=[fraction_of_a], dataset=ppo_rows)
    value_model = trainer.value_model
    assert value_model.grpokit_autocast == ("cpu", torch.bfloat16)  # the policy's forward precision
    layers = [m for m in value_model.body.modules() if "forward" in vars(m)]
    assert len(layers) == 2 and all(layer.forward.__self__ is layer for layer in layers)  # its own layers
    batch = trainer.collect_rollouts(PhaseTimer())[0]
    values = value_model(**forward.batch_to(batch, torch.arange(4), torch.device("cpu")))
    assert values.dtype == torch.float32  # the head runs outside autocast (a bf16 Linear would give bf16)
    assert trainer.train().last_metrics["faults/nonfinite_skipped"] == 0.0
