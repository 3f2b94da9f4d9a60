"""One benchmark run of one system, in its own process: grpokit's GRPOTrainer or TRL's GRPOTrainer.

Each worker runs the workload's steps and returns, per step, wall-clock and process-CPU seconds split
into phases:

- ``generation``: grpokit ``sampler.generate`` / TRL ``_generate`` (prompt encoding, sampling, decoding
  the texts), timed by wrapping the method;
- ``reference_forward``: every forward of the reference model, timed by module hooks;
- ``policy_forward``: forwards of the policy with autograd on (the training forward), by module hooks;
- ``backward``: ``Tensor.backward`` (both trainers call it), by wrapping it;
- ``other``: the rest of the step (rewards, advantages, loss maths, optimizer, logging).

A step is measured from the start of one step to the start of the next (so logging between steps is
included for both systems); the last step has no successor and is not reported. Peak RSS is
``ru_maxrss`` of the worker process; the RSS after imports is sampled before the model is loaded.
"""

from __future__ import annotations

import os
import resource
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from bench_workload import Workload, addition_rows, digit_reward

PHASES = ("generation", "reference_forward", "policy_forward", "backward")


def rss_mib() -> float:
    """Current resident set size in MiB (from /proc, Linux)."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class PhaseClock:
    """Wall and CPU seconds per phase and per step. Phases do not nest: a phase started inside another one
    is ignored (e.g. the prompt prefill forward inside generation)."""

    def __init__(self) -> None:
        self.marks: list[tuple[float, float]] = []  # (wall, cpu) at each step start
        self.phases: list[dict[str, list[float]]] = []  # per step: name -> [wall, cpu]
        self.active: str | None = None
        self._start = (0.0, 0.0)

    def step_started(self) -> None:
        self.marks.append((time.perf_counter(), time.process_time()))
        self.phases.append({})

    def begin(self, name: str) -> bool:
        if self.active is not None or not self.phases:
            return False
        self.active = name
        self._start = (time.perf_counter(), time.process_time())
        return True

    def end(self, name: str) -> None:
        if self.active != name:
            return
        wall, cpu = time.perf_counter() - self._start[0], time.process_time() - self._start[1]
        slot = self.phases[-1].setdefault(name, [0.0, 0.0])
        slot[0] += wall
        slot[1] += cpu
        self.active = None

    @contextmanager
    def phase(self, name: str):
        owned = self.begin(name)
        try:
            yield
        finally:
            if owned:
                self.end(name)

    def steps(self) -> list[dict[str, Any]]:
        """One record per step that has a successor: wall, cpu and the phase split."""
        out = []
        for k in range(len(self.marks) - 1):
            wall = self.marks[k + 1][0] - self.marks[k][0]
            cpu = self.marks[k + 1][1] - self.marks[k][1]
            phases = {name: {"wall": v[0], "cpu": v[1]} for name, v in self.phases[k].items()}
            known_wall = sum(v["wall"] for v in phases.values())
            known_cpu = sum(v["cpu"] for v in phases.values())
            phases["other"] = {"wall": wall - known_wall, "cpu": cpu - known_cpu}
            out.append({"wall": wall, "cpu": cpu, "phases": phases})
        return out


def _wrap_method(obj: Any, name: str, clock: PhaseClock, phase: str) -> None:
    original = getattr(obj, name)

    def timed(*args: Any, **kwargs: Any) -> Any:
        with clock.phase(phase):
            return original(*args, **kwargs)

    setattr(obj, name, timed)


def _time_backward(clock: PhaseClock) -> None:
    import torch

    original = torch.Tensor.backward

    def timed(self: Any, *args: Any, **kwargs: Any) -> Any:
        with clock.phase("backward"):
            return original(self, *args, **kwargs)

    torch.Tensor.backward = timed


def _time_forwards(model: Any, clock: PhaseClock, phase: str, grad_only: bool) -> None:
    import torch

    def pre(module: Any, args: Any) -> None:
        if not grad_only or torch.is_grad_enabled():
            clock.begin(phase)

    def post(module: Any, args: Any, output: Any) -> None:
        clock.end(phase)

    model.register_forward_pre_hook(pre)
    model.register_forward_hook(post)


def timed_grpo_trainer(config: Any, clock: PhaseClock) -> Any:
    """A GRPOTrainer on the addition rows whose steps, generation, forwards and backward ``clock`` times."""
    from grpokit.trainers.grpo import GRPOTrainer

    class TimedTrainer(GRPOTrainer):
        def collect_rollouts(self, timer: Any) -> Any:
            clock.step_started()
            return super().collect_rollouts(timer)

    trainer = TimedTrainer(config, reward_funcs=[digit_reward], dataset=addition_rows())
    _wrap_method(trainer.sampler, "generate", clock, "generation")
    _time_forwards(trainer.model, clock, "policy_forward", grad_only=True)
    if trainer.reference is not None:
        _time_forwards(trainer.reference.model, clock, "reference_forward", grad_only=False)
    _time_backward(clock)
    return trainer


def run_grpokit(
    workload: Workload,
    model_dir: str,
    variant: str = "lean",
    threads: int = 1,
    generation: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """grpokit's GRPOTrainer on the workload.

    ``variant``: ``"lean"`` turns trackers off like TRL's ``report_to="none"``; ``"default"`` keeps the default
    logging (TensorBoard tracker and the HTML report); ``"checkpointing"`` adds gradient checkpointing;
    ``"microbatch"`` accumulates the gradient over 4 micro-batches of N/4 responses (same update).
    ``threads``: torch threads of the trainer; ``generation``: extra ``generation`` fields (e.g.
    ``{"async_rollouts": True}``)."""
    import torch

    torch.set_num_threads(threads)
    import grpokit.trainers.grpo  # noqa: F401  (the trainer's imports count in the post-import RSS)
    from grpokit.config import GRPOConfig

    rss_imports = rss_mib()
    w = workload
    clock = PhaseClock()
    logging = {"quiet": True, "output_dir": tempfile.mkdtemp(prefix="grpokit-bench-"), "log_sample_groups": 1}
    if variant != "default":
        logging.update(report_to=[], report=False)
    config = GRPOConfig.model_validate(
        {
            "seed": w.seed,
            "max_steps": w.steps,
            "model": {
                "name_or_path": model_dir,
                "device": "cpu",
                "mixed_precision": "bf16" if w.precision == "bf16" else "no",
            },
            "data": {"prompts_per_step": w.prompts},
            "generation": {
                "max_new_tokens": w.tokens, "min_new_tokens": w.tokens, "temperature": 1.0, **(generation or {}),
            },  # fmt: skip
            "optim": {
                "learning_rate": w.learning_rate,
                "adam_beta2": 0.999,
                "max_grad_norm": 1.0,
                "gradient_checkpointing": variant == "checkpointing",
                "gradient_accumulation_steps": 4 if variant == "microbatch" else 1,
            },
            "algorithm": {
                "num_generations": w.generations,
                "beta": w.beta,
                "num_iterations": 1,
                "loss_aggregation": "sequence_mean",
                "advantage_estimator": "grpo",
            },
            "logging": logging,
        }
    )

    trainer = timed_grpo_trainer(config, clock)
    rss_ready = rss_mib()
    trainer.train()
    return {"rss_imports_mib": rss_imports, "rss_ready_mib": rss_ready, "steps": clock.steps()}


def run_trl(workload: Workload, model_dir: str, variant: str = "lean", threads: int = 1) -> dict[str, Any]:
    """TRL's GRPOTrainer on the workload, with the same settings (TRL's defaults where speed is concerned).

    ``variant``: ``"lean"`` (``report_to="none"``), ``"checkpointing"`` (``gradient_checkpointing=True``) or
    ``"microbatch"`` (4 micro-batches of N/4 per optimizer step, the generation batch still N).
    ``threads``: torch threads."""
    import torch

    torch.set_num_threads(threads)
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    rss_imports = rss_mib()
    w = workload
    clock = PhaseClock()
    N = w.prompts * w.generations
    args = GRPOConfig(
        output_dir=tempfile.mkdtemp(prefix="trl-bench-"),
        seed=w.seed,
        max_steps=w.steps,
        per_device_train_batch_size=N // 4 if variant == "microbatch" else N,
        gradient_accumulation_steps=4 if variant == "microbatch" else 1,
        generation_batch_size=N,
        num_generations=w.generations,
        max_completion_length=w.tokens,
        generation_kwargs={"min_new_tokens": w.tokens},
        temperature=1.0,
        beta=w.beta,
        num_iterations=1,
        loss_type="grpo",
        scale_rewards="group",
        learning_rate=w.learning_rate,
        lr_scheduler_type="constant",
        max_grad_norm=1.0,
        bf16=w.precision == "bf16",
        use_cpu=True,
        gradient_checkpointing=variant == "checkpointing",
        report_to="none",
        save_strategy="no",
        logging_steps=1,
        disable_tqdm=True,
        dataloader_num_workers=0,
    )
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)

    class StepClock(TrainerCallback):
        def on_step_begin(self, *args: Any, **kwargs: Any) -> None:
            clock.step_started()

    trainer = GRPOTrainer(
        model=model,
        reward_funcs=digit_reward,
        args=args,
        train_dataset=Dataset.from_list(addition_rows()),
        processing_class=tokenizer,
        callbacks=[StepClock()],
    )
    _wrap_method(trainer, "_generate", clock, "generation")
    _time_forwards(trainer.model, clock, "policy_forward", grad_only=True)
    if trainer.ref_model is not None:
        _time_forwards(trainer.ref_model, clock, "reference_forward", grad_only=False)
    _time_backward(clock)
    rss_ready = rss_mib()
    trainer.train()
    return {"rss_imports_mib": rss_imports, "rss_ready_mib": rss_ready, "steps": clock.steps()}


SYSTEMS = {"grpokit": run_grpokit, "trl": run_trl}


def run_worker(system: str, workload: Workload, model_dir: str, variant: str) -> dict[str, Any]:
    """Run one system and add the process-level figures (peak RSS, load average, CPU model)."""
    load_before = os.getloadavg()
    start = time.perf_counter()
    result = SYSTEMS[system](workload, model_dir, variant)
    result.update(
        system=system,
        variant=variant,
        workload=workload.to_dict(),
        rss_peak_mib=peak_rss_mib(),
        load_before=load_before,
        load_after=os.getloadavg(),
        seconds_total=time.perf_counter() - start,
        pid=os.getpid(),
        model_dir=str(Path(model_dir)),
    )
    return result
