"""The multi-turn built-in demo: a tiny model learns, in minutes on one CPU core, to call a tool or to search.

``grpokit train --env calculator`` (or ``--env guess_number``; the presets ``agent_calculator`` and
``agent_guess_number``) mirrors the single-turn demo (:mod:`grpokit.apps.demo`) over whole episodes:

1. build a tiny causal LM and a character tokenizer whose chat template is
   :data:`~grpokit.models.tiny.CHAR_CHAT_TEMPLATE` (nothing is downloaded);
2. warm it up by imitating the environment's *flawed* teacher (:mod:`grpokit.agents.builtin`): whole
   conversations laid out exactly as the trainer's episode runner lays out an episode, trained on the
   assistant's tokens only (:func:`grpokit.trainers.sft.conversation_example`), for ``demo.sft_steps``
   steps. The calculator's teacher calls the tool on 30% of problems and guesses the rest; the guessing
   game's scans upwards from 1 with 30% random guesses;
3. measure held-out success on ``data.num_eval_problems`` rows of the environment's ``test`` split, greedy
   and sampled at temperature 1, played by the trainer's own :class:`~grpokit.trainers.episodes.EpisodeRunner`;
4. train with GRPO in the environment (``env.name``; the environment's reward is the only one), measuring
   held-out success every ``demo.eval_every`` steps;
5. measure again, print before/after, and write ``RUN_DIR/demo_summary.json``;
6. with ``demo.control``: as many more imitation steps on the teacher's conversations, evaluated the same way.

Steps 1-2 are cached under ``$GRPOKIT_CACHE/agent_demo``, keyed by every setting they depend on.

Choices, numbered:

1. The warm-up's loss is the mean over all trained tokens of a batch (``loss_reduction="token_mean"``), the
   log-likelihood of whole conversations. A per-conversation mean weighs a token by one over its
   conversation's length; the calculator teacher's tool calls make conversations 4x longer than its
   guesses, and the imitating model then called the tool on 8% of problems instead of the teacher's 30%.
2. The warm-up runs a fixed number of steps (``demo.sft_steps``), not until a threshold: the teachers are
   random, so "the greedy answer equals the teacher's" measures nothing.
3. Success is a positive return: both environments reward 1 for success and 0 otherwise. An episode cut
   by a limit (turns, tokens) counts as a failure.
4. Evaluation uses its own seeded samplers (``EVAL_SEED``), so it draws nothing from the training sampler or
   the global RNG: the same seed gives the same run with or without the periodic curve.
5. The guessing game needs its teacher's randomness: a deterministic teacher gives a deterministic policy,
   every episode of a group then gets the same reward, and GRPO's group-relative advantage is 0 (measured:
   no change in 100 steps).
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from grpokit.apps.demo import (
    CurveTrainer,
    DemoResult,
    cache_dir,
    console,
    continue_imitation,
    on_warm_model,
    run_summary,
    save_model_dir,
    torch_threads,
)
from grpokit.config import DemoGRPOConfig, load_config, preset_path
from grpokit.tracking import ProgressBar

__all__ = [
    "AGENT_DEMO_ENVIRONMENTS",
    "EVAL_SEED",
    "agent_demo_config",
    "build_agent_tokenizer",
    "format_agent_summary",
    "HeldOutEvaluator",
    "held_out_rows",
    "make_teacher",
    "prepare_agent_model",
    "run_agent_control",
    "run_agent_demo",
    "teacher_examples",
]

AGENT_DEMO_ENVIRONMENTS = ("calculator", "guess_number")
"""The built-in environments with a teacher, each with its preset ``agent_<name>``."""

EVAL_SEED = 0
"""Seed of the held-out rows (the environment's ``test`` split) and of the evaluation's samplers."""

WARMUP_RECIPE = 1
"""Version of the multi-turn warm-up recipe, part of the cache key."""

CACHE_NAME = "agent_demo"


def agent_demo_config(env: str = "calculator", overrides: dict[str, Any] | None = None) -> DemoGRPOConfig:
    """The preset ``agent_<env>`` with ``overrides``, validated."""
    if env not in AGENT_DEMO_ENVIRONMENTS:
        raise ValueError(
            f"no multi-turn demo for environment {env!r}; valid: {', '.join(AGENT_DEMO_ENVIRONMENTS)}"
        )
    return load_config(preset_path(f"agent_{env}"), overrides, cls=DemoGRPOConfig)


def build_agent_tokenizer() -> Any:
    """A character tokenizer over every character of the built-in environments, with the compact chat
    template :data:`~grpokit.models.tiny.CHAR_CHAT_TEMPLATE`."""
    from grpokit.agents.builtin import ALPHABET
    from grpokit.models.tiny import CHAR_CHAT_TEMPLATE, build_char_tokenizer

    tokenizer = build_char_tokenizer(ALPHABET)
    tokenizer.chat_template = CHAR_CHAT_TEMPLATE
    return tokenizer


def _env_name(config: DemoGRPOConfig) -> str:
    name = config.env.name
    if name not in AGENT_DEMO_ENVIRONMENTS:
        raise ValueError(
            f"env.name {name!r}: the multi-turn demo warms up on a built-in environment's teacher; valid: "
            f"{', '.join(AGENT_DEMO_ENVIRONMENTS)} (a model of your own: set model.name_or_path)"
        )
    return name


def make_teacher(config: DemoGRPOConfig) -> Any:
    """The flawed teacher of the config's built-in environment (``grpokit.agents.builtin.TEACHERS``)."""
    from grpokit.agents.builtin import TEACHERS

    return TEACHERS[_env_name(config)]()


def _make_env(config: DemoGRPOConfig) -> Any:
    from grpokit.agents.registry import environment_class

    return environment_class(_env_name(config))(**config.env.kwargs)


def held_out_rows(config: DemoGRPOConfig) -> list[dict[str, Any]]:
    """``data.num_eval_problems`` rows of the environment's ``test`` split (never trained on)."""
    from grpokit.agents.registry import environment_class

    cls: Any = environment_class(_env_name(config))
    return list(cls.make_rows(config.data.num_eval_problems, seed=EVAL_SEED, split="test"))


def _train_rows(config: DemoGRPOConfig) -> list[dict[str, Any]]:
    """The rows GRPO trains on (the trainer's own draw) and the warm-up imitates the teacher on."""
    from grpokit.agents.registry import environment_class

    cls: Any = environment_class(_env_name(config))
    return list(cls.make_rows(config.data.num_train_problems, seed=config.seed, split="train"))


def teacher_examples(config: DemoGRPOConfig, tokenizer: Any, rows: Sequence[dict[str, Any]]) -> list[Any]:
    """One teacher conversation per row (teacher seed ``config.seed * 10**6 + i``), as
    :class:`~grpokit.trainers.sft.TokenExample` in the episode runner's layout (the renderer gets the
    environment's tool schemas, as the runner's does)."""
    from grpokit.agents.chat import ChatRenderer
    from grpokit.agents.environment import tool_callables
    from grpokit.agents.tools import tool_schema
    from grpokit.trainers.sft import conversation_example

    teacher = make_teacher(config)
    stop = tokenizer.eos_token_id
    examples = []
    for i, row in enumerate(rows):
        env = _make_env(config)
        schemas = [tool_schema(tool) for tool in tool_callables(env)]
        renderer = ChatRenderer(
            tokenizer, [stop], tools=schemas, chat_template_kwargs=config.env.chat_template_kwargs
        )
        messages = teacher.episode(row, seed=config.seed * 10**6 + i, env=env).messages
        examples.append(conversation_example(renderer, tokenizer, messages, stop))
    return examples


def _warmup_key(config: DemoGRPOConfig) -> str:
    from grpokit import __version__
    from grpokit.agents.builtin import ALPHABET
    from grpokit.models.tiny import CHAR_CHAT_TEMPLATE

    after_warmup = {
        "eval_k",
        "eval_every",
        "control",
        "num_threads",
        "grpo_learning_rate",
        "grpo_lr_scheduler",
    }
    teacher = make_teacher(config)
    settings = {
        "recipe": WARMUP_RECIPE,
        "env": config.env.name,
        "env_kwargs": config.env.kwargs,
        "chat_template_kwargs": config.env.chat_template_kwargs,
        "teacher": [type(teacher).__name__, vars(teacher)],
        "problems": config.data.num_train_problems,
        "seed": config.seed,
        "demo": config.demo.model_dump(exclude=after_warmup),
        "alphabet": ALPHABET,
        "template": CHAR_CHAT_TEMPLATE,
        "version": __version__,
    }
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]


