"""Asynchronous rollouts: the staleness bound, the importance weights, determinism, exact resume, and a
failed rollout worker ending the run with a message and a checkpoint."""

import json
import math
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch
import yaml

from grpokit.cli import main
from grpokit.config import ConfigError, GRPOConfig, PPOConfig, build_config
from grpokit.engine import checkpoint as ckpt
from grpokit.rollout.batch import RolloutBatch
from grpokit.tracking import read_metrics
from grpokit.trainers import objective as objective_module
from grpokit.trainers.async_rollouts import AsyncRollouts, RolloutWorkerAbort, required_version
from grpokit.trainers.grpo import GRPOTrainer

MACHINE_KEYS = ("time/", "throughput/", "memory/")


def fraction_of_a(prompts, completions, **columns):
    return [c.count("a") / max(len(c), 1) for c in completions]


def async_config(make_config, **generation):
    return make_config(
        max_steps=4,
        generation={"max_new_tokens": 6, "async_rollouts": True, **generation},
        checkpoint={"save_steps": 2, "save_total_limit": None},
    )


def logged(run_dir):
    return [{k: v for k, v in m.items() if not k.startswith(MACHINE_KEYS)} for m in read_metrics(run_dir)]


# -- config ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("sections", "field"),
    [
        ({"generation": {"backend": "vllm"}}, "generation.backend"),
        ({"model": {"lora": {"r": 4}}}, "model.lora.r: 0"),
        ({"generation": {"per_group_seed": True}}, "per_group_seed"),
        ({"algorithm": {"dynamic_sampling": True}}, "algorithm.dynamic_sampling"),
        ({"algorithm": {"rollout_importance_sampling": "none"}}, "algorithm.rollout_importance_sampling"),
    ],
)
def test_unsupported_combinations_are_refused_by_name(sections, field):
    data = {"generation": {"async_rollouts": True}}
    for name, values in sections.items():
        data.setdefault(name, {}).update(values)
    with pytest.raises((ConfigError, ValueError), match="async_rollouts") as caught:
        build_config(GRPOConfig, data)
    assert field in str(caught.value)


def test_ppo_and_orphan_knobs_are_refused():
    with pytest.raises((ConfigError, ValueError), match="use trainer: grpo"):
        build_config(PPOConfig, {"generation": {"async_rollouts": True}})
    with pytest.raises((ConfigError, ValueError), match="max_staleness set but async_rollouts is off"):
        build_config(GRPOConfig, {"generation": {"max_staleness": 2}})
    assert build_config(GRPOConfig, {}).generation.async_rollouts is False  # off by default


# -- the staleness bound, without a process ----------------------------------------------------------------


def test_required_version_lags_by_at_most_max_staleness():
    for k in (1, 2, 3):
        versions = [required_version(s, k) for s in range(1, 10)]
        assert versions[: k + 1] == [0] * (k + 1)  # the first k + 1 batches come from the initial weights
        assert all((s - 1) - v == min(s - 1, k) for s, v in zip(range(1, 10), versions))


class FakeWorker:
    """Hands back what a test says instead of sampling; records the requests."""

    def __init__(self, version_of_step):
        self.version_of_step, self.requests, self.published = version_of_step, [], []
        self.error, self.pending, self.received = None, [], {}

    def start(self):
        pass

    def submit(self, request):
        self.requests.append(request)

    def receive(self, step):
        version = self.version_of_step(step)
        batch = RolloutBatch(
            prompt_ids=torch.zeros(2, 1, dtype=torch.long), prompt_mask=torch.ones(2, 1, dtype=torch.long),
            completion_ids=torch.zeros(2, 1, dtype=torch.long), completion_mask=torch.ones(2, 1),
            group_ids=torch.zeros(2, dtype=torch.long), temperatures=torch.ones(2),
            truncated=torch.zeros(2, dtype=torch.bool), prompts=["p", "p"], completions=["", ""],
            policy_version=torch.tensor([version, version]),
        )  # fmt: skip
        return batch, (0.0, 0.0)

    def publish(self, model, version):
        self.published.append(version)


