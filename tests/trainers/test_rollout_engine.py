"""The trainer's rollout engine without vLLM: backend checks, weight sync and truncated importance sampling.

A fake engine stands in for vLLM: it samples with the transformers sampler, then reports rollout log-probs that
differ from the trainer's by known offsets (so the importance weights are known), and records every weight
push. The vLLM engine itself is exercised by tests/rollout/test_vllm_sampler.py (scripts/test-vllm.sh).
"""

import math
from types import SimpleNamespace

import pytest
import torch

from grpokit.config import ConfigError, GRPOAlgorithmConfig, OptimConfig, PPOConfig, build_config
from grpokit.engine.parallel import DataParallel
from grpokit.models.forward import sequence_logprobs
from grpokit.models.loading import load_model, load_tokenizer
from grpokit.rollout import TransformersSampler
from grpokit.tracking import read_metrics
from grpokit.trainers import language_model, rollout_engine
from grpokit.trainers.grpo import GRPOTrainer
from grpokit.trainers.objective import update_policy
from grpokit.trainers.rollout_engine import (
    build_sampler,
    check_rollout_backend,
    close_sampler,
    rollout_importance_level,
    rollout_importance_weights,
    sync_sampler_weights,
)

LOG3, LOG_HALF = math.log(3.0), math.log(0.5)


def fraction_of_a(prompts, completions, **columns):
    return [c.count("a") / max(len(c), 1) for c in completions]


class FakeEngine:
    """A separate engine's interface over the transformers sampler: rollout log-probs shifted so that the
    trainer/rollout ratio is 3 (capped to 2) on the tokens of even rows and 0.5 on odd rows."""

    def __init__(self, sampler):
        self.inner = sampler
        self.pad_id = sampler.pad_id
        self.batches, self.pushed, self.closed = [], [], 0

    def generate(self, prompts, num_generations, columns=None):
        batch = self.inner.generate(prompts, num_generations, columns)
        even = (torch.arange(batch.num_responses) % 2 == 0)[:, None]  # (N, 1)
        shift = torch.where(even, LOG3, LOG_HALF) * batch.completion_mask  # (N, T)
        batch.sampler_logprobs = batch.sampler_logprobs - shift  # log pi_trainer - log pi_rollout = shift
        self.batches.append(batch)
        return batch

    def update_weights(self, model):
        self.pushed.append({name: t.detach().clone() for name, t in model.state_dict().items()})
        return {"weight_sync/total_s": 0.25, "weight_sync/megabytes": 1.5}

    def close(self):
        self.closed += 1

    def set_seed(self, seed):
        self.inner.set_seed(seed)

    def state_dict(self):
        return self.inner.state_dict()

    def load_state_dict(self, state):
        self.inner.load_state_dict(state)


# ---------------------------------------------------------------------------------------------------------
# The importance weights inside update_policy
# ---------------------------------------------------------------------------------------------------------


@pytest.fixture
def policy_and_batch(tiny_model_dir):
    tokenizer = load_tokenizer(tiny_model_dir)
    model = load_model(tiny_model_dir)
    sampler = TransformersSampler(model, tokenizer, max_new_tokens=6, seed=0)
    batch = sampler.generate(["ab", "cd"], 4)
    assert batch.completion_mask.sum(1).min() > 0
    trainer = sequence_logprobs(model, batch, batch.num_responses)  # (N, T) what update_policy recomputes
    return model, batch, trainer


def _update(model, batch, level, cap=2.0, loss_aggregation="sequence_mean"):
    N = batch.num_responses
    advantages = torch.linspace(-1.0, 1.0, N)  # (N,)
    algorithm = GRPOAlgorithmConfig(
        num_generations=4, rollout_importance_cap=cap, loss_aggregation=loss_aggregation
    )
    optimizer = torch.optim.SGD(model.parameters(), lr=0.0)
    metrics = update_policy(
        model, optimizer, batch, advantages, batch.completion_mask.clone(), algorithm=algorithm, optim=OptimConfig(),
        max_new_tokens=6, rollout_importance=level,
    ).as_metrics()  # fmt: skip
    return advantages, metrics


