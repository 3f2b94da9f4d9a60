import collections

import pytest
import yaml

from grpokit.config import (
    ConfigError,
    GRPOConfig,
    PolicyLossConfig,
    TrainConfig,
    apply_overrides,
    build_config,
    field_help,
    field_paths,
    load_config,
    save_config,
)


def test_defaults_are_those_of_a_real_model_not_the_demo():
    config = GRPOConfig()
    assert config.data.task is None and config.rewards.reward_funcs == []
    assert config.generation.max_new_tokens == 256
    assert "demo" not in GRPOConfig.model_fields
    assert config.num_responses == config.data.prompts_per_step * config.algorithm.num_generations


def test_the_demo_preset_holds_the_demo_values():
    from grpokit.config import DemoConfig, DemoGRPOConfig, available_presets, load_config, preset_path

    assert "demo" in available_presets()
    config = load_config(preset_path("demo"), cls=None)
    assert isinstance(config, DemoGRPOConfig) and config.model.name_or_path is None
    assert (config.data.task, config.rewards.reward_funcs) == ("addition", ["task"])
    assert (config.generation.max_new_tokens, config.max_steps) == (12, 1000)
    assert config.demo == DemoConfig()
    assert "optim" not in config.model_fields_set  # the demo's GRPO learning rate comes from demo.*
    ppo = load_config(preset_path("demo"), {"trainer": "ppo"}, cls=None)
    assert type(ppo).__name__ == "DemoPPOConfig"


def test_every_field_has_a_description_and_a_unique_name():
    rows = field_help(GRPOConfig)
    assert [path for path, _, text in rows if not text] == []
    names = collections.Counter(path.rsplit(".", 1)[-1] for path, _, _ in rows)
    assert [n for n, count in names.items() if count > 1] == []


def test_grpo_only_knobs_are_outside_the_shared_sections():
    shared = set(field_paths(TrainConfig))
    assert "algorithm.num_generations" not in shared
    assert "dynamic_sampling" not in PolicyLossConfig.model_fields
    assert "num_generations" in GRPOConfig.model_fields["algorithm"].annotation.model_fields


def test_unknown_key_in_section_suggests_the_closest():
    with pytest.raises(ConfigError, match=r"algorithm: unknown field 'betaa'; did you mean 'beta'\?"):
        build_config(GRPOConfig, {"algorithm": {"betaa": 0.1}})


def test_key_in_wrong_section_suggests_its_path():
    with pytest.raises(
        ConfigError, match=r"unknown field 'num_generations'; did you mean 'algorithm.num_generations'"
    ):
        build_config(GRPOConfig, {"num_generations": 4})


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (
            {"algorithm": {"num_generations": 1}},
            r"algorithm\.num_generations: Input should be greater than or equal to 2 \(got 1\)",
        ),
        (
            {"algorithm": {"beta": -0.1}},
            r"algorithm\.beta: Input should be greater than or equal to 0 \(got -0\.1\)",
        ),
        ({"algorithm": {"epsilon_low": 0}}, r"algorithm\.epsilon_low: Input should be greater than 0"),
        ({"generation": {"top_p": 1.5}}, r"generation\.top_p: Input should be less than or equal to 1"),
        (
            {"algorithm": {"kl_estimator": "k4"}},
            r"algorithm\.kl_estimator: unknown kl_estimator 'k4'; valid names: k1, k2, k3",
        ),
        ({"generation": {"min_new_tokens": 9, "max_new_tokens": 4}}, r"min_new_tokens \(9\) must not exceed"),
        ({"optim": {"warmup_steps": 3, "warmup_ratio": 0.1}}, r"warmup_steps or warmup_ratio, not both"),
        ({"optim": {"mini_batch_size": 7}}, r"optim\.mini_batch_size \(7\) must divide the N = .* = 64"),
        (
            {"rewards": {"reward_funcs": ["task"], "reward_weights": [1, 2]}},
            r"reward_weights has 2 entries, expected 1",
        ),
        ({"rewards": {"reward_funcs": ["task"]}}, r"rewards\.reward_funcs uses 'task' but data\.task is unset"),
    ],
)
def test_invalid_values_name_the_field(data, message):
    with pytest.raises(ConfigError, match=message):
        build_config(GRPOConfig, data)


def test_all_errors_are_reported_at_once():
    with pytest.raises(ConfigError) as info:
        build_config(GRPOConfig, {"algorithm": {"num_generations": 1, "beta": -1}})
    assert "algorithm.num_generations" in str(info.value) and "algorithm.beta" in str(info.value)


def test_overrides_by_name_and_by_path_parse_yaml_values():
    config = load_config(
        overrides={"beta": "0.04", "generation.temperature": "0.9", "temperature-schedule": "[0.7, 1.0]"}
    )
    assert config.algorithm.beta == 0.04
    assert config.generation.temperature == 0.9
    assert config.generation.temperature_schedule == (0.7, 1.0)