def pipeline(worker, k, max_steps=6):
    rows = iter([[{"prompt": f"p{i}"}] for i in range(100)])
    return AsyncRollouts(
        worker, rows, num_generations=2, prompt_column="prompt", max_staleness=k, seed=0, start_step=0,
        max_steps=max_steps,
    )  # fmt: skip


@pytest.mark.parametrize("k", [1, 2])
def test_requests_run_k_plus_one_ahead_with_the_versions_of_the_bound(k):
    worker = FakeWorker(lambda s: required_version(s, k))
    rollouts = pipeline(worker, k)
    rollouts.start()
    assert [(r.step, r.version) for r in worker.requests] == [(s, 0) for s in range(1, k + 2)]
    for step in range(1, 7):
        rollouts.next_batch()
        metrics = rollouts.publish(step, model=None)
        assert metrics["async/staleness_max"] == min(step - 1, k) <= k
    assert [(r.step, r.version) for r in worker.requests] == [
        (s, required_version(s, k)) for s in range(1, 7)
    ]
    assert [r.prompts for r in worker.requests] == [[f"p{i}"] for i in range(6)]  # the trainer's data order
    assert worker.published == [v for v in range(1, 7) if v <= required_version(6, k)]  # none nobody needs


def test_a_batch_older_than_the_bound_is_never_trained_on():
    rollouts = pipeline(FakeWorker(lambda s: max(0, s - 3)), k=1)  # a worker two versions behind
    rollouts.start()
    rollouts.next_batch()
    rollouts.publish(1, model=None)
    rollouts.next_batch()
    rollouts.publish(2, model=None)
    with pytest.raises(
        RuntimeError, match=r"batch of step 3 was sampled with weights versions \[0\].*max_staleness is 1"
    ):
        rollouts.next_batch()


# -- end-to-end on the tiny model --------------------------------------------------------------------------


@pytest.mark.slow
def test_async_runs_are_deterministic_and_stay_within_the_bound(make_config, rows, tmp_path):
    config = async_config(make_config, max_staleness=2)
    first = GRPOTrainer(config, reward_funcs=[fraction_of_a], dataset=rows).train()
    again = config.model_copy(update={"logging": config.logging.model_copy(update={"run_name": "again"})})
    second = GRPOTrainer(again, reward_funcs=[fraction_of_a], dataset=rows).train()
    assert logged(first.run_dir) == logged(second.run_dir)
    final = (first.final_dir / "model.safetensors").read_bytes()
    assert final == (second.final_dir / "model.safetensors").read_bytes()
    assert [m["async/staleness_max"] for m in logged(first.run_dir)] == [0, 1, 2, 2]


def test_importance_weights_are_the_truncated_ratio_to_the_behaviour_policy(make_config, rows, monkeypatch):
    calls = []
    original = objective_module.rollout_importance_weights

    def recording(trainer_logprobs, rollout_logprobs, mask, level, cap):
        weights, metrics = original(trainer_logprobs, rollout_logprobs, mask, level, cap)
        calls.append((trainer_logprobs.clone(), rollout_logprobs.clone(), mask.clone(), level, cap, weights))
        return weights, metrics

    monkeypatch.setattr(objective_module, "rollout_importance_weights", recording)
    config = make_config(
        max_steps=3,
        generation={"async_rollouts": True},
        algorithm={"rollout_importance_cap": 1.02},  # small, so that some weights are truncated
    )
    trainer = GRPOTrainer(config, reward_funcs=[fraction_of_a], dataset=rows)
    batches = []
    original_update = trainer.update_policy

    def update(batch, advantages, loss_mask):
        from grpokit.models.forward import sequence_logprobs

        with torch.no_grad():  # log pi_theta before this step's update: GRPO's pi_old (note 1)
            batches.append((batch, sequence_logprobs(trainer.model, batch, batch.num_responses)))
        return original_update(batch, advantages, loss_mask)

    trainer.update_policy = update
    metrics = read_metrics(trainer.train().run_dir)
    assert len(calls) == 3 and all(level == "token" and cap == 1.02 for *_, level, cap, _ in calls)
    for (pi_old, behaviour, mask, _, cap, weights), (batch, pi_theta) in zip(calls, batches):
        T = pi_old.shape[1]
        torch.testing.assert_close(pi_old, pi_theta[:, :T], rtol=0, atol=1e-5)
        assert torch.equal(behaviour, batch.sampler_logprobs[:, :T])
        expected = torch.exp(torch.clamp(pi_old - behaviour, max=math.log(cap))) * mask  # (N, T)
        torch.testing.assert_close(weights, expected, rtol=1e-6, atol=0)
    stale = calls[-1]  # step 3 trains on weights of version 1: a real lag
    assert (stale[5][stale[2] > 0] != 1).float().mean() > 0.5
    assert metrics[-1]["rollout_is/capped_fraction"] > 0 and metrics[-1][
        "rollout_is/weight_max"
    ] == pytest.approx(1.02)


