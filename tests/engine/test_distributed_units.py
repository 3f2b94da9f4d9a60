"""The pieces of data-parallel GRPO that need no second process: sharding, seeds, metric
pooling, the sharded sampler and the config checks."""

from __future__ import annotations

import math

import pytest
import torch

from grpokit.config import GRPOConfig, PPOConfig, build_config
from grpokit.engine.parallel import (
    DataParallel,
    derive_seed,
    launched_distributed,
    reduce_reward_metrics,
    reduce_update_metrics,
    shard_bounds,
)
from grpokit.trainers.sharding import ShardedSampler


def as_rank(rank: int, world_size: int) -> DataParallel:
    """A DataParallel that reports ``rank`` of ``world_size`` without a process group (no collectives run)."""
    parallel = DataParallel()
    parallel.rank, parallel.world_size = rank, world_size
    return parallel


def test_shard_bounds_split_contiguously_and_name_the_field():
    assert [shard_bounds(8, r, 2) for r in range(2)] == [(0, 4), (4, 8)]
    assert [shard_bounds(6, r, 3) for r in range(3)] == [(0, 2), (2, 4), (4, 6)]
    with pytest.raises(
        ValueError, match=r"data.prompts_per_step \(6\) must be divisible by the number of processes \(4\)"
    ):
        shard_bounds(6, 0, 4)


def test_derived_seeds_depend_on_every_key_only():
    assert derive_seed(0, 3, 0, 5) == derive_seed(0, 3, 0, 5)
    seeds = {derive_seed(s, r, t, i) for s in (0, 1) for r in (0, 1) for t in (0, 1) for i in range(4)}
    assert len(seeds) == 32  # no collision between seed, round, stream kind and index
    assert all(0 <= s < 2**63 for s in seeds)
    with pytest.raises(ValueError, match="non-negative"):
        derive_seed(0, -1)


def test_launch_detection_reads_the_launcher_variables():
    assert not launched_distributed({})
    assert not launched_distributed({"WORLD_SIZE": "1"})
    assert launched_distributed({"WORLD_SIZE": "2"})
    assert launched_distributed({"WORLD_SIZE": "1", "ACCELERATE_USE_DEEPSPEED": "true"})
    assert launched_distributed({"ACCELERATE_USE_FSDP": "TRUE"})


# Two processes' minibatches: rows of loss tokens per response.
MASK_0 = torch.tensor(
    [[1, 1, 1, 0], [1, 0, 0, 0], [0, 0, 0, 0]], dtype=torch.float32
)  # 4 tokens, 2 non-empty rows
MASK_1 = torch.tensor(
    [[1, 1, 1, 1], [1, 1, 0, 0], [1, 0, 0, 0]], dtype=torch.float32
)  # 7 tokens, 3 non-empty rows


def test_update_metrics_pool_by_tokens_and_keep_extremes():
    parts = [
        ({"policy_loss": 1.0, "ratio_min": 0.9, "ratio_max": 1.1, "train_tokens": 10.0, "grad_norm": 2.0,
          "faults/nonfinite_skipped": 0.0}, 1.0),
        ({"policy_loss": 4.0, "ratio_min": 0.8, "ratio_max": 1.05, "train_tokens": 30.0, "grad_norm": 2.0,
          "faults/nonfinite_skipped": 1.0}, 3.0),
    ]  # fmt: skip
    out = reduce_update_metrics(parts)
    assert out["policy_loss"] == pytest.approx((1.0 * 1 + 4.0 * 3) / 4)  # token-weighted
    assert (out["ratio_min"], out["ratio_max"]) == (0.8, 1.1)
    assert out["train_tokens"] == 40.0 and out["faults/nonfinite_skipped"] == 1.0
    assert out["grad_norm"] == 2.0  # identical on every process after DDP's all-reduce


def test_reward_metrics_pool_exactly():
    """Per-process mean/std/none_fraction pooled equal the statistics of all values at once."""
    values = [
        torch.tensor([0.0, 1.0, 0.5]),
        torch.tensor([2.0, 0.25, 1.0, 3.0]),
    ]  # applicable values per process
    rows = [4, 4]  # responses per process; process 0 has one not-applicable response
    parts = []
    for v, n in zip(values, rows):
        parts.append(
            (
                {
                    "rewards/f/mean": v.mean().item(),
                    "rewards/f/std": v.std().item(),
                    "rewards/f/none_fraction": 1 - len(v) / n,
                    "rewards/f/failures": 1.0,
                    "rewards/unscored_fraction": 1 - len(v) / n,
                },
                n,
            )
        )
    out = reduce_reward_metrics(parts)
    every = torch.cat(values)
    assert out["rewards/f/mean"] == pytest.approx(every.mean().item(), rel=1e-6)
    assert out["rewards/f/std"] == pytest.approx(every.std().item(), rel=1e-6)
    assert out["rewards/f/none_fraction"] == pytest.approx(1 / 8)
    assert out["rewards/unscored_fraction"] == pytest.approx(1 / 8)
    assert out["rewards/f/failures"] == 2.0
    nothing = reduce_reward_metrics([({"rewards/g/mean": math.nan, "rewards/g/std": math.nan,
                                       "rewards/g/none_fraction": 1.0}, 4)] * 2)  # fmt: skip
    assert math.isnan(nothing["rewards/g/mean"])