def _warmup_dir(config: DemoGRPOConfig) -> Path:
    return cache_dir(CACHE_NAME) / f"sft-{_warmup_key(config)}"


def prepare_agent_model(config: DemoGRPOConfig, log: Callable[[str], None] = print) -> Path:
    """Build and warm up the multi-turn demo's tiny model (or reuse the cached one); returns its directory:
    a ``save_pretrained`` model and tokenizer (chat template included), ``warmup.json`` (steps, loss curve,
    seconds) and ``warmup_state.pt`` (what the control continues from)."""
    from grpokit.models.tiny import build_tiny_model
    from grpokit.trainers.sft import SupervisedTrainer

    demo = config.demo
    target = _warmup_dir(config)
    if (target / "config.json").is_file():
        log(f"warm-up: cached model {target}")
        return target
    if demo.sft_steps is None:
        raise ValueError("demo.sft_steps is unset: the multi-turn warm-up runs a fixed number of steps")
    with torch_threads(demo.num_threads):
        started = time.perf_counter()
        tokenizer = build_agent_tokenizer()
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
        examples = teacher_examples(config, tokenizer, _train_rows(config))
        trainer = SupervisedTrainer(
            model, tokenizer, examples, learning_rate=demo.sft_learning_rate, batch_size=demo.sft_batch_size,
            seed=config.seed, total_steps=demo.sft_steps, loss_reduction="token_mean",
        )  # fmt: skip
        n_params = sum(p.numel() for p in model.parameters())
        log(
            f"warm-up: {n_params / 1e3:.0f}k-parameter {demo.architecture} imitating the teacher "
            f"({make_teacher(config).flaw}) on {len(examples)} conversations for {demo.sft_steps} steps"
        )
        curve: list[dict[str, float]] = []
        loss = float("nan")
        show_bar = not (config.logging.quiet or config.logging.json_logs)
        bar = ProgressBar(demo.sft_steps, enabled=show_bar, desc="warm-up")
        try:
            while trainer.steps_done < demo.sft_steps:
                loss = trainer.step()
                if trainer.steps_done % demo.sft_eval_every == 0:
                    curve.append({"step": trainer.steps_done, "loss": loss})
                bar.update({"loss": loss}, keys=("loss",))
        finally:
            bar.close()
        seconds = time.perf_counter() - started
        info = {
            "steps": trainer.steps_done, "stop_reason": "fixed_steps", "final_loss": loss, "seconds": seconds,
            "curve": curve, "parameters": n_params, "conversations": len(examples),
        }  # fmt: skip
        log(f"warm-up: done after {trainer.steps_done} steps in {seconds:.0f}s (loss {loss:.3f})")
        save_model_dir(target, model, tokenizer, info, trainer.state_dict())
    return target