@pytest.mark.parametrize(("sync_steps", "in_worker"), [(0, True), (1, False)])
def test_a_frozen_reference_runs_in_the_worker(make_config, rows, monkeypatch, sync_steps, in_worker):
    scored = []
    original = objective_module.sequence_logprobs

    def recording(model, batch, micro_batch_size):
        scored.append(model)
        return original(model, batch, micro_batch_size)

    monkeypatch.setattr(objective_module, "sequence_logprobs", recording)
    config = make_config(
        max_steps=2,
        generation={"async_rollouts": True},
        algorithm={"beta": 0.1, "ref_model_sync_steps": sync_steps},
    )
    trainer = GRPOTrainer(config, reward_funcs=[fraction_of_a], dataset=rows)
    metrics = trainer.train().last_metrics
    # A re-synced reference changes with the policy: the trainer scores it as in a synchronous run.
    assert any(m is trainer.reference.model for m in scored) is not in_worker
    assert (metrics["kl"] > 0) is in_worker  # re-synced every step, the reference is the policy itself


@pytest.mark.slow
def test_resume_from_a_checkpoint_reproduces_the_async_run(make_config, rows, tmp_path):
    config = async_config(make_config)
    reference = GRPOTrainer(config, reward_funcs=[fraction_of_a], dataset=rows).train()
    state = ckpt.load_trainer_state(reference.run_dir / "checkpoints" / "step-000002")
    assert sorted(state["async_rollouts"]["ready"]) == [3, 4]  # the batches in flight at step 2
    resumed_run = tmp_path / "resumed"
    shutil.copytree(reference.run_dir, resumed_run)
    shutil.rmtree(resumed_run / "checkpoints" / "step-000004")
    shutil.rmtree(resumed_run / "final")
    resume = config.model_copy(
        update={"checkpoint": config.checkpoint.model_copy(update={"resume": str(resumed_run)})}
    )
    trainer = GRPOTrainer(resume, reward_funcs=[fraction_of_a], dataset=rows)
    assert trainer.start_step == 2
    trainer.train()
    assert logged(resumed_run) == logged(reference.run_dir)
    final = (resumed_run / "final" / "model.safetensors").read_bytes()
    assert final == (reference.final_dir / "model.safetensors").read_bytes()


@pytest.mark.slow
def test_a_killed_worker_ends_the_run_with_the_message_and_a_checkpoint(make_config, rows):
    config = make_config(max_steps=5, generation={"async_rollouts": True, "async_timeout_s": 60})
    calls = []

    def killing_reward(prompts, completions, **columns):
        calls.append(1)
        if len(calls) == 3:  # during step 3, while the worker samples ahead
            os.kill(trainer.async_rollouts.worker.pid, signal.SIGKILL)
        return fraction_of_a(prompts, completions)

    trainer = GRPOTrainer(config, reward_funcs=[killing_reward], dataset=rows)
    with pytest.raises(RolloutWorkerAbort) as caught:
        trainer.train()
    message = str(caught.value)
    run = trainer.run_dir
    assert "the rollout worker (pid" in message and "died with exit code -9 (SIGKILL) while" in message
    assert f"step 3 is saved in {run / 'checkpoints' / 'step-000003'}" in message
    assert f"grpokit train --resume {run}" in message
    assert [m["step"] for m in read_metrics(run)] == [1, 2, 3]
    assert trainer.async_rollouts.worker.process is None  # shut down

    # The checkpoint resumes: the batches the worker lost are sampled again with step 3's weights.
    resume = config.model_copy(
        update={"checkpoint": config.checkpoint.model_copy(update={"resume": str(run)})}
    )
    resumed = GRPOTrainer(resume, reward_funcs=[fraction_of_a], dataset=rows)
    resumed.train()
    metrics = read_metrics(run)
    assert [m["step"] for m in metrics] == [1, 2, 3, 4, 5]
    assert all(m["async/staleness_max"] <= 1 for m in metrics)


