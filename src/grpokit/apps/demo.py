"""The built-in demo: GRPO that visibly learns on a laptop CPU, from nothing but grpokit itself.

Users run RL because they can *check* answers but have no perfect demonstrations. The demo shows exactly
that. ``grpokit demo`` (or ``grpokit train`` with no model) runs, for the built-in task (``data.task``):

1. build a tiny causal LM from a transformers config and a character tokenizer
   (:mod:`grpokit.models.tiny`; nothing is downloaded);
2. warm it up by imitating the task's *flawed* teacher (:mod:`grpokit.trainers.sft`; for ``addition`` the
   teacher drops the carry from the tens into the hundreds, wrong on 49.5% of problems), until its greedy
   answers reproduce the teacher's on ``demo.sft_stop_accuracy`` of validation problems;
3. measure held-out accuracy with the true checker (the task's ``test`` split, never trained on);
4. train with GRPO, the task's checker as the only reward, measuring held-out accuracy every
   ``demo.eval_every`` steps;
5. measure held-out accuracy again, print before/after, and write ``RUN_DIR/demo_summary.json``;
6. with ``demo.control``, the honest control: as many more supervised steps on the teacher's
   demonstrations, evaluated at the same steps. Imitation cannot beat its teacher, so it stays flat.

Steps 1-2 are cached under ``$GRPOKIT_CACHE/demo`` (default ``~/.cache/grpokit/demo``), keyed by every
setting they depend on, so a second run starts at step 3.

Choices, numbered:

1. The warm-up stops on a threshold, not after a fixed number of steps: imitation accuracy stays near 0
   for a few hundred steps, then jumps within ~100-200 steps, at a step that depends on the seed. A
   threshold checked every ``sft_eval_every`` steps gives the same kind of start whatever the seed.
2. The warm-up's threshold is on *imitation* accuracy (the greedy answer equals the teacher's), what a
   practitioner validates supervised training with; the checker is kept for the before/after numbers.
3. Held-out accuracy is reported on all problems and separately on those the teacher gets right and those
   it gets wrong: the gain GRPO makes is on the second group, which imitation never sees answered right.
4. Evaluation is greedy and draws nothing from the global RNG, so evaluating every ``eval_every`` steps
   does not change the training run: the same seed gives the same numbers with or without the curve.
5. ``demo.num_threads`` (default 1) is set for the duration of the demo and restored afterwards.
6. GRPO's learning rate and schedule come from ``demo.grpo_learning_rate`` / ``demo.grpo_lr_scheduler``
   (3e-4, linear decay) unless ``optim.learning_rate`` / ``optim.lr_scheduler`` are set explicitly: the
   general defaults (1e-4, constant) learn more slowly and less evenly across seeds on this model.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from grpokit.config import DemoGRPOConfig, DemoTrainConfig, GRPOConfig, OptimConfig, load_config, preset_path
from grpokit.engine.harness import RunHarness
from grpokit.tracking import ProgressBar
from grpokit.trainers.grpo import GRPOTrainer, TrainResult
from grpokit.trainers.step_log import StepRecord

__all__ = [
    "EVAL_SEED",
    "CurveTrainer",
    "DemoResult",
    "cache_dir",
    "continue_imitation",
    "console",
    "demo_config",
    "demo_optim",
    "on_warm_model",
    "format_summary",
    "held_out_metrics",
    "held_out_problems",
    "imitation_accuracy",
    "prepare_demo_model",
    "read_warmup_info",
    "run_control",
    "run_summary",
    "run_demo",
    "save_model_dir",
    "torch_threads",
    "warmup_problems",
]

EVAL_SEED = 0
"""Seed of the held-out problems: the task's ``test`` split, disjoint from ``train`` whatever the seeds
(``grpokit eval`` reports on the same problems)."""

WARMUP_RECIPE = 2
"""Version of the warm-up recipe, part of the cache key: bumped when the recipe changes so that a model
cached by an older recipe is not reused."""

WARMUP_INFO = "warmup.json"  # in the cached model directory: how the warm-up went
WARMUP_STATE = (
    "warmup_state.pt"  # optimizer and batch RNG at the end of the warm-up (the control continues it)
)


@dataclass
class DemoResult:
    """What :func:`run_demo` measured; ``summary`` is what ``RUN_DIR/demo_summary.json`` holds."""

    before: dict[str, float]  # held-out metrics of the warmed-up model
    after: dict[str, float]  # held-out metrics after GRPO
    model_dir: Path  # the warmed-up starting point (cached)
    train_result: TrainResult
    curve: list[dict[str, float]] = field(default_factory=list)  # held-out accuracy every eval_every steps
    control: list[dict[str, float]] | None = None  # the same for the supervised control, when run
    summary: dict[str, Any] = field(default_factory=dict)


def cache_dir(name: str = "demo") -> Path:
    """``$GRPOKIT_CACHE/NAME`` or ``~/.cache/grpokit/NAME`` (``demo``; the multi-turn demo's is ``agent_demo``)."""
    root = os.environ.get("GRPOKIT_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "grpokit")
    return Path(root) / name


def held_out_problems(task: Any, n: int) -> list[dict[str, Any]]:
    """``n`` problems of the task's ``test`` split (never seen in training, which uses ``train``)."""
    return task.make_problems(n, seed=EVAL_SEED, split="test")


def warmup_problems(task: Any, config: DemoTrainConfig) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """``(train, validation)`` rows of the warm-up, both from the task's ``train`` split.

    The training rows are the ``data.num_train_problems`` prompts GRPO trains on too; the validation rows
    (``demo.sft_eval_problems``) come after them in the same seeded draw, so they are in neither training
    set nor in the held-out ``test`` split.
    """
    n_train, n_val = config.data.num_train_problems, config.demo.sft_eval_problems
    rows = task.make_problems(n_train + n_val, seed=config.seed, split="train")
    return rows[:n_train], rows[n_train:]


def _demo_task(config: DemoTrainConfig) -> str:
    """The built-in task the demo trains on and evaluates with (``data.task``)."""
    if config.data.task is None:
        raise ValueError(
            "data.task is unset: the demo warms up, trains and evaluates on a built-in task (e.g. addition)"
        )
    return config.data.task


@contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """``torch.set_num_threads(n)`` for the duration of the block, then the caller's count again."""
    previous = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def _greedy_completions(model: Any, tokenizer: Any, prompts: Sequence[Any], max_new_tokens: int) -> list[str]:
    from grpokit.rollout import TransformersSampler

    sampler = TransformersSampler(model, tokenizer, max_new_tokens=max_new_tokens, temperature=0.0)
    completions: list[str] = []
    for start in range(0, len(prompts), 128):
        completions += sampler.generate(list(prompts[start : start + 128]), 1).completions
    return completions


def imitation_accuracy(
    model: Any, tokenizer: Any, task: Any, rows: Sequence[dict[str, Any]], max_new_tokens: int
) -> float:
    """Fraction of ``rows`` whose greedy completion equals the teacher's demonstration (stripped)."""
    if not rows:
        raise ValueError("rows is empty: no validation problems to measure imitation on")
    completions = _greedy_completions(model, tokenizer, [row["prompt"] for row in rows], max_new_tokens)
    same = [c.strip() == task.teacher_completion(row).strip() for c, row in zip(completions, rows)]
    return sum(same) / len(same)


def held_out_metrics(
    model: Any,
    tokenizer: Any,
    task: Any,
    rows: Sequence[dict[str, Any]],
    *,
    k: int = 1,
    max_new_tokens: int,
    seed: int = 0,
) -> dict[str, float]:
    """:func:`grpokit.apps.evaluation.evaluate` on ``rows``, split by whether the task's teacher gets them right.

    Returns:
        The metrics of ``evaluate`` over all rows (``accuracy``, and ``pass@k`` / ``sample_accuracy`` when
        ``k > 1``), plus ``accuracy/teacher_right`` and ``accuracy/teacher_wrong`` (greedy accuracy on each
        group) and ``teacher_wrong_fraction``. Each group is evaluated once and the overall numbers are
        their problem-weighted means, so nothing is generated twice.
    """
    from grpokit.apps.evaluation import evaluate

    groups: dict[str, list[dict[str, Any]]] = {"teacher_right": [], "teacher_wrong": []}
    for row in rows:
        groups["teacher_wrong" if task.teacher_is_wrong(row) else "teacher_right"].append(row)
    total = len(rows)
    if total == 0:
        raise ValueError("rows is empty: nothing to evaluate")
    out: dict[str, float] = {}
    for name, group in groups.items():
        if not group:
            out[f"accuracy/{name}"] = float("nan")
            continue
        metrics = evaluate(model, tokenizer, group, task.check, k=k, max_new_tokens=max_new_tokens, seed=seed)
        out[f"accuracy/{name}"] = metrics["accuracy"]
        for key, value in metrics.items():
            if key in ("num_problems", "num_samples"):
                continue
            out[key] = out.get(key, 0.0) + value * len(group) / total
    out["num_problems"] = total
    out["teacher_wrong_fraction"] = len(groups["teacher_wrong"]) / total
    if k > 1:
        out["num_samples"] = k
    return {"accuracy": out.pop("accuracy"), **out}


def _warmup_key(config: DemoTrainConfig) -> str:
    from grpokit import __version__

    after_warmup = {"eval_k", "eval_every", "control", "num_threads", "grpo_learning_rate"}
    demo = config.demo.model_dump(exclude=after_warmup | {"grpo_lr_scheduler"})
    settings = {
        "recipe": WARMUP_RECIPE,
        "task": config.data.task,
        "problems": config.data.num_train_problems,
        "seed": config.seed,
        "max_new_tokens": config.generation.max_new_tokens,
        "demo": demo,
        "version": __version__,
    }
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]


def prepare_demo_model(config: DemoTrainConfig, log: Callable[[str], None] = print) -> Path:
    """Build and warm up the demo's tiny model (or reuse the cached one); returns its directory.

    The directory is a ``save_pretrained`` model and tokenizer, plus ``warmup.json`` (steps, stop reason,
    imitation-accuracy curve, seconds) and ``warmup_state.pt`` (what the control needs to continue).

    The warm-up shows a progress bar (loss and the last imitation accuracy in its postfix) unless
    ``logging.quiet`` or ``logging.json_logs``; without the bar each accuracy check is a line of ``log``.
    """
    from grpokit.data.tasks import get_task
    from grpokit.models.tiny import build_char_tokenizer, build_tiny_model
    from grpokit.trainers.sft import SupervisedTrainer

    demo = config.demo
    task_name = _demo_task(config)
    target = cache_dir() / f"sft-{_warmup_key(config)}"
    if (target / "config.json").is_file():
        log(f"warm-up: cached model {target}")
        return target
    task = get_task(task_name)
    with torch_threads(demo.num_threads):
        tokenizer = build_char_tokenizer(task.alphabet)
        model = build_tiny_model(
            tokenizer,
            architecture=demo.architecture,
            hidden_size=demo.hidden_size,
            num_layers=demo.num_layers,
            num_heads=demo.num_heads,
            intermediate_size=demo.intermediate_size or 4 * demo.hidden_size,
            max_position_embeddings=256,
            seed=config.seed,
        )
        rows, validation = warmup_problems(task, config)
        examples = [(row["prompt"], task.teacher_completion(row)) for row in rows]
        trainer = SupervisedTrainer(
            model, tokenizer, examples, learning_rate=demo.sft_learning_rate, batch_size=demo.sft_batch_size,
            seed=config.seed, total_steps=demo.sft_steps,
        )  # fmt: skip
        n_params = sum(p.numel() for p in model.parameters())
        limit = demo.sft_max_steps if demo.sft_steps is None else demo.sft_steps
        goal = (
            f"until it reproduces the teacher on {demo.sft_stop_accuracy:.0%} of {len(validation)} "
            "validation problems"
            if demo.sft_steps is None
            else f"for {demo.sft_steps} steps"
        )
        log(
            f"warm-up: {n_params / 1e6:.2f}M-parameter {demo.architecture} imitating the teacher "
            f"({task.teacher_flaw}) on {len(examples)} demonstrations, {goal}"
        )
        started = time.perf_counter()
        curve: list[dict[str, float]] = []
        stop_reason = "fixed_steps" if demo.sft_steps is not None else "max_steps"
        loss = accuracy = float("nan")
        show_bar = not (config.logging.quiet or config.logging.json_logs)
        bar = ProgressBar(limit, enabled=show_bar, desc="warm-up")
        try:
            while trainer.steps_done < limit:
                loss = trainer.step()
                checked = demo.sft_steps is None and trainer.steps_done % demo.sft_eval_every == 0
                if checked:
                    accuracy = imitation_accuracy(
                        model, tokenizer, task, validation, config.generation.max_new_tokens
                    )
                    curve.append({"step": trainer.steps_done, "loss": loss, "imitation_accuracy": accuracy})
                    if not show_bar:
                        log(
                            f"warm-up: step {trainer.steps_done} loss {loss:.3f} imitation accuracy {accuracy:.3f}"
                        )
                bar.update(
                    {"loss": loss, "imitation_accuracy": accuracy}, keys=("loss", "imitation_accuracy")
                )
                if checked and accuracy >= demo.sft_stop_accuracy:
                    stop_reason = "threshold"
                    break
        finally:
            bar.close()
        seconds = time.perf_counter() - started
        if stop_reason == "max_steps":
            log(
                f"warm-up: imitation accuracy stayed below {demo.sft_stop_accuracy} for {limit} steps "
                "(demo.sft_max_steps); going on from there"
            )
        info = {
            "steps": trainer.steps_done, "stop_reason": stop_reason, "final_loss": loss, "seconds": seconds,
            "curve": curve, "parameters": n_params,
        }  # fmt: skip
        reached = "" if not curve else f", imitation accuracy {curve[-1]['imitation_accuracy']:.3f}"
        log(f"warm-up: done after {trainer.steps_done} steps in {seconds:.0f}s (loss {loss:.3f}{reached})")
        save_model_dir(target, model, tokenizer, info, trainer.state_dict())
    return target


def save_model_dir(
    target: Path, model: Any, tokenizer: Any, info: dict[str, Any], trainer_state: dict[str, Any]
) -> None:
    """Save a warmed-up model to ``target``: ``save_pretrained`` model and tokenizer, ``warmup.json``
    (``info``) and ``warmup_state.pt`` (``trainer_state``).

    Written aside and renamed: two demos started at once never see a half-written model; when another
    process saved the same ``target`` first (an identical model), this copy is dropped.
    """
    from grpokit.engine.checkpoint import save_pretrained

    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.parent / f".tmp-{target.name}-{os.getpid()}"
    save_pretrained(model, tokenizer, tmp)
    (tmp / WARMUP_INFO).write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
    torch.save(trainer_state, tmp / WARMUP_STATE)
    try:
        tmp.rename(target)
    except OSError:  # another process won the race with an identical model
        shutil.rmtree(tmp, ignore_errors=True)


class CurveTrainer(GRPOTrainer):
    """GRPO that also measures held-out metrics every ``eval_every`` steps and at the last step (a separate
    metrics row, ``eval/<key>``); ``describe(point)`` is the line ``log`` reports for each."""

    def __init__(
        self,
        config: GRPOConfig,
        *,
        measure: Callable[[], dict[str, float]],
        eval_every: int,
        log: Callable[[str], None],
        describe: Callable[[dict[str, float]], str],
        **kwargs: Any,
    ):
        super().__init__(config, **kwargs)
        self.measure = measure
        self.eval_every = eval_every
        self.report = log
        self.describe = describe
        self.curve: list[dict[str, float]] = []

    def log(self, run: RunHarness, step: int, record: StepRecord) -> dict[str, Any]:
        metrics = super().log(run, step, record)
        if self.eval_every and (step % self.eval_every == 0 or step == self.config.max_steps):
            point = self.measure()
            self.curve.append({"step": step, **point})
            run.log(step, {f"eval/{key}": value for key, value in point.items()}, progress=False)
            self.report(f"step {step}: {self.describe(point)}")
        return metrics


def _curve_point(metrics: dict[str, float]) -> dict[str, float]:
    return {key: metrics[key] for key in ("accuracy", "accuracy/teacher_right", "accuracy/teacher_wrong")}


def _accuracies(metrics: dict[str, Any]) -> str:
    """``0.504 (teacher right 0.943, teacher wrong 0.013)``, plus pass@k when measured."""
    extra = "".join(f", {key} {value:.3f}" for key, value in metrics.items() if key.startswith("pass@"))
    return (
        f"{metrics['accuracy']:.3f} (teacher right {metrics['accuracy/teacher_right']:.3f}, "
        f"teacher wrong {metrics['accuracy/teacher_wrong']:.3f}{extra})"
    )


def run_control(
    config: DemoTrainConfig,
    model_dir: str | os.PathLike,
    eval_rows: Sequence[dict[str, Any]],
    steps: int,
    eval_every: int,
    log: Callable[[str], None] = print,
) -> tuple[list[dict[str, float]], float]:
    """The supervised control: ``steps`` more warm-up steps from ``model_dir``, on the same demonstrations.

    It continues the warm-up (its optimizer state and batch RNG, when the directory has them) at the warm-up's
    learning rate, with ``prompts_per_step * num_generations`` examples a step when the config has groups
    (as many completions as a GRPO step trains on), else ``demo.sft_batch_size``.

    Returns:
        ``(curve, seconds)``: held-out accuracy at step 0, every ``eval_every`` steps and at the end, and the
        wall-clock seconds of the training steps (evaluation excluded).
    """
    from grpokit.data.tasks import get_task
    from grpokit.models.loading import load_model, load_tokenizer
    from grpokit.trainers.sft import SupervisedTrainer

    task = get_task(_demo_task(config))
    tokenizer = load_tokenizer(str(model_dir))
    model = load_model(str(model_dir), device=torch.device("cpu"))
    rows, _ = warmup_problems(task, config)
    examples = [(row["prompt"], task.teacher_completion(row)) for row in rows]
    num_generations = getattr(getattr(config, "algorithm", None), "num_generations", None)
    batch_size = (
        config.data.prompts_per_step * num_generations if num_generations else config.demo.sft_batch_size
    )
    trainer = SupervisedTrainer(
        model, tokenizer, examples, learning_rate=config.demo.sft_learning_rate, batch_size=batch_size,
        seed=config.seed,
    )  # fmt: skip

    def measure(step: int) -> dict[str, float]:
        metrics = held_out_metrics(
            model, tokenizer, task, eval_rows, max_new_tokens=config.generation.max_new_tokens
        )
        point = {"step": step, **_curve_point(metrics)}
        log(f"control: step {step}: held-out accuracy {_accuracies(point)}")
        return point

    return continue_imitation(trainer, Path(model_dir), steps, eval_every, measure)


def continue_imitation(
    trainer: Any, model_dir: Path, steps: int, eval_every: int, measure: Callable[[int], dict[str, float]]
) -> tuple[list[dict[str, float]], float]:
    """The control of a demo: ``steps`` more supervised steps continuing the cached warm-up's optimizer and
    batch RNG (``WARMUP_STATE`` in ``model_dir``, when present), with ``measure(step)`` at step 0, every
    ``eval_every`` steps and at the end. Returns the curve and the seconds the steps took (not the
    measurements)."""
    state_path = Path(model_dir) / WARMUP_STATE
    if state_path.is_file():  # constant learning rate, as the threshold-stopped warm-up had
        trainer.continue_from(torch.load(state_path, weights_only=True))
    curve = [measure(0)]
    seconds = 0.0
    for step in range(1, steps + 1):
        started = time.perf_counter()
        trainer.step()
        seconds += time.perf_counter() - started
        if (eval_every and step % eval_every == 0) or step == steps:
            curve.append(measure(step))
    return curve, seconds


def demo_config(overrides: dict[str, Any] | None = None) -> DemoGRPOConfig:
    """The demo preset (``grpokit/config/presets/demo.yaml``) with ``overrides``, validated."""
    return load_config(preset_path("demo"), overrides, cls=DemoGRPOConfig)


def run_demo(config: DemoGRPOConfig | None = None, log: Callable[[str], None] | None = None) -> DemoResult:
    """Warm up (cached), evaluate, train with GRPO on the task's checker, evaluate again; see the module.

    ``config``: the demo preset by default (:func:`demo_config`)."""
    config = config or demo_config()
    if log is None:
        log = (lambda _: None) if config.logging.quiet else console
    with torch_threads(config.demo.num_threads):
        return _run_demo(config, log)


def console(message: str) -> None:
    """Print ``message`` above any progress bar (the demos' default log)."""
    from tqdm.auto import tqdm

    tqdm.write(message)  # above the progress bar, not through it


def _run_demo(config: DemoGRPOConfig, log: Callable[[str], None]) -> DemoResult:
    from grpokit.data.tasks import get_task

    started = time.perf_counter()
    task = get_task(_demo_task(config))
    user_model = config.model.name_or_path is not None
    cached = not user_model and _warmup_is_cached(config)
    model_dir = Path(config.model.name_or_path or prepare_demo_model(config, log))
    warmup_seconds = time.perf_counter() - started
    config = on_warm_model(config, model_dir)
    log(
        f"GRPO: {config.max_steps} steps of {config.data.prompts_per_step} prompts x "
        f"{config.algorithm.num_generations} samples, learning rate {config.optim.learning_rate:g} "
        f"({config.optim.lr_scheduler}), reward: the task's checker"
    )
    eval_rows = held_out_problems(task, config.data.num_eval_problems)
    max_new_tokens = config.generation.max_new_tokens

    def measure() -> dict[str, float]:
        return _curve_point(
            held_out_metrics(trainer.model, trainer.tokenizer, task, eval_rows, max_new_tokens=max_new_tokens)
        )

    trainer = CurveTrainer(
        config, measure=measure, eval_every=config.demo.eval_every, log=log,
        describe=lambda point: f"held-out accuracy {_accuracies(point)}",
    )  # fmt: skip
    final_options = {"k": config.demo.eval_k, "max_new_tokens": max_new_tokens, "seed": config.seed}
    before = held_out_metrics(trainer.model, trainer.tokenizer, task, eval_rows, **final_options)
    log(f"held-out accuracy before GRPO: {_accuracies(before)}")
    grpo_started = time.perf_counter()
    result = trainer.train()
    grpo_seconds = time.perf_counter() - grpo_started
    after = held_out_metrics(trainer.model, trainer.tokenizer, task, eval_rows, **final_options)
    log(f"held-out accuracy after GRPO: {_accuracies(after)}")
    curve = [{"step": 0, **_curve_point(before)}, *trainer.curve]

    control, control_seconds = None, None
    if config.demo.control:
        log(f"control: {config.max_steps} more supervised steps on the teacher's demonstrations")
        control, control_seconds = run_control(
            config, model_dir, eval_rows, config.max_steps, config.demo.eval_every, log
        )

    summary = {
        "task": config.data.task,
        "teacher_flaw": getattr(task, "teacher_flaw", None),
        "teacher_error_rate": getattr(task, "teacher_error_rate", None),
        **run_summary(
            config, model_dir=model_dir, num_eval_problems=len(eval_rows), cached=None if user_model else cached,
            curve=curve, control=control, seconds=(warmup_seconds, grpo_seconds, control_seconds, started),
        ),
        "before": before,
        "after": after,
        "gain": after["accuracy"] - before["accuracy"],
    }  # fmt: skip
    (result.run_dir / "demo_summary.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    for line in format_summary(summary).splitlines():
        log(line)
    log(f"run directory: {result.run_dir}")
    return DemoResult(before, after, model_dir, result, curve, control, summary)


def run_summary(
    config: DemoTrainConfig,
    *,
    model_dir: Path,
    num_eval_problems: int,
    cached: bool | None,
    curve: list[dict[str, float]],
    control: list[dict[str, float]] | None,
    seconds: tuple[float | None, float, float | None, float],
) -> dict[str, Any]:
    """What every demo's ``demo_summary.json`` holds besides its own measurements: the seed, the warm-up
    (``cached`` None: the run started from the user's ``model.name_or_path``), GRPO's settings, the curves, and
    ``seconds`` given as (warm-up, GRPO, control, ``time.perf_counter()`` at the start)."""
    warmup_seconds, grpo_seconds, control_seconds, started = seconds
    return {
        "seed": config.seed,
        "num_eval_problems": num_eval_problems,
        "model_dir": str(model_dir),
        "warmup": None if cached is None else {**read_warmup_info(model_dir), "cached": cached},
        "grpo": {
            "steps": config.max_steps,
            "prompts_per_step": config.data.prompts_per_step,
            "num_generations": config.algorithm.num_generations,
            "learning_rate": config.optim.learning_rate,
            "lr_scheduler": config.optim.lr_scheduler,
        },
        "curve": curve,
        "control": None if control is None else {"steps": config.max_steps, "curve": control},
        "seconds": {
            "warmup": warmup_seconds,
            "grpo": grpo_seconds,
            "control": control_seconds,
            "total": time.perf_counter() - started,
        },
    }


def on_warm_model(config: DemoGRPOConfig, model_dir: Path) -> DemoGRPOConfig:
    """The demo's GRPO config: ``model_dir`` (the warmed-up model, or the user's) as the policy, and the demo's
    learning rate and schedule (:func:`demo_optim`)."""
    model = config.model.model_copy(update={"name_or_path": str(model_dir)})
    return config.model_copy(update={"model": model, "optim": demo_optim(config)})


def demo_optim(config: DemoTrainConfig) -> OptimConfig:
    """``config.optim`` with the demo's GRPO learning rate and schedule (``demo.grpo_learning_rate``,
    ``demo.grpo_lr_scheduler``) wherever the config does not set them explicitly.

    The general defaults (constant 1e-4) are kept for every other run; the demo's tiny model learns faster
    and more evenly across seeds with a higher peak that decays (see docs/demo.md).
    """
    optim = config.optim
    demo = {"learning_rate": config.demo.grpo_learning_rate, "lr_scheduler": config.demo.grpo_lr_scheduler}
    return optim.model_copy(update={k: v for k, v in demo.items() if k not in optim.model_fields_set})


def _warmup_is_cached(config: DemoTrainConfig) -> bool:
    return (cache_dir() / f"sft-{_warmup_key(config)}" / "config.json").is_file()


def read_warmup_info(model_dir: Path) -> dict[str, Any]:
    """``steps``, ``stop_reason`` and ``seconds`` of a cached warm-up (empty when it has no ``warmup.json``)."""
    path = model_dir / WARMUP_INFO
    if not path.is_file():  # cached by an older grpokit that did not write it
        return {}
    info = json.loads(path.read_text(encoding="utf-8"))
    return {key: info[key] for key in ("steps", "stop_reason", "seconds") if key in info}


def format_summary(summary: dict[str, Any]) -> str:
    """The before/after table printed at the end of the demo (``summary``: ``demo_summary.json``)."""
    before, after = summary["before"], summary["after"]
    wrong = before.get("teacher_wrong_fraction", float("nan"))
    rows = [("warm-started (imitation)", before), (f"after GRPO ({summary['grpo']['steps']} steps)", after)]
    if summary.get("control"):
        last = summary["control"]["curve"][-1]
        rows.append((f"control: {summary['control']['steps']} more supervised steps", last))
    lines = [
        f"held-out accuracy, {summary['num_eval_problems']} problems never trained on, greedy "
        f"(teacher {summary.get('teacher_flaw') or 'flawed'}):",
        f"  {'':<40} {'all':>6} {'teacher right':>14} {'teacher wrong':>14}",
        f"  {'':<40} {'':>6} {f'({1 - wrong:.0%})':>14} {f'({wrong:.0%})':>14}",
    ]
    for name, m in rows:
        lines.append(
            f"  {name:<40} {m['accuracy']:>6.3f} {m['accuracy/teacher_right']:>14.3f} "
            f"{m['accuracy/teacher_wrong']:>14.3f}"
        )
    lines.append(f"  GRPO gain: {summary['gain'] * 100:+.1f} points")
    return "\n".join(lines)
