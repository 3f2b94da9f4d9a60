"""A rollout worker process: samples batches with its own copy of the policy while the trainer trains.

The trainer keeps a :class:`RolloutWorker` handle; the process it starts (``torch.multiprocessing``, *spawn*,
one torch thread) builds a model from the policy's Hugging Face config and the project's
:class:`~grpokit.rollout.TransformersSampler` on it, then serves :class:`RolloutRequest` s in order::

    trainer                                   worker process
    RolloutWorker(model, ...).start()  ──►    build the model, load version v0 from shared memory, "ready"
    submit(request(step s, version v))  ──►   if v is not loaded: copy the shared weights, "loaded v"
                                              seed the sampler from the request, generate, "batch s"
    receive(s)                         ◄──    the RolloutBatch, each row tagged with policy_version v
    publish(model, version v + 1)             waits for "loaded" of every submitted version, then overwrites
                                              the shared weights and the version counter

Weights travel through shared memory: one set of ``share_memory_()`` tensors, handed to the process once at
start, that the trainer overwrites after a training step (a memory copy, no pickling of the model). The
trainer overwrites them only once the worker acknowledged loading every version it was asked for, so a
batch is always sampled with exactly the version its request names, and a run does not depend on timing.

Choices, numbered:

1. Every wait has a deadline (``start_timeout_s`` to start, ``timeout_s`` for a batch or an
   acknowledgement) and checks that the process is alive every ``POLL_S``; a dead, failed or stuck worker
   raises :class:`RolloutWorkerError` naming its pid, exit code and what it was doing (loading which weight
   version, generating the batch of which step). A stuck worker is killed first.
2. The worker dies with the trainer: on Linux the kernel sends it SIGKILL when its parent dies
   (``PR_SET_PDEATHSIG``); elsewhere it notices within ``POLL_S`` that its parent is gone.
3. Batches come back by value (``RolloutBatch.to_bytes``: ``torch.save`` bytes, read with
   ``weights_only=True``, so nothing the worker sends can run code in the trainer), not as shared-memory
   tensors, so a batch received stays valid whatever becomes of the worker.
4. The sampler is reseeded for each request (``request.seed``), so a batch is a function of its prompts,
   its weight version and its seed alone.
5. The process starts without importing the caller's ``__main__`` module (which spawn does by default), so
   a training script needs no ``if __name__ == "__main__"`` guard.
6. With a frozen reference policy (GRPO's beta > 0, never re-synced) the worker also runs its no-grad
   forward on each batch (``ref_logprobs``): it moves work from the trainer, usually the longer side of the
   overlap, to the worker. The function that computes it is the trainer's, passed in, so both compute it
   alike and this module needs no model code.
"""

from __future__ import annotations

import contextlib
import os
import queue
import signal
import sys
import threading
import time
import traceback
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from grpokit.rollout.batch import RolloutBatch

__all__ = ["RolloutRequest", "RolloutWorker", "RolloutWorkerError", "sampler_settings"]

POLL_S = 0.5
"""Seconds between liveness checks while waiting on the other side."""

_READY, _LOADED, _BATCH, _ERROR, _BROKEN = "ready", "loaded", "batch", "error", "broken"


class RolloutWorkerError(RuntimeError):
    """The rollout worker died, failed or missed a deadline; the message says which and what it was doing."""


@dataclass(frozen=True)
class RolloutRequest:
    """One batch to sample: B prompts x G completions with the weights of policy ``version``."""

    step: int  # the training step that will train on the batch
    version: int  # policy version (completed training steps) whose weights must sample it
    seed: int  # seeds the sampler's generator for this batch alone
    prompts: list[Any]  # B prompts (text or chat messages)
    num_generations: int  # G
    columns: dict[str, list[Any]] = field(default_factory=dict)  # dataset columns, B entries each


def sampler_settings(sampler: Any) -> dict[str, Any]:
    """The keyword arguments that rebuild ``sampler`` (a :class:`~grpokit.rollout.TransformersSampler`) on
    another copy of its model: the same knobs, stop tokens and decoder, so both sample alike."""
    return dict(
        max_new_tokens=sampler.max_new_tokens,
        min_new_tokens=sampler.min_new_tokens,
        temperature=sampler.temperature,
        top_p=sampler.top_p,
        top_k=sampler.top_k,
        temperature_schedule=sampler.temperature_schedule,
        max_prompt_length=sampler.max_prompt_length,
        prompt_truncation=sampler.prompt_truncation,
        do_sample=not sampler.greedy,
        eos_token_id=list(sampler.stop_ids),
        decoder=sampler.decoder,
        autocast_dtype=sampler.autocast_dtype,
    )


