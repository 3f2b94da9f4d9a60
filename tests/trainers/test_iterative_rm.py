"""Iterative RL: gold-labelled pairs of the policy's samples retrain the reward model every K steps, logged and
resumed exactly."""

import pytest
import torch
from safetensors.torch import load_file

from grpokit.engine import checkpoint as ckpt
from grpokit.tracking import read_metrics
from grpokit.trainers.grpo import GRPOTrainer
from grpokit.trainers.iterative_rm import best_vs_worst

MACHINE_KEYS = ("time/", "throughput/", "memory/")

GOLD = """
def fraction_of_a(prompts, completions, **columns):
    return [c.count("a") / max(len(c), 1) for c in completions]
"""


def test_best_vs_worst_pairs_each_group_by_gold():
    prompts = ["p"] * 3 + ["q"] * 3 + ["r"] * 2 + ["s"] * 2
    completions = ["a", "b", "c", "d", "e", "f", "g", "h", "i", "j"]
    group_ids = torch.tensor([0, 0, 0, 1, 1, 1, 2, 2, 3, 3])
    gold = [0.5, 1.0, 0.0, None, 2.0, 3.0, 1.0, 1.0, None, 4.0]
    pairs = best_vs_worst(prompts, completions, group_ids, gold)
    # group 0: best b (1.0) vs worst c (0.0); group 1: f vs e (d unscored); group 2 ties; group 3 has 1 scored
    assert [(p.prompt, p.chosen, p.rejected) for p in pairs] == [("p", "b", "c"), ("q", "f", "e")]


@pytest.fixture(scope="module")
def reward_model_dir(tmp_path_factory):
    from transformers import AutoModelForSequenceClassification, Qwen2Config

    from grpokit.models.tiny import build_char_tokenizer

    path = tmp_path_factory.mktemp("rm")
    tokenizer = build_char_tokenizer("abcdefgh ", path)
    config = Qwen2Config(
        vocab_size=len(tokenizer), hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
        num_key_value_heads=2, intermediate_size=32, num_labels=1, pad_token_id=tokenizer.pad_token_id,
    )  # fmt: skip
    torch.manual_seed(0)
    AutoModelForSequenceClassification.from_config(config).save_pretrained(path)
    return path


@pytest.fixture
def iterative_config(make_config, reward_model_dir, tmp_path):
    (tmp_path / "gold.py").write_text(GOLD)

    def make(run_name, max_steps=4, resume=None):
        return make_config(
            max_steps=max_steps,
            rewards={
                "reward_model": str(reward_model_dir),
                "iterative_rm": {
                    "gold_func": f"{tmp_path / 'gold.py'}:fraction_of_a", "every_steps": 2, "rm_steps": 3,
                    "rm_batch_size": 2, "rm_learning_rate": 1e-2, "replay_fraction": 0.5,
                },
            },
            data={"prompts_per_step": 2, "shuffle": True},
            checkpoint={"save_steps": 2, "save_total_limit": None, "resume": resume},
            logging={"run_name": run_name},
        )  # fmt: skip

    return make


def test_the_reward_model_is_retrained_every_k_steps_and_resumes_exactly(
    iterative_config, reward_model_dir, rows, tmp_path
):
    initial = load_file(reward_model_dir / "model.safetensors")
    run = GRPOTrainer(iterative_config("full"), dataset=rows).train().run_dir
    metrics = read_metrics(run)
    assert [m["step"] for m in metrics] == [1, 2, 3, 4]
    assert all("iterative_rm/gold_mean" in m for m in metrics)
    assert [m["iterative_rm/updates"] for m in metrics] == [0, 1, 1, 2]
    assert [("iterative_rm/agreement_before" in m) for m in metrics] == [False, True, False, True]
    assert metrics[1]["iterative_rm/pool_pairs"] > 0 and metrics[1]["iterative_rm/pending_pairs"] == 0
    assert metrics[3]["iterative_rm/pool_pairs"] > metrics[1]["iterative_rm/pool_pairs"]
    # Step 4 replays half of step 2's pairs besides its own.
    replayed = round(0.5 * metrics[1]["iterative_rm/pool_pairs"])
    new_at_4 = metrics[3]["iterative_rm/pool_pairs"] - metrics[1]["iterative_rm/pool_pairs"]
    assert metrics[3]["iterative_rm/retrained_pairs"] == new_at_4 + replayed

    # The checkpoints hold the retrained reward model, its optimizer and its pool.
    state_2 = ckpt.load_trainer_state(run / "checkpoints" / "step-000002")["iterative_rm"]
    state_4 = ckpt.load_trainer_state(run / "checkpoints" / "step-000004")["iterative_rm"]
    assert not torch.equal(state_2["model"]["score.weight"], initial["score.weight"])
    assert not torch.equal(state_4["model"]["score.weight"], state_2["model"]["score.weight"])
    assert len(state_4["pool"]) == metrics[3]["iterative_rm/pool_pairs"] and state_4["optimizer"]["state"]

    # Stopped after step 2 and resumed: the same run (reward model, pool, policy).
    GRPOTrainer(iterative_config("resumed", max_steps=2), dataset=rows).train()
    resumed_run = tmp_path / "runs" / "resumed"
    GRPOTrainer(iterative_config("resumed", resume=str(resumed_run)), dataset=rows).train()

    def strip(rows_):
        return [{k: v for k, v in r.items() if not k.startswith(MACHINE_KEYS)} for r in rows_]

    assert strip(read_metrics(resumed_run)) == strip(metrics)
    resumed_4 = ckpt.load_trainer_state(resumed_run / "checkpoints" / "step-000004")["iterative_rm"]
    for name, tensor in state_4["model"].items():
        assert torch.equal(resumed_4["model"][name], tensor), name
    assert resumed_4["pool"] == state_4["pool"]
    assert (resumed_run / "final" / "model.safetensors").read_bytes() == (
        run / "final" / "model.safetensors"
    ).read_bytes()


def test_iterative_rm_needs_a_reward_model_and_groups(make_config, tmp_path):
    from grpokit.config import ConfigError

    with pytest.raises(ConfigError, match="iterative_rm.gold_func is set but reward_model is not"):
        make_config(rewards={"reward_funcs": ["length_penalty"], "iterative_rm": {"gold_func": "x.py:f"}})


def test_a_gold_function_returning_the_wrong_count_is_named(iterative_config, rows, tmp_path):
    (tmp_path / "gold.py").write_text(
        "def fraction_of_a(prompts, completions, **columns):\n    return [1.0]\n"
    )
    with pytest.raises(
        ValueError, match=r"gold_func .*fraction_of_a.* must return a list of 8 scores, got list of 1"
    ):
        GRPOTrainer(iterative_config("bad"), dataset=rows).train()


def test_ppo_with_groups_retrains_the_reward_model_too(iterative_config, rows):
    from grpokit.config import ConfigError, PPOConfig, build_config
    from grpokit.trainers.ppo import PPOTrainer

    data = iterative_config("ppo", max_steps=2).model_dump(mode="json")
    del data["trainer"]
    data["algorithm"] = {"num_generations": 2, "num_iterations": 1}
    metrics = read_metrics(PPOTrainer(build_config(PPOConfig, data), dataset=rows).train().run_dir)
    assert [m["iterative_rm/updates"] for m in metrics] == [0, 1]
    data["algorithm"] = {"num_generations": 1}
    with pytest.raises(ConfigError, match="needs algorithm.num_generations >= 2, got 1"):
        build_config(PPOConfig, data)  # before any model loads
