import json
import subprocess
import sys
import types

import pytest
import yaml

from grpokit.cli import main, parse_train_args


def test_top_level_help_lists_commands(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for command in ("train", "demo", "eval", "rl", "config", "version"):
        assert f"\n  {command} " in out


def test_help_does_not_import_torch():
    code = "import sys; from grpokit.cli import main; main(['--help']); print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip().endswith("False")


def test_train_help_documents_every_field_with_both_names(capsys):
    assert main(["train", "--help-all"]) == 0
    out = capsys.readouterr().out
    assert "--algorithm.beta | --beta  (default: 0.0)" in out
    assert "--generation.temperature_schedule | --temperature_schedule  (default: null)" in out
    assert "KL penalty coefficient" in out


def test_train_help_shows_the_fields_set_first_and_points_to_the_rest(capsys):
    from grpokit.config import COMMON_FIELDS, GRPOConfig, field_paths

    assert main(["train", "--model", "m", "--help"]) == 0
    out = capsys.readouterr().out
    shown = [line.split()[0] for line in out.splitlines() if line.startswith("  --") and "(default:" in line]
    assert shown == [f"--{path}" for path in COMMON_FIELDS["grpo"]]
    assert "--algorithm.beta | --beta  (default: 0.0)" in out and "KL penalty coefficient" in out
    assert "temperature_schedule" not in out  # the rest is one pointer away
    more = len(field_paths(GRPOConfig)) - len(COMMON_FIELDS["grpo"])
    assert f"... and {more} more fields" in out
    assert "docs/configuration.md" in out and "grpokit config init --trainer grpo > my.yaml" in out
    assert main(["train", "--model", "m", "--trainer", "ppo", "--help"]) == 0
    out = capsys.readouterr().out
    assert "--algorithm.vf_coef | --vf_coef  (default: 0.1)" in out and "--trainer ppo >" in out


def test_config_init_writes_a_starter_that_loads_back_to_the_defaults(tmp_path, capsys):
    from grpokit.config import GRPOConfig, PPOConfig, load_config

    for trainer, cls in (("grpo", GRPOConfig), ("ppo", PPOConfig)):
        assert main(["config", "init", "--trainer", trainer]) == 0
        path = tmp_path / f"{trainer}.yaml"
        path.write_text(capsys.readouterr().out)
        config = load_config(path, cls=None)  # what grpokit train --config does
        assert type(config) is cls and config == cls()
        assert "\nmax_steps: 500\n" in path.read_text() and "\n# seed: 0\n" in path.read_text()
    # --output writes the file, and refuses to overwrite one
    out = tmp_path / "my.yaml"
    assert main(["config", "init", "--minimal", "--output", str(out)]) == 0
    assert load_config(out) == GRPOConfig() and "# seed:" not in out.read_text()
    assert main(["config", "init", "--output", str(out)]) == 2
    assert "exists" in capsys.readouterr().err
    # The starter, edited, trains like any config file: --print-config resolves it.
    out.write_text(out.read_text().replace("beta: 0.0", "beta: 0.04"))
    assert main(["train", str(out), "--model", "m", "--print-config"]) == 0
    assert yaml.safe_load(capsys.readouterr().out)["algorithm"]["beta"] == 0.04
    with pytest.raises(SystemExit):
        main(["config", "init", "--trainer", "sft"])


def test_version(capsys):
    from grpokit import __version__

    assert main(["version"]) == 0
    assert capsys.readouterr().out.strip() == f"grpokit {__version__}"


def test_unknown_command_exits_with_usage():
    with pytest.raises(SystemExit) as info:
        main(["trian"])
    assert info.value.code == 2


def test_parse_train_args():
    path, overrides, flags = parse_train_args(
        [
            "c.yaml",
            "--beta",
            "0.04",
            "--generation.temperature=0.9",
            "--quiet",
            "--dynamic_sampling",
            "--print-config",
        ]
    )
    assert path == "c.yaml"
    assert overrides == {
        "beta": "0.04",
        "generation.temperature": "0.9",
        "quiet": "true",
        "dynamic_sampling": "true",
    }
    assert flags == {"help": False, "help_all": False, "print_config": True, "preset": None}
    with pytest.raises(ValueError, match="--beta needs a value"):
        parse_train_args(["--beta"])
    with pytest.raises(ValueError, match="unexpected argument 'b.yaml'"):
        parse_train_args(["a.yaml", "b.yaml"])


def test_print_config_applies_file_and_overrides(tmp_path, capsys):
    path = tmp_path / "c.yaml"
    path.write_text("algorithm:\n  beta: 0.1\n")
    assert main(["train", str(path), "--num_generations", "4", "--print-config"]) == 0
    config = yaml.safe_load(capsys.readouterr().out)
    assert config["algorithm"]["beta"] == 0.1 and config["algorithm"]["num_generations"] == 4


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--num_generations", "1"], "algorithm.num_generations: Input should be greater than or equal to 2"),
        (["--beta", "-1"], "algorithm.beta: Input should be greater than or equal to 0"),
        (["--betta", "1"], "unknown option --betta; did you mean --beta?"),
    ],
)
def test_config_errors_are_reported_before_any_model_loads(monkeypatch, capsys, args, message):
    import grpokit.models.loading

    def forbidden(*a, **k):
        raise AssertionError("a model was loaded before the config was validated")

    monkeypatch.setattr(grpokit.models.loading, "load_model", forbidden)
    assert main(["train", *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith("grpokit train: error: ") and message in err


def test_rl_forwards_its_arguments(monkeypatch):
    seen = []
    fake = types.ModuleType("grpokit.apps.rl")
    fake.main = lambda argv: seen.append(argv) or 7
    monkeypatch.setitem(sys.modules, "grpokit.apps.rl", fake)
    assert main(["rl", "train", "--env", "CartPole-v1"]) == 7
    assert seen == [["train", "--env", "CartPole-v1"]]


def test_train_demo_needs_a_demo_config():
    from grpokit.cli import _train_demo
    from grpokit.config import GRPOConfig, PPOConfig

    for config in (GRPOConfig(), PPOConfig()):
        with pytest.raises(
            ValueError, match=r"model.name_or_path is unset and the config has no demo section"
        ):
            _train_demo(config)


def test_eval_requires_a_model():
    with pytest.raises(SystemExit) as info:
        main(["eval", "--task", "addition"])
    assert info.value.code == 2


def test_train_smoke_run_with_file_data_and_file_reward(tmp_path, capsys):
    from grpokit.models.tiny import build_char_tokenizer, build_tiny_model

    model_dir = tmp_path / "model"
    build_tiny_model(
        build_char_tokenizer("abcd "),
        model_dir,
        hidden_size=32,
        num_layers=1,
        num_heads=2,
        intermediate_size=64,
    )
    data = tmp_path / "prompts.jsonl"
    data.write_text("".join(json.dumps({"prompt": p, "target": "a"}) + "\n" for p in ["ab", "cd", "bc"]))
    rewards = tmp_path / "my_rewards.py"
    rewards.write_text(
        "def has_target(prompts, completions, target, **kw):\n"
        "    return [float(t in c) for c, t in zip(completions, target)]\n"
    )
    args = [
        "train",
        "--name_or_path",
        str(model_dir),
        "--path",
        str(data),
        "--task",
        "null",
        "--reward_funcs",
        f"[{rewards}:has_target]",
        "--max_steps",
        "2",
        "--prompts_per_step",
        "2",
        "--num_generations",
        "2",
        "--max_new_tokens",
        "4",
        "--output_dir",
        str(tmp_path / "runs"),
        "--run_name",
        "smoke",
        "--save_steps",
        "1",
        "--quiet",
        "--report_to",
        "[]",
    ]
    assert main(args) == 0
    run = tmp_path / "runs" / "smoke"
    assert not (run / "tensorboard").exists()
    assert "rewards/has_target/mean" in (run / "report.html").read_text()  # the report embeds the curves
    assert "torch" in json.loads((run / "environment.json").read_text())
    assert yaml.safe_load((run / "config.yaml").read_text())["data"]["path"] == str(data)
    assert len((run / "metrics.jsonl").read_text().splitlines()) == 2
    assert "rewards/has_target/mean" in json.loads((run / "metrics.jsonl").read_text().splitlines()[0])
    # Resume without a config file: the run's own config.yaml is reused, max_steps extended.
    assert main(["train", "--resume", str(run), "--max_steps", "3"]) == 0
    assert [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()] == [
        1,
        2,
        3,
    ]


def test_eval_reports_accuracy_and_pass_at_k(tmp_path, capsys):
    from grpokit.data import get_task
    from grpokit.models.tiny import build_char_tokenizer, build_tiny_model

    model_dir = tmp_path / "model"
    build_tiny_model(
        build_char_tokenizer(get_task("addition").alphabet),
        model_dir,
        hidden_size=32,
        num_layers=1,
        num_heads=2,
        intermediate_size=64,
    )
    args = [
        "eval",
        "--model",
        str(model_dir),
        "--task",
        "addition",
        "--num-problems",
        "4",
        "--k",
        "2",
        "--max-new-tokens",
        "4",
        "--device",
        "cpu",
    ]
    assert main(args) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["num_problems"] == 4 and report["task"] == "addition"
    assert 0.0 <= report["accuracy"] <= 1.0 and 0.0 <= report["pass@2"] <= 1.0
    # The same problems scored by the configured 'task' reward: the same greedy accuracy.
    assert main([*args[:5], "--reward_funcs", "[task]", "--num-problems", "4", "--max-new-tokens", "4"]) == 0
    scored = json.loads(capsys.readouterr().out)
    assert scored["data"] == "task:addition" and scored["rewards"] == ["task"] and scored["num_problems"] == 4
    assert scored["accuracy"] == report["accuracy"] and scored["threshold"] == 1.0


def test_eval_scores_your_data_with_the_configured_rewards(tiny_model_dir, tmp_path, capsys):
    rows = [{"prompt": p, "target": t} for p, t in [("ab", "a"), ("cd", "c"), ("ef", "e"), ("gh", "h")]]
    held_out = tmp_path / "held_out.jsonl"
    held_out.write_text("".join(json.dumps(row) + "\n" for row in rows))
    train = tmp_path / "train.jsonl"
    train.write_text(json.dumps({"prompt": "zz", "target": "z"}) + "\n")
    rewards = tmp_path / "my_rewards.py"
    rewards.write_text(
        "def has_target(prompts, completions, target, **kw):\n"
        "    return [float(t in c) for c, t in zip(completions, target)]\n"
        "def length(prompts, completions, scale=10, **kw):\n"
        "    return [len(c) / scale for c in completions]\n"
    )
    config = tmp_path / "my.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "model": {"name_or_path": "/not/the/trained/model", "device": "cpu"},
                "data": {"path": str(train)},
                "generation": {"max_new_tokens": 4},
                "rewards": {"reward_funcs": [f"{rewards}:has_target"]},
            }
        )
    )
    base = ["eval", "--config", str(config), "--model", str(tiny_model_dir), "--data.path", str(held_out)]
    assert main([*base, "--k", "3", "--num-problems", "3"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["model"] == str(tiny_model_dir) and report["data"] == str(held_out)
    assert report["rewards"] == ["has_target"] and report["num_problems"] == 3
    assert report["threshold"] == 1.0 and report["num_samples"] == 3  # 0/1 rewards: solved = reward 1
    assert 0 <= report["accuracy"] <= report["pass@3"] <= 1 and report["mean_reward"] == report["accuracy"]
    # weights and reward_kwargs from the command line as from the file; graded rewards: means only
    assert main([*base, "--reward_funcs", f"[{rewards}:has_target, {rewards}:length]", "--reward_weights",
                 "[1.0, 0.5]", "--reward_kwargs", f"{{{rewards}:length: {{scale: 4}}}}"]) == 0  # fmt: skip
    report = json.loads(capsys.readouterr().out)
    assert report["rewards"] == ["has_target", "length"] and report["num_problems"] == 4
    assert report["threshold"] is None and "accuracy" not in report
    means = report["per_function"]
    assert report["mean_reward"] == pytest.approx(means["has_target"] + 0.5 * means["length"], abs=1e-6)
    assert main([*base, "--threshold", "0"]) == 0
    assert json.loads(capsys.readouterr().out)["accuracy"] == 1.0
    # the config's checks come first, and a config without rewards is named before any model loads
    no_reward = tmp_path / "no_reward.yaml"
    no_reward.write_text(f"data:\n  path: {held_out}\n")
    assert main(["eval", "--config", str(no_reward), "--model", str(tiny_model_dir)]) == 2
    assert "no reward" in capsys.readouterr().err
    assert main(["eval", "--config", str(no_reward), "--k", "0"]) == 2
    assert "--k must be >= 1" in capsys.readouterr().err


def test_report_command_writes_the_html_report(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    rows = [{"step": s, "reward/mean": 0.1 * s, "kl": 0.01 * s} for s in (1, 2, 3)]
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert main(["report", str(run)]) == 0
    html = (run / "report.html").read_text()
    assert "reward/mean" in html


def test_a_missing_optional_package_is_one_line_naming_the_install(monkeypatch, capsys):
    import grpokit.cli as cli

    def missing(argv, *, demo):
        raise ImportError("the vLLM backend needs vLLM: pip install 'grpokit[vllm]'")

    monkeypatch.setattr(cli, "_train", missing)
    assert cli.main(["train", "--backend", "vllm"]) == 2
    err = capsys.readouterr().err
    assert err.strip() == "grpokit train: error: the vLLM backend needs vLLM: pip install 'grpokit[vllm]'"
