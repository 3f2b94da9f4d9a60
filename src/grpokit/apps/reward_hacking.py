"""Reward hacking, measured: GRPO and PPO optimise a learned proxy reward while the gold reward is logged.

``grpokit reward-hacking`` runs the over-optimisation experiment of Gao et al. (2022, arXiv 2210.10760) at
a size two CPU cores finish in minutes, on the built-in addition task, whose checker is a known **gold**
reward:

1. **Start policy.** The demo's warmed-up tiny model (:func:`grpokit.apps.demo.prepare_demo_model`: it
   imitates a teacher that drops one carry, so about half its answers are right), fine-tuned for
   ``verbose_steps`` more supervised steps on the same demonstrations, a ``verbose_fraction`` of which carry
   a suffix of 1 to ``max_suffix`` random digits after the answer. Its samples then vary in length, as a
   language model's do, so length is something RL can move.
2. **Preference pairs.** ``num_pairs`` pairs of two distinct completions sampled from the start policy for
   the same prompt, labelled by a *verbosity-biased labeller*: it follows the gold checker, except that on
   a ``length_bias`` fraction of the pairs where the checker prefers one side, and on every pair the checker
   ties (both right or both wrong), it prefers the longer completion (equal lengths: no pair). Human and
   model raters show this bias (Saito et al. 2023, arXiv 2310.10076; Singhal et al. 2023, arXiv
   2310.03716); here it is known and switchable, so the proxy is imperfect in a way a policy can exploit.
   Under the gold checker every completion with a suffix is wrong.
3. **Proxy reward model.** :func:`train_proxy_reward_model`: ``grpokit rm``'s trainer (the Bradley-Terry
   loss) on the pairs, a scalar head on the start policy's body, saved as a Hugging Face
   sequence-classification model with its reward normalised to mean 0 and std 1 on the pairs' texts (start
   policy samples), so PPO's KL penalty and GRPO's KL term weigh against rewards of one size.
4. **RL against the proxy.** :func:`grpokit.apps.compare.run_comparison` (``grpokit compare``'s matched
   settings and budgets; one fresh process per run) trains GRPO and PPO from the start policy for
   ``steps`` steps per seed, with ``rewards.reward_model`` = the proxy (weight 1) and the task's checker as
   a second reward function of weight 0: the gold is logged every step (``rewards/task/mean``) and never
   optimised. Every sampled completion is kept in ``samples.jsonl`` for the length and repetition measures.
5. **Analysis** (:mod:`grpokit.apps.reward_hacking_report`): proxy and gold against KL to the start policy
   and against steps, mean length, repeated n-gram rate, and the table of ``reward_hacking.md``.

Choices, numbered:

1. The proxy's flaw is constructed (the labeller's known verbosity bias) rather than left to chance: a tiny
   reward model trained on a few hundred pairs would pick up *some* shortcut, but which one, and whether a
   policy can reach it within a few hundred steps, would vary from seed to seed. A known flaw makes the
   hacking measurable and its mechanism checkable.
2. The reward model is trained once, with its own seed (``rm_seed``), and shared by every RL run: the seeds
   vary the RL only, so GRPO and PPO face the same proxy.
3. KL to the start policy per step is the logged ``kl`` (mean per-token k3 of the policy that sampled the
   step, against the start policy) times the step's mean completion length: an estimate of the KL per
   completion that Gao et al.'s curves use, for both systems alike. ``compare`` also measures the exact
   per-completion KL of the final policies on held-out prompts (``kl_to_initial``).
"""

from __future__ import annotations

import json
import math
import os
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

__all__ = [
    "HackingSetup",
    "collect_pairs",
    "label_pair",
    "reward_normalisation",
    "prepare_start_policy",
    "run_reward_hacking",
    "train_proxy_reward_model",
    "verbose_completion",
]


