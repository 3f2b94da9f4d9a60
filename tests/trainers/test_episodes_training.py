"""Multi-turn GRPO end to end: a user's environment file from the CLI, 2 processes equal 1, LoRA, and a run
killed by SIGKILL then resumed is the uninterrupted run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
import yaml

from grpokit.cli import main
from grpokit.engine import checkpoint as ckpt
from grpokit.tracking import read_metrics
from grpokit.trainers.grpo import GRPOTrainer

TEMPLATE = (
    "{% for m in messages %}{% if m['role'] == 'assistant' %}{{ m['content'] }}{{ eos_token }}"
    "{% else %}{{ m['content'] }}\n{% endif %}{% endfor %}{% if add_generation_prompt %}>{% endif %}"
)

# A user's environment, in its own file: the opening is the row's word; the model gets "more" after its first
# turn; reward = share of 'a' in each turn. Setting GRPOKIT_TEST_PAUSE_AT_RESET pauses the chosen reset.
ENV_FILE = """
import os, pathlib, time

resets = 0


class CountA:
    @classmethod
    def make_rows(cls, n, seed, split):
        words = ["ab", "cd", "ef", "gh", "ba", "dc", "fe", "hg"]
        return [{"word": words[(i + seed) % len(words)]} for i in range(n)]

    def reset(self, row, seed):
        global resets
        resets += 1
        if resets == int(os.environ.get("GRPOKIT_TEST_PAUSE_AT_RESET", "0")):
            pathlib.Path(os.environ["GRPOKIT_TEST_MARKER"]).write_text(str(resets))
            time.sleep(float(os.environ["GRPOKIT_TEST_PAUSE_S"]))
        self.turns = 0
        return [{"role": "user", "content": row["word"]}]

    def step(self, message):
        from grpokit.agents import EnvStep

        self.turns += 1
        text = message["content"]
        reward = text.count("a") / max(len(text), 1)
        if self.turns >= 2:
            return EnvStep(reward=reward, terminated=True)
        return EnvStep(messages=[{"role": "user", "content": "more"}], reward=reward)