@pytest.mark.parametrize("save_steps", [None, 1])  # 1: the failure is seen first by the step's checkpoint
def test_a_stuck_worker_is_stopped_at_the_deadline(make_config, rows, save_steps):
    checkpoint = {} if save_steps is None else {"checkpoint": {"save_steps": save_steps}}
    config = make_config(max_steps=4, generation={"async_rollouts": True, "async_timeout_s": 1}, **checkpoint)
    frozen = []

    def freezing_reward(prompts, completions, **columns):
        if not frozen:  # during step 1: the worker stops answering
            frozen.append(trainer.async_rollouts.worker.pid)
            os.kill(frozen[0], signal.SIGSTOP)
        return fraction_of_a(prompts, completions)

    trainer = GRPOTrainer(config, reward_funcs=[freezing_reward], dataset=rows)
    with pytest.raises(RolloutWorkerAbort) as caught:
        trainer.train()
    message = str(caught.value)
    assert (
        f"the rollout worker (pid {frozen[0]}) did not answer within generation.async_timeout_s = 1 s"
        in message
    )
    # The last completed step is saved: step 1, or step 2 when its batch arrived before the worker froze.
    steps = [m["step"] for m in read_metrics(trainer.run_dir)]
    assert steps in ([1], [1, 2])
    assert "it was stopped" in message and f"step {steps[-1]} is saved" in message
    with pytest.raises(ProcessLookupError):  # killed and reaped
        os.kill(frozen[0], 0)


# -- SIGKILL of the trainer, then resume -------------------------------------------------------------------

PAUSING_REWARD = """
import os, pathlib, time

calls = 0


def fraction_of_a(prompts, completions, **columns):
    global calls
    calls += 1
    if calls == int(os.environ.get("GRPOKIT_TEST_PAUSE_AT_CALL", "0")):
        pathlib.Path(os.environ["GRPOKIT_TEST_MARKER"]).write_text(str(calls))
        time.sleep(120)
    return [c.count("a") / max(len(c), 1) for c in completions]
"""


@pytest.mark.slow
def test_sigkill_mid_run_then_resume_matches_the_uninterrupted_async_run(tiny_model_dir, tmp_path):
    (tmp_path / "prompts.jsonl").write_text(
        "".join(json.dumps({"prompt": p}) + "\n" for p in ["ab", "cd", "ef", "ba"])
    )
    (tmp_path / "reward.py").write_text(PAUSING_REWARD)
    config = {
        "max_steps": 6,
        "model": {"name_or_path": str(tiny_model_dir), "device": "cpu"},
        "data": {"path": str(tmp_path / "prompts.jsonl"), "prompts_per_step": 2},
        "generation": {"max_new_tokens": 6, "async_rollouts": True, "max_staleness": 2},
        "rewards": {"reward_funcs": [f"{tmp_path / 'reward.py'}:fraction_of_a"]},
        "optim": {"learning_rate": 3e-3, "mini_batch_size": 4},
        "algorithm": {"num_generations": 4, "beta": 0.1},
        "checkpoint": {"save_steps": 2},
        "logging": {"output_dir": str(tmp_path / "runs"), "quiet": True, "report_to": [], "report": False},
    }
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    assert main(["train", str(path), "--run_name", "reference"]) == 0

    marker = tmp_path / "marker"
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "GRPOKIT_TEST_PAUSE_AT_CALL": "4",
        "GRPOKIT_TEST_MARKER": str(marker),
    }
    cmd = [sys.executable, "-m", "grpokit", "train", str(path), "--run_name", "killed"]
    process = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 300
        while (
            not marker.exists()
        ):  # step 4's reward call: steps 1-3 logged, step-000002 the newest checkpoint
            assert process.poll() is None, process.stderr.read()
            assert time.monotonic() < deadline, "the training subprocess did not reach step 4"
            time.sleep(0.05)
        children = Path(f"/proc/{process.pid}/task/{process.pid}/children").read_text().split()
        process.send_signal(signal.SIGKILL)
        assert process.wait(30) == -signal.SIGKILL
    finally:
        process.kill()
        process.communicate()
    assert children  # the rollout worker ...
    for _ in range(100):  # ... dies with the trainer (it is not our child: nothing to reap)
        if not any(os.path.exists(f"/proc/{pid}") and "Z" not in _state(pid) for pid in children):
            break
        time.sleep(0.1)
    else:
        raise AssertionError(f"the rollout worker outlived the trainer: {children}")
    run, reference = tmp_path / "runs" / "killed", tmp_path / "runs" / "reference"
    assert [p.name for p in ckpt.list_checkpoints(run)] == ["step-000002"]

    assert main(["train", "--resume", str(run)]) == 0
    assert logged(run) == logged(reference)
    assert (run / "samples.jsonl").read_text() == (reference / "samples.jsonl").read_text()
    assert (run / "final" / "model.safetensors").read_bytes() == (
        reference / "final" / "model.safetensors"
    ).read_bytes()


