"""GRPO on the built-in ``chain`` task with its per-step process reward (``task_steps``, character offsets)
and with the outcome reward: both train end to end, and the process run's advantages vary within a
completion where its steps were scored differently."""

import pytest
import torch

from grpokit.config import GRPOConfig, build_config
from grpokit.tracking import read_metrics
from grpokit.trainers.grpo import GRPOTrainer


@pytest.fixture(scope="module")
def chain_model_dir(tmp_path_factory):
    from grpokit.data.tasks import get_task
    from grpokit.models.tiny import build_char_tokenizer, build_tiny_model

    path = tmp_path_factory.mktemp("chain-tiny")
    tokenizer = build_char_tokenizer(get_task("chain").alphabet)
    build_tiny_model(tokenizer, path, hidden_size=32, num_layers=2, num_heads=2, intermediate_size=64, seed=0)
    return path


def config(model_dir, tmp_path, name, **rewards):
    return build_config(
        GRPOConfig,
        {
            "max_steps": 2,
            "model": {"name_or_path": str(model_dir), "device": "cpu"},
            "data": {"task": "chain", "prompts_per_step": 2, "num_train_problems": 40},
            "rewards": {"reward_funcs": ["task"], **rewards},
            "generation": {"max_new_tokens": 8, "temperature": 1.5},
            "algorithm": {"num_generations": 4},
            "logging": {"output_dir": str(tmp_path), "run_name": name, "quiet": True, "report_to": [],
                        "report": False},
        },
    )  # fmt: skip


def test_outcome_and_process_supervision_both_train_on_chain(chain_model_dir, tmp_path):
    outcome = GRPOTrainer(config(chain_model_dir, tmp_path, "outcome")).train()
    process = GRPOTrainer(
        config(chain_model_dir, tmp_path, "process", process_reward_func="task_steps", process_reward_unit="char")
    ).train()
    for result in (outcome, process):
        rows = [m for m in read_metrics(result.run_dir) if "reward/mean" in m]
        assert len(rows) == 2 and all(m["completions/generated_tokens"] > 0 for m in rows)


def test_process_advantages_follow_the_steps_of_a_chain(chain_model_dir, tmp_path):
    from grpokit.rollout import RolloutBatch

    trainer = GRPOTrainer(
        config(chain_model_dir, tmp_path, "probe", process_reward_func="task_steps", process_reward_unit="char")
    )
    tok = trainer.tokenizer
    prompt = "47+38+56="
    # One group: right chain, the teacher's slip (step 1 wrong, step 2 valid), and two wrong second steps.
    completions = ["085,141", "075,131", "085,999", "085,999"]
    ids = [tok.encode(c, add_special_tokens=False) + [tok.eos_token_id] for c in completions]
    T = max(len(i) for i in ids)
    completion_ids = torch.tensor([i + [tok.pad_token_id] * (T - len(i)) for i in ids])
    mask = torch.tensor([[1] * len(i) + [0] * (T - len(i)) for i in ids])
    prompt_ids = torch.tensor([tok.encode(prompt, add_special_tokens=False)] * 4)
    batch = RolloutBatch(
        prompt_ids=prompt_ids, prompt_mask=torch.ones_like(prompt_ids), completion_ids=completion_ids,
        completion_mask=mask, prompts=[prompt] * 4, completions=completions, group_ids=torch.zeros(4, dtype=torch.long),
        temperatures=torch.ones(4), truncated=torch.zeros(4, dtype=torch.bool), columns={"answer": ["141"] * 4},
    )  # fmt: skip
    scores = trainer.rewards.score(batch)
    assert scores.step_ends is not None
    advantages, _ = trainer.compute_advantages(batch, scores)  # (4, T): per-token with process rewards
    right, slip = advantages[0], advantages[1]
    # The slip's first step (tokens 0-3) is penalised, its valid second step (tokens 4-6) is not.
    assert slip[:4].max() < 0 < slip[4:7].min()
    assert right[:7].min() > 0