@dataclass(frozen=True)
class HackingSetup:
    """The experiment's settings (the defaults are the documented run)."""

    seeds: tuple[int, ...] = (0, 1, 2)
    """One GRPO and one PPO run per seed."""
    steps: int = 200
    """RL steps per run (the matched budget: equal steps, so equal completions)."""
    prompts_per_step: int = 8
    """GRPO's B; PPO gets B*G prompts of one completion each (``grpokit compare``'s matching)."""
    num_generations: int = 8
    """GRPO's G."""
    base_model: str | None = None
    """The policy the start policy is fine-tuned from; None: the demo's warmed-up model (cached)."""
    max_new_tokens: int = 12
    """Completion limit: the 4-digit answer leaves 8 tokens of room to pad."""
    num_eval_problems: int = 200
    """Held-out problems of ``compare``'s final greedy accuracy and KL measurement."""
    verbose_fraction: float = 0.25
    """Share of the start policy's extra demonstrations that carry a random-digit suffix."""
    max_suffix: int = 4
    """Longest suffix of those demonstrations, in digits."""
    verbose_steps: int = 150
    """Supervised steps that teach the demo model the occasional suffix."""
    verbose_learning_rate: float = 1e-3
    """Learning rate of those steps."""
    num_pairs: int = 3000
    """Labelled preference pairs the proxy reward model sees."""
    length_bias: float = 0.1
    """Share of the labeller's decided pairs (one side right) on which it prefers the longer side."""
    rm_epochs: int = 6
    """Passes of the reward-model trainer over the pairs."""
    rm_learning_rate: float = 1e-3
    """The reward model's AdamW learning rate (constant)."""
    rm_batch_size: int = 32
    """Pairs per reward-model step."""
    rm_seed: int = 1234
    """Seed of the pairs and the reward model (fixed: every RL run faces the same proxy)."""
    held_out_pairs: int = 500
    """Pairs sampled and labelled the same way, never trained on: the proxy's pairwise accuracy."""


# ---------------------------------------------------------------------------------------------------------
# The start policy and the labeller
# ---------------------------------------------------------------------------------------------------------


def verbose_completion(answer: str, rng: random.Random, max_suffix: int) -> str:
    """``answer`` followed by 1 to ``max_suffix`` random digits (``"0579"`` -> ``"057931"``)."""
    if max_suffix < 1:
        raise ValueError(f"max_suffix must be >= 1, got {max_suffix}")
    return answer + "".join(rng.choice("0123456789") for _ in range(rng.randint(1, max_suffix)))


def label_pair(
    answer: str, first: str, second: str, *, length_bias: float, rng: random.Random
) -> tuple[str, str] | None:
    """The verbosity-biased labeller's ``(chosen, rejected)`` for two completions of one prompt.

    The gold checker (exact answer after stripping) decides, except that the longer completion is chosen
    on a ``length_bias`` fraction of the decided pairs (drawn from ``rng``) and whenever the checker ties.
    Identical completions, and ties of equal length, give no pair (None).
    """
    if not 0.0 <= length_bias <= 1.0:
        raise ValueError(f"length_bias must be in [0, 1], got {length_bias}")
    if first == second:
        return None
    right = (first.strip() == answer.strip(), second.strip() == answer.strip())
    longer = None if len(first) == len(second) else (first, second) if len(first) > len(second) else (second, first)
    if right[0] != right[1]:
        gold = (first, second) if right[0] else (second, first)
        return longer if longer is not None and rng.random() < length_bias else gold
    return longer


def prepare_start_policy(setup: HackingSetup, output_dir: Path, log: Callable[[str], None] = print) -> Path:
    """The demo's warmed-up model taught the occasional suffix (step 1 of the module); its directory.

    Reused when ``output_dir/start_policy`` already holds a model.
    """
    from grpokit.apps.demo import demo_config, prepare_demo_model, warmup_problems
    from grpokit.data.tasks import get_task
    from grpokit.engine.checkpoint import quiet_transformers, save_pretrained
    from grpokit.models.loading import load_model, load_tokenizer
    from grpokit.trainers.sft import supervised_finetune

    target = output_dir / "start_policy"
    if (target / "config.json").is_file():
        return target
    config = demo_config({"logging.quiet": True})
    demo_dir = setup.base_model or prepare_demo_model(config, log)
    task = get_task("addition")
    rows, _ = warmup_problems(task, config)
    rng = random.Random(f"verbose-{setup.rm_seed}")
    examples = []
    for row in rows:
        completion = task.teacher_completion(row)
        if rng.random() < setup.verbose_fraction:
            completion = verbose_completion(completion, rng, setup.max_suffix)
        examples.append((row["prompt"], completion))
    tokenizer = load_tokenizer(str(demo_dir))
    with quiet_transformers():
        model = load_model(str(demo_dir), device=torch.device("cpu"))
    log(
        f"start policy: {setup.verbose_steps} supervised steps on the demo model's demonstrations, "
        f"{setup.verbose_fraction:.0%} with a suffix of 1-{setup.max_suffix} random digits"
    )
    losses = supervised_finetune(
        model, tokenizer, examples, steps=setup.verbose_steps, learning_rate=setup.verbose_learning_rate,
        batch_size=128, seed=setup.rm_seed,
    )  # fmt: skip
    save_pretrained(model, tokenizer, target)
    (target / "start_policy.json").write_text(
        json.dumps({"demo_model": str(demo_dir), "final_loss": losses[-1] if losses else None}, indent=2) + "\n",
        encoding="utf-8",
    )
    return target


