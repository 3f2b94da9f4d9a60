"""The multi-turn demo end to end at toy size, its presets and its command line."""

import json

import pytest
import torch

from grpokit.apps.agent_demo import (
    HeldOutEvaluator,
    agent_demo_config,
    build_agent_tokenizer,
    format_agent_summary,
    held_out_rows,
    prepare_agent_model,
    run_agent_demo,
)
from grpokit.apps.demo import cache_dir
from grpokit.config import DemoGRPOConfig, build_config, preset_path


def tiny_agent_config(tmp_path, env="calculator", run_name="run", **demo_fields) -> DemoGRPOConfig:
    """The multi-turn demo at toy size: every phase runs, in seconds."""
    data = agent_demo_config(env).model_dump(mode="json")
    data.update(max_steps=2)
    data["data"].update(num_train_problems=16, num_eval_problems=8, prompts_per_step=2)
    data["algorithm"]["num_generations"] = 2
    toy = dict(
        hidden_size=16,
        num_layers=1,
        num_heads=2,
        sft_steps=4,
        sft_eval_every=2,
        sft_batch_size=4,
        eval_every=1,
    )
    data["demo"].update({**toy, **demo_fields})
    data["logging"].update(
        output_dir=str(tmp_path / "runs"), run_name=run_name, quiet=True, report_to=[], report=False
    )
    return build_config(DemoGRPOConfig, data)


@pytest.mark.parametrize("env", ["calculator", "guess_number"])
def test_the_demo_warms_up_evaluates_trains_and_writes_its_summary(tmp_path, monkeypatch, env):
    monkeypatch.setenv("GRPOKIT_CACHE", str(tmp_path / "cache"))
    messages = []
    result = run_agent_demo(tiny_agent_config(tmp_path, env, control=True), log=messages.append)

    assert result.model_dir.parent == cache_dir("agent_demo") == tmp_path / "cache" / "agent_demo"
    for name in ("config.json", "model.safetensors", "warmup.json", "warmup_state.pt", "chat_template.jinja"):
        assert (result.model_dir / name).is_file(), name
    warmup = json.loads((result.model_dir / "warmup.json").read_text())
    assert warmup["steps"] == 4 and [p["step"] for p in warmup["curve"]] == [2, 4]
    assert warmup["conversations"] == 16

    run_dir = result.train_result.run_dir
    summary = json.loads((run_dir / "demo_summary.json").read_text())
    assert summary == json.loads(json.dumps(result.summary))
    assert summary["env"] == env and summary["num_eval_problems"] == 8
    for when in ("before", "after"):
        for mode in ("greedy", "sampled"):
            metrics = summary[when][mode]
            assert set(metrics) == {"success", "turns", "tool_use", "truncated"}
            assert 0 <= metrics["success"] <= 1 and metrics["turns"] >= 1
    assert summary["gain"] == summary["after"]["greedy"]["success"] - summary["before"]["greedy"]["success"]
    assert [p["step"] for p in summary["curve"]] == [0, 1, 2]
    assert summary["curve"][-1]["success/greedy"] == summary["after"]["greedy"]["success"]
    assert [p["step"] for p in summary["control"]["curve"]] == [0, 1, 2]
    assert summary["control"]["curve"][0] == {**summary["curve"][0], "step": 0}  # both from the warm start
    assert summary["warmup"]["cached"] is False and summary["seconds"]["total"] > 0
    assert 0 < summary["teacher_success"] < 1
    evals = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in evals if "eval/success/greedy" in r] == [1, 2]
    table = format_agent_summary(summary)
    assert "after GRPO (2 steps)" in table and "control: 2 more supervised steps" in table
    assert any(m.startswith("warm-up:") and "imitating the teacher" in m for m in messages)

    # The warm cache is reused.
    messages.clear()
    cached = run_agent_demo(tiny_agent_config(tmp_path, env, "cached"), log=messages.append)
    assert cached.model_dir == result.model_dir and cached.summary["warmup"]["cached"] is True
    assert messages[0] == f"warm-up: cached model {result.model_dir}"
    assert cached.summary["before"] == summary["before"]


