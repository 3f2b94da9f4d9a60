import json

import gymnasium as gym
import pytest

from grpokit.apps.rl import _parse_options, main
from grpokit.rl.envs import CueTasksEnv

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


def test_prints_when_the_envs_threshold_was_reached(tmp_path, capsys):
    # CueTasks registered with a reward_threshold (as gymnasium's own envs are); the greedy optimum over its
    # four tasks is 36.
    env_id = "grpokit-test/SolvableCueTasksCli-v0"
    if env_id not in gym.registry:
        entry_point = f"{CueTasksEnv.__module__}:{CueTasksEnv.__qualname__}"
        gym.register(id=env_id, entry_point=entry_point, max_episode_steps=1000, reward_threshold=35.0)
    args = ["--env", env_id, "--tasks", "[{task: 0}, {task: 1}, {task: 2}, {task: 3}]", "--max-steps", "50",
            "--num-minibatches", "4", "--eval-steps", "1", "--eval-episodes", "40", "--report-to", "[]",
            "--report", "false", "--output-dir", str(tmp_path)]  # fmt: skip
    assert main([*args, "--run-name", "stop"]) == 0
    *lines, last = capsys.readouterr().out.strip().splitlines()
    summary = json.loads(last)
    assert summary["stop_reason"] == "solved" and summary["target_return"] == 35.0
    assert summary["steps"] == summary["solved_step"] < 50
    assert lines[-1].startswith(f"solved at step {summary['solved_step']} (")
    assert f">= 35 ({env_id}'s reward_threshold)" in lines[-1]

    assert main([*args, "--run-name", "more", "--keep-going", "--max-steps", str(summary["steps"] + 1)]) == 0
    *lines, last = capsys.readouterr().out.strip().splitlines()
    assert (
        json.loads(last)["stop_reason"] == "max_steps" and json.loads(last)["solved_step"] == summary["steps"]
    )
    assert lines[-1].endswith(f"trained on to step {summary['steps'] + 1} (max_steps)")


def test_without_a_threshold_it_says_so(tmp_path, capsys):
    assert main([*SMALL[:-1], "--output-dir", str(tmp_path)]) == 0  # not --quiet
    *lines, last = capsys.readouterr().out.strip().splitlines()
    assert json.loads(last)["solved_step"] is None and json.loads(last)["stop_reason"] == "max_steps"
    assert "grpokit/CueTasks-v0 has no reward_threshold" in lines[-1]


@pytest.mark.parametrize(
    "argv, expected",
    [
        (["--keep-going"], {"stop_when_solved": "false"}),
        (["--no-stop-when-solved", "--seed", "3"], {"stop-when-solved": "false", "seed": "3"}),
        (["--stop-when-solved"], {"stop-when-solved": "true"}),
        (["--quiet", "--keep-going"], {"quiet": "true", "stop_when_solved": "false"}),
    ],
)
def test_flag_spellings(argv, expected):
    assert _parse_options(argv) == expected