def _state(pid):
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return "Z"


# -- with a vLLM server (the real HTTP server, a stub engine: no vLLM) --------------------------------------


class TinyStubEngine:
    """An EngineHost without vLLM for the tiny model: its tensors, deterministic samples drawn from each
    request spec, and a record of which pushed weights answered each generate call."""

    def __init__(self, model_dir, vocab):
        from safetensors import safe_open

        with safe_open(str(model_dir / "model.safetensors"), "pt") as f:
            self.tensors = {name: [list(f.get_slice(name).get_shape()), "F32"] for name in f.keys()}  # noqa: SIM118
        self.vocab = vocab
        self.pushes = 0  # weight pushes loaded (the first is the trainer's start)
        self.pushed_sums = []  # a checksum of each push's weights
        self.generate_versions = []  # the pushes - 1 each generate call saw: the policy version it sampled with
        self.specs = []
        self.block_from_call = None  # stops answering from this generate call on (1-based)
        self.delay_s = 0.0  # each generate call takes this long (requests still in flight at a push)
        self.release = threading.Event()

    def info(self):
        return {"model": "tiny-stub", "dtype": "float32", "max_model_len": 64, "tensors": self.tensors}

    def unusable(self):
        return None

    def run_requests(self, specs):
        if self.block_from_call is not None and len(self.specs) + 1 >= self.block_from_call:
            self.release.wait(30)  # a stuck engine (released at teardown)
        time.sleep(self.delay_s)
        self.specs.append(specs)
        self.generate_versions.append(self.pushes - 1)
        answers = []
        for spec in specs:
            samples = []
            for i in range(spec["n"]):
                base = sum(spec["prompt_token_ids"]) + (spec["seed"] or 0) + 7 * i
                ids = [3 + (base + k) % (self.vocab - 3) for k in range(spec["max_tokens"])]
                samples.append((ids, [-0.05 * (k + 1) - 0.01 * i for k in range(len(ids))]))
            answers.append(samples)
        return answers

    def update_weights(self, tensors):
        self.pushes += 1
        self.pushed_sums.append(sum(float(t.double().sum()) for t in tensors.values()))
        return {"weight_sync/load_s": 0.0}

    def reset_prefix_cache(self):
        pass

    def close(self):
        pass


@pytest.fixture
def tiny_server(tiny_model_dir):
    from grpokit.models import load_tokenizer
    from grpokit.rollout.vllm_server import VLLMServer

    engine = TinyStubEngine(tiny_model_dir, len(load_tokenizer(tiny_model_dir)))
    server = VLLMServer(engine, "127.0.0.1", 0, request_timeout_s=60).start()
    yield engine, server
    engine.release.set()
    server.shutdown()


def server_config(make_config, server, max_steps=4, **generation):
    return make_config(
        max_steps=max_steps,
        generation={"max_new_tokens": 6, "async_rollouts": True, "backend": "vllm_server", **generation},
        vllm={"server_host": "127.0.0.1", "server_port": server.port, "server_timeout_s": 30},
        checkpoint={"save_steps": 2, "save_total_limit": None},
    )