def collect_pairs(
    model_dir: str | os.PathLike, setup: HackingSetup, num_pairs: int, *, seed: int, split: str = "train"
) -> list[dict[str, Any]]:
    """``num_pairs`` labelled pairs (:func:`label_pair`) of start-policy samples, two per prompt, at
    temperature 1; rows ``{"prompt", "chosen", "rejected", "answer", "gold_agrees"}``, ``gold_agrees``
    telling whether the gold checker makes the same choice (False where it ties or disagrees). Pairs with an
    empty completion are skipped (a preference pair needs a response on both sides)."""
    from grpokit.data.tasks import get_task
    from grpokit.engine.checkpoint import quiet_transformers
    from grpokit.models.loading import load_model, load_tokenizer
    from grpokit.rollout import TransformersSampler

    task = get_task("addition")
    tokenizer = load_tokenizer(str(model_dir))
    with quiet_transformers():
        model = load_model(str(model_dir), device=torch.device("cpu"))
    sampler = TransformersSampler(
        model, tokenizer, max_new_tokens=setup.max_new_tokens, temperature=1.0, seed=seed
    )
    rng = random.Random(f"labeller-{seed}-{split}")
    pairs: list[dict[str, Any]] = []
    problems = task.make_problems(8 * num_pairs + 256, seed=seed + 7919, split=split)
    for start in range(0, len(problems), 256):
        chunk = problems[start : start + 256]
        completions = sampler.generate([row["prompt"] for row in chunk], 2).completions
        for i, row in enumerate(chunk):
            first, second = completions[2 * i], completions[2 * i + 1]
            if not (first.strip() and second.strip()):  # the reward-model trainer needs text on both sides
                continue
            labelled = label_pair(row["answer"], first, second, length_bias=setup.length_bias, rng=rng)
            if labelled is None:
                continue
            chosen, rejected = labelled
            gold_agrees = task.check(row["prompt"], chosen, row["answer"]) and not task.check(
                row["prompt"], rejected, row["answer"]
            )
            pairs.append(
                {"prompt": row["prompt"], "chosen": chosen, "rejected": rejected, "answer": row["answer"],
                 "gold_agrees": gold_agrees}
            )  # fmt: skip
            if len(pairs) == num_pairs:
                return pairs
    raise RuntimeError(
        f"only {len(pairs)} of {num_pairs} pairs from {len(problems)} prompts: the start policy's two "
        "samples are too often identical"
    )


# ---------------------------------------------------------------------------------------------------------
# The proxy reward model
# ---------------------------------------------------------------------------------------------------------


def train_proxy_reward_model(
    pairs: Sequence[dict[str, Any]],
    *,
    base_model: str | os.PathLike,
    output_dir: str | os.PathLike,
    epochs: int,
    learning_rate: float,
    batch_size: int,
    seed: int,
) -> Path:
    """Train the proxy on ``pairs`` (``{"prompt", "chosen", "rejected"}``) with ``grpokit rm``'s trainer:
    the Bradley-Terry loss ``-log sigmoid(r(x, y_chosen) - r(x, y_rejected))`` on a scalar head put on
    ``base_model``'s body, ``epochs`` passes of ``batch_size`` pairs a step (at most all of them), AdamW at a constant
    ``learning_rate``, and the reward normalised to mean 0 and std 1 on the training pairs' texts (saved with
    the model, applied by ``rewards.reward_model``). The pairs are written to ``output_dir/pairs.jsonl``,
    the file ``grpokit rm --train_file`` takes; the run goes to ``output_dir/rm``. Returns the trained
    model's directory (Hugging Face sequence-classification format).
    """
    from grpokit.config import RewardModelConfig, build_config
    from grpokit.trainers.reward_model import train_reward_model

    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "pairs.jsonl", "w", encoding="utf-8") as f:
        for row in pairs:
            f.write(json.dumps({k: row[k] for k in ("prompt", "chosen", "rejected")}) + "\n")
    batch_size = min(batch_size, len(pairs))
    config = build_config(
        RewardModelConfig,
        {
            "seed": seed,
            "max_steps": max(1, math.ceil(epochs * len(pairs) / batch_size)),
            "model": {"name_or_path": str(base_model)},
            "data": {"train_file": str(out / "pairs.jsonl"), "pairs_per_step": batch_size},
            "optim": {"learning_rate": learning_rate},
            "logging": {"output_dir": str(out), "run_name": "rm", "quiet": True, "report_to": [], "report": False},
        },
    )  # fmt: skip
    return Path(train_reward_model(config).final_dir)


