"""What a step logs: the metrics row (lengths of single completions and of multi-turn episodes) and the sample
rows (with each episode's conversation)."""

import copy
import json

import pytest
import torch

from grpokit.rewards import RewardScores
from grpokit.rollout.batch import RolloutBatch
from grpokit.tracking.timing import PhaseTimer
from grpokit.trainers.step_log import Generation, StepRecord, sample_rows, step_metrics

T = 8


def make_batch(lengths, *, loss_mask=None, conversations=None, G=2):
    """N = len(lengths) rows in groups of G, row i with lengths[i] real completion tokens."""
    N = len(lengths)
    mask = torch.tensor([[1.0] * n + [0.0] * (T - n) for n in lengths])  # (N, T)
    return RolloutBatch(
        prompt_ids=torch.ones(N, 2, dtype=torch.long),
        prompt_mask=torch.ones(N, 2, dtype=torch.long),
        completion_ids=torch.ones(N, T, dtype=torch.long),
        completion_mask=mask,
        group_ids=torch.arange(N // G).repeat_interleave(G),
        temperatures=torch.ones(N),
        truncated=torch.tensor([False, True] + [False] * (N - 2)),
        prompts=[[{"role": "user", "content": f"task {i // G}"}] for i in range(N)],
        completions=[f"completion {i}" for i in range(N)],
        loss_mask=loss_mask,
        conversations=conversations,
    )


def record_of(batch, rewards):
    scores = RewardScores(torch.tensor(rewards), torch.ones(len(rewards), dtype=torch.bool), {})
    timer = PhaseTimer()
    timer.seconds["generate"] = 2.0
    return StepRecord(
        batch=batch,
        scores=scores,
        generated=Generation(batch, scores),
        advantages=torch.tensor([0.5, -0.5, 1.0, -1.0]),
        loss_mask=batch.completion_mask,
        update={"train_tokens": 10.0, "loss": 0.25},
        timer=timer,
    )


def logged(metrics):
    """The row without what depends on the machine (time, memory)."""
    return {k: v for k, v in metrics.items() if not k.startswith(("time/", "memory/"))}


def test_single_completion_metrics_are_unchanged():
    batch = make_batch([3, 8, 5, 4])
    metrics = logged(step_metrics(record_of(batch, [1.0, 0.0, 1.0, 1.0]), data_counts={"data/epoch": 0.0}))
    assert metrics == {
        "reward/mean": 0.75,
        "reward/std": 0.5,
        "data/epoch": 0.0,
        "zero_std_group_fraction": 0.5,
        "advantages/mean": 0.0,
        "advantages/std": pytest.approx(0.9128709),
        "advantages/min": -1.0,
        "advantages/max": 1.0,
        # (3 + 8 + 5 + 4) / 4 = 5 completion tokens on average, 20 in all, 8 the longest
        "completions/mean_length": 5.0,
        "completions/generated_tokens": 20.0,
        "completions/max_length": 8.0,
        "completions/truncated_fraction": 0.25,
        "loss_mask/token_fraction": 1.0,
        "loss": 0.25,
        "throughput/generate_tokens_per_s": 10.0,  # 20 tokens in 2 s
        "throughput/train_tokens_per_s": pytest.approx(float("nan"), nan_ok=True),
    }


EPISODE = [
    {
        "role": "assistant",
        "content": "let me look",
        "tool_calls": [{"type": "function", "function": {"name": "search", "arguments": {"q": "x", "k": 2}}}],
        "reward": 0.0,
    },
    {"role": "tool", "name": "search", "content": "no such page", "failed": True},
    {"role": "assistant", "content": "42", "reward": 1.0},
    {"role": "user", "content": "correct"},
    {"role": "assistant", "content": "thanks"},
]


def multi_turn_batch():
    # row 0: 2 model turns (sampled 2 + 2 tokens) around 3 environment tokens, 7 context tokens in all
    # row 1: 1 turn of 8 sampled tokens; rows 2, 3: one turn each, 5 and 4 tokens
    loss_mask = torch.tensor(
        [
            [1, 1, 0, 0, 0, 1, 1, 0],
            [1, 1, 1, 1, 1, 1, 1, 1],
            [1, 1, 1, 1, 1, 0, 0, 0],
            [1, 1, 1, 1, 0, 0, 0, 0],
        ],
        dtype=torch.float,
    )
    conversations = [
        [EPISODE[0], EPISODE[1], EPISODE[2]],
        [{"role": "assistant", "content": "x" * 8}],
        [{"role": "assistant", "content": "y" * 5}],
        EPISODE,  # 3 assistant turns
    ]
    return make_batch([7, 8, 5, 4], loss_mask=loss_mask, conversations=copy.deepcopy(conversations))


def test_multi_turn_lengths_count_only_the_sampled_tokens():
    batch = multi_turn_batch()
    metrics = step_metrics(record_of(batch, [1.0, 0.0, 1.0, 1.0]), data_counts={})
    # sampled tokens per row: 4, 8, 5, 4 (the environment's 3 tokens of row 0 are not generated)
    assert metrics["completions/mean_length"] == 21 / 4
    assert metrics["completions/generated_tokens"] == 21.0
    assert metrics["completions/max_length"] == 8.0
    assert metrics["throughput/generate_tokens_per_s"] == 21 / 2
    assert metrics["episodes/turns_mean"] == (2 + 1 + 1 + 3) / 4
    assert metrics["episodes/context_tokens_mean"] == (7 + 8 + 5 + 4) / 4  # model and environment tokens
    single = step_metrics(record_of(make_batch([7, 8, 5, 4]), [1.0, 0.0, 1.0, 1.0]), data_counts={})
    assert not any(key.startswith("episodes/") for key in single)


def test_single_completion_sample_rows_have_no_conversation():
    batch = make_batch([3, 8, 5, 4])
    rows = sample_rows(batch, record_of(batch, [1.0, 0.0, 1.0, 1.0]).scores, torch.zeros(4), num_groups=1)
    assert rows == [
        {
            "prompt": [{"role": "user", "content": "task 0"}],
            "completions": ["completion 0", "completion 1"],
            "rewards": [1.0, 0.0],
            "advantages": [0.0, 0.0],
            "truncated": [False, True],
        }
    ]


def test_sample_rows_carry_each_episode_as_plain_json():
    batch = multi_turn_batch()
    # a reward the environment handed over as a tensor must not reach samples.jsonl as one
    batch.conversations[3][2] = {**EPISODE[2], "reward": torch.tensor(1.0)}
    scores = record_of(batch, [1.0, 0.0, 1.0, 1.0]).scores
    first, second = sample_rows(batch, scores, torch.tensor([0.5, -0.5, 1.0, -1.0]), num_groups=2)
    assert first["completions"] == ["completion 0", "completion 1"] and first["truncated"] == [False, True]
    assert first["turns"] == [2, 1] and second["turns"] == [1, 3]
    assert first["conversation"][0] == [EPISODE[0], EPISODE[1], EPISODE[2]]
    assert second["conversation"][1] == EPISODE
    reward = second["conversation"][1][2]["reward"]
    assert reward == 1.0 and type(reward) is float
    json.dumps(second)  # every value is JSON
    # the row is a copy: what the batch's messages become later does not rewrite the logged sample
    batch.conversations[0][0]["tool_calls"][0]["function"]["arguments"]["q"] = "changed"
    assert first["conversation"][0][0]["tool_calls"][0]["function"]["arguments"] == {"q": "x", "k": 2}
