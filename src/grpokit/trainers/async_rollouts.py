"""Asynchronous (overlapped) rollouts for GRPO: the next steps' batches are sampled by a rollout worker
process while the trainer updates, at most ``generation.max_staleness`` policy versions behind.

The policy *version* is the number of training steps completed. With k = ``max_staleness``, the batch that
step s trains on is sampled with exactly version

    v(s) = max(0, s - 1 - k)                       (sync mode: v(s) = s - 1)

so each sample lags the policy that trains on it by ``staleness = (s - 1) - v(s) = min(s - 1, k) <= k``
versions. The pipeline keeps k + 1 batches requested ahead::

    start (after step s0)      request s0+1 .. s0+1+k                   all need versions <= s0
    step s                     batch s  <- the worker (sampled with v(s)), score, advantages, update
    after step s (publish)     version s -> shared weights; request s+1+k (needs version s)

Prompts are drawn by the trainer, in its order, when a batch is requested; the worker's generator is
seeded from (seed, s) for batch s. A run is therefore a function of its config alone, whatever the timing,
and so is a resumed one:

1. A checkpoint of step s waits for the batches in flight (s+1 .. s+1+k, with a deadline) and stores them
   in the trainer state; a resumed run trains on them and requests the next ones: SIGKILL + resume
   reproduces the uninterrupted run bit for bit.
2. A dead or stuck worker (:class:`~grpokit.rollout.async_worker.RolloutWorkerError`) surfaces when the
   trainer next needs a batch, before any weight of that step moved; the trainer then checkpoints the last
   completed step and stops with :class:`RolloutWorkerAbort`. The batches the worker finished are in that
   checkpoint; those it lost are sampled again on resume with the checkpoint's weights (fresher than the
   lost ones, within the bound), so that resume is exact except for those batches.
3. The loss corrects for the lag with the truncated importance weights of separate rollout engines
   (``algorithm.rollout_importance_sampling``, ``auto`` = ``token`` here): ``min(pi_old / pi_behaviour, C)``
   against the worker's log-probs (``trainers/rollout_engine.py``). GRPO's pi_old is the current policy
   (``trainers/grpo.py``, note 1), so the weight is what accounts for the staleness.
4. With beta > 0 and a reference that is never re-synced (``ref_model_sync_steps: 0``), the worker computes
   the batch's reference log-probs too (``batch.ref_logprobs``, with the trainer's own function and
   micro-batches), which moves that no-grad forward off the trainer; a re-synced reference stays in the
   trainer, whose update computes it as in a synchronous run.
5. With ``generation.backend: vllm_server`` the batches are sampled by the server instead of a worker
   process (:class:`~grpokit.rollout.async_server_worker.ServerRolloutWorker`, same interface): each weight
   push waits until the server has answered every request that needs an older version, so points 1-3 hold
   unchanged; point 4 does not apply (the server only samples).
"""

from __future__ import annotations

import logging
from dataclasses import asdict
from functools import partial
from typing import Any

import torch

from grpokit.config import OptimConfig
from grpokit.engine import faults
from grpokit.engine.parallel import derive_seed
from grpokit.models.forward import sequence_logprobs
from grpokit.models.reference import ReferencePolicy
from grpokit.rollout.async_server_worker import ServerRolloutWorker
from grpokit.rollout.async_worker import RolloutRequest, RolloutWorker, RolloutWorkerError, sampler_settings
from grpokit.rollout.batch import RolloutBatch
from grpokit.trainers.objective import micro_batch_size
from grpokit.trainers.phases import split_rows

__all__ = ["AsyncRollouts", "RolloutWorkerAbort", "required_version"]

log = logging.getLogger("grpokit.trainers")

_SEED_STREAM = 3  # derive_seed(seed, step, _SEED_STREAM): apart from the data-parallel streams (0, 1)


class RolloutWorkerAbort(faults.TrainingAborted):
    """The rollout worker died, failed or missed a deadline; the last completed step was checkpointed."""


def required_version(step: int, max_staleness: int) -> int:
    """v(s) = max(0, s - 1 - k): the policy version whose weights sample the batch of training step s."""
    return max(0, step - 1 - max_staleness)