class RolloutWorker:
    """The trainer's handle on one rollout worker process (see the module docstring for the protocol).

    Args:
        model: the policy (plain, unwrapped, on CPU); the worker builds its own from ``model.config`` and
            starts from these weights.
        tokenizer: the policy's tokenizer (pickled to the worker once).
        sampler_kwargs: the worker's sampler settings (:func:`sampler_settings`).
        version: the policy version of ``model``'s current weights.
        start_timeout_s: deadline for the process to start and build its model.
        timeout_s: deadline of every later wait (a batch, an acknowledgement).
        reference: a frozen reference policy, copied to the worker once, and ``reference_logprobs(model,
            batch) -> (N, T)`` (a picklable function): every batch then comes back with ``ref_logprobs``
            under it, so the trainer's process does not run that forward (choice 6).
    """

    def __init__(
        self,
        model: torch.nn.Module,
        tokenizer: Any,
        sampler_kwargs: dict[str, Any],
        *,
        version: int,
        start_timeout_s: float,
        timeout_s: float,
        reference: torch.nn.Module | None = None,
        reference_logprobs: Callable[[torch.nn.Module, RolloutBatch], torch.Tensor] | None = None,
    ):
        if (reference is None) != (reference_logprobs is None):
            raise ValueError("reference and reference_logprobs go together")
        self.model, self.tokenizer, self.sampler_kwargs = model, tokenizer, dict(sampler_kwargs)
        self.reference, self.reference_logprobs = reference, reference_logprobs
        self.version = int(version)  # newest version published into the shared weights
        self.acked = int(version)  # newest version the worker has loaded
        self.start_timeout_s, self.timeout_s = float(start_timeout_s), float(timeout_s)
        self.process: Any = None
        self.pending: deque[RolloutRequest] = deque()  # submitted, batch not received yet
        # step -> (batch, (wall, CPU) seconds the worker spent generating it)
        self.received: dict[int, tuple[RolloutBatch, tuple[float, float]]] = {}
        self.error: RolloutWorkerError | None = None  # set once; every later call raises it

    # -- life cycle ----------------------------------------------------------------------------------------

    def start(self) -> None:
        """Start the process and wait (``start_timeout_s``) until it has built its model."""
        import torch.multiprocessing as mp

        ctx = mp.get_context("spawn")
        with torch.no_grad():
            self.shared = {
                name: p.detach().to("cpu", copy=True).share_memory_()
                for name, p in self.model.named_parameters()
            }
            reference = None
            if self.reference is not None:  # frozen: copied once
                reference = {n: p.detach().to("cpu", copy=True) for n, p in self.reference.named_parameters()}
        self.shared_version = ctx.Value("q", self.version, lock=False)
        self.requests = ctx.Queue()
        self.replies = ctx.Queue()
        config = self.model.config
        spec = {
            "config": config,
            "dtype": next(self.model.parameters()).dtype,
            "attn_implementation": getattr(config, "_attn_implementation", None),
            "tokenizer": self.tokenizer,
            "sampler_kwargs": self.sampler_kwargs,
            "version": self.version,
            "reference": reference,
            "reference_logprobs": self.reference_logprobs,
        }
        self.process = ctx.Process(
            target=_worker_main,
            args=(spec, self.shared, self.shared_version, self.requests, self.replies),
            name="grpokit-rollout-worker",
            daemon=True,
        )
        with _main_module_hidden():
            self.process.start()
        # A reader thread moves replies from the pipe to an in-process queue: a worker killed in the middle of
        # writing a batch leaves a partial message that would block a reader forever; only this thread blocks.
        self.inbox: queue.Queue[Any] = queue.Queue()
        self.reader = threading.Thread(target=_pump, args=(self.replies, self.inbox), daemon=True)
        self.reader.start()
        self._wait(
            lambda: self._ready,
            self.start_timeout_s,
            "async_start_timeout_s",
            "starting (building its model)",
        )

    @property
    def pid(self) -> int | None:
        return None if self.process is None else self.process.pid

    def close(self, timeout_s: float = 10.0) -> None:
        """Stop the process (asked first, then terminated, then killed) and release the queues; idempotent."""
        process, self.process = self.process, None
        if process is None:
            return
        if process.pid is None:  # never started
            return
        with contextlib.suppress(Exception):
            if process.is_alive():
                self.requests.put(None)
        process.join(timeout_s)
        if process.is_alive():
            process.terminate()
            process.join(5.0)
        if process.is_alive():
            process.kill()
            process.join(5.0)
        with contextlib.suppress(Exception):
            self.replies.put(None)  # ends the reader thread (or, after a partial message, makes it fail)
        for q in (self.requests, self.replies):
            q.cancel_join_thread()  # never block exit on data the dead process will not read
            q.close()
        self.reader.join(1.0)

    # -- requests, batches and weights ---------------------------------------------------------------------

    def submit(self, request: RolloutRequest) -> None:
        """Queue a request; its version must be published already (the worker checks)."""
        self._raise_if_failed()
        if request.version > self.version:
            raise ValueError(
                f"request for step {request.step} needs version {request.version}, published {self.version}"
            )
        self.pending.append(request)
        self.requests.put(request)

    def receive(self, step: int) -> tuple[RolloutBatch, tuple[float, float]]:
        """The batch of ``step`` (submitted earlier) and the (wall, CPU) seconds the worker spent on it."""
        if self.error is not None:  # also after a checkpoint moved the unanswered requests to the lost ones
            raise self.error
        if step not in self.received:
            if not any(r.step == step for r in self.pending):
                raise ValueError(f"no batch was requested for step {step}")
            self._wait(lambda: step in self.received, self.timeout_s, "async_timeout_s", None)
        return self.received.pop(step)

    def publish(self, model: torch.nn.Module, version: int) -> None:
        """Overwrite the shared weights with ``model``'s as ``version``, once the worker has loaded every
        version it was asked for (so no request ever sees weights other than its own version)."""
        needed = max((r.version for r in self.pending), default=self.acked)
        self._wait(lambda: self.acked >= needed, self.timeout_s, "async_timeout_s", None)
        with torch.no_grad():
            for name, p in model.named_parameters():
                self.shared[name].copy_(p.detach())
        self.version = self.shared_version.value = int(version)

    def collect_arrived(self) -> None:
        """Take in, without waiting, every reply already sent (batches a dead worker finished, its error)."""
        self._drain(block_s=0.0)

    # -- waiting -------------------------------------------------------------------------------------------

    _ready = False

    def _raise_if_failed(self) -> None:
        if self.error is not None:
            raise self.error
        if self.process is None:
            raise RolloutWorkerError("the rollout worker is not running (start() not called, or closed)")

    def _doing(self) -> str:
        if not self.pending:
            return "idle (no batch requested)"
        head = self.pending[0]
        if self.acked < head.version:
            return f"loading weights version {head.version} for the batch of step {head.step}"
        return f"generating the batch of step {head.step} with weights version {head.version}"

    def _fail(self, message: str) -> RolloutWorkerError:
        self.error = RolloutWorkerError(message)
        return self.error

    def _wait(self, done: Any, timeout_s: float, knob: str, doing: str | None) -> None:
        """Process replies until ``done()``; a dead worker, a worker error or ``timeout_s`` raise."""
        self._raise_if_failed()
        deadline = time.monotonic() + timeout_s
        while not done():
            self._drain(block_s=min(POLL_S, max(0.0, deadline - time.monotonic())))
            if self.error is not None:
                raise self.error
            if done():
                return
            process = self.process
            what = doing or self._doing()
            if not process.is_alive():
                self._drain(block_s=0.2)  # a reply sent just before dying (its error) still counts
                if self.error is not None:
                    raise self.error
                code = process.exitcode
                name = f" ({signal.Signals(-code).name})" if code is not None and code < 0 else ""
                raise self._fail(
                    f"the rollout worker (pid {process.pid}) died with exit code {code}{name} while {what}"
                )
            if time.monotonic() >= deadline:
                pid = process.pid
                process.kill()  # stuck: nothing it holds is worth waiting for
                raise self._fail(
                    f"the rollout worker (pid {pid}) did not answer within generation.{knob} = {timeout_s:g} s "
                    f"while {what}; it was stopped"
                )

    def _drain(self, block_s: float) -> None:
        while self.error is None:
            try:
                reply = self.inbox.get(timeout=block_s) if block_s > 0 else self.inbox.get_nowait()
            except queue.Empty:
                return
            block_s = 0.0
            kind = reply[0]
            if kind == _BROKEN:
                self._fail(
                    f"the rollout worker (pid {self.pid}) broke its reply queue ({reply[1]}) while {self._doing()}"
                )
                return
            if kind == _READY:
                self._ready = True
            elif kind == _LOADED:
                self.acked = int(reply[1])
            elif kind == _BATCH:
                _, step, payload, seconds = reply
                if not self.pending or self.pending[0].step != step:
                    self._fail(f"the rollout worker sent the batch of step {step} out of order")
                    return
                self.pending.popleft()
                self.received[int(step)] = (RolloutBatch.from_bytes(payload), (float(seconds[0]), float(seconds[1])))
            elif kind == _ERROR:
                _, what, text = reply
                self._fail(f"the rollout worker (pid {self.pid}) failed while {what}:\n{text}")


