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
    (["--ref_model_sync_steps", "5"], "ref_model_sync_steps is set but beta is 0"),
    (["--prompt_truncation", "skip"], "prompt_truncation 'skip' needs max_prompt_length"),
    (
        ["--prompt_truncation", "drop"],
        "generation.prompt_truncation: Input should be 'left', 'error' or 'skip'",
    ),
    (
        ["--overlong_buffer_length", "12", "--max_new_tokens", "12"],
        "algorithm.overlong_buffer_length (12) must be smaller than generation.max_new_tokens (12)",
    ),
    (["--mini_batch_size", "5"], "optim.mini_batch_size (5) must divide the N"),
    (["--min_new_tokens", "20"], "min_new_tokens (20) must not exceed max_new_tokens (12)"),
    (["--reward_failure", "ignore"], "rewards.reward_failure: Input should be 'raise' or 'fallback'"),
    (["--reward_timeout_s", "-1"], "rewards.reward_timeout_s: Input should be greater than 0"),
    (["--task", "null"], "data: set data.path (a prompt file) or data.task"),
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
    code = main(["train", "--name_or_path", str(tmp_path), "--output_dir", str(tmp_path / "runs"), *args])
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