class AsyncRollouts:
    """The trainer's side of the pipeline: requests, the staleness bound, weight publication, its state.

    Args:
        worker: the rollout worker handle (not started): a process, or requests to a vLLM server.
        prompt_iter: the trainer's prompt iterator (B rows per call).
        num_generations: G.
        prompt_column: the prompt column of the rows.
        max_staleness: k >= 1.
        seed: the run's seed.
        start_step: the steps completed (0, or the resumed checkpoint's step).
        max_steps: the run's last step (nothing is requested beyond it).
        state: :meth:`state_dict` of the resumed checkpoint, or None.
    """

    def __init__(
        self,
        worker: RolloutWorker | ServerRolloutWorker,
        prompt_iter: Any,
        *,
        num_generations: int,
        prompt_column: str,
        max_staleness: int,
        seed: int,
        start_step: int,
        max_steps: int,
        state: dict[str, Any] | None = None,
    ):
        if max_staleness < 1:
            raise ValueError(f"max_staleness must be >= 1, got {max_staleness}")
        self.worker, self.prompt_iter = worker, prompt_iter
        self.num_generations, self.prompt_column = num_generations, prompt_column
        self.max_staleness, self.seed, self.max_steps = max_staleness, int(seed), max_steps
        self.version = start_step  # the trainer's policy version (steps completed)
        self.step = start_step  # the step whose batch was handed out last
        self.requested_through = start_step  # the last step whose batch was requested
        # step -> (batch, the worker's (wall, CPU) seconds on it): received, not trained on yet
        self.ready: dict[int, tuple[RolloutBatch, tuple[float, float]]] = {}
        self.current: tuple[int, tuple[RolloutBatch, tuple[float, float]]] | None = (
            None  # the step in progress
        )
        self.lost: list[RolloutRequest] = []  # requests to sample again (after a worker failure)
        self.metrics: dict[str, float] = {}  # of the step in progress
        if state is not None:
            self.requested_through = int(state["requested_through"])
            self.ready = {
                int(s): (RolloutBatch.from_state_dict(b), (float(t[0]), float(t[1])))
                for s, (b, t) in state["ready"].items()
            }
            self.lost = [RolloutRequest(**r) for r in state["lost"]]

    # -- life cycle ----------------------------------------------------------------------------------------

    def start(self) -> None:
        """Start the worker on the current weights, re-request what a failed worker lost, fill the pipeline."""
        self.worker.start()
        for request in self.lost:  # with the checkpoint's weights: the lost version is gone
            log.warning(
                "async rollouts: the batch of step %d was lost with the rollout worker before the checkpoint; "
                "sampling it again with weights version %d instead of %d", request.step, self.version,
                request.version,
            )  # fmt: skip
            self.worker.submit(RolloutRequest(**{**asdict(request), "version": self.version}))
        self.lost = []
        self._request_ahead()

    def close(self) -> None:
        self.worker.close()

    # -- the steps -----------------------------------------------------------------------------------------

    def next_batch(self) -> RolloutBatch:
        """The batch of the next step (received from the worker, or from the checkpoint).

        Raises:
            RolloutWorkerError: the worker died, failed or missed ``async_timeout_s``.
            RuntimeError: the batch is staler than ``max_staleness`` (never trained on).
        """
        step = self.step + 1
        batch, seconds = self.ready.pop(step) if step in self.ready else self.worker.receive(step)
        versions = batch.policy_version
        if versions is None:
            raise RuntimeError(f"the batch of step {step} carries no policy_version")
        staleness = (step - 1 - versions).float()  # (N,) versions behind the policy that trains on it
        if float(staleness.max()) > self.max_staleness or float(staleness.min()) < 0:
            raise RuntimeError(
                f"the batch of step {step} was sampled with weights versions {sorted(set(versions.tolist()))}, "
                f"which the policy of step {step} (version {step - 1}) may not train on: generation.max_staleness "
                f"is {self.max_staleness}"
            )
        self.step, self.current = step, (step, (batch, seconds))
        self.metrics = {
            "async/staleness_mean": float(staleness.mean()),
            "async/staleness_max": float(staleness.max()),
            "time/worker_generate": seconds[0],  # the worker's, overlapped with the trainer's steps
            "time/worker_generate_cpu": seconds[1],
        }
        return batch

    def publish(self, step: int, model: torch.nn.Module) -> dict[str, float]:
        """After the update of ``step``: its weights become version ``step`` in the worker (when a batch still
        to request needs them), and the next batch is requested. Returns the step's ``async/*`` metrics.

        A worker failure here is kept and raised by the next :meth:`next_batch`, when the step is complete
        and can be checkpointed.
        """
        self.current, self.version = None, step
        metrics, self.metrics = self.metrics, {}
        if self.worker.error is not None:
            return metrics
        try:
            if required_version(self.max_steps, self.max_staleness) >= step:
                self.worker.publish(model, step)
            self._request_ahead()
        except RolloutWorkerError as error:
            log.warning("async rollouts: %s (the run stops when the next batch is needed)", error)
        return metrics

    def _request_ahead(self) -> None:
        """Request every step whose weights exist: s <= version + 1 + k (and <= max_steps)."""
        last = min(self.max_steps, self.version + 1 + self.max_staleness)
        while self.requested_through < last:
            step = self.requested_through + 1
            prompts, columns = split_rows(next(self.prompt_iter), self.prompt_column)
            request = RolloutRequest(
                step=step,
                version=required_version(step, self.max_staleness),
                seed=derive_seed(self.seed, step, _SEED_STREAM),
                prompts=prompts,
                num_generations=self.num_generations,
                columns=columns,
            )
            self.requested_through = step  # the prompts are drawn: the request exists, sent or lost
            if self.worker.error is not None:
                self.lost.append(request)
            else:
                self.worker.submit(request)

    # -- checkpoints ---------------------------------------------------------------------------------------

    def state_dict(self, step: int) -> dict[str, Any]:
        """What resuming after ``step`` needs: every requested batch of a later step, waited for (within
        ``async_timeout_s``); the requests a failed worker lost, to sample again."""
        batches = {}
        if self.current is not None and self.current[0] > step:  # out of memory in the step after it
            batches[self.current[0]] = self.current[1]
        self._wait_for_requested()
        batches.update(self.ready)
        lost = list(self.lost)
        return {
            "requested_through": self.requested_through,
            "ready": {s: (b.state_dict(), t) for s, (b, t) in sorted(batches.items()) if s > step},
            "lost": [asdict(r) for r in lost if r.step > step],
        }

    def _wait_for_requested(self) -> None:
        """Every requested batch into ``ready`` (waiting for each within ``async_timeout_s``); when the worker
        fails, the requests it did not answer go to ``lost``."""
        worker = self.worker
        try:
            if worker.error is not None:
                raise worker.error
            for request in list(worker.pending):
                self.ready[request.step] = worker.receive(request.step)
        except RolloutWorkerError:
            worker.collect_arrived()
            self.lost += list(worker.pending)
            worker.pending.clear()
        for step in list(worker.received):
            self.ready[step] = worker.received.pop(step)