# -------------------------------------------------------------------------------------------------------
# The worker process
# -------------------------------------------------------------------------------------------------------


def _pump(replies: Any, inbox: queue.Queue[Any]) -> None:
    """The reader thread: every reply of the worker into ``inbox``, until the sentinel None or a torn pipe."""
    while True:
        try:
            reply = replies.get()
        except Exception as err:  # a message torn by a dying worker, or the queue closed under us
            inbox.put((_BROKEN, repr(err)))
            return
        if reply is None:
            return
        inbox.put(reply)


@contextlib.contextmanager
def _main_module_hidden() -> Any:
    """Start a spawned process without re-running the caller's script in it (choice 5): the worker needs
    nothing from ``__main__``, and a script without an ``if __name__ == "__main__"`` guard would start a
    second training run there."""
    main = sys.modules.get("__main__")
    saved = {name: getattr(main, name) for name in ("__file__", "__spec__") if hasattr(main, name)}
    try:
        if "__file__" in saved:
            delattr(main, "__file__")
        if "__spec__" in saved:
            main.__spec__ = None  # type: ignore[union-attr]
        yield
    finally:
        for name, value in saved.items():
            setattr(main, name, value)


def _die_with_parent() -> None:
    """Ask the kernel to SIGKILL this process when its parent dies (Linux); elsewhere the request loop polls."""
    if not sys.platform.startswith("linux"):
        return
    with contextlib.suppress(Exception):
        import ctypes

        PR_SET_PDEATHSIG = 1
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