def test_unknown_override_suggests_the_closest():
    with pytest.raises(ConfigError, match=r"unknown option --betta; did you mean --beta\?"):
        load_config(overrides={"betta": "1"})


def test_overrides_do_not_mutate_the_input():
    data = {"algorithm": {"beta": 0.1}}
    out = apply_overrides(GRPOConfig, data, {"beta": 0.2})
    assert data == {"algorithm": {"beta": 0.1}} and out["algorithm"]["beta"] == 0.2


def test_yaml_file_then_overrides(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("max_steps: 7\nalgorithm:\n  beta: 0.1\n  num_generations: 4\n")
    config = load_config(path, {"beta": "0.0"})
    assert (config.max_steps, config.algorithm.beta, config.algorithm.num_generations) == (7, 0.0, 4)


def test_bad_files_name_the_file(tmp_path):
    with pytest.raises(ConfigError, match="cannot read config file .*missing.yaml"):
        load_config(tmp_path / "missing.yaml")
    (tmp_path / "list.yaml").write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="list.yaml: the top level must be a mapping"):
        load_config(tmp_path / "list.yaml")
    (tmp_path / "typo.yaml").write_text("algorithm:\n  epsilon_hgh: 0.28\n")
    with pytest.raises(
        ConfigError,
        match=r"invalid .*typo.yaml:\n  algorithm: unknown field 'epsilon_hgh'; did you mean 'epsilon_high'",
    ):
        load_config(tmp_path / "typo.yaml")


def test_saved_config_round_trips(tmp_path):
    config = load_config(
        overrides={"beta": 0.04, "temperature_schedule": [0.7, 1.0], "reward_funcs": ["task", "format"], "task": "addition"}
    )
    save_config(config, tmp_path / "config.yaml")
    saved = yaml.safe_load((tmp_path / "config.yaml").read_text())
    assert saved["algorithm"]["beta"] == 0.04
    assert load_config(tmp_path / "config.yaml") == config


@pytest.mark.parametrize(
    ("kind", "field"),
    [("kl", "kl_estimator"), ("advantage", "advantage_estimator"), ("aggregation", "loss_aggregation"),
     ("ratio", "ratio_level")],
)  # fmt: skip
def test_a_name_registered_before_the_config_is_built_is_accepted(kind, field):
    from grpokit.algorithms import register
    from grpokit.algorithms.registry import _REGISTRIES

    name = f"custom_{kind}_for_config_test"
    with pytest.raises(ConfigError, match=f"unknown {field} '{name}'; valid names: "):
        build_config(GRPOConfig, {"algorithm": {field: name}})
    register(kind, name)(lambda *args, **kwargs: None)
    try:
        assert getattr(build_config(GRPOConfig, {"algorithm": {field: name}}).algorithm, field) == name
    finally:
        _REGISTRIES[kind].pop(name)


@pytest.mark.parametrize("trainer", ["grpo", "rl"])
def test_k1_as_a_loss_term_is_refused_with_its_reason(trainer):
    from grpokit.rl.config import RLConfig

    cls = {"grpo": GRPOConfig, "rl": RLConfig}[trainer]
    with pytest.raises(ConfigError, match=r"k1 .* zero expected gradient.*use k2, k3 or 'k3\+'"):
        build_config(cls, {"algorithm": {"beta": 0.05, "kl_estimator": "k1"}})
    assert build_config(cls, {"algorithm": {"beta": 0.0, "kl_estimator": "k1"}}).algorithm.kl_estimator == "k1"
    assert build_config(cls, {"algorithm": {"beta": 0.05, "kl_estimator": "k3+"}}).algorithm.beta == 0.05


def test_ppo_keeps_k1_because_its_kl_is_in_the_reward():
    from grpokit.config import PPOConfig

    assert build_config(PPOConfig, {"algorithm": {"beta": 0.05}}).algorithm.kl_estimator == "k1"


def test_loss_type_is_checked_against_the_loss_registry():
    from grpokit.config import PPOConfig

    assert build_config(GRPOConfig, {"algorithm": {"loss_type": "gspo"}}).algorithm.loss_type == "gspo"
    assert build_config(PPOConfig, {}).algorithm.loss_type == "ppo"
    with pytest.raises(ConfigError, match=r"algorithm\.loss_type: unknown loss_type 'dpo'; valid names: .*grpo"):
        build_config(GRPOConfig, {"algorithm": {"loss_type": "dpo"}})


def test_the_config_package_imports_no_training_layer():
    import ast
    from pathlib import Path

    import grpokit.config

    forbidden = ("trainers", "engine", "rollout", "models", "rewards", "data", "tracking", "apps")
    for path in Path(grpokit.config.__file__).parent.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            if isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            for name in names:
                parts = name.split(".")
                assert not (parts[0] == "grpokit" and len(parts) > 1 and parts[1] in forbidden), (path, name)