def _sequence_mean(values, mask):
    return ((values * mask).sum(1) / mask.sum(1)).mean()


def test_token_weights_reach_the_loss_and_are_capped(policy_and_batch):
    model, batch, trainer = policy_and_batch
    mask = batch.completion_mask  # (N, T)
    # Per token, log pi_trainer - log pi_rollout alternates log 3 (weight capped to 2) and log 0.5 (weight 0.5).
    odd_token = (torch.arange(mask.shape[1]) % 2 == 1)[None, :]  # (1, T)
    shift = torch.where(odd_token, LOG_HALF, LOG3) * mask  # (N, T)
    batch.sampler_logprobs = trainer - shift
    advantages, metrics = _update(model, batch, "token")

    weights = torch.where(odd_token, 0.5, 2.0) * mask  # (N, T)
    # ratio = 1 on the single pass, so each token's surrogate is -w * A; sequence_mean aggregates it.
    expected_loss = _sequence_mean(-weights * advantages[:, None], mask)
    assert metrics["policy_loss"] == pytest.approx(float(expected_loss), rel=1e-5, abs=1e-6)
    capped = (~odd_token).float() * mask
    assert metrics["rollout_is/capped_fraction"] == pytest.approx(float(capped.sum() / mask.sum()), rel=1e-6)
    assert metrics["rollout_is/weight_mean"] == pytest.approx(float(weights.sum() / mask.sum()), rel=1e-5)
    assert metrics["rollout_is/logprob_abs_diff"] == pytest.approx(
        float(shift.abs().sum() / mask.sum()), rel=1e-5
    )


def test_sequence_weights_use_the_product_over_the_response(policy_and_batch):
    model, batch, trainer = policy_and_batch
    mask = batch.completion_mask  # (N, T)
    lengths = mask.sum(1)  # (N,)
    # Each token of row i is shifted by s_i / length_i, so the sequence log-ratio is s_i: rows alternate
    # log 3 (capped to C = 2) and log 0.5.
    per_row = torch.where(torch.arange(batch.num_responses) % 2 == 0, LOG3, LOG_HALF)  # (N,)
    batch.sampler_logprobs = trainer - (per_row / lengths)[:, None] * mask
    advantages, metrics = _update(model, batch, "sequence", loss_aggregation="token_mean")

    weights = torch.where(per_row > 0, 2.0, 0.5)  # (N,)
    expected_loss = (-(weights * advantages)[:, None] * mask).sum() / mask.sum()  # token_mean
    assert metrics["policy_loss"] == pytest.approx(float(expected_loss), rel=1e-5, abs=1e-6)
    assert metrics["rollout_is/capped_fraction"] == pytest.approx(0.5)


def test_no_weights_without_rollout_importance(policy_and_batch):
    model, batch, trainer = policy_and_batch
    batch.sampler_logprobs = trainer - LOG3 * batch.completion_mask
    advantages, metrics = _update(model, batch, None)
    assert metrics["policy_loss"] == pytest.approx(float(-advantages.mean()), rel=1e-5, abs=1e-6)
    assert not any(key.startswith("rollout_is/") for key in metrics)


def test_missing_rollout_logprobs_is_an_error_naming_the_field(policy_and_batch):
    model, batch, _ = policy_and_batch
    batch.sampler_logprobs = None
    with pytest.raises(
        ValueError, match="algorithm.rollout_importance_sampling is 'token'.*no rollout log-probs"
    ):
        _update(model, batch, "token")


