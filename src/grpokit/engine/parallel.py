"""Data-parallel GRPO on accelerate: whole groups per process, global loss normalisation, rank-0 I/O.

Launch with ``accelerate launch -m grpokit train CONFIG.yaml`` (or ``grpokit train --num_processes N``): the
engine (DDP by default; DeepSpeed ZeRO or FSDP2 from an accelerate config file) is accelerate's, never a
process group of grpokit's own. One step on W processes, for B prompts and G completions each::

    rows          = next(prompts)                    every process draws the same B rows (same seed and state)
    local rows    = rows[r*B/W : (r+1)*B/W]          process r samples the G completions of its B/W prompts
    advantages    = gather_group_advantages(...)     rewards, group ids all-gathered; estimator run globally
    loss weight   = W * count_local / count_global   DDP's mean of gradients = the one-process gradient
    log, save     rank 0 only                        metrics from the gathered batch; a full HF checkpoint

What makes W processes equal to one (the 2-process CPU test checks the parameters after a few steps):

1. The same prompts: the prompt iterator is replicated, so its state (and the checkpoint) does not depend
   on W; a resumed run may use another number of processes.
2. The same samples: with ``generation.per_group_seed`` each group's sampling generator is seeded from
   (seed, generation round, the prompt's index in the global batch), so a group's completions do not
   depend on which process sampled it. That costs one ``generate`` call per prompt; without it each
   process seeds one stream per round from (seed, round, rank), which is as random but depends on W.
3. The same loss: ``token_mean`` divides by the global number of loss tokens, ``sequence_mean`` by the
   global number of non-empty responses, ``constant`` by the global number of rows. Each process scales its
   local loss by ``W * count_local / count_global``, so DDP's average of the W gradients is exactly the
   gradient of the one-process loss (up to float summation order).
4. The same advantages: groups never straddle processes, and the advantage estimator still runs on the
   all-gathered rewards, so batch-level estimators (``grpo_batch_norm``) see the whole batch too.

Limits, checked when the trainer starts: ``prompts_per_step`` and each minibatch must divide evenly across
the processes (and each process's minibatch across ``gradient_accumulation_steps``); dynamic sampling
(DAPO) and the PPO trainer run in one process only; with DeepSpeed or FSDP (sharded optimizer state)
periodic checkpoints and resume are refused. Minibatches are shuffled within each process, so with several
minibatches per step the partition differs from a one-process run (same distribution).
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np
import torch

if TYPE_CHECKING:
    from grpokit.config import GRPOConfig, PPOConfig

__all__ = [
    "DataParallel",
    "accelerate_launch_command",
    "check_splittable",
    "derive_seed",
    "launched_distributed",
    "reduce_reward_metrics",
    "reduce_update_metrics",
    "shard_bounds",
    "split_num_processes",
    "unsharded",
]

T = TypeVar("T")


# ---------------------------------------------------------------------------------------------------------
# Pure helpers
# ---------------------------------------------------------------------------------------------------------


def launched_distributed(environ: dict[str, str] | None = None) -> bool:
    """True when a launcher (accelerate, torchrun) started this process as one of several, or asked for
    DeepSpeed / FSDP (which need accelerate even on one process)."""
    env = os.environ if environ is None else environ
    try:
        world = int(env.get("WORLD_SIZE", "1"))
    except ValueError:
        world = 1
    engines = ("ACCELERATE_USE_DEEPSPEED", "ACCELERATE_USE_FSDP")
    return world > 1 or any(env.get(name, "false").lower() == "true" for name in engines)


def shard_bounds(
    num_items: int, rank: int, world_size: int, *, what: str = "data.prompts_per_step"
) -> tuple[int, int]:
    """``(start, stop)`` of process ``rank``'s contiguous share of ``num_items``; they must divide evenly.

    Raises:
        ValueError: ``num_items`` is not a multiple of ``world_size`` (the message names ``what``).
    """
    if num_items % world_size:
        raise ValueError(
            f"{what} ({num_items}) must be divisible by the number of processes ({world_size}) so that "
            "every process gets the same number of whole groups"
        )
    share = num_items // world_size
    return rank * share, (rank + 1) * share


def derive_seed(*keys: int) -> int:
    """A 63-bit seed from integer keys (seed, round, index...), mixed by ``numpy.random.SeedSequence``."""
    if any(k < 0 for k in keys):
        raise ValueError(f"seed keys must be non-negative integers, got {keys}")
    return int(np.random.SeedSequence(list(keys)).generate_state(1, np.uint64)[0] >> np.uint64(1))


def reduce_update_metrics(parts: Sequence[tuple[dict[str, float], float]]) -> dict[str, float]:
    """Combine each process's :func:`~grpokit.engine.update.run_update` metrics into the global ones.

    Args:
        parts: per process, ``(metrics, weight)`` with ``weight`` its number of loss tokens (the token
            weighting ``update_policy`` uses inside a process).
    Returns:
        Token-weighted means of the loss metrics; min of ``*_min`` and max of ``*_max``; sums of counts
        (``train_tokens``, ``faults/*``); the mean of what is the same on every process (``grad_norm`` after
        DDP's all-reduce, ``optimizer_steps``, ``lr``).
    """
    summed = ("train_tokens",)
    same = ("grad_norm", "optimizer_steps", "lr")
    keys = list(dict.fromkeys(k for metrics, _ in parts for k in metrics))
    out: dict[str, float] = {}
    for key in keys:
        present = [(m[key], w) for m, w in parts if key in m]
        values = [v for v, _ in present]
        if key.endswith("_min"):
            out[key] = min(values)
        elif key.endswith("_max"):
            out[key] = max(values)
        elif key in summed or key.startswith("faults/"):
            out[key] = float(sum(values))
        elif key in same:
            out[key] = sum(values) / len(values)
        else:
            total = sum(w for _, w in present)
            out[key] = sum(v * w for v, w in present) / total if total else sum(values) / len(values)
    return out


def reduce_reward_metrics(parts: Sequence[tuple[dict[str, float], int]]) -> dict[str, float]:
    """Pool the reward pipeline's per-process metrics (``RewardScores.metrics``) into the global ones.

    ``<name>/mean``, ``<name>/std`` and ``<name>/none_fraction`` describe the n = N_r (1 - none_fraction)
    applicable values of process r; pooling them is exact: the mean weighted by n, and the unbiased variance
    ``(sum (n_r - 1) s_r^2 + sum n_r (m_r - m)^2) / (n - 1)``. Failure counts add up; any other metric is
    averaged weighted by the N_r responses.

    Args:
        parts: per process, ``(metrics, N_r)``.
    """
    keys = list(dict.fromkeys(k for metrics, _ in parts for k in metrics))
    out: dict[str, float] = {}
    pooled_prefixes = {k.removesuffix("/mean") for k in keys if k.endswith("/mean")}
    for key in keys:
        prefix = key.rsplit("/", 1)[0]
        if prefix in pooled_prefixes and key.rsplit("/", 1)[1] in ("mean", "std"):
            continue  # pooled below
        present = [(m[key], n) for m, n in parts if key in m]
        if key.endswith("/failures"):
            out[key] = float(sum(v for v, _ in present))
        else:
            total = sum(n for _, n in present)
            out[key] = sum(v * n for v, n in present) / total if total else math.nan
    for prefix in pooled_prefixes:
        stats = []
        for metrics, n_rows in parts:
            if f"{prefix}/mean" not in metrics:
                continue
            none = metrics.get(f"{prefix}/none_fraction", 0.0)
            n = round(n_rows * (1.0 - none))
            if n:
                stats.append((n, metrics[f"{prefix}/mean"], metrics.get(f"{prefix}/std", 0.0)))
        n_total = sum(n for n, _, _ in stats)
        if not n_total:
            out[f"{prefix}/mean"], out[f"{prefix}/std"] = math.nan, math.nan
            continue
        mean = sum(n * m for n, m, _ in stats) / n_total
        out[f"{prefix}/mean"] = mean
        if n_total < 2:
            out[f"{prefix}/std"] = 0.0
        else:
            within = sum((n - 1) * s * s for n, _, s in stats if n > 1)
            between = sum(n * (m - mean) ** 2 for n, m, _ in stats)
            out[f"{prefix}/std"] = math.sqrt((within + between) / (n_total - 1))
    return out


def check_splittable(config: GRPOConfig | PPOConfig, world_size: int) -> None:
    """Reject a config that cannot run on ``world_size`` processes, naming the field (nothing to check for 1).

    Raises:
        ValueError: a batch or minibatch that does not split evenly, dynamic sampling, or PPO with a value
            head on the policy's body.
    """
    from grpokit.config import PPOConfig

    W = world_size
    if W == 1:
        return
    if getattr(config.algorithm, "dynamic_sampling", False):
        raise ValueError(
            "algorithm.dynamic_sampling draws a data-dependent number of rounds per process; it runs in one "
            "process only"
        )
    if isinstance(config, PPOConfig) and config.algorithm.value_model == "shared":
        raise ValueError(
            "algorithm.value_model 'shared' with several processes: the value head shares the policy's body, "
            "which is wrapped for data parallelism once; use value_model: separate"
        )
    shard_bounds(config.data.prompts_per_step, 0, W)
    N = config.num_responses
    mini = config.optim.mini_batch_size or N
    local_mini = shard_bounds(mini, 0, W, what="optim.mini_batch_size (default N = B*G)")[1]
    if local_mini % config.optim.gradient_accumulation_steps:
        raise ValueError(
            f"each process's minibatch ({mini} / {W} processes = {local_mini} responses) must be divisible "
            f"by optim.gradient_accumulation_steps ({config.optim.gradient_accumulation_steps})"
        )


# ---------------------------------------------------------------------------------------------------------
# The process group, as the trainer sees it
# ---------------------------------------------------------------------------------------------------------


class DataParallel:
    """This process's place among the W training processes, and the few collectives a GRPO step needs.

    ``DataParallel()`` is the single-process case: every method is the local operation and accelerate is not
    imported. :meth:`from_config` builds an ``accelerate.Accelerator`` when a launcher started several
    processes (or asked for DeepSpeed / FSDP).

    Args:
        accelerator: an ``accelerate.Accelerator``, or None for one process.
    """

    def __init__(self, accelerator: Any = None):
        self.accelerator = accelerator
        if accelerator is None:
            self.rank, self.world_size, self.device = 0, 1, None
            self.engine = "single"
        else:
            self.rank = accelerator.process_index
            self.world_size = accelerator.num_processes
            self.device = accelerator.device
            self.engine = str(accelerator.distributed_type).rsplit(".", 1)[-1].lower()

    @classmethod
    def from_config(
        cls, config: GRPOConfig | PPOConfig, environ: dict[str, str] | None = None
    ) -> DataParallel:
        """The process group a launcher set up (accelerate reads the environment), or the single process.

        Raises:
            ValueError: the config cannot be split across the launched processes (see :meth:`check_config`).
        """
        if not launched_distributed(environ):
            return cls()
        from accelerate import Accelerator
        from accelerate.utils import DistributedType

        device = config.model.device
        cpu = device == "cpu" or (device == "auto" and not torch.cuda.is_available())
        if not cpu and device not in ("auto", "cuda"):
            raise ValueError(
                f"model.device {device!r}: with several processes each uses its own GPU (cuda:LOCAL_RANK); "
                "set model.device to auto or cuda"
            )
        # gradient_accumulation_steps: accelerate's accumulate() then syncs gradients (DDP all-reduce,
        # DeepSpeed step) exactly on the last micro-batch of each minibatch.
        accelerator = Accelerator(
            cpu=cpu, gradient_accumulation_steps=config.optim.gradient_accumulation_steps
        )
        parallel = cls(accelerator)
        if accelerator.distributed_type == DistributedType.DEEPSPEED:
            _fill_deepspeed_config(
                accelerator.state.deepspeed_plugin.deepspeed_config, config, parallel.world_size
            )
        parallel.check_config(config)
        if parallel.shards_optimizer and (config.checkpoint.save_steps or config.checkpoint.resume):
            raise ValueError(
                f"checkpoint.save_steps / checkpoint.resume with {parallel.engine}: the optimizer state is "
                "sharded across processes, and grpokit checkpoints (which hold it whole) support DDP only; "
                "with DeepSpeed or FSDP set checkpoint.save_steps: 0 (the final model is still saved whole)"
            )
        return parallel

    @property
    def is_main(self) -> bool:
        """Rank 0: the only process that writes logs, reports and checkpoints."""
        return self.rank == 0

    @property
    def is_distributed(self) -> bool:
        return self.accelerator is not None and self.world_size > 1

    def check_config(self, config: GRPOConfig | PPOConfig) -> None:
        """Reject what cannot be split across ``world_size`` processes, naming the field."""
        check_splittable(config, self.world_size)

    # -- collectives -----------------------------------------------------------------------------------

    def all_reduce_sum(self, values: torch.Tensor) -> torch.Tensor:
        """Element-wise sum over processes (float64 on this process's device, returned on CPU)."""
        if not self.is_distributed:
            return values.double().cpu()
        from accelerate.utils import reduce

        return reduce(values.double().to(self.device), reduction="sum").cpu()

    def all_true(self, flag: bool) -> bool:
        """True when ``flag`` holds on every process (so they all take the same branch)."""
        if not self.is_distributed:
            return bool(flag)
        return bool(self.all_reduce_sum(torch.tensor([0.0 if flag else 1.0]))[0] == 0)

    def all_gather(self, values: torch.Tensor) -> torch.Tensor:
        """Concatenate each process's ``values`` along dim 0, in rank order (sizes may differ).

        Returns:
            (sum_r n_r, ...) on CPU.
        """
        if not self.is_distributed:
            return values.cpu()
        from accelerate.utils import gather, pad_across_processes

        local = values.to(self.device)
        sizes = gather(torch.tensor([local.shape[0]], device=self.device)).cpu().tolist()  # (W,)
        padded = gather(pad_across_processes(local, dim=0)).cpu()  # (W * max_n, ...)
        width = max(sizes)
        return torch.cat([padded[r * width : r * width + n] for r, n in enumerate(sizes)])

    def gather_object(self, obj: T) -> list[T]:
        """Every process's (picklable) ``obj``, in rank order, on every process."""
        if not self.is_distributed:
            return [obj]
        from accelerate.utils import gather_object

        return gather_object([obj])

    def broadcast_object(self, obj: T) -> T:
        """Rank 0's ``obj`` on every process."""
        if not self.is_distributed:
            return obj
        from accelerate.utils import broadcast_object_list

        return broadcast_object_list([obj], from_process=0)[0]

    def barrier(self) -> None:
        if self.is_distributed:
            self.accelerator.wait_for_everyone()

    def close(self) -> None:
        """Leave the process group together after a finished run.

        Without it each process tears its gloo/NCCL group down at interpreter exit, in whatever order the
        processes end; a rank whose peer has already gone can then abort in the group's destructor
        (``terminate called without an active exception``, SIGABRT) although training finished.
        """
        if not self.is_distributed:
            return
        import gc

        import torch.distributed as dist

        # The DDP wrappers accelerate keeps hold the group: release them first, so that destroying the group
        # really ends its threads now, not in a destructor at interpreter exit.
        self.accelerator.free_memory()
        gc.collect()
        self.accelerator.wait_for_everyone()
        if dist.is_initialized():
            dist.destroy_process_group()

    def on_main(self, fn: Callable[[], T]) -> T:
        """Run ``fn`` on rank 0 only; every process returns its result, or raises its error.

        An exception on rank 0 is sent to the others and raised there too, so no process is left waiting
        in a collective for a rank that already failed.
        """
        if not self.is_distributed:
            return fn()
        outcome: tuple[bool, Any] = (True, None)
        if self.is_main:
            try:
                outcome = (True, fn())
            except Exception as err:  # noqa: BLE001  (re-raised below, on every process)
                outcome = (False, err)
        ok, value = self.broadcast_object(outcome)
        if not ok:
            raise value
        return value

    # -- training --------------------------------------------------------------------------------------

    def prepare(
        self, model: torch.nn.Module, optimizer: torch.optim.Optimizer
    ) -> tuple[torch.nn.Module, Any]:
        """The model and optimizer to train with: DDP / DeepSpeed / FSDP2-wrapped by accelerate, or as given.

        Keep using the unwrapped model for sampling, no-grad passes and saving; gradients flow through the
        wrapped one. The learning-rate scheduler stays on the plain optimizer (accelerate's scheduler wrapper
        would step it once per process).
        """
        if self.accelerator is None:
            return model, optimizer
        return self.accelerator.prepare(model, optimizer)

    def unwrap(self, model: torch.nn.Module) -> torch.nn.Module:
        return model if self.accelerator is None else self.accelerator.unwrap_model(model)

    def micro_batches(self, models: Sequence[torch.nn.Module], minibatch: Sequence[T]) -> Iterator[T]:
        """Iterate a minibatch's micro-batches; with accelerate each one runs inside ``accumulate(*models)``.

        The loop body (forward and backward) executes while the generator is suspended inside the context,
        so DDP all-reduces (and DeepSpeed steps) only after the last micro-batch. Every process must run the
        body for every micro-batch, even one without loss tokens (see :meth:`backward`).
        """
        if self.accelerator is None:
            yield from minibatch
            return
        for item in minibatch:
            with self.accelerator.accumulate(*models):
                yield item

    @property
    def runs_empty_micro_batches(self) -> bool:
        """With several processes a micro-batch without loss tokens still runs forward and backward (with a
        zero loss), because the others' gradient synchronisation waits for this one."""
        return self.is_distributed

    def backward(self, loss: torch.Tensor) -> None:
        """``loss.backward()``, through accelerate when it manages the model.

        accelerate divides by its ``gradient_accumulation_steps`` (and DeepSpeed by its own, equal one); the
        micro-batch weights already make the sum the minibatch loss, so that division is undone here.
        """
        if self.accelerator is None:
            loss.backward()
            return
        self.accelerator.backward(loss * self.accelerator.gradient_accumulation_steps)

    @property
    def shards_weights(self) -> bool:
        """DeepSpeed ZeRO-3 or FSDP: no process holds the full weights between steps."""
        if self.accelerator is None:
            return False
        from accelerate.utils import DistributedType

        kind = self.accelerator.distributed_type
        return kind == DistributedType.FSDP or (
            kind == DistributedType.DEEPSPEED and self.accelerator.state.deepspeed_plugin.zero_stage == 3
        )

    @property
    def shards_optimizer(self) -> bool:
        """DeepSpeed (any ZeRO stage) or FSDP: the optimizer state lives in shards, not in ``optimizer``."""
        if self.accelerator is None:
            return False
        from accelerate.utils import DistributedType

        return self.accelerator.distributed_type in (DistributedType.FSDP, DistributedType.DEEPSPEED)

    @contextmanager
    def generation(self, model: torch.nn.Module) -> Iterator[None]:
        """Make ``model``'s full weights available to a local (collective-free) decode loop.

        DDP and ZeRO-1/2 keep the full weights on every process already. ZeRO-3 and FSDP2 shard them, and
        their forward would all-gather layer by layer, a collective that hangs once the processes' decode
        loops stop at different lengths. So they are gathered once for the whole of sampling: ZeRO-3 with
        ``deepspeed.zero.GatheredParameters`` (as TRL does), FSDP2 with :func:`unsharded`. Sampling then
        holds a full copy of the weights on each process for its duration.
        """
        if self.accelerator is None:
            yield
            return
        from accelerate.utils import DistributedType

        kind = self.accelerator.distributed_type
        if kind == DistributedType.DEEPSPEED and self.accelerator.state.deepspeed_plugin.zero_stage == 3:
            import deepspeed

            with deepspeed.zero.GatheredParameters(list(model.parameters())):
                yield
            return
        with unsharded(model):
            yield

    def full_state_dict(self, model: torch.nn.Module) -> dict[str, torch.Tensor] | None:
        """The full weights to save when they are sharded (ZeRO-3, FSDP2), on rank 0; None otherwise.

        Every process must call it (the shards are gathered). With one process, DDP or ZeRO-1/2, rank 0
        holds the full weights already and the caller saves the unwrapped model as it is.
        """
        if not self.shards_weights:
            return None
        state = self.accelerator.get_state_dict(model)
        return state if self.is_main else None


def _fill_deepspeed_config(ds: dict[str, Any], config: GRPOConfig | PPOConfig, world_size: int) -> None:
    """Complete a DeepSpeed config from grpokit's: the micro-batch size (DeepSpeed's bookkeeping; grpokit
    feeds its own micro-batches) and the clipping norm, which DeepSpeed applies in its step.

    Raises:
        ValueError: a ``gradient_clipping`` that contradicts ``optim.max_grad_norm``.
    """
    N = config.num_responses
    local_mini = (config.optim.mini_batch_size or N) // world_size
    if ds.get("train_micro_batch_size_per_gpu", "auto") == "auto":
        ds["train_micro_batch_size_per_gpu"] = max(1, local_mini // config.optim.gradient_accumulation_steps)
    clipping = ds.get("gradient_clipping", "auto")
    wanted = (
        config.optim.max_grad_norm if config.optim.max_grad_norm is not None else 0.0
    )  # 0: DeepSpeed's "off"
    if clipping == "auto":
        ds["gradient_clipping"] = wanted
    elif float(clipping) != wanted:
        raise ValueError(
            f"optim.max_grad_norm ({config.optim.max_grad_norm}) differs from DeepSpeed's gradient_clipping "
            f"({clipping}); DeepSpeed clips in its own step, so set them equal (or gradient_clipping: auto)"
        )


@contextmanager
def unsharded(model: torch.nn.Module) -> Iterator[None]:
    """FSDP2: all-gather every ``fully_shard``-ed module's parameters once and keep them whole inside.

    Each module is unsharded and told not to reshard after its forward, so any number of forwards (a decode
    loop that stops when this process's rows are done) issues no collective; on exit the parameters are
    resharded and ``reshard_after_forward`` is set back to True (accelerate's and torch's default). No-op
    for a model without FSDP2 modules.
    """
    try:
        from torch.distributed.fsdp import FSDPModule
    except ImportError:  # a torch build without distributed
        yield
        return
    modules = [m for m in model.modules() if isinstance(m, FSDPModule)]
    for module in modules:
        module.set_reshard_after_forward(False, recurse=False)
        module.unshard()
    try:
        yield
    finally:
        for module in modules:
            module.reshard()
            module.set_reshard_after_forward(True, recurse=False)


# ---------------------------------------------------------------------------------------------------------
# Sampling and advantages across processes
# ---------------------------------------------------------------------------------------------------------


def split_num_processes(argv: Sequence[str]) -> tuple[list[str], int | None]:
    """Take ``--num_processes N`` (``--num-processes``, ``=N``) out of ``argv``; returns (rest, N or None)."""
    rest: list[str] = []
    found: int | None = None
    args = list(argv)
    i = 0
    while i < len(args):
        arg = args[i]
        key, eq, value = arg.partition("=")
        if key in ("--num_processes", "--num-processes"):
            if not eq:
                if i + 1 >= len(args):
                    raise ValueError(f"{key} needs a value")
                value = args[i + 1]
                i += 1
            try:
                found = int(value)
            except ValueError:
                raise ValueError(f"{key} must be an integer, got {value!r}") from None
            if found < 1:
                raise ValueError(f"{key} must be >= 1, got {found}")
        else:
            rest.append(arg)
        i += 1
    return rest, found


def accelerate_launch_command(
    num_processes: int, grpokit_args: Sequence[str], port: int | None = None
) -> list[str]:
    """``accelerate launch`` of ``python -m grpokit ARGS`` on ``num_processes`` local processes (DDP).

    ``--multi_gpu`` is accelerate's launcher for several local processes (torchrun); without a GPU each one
    runs on the CPU with the gloo backend (the trainer asks accelerate for the CPU). ``port`` (default: a
    free one) is the rendezvous port, so that concurrent runs do not collide on accelerate's 29500.
    """
    import sys

    if port is None:
        import socket

        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", str(num_processes)]
    launch += ["--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no"]
    launch += ["--main_process_port", str(port)]
    if num_processes > 1:
        launch.append("--multi_gpu")
    return [*launch, "-m", "grpokit", *grpokit_args]
