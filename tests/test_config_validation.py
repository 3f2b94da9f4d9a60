"""Bad configurations are rejected before any model is loaded, with the offending field named.

Every case goes through ``grpokit train`` with the model and tokenizer loaders replaced by functions that
fail the test, so a check that happened only after loading would show up as an AssertionError.
"""

import pytest

from grpokit.cli import main
from grpokit.config import ConfigError, GRPOConfig, build_config

CASES = [
    # wrong types
    (["--max_steps", "ten"], "max_steps: Input should be a valid integer"),
    (["--learning_rate", "fast"], "optim.learning_rate: Input should be a valid number"),
    (["--num_generations", "2.5"], "algorithm.num_generations: Input should be a valid integer"),
    (["--reward_funcs", "{a: 1}"], "rewards.reward_funcs: Input should be a valid list"),
    (["--shuffle", "maybe"], "data.shuffle: Input should be a valid boolean"),
    # out of range
    (["--num_generations", "1"], "algorithm.num_generations: Input should be greater than or equal to 2"),
    (["--epsilon_low", "0"], "algorithm.epsilon_low: Input should be greater than 0"),
    (["--epsilon_high", "-0.1"], "algorithm.epsilon_high: Input should be greater than 0"),
    (["--beta", "-0.01"], "algorithm.beta: Input should be greater than or equal to 0"),
    (["--temperature", "0"], "generation.temperature: Input should be greater than 0"),
    (["--prompts_per_step", "0"], "data.prompts_per_step: Input should be greater than or equal to 1"),
    (["--max_consecutive_nonfinite", "0"], "optim.max_consecutive_nonfinite: Input should be greater than"),
    (["--learning_rate", ".inf"], "optim.learning_rate: Input should be a finite number"),
    (["--reward_weights", "[.nan]"], "rewards.reward_weights.0: Input should be a finite number"),
    # a length limit is always there: 'constant' aggregation divides by max_new_tokens
    (
        ["--loss_aggregation", "constant", "--max_new_tokens", "null"],
        "generation.max_new_tokens: Input should be a valid integer",
    ),
    # incompatible options
    (
        ["--dynamic_sampling", "--num_generations", "1"],
        "algorithm.num_generations: Input should be greater than or equal to 2",
    ),
    (
        ["--process_reward_func", "m:f", "--advantage_estimator", "rank"],
        "advantage_estimator 'rank' applies to outcome rewards; with rewards.process_reward_func",
    ),
    (
        ["--process_reward_func", "m:f", "--multi_objective_aggregation", "normalize_then_sum"],
        "multi_objective_aggregation 'normalize_then_sum' combines outcome reward functions",
    ),
    (["--ref_model_sync_steps", "5"], "ref_model_sync_steps is set but beta is 0"),
    (["--prompt_truncation", "skip"], "prompt_truncation 'skip' needs max_prompt_length"),
    (
        ["--prompt_truncation", "drop"],
        "generation.prompt_truncation: Input should be 'left', 'error' or 'skip'",
    ),
    (
        ["--overlong_buffer_length", "12", "--max_new_tokens", "12"],
        "rewards.overlong_buffer_length (12) must be smaller than generation.max_new_tokens (12)",
    ),
    (["--mini_batch_size", "5"], "optim.mini_batch_size (5) must divide the N"),
    (["--min_new_tokens", "20"], "min_new_tokens (20) must not exceed max_new_tokens (12)"),
    (["--reward_failure", "ignore"], "rewards.reward_failure: Input should be 'raise' or 'fallback'"),
    (["--reward_timeout_s", "-1"], "rewards.reward_timeout_s: Input should be greater than 0"),
    (["--task", "null", "--reward_funcs", "[accuracy]"], "no prompts: set --data.path FILE"),
    (["--reward_funcs", "[]"], "no reward: name one with --reward_funcs"),
]


@pytest.fixture
def no_model_loads(monkeypatch):
    import grpokit.models.loading

    def forbidden(*args, **kwargs):
        raise AssertionError("a model or tokenizer was loaded before the config was validated")

    monkeypatch.setattr(grpokit.models.loading, "load_model", forbidden)
    monkeypatch.setattr(grpokit.models.loading, "load_tokenizer", forbidden)


@pytest.mark.parametrize(("args", "message"), CASES, ids=[" ".join(a)[:40] for a, _ in CASES])
def test_cli_rejects_bad_config_before_loading(no_model_loads, capsys, tmp_path, args, message):
    base = ["--task", "addition", "--reward_funcs", "[task]", "--max_new_tokens", "12"]
    code = main(["train", "--name_or_path", str(tmp_path), "--output_dir", str(tmp_path / "runs"), *base, *args])
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.startswith("grpokit train: error: invalid config:") or err.startswith("grpokit train: error: ")
    assert message in err


def test_a_config_copied_around_validation_is_checked_again_by_the_trainer(no_model_loads, tmp_path):
    from grpokit.trainers.grpo import GRPOTrainer

    config = build_config(GRPOConfig, {"model": {"name_or_path": str(tmp_path)}})
    # model_copy skips validation: the trainer must not trust it.
    broken = config.model_copy(
        update={"algorithm": config.algorithm.model_copy(update={"beta": -1.0, "num_generations": 1})}
    )
    with pytest.raises(ConfigError) as info:
        GRPOTrainer(broken, dataset=[{"prompt": "ab", "answer": "1"}])
    assert "algorithm.num_generations: Input should be greater than or equal to 2" in str(info.value)
    assert "algorithm.beta: Input should be greater than or equal to 0" in str(info.value)


