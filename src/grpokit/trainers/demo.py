"""The built-in demo: GRPO that visibly learns on a laptop CPU, from nothing but grpokit itself.

``grpokit demo`` (or ``grpokit train`` with no config) runs, for the built-in task (``data.task``):

1. build a tiny causal LM and a character tokenizer (:mod:`grpokit.models.tiny`);
2. warm it up with supervised learning on the task's *flawed* teacher demonstrations
   (:mod:`grpokit.trainers.sft`), so it answers in the right format but often wrongly;
3. measure held-out accuracy (the task's ``test`` split, disjoint from its ``train`` split);
4. train with GRPO, the task's checker as the reward;
5. measure held-out accuracy again and print before/after.

Steps 1-2 are cached under ``$GRPOKIT_CACHE/demo`` (default ``~/.cache/grpokit/demo``), keyed by every
setting they depend on, so a second run starts at step 3.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from grpokit.config import GRPOConfig
from grpokit.trainers.grpo import GRPOTrainer, TrainResult

__all__ = ["DemoResult", "EVAL_SEED", "cache_dir", "held_out_problems", "prepare_demo_model", "run_demo"]

EVAL_SEED = 0
"""Seed of the held-out problems: the task's ``test`` split, disjoint from ``train`` whatever the seeds
(``grpokit eval`` reports on the same problems)."""


@dataclass
class DemoResult:
    before: dict[str, float]  # held-out metrics of the warmed-up model
    after: dict[str, float]  # held-out metrics after GRPO
    model_dir: Path  # the warmed-up starting point (cached)
    train_result: TrainResult


def cache_dir() -> Path:
    """``$GRPOKIT_CACHE/demo`` or ``~/.cache/grpokit/demo``."""
    root = os.environ.get("GRPOKIT_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "grpokit")
    return Path(root) / "demo"


def held_out_problems(task: Any, n: int) -> list[dict[str, Any]]:
    """``n`` problems of the task's ``test`` split (never seen in training, which uses ``train``)."""
    return task.make_problems(n, seed=EVAL_SEED, split="test")


def _warmup_key(config: GRPOConfig) -> str:
    from grpokit import __version__

    settings = {
        "task": config.data.task,
        "problems": config.data.num_train_problems,
        "seed": config.seed,
        "demo": config.demo.model_dump(exclude={"eval_k"}),
        "version": __version__,
    }
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]


def prepare_demo_model(config: GRPOConfig, log: Callable[[str], None] = print) -> Path:
    """Build and warm up the demo's tiny model (or reuse the cached one); returns its directory."""
    from grpokit.data.tasks import get_task
    from grpokit.models.tiny import build_char_tokenizer, build_tiny_model
    from grpokit.trainers.checkpoint import save_pretrained
    from grpokit.trainers.sft import supervised_finetune

    demo = config.demo
    target = cache_dir() / f"sft-{_warmup_key(config)}"
    if (target / "config.json").is_file():
        log(f"warm-up: cached model {target}")
        return target
    task = get_task(config.data.task)
    tokenizer = build_char_tokenizer(task.alphabet)
    model = build_tiny_model(
        tokenizer,
        hidden_size=demo.hidden_size,
        num_layers=demo.num_layers,
        num_heads=max(1, demo.hidden_size // 16),
        intermediate_size=4 * demo.hidden_size,
        max_position_embeddings=256,
        seed=config.seed,
    )
    rows = task.make_problems(config.data.num_train_problems, seed=config.seed, split="train")
    examples = [(row["prompt"], task.teacher_completion(row)) for row in rows]
    log(f"warm-up: {demo.sft_steps} supervised steps on {len(examples)} teacher demonstrations")
    losses = supervised_finetune(
        model,
        tokenizer,
        examples,
        steps=demo.sft_steps,
        learning_rate=demo.sft_learning_rate,
        batch_size=demo.sft_batch_size,
        seed=config.seed,
    )
    if losses:
        log(f"warm-up: loss {losses[0]:.3f} -> {losses[-1]:.3f}")
    # Written aside and renamed: two demos started at once never see a half-written model.
    tmp = target.parent / f".tmp-{target.name}-{os.getpid()}"
    save_pretrained(model, tokenizer, tmp)
    try:
        tmp.rename(target)
    except OSError:  # another process won the race with an identical model
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def run_demo(config: GRPOConfig | None = None, log: Callable[[str], None] | None = None) -> DemoResult:
    """Warm up (cached), evaluate, train with GRPO on the task's checker, evaluate again."""
    from grpokit.data.tasks import get_task
    from grpokit.evaluation import evaluate

    config = config or GRPOConfig()
    if log is None:
        log = (lambda _: None) if config.logging.quiet else print
    task = get_task(config.data.task)
    model_dir = config.model.name_or_path or prepare_demo_model(config, log)
    config = config.model_copy(
        update={"model": config.model.model_copy(update={"name_or_path": str(model_dir)})}
    )
    trainer = GRPOTrainer(config)
    eval_rows = held_out_problems(task, config.data.num_eval_problems)
    k = config.demo.eval_k
    max_new_tokens = config.generation.max_new_tokens

    before = evaluate(
        trainer.model, trainer.tokenizer, eval_rows, task.check, k=k, max_new_tokens=max_new_tokens
    )
    log(f"held-out before GRPO: {_summary(before)}")
    result = trainer.train()
    after = evaluate(
        trainer.model, trainer.tokenizer, eval_rows, task.check, k=k, max_new_tokens=max_new_tokens
    )
    log(f"held-out after GRPO:  {_summary(after)}")
    report = {"task": config.data.task, "num_eval_problems": len(eval_rows), "before": before, "after": after}
    (result.run_dir / "demo.json").write_text(json.dumps(report, indent=2), encoding="utf-8")
    log(f"run directory: {result.run_dir}")
    return DemoResult(before, after, Path(model_dir), result)


def _summary(metrics: dict[str, Any]) -> str:
    return ", ".join(f"{k} {v:.3f}" if isinstance(v, float) else f"{k} {v}" for k, v in metrics.items())