def test_a_vllm_server_samples_every_batch_with_the_version_of_the_bound(make_config, rows, tiny_server):
    engine, server = tiny_server
    engine.delay_s = 0.5  # slower than a step: requests of older versions are in flight at each push
    config = server_config(make_config, server, max_steps=5, max_staleness=2)
    trainer = GRPOTrainer(config, reward_funcs=[fraction_of_a], dataset=rows)
    assert type(trainer.async_rollouts.worker).__name__ == "ServerRolloutWorker"
    result = trainer.train()

    # Batch s was requested (in step order) with exactly v(s); the server refuses any other (HTTP 409).
    assert engine.generate_versions == [required_version(s, 2) for s in range(1, 6)] == [0, 0, 0, 1, 2]
    # The start's push, then one per step whose weights a later batch needs (v(5) = 2: steps 1 and 2).
    assert engine.pushes == 1 + 2
    metrics = logged(result.run_dir)
    assert [m["async/staleness_max"] for m in metrics] == [0, 1, 2, 2, 2]
    assert all(m["async/staleness_max"] <= 2 for m in metrics)
    assert all("rollout_is/weight_mean" in m for m in metrics)  # the truncated importance weights act
    # Every request is seeded from (seed, step): the specs' seeds differ between steps.
    assert len({spec[0]["seed"] for spec in engine.specs}) == 5


def test_resume_with_a_vllm_server_repeats_the_requests_and_metrics(make_config, rows, tiny_server, tmp_path):
    engine, server = tiny_server
    config = server_config(make_config, server, max_steps=5)
    reference = GRPOTrainer(config, reward_funcs=[fraction_of_a], dataset=rows).train()
    reference_specs = list(engine.specs)
    state = ckpt.load_trainer_state(reference.run_dir / "checkpoints" / "step-000002")
    assert sorted(state["async_rollouts"]["ready"]) == [3, 4]  # k = 1: the batches in flight at step 2

    resumed_run = tmp_path / "resumed"
    shutil.copytree(reference.run_dir, resumed_run)
    shutil.rmtree(resumed_run / "checkpoints" / "step-000004")
    shutil.rmtree(resumed_run / "final")
    resume = config.model_copy(
        update={"checkpoint": config.checkpoint.model_copy(update={"resume": str(resumed_run)})}
    )
    reference_sums = list(engine.pushed_sums)  # versions 0 .. 3 (v(5) = 3)
    engine.specs.clear()
    engine.pushed_sums.clear()
    trainer = GRPOTrainer(resume, reward_funcs=[fraction_of_a], dataset=rows)
    assert trainer.start_step == 2
    trainer.train()
    # Batches 3 and 4 come from the checkpoint; batch 5 is requested as in the uninterrupted run, with the
    # same weights: the start pushes step 2's, then step 3's (the last any batch needs).
    assert len(reference_sums) == 4 and engine.pushed_sums == reference_sums[2:]
    assert engine.specs == reference_specs[4:]
    assert logged(resumed_run) == logged(reference.run_dir)
    final = (resumed_run / "final" / "model.safetensors").read_bytes()
    assert final == (reference.final_dir / "model.safetensors").read_bytes()


def test_a_server_that_stops_answering_ends_the_run_at_the_deadline(make_config, rows, tiny_server):
    engine, server = tiny_server
    engine.block_from_call = 3  # the batch of step 3 (requested after step 1) never comes
    config = server_config(make_config, server, max_steps=5, async_timeout_s=1)
    trainer = GRPOTrainer(config, reward_funcs=[fraction_of_a], dataset=rows)
    with pytest.raises(RolloutWorkerAbort) as caught:
        trainer.train()
    message = str(caught.value)
    run = trainer.run_dir
    assert f"the vLLM server at http://127.0.0.1:{server.port}" in message
    assert "no answer within generation.async_timeout_s = 1 s" in message
    assert "generating the batch of step 3 with weights version 1" in message
    assert f"step 2 is saved in {run / 'checkpoints' / 'step-000002'}" in message
    assert [m["step"] for m in read_metrics(run)] == [1, 2]
    state = ckpt.load_trainer_state(run / "checkpoints" / "step-000002")
    assert [r["step"] for r in state["async_rollouts"]["lost"]] == [3]  # sampled again on resume