def test_a_group_is_sampled_alike_by_any_process(tiny_model_dir):
    """per_group_seed: prompt i's completions depend on (seed, round, i), not on the process sampling it."""
    from grpokit.models import load_model, load_tokenizer
    from grpokit.rollout import TransformersSampler

    model, tokenizer = load_model(tiny_model_dir), load_tokenizer(tiny_model_dir)
    prompts, columns = ["ab", "cd", "ef", "gh"], {"answer": ["1", "2", "3", "4"]}

    def sampler(rank, world):
        inner = TransformersSampler(model, tokenizer, max_new_tokens=6, seed=0)
        return ShardedSampler(inner, as_rank(rank, world), seed=7, per_group_seed=True)

    one = sampler(0, 1)
    last = sampler(1, 2)
    for _ in range(2):  # two rounds: the round enters the seed, so they differ
        everything, half = one.generate(prompts, 3, columns), last.generate(prompts, 3, columns)
        assert half.prompts == everything.prompts[6:] and half.columns["answer"] == ["3"] * 3 + ["4"] * 3
        assert half.completions == everything.completions[6:]
        assert torch.equal(half.group_ids, everything.group_ids[6:])  # global prompt indices 2, 3
        assert torch.equal(half.group_ids, torch.tensor([2, 2, 2, 3, 3, 3]))
    first, second = sampler(0, 1), sampler(0, 1)
    second.load_state_dict(one.state_dict())  # resumes at round 2
    assert (
        second.rounds == 2
        and first.generate(prompts, 3).completions != second.generate(prompts, 3).completions
    )


def test_one_process_without_group_seeds_is_the_plain_sampler(tiny_model_dir):
    from grpokit.models import load_model, load_tokenizer
    from grpokit.rollout import TransformersSampler

    model, tokenizer = load_model(tiny_model_dir), load_tokenizer(tiny_model_dir)
    plain = TransformersSampler(model, tokenizer, max_new_tokens=6, seed=3)
    wrapped = ShardedSampler(
        TransformersSampler(model, tokenizer, max_new_tokens=6, seed=3), DataParallel(), seed=3
    )
    for _ in range(2):
        assert wrapped.generate(["ab", "cd"], 4).completions == plain.generate(["ab", "cd"], 4).completions
    assert wrapped.max_new_tokens == 6  # other attributes are the wrapped sampler's
    state = wrapped.state_dict()
    assert state["rounds"] == 2 and torch.equal(state["generator"], plain.state_dict()["generator"])


@pytest.fixture
def base_config():
    def make(trainer=GRPOConfig, **sections):
        data = {"data": {"prompts_per_step": 4}, "algorithm": {"num_generations": 4}}
        for key, value in sections.items():
            data.setdefault(key, {}).update(value)
        return build_config(trainer, data)

    return make


def test_configs_that_cannot_be_split_are_named(base_config):
    two = as_rank(0, 2)
    two.check_config(base_config())  # B = 4 prompts, N = 16 responses: fine
    with pytest.raises(ValueError, match=r"data.prompts_per_step \(3\)"):
        two.check_config(base_config(data={"prompts_per_step": 3}))
    with pytest.raises(ValueError, match=r"optim.mini_batch_size .* \(6\)"):
        as_rank(0, 4).check_config(
            base_config(optim={"mini_batch_size": 6}, algorithm={"num_generations": 3})
        )
    with pytest.raises(
        ValueError, match=r"16 / 2 processes = 8 responses\) must be divisible by optim.gradient_acc"
    ):
        two.check_config(base_config(optim={"gradient_accumulation_steps": 16}))
    with pytest.raises(ValueError, match="dynamic_sampling"):
        two.check_config(base_config(algorithm={"dynamic_sampling": True}))
    two.check_config(base_config(PPOConfig, algorithm={"num_generations": 1}))  # PPO splits like GRPO
    with pytest.raises(ValueError, match="value_model 'shared' with several processes"):
        two.check_config(base_config(PPOConfig, algorithm={"num_generations": 1, "value_model": "shared"}))
    DataParallel().check_config(base_config(data={"prompts_per_step": 3}))  # one process: anything goes


def test_single_process_collectives_are_local():
    parallel = DataParallel()
    assert parallel.is_main and not parallel.is_distributed and parallel.world_size == 1
    assert torch.equal(parallel.all_gather(torch.tensor([1.0, 2.0])), torch.tensor([1.0, 2.0]))
    assert parallel.all_reduce_sum(torch.tensor([3.0])).item() == 3.0
    assert parallel.all_true(True) and not parallel.all_true(False)
    assert parallel.gather_object({"a": 1}) == [{"a": 1}] and parallel.broadcast_object(5) == 5
    with pytest.raises(KeyError):
        parallel.on_main(lambda: {}["missing"])


def test_deepspeed_config_gets_grpokits_micro_batch_and_clipping(base_config):
    from grpokit.engine.parallel import _fill_deepspeed_config

    config = base_config(optim={"gradient_accumulation_steps": 2, "max_grad_norm": 0.5})  # N = 16
    ds = {"train_micro_batch_size_per_gpu": "auto", "gradient_clipping": "auto"}
    _fill_deepspeed_config(ds, config, world_size=2)
    assert ds == {"train_micro_batch_size_per_gpu": 4, "gradient_clipping": 0.5}  # 16 / 2 processes / 2 micro
    explicit = {"train_micro_batch_size_per_gpu": 1, "gradient_clipping": 0.5}
    _fill_deepspeed_config(explicit, config, world_size=2)
    assert explicit["train_micro_batch_size_per_gpu"] == 1  # the user's value is kept
    with pytest.raises(
        ValueError, match=r"optim.max_grad_norm \(0.5\) differs from DeepSpeed's gradient_clipping"
    ):
        _fill_deepspeed_config({"gradient_clipping": 1.0}, config, world_size=2)