class HeldOutEvaluator:
    """Held-out success of ``model`` on ``rows``, greedy and sampled at temperature 1: one episode per row,
    played by the trainer's episode runner (``env.*`` as configured).

    The two runners are kept across calls, so a tool's first failure is logged once, not at every
    measurement; the sampled runner is reseeded with ``seed`` at every call, so a model is always measured
    on the same draws.
    """

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        config: DemoGRPOConfig,
        rows: Sequence[dict[str, Any]],
        seed: int = EVAL_SEED,
    ):
        if not rows:
            raise ValueError("rows is empty: nothing to evaluate")
        self.rows = list(rows)
        self.seed = seed
        self.runners = {
            name: self._runner(model, tokenizer, config, temperature)
            for name, temperature in (("greedy", 0.0), ("sampled", 1.0))
        }

    def _runner(self, model: Any, tokenizer: Any, config: DemoGRPOConfig, temperature: float) -> Any:
        from grpokit.agents.registry import environment_factory
        from grpokit.engine.parallel import DataParallel
        from grpokit.rollout import TransformersSampler
        from grpokit.trainers.episodes import EpisodeRunner
        from grpokit.trainers.sharding import ShardedSampler

        env, max_new_tokens = config.env, config.generation.max_new_tokens
        sampler = TransformersSampler(
            model, tokenizer, max_new_tokens=max_new_tokens, temperature=temperature, seed=self.seed
        )
        return EpisodeRunner(
            environment_factory(_env_name(config), env.kwargs, adapter=env.adapter),
            tokenizer,
            ShardedSampler(sampler, DataParallel(), seed=self.seed),
            env,
            max_new_tokens=max_new_tokens,
            temperatures=torch.tensor([temperature]),
        )

    def __call__(self) -> dict[str, dict[str, float]]:
        """``{"greedy": metrics, "sampled": metrics}``, each: ``success`` (fraction of episodes with a positive
        return), ``turns`` (assistant turns per episode), ``tool_use`` (fraction of episodes that called a
        tool), ``truncated`` (fraction cut by a limit)."""
        out = {}
        for name, runner in self.runners.items():
            runner.turn_sampler.set_seed(self.seed)
            batch, scores = runner.run(self.rows, 1)
            conversations = batch.conversations or []
            turns = [sum(m["role"] == "assistant" for m in c) for c in conversations]
            called = [any(m.get("tool_calls") for m in c if m["role"] == "assistant") for c in conversations]
            out[name] = {
                "success": (scores.rewards > 0).float().mean().item(),
                "turns": sum(turns) / len(conversations),
                "tool_use": sum(called) / len(conversations),
                "truncated": batch.truncated.float().mean().item(),
            }
        return out


