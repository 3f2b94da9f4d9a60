import json

from grpokit.apps.rl import main

SMALL = ["--env", "grpokit/CueTasks-v0", "--max-steps", "2", "--num-start-states", "4", "--num-generations", "4",
         "--num-minibatches", "2", "--eval-episodes", "4", "--report-to", "[]", "--report", "false", "--quiet"]  # fmt: skip


def test_train_then_evaluate(tmp_path, capsys):
    code = main([*SMALL, "--output-dir", str(tmp_path), "--run-name", "cli", "--algorithm.grouping=task"])
    assert code == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["steps"] == 2 and summary["env_steps"] == 2 * 16 * 8 and summary["eval_episodes"] == 4
    assert summary["run_dir"] == str(tmp_path / "cli")
    assert (tmp_path / "cli" / "checkpoints" / "step-000002" / "policy.safetensors").is_file()
    assert "grouping: task" in (tmp_path / "cli" / "config.yaml").read_text()

    assert main(["evaluate", str(tmp_path / "cli"), "--episodes", "6"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["episodes"] == 6 and report["deterministic"] is True
    assert report["checkpoint"].endswith("step-000002")
    # Deterministic evaluation of the saved policy reproduces the run's own final evaluation.
    assert main(["evaluate", str(tmp_path / "cli"), "--episodes", "4"]) == 0
    assert json.loads(capsys.readouterr().out)["return_mean"] == summary["eval_return_mean"]


def test_config_file_and_override(tmp_path, capsys):
    path = tmp_path / "rl.yaml"
    path.write_text("algorithm:\n  grouping: batch\nseed: 3\n")
    assert (
        main([*SMALL, "--config", str(path), "--output-dir", str(tmp_path), "--run-name", "f", "--seed", "5"])
        == 0
    )
    text = (tmp_path / "f" / "config.yaml").read_text()
    # The file sets the grouping; the command line wins for the seed.
    assert "seed: 5" in text and "grouping: batch" in text


def test_errors_exit_2_with_a_message(capsys):
    assert main(["--num-generatons", "3"]) == 2
    assert "did you mean --num_generations" in capsys.readouterr().err
    assert main(["--grouping", "nearest"]) == 2
    assert "unknown grouping 'nearest'" in capsys.readouterr().err
    assert main(["positional"]) == 2
    assert "unexpected argument 'positional'" in capsys.readouterr().err
    assert main(["evaluate"]) == 2
    assert "evaluate needs a checkpoint or run directory" in capsys.readouterr().err


def test_help_lists_every_option(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for option in (
        "--num-generations",
        "--grouping",
        "--advantage-mode",
        "--epsilon-low",
        "--gae-lambda",
        "--env",
    ):
        assert option in out
