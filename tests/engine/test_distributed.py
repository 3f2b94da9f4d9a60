"""Data-parallel GRPO with 2 CPU processes (gloo), against the same run in 1 process.

The processes are forked from the test process by the ``launch`` fixture (tests/conftest.py).
"""

from __future__ import annotations

import json
import os

import pytest
import torch
from safetensors.torch import load_file

from grpokit.algorithms import group_advantages
from grpokit.engine.parallel import DataParallel
from grpokit.tracking import read_metrics
from grpokit.trainers.grpo import GRPOTrainer
from grpokit.trainers.sharding import gather_group_advantages

WORLD = 2
ESTIMATORS = ("grpo", "grpo_batch_norm", "dr_grpo", "rloo", "rank")


# ---------------------------------------------------------------------------------------------------------
# Advantages of a group that spans both processes
# ---------------------------------------------------------------------------------------------------------

# 8 responses in 3 groups; rank 0 holds rows 0..2, rank 1 rows 3..7, so group 1 is split 1 + 3.
REWARDS = torch.tensor([1.0, 0.0, 0.5, 2.0, 0.25, 1.0, 3.0, 3.0])
GROUP_IDS = torch.tensor([0, 0, 1, 1, 1, 1, 2, 2])
SPLIT = 3


def _advantages_worker(rank: int, out_dir: str) -> None:
    from accelerate import Accelerator

    parallel = DataParallel(Accelerator(cpu=True))
    rows = slice(0, SPLIT) if rank == 0 else slice(SPLIT, None)
    result = {
        name: gather_group_advantages(REWARDS[rows], GROUP_IDS[rows], name, 1e-6, parallel=parallel).tolist()
        for name in ESTIMATORS
    }
    with open(os.path.join(out_dir, f"advantages-{rank}.json"), "w") as f:
        json.dump(result, f)


def test_a_group_split_across_processes_gets_its_one_process_advantages(tmp_path, launch):
    launch(_advantages_worker, str(tmp_path))
    parts = [json.loads((tmp_path / f"advantages-{r}.json").read_text()) for r in range(WORLD)]
    for name in ESTIMATORS:
        gathered = torch.tensor(parts[0][name] + parts[1][name])  # rank order = global row order
        # The same estimator on the same 8 rewards: bit-identical, including the split group 1.
        assert torch.equal(gathered, group_advantages(REWARDS, GROUP_IDS, name, 1e-6)), name
    # Sanity of the split group: 4 members, mean 0.9375, so 0.5 < mean < 1.0 gives -, +, -, + signs.
    assert [v > 0 for v in parts[0]["grpo"][2:] + parts[1]["grpo"][:3]] == [False, True, False, True]


# ---------------------------------------------------------------------------------------------------------
# Training: 2 processes equal 1, and the checkpoint resumes on another number of processes
# ---------------------------------------------------------------------------------------------------------


def fraction_of_a(prompts, completions, **columns):
    return [c.count("a") / max(len(c), 1) for c in completions]


def _sections(output_dir: str, run_name: str, policy: str, resume: str | None = None) -> dict:
    aggregation, lora_rank, mini_batch_size = {
        "full, token_mean": ("token_mean", 0, None),
        "lora, sequence_mean": ("sequence_mean", 4, None),
        # 2 optimizer steps per batch: each process takes 8 / 2 rows per step (it used to take all 8 of its
        # rows in one step, half as many steps as one process).
        "full, minibatches": ("constant", 0, 8),
    }[policy]
    return {
        "max_steps": 3,
        "model": {"lora": {"r": lora_rank}},
        "data": {"prompts_per_step": 4, "shuffle": True},
        "generation": {"max_new_tokens": 6, "per_group_seed": True},
        "algorithm": {"num_generations": 4, "loss_aggregation": aggregation, "beta": 0.05},
        "optim": {
            "learning_rate": 3e-3,
            "gradient_accumulation_steps": 2,
            "mini_batch_size": mini_batch_size,
            "shuffle_minibatches": False,
        },
        "checkpoint": {"save_steps": 1, "save_total_limit": None, "resume": resume},
        "logging": {
            "output_dir": output_dir,
            "run_name": run_name,
            "quiet": True,
            "report_to": [],
            "report": False,
        },
    }