def _point(metrics: dict[str, Any]) -> dict[str, float]:
    """One point of a curve: greedy and sampled success, greedy tool use and turns."""
    greedy, sampled = metrics["greedy"], metrics["sampled"]
    return {
        "success/greedy": greedy["success"],
        "success/sampled": sampled["success"],
        "tool_use/greedy": greedy["tool_use"],
        "turns/greedy": greedy["turns"],
    }


def _describe(point: dict[str, float]) -> str:
    return (
        f"held-out success greedy {point['success/greedy']:.3f}, sampled {point['success/sampled']:.3f} "
        f"(greedy: tool use {point['tool_use/greedy']:.2f}, turns {point['turns/greedy']:.2f})"
    )


def run_agent_control(
    config: DemoGRPOConfig,
    model_dir: str | Path,
    eval_rows: Sequence[dict[str, Any]],
    steps: int,
    eval_every: int,
    log: Callable[[str], None] = print,
) -> tuple[list[dict[str, float]], float]:
    """The supervised control: ``steps`` more warm-up steps from ``model_dir`` on the teacher's
    conversations, ``prompts_per_step * num_generations`` conversations a step (as many episodes as a GRPO
    step trains on), at the warm-up's peak learning rate, continuing its Adam moments and batch RNG.

    Returns:
        ``(curve, seconds)``: held-out metrics (:func:`_point`) at step 0, every ``eval_every`` steps and at
        the end, and the wall-clock seconds of the training steps (evaluation excluded).
    """
    from grpokit.models.loading import load_model, load_tokenizer
    from grpokit.trainers.sft import SupervisedTrainer

    tokenizer = load_tokenizer(str(model_dir))
    model = load_model(str(model_dir), device=torch.device("cpu"))
    examples = teacher_examples(config, tokenizer, _train_rows(config))
    trainer = SupervisedTrainer(
        model, tokenizer, examples, learning_rate=config.demo.sft_learning_rate,
        batch_size=config.data.prompts_per_step * config.algorithm.num_generations, seed=config.seed,
        loss_reduction="token_mean",
    )  # fmt: skip
    evaluate = HeldOutEvaluator(model, tokenizer, config, eval_rows)

    def measure(step: int) -> dict[str, float]:
        point = {"step": step, **_point(evaluate())}
        log(f"control: step {step}: {_describe(point)}")
        return point

    return continue_imitation(trainer, Path(model_dir), steps, eval_every, measure)


def run_agent_demo(
    config: DemoGRPOConfig | None = None, log: Callable[[str], None] | None = None
) -> DemoResult:
    """Warm up (cached), evaluate, train with GRPO in the environment, evaluate again; see the module.

    ``config``: the ``agent_calculator`` preset by default (:func:`agent_demo_config`)."""
    config = config or agent_demo_config()
    if log is None:
        log = (lambda _: None) if config.logging.quiet else console
    with torch_threads(config.demo.num_threads):
        return _run_agent_demo(config, log)