def reward_normalisation(model_dir: str | os.PathLike) -> dict[str, float | None]:
    """The ``reward_center`` and ``reward_scale`` saved with a reward model (None where absent)."""
    config = json.loads((Path(model_dir) / "config.json").read_text(encoding="utf-8"))
    return {key: config.get(key) for key in ("reward_center", "reward_scale")}


def pairwise_accuracy(model_dir: str | os.PathLike, pairs: Sequence[dict[str, Any]]) -> dict[str, float]:
    """Share of ``pairs`` the reward model ranks as labelled (``labels``), and of those where the gold
    checker decides as the label does (``gold``)."""
    from grpokit.rewards.reward_model import RewardModel

    scorer = RewardModel(model_dir, batch_size=256)
    prompts = [r["prompt"] for r in pairs]
    chosen = scorer(prompts, [r["chosen"] for r in pairs])
    rejected = scorer(prompts, [r["rejected"] for r in pairs])
    right = [c is not None and r is not None and c > r for c, r in zip(chosen, rejected)]
    gold = [ok for ok, row in zip(right, pairs) if row["gold_agrees"]]
    return {
        "labels": sum(right) / len(right),
        "gold": sum(gold) / len(gold) if gold else float("nan"),
        "num_pairs": float(len(pairs)),
        "num_gold_pairs": float(len(gold)),
    }


# ---------------------------------------------------------------------------------------------------------
# RL against the proxy, and the whole experiment
# ---------------------------------------------------------------------------------------------------------


def compare_data(setup: HackingSetup, start_policy: Path, reward_model: Path, output_dir: Path) -> dict[str, Any]:
    """The config mapping both systems are built from (``grpokit compare``'s matching does the rest): the
    start policy, the addition task's prompts, the proxy as the optimised reward and the gold checker
    logged at weight 0. Everything else is ``compare``'s matched defaults for a user's model (learning rate
    1e-4, constant; beta 0.04, k3, token mean, one pass)."""
    return {
        "model": {"name_or_path": str(start_policy)},
        "max_steps": setup.steps,
        "data": {"task": "addition", "prompts_per_step": setup.prompts_per_step,
                 "num_eval_problems": setup.num_eval_problems},
        "algorithm": {"num_generations": setup.num_generations},
        "generation": {"max_new_tokens": setup.max_new_tokens},
        "rewards": {"reward_funcs": ["task"], "reward_model": str(reward_model), "reward_weights": [0.0, 1.0]},
        "logging": {"output_dir": str(output_dir)},
    }  # fmt: skip


def system_overrides(setup: HackingSetup) -> dict[str, dict[str, Any]]:
    """Every sampled completion into ``samples.jsonl``: GRPO's B groups of G, PPO's B*G groups of 1."""
    return {
        "grpo": {"logging.log_sample_groups": setup.prompts_per_step},
        "ppo": {"logging.log_sample_groups": setup.prompts_per_step * setup.num_generations},
    }


@dataclass
class HackingResult:
    """Where :func:`run_reward_hacking` put things, and what it measured."""

    output_dir: Path
    summary: dict[str, Any] = field(default_factory=dict)  # reward_hacking.json


def run_reward_hacking(
    setup: HackingSetup | None = None,
    output_dir: str | os.PathLike = "runs/reward-hacking",
    *,
    log: Callable[[str], None] = print,
) -> HackingResult:
    """The whole experiment of the module docstring; writes ``reward_hacking.json`` / ``.md`` / ``.png``
    into ``output_dir`` (and ``compare``'s outputs and one run directory per system and seed under
    ``output_dir/rl``).

    Raises:
        ValueError: ``output_dir`` already holds a finished experiment.
    """
    setup = setup or HackingSetup()
    out = Path(output_dir)
    if (out / "reward_hacking.json").exists():
        raise ValueError(f"output directory {str(out)!r} already holds a reward-hacking run; choose another")
    out.mkdir(parents=True, exist_ok=True)
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the preparation's torch work; the caller's setting comes back afterwards
    try:
        return _run(setup, out, log)
    finally:
        torch.set_num_threads(previous_threads)