def test_the_cache_key_holds_every_warm_up_setting_and_nothing_after_it(tmp_path, monkeypatch):
    monkeypatch.setenv("GRPOKIT_CACHE", str(tmp_path / "cache"))
    from grpokit.apps.agent_demo import _warmup_dir

    base = _warmup_dir(tiny_agent_config(tmp_path))
    assert _warmup_dir(tiny_agent_config(tmp_path, eval_every=5, control=True)) == base
    assert _warmup_dir(tiny_agent_config(tmp_path, sft_steps=5)) != base
    assert _warmup_dir(tiny_agent_config(tmp_path, "guess_number")) != base
    kwargs = tiny_agent_config(tmp_path, "guess_number")
    kwargs = kwargs.model_copy(update={"env": kwargs.env.model_copy(update={"kwargs": {"high": 32}})})
    assert _warmup_dir(kwargs) != _warmup_dir(tiny_agent_config(tmp_path, "guess_number"))


def test_held_out_measurements_repeat_and_use_the_test_split(tmp_path, monkeypatch):
    from grpokit.models.loading import load_model, load_tokenizer

    monkeypatch.setenv("GRPOKIT_CACHE", str(tmp_path / "cache"))
    config = tiny_agent_config(tmp_path, "guess_number")
    model_dir = prepare_agent_model(config, lambda _: None)
    model, tokenizer = load_model(str(model_dir)), load_tokenizer(str(model_dir))
    rows = held_out_rows(config)
    assert len(rows) == 8 and len({r["target"] for r in rows}) == 8  # the test split deals every number
    evaluate = HeldOutEvaluator(model, tokenizer, config, rows)
    first = evaluate()
    assert evaluate() == first  # the sampled runner is reseeded each time
    assert first["greedy"]["turns"] >= 1


@pytest.mark.parametrize("env", ["calculator", "guess_number"])
def test_the_presets_are_the_measured_settings(env):
    from grpokit.models.tiny import build_tiny_model

    config = agent_demo_config(env)
    assert config.env.name == env and config.model.name_or_path is None
    assert (config.optim.learning_rate, config.demo.grpo_learning_rate) == (
        1e-4,
        3e-4,
    )  # demo_optim picks 3e-4
    assert (config.data.prompts_per_step, config.algorithm.num_generations) == (8, 8)
    assert config.data.num_eval_problems == 500
    demo = config.demo
    model = build_tiny_model(
        build_agent_tokenizer(), architecture=demo.architecture, hidden_size=demo.hidden_size,
        num_layers=demo.num_layers, num_heads=demo.num_heads, intermediate_size=4 * demo.hidden_size,
    )  # fmt: skip
    assert 130_000 < sum(p.numel() for p in model.parameters()) < 140_000


def test_the_multi_turn_demo_needs_a_fixed_number_of_warm_up_steps(tmp_path):
    with pytest.raises(ValueError, match="demo.sft_steps"):
        tiny_agent_config(tmp_path, sft_steps=None)
    with pytest.raises(ValueError, match="no multi-turn demo"):
        agent_demo_config("my_env.py:Env")


def test_the_command_line_picks_the_agent_preset_for_a_built_in_environment():
    from grpokit.cli import _config_source

    assert _config_source(None, {"env.name": "calculator"}, None, demo=False) == str(
        preset_path("agent_calculator")
    )
    assert _config_source(None, {"env.name": "guess_number"}, None, demo=True) == str(
        preset_path("agent_guess_number")
    )
    assert _config_source(None, {}, None, demo=False) == str(preset_path("demo"))
    with_model = {"env.name": "calculator", "model.name_or_path": "m"}
    assert _config_source(None, with_model, None, demo=False) is None
    with pytest.raises(ValueError, match="--env my_env.py:Foo has no built-in demo: set --model PATH"):
        _config_source(None, {"env.name": "my_env.py:Foo"}, None, demo=False)


def test_evaluating_during_grpo_does_not_change_the_run(tmp_path, monkeypatch):
    from safetensors.torch import load_file

    monkeypatch.setenv("GRPOKIT_CACHE", str(tmp_path / "cache"))
    # A warm-up long enough to play the game sometimes, so that GRPO gets a signal.
    warm = {"sft_steps": 80, "sft_learning_rate": 0.01}
    curve = run_agent_demo(
        tiny_agent_config(tmp_path, "guess_number", "curve", eval_every=1, **warm), log=lambda _: None
    )
    plain = run_agent_demo(
        tiny_agent_config(tmp_path, "guess_number", "plain", eval_every=0, **warm), log=lambda _: None
    )
    assert [p["step"] for p in curve.curve] == [0, 1, 2] and [p["step"] for p in plain.curve] == [0]
    assert curve.summary["after"] == plain.summary["after"]
    a = load_file(str(curve.train_result.final_dir / "model.safetensors"))
    b = load_file(str(plain.train_result.final_dir / "model.safetensors"))
    start = load_file(str(curve.model_dir / "model.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], start[k]) for k in a)  # GRPO did change the model
