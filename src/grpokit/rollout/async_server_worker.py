"""The rollout worker of asynchronous rollouts on a ``grpokit vllm-serve`` server (``generation.backend:
vllm_server``): the interface of :class:`~grpokit.rollout.async_worker.RolloutWorker`, with the batches
sampled by the server while the trainer trains::

    trainer                                   background thread                      vLLM server
    submit(request(step s, version v))  ──►   seed the sampler from the request  ──► POST /generate (v)
    receive(s)                          ◄──   the RolloutBatch, rows tagged v    ◄──  samples
    publish(model, version v + 1)             waits until every submitted request ──► weights push (v + 1)
                                              that needs a version <= v is answered

Choices, numbered:

1. The server holds one copy of the weights, so :meth:`ServerRolloutWorker.publish` first waits (deadline
   ``timeout_s``) for every request that needs an older version, then pushes the new one with the sampler's
   own chunked upload. A request is therefore always answered with exactly the version it names (the
   server refuses a generate whose version differs with HTTP 409), and the pipeline's determinism holds.
2. One background thread sends the requests one at a time, in order: the sampler (its seed generator and
   its connection) is used by one thread at a time, never by the trainer's while a request is in flight.
3. Every wait has a deadline: a batch within ``timeout_s`` (``generation.async_timeout_s``), each HTTP
   request within the sampler's own ``timeout_s``. A failure raises
   :class:`~grpokit.rollout.async_worker.RolloutWorkerError` naming the server's address and what it was
   doing; a thread still blocked in a request past the deadline is abandoned (a daemon, its answer dropped).
4. Reference log-probs are not computed here: the server samples only, and the trainer runs that forward.
"""

from __future__ import annotations

import queue
import threading
import time
from collections import deque
from typing import Any

import torch

from grpokit.rollout.async_worker import RolloutRequest, RolloutWorkerError
from grpokit.rollout.batch import RolloutBatch
from grpokit.rollout.vllm_client import VLLMServerError, VLLMServerSampler

__all__ = ["ServerRolloutWorker"]


class ServerRolloutWorker:
    """Asynchronous rollouts on a vLLM server (see the module docstring for the protocol).

    Args:
        sampler: the run's sampler on the server, holding the weights of ``version`` already.
        version: the policy version of the weights the server holds.
        timeout_s: deadline of every wait (a batch, the requests before a weight push).
    """

    def __init__(self, sampler: VLLMServerSampler, *, version: int, timeout_s: float):
        self.sampler = sampler
        self.version = int(version)  # the policy version the server holds
        self.timeout_s = float(timeout_s)
        self.pending: deque[RolloutRequest] = deque()  # submitted, batch not received yet
        # step -> (batch, (wall, CPU) seconds of the request; the CPU ones are this process's thread's)
        self.received: dict[int, tuple[RolloutBatch, tuple[float, float]]] = {}
        self.error: RolloutWorkerError | None = None  # set once; every later call raises it
        self.last_sync: dict[str, float] = {}  # weight_sync/* metrics of the last push
        self._changed = threading.Condition()
        self._requests: queue.Queue[RolloutRequest | None] = queue.Queue()
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return self.sampler.url

    @property
    def pid(self) -> None:
        """No process of its own (the interface of the process worker)."""
        return None

    # -- life cycle ----------------------------------------------------------------------------------------

    def start(self) -> None:
        """Start the thread that sends the requests (the sampler already waited for the server)."""
        self._thread = threading.Thread(target=self._serve, name="grpokit-rollout-requests", daemon=True)
        self._thread.start()

    def close(self, timeout_s: float = 1.0) -> None:
        """Stop the thread after its current request; a request still blocked is abandoned; idempotent."""
        thread, self._thread = self._thread, None
        if thread is None:
            return
        self._requests.put(None)
        thread.join(timeout_s)

    # -- requests, batches and weights ---------------------------------------------------------------------

    def submit(self, request: RolloutRequest) -> None:
        """Queue a request; its version must be the one the server holds (choice 1)."""
        self._raise_if_failed()
        if request.version != self.version:
            raise ValueError(
                f"request for step {request.step} needs version {request.version}, the server holds {self.version}"
            )
        with self._changed:
            self.pending.append(request)
        self._requests.put(request)

    def receive(self, step: int) -> tuple[RolloutBatch, tuple[float, float]]:
        """The batch of ``step`` (submitted earlier) and the (wall, CPU) seconds its request took."""
        self._raise_if_failed()  # also after a checkpoint moved the failed requests to the lost ones
        if step not in self.received:
            if not any(r.step == step for r in self.pending):
                raise ValueError(f"no batch was requested for step {step}")
            self._wait(lambda: step in self.received)
        return self.received.pop(step)

    def publish(self, model: torch.nn.Module, version: int) -> None:
        """Push ``model``'s weights to the server as ``version``, once every request that needs an older
        version is answered (choice 1)."""
        self._wait(lambda: all(r.version >= version for r in self.pending))
        try:
            self.last_sync = self.sampler.update_weights(model)
        except VLLMServerError as error:
            raise self._fail(f"pushing weights version {version} failed: {error}") from error
        self.version = int(version)

    def collect_arrived(self) -> None:
        """Nothing to take in: the thread stores each batch as it arrives."""

    # -- the thread and the waits --------------------------------------------------------------------------

    def _serve(self) -> None:
        while True:
            request = self._requests.get()
            if request is None:
                return
            try:
                start, start_cpu = time.perf_counter(), time.thread_time()
                self.sampler.set_seed(request.seed)
                batch = self.sampler.generate(request.prompts, request.num_generations, request.columns)
                batch.policy_version = torch.full((batch.num_responses,), request.version, dtype=torch.long)
                seconds = (time.perf_counter() - start, time.thread_time() - start_cpu)
            except Exception as error:  # the server's failure, or one of the sampler's: the trainer reports it
                with self._changed:
                    if self.error is None:
                        self._fail(
                            f"generating the batch of step {request.step} with weights version "
                            f"{request.version} failed: {type(error).__name__}: {error}"
                        )
                    self._changed.notify_all()
                return
            with self._changed:
                if self.error is not None:  # abandoned at a deadline: the trainer no longer expects it
                    return
                self.pending.popleft()
                self.received[request.step] = (batch, seconds)
                self._changed.notify_all()

    def _doing(self) -> str:
        if not self.pending:
            return "idle (no batch requested)"
        head = self.pending[0]
        return f"generating the batch of step {head.step} with weights version {head.version}"

    def _raise_if_failed(self) -> None:
        if self.error is not None:
            raise self.error
        if self._thread is None:
            raise RolloutWorkerError("the vLLM rollout requests are not running (start() not called, or closed)")

    def _fail(self, message: str) -> RolloutWorkerError:
        if self.error is None:
            self.error = RolloutWorkerError(f"asynchronous rollouts on the vLLM server at {self.url}: {message}")
        return self.error

    def _wait(self, done: Any) -> None:
        """Wait until ``done()`` (evaluated under the lock); a failed request or ``timeout_s`` raise."""
        self._raise_if_failed()
        deadline = time.monotonic() + self.timeout_s
        with self._changed:
            while not done():
                if self.error is not None:
                    raise self.error
                left = deadline - time.monotonic()
                if left <= 0:
                    raise self._fail(
                        f"no answer within generation.async_timeout_s = {self.timeout_s:g} s while "
                        f"{self._doing()}; is `grpokit vllm-serve` still running there?"
                    )
                self._changed.wait(left)
