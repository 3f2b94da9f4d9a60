"""``grpokit train --num_processes N``: the arguments accelerate gets, config errors before any launch, and
(slow) a real 2-process run through ``accelerate launch``."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import yaml

from grpokit.cli import main
from grpokit.engine.parallel import accelerate_launch_command, split_num_processes


def test_num_processes_is_taken_out_of_the_arguments():
    assert split_num_processes(["c.yaml", "--num_processes", "2", "--beta", "0.1"]) == (
        ["c.yaml", "--beta", "0.1"],
        2,
    )
    assert split_num_processes(["--num-processes=4"]) == ([], 4)
    assert split_num_processes(["--beta", "0.1"]) == (["--beta", "0.1"], None)
    for bad, message in ((["--num_processes"], "needs a value"), (["--num_processes", "two"], "integer"),
                         (["--num_processes=0"], ">= 1")):  # fmt: skip
        with pytest.raises(ValueError, match=message):
            split_num_processes(bad)


def test_launch_command_is_accelerate_ddp_on_a_free_port():
    command = accelerate_launch_command(2, ["train", "c.yaml", "--beta", "0.1"], port=29613)
    assert command[:3] == [sys.executable, "-m", "accelerate.commands.launch"]
    launcher = command[3 : command.index("-m", 3)]
    assert launcher[launcher.index("--num_processes") + 1] == "2"
    assert launcher[launcher.index("--main_process_port") + 1] == "29613"
    assert "--multi_gpu" in launcher  # accelerate's several-local-processes launcher (torchrun)
    assert command[command.index("-m", 3) :] == ["-m", "grpokit", "train", "c.yaml", "--beta", "0.1"]
    assert "--multi_gpu" not in accelerate_launch_command(1, ["train"])


def test_a_config_that_cannot_be_split_fails_before_launching(capsys, monkeypatch, tiny_model_dir):
    monkeypatch.setattr(subprocess, "call", lambda *a, **k: pytest.fail("launched"))
    model = ["--model", str(tiny_model_dir), "--data.task", "addition", "--reward_funcs", "[task]"]
    assert main(["train", *model, "--num_processes", "2", "--prompts_per_step", "3"]) == 2
    err = capsys.readouterr().err
    assert "data.prompts_per_step (3) must be divisible by the number of processes (2)" in err
    for demo in (["demo"], ["train"]):  # no model: the built-in demo
        assert main([*demo, "--num_processes", "2"]) == 2
        assert "--num_processes needs model.name_or_path" in capsys.readouterr().err
    monkeypatch.setenv("WORLD_SIZE", "2")  # as under accelerate launch
    assert main(["train", "--max_steps", "1"]) == 2
    assert "the built-in demo runs in one process" in capsys.readouterr().err


@pytest.mark.slow
def test_train_on_two_processes_through_accelerate_launch(tiny_model_dir, tmp_path):
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"prompt": p}) + "\n" for p in ["ab", "cd", "ef", "gh"]))
    config = {
        "max_steps": 2,
        "model": {"name_or_path": str(tiny_model_dir), "device": "cpu"},
        "data": {"path": str(prompts), "task": None, "prompts_per_step": 2},
        "rewards": {"reward_funcs": ["format"],
                    "reward_kwargs": {"format": {"pattern": "a", "mode": "search"}}},
        "generation": {"max_new_tokens": 4},
        "algorithm": {"num_generations": 2},
        "checkpoint": {"save_steps": 1},
        "logging": {"output_dir": str(tmp_path / "runs"), "run_name": "ddp", "report_to": [], "report": False,
                    "quiet": True},
    }  # fmt: skip
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    env_command = [sys.executable, "-m", "grpokit", "train", str(path), "--num_processes", "2"]
    done = subprocess.run(env_command, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    run = tmp_path / "runs" / "ddp"
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2]  # rank 0 alone logged
    assert (run / "final" / "model.safetensors").is_file()
    assert (run / "checkpoints" / "step-000002" / "trainer_state.pt").is_file()