"""


@pytest.fixture(scope="module")
def agent_setup(tmp_path_factory):
    """A tiny model whose tokenizer has a chat template, and the environment file."""
    from grpokit.models.tiny import build_char_tokenizer, build_tiny_model

    root = tmp_path_factory.mktemp("agents")
    tokenizer = build_char_tokenizer("abcdefgh >\nmor")
    tokenizer.chat_template = TEMPLATE
    build_tiny_model(tokenizer, root / "model", hidden_size=32, num_layers=2, num_heads=2, intermediate_size=64)
    (root / "count_env.py").write_text(ENV_FILE)
    return root


def _config(root, run_name: str, **overrides) -> dict:
    config = {
        "max_steps": 3,
        "model": {"name_or_path": str(root / "model"), "device": "cpu"},
        "data": {"prompts_per_step": 4, "num_train_problems": 16},
        "env": {"name": f"{root / 'count_env.py'}:CountA", "max_turns": 3},
        "generation": {"max_new_tokens": 6, "per_group_seed": True},
        "algorithm": {"num_generations": 4, "beta": 0.05},
        "optim": {"learning_rate": 3e-3, "gradient_accumulation_steps": 2, "shuffle_minibatches": False},
        "checkpoint": {"save_steps": 1, "save_total_limit": None},
        "logging": {"output_dir": str(root / "runs"), "run_name": run_name, "quiet": True, "report_to": [],
                    "report": False},
    }  # fmt: skip
    for section, values in overrides.items():
        if isinstance(values, dict):
            config.setdefault(section, {}).update(values)
        else:
            config[section] = values
    return config


def _write(root, name: str, config: dict):
    path = root / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def test_a_users_environment_file_trains_from_the_cli(agent_setup):
    path = _write(agent_setup, "cli", _config(agent_setup, "cli", max_steps=2))
    assert main(["train", str(path)]) == 0
    run = agent_setup / "runs" / "cli"
    metrics = read_metrics(run)
    assert [m["step"] for m in metrics] == [1, 2]
    assert metrics[0]["env/turns_mean"] > 1  # several turns per episode
    assert "kl" in metrics[0] and metrics[0]["optimizer_steps"] == 1
    samples = [json.loads(line) for line in (run / "samples.jsonl").read_text().splitlines()]
    assert samples and samples[0]["conversation"][0][0]["role"] == "assistant"  # group rows: G conversations
    assert (run / "final" / "model.safetensors").is_file()


def test_lora_trains_in_multi_turn_mode(agent_setup):
    from grpokit.config import GRPOConfig, build_config

    config = build_config(GRPOConfig, _config(agent_setup, "lora", max_steps=2, model={"lora": {"r": 4}}))
    from safetensors.torch import load_file

    result = GRPOTrainer(config).train()
    adapters = load_file(str(result.final_dir / "adapter_model.safetensors"))
    lora_b = [tensor for name, tensor in adapters.items() if "lora_B" in name]
    # LoRA's B matrices start at zero: only the episodes' gradients can have moved them.
    assert lora_b and all(tensor.abs().max() > 0 for tensor in lora_b)
    assert read_metrics(result.run_dir)[-1]["grad_norm"] > 0


# -- 2 processes equal 1 -----------------------------------------------------------------------------------


def _train_worker(rank: int, config) -> None:
    GRPOTrainer(config).train()


@pytest.mark.slow
def test_two_processes_train_like_one(agent_setup, launch):
    from safetensors.torch import load_file

    from grpokit.config import GRPOConfig, build_config

    two = build_config(GRPOConfig, _config(agent_setup, "two"))
    launch(_train_worker, two)
    one_run = GRPOTrainer(build_config(GRPOConfig, _config(agent_setup, "one"))).train().run_dir
    two_run = agent_setup / "runs" / "two"
    one_rows, two_rows = read_metrics(one_run), read_metrics(two_run)
    assert [r["step"] for r in two_rows] == [1, 2, 3]
    for a, b in zip(one_rows, two_rows):
        assert b["reward/mean"] == pytest.approx(a["reward/mean"], abs=1e-6)
        assert b["env/turns_mean"] == a["env/turns_mean"]
        assert b["completions/mean_length"] == a["completions/mean_length"]
        assert b["kl"] == pytest.approx(a["kl"], rel=1e-4, abs=1e-7)
        assert b["grad_norm"] == pytest.approx(a["grad_norm"], rel=1e-4)
    got, want = (load_file(str(run / "final" / "model.safetensors")) for run in (two_run, one_run))
    assert got.keys() == want.keys()
    for name in want:  # equal up to float32 summation order (see tests/engine/test_distributed.py)
        torch.testing.assert_close(got[name], want[name], rtol=0, atol=2e-5, msg=name)


# -- SIGKILL mid-run, then resume ----------------------------------------------------------------------------

MACHINE_KEYS = ("time/", "throughput/", "memory/")


def _rows(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.mark.slow
def test_sigkill_mid_run_then_resume_is_bit_identical(agent_setup):
    config = _config(agent_setup, "reference", max_steps=5, checkpoint={"save_steps": 2, "save_total_limit": 2})
    path = _write(agent_setup, "resume", config)
    assert main(["train", str(path)]) == 0
    marker = agent_setup / "killed.marker"
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "GRPOKIT_TEST_PAUSE_AT_RESET": str(3 * 16 + 1),  # the first reset of step 4 (16 episodes a step)
        "GRPOKIT_TEST_PAUSE_S": "120",
        "GRPOKIT_TEST_MARKER": str(marker),
    }
    command = [sys.executable, "-m", "grpokit", "train", str(path), "--run_name", "killed"]
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 180
        while not marker.exists():
            if process.poll() is not None:
                raise AssertionError(f"training exited early: {process.stderr.read()}")
            assert time.monotonic() < deadline, "the run did not reach step 4"
            time.sleep(0.01)
        process.send_signal(signal.SIGKILL)
        assert process.wait(30) == -signal.SIGKILL
    finally:
        process.kill()
        process.communicate()
    run, reference = agent_setup / "runs" / "killed", agent_setup / "runs" / "reference"
    assert [m["step"] for m in _rows(run / "metrics.jsonl")] == [1, 2, 3]
    assert [p.name for p in ckpt.list_checkpoints(run)] == ["step-000002"]
    assert main(["train", "--resume", str(run)]) == 0
    got, want = _rows(run / "metrics.jsonl"), _rows(reference / "metrics.jsonl")
    strip = lambda rows: [{k: v for k, v in r.items() if not k.startswith(MACHINE_KEYS)} for r in rows]  # noqa: E731
    assert [m["step"] for m in got] == [1, 2, 3, 4, 5]
    assert strip(got) == strip(want)
    assert _rows(run / "samples.jsonl") == _rows(reference / "samples.jsonl")
    final = (run / "final" / "model.safetensors").read_bytes()
    assert final == (reference / "final" / "model.safetensors").read_bytes()


def test_dynamic_sampling_and_process_rewards_run_on_episodes(agent_setup):
    from grpokit.config import GRPOConfig, build_config

    config = build_config(GRPOConfig, _config(
        agent_setup, "dynamic", max_steps=2, env={"reward_mode": "process"},
        algorithm={"dynamic_sampling": True, "max_dynamic_sampling_rounds": 2},
    ))  # fmt: skip
    rows = read_metrics(GRPOTrainer(config).train().run_dir)
    assert [r["step"] for r in rows] == [1, 2]
    assert all(r["dynamic_sampling/rounds"] >= 1 for r in rows)
    assert all(r["grad_norm"] > 0 for r in rows)  # process advantages reached the loss