def _train_worker(rank: int, config, rows) -> None:
    GRPOTrainer(config, reward_funcs=[fraction_of_a], dataset=rows).train()


def _weights(directory) -> dict[str, torch.Tensor]:
    """The trained weights: the full model, or a LoRA run's adapters (its base is frozen)."""
    name = (
        "adapter_model.safetensors" if (directory / "adapter_config.json").is_file() else "model.safetensors"
    )
    return load_file(str(directory / name))


def _assert_same_weights(actual: dict, expected: dict) -> None:
    assert actual.keys() == expected.keys()
    for name in expected:
        # Equal up to float32 summation order (other micro-batch shapes, DDP's averaging): after 3 Adam steps
        # of 3e-3 the runs differ by at most ~3e-6; a different sample or a wrongly weighted micro-batch moves
        # weights by ~1e-3. (Adam hides a wrong *scale* of the gradient: the grad_norm check catches that.)
        torch.testing.assert_close(actual[name], expected[name], rtol=0, atol=2e-5, msg=name)


@pytest.mark.parametrize("policy", ["full, token_mean", "lora, sequence_mean", "full, minibatches"])
def test_two_processes_train_like_one_and_resume_on_one(make_config, rows, tmp_path, policy, launch):
    out = str(tmp_path / "runs")
    two = make_config(**_sections(out, "two", policy))
    launch(_train_worker, two, rows)
    one = GRPOTrainer(
        make_config(**_sections(out, "one", policy)), reward_funcs=[fraction_of_a], dataset=rows
    )
    one_run = one.train().run_dir
    two_run = tmp_path / "runs" / "two"

    # Rank 0 alone wrote the logs: one row per step, with the rewards of all 16 completions (same samples).
    one_rows, two_rows = read_metrics(one_run), read_metrics(two_run)
    assert [r["step"] for r in two_rows] == [1, 2, 3]
    for a, b in zip(one_rows, two_rows):
        assert b["reward/mean"] == pytest.approx(a["reward/mean"], abs=1e-6)
        assert b["completions/mean_length"] == a["completions/mean_length"]
        assert b["kl"] == pytest.approx(a["kl"], rel=1e-4, abs=1e-7)
        # Adam is blind to the gradient's scale, the norm is not: DDP's mean must be the global gradient.
        assert b["grad_norm"] == pytest.approx(a["grad_norm"], rel=1e-4)
        assert b["optimizer_steps"] == a["optimizer_steps"] == (2 if "minibatches" in policy else 1)
    _assert_same_weights(_weights(two_run / "final"), _weights(one_run / "final"))
    assert len(_weights(one_run / "final")) == (
        28 if "lora" in policy else 26
    )  # every trained tensor compared

    # The 2-process checkpoint of step 2 resumes on 1 process and finishes like the 1-process run.
    step_2 = str(two_run / "checkpoints" / "step-000002")
    resumed = GRPOTrainer(
        make_config(**_sections(out, "two", policy, resume=step_2)),
        reward_funcs=[fraction_of_a],
        dataset=rows,
    )
    assert resumed.start_step == 2
    resumed.train()
    _assert_same_weights(_weights(two_run / "final"), _weights(one_run / "final"))


def _ppo_sections(output_dir: str, run_name: str) -> dict:
    sections = _sections(output_dir, run_name, "full, minibatches")
    sections["trainer"] = "ppo"
    sections["algorithm"] = {
        "num_generations": 2, "beta": 0.05, "num_iterations": 2, "loss_aggregation": "token_mean",
        "adaptive_kl": True, "kl_target": 0.01, "kl_horizon": 10,
    }  # fmt: skip
    sections["optim"]["mini_batch_size"] = 4  # of N = 4 prompts x 2 completions
    sections["checkpoint"] = {"save_steps": 0}
    return sections


def _ppo_worker(rank: int, config, rows) -> None:
    from grpokit.trainers.ppo import PPOTrainer

    PPOTrainer(config, reward_funcs=[fraction_of_a], dataset=rows).train()