def test_rollout_importance_weights_renames_the_metrics():
    trainer = torch.tensor([[0.0, -1.0, -2.0]])  # (1, 3)
    rollout = torch.tensor([[-LOG3, -1.0, 0.0]])  # log ratios: log 3, 0, -2 (last token is padding)
    mask = torch.tensor([[1.0, 1.0, 0.0]])
    weights, metrics = rollout_importance_weights(trainer, rollout, mask, "token", 2.0)
    assert weights.tolist() == [[2.0, 1.0, 0.0]]
    assert metrics == pytest.approx(
        {
            "rollout_is/logprob_abs_diff": LOG3 / 2,
            "rollout_is/capped_fraction": 0.5,
            "rollout_is/weight_mean": 1.5,
            "rollout_is/weight_min": 1.0,
            "rollout_is/weight_max": 2.0,
        }
    )


# ---------------------------------------------------------------------------------------------------------
# The trainer with a separate engine
# ---------------------------------------------------------------------------------------------------------


def test_trainer_pushes_weights_every_step_weights_the_loss_and_closes(make_config, rows):
    config = make_config(
        max_steps=3, algorithm={"num_generations": 4, "rollout_importance_sampling": "token"}
    )
    trainer = GRPOTrainer(config, reward_funcs=[fraction_of_a], dataset=rows)
    engine = FakeEngine(trainer.sampler.sampler)
    trainer.sampler.sampler = engine  # inside the ShardedSampler, where build_sampler's result lives
    initial = {name: t.detach().clone() for name, t in trainer.model.state_dict().items()}
    result = trainer.train()

    # One push per step, each after that step's update: consecutive pushes hold different weights, the
    # last one the final policy.
    assert len(engine.pushed) == 3 and engine.closed == 1
    for before, after in zip([initial, *engine.pushed], engine.pushed):
        assert any(not torch.equal(before[name], after[name]) for name in after)
    final = trainer.model.state_dict()
    assert all(torch.equal(engine.pushed[-1][name], final[name]) for name in final)

    metrics = read_metrics(result.run_dir)
    assert [row["weight_sync/total_s"] for row in metrics] == [0.25] * 3
    assert all(row["time/weight_sync"] >= 0 for row in metrics)
    for row, batch in zip(metrics, engine.batches):
        mask = batch.completion_mask  # (N, T); every row is scored, so the loss mask
        even = (torch.arange(batch.num_responses) % 2 == 0).float()[:, None] * mask
        # Even rows: trainer/rollout ratio 3, capped to 2; odd rows 0.5 (to the sampler's rounding).
        assert row["rollout_is/capped_fraction"] == pytest.approx(float(even.sum() / mask.sum()), rel=1e-6)
        expected_mean = float((2.0 * even + 0.5 * (mask - even)).sum() / mask.sum())
        assert row["rollout_is/weight_mean"] == pytest.approx(expected_mean, rel=1e-4)


def test_transformers_backend_has_no_sync_and_auto_means_no_weights(make_config, rows):
    config = make_config(max_steps=1)
    trainer = GRPOTrainer(config, reward_funcs=[fraction_of_a], dataset=rows)
    assert isinstance(trainer.sampler.sampler, TransformersSampler) and trainer.rollout_importance is None
    row = read_metrics(trainer.train().run_dir)[0]
    assert not any(
        key.startswith(("rollout_is/", "weight_sync/")) or key == "time/weight_sync" for key in row
    )


def test_sampler_closed_when_training_fails(make_config, rows):
    def broken(prompts, completions, **columns):
        raise RuntimeError("reward server down")

    trainer = GRPOTrainer(make_config(max_steps=2), reward_funcs=[broken], dataset=rows)
    engine = FakeEngine(trainer.sampler.sampler)
    trainer.sampler.sampler = engine
    with pytest.raises(Exception, match="reward server down"):
        trainer.train()
    assert engine.closed == 1 and engine.pushed == []


# ---------------------------------------------------------------------------------------------------------
# Config and backend checks
# ---------------------------------------------------------------------------------------------------------