def reference_logprobs(optim: OptimConfig, model: torch.nn.Module, batch: RolloutBatch) -> torch.Tensor:
    """(N, T) log pi_ref of a batch, in the micro-batches the trainer's update would use (run by the worker)."""
    return sequence_logprobs(model, batch, micro_batch_size(optim, batch.num_responses, 1, batch))


def _process_worker(trainer: Any) -> RolloutWorker:
    """The rollout worker process of a transformers run.

    Raises:
        ValueError: the policy is not on CPU (the rollout worker samples on CPU).
    """
    cfg = trainer.config
    gen = cfg.generation
    if trainer.device.type != "cpu":
        raise ValueError(
            f"generation.async_rollouts runs the rollout worker on CPU, but the policy is on {trainer.device}; "
            "set model.device: cpu, or generation.async_rollouts: false"
        )
    sampler = trainer.sampler.sampler  # the TransformersSampler inside the (one-process) ShardedSampler
    # A frozen reference (never re-synced) runs its forward in the worker, beside generation (choice 4).
    frozen = isinstance(trainer.reference, ReferencePolicy) and cfg.algorithm.ref_model_sync_steps == 0
    return RolloutWorker(
        trainer.model,
        trainer.tokenizer,
        sampler_settings(sampler),
        version=trainer.start_step,
        start_timeout_s=gen.async_start_timeout_s,
        timeout_s=gen.async_timeout_s,
        reference=trainer.reference.model if frozen else None,
        reference_logprobs=partial(reference_logprobs, cfg.optim) if frozen else None,
    )


def build_async_rollouts(trainer: Any) -> AsyncRollouts:
    """The pipeline of a :class:`~grpokit.trainers.grpo.GRPOTrainer` (its prompts, sampler settings, config
    and resumed state); the worker starts with :meth:`AsyncRollouts.start`.

    Raises:
        ValueError: a transformers policy is not on CPU (the rollout worker samples on CPU).
    """
    from grpokit.engine import checkpoint as ckpt

    cfg = trainer.config
    gen = cfg.generation
    worker: RolloutWorker | ServerRolloutWorker
    if gen.backend == "vllm_server":  # the server samples; the sampler already pushed the current weights
        sampler = trainer.sampler.sampler  # the VLLMServerSampler inside the (one-process) ShardedSampler
        worker = ServerRolloutWorker(sampler, version=trainer.start_step, timeout_s=gen.async_timeout_s)
    else:
        worker = _process_worker(trainer)
    state = None
    if trainer.resumed_from is not None:
        state = ckpt.load_trainer_state(trainer.resumed_from).get("async_rollouts")
        if state is None:
            raise ValueError(
                f"{trainer.resumed_from} was written without generation.async_rollouts; resume it with "
                "async_rollouts: false (the checkpoint holds no batches in flight)"
            )
    return AsyncRollouts(
        worker,
        trainer.prompt_iter,
        num_generations=cfg.algorithm.num_generations,
        prompt_column=cfg.data.prompt_column,
        max_staleness=gen.max_staleness,
        seed=cfg.seed,
        start_step=trainer.start_step,
        max_steps=cfg.max_steps,
        state=state,
    )