def test_ppo_on_two_processes_trains_like_one(make_config, rows, tmp_path, launch):
    """PPO through the same engine: value model DDP-wrapped, advantages whitened and the adaptive KL
    coefficient moved over every process's completions, per-process minibatches."""
    from grpokit.config import PPOConfig, build_config
    from grpokit.trainers.ppo import PPOTrainer

    out = str(tmp_path / "runs")

    def config(name: str) -> PPOConfig:
        base, sections = make_config().model_dump(), _ppo_sections(out, name)
        sections["model"] = {**base["model"], **sections["model"]}
        return build_config(PPOConfig, {**base, **sections})

    launch(_ppo_worker, config("two"), rows)
    one_run = PPOTrainer(config("one"), reward_funcs=[fraction_of_a], dataset=rows).train().run_dir
    two_run = tmp_path / "runs" / "two"
    for a, b in zip(read_metrics(one_run), read_metrics(two_run), strict=True):
        assert b["reward/mean"] == pytest.approx(a["reward/mean"], abs=1e-6)
        assert b["kl_coef"] == pytest.approx(a["kl_coef"], rel=1e-5)  # the controller saw the same KL
        assert b["grad_norm"] == pytest.approx(a["grad_norm"], rel=1e-4)
        assert b["value_grad_norm"] == pytest.approx(a["value_grad_norm"], rel=1e-4)
        # Statistics of the whole batch, not of one process's half.
        assert b["explained_variance"] == pytest.approx(a["explained_variance"], rel=1e-4, abs=1e-6)
        assert b["returns/mean"] == pytest.approx(a["returns/mean"], rel=1e-4, abs=1e-7)
        assert b["optimizer_steps"] == a["optimizer_steps"] == 4  # 2 epochs x 2 minibatches
    _assert_same_weights(_weights(two_run / "final"), _weights(one_run / "final"))
    _assert_same_weights(
        load_file(str(two_run / "final" / "value_model.safetensors")),
        load_file(str(one_run / "final" / "value_model.safetensors")),
    )


# ---------------------------------------------------------------------------------------------------------
# FSDP2: sampling on gathered weights (torch's fully_shard on CPU; accelerate's FSDP needs GPUs)
# ---------------------------------------------------------------------------------------------------------


def _fsdp2_worker(rank: int, model_dir: str, out_dir: str) -> None:
    import torch.distributed as dist
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard
    from torch.distributed.tensor import DTensor

    from grpokit.engine.parallel import unsharded
    from grpokit.models import load_model, load_tokenizer
    from grpokit.rollout import TransformersSampler

    dist.init_process_group("gloo")
    mesh = init_device_mesh("cpu", (WORLD,))
    tokenizer, whole = load_tokenizer(model_dir), load_model(model_dir)
    model = load_model(model_dir)
    for layer in model.model.layers:
        fully_shard(layer, mesh=mesh)
    fully_shard(model, mesh=mesh)
    projection = model.model.layers[0].self_attn.q_proj
    assert isinstance(projection.weight, DTensor)
    completions = []
    with unsharded(model):
        assert not isinstance(projection.weight, DTensor)  # whole weights: the lean decoder can use them
        sharded = TransformersSampler(model, tokenizer, max_new_tokens=8, seed=rank)
        # Rank 1 samples twice as often: any per-layer collective left in the forward would hang here.
        for _ in range(1 + rank):
            completions.append(sharded.generate(["ab", "hg"][rank : rank + 1], 4).completions)
    reference = TransformersSampler(whole, tokenizer, max_new_tokens=8, seed=rank)
    expected = [reference.generate(["ab", "hg"][rank : rank + 1], 4).completions for _ in range(1 + rank)]
    assert isinstance(projection.weight, DTensor)  # resharded on exit
    model(input_ids=torch.tensor([[4, 5, 6]])).logits.sum().backward()  # training still works, sharded
    with open(os.path.join(out_dir, f"fsdp-{rank}.json"), "w") as f:
        json.dump({"sampled": completions, "expected": expected}, f)


def test_fsdp2_samples_on_gathered_weights_without_collectives(tiny_model_dir, tmp_path, launch):
    launch(_fsdp2_worker, str(tiny_model_dir), str(tmp_path))
    for rank in range(WORLD):
        result = json.loads((tmp_path / f"fsdp-{rank}.json").read_text())
        assert result["sampled"] == result["expected"]  # the sharded model samples as the whole one
        assert len(result["sampled"]) == 1 + rank