def test_auto_importance_sampling_follows_the_backend(make_config):
    assert rollout_importance_level(make_config()) is None
    vllm = make_config(generation={"backend": "vllm"})
    assert rollout_importance_level(vllm) == "token"
    for level, expected in (("none", None), ("token", "token"), ("sequence", "sequence")):
        assert (
            rollout_importance_level(make_config(algorithm={"rollout_importance_sampling": level}))
            == expected
        )
        config = make_config(generation={"backend": "vllm"}, algorithm={"rollout_importance_sampling": level})
        assert rollout_importance_level(config) == expected
    assert rollout_importance_level(make_config(generation={"backend": "vllm_server"})) == "token"
    # PPO on a vLLM engine is corrected the same way (it used to get no weights at all).
    assert rollout_importance_level(build_config(PPOConfig, {"generation": {"backend": "vllm"}})) == "token"


@pytest.mark.parametrize(
    ("sections", "message"),
    [
        (
            {"generation": {"backend": "vllm"}, "model": {"lora": {"r": 4}}},
            "generation.backend 'vllm' with model.lora",
        ),
        ({"vllm": {"kv_cache_gib": 1.0}}, "vllm.kv_cache_gib set but generation.backend is 'transformers'"),
        (
            {"generation": {"backend": "vllm"}, "vllm": {"gpu_memory_utilization": 1.5}},
            "vllm.gpu_memory_utilization",
        ),
        (
            {"generation": {"backend": "vllm"}, "vllm": {"weight_sync_timeout_s": 0}},
            "vllm.weight_sync_timeout_s",
        ),
        (
            {"generation": {"vllm_kv_cache_gib": 1.0}},
            "generation.vllm_kv_cache_gib was renamed to vllm.kv_cache_gib",
        ),
        ({"generation": {"backend": "sglang"}}, "generation.backend"),
        (
            {"vllm": {"server_port": 9000}},
            "vllm.server_port set but generation.backend is 'transformers'",
        ),
        (
            {"generation": {"backend": "vllm"}, "vllm": {"server_host": "gpu-box"}},
            "vllm.server_host set but generation.backend is 'vllm' .* set generation.backend: vllm_server",
        ),
        (
            {"generation": {"backend": "vllm_server"}, "vllm": {"kv_cache_gib": 2.0}},
            "vllm.kv_cache_gib set but generation.backend is 'vllm_server'.* pass --kv-cache-gib to grpokit "
            "vllm-serve",
        ),
        (
            {"generation": {"backend": "vllm_server"}, "model": {"lora": {"r": 4}}},
            "generation.backend 'vllm_server' with model.lora",
        ),
        ({"generation": {"backend": "vllm_server"}, "vllm": {"server_port": 0}}, "vllm.server_port"),
        ({"generation": {"backend": "vllm_server"}, "vllm": {"server_timeout_s": 0}}, "vllm.server_timeout_s"),
        ({"algorithm": {"rollout_importance_cap": 0}}, "algorithm.rollout_importance_cap"),
        ({"algorithm": {"rollout_importance_sampling": "tokens"}}, "algorithm.rollout_importance_sampling"),
    ],
)
def test_config_rejections_name_the_field(make_config, sections, message):
    with pytest.raises(ConfigError, match=message):
        make_config(**sections)


def test_vllm_rejects_several_processes_and_sharded_engines(make_config):
    config = make_config(generation={"backend": "vllm"})
    launch = SimpleNamespace(accelerator=object(), world_size=2, engine="multi_cpu")
    with pytest.raises(ValueError, match=r"generation.backend 'vllm' runs in one process .* 2 process\(es\)"):
        check_rollout_backend(config, launch)
    check_rollout_backend(make_config(), launch)  # the transformers sampler shards fine
    server = make_config(generation={"backend": "vllm_server"})
    with pytest.raises(ValueError, match=r"generation.backend 'vllm_server' runs in one process"):
        check_rollout_backend(server, launch)
    check_rollout_backend(server, DataParallel())  # one process: no vLLM needed in the trainer


