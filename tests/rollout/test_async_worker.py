"""The rollout worker process: the same batches as the in-process sampler, weights through shared memory,
and every failure reported with its pid, exit code and what it was doing."""

import os
import signal

import pytest
import torch

from grpokit.models.loading import load_model, load_tokenizer
from grpokit.rollout import TransformersSampler
from grpokit.rollout.async_worker import RolloutRequest, RolloutWorker, RolloutWorkerError, sampler_settings

PROMPTS = ["ab", "cd"]
G = 3


@pytest.fixture
def policy(tiny_model_dir):
    model = load_model(str(tiny_model_dir), device="cpu")
    tokenizer = load_tokenizer(str(tiny_model_dir))
    return model, tokenizer, TransformersSampler(model, tokenizer, max_new_tokens=5, temperature=1.0)


@pytest.fixture
def worker(policy):
    model, tokenizer, sampler = policy
    handle = RolloutWorker(
        model, tokenizer, sampler_settings(sampler), version=0, start_timeout_s=120, timeout_s=60
    )
    handle.start()
    yield handle
    pid = handle.pid
    handle.close()
    assert handle.process is None
    with pytest.raises(ProcessLookupError):  # reaped: no orphan, no zombie
        os.kill(pid, 0)


def request(step, version, seed):
    return RolloutRequest(
        step=step, version=version, seed=seed, prompts=PROMPTS, num_generations=G, columns={"i": [0, 1]}
    )


def local_batch(sampler, seed):
    sampler.set_seed(seed)
    return sampler.generate(PROMPTS, G, {"i": [0, 1]})


def assert_same_batch(got, want):
    assert torch.equal(got.completion_ids, want.completion_ids)
    # Another process may round a matmul differently (its buffers sit elsewhere); a lagging version would be
    # off by far more than this.
    torch.testing.assert_close(got.sampler_logprobs, want.sampler_logprobs, rtol=0, atol=1e-5)
    assert got.completions == want.completions and got.columns == want.columns


def test_batches_match_the_in_process_sampler_at_each_published_version(policy, worker):
    model, _, sampler = policy
    worker.submit(request(1, 0, seed=11))
    batch, seconds = worker.receive(1)
    assert_same_batch(batch, local_batch(sampler, 11))
    assert batch.policy_version.tolist() == [0] * len(PROMPTS) * G and min(seconds) > 0  # (wall, CPU)

    with torch.no_grad():  # a training step: the weights move
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    worker.publish(model, 1)
    worker.submit(request(2, 1, seed=11))
    batch, _ = worker.receive(2)
    assert_same_batch(batch, local_batch(sampler, 11))  # the new weights, not the old ones
    assert batch.policy_version.tolist() == [1] * len(PROMPTS) * G


def test_a_request_for_unpublished_weights_is_refused(worker):
    with pytest.raises(ValueError, match="needs version 1, published 0"):
        worker.submit(request(1, 1, seed=0))


def test_a_killed_worker_is_reported_with_pid_exit_code_and_task(worker):
    pid = worker.pid
    os.kill(pid, signal.SIGKILL)
    worker.process.join(30)
    worker.submit(request(1, 0, seed=0))  # accepted: a queue put cannot know the reader died
    with pytest.raises(RolloutWorkerError) as caught:
        worker.receive(1)
    message = str(caught.value)
    assert f"rollout worker (pid {pid}) died with exit code -9 (SIGKILL)" in message
    assert "while generating the batch of step 1 with weights version 0" in message
    with pytest.raises(RolloutWorkerError):  # the failure sticks
        worker.publish(torch.nn.Linear(1, 1), 1)


def test_a_stuck_worker_is_stopped_at_the_deadline(worker):
    worker.timeout_s = 1.0
    os.kill(worker.pid, signal.SIGSTOP)
    worker.submit(request(1, 0, seed=0))
    with pytest.raises(
        RolloutWorkerError, match=r"did not answer within generation.async_timeout_s = 1 s while"
    ):
        worker.receive(1)
    worker.process.join(30)
    assert worker.process.exitcode == -signal.SIGKILL


def test_start_deadline(policy):
    model, tokenizer, sampler = policy
    handle = RolloutWorker(
        model, tokenizer, sampler_settings(sampler), version=0, start_timeout_s=0.01, timeout_s=1
    )
    try:
        with pytest.raises(RolloutWorkerError, match=r"async_start_timeout_s = 0.01 s while starting"):
            handle.start()
    finally:
        handle.close()


def test_a_frozen_reference_scores_every_batch_in_the_worker(policy, tiny_model_dir):
    from functools import partial

    from grpokit.models.forward import sequence_logprobs

    model, tokenizer, sampler = policy
    reference = load_model(str(tiny_model_dir), device="cpu")
    with torch.no_grad():  # the policy moves away from the reference
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    handle = RolloutWorker(
        model, tokenizer, sampler_settings(sampler), version=0, start_timeout_s=120, timeout_s=60,
        reference=reference, reference_logprobs=partial(sequence_logprobs, micro_batch_size=2),
    )  # fmt: skip
    try:
        handle.start()
        handle.submit(request(1, 0, seed=5))
        batch, _ = handle.receive(1)
    finally:
        handle.close()
    assert_same_batch(batch, local_batch(sampler, 5))  # sampled with the policy ...
    want = sequence_logprobs(reference, batch, 2)  # ... scored with the reference
    torch.testing.assert_close(batch.ref_logprobs, want, rtol=0, atol=1e-5)
    assert not torch.allclose(batch.ref_logprobs, batch.sampler_logprobs, atol=1e-3)