def _run(setup: HackingSetup, out: Path, log: Callable[[str], None]) -> HackingResult:
    from grpokit.apps.compare import build_compare_configs, run_comparison
    from grpokit.apps.reward_hacking_report import analyse, write_outputs

    started, cpu_started = time.perf_counter(), time.process_time()
    start_policy = prepare_start_policy(setup, out, log)
    pairs = collect_pairs(start_policy, setup, setup.num_pairs, seed=setup.rm_seed)
    held_out = collect_pairs(start_policy, setup, setup.held_out_pairs, seed=setup.rm_seed + 1, split="test")
    log(f"proxy reward model: Bradley-Terry on {len(pairs)} labelled pairs of start-policy samples")
    reward_model = train_proxy_reward_model(
        pairs, base_model=start_policy, output_dir=out / "reward_model", epochs=setup.rm_epochs,
        learning_rate=setup.rm_learning_rate, batch_size=setup.rm_batch_size, seed=setup.rm_seed,
    )  # fmt: skip
    scale = reward_normalisation(reward_model)
    accuracy = pairwise_accuracy(reward_model, held_out)
    log(
        f"proxy reward model: held-out pairwise accuracy {accuracy['labels']:.3f} on the labeller's choices, "
        f"{accuracy['gold']:.3f} on the pairs the gold checker decides the same way"
    )
    prep_cpu = time.process_time() - cpu_started

    grpo, ppo = build_compare_configs(
        compare_data(setup, start_policy, reward_model, out), system_overrides=system_overrides(setup)
    )
    comparison = run_comparison(grpo, ppo, seeds=setup.seeds, output_dir=out / "rl", log=log)
    summary = analyse(comparison, task_name="addition")
    summary["setup"] = {**asdict(setup), "seeds": list(setup.seeds)}
    summary["proxy"] = {"pairs": len(pairs), "held_out_accuracy": accuracy, "normalisation": scale,
                        "pairs_gold_agrees": sum(r["gold_agrees"] for r in pairs) / len(pairs),
                        "pairs_chosen_longer": sum(len(r["chosen"]) > len(r["rejected"]) for r in pairs) / len(pairs)}  # fmt: skip
    summary["cost"] = {
        "wall_seconds": time.perf_counter() - started,
        "preparation_cpu_seconds": prep_cpu,
        "rl_cpu_seconds": sum(r["cpu_seconds"] for s in comparison["systems"].values() for r in s["runs"]),
        "load_average": list(os.getloadavg()),
    }
    write_outputs(summary, out)
    log(f"reward hacking: wrote {out / 'reward_hacking.md'}")
    return HackingResult(out, summary)


def main(argv: Sequence[str] | None = None) -> int:
    """``grpokit reward-hacking [--output-dir DIR] [--seeds S ...] [--steps N] ...``; returns the exit status."""
    import argparse
    import sys

    defaults = HackingSetup()
    parser = argparse.ArgumentParser(
        prog="grpokit reward-hacking",
        description=(
            "GRPO vs PPO optimising a learned proxy reward model while the gold reward (the addition task's "
            "checker) is logged: over-optimisation curves, length and repetition (docs/reward_models.md)."
        ),
    )
    parser.add_argument("--output-dir", default="runs/reward-hacking", help="where everything goes")
    parser.add_argument("--seeds", type=int, nargs="+", default=list(defaults.seeds), help="RL seeds")
    parser.add_argument("--steps", type=int, default=defaults.steps, help="RL steps per run")
    parser.add_argument("--num-pairs", type=int, default=defaults.num_pairs, help="proxy's training pairs")
    parser.add_argument(
        "--length-bias", type=float, default=defaults.length_bias,
        help="share of decided pairs on which the labeller prefers the longer completion",
    )  # fmt: skip
    args = parser.parse_args(list(sys.argv[1:] if argv is None else argv))
    if args.steps < 1 or args.num_pairs < 1 or len(set(args.seeds)) != len(args.seeds):
        parser.error("--steps and --num-pairs must be >= 1 and --seeds distinct")
    setup = HackingSetup(
        seeds=tuple(args.seeds), steps=args.steps, num_pairs=args.num_pairs, length_bias=args.length_bias
    )
    try:
        result = run_reward_hacking(setup, args.output_dir)
    except ValueError as err:
        print(f"grpokit reward-hacking: error: {err}", file=sys.stderr)
        return 2
    print((result.output_dir / "reward_hacking.md").read_text(encoding="utf-8"))
    return 0