def test_assignment_is_validated_too():
    config = GRPOConfig()
    with pytest.raises(ValueError, match="epsilon_low"):
        config.algorithm.epsilon_low = 0.0


RENAMED = [
    ("grpo", {"algorithm": {"overlong_buffer_length": 4}}, "algorithm.overlong_buffer_length", "rewards.overlong_buffer_length"),
    ("grpo", {"algorithm": {"overlong_penalty": 2.0}}, "algorithm.overlong_penalty", "rewards.overlong_penalty"),
    ("grpo", {"generation": {"vllm_kv_cache_gib": 1.0}}, "generation.vllm_kv_cache_gib", "vllm.kv_cache_gib"),
    ("grpo", {"generation": {"vllm_gpu_memory_utilization": 0.5}}, "generation.vllm_gpu_memory_utilization",
     "vllm.gpu_memory_utilization"),
    ("grpo", {"generation": {"vllm_weight_sync_timeout_s": 9}}, "generation.vllm_weight_sync_timeout_s",
     "vllm.weight_sync_timeout_s"),
    ("ppo", {"algorithm": {"value_clip": 0.3}}, "algorithm.value_clip", "algorithm.cliprange_value"),
    ("rl", {"algorithm": {"value_coef": 0.3}}, "algorithm.value_coef", "algorithm.vf_coef"),
    ("rl", {"algorithm": {"clip_range_value": 0.3}}, "algorithm.clip_range_value", "algorithm.cliprange_value"),
    ("rl", {"algorithm": {"normalize_advantages": False}}, "algorithm.normalize_advantages",
     "algorithm.whiten_advantages"),
]  # fmt: skip


def _config_class(name):
    from grpokit.config import PPOConfig
    from grpokit.rl.config import RLConfig

    return {"grpo": GRPOConfig, "ppo": PPOConfig, "rl": RLConfig}[name]


@pytest.mark.parametrize(("trainer", "data", "old", "new"), RENAMED, ids=[r[2] for r in RENAMED])
def test_an_old_field_name_in_a_file_names_the_new_one(tmp_path, trainer, data, old, new):
    import yaml

    from grpokit.config import load_config

    path = tmp_path / "old.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(ConfigError, match=f"{old} was renamed to {new}"):
        load_config(path, cls=_config_class(trainer))


@pytest.mark.parametrize(("trainer", "data", "old", "new"), RENAMED, ids=[r[2] for r in RENAMED])
def test_an_old_field_name_on_the_command_line_names_the_new_one(trainer, data, old, new):
    from grpokit.config import field_paths, load_config

    new_names = {path.rsplit(".", 1)[-1] for path in field_paths(_config_class(trainer))}
    for key in [old] + [old.rsplit(".", 1)[-1]] * (old.rsplit(".", 1)[-1] not in new_names):
        with pytest.raises(ConfigError, match=f"--{old} was renamed to --{new}"):
            load_config(None, {key: "1"}, cls=_config_class(trainer))


def test_an_old_field_name_in_python_names_the_new_one():
    from grpokit.config import PPOAlgorithmConfig

    with pytest.raises(ValueError, match="value_clip was renamed to algorithm.cliprange_value"):
        PPOAlgorithmConfig(value_clip=None)


def test_cli_reports_an_old_name_before_loading(no_model_loads, capsys, tmp_path):
    code = main(["train", "--name_or_path", str(tmp_path), "--trainer", "ppo", "--value_clip", "0.3"])
    assert code == 2
    assert "--algorithm.value_clip was renamed to --algorithm.cliprange_value" in capsys.readouterr().err


def test_shared_loss_names_are_the_same_in_every_trainer():
    from grpokit.config import LossConfig, PPOAlgorithmConfig, ValueLossConfig
    from grpokit.rl.config import RLAlgorithmConfig

    for cls in (GRPOConfig.model_fields["algorithm"].annotation, PPOAlgorithmConfig, RLAlgorithmConfig):
        assert issubclass(cls, LossConfig)
        assert set(LossConfig.model_fields) <= set(cls.model_fields)
    for cls in (PPOAlgorithmConfig, RLAlgorithmConfig):
        assert issubclass(cls, ValueLossConfig)
    assert PPOAlgorithmConfig().loss_type == "ppo"
    assert RLAlgorithmConfig().vf_coef == 0.5 and PPOAlgorithmConfig().vf_coef == 0.1


def test_a_users_data_without_a_reward_fails_before_loading_naming_reward_funcs(no_model_loads, capsys, tmp_path):
    data = tmp_path / "train.jsonl"
    data.write_text('{"prompt": "1+1=", "answer": "2"}\n')
    code = main(["train", "--model", str(tmp_path), "--data.path", str(data)])
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1 and "--reward_funcs" in err, err


def test_a_config_without_a_model_names_the_model_and_the_demo_preset(no_model_loads, capsys, tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text("rewards: {reward_funcs: [accuracy]}\ndata: {path: x.jsonl}\n")
    assert main(["train", str(config)]) == 2
    err = capsys.readouterr().err
    assert "no model: set --model PATH" in err and "--preset demo" in err
