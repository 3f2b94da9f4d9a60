"""ServerRolloutWorker with a fake server sampler: the order of requests and pushes, versions, errors."""

import threading

import pytest
import torch

from grpokit.rollout.async_server_worker import ServerRolloutWorker
from grpokit.rollout.async_worker import RolloutRequest, RolloutWorkerError
from grpokit.rollout.batch import RolloutBatch
from grpokit.rollout.vllm_client import VLLMServerError

URL = "http://gpu-box:8000"


class FakeServerSampler:
    """Records the order of generate calls and pushes; generate can be held or made to fail."""

    url = URL

    def __init__(self):
        self.events, self.seed = [], None
        self.hold = threading.Event()
        self.hold.set()
        self.generate_error = None
        self.push_error = None

    def set_seed(self, seed):
        self.seed = seed

    def generate(self, prompts, num_generations, columns=None):
        self.hold.wait(10)
        if self.generate_error is not None:
            raise self.generate_error
        self.events.append(("generate", self.seed))
        n = len(prompts) * num_generations
        ids = torch.ones(n, 2, dtype=torch.long)
        return RolloutBatch(prompt_ids=ids, prompt_mask=ids, completion_ids=ids, completion_mask=ids,
                            group_ids=torch.arange(n) // num_generations, temperatures=torch.ones(n),
                            truncated=torch.zeros(n, dtype=torch.bool), prompts=["p"] * n,
                            completions=["c"] * n)  # fmt: skip

    def update_weights(self, model):
        if self.push_error is not None:
            raise self.push_error
        self.events.append(("push", None))
        return {"weight_sync/total_s": 0.0}


def request(step, version):
    return RolloutRequest(step=step, version=version, seed=100 + step, prompts=["a", "b"], num_generations=2)


@pytest.fixture
def worker():
    sampler = FakeServerSampler()
    worker = ServerRolloutWorker(sampler, version=0, timeout_s=5)
    worker.start()
    yield worker, sampler
    sampler.hold.set()
    worker.close()


def test_batches_come_back_tagged_with_their_version_and_pushes_wait_for_older_requests(worker):
    worker, sampler = worker
    sampler.hold.clear()  # both requests stay in flight
    worker.submit(request(1, 0))
    worker.submit(request(2, 0))
    threading.Timer(0.3, sampler.hold.set).start()
    worker.publish(torch.nn.Linear(1, 1), 1)  # waits until both requests of version 0 are answered
    assert sampler.events == [("generate", 101), ("generate", 102), ("push", None)] and worker.version == 1
    with pytest.raises(ValueError, match="needs version 0, the server holds 1"):
        worker.submit(request(3, 0))
    worker.submit(request(3, 1))
    batch, _ = worker.receive(1)
    assert batch.policy_version.tolist() == [0] * 4
    assert worker.receive(3)[0].policy_version.tolist() == [1] * 4
    with pytest.raises(ValueError, match="no batch was requested for step 4"):
        worker.receive(4)


def test_a_failed_request_names_the_server_and_the_batch(worker):
    worker, sampler = worker
    sampler.generate_error = VLLMServerError(f"lost the vLLM server at {URL} while generating")
    worker.submit(request(1, 0))
    with pytest.raises(RolloutWorkerError) as caught:
        worker.receive(1)
    message = str(caught.value)
    assert message.startswith(f"asynchronous rollouts on the vLLM server at {URL}: generating the batch of step 1")
    assert "VLLMServerError: lost the vLLM server" in message
    with pytest.raises(RolloutWorkerError):  # every later call raises it
        worker.submit(request(2, 0))


def test_a_stuck_request_and_a_failed_push_raise(worker):
    worker, sampler = worker
    worker.timeout_s = 0.2
    sampler.hold.clear()
    worker.submit(request(1, 0))
    with pytest.raises(RolloutWorkerError, match="no answer within generation.async_timeout_s = 0.2 s while "
                       "generating the batch of step 1 with weights version 0"):  # fmt: skip
        worker.publish(torch.nn.Linear(1, 1), 1)
    assert sampler.events == []  # nothing pushed while a request of version 0 was in flight

    other = ServerRolloutWorker(FakeServerSampler(), version=0, timeout_s=1)
    other.start()
    other.sampler.push_error = VLLMServerError("HTTP 500")
    with pytest.raises(RolloutWorkerError, match="pushing weights version 1 failed: HTTP 500"):
        other.publish(torch.nn.Linear(1, 1), 1)
    assert other.version == 0
    other.close()