def test_missing_vllm_names_how_to_install_it(make_config, monkeypatch, rows):
    real_find_spec = rollout_engine.importlib.util.find_spec
    monkeypatch.setattr(
        rollout_engine.importlib.util,
        "find_spec",
        lambda name, *a: None if name == "vllm" else real_find_spec(name, *a),
    )
    config = make_config(generation={"backend": "vllm"})
    with pytest.raises(ImportError, match=r"pip install 'grpokit\[vllm\]'.*scripts/test-vllm.sh"):
        check_rollout_backend(config, DataParallel())
    # The trainer fails the same way, before loading any model.
    monkeypatch.setattr(language_model, "screen_prompt_lengths", lambda *a: pytest.fail("got past the check"))
    with pytest.raises(ImportError, match=r"pip install 'grpokit\[vllm\]'"):
        GRPOTrainer(config, reward_funcs=[fraction_of_a], dataset=rows)


def test_build_sampler_passes_the_generation_knobs(make_config, tiny_model_dir):
    config = make_config(
        seed=5,
        generation={"temperature": 0.7, "top_k": 3, "max_new_tokens": 9, "max_prompt_length": 4,
                    "prompt_truncation": "skip"},
    )  # fmt: skip
    sampler = build_sampler(load_model(tiny_model_dir), load_tokenizer(tiny_model_dir), config)
    assert isinstance(sampler, TransformersSampler)
    assert (sampler.temperature, sampler.top_k, sampler.max_new_tokens, sampler.seed) == (0.7, 3, 9, 5)
    # 'skip' removed long rows before training: a long prompt reaching the sampler is a bug, so an error.
    assert sampler.prompt_truncation == "error" and sampler.max_prompt_length == 4


@pytest.mark.parametrize(
    ("spacing", "expected"),
    [("inclusive", [0.7 + 0.3 * i / 7 for i in range(8)]), ("exclusive", [0.7 + 0.3 * i / 8 for i in range(8)])],
)
def test_build_sampler_spreads_the_schedule_as_configured(make_config, tiny_model_dir, spacing, expected):
    # exclusive is the founding code's 0.7 + 0.3 * i / K: the last of K = 8 samples at 0.9625, not 1.0.
    config = make_config(
        algorithm={"num_generations": 8},
        generation={"temperature_schedule": [0.7, 1.0], "temperature_schedule_spacing": spacing},
    )
    sampler = build_sampler(load_model(tiny_model_dir), load_tokenizer(tiny_model_dir), config)
    batch = sampler.generate(["ab"], 8)
    assert batch.temperatures.tolist() == pytest.approx(expected, abs=1e-6)


def test_sync_and_close_are_no_ops_for_samplers_without_an_engine(tiny_model_dir):
    model = load_model(tiny_model_dir)
    sampler = TransformersSampler(model, load_tokenizer(tiny_model_dir))
    assert sync_sampler_weights(sampler, model) == {}
    close_sampler(sampler)  # nothing to release
    engine = FakeEngine(sampler)
    assert sync_sampler_weights(engine, model) == {"weight_sync/total_s": 0.25, "weight_sync/megabytes": 1.5}
    close_sampler(engine)
    assert len(engine.pushed) == 1 and engine.closed == 1


def test_a_temperature_vllm_refuses_is_refused_before_any_engine_starts():
    from grpokit.config import GRPOConfig, build_config

    for generation in ({"temperature": 2.5}, {"temperature_schedule": [0.7, 2.5]}):
        with pytest.raises(ValueError, match="vLLM samples at temperatures up to 2.0"):
            build_config(GRPOConfig, {"generation": {**generation, "backend": "vllm_server"}})
    build_config(GRPOConfig, {"generation": {"temperature": 2.5}})  # the transformers sampler takes it
    build_config(GRPOConfig, {"generation": {"temperature": 2.0, "backend": "vllm_server"}})