def _worker_main(
    spec: dict[str, Any], shared: dict[str, torch.Tensor], shared_version: Any, requests: Any, replies: Any
) -> None:
    _die_with_parent()
    torch.set_num_threads(1)
    import multiprocessing

    parent = multiprocessing.parent_process()
    doing = "starting (building its model)"
    try:
        from transformers import AutoModelForCausalLM

        from grpokit.rollout.transformers_sampler import TransformersSampler

        kwargs = {"dtype": spec["dtype"]}
        if spec["attn_implementation"] is not None:
            kwargs["attn_implementation"] = spec["attn_implementation"]
        model = AutoModelForCausalLM.from_config(spec["config"], **kwargs)
        model.eval().requires_grad_(False)
        params = dict(model.named_parameters())
        missing = sorted(set(shared) ^ set(params))
        if missing:
            raise RuntimeError(f"the worker's model and the policy differ in parameters: {missing[:5]}")
        loaded = _load(params, shared, shared_version, int(spec["version"]))
        sampler = TransformersSampler(model, spec["tokenizer"], **spec["sampler_kwargs"])
        reference = None
        if spec["reference"] is not None:
            reference = AutoModelForCausalLM.from_config(spec["config"], **kwargs)
            reference.eval().requires_grad_(False)
            with torch.no_grad():
                for name, p in reference.named_parameters():  # tied weights appear once, as in the policy's
                    p.copy_(spec["reference"][name])
            del spec["reference"]
        dtype = spec["sampler_kwargs"].get("autocast_dtype")
        autocast = torch.autocast("cpu", dtype=dtype) if dtype is not None else contextlib.nullcontext()
        replies.put((_READY, os.getpid()))
        while True:
            doing = "waiting for a request"
            try:
                request = requests.get(timeout=POLL_S)
            except queue.Empty:
                if parent is not None and not parent.is_alive():
                    return
                continue
            if request is None:
                return
            if request.version != loaded:
                doing = f"loading weights version {request.version} for the batch of step {request.step}"
                loaded = _load(params, shared, shared_version, request.version)
                replies.put((_LOADED, loaded))
            doing = f"generating the batch of step {request.step} with weights version {request.version}"
            start, start_cpu = time.perf_counter(), time.process_time()
            sampler.set_seed(request.seed)
            batch = sampler.generate(request.prompts, request.num_generations, request.columns)
            if reference is not None:
                with autocast:
                    batch.ref_logprobs = spec["reference_logprobs"](reference, batch)
            batch.policy_version = torch.full((batch.num_responses,), request.version, dtype=torch.long)
            seconds = (time.perf_counter() - start, time.process_time() - start_cpu)
            replies.put(
                (_BATCH, request.step, batch.to_bytes(), seconds)
            )
    except BaseException:
        with contextlib.suppress(Exception):
            replies.put((_ERROR, doing, traceback.format_exc()))
        raise


def _load(
    params: dict[str, torch.Tensor], shared: dict[str, torch.Tensor], shared_version: Any, version: int
) -> int:
    """Copy the shared weights into the worker's model; they must be ``version`` (the trainer's protocol)."""
    published = int(shared_version.value)
    if published != version:
        raise RuntimeError(f"weights version {version} was requested but version {published} is published")
    with torch.no_grad():
        for name, p in params.items():
            p.copy_(shared[name])
    return version