def _run_agent_demo(config: DemoGRPOConfig, log: Callable[[str], None]) -> DemoResult:
    started = time.perf_counter()
    env_name = _env_name(config)
    user_model = config.model.name_or_path is not None
    cached = not user_model and (_warmup_dir(config) / "config.json").is_file()
    model_dir = Path(config.model.name_or_path or prepare_agent_model(config, log))
    warmup_seconds = time.perf_counter() - started
    config = on_warm_model(config, model_dir)
    log(
        f"GRPO in {env_name}: {config.max_steps} steps of {config.data.prompts_per_step} problems x "
        f"{config.algorithm.num_generations} episodes, learning rate {config.optim.learning_rate:g} "
        f"({config.optim.lr_scheduler}), reward: the environment's"
    )
    eval_rows = held_out_rows(config)

    def measure() -> dict[str, float]:
        return _point(evaluate())

    trainer = CurveTrainer(
        config, measure=measure, eval_every=config.demo.eval_every, log=log, describe=_describe
    )
    evaluate = HeldOutEvaluator(trainer.model, trainer.tokenizer, config, eval_rows)
    before = evaluate()
    log(f"before GRPO: {_describe(_point(before))}")
    grpo_started = time.perf_counter()
    result = trainer.train()
    grpo_seconds = time.perf_counter() - grpo_started
    after = evaluate()
    log(f"after GRPO: {_describe(_point(after))}")
    curve = [{"step": 0, **_point(before)}, *trainer.curve]

    control, control_seconds = None, None
    if config.demo.control:
        log(f"control: {config.max_steps} more supervised steps on the teacher's conversations")
        control, control_seconds = run_agent_control(
            config, model_dir, eval_rows, config.max_steps, config.demo.eval_every, log
        )

    teacher = make_teacher(config)
    teacher_success = sum(
        teacher.episode(row, seed=EVAL_SEED * 10**6 + i, env=_make_env(config)).reward > 0
        for i, row in enumerate(eval_rows)
    ) / len(eval_rows)
    summary = {
        "env": env_name,
        "teacher_flaw": teacher.flaw,
        "teacher_success": teacher_success,
        **run_summary(
            config, model_dir=model_dir, num_eval_problems=len(eval_rows), cached=None if user_model else cached,
            curve=curve, control=control, seconds=(warmup_seconds, grpo_seconds, control_seconds, started),
        ),
        "before": before,
        "after": after,
        "gain": after["greedy"]["success"] - before["greedy"]["success"],
    }  # fmt: skip
    (result.run_dir / "demo_summary.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    for line in format_agent_summary(summary).splitlines():
        log(line)
    log(f"run directory: {result.run_dir}")
    return DemoResult(_point(before), _point(after), model_dir, result, curve, control, summary)


def format_agent_summary(summary: dict[str, Any]) -> str:
    """The before/after table printed at the end of the multi-turn demo (``summary``: ``demo_summary.json``)."""
    rows = [
        ("warm-started (imitation)", _point(summary["before"])),
        (f"after GRPO ({summary['grpo']['steps']} steps)", _point(summary["after"])),
    ]
    if summary.get("control"):
        rows.append(
            (f"control: {summary['control']['steps']} more supervised steps", summary["control"]["curve"][-1])
        )
    lines = [
        f"held-out success in {summary['env']}, {summary['num_eval_problems']} problems never trained on "
        f"(teacher {summary['teacher_flaw']}: success {summary['teacher_success']:.3f}):",
        f"  {'':<40} {'greedy':>7} {'sampled':>8} {'tool use':>9} {'turns':>6}",
    ]
    for name, point in rows:
        lines.append(
            f"  {name:<40} {point['success/greedy']:>7.3f} {point['success/sampled']:>8.3f} "
            f"{point['tool_use/greedy']:>9.2f} {point['turns/greedy']:>6.2f}"
        )
    lines.append(f"  GRPO gain (greedy): {summary['gain'] * 100:+.1f} points")
    return "\n".join(lines)
