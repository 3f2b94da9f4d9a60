"""A run killed by a real signal and resumed is the run that would have happened.

``grpokit train`` runs in a subprocess; a reward function that pauses at a chosen call (only when the test
sets ``GRPOKIT_TEST_PAUSE_AT_CALL`` in the subprocess's environment) lets the test deliver the signal at a
known point. The uninterrupted reference runs in this process. Compared: every ``metrics.jsonl`` row
(timing, throughput and memory keys excluded: they measure the machine), ``samples.jsonl``, and the bytes of
``final/model.safetensors``.
"""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import yaml

from grpokit.cli import main
from grpokit.engine import checkpoint as ckpt

MAX_STEPS = 6
MACHINE_KEYS = ("time/", "throughput/", "memory/")

REWARD = """
import os, pathlib, time

calls = 0


def fraction_of_a(prompts, completions, **columns):
    global calls
    calls += 1
    if calls == int(os.environ.get("GRPOKIT_TEST_PAUSE_AT_CALL", "0")):
        pathlib.Path(os.environ["GRPOKIT_TEST_MARKER"]).write_text(str(calls))
        time.sleep(float(os.environ["GRPOKIT_TEST_PAUSE_S"]))
    return [c.count("a") / max(len(c), 1) for c in completions]
"""


@pytest.fixture(scope="module")
def setup(tiny_model_dir, tmp_path_factory):
    """A config file for a 6-step run on the tiny model, and the uninterrupted reference run."""
    root = tmp_path_factory.mktemp("resume")
    (root / "prompts.jsonl").write_text(
        "".join(json.dumps({"prompt": p}) + "\n" for p in ["ab", "cd", "ef", "ba"])
    )
    (root / "reward.py").write_text(REWARD)
    config = {
        "max_steps": MAX_STEPS,
        "model": {"name_or_path": str(tiny_model_dir), "device": "cpu"},
        "data": {"path": str(root / "prompts.jsonl"), "task": None, "prompts_per_step": 2},
        "generation": {"max_new_tokens": 6},
        "rewards": {"reward_funcs": [f"{root / 'reward.py'}:fraction_of_a"]},
        # Two optimizer steps per step (Adam state matters) and a refreshed reference model.
        "optim": {"learning_rate": 3e-3, "mini_batch_size": 4},
        "algorithm": {"num_generations": 4, "beta": 0.1, "ref_model_sync_steps": 3},
        "checkpoint": {"save_steps": 2, "save_total_limit": 2},
        "logging": {"output_dir": str(root / "runs"), "quiet": True, "report_to": [], "report": False},
    }
    path = root / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    assert main(["train", str(path), "--run_name", "reference"]) == 0
    return path, root / "runs"


def start(config, run_name, marker, pause_at_call, pause_s, **overrides):
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",  # the same single-threaded kernels as this process: bit-identical sums
        "GRPOKIT_TEST_PAUSE_AT_CALL": str(pause_at_call),
        "GRPOKIT_TEST_PAUSE_S": str(pause_s),
        "GRPOKIT_TEST_MARKER": str(marker),
    }
    args = [f"--{k}={v}" for k, v in overrides.items()]
    cmd = [sys.executable, "-m", "grpokit", "train", str(config), "--run_name", run_name, *args]
    return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_for(condition, process, timeout=180.0):
    deadline = time.monotonic() + timeout
    while not condition():
        if process.poll() is not None:
            raise AssertionError(f"training exited early ({process.returncode}): {process.stderr.read()}")
        if time.monotonic() > deadline:
            process.kill()
            raise AssertionError("the training subprocess did not reach the point to signal")
        time.sleep(0.01)


def rows(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def without_machine_keys(metrics):
    return [{k: v for k, v in m.items() if not k.startswith(MACHINE_KEYS)} for m in metrics]


def assert_same_run(run, reference):
    got, want = rows(run / "metrics.jsonl"), rows(reference / "metrics.jsonl")
    assert [m["step"] for m in got] == list(range(1, MAX_STEPS + 1))  # no step twice, none missing
    assert without_machine_keys(got) == without_machine_keys(want)
    assert rows(run / "samples.jsonl") == rows(reference / "samples.jsonl")
    final = (run / "final" / "model.safetensors").read_bytes()
    assert final == (reference / "final" / "model.safetensors").read_bytes()


@pytest.mark.slow
def test_sigkill_mid_step_then_resume_matches_the_uninterrupted_run(setup):
    config, runs = setup
    run, marker = runs / "killed", runs / "killed.marker"
    # Reward call 4 is step 4: steps 1-3 are logged and step-000002 is the newest checkpoint, so row 3 was
    # written after it; the resumed run must drop that row and redo step 3 from checkpoint 2.
    process = start(config, "killed", marker, pause_at_call=4, pause_s=120)
    try:
        wait_for(marker.exists, process)
        process.send_signal(signal.SIGKILL)
        assert process.wait(30) == -signal.SIGKILL
    finally:
        process.kill()
        process.communicate()
    assert [m["step"] for m in rows(run / "metrics.jsonl")] == [1, 2, 3]  # row 3 is after checkpoint 2
    assert [p.name for p in ckpt.list_checkpoints(run)] == ["step-000002"]

    assert main(["train", "--resume", str(run)]) == 0
    assert_same_run(run, runs / "reference")


@pytest.mark.slow
def test_sigkill_at_an_unchosen_moment_then_resume_matches(setup):
    """Kill as soon as step 3 is logged, whatever the process is doing then (often: writing checkpoint 3,
    since save_steps=1 saves right after logging); the result must not depend on where the kill lands."""
    config, runs = setup
    alone = runs.parent / "runs-alone"  # its own output_dir, so that "latest" can only mean this run
    run = alone / "killed-anywhere"
    process = start(config, "killed-anywhere", runs / "unused.marker", 0, 0, save_steps=1, output_dir=alone)
    try:
        wait_for(lambda: (run / "metrics.jsonl").is_file() and len(rows(run / "metrics.jsonl")) >= 3, process)
        process.send_signal(signal.SIGKILL)
        assert process.wait(30) == -signal.SIGKILL
    finally:
        process.kill()
        process.communicate()
    assert main(["train", "--resume", "latest", "--output_dir", str(alone)]) == 0
    assert_same_run(run, runs / "reference")
    assert not list((run / "checkpoints").glob(".tmp-*"))  # a temporary left by the kill was cleaned up


@pytest.mark.slow
def test_sigterm_finishes_the_step_checkpoints_and_exits_143(setup):
    config, runs = setup
    run, marker = runs / "terminated", runs / "terminated.marker"
    # Step 3's reward call pauses 1 s; SIGTERM arrives during it, step 3 completes and is saved.
    process = start(config, "terminated", marker, pause_at_call=3, pause_s=1)
    try:
        wait_for(marker.exists, process)
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=120)
    finally:
        process.kill()
    assert process.returncode == 128 + signal.SIGTERM, stderr
    assert "received SIGTERM: finishing the current step" in stderr
    expected = f"SIGTERM received: step 3 was finished and saved to {run / 'checkpoints' / 'step-000003'}"
    assert expected in stderr and f"grpokit train --resume {run}" in stderr
    assert [m["step"] for m in rows(run / "metrics.jsonl")] == [1, 2, 3]
    assert [p.name for p in ckpt.list_checkpoints(run)] == ["step-000002", "step-000003"]

    assert main(["train", "--resume", str(run)]) == 0
    assert_same_run(run, runs / "reference")
