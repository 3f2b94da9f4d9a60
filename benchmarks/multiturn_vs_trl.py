"""Multi-turn GRPO with a tool: grpokit's GRPOTrainer against TRL's GRPOTrainer(environment_factory=...).

    OMP_NUM_THREADS=1 python benchmarks/multiturn_vs_trl.py --repeats 2 --steps 6 --warmup 2

The same work on both sides, in one invocation: one model (a Qwen2 warm-started once to call the tool, see
``multiturn_workload.py``) saved to a temporary directory that both load; the same environment class, written
to TRL's ``environment_factory`` contract (grpokit runs it through ``env.adapter: trl``); the same prompts
(B per step, G episodes each), sampling temperature 1, at most ``--max-tokens`` sampled tokens per turn, at
most ``--tool-iterations`` rounds of tool calls (grpokit: ``env.max_turns`` = rounds + 1), beta, fp32 on the
CPU, the transformers backend (no vLLM), the learning rate, Adam, clipping, one update per generation batch.

Every run is a fresh subprocess with torch on one thread; runs of the two systems alternate (TRL, grpokit,
grpokit, TRL, ...) so that a busy machine slows both alike. Per step: process-CPU and wall seconds, split
into the rollout (grpokit ``EpisodeRunner.run`` / TRL ``_generate``: every turn's sampling, the tool calls
and the rendering between turns) and the rest (forwards, backward, optimizer, logging); steps before
``--warmup`` are left out. Per run: peak RSS. Per step, what the episodes did, counted the same way on both
sides from the conversations each trainer built: assistant turns, tool calls and sampled (trained) tokens
per episode, the share of episodes with a call to ``multiply`` on the right operands (the reward), and the
share whose last turn was cut at the token limit.

Writes ``<out>.json`` (every run and step) and ``<out>.md`` (the table of docs/agents.md).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from machine import cpu_name  # noqa: E402 - after the path setup

THREAD_ENV = {
    "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false",
    "TRL_EXPERIMENTAL_SILENCE": "1",
}  # fmt: skip
SYSTEMS = ("trl", "grpokit")


@dataclass(frozen=True)
class Workload:
    """One configuration, the same for both systems."""

    prompts: int = 4  # B
    generations: int = 8  # G
    max_tokens: int = 48  # sampled tokens per turn at most
    tool_iterations: int = 2  # rounds of tool calls at most (TRL max_tool_calling_iterations)
    beta: float = 0.04
    steps: int = 6
    warmup: int = 2
    learning_rate: float = 1e-5
    seed: int = 0
    # grpokit's optim.micro_batch_tokens (its default 2048 splits the update; None: one batch, as TRL runs it)
    grpokit_micro_batch_tokens: int | None = 2048

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# ---------------------------------------------------------------------------------------------------------
# What the episodes did (pure: both systems' conversations go through it)
# ---------------------------------------------------------------------------------------------------------


def episode_work(
    conversations: list[list[dict[str, Any]]],
    sampled_tokens: list[int],
    cut: list[bool],
    rewards: list[float],
) -> dict[str, float]:
    """Means over one step's episodes: assistant turns, tool calls (``tool`` messages), sampled tokens, the
    share of episodes cut at the token limit and the mean reward.

    ``conversations``: each episode's messages after the opening (assistant turns, tool results).
    """
    n = len(conversations)
    if not n or len(sampled_tokens) != n or len(cut) != n or len(rewards) != n:
        raise ValueError(
            f"episode_work: {n} conversations, {len(sampled_tokens)} token counts, {len(cut)} cut flags, "
            f"{len(rewards)} rewards: one of each per episode"
        )
    return {
        "episodes": float(n),
        "turns": sum(sum(m["role"] == "assistant" for m in c) for c in conversations) / n,
        "tool_calls": sum(sum(m["role"] == "tool" for m in c) for c in conversations) / n,
        "sampled_tokens": sum(sampled_tokens) / n,
        "cut_fraction": sum(cut) / n,
        "reward": sum(rewards) / n,
    }


def summarize(runs: list[dict[str, Any]], warmup: int) -> dict[str, Any]:
    """Medians of the steady-state steps (steps after ``warmup``) pooled over ``runs``; the episodes' work
    averaged over the same steps; the median peak RSS."""
    steps = [s for r in runs for s in r["steps"][warmup:]]
    if not steps:
        raise ValueError(f"no step after the {warmup} warm-up steps to summarize")
    out: dict[str, Any] = {"steps_measured": len(steps)}
    for clock in ("cpu", "wall"):
        out[f"step_{clock}_s"] = statistics.median(s[clock] for s in steps)
        out[f"rollout_{clock}_s"] = statistics.median(s["rollout"][clock] for s in steps)
        out[f"update_{clock}_s"] = statistics.median(s[clock] - s["rollout"][clock] for s in steps)
    for key in ("turns", "tool_calls", "sampled_tokens", "cut_fraction", "reward"):
        out[key] = statistics.mean(s["work"][key] for s in steps)
    out["rss_peak_mib"] = statistics.median(r["rss_peak_mib"] for r in runs)
    out["load_avg"] = [round(x, 2) for r in runs for x in (r["load_before"][0], r["load_after"][0])]
    return out


RATIO_KEYS = ("step_cpu_s", "step_wall_s", "rollout_cpu_s", "update_cpu_s", "rss_peak_mib")


def ratios(grpokit: dict[str, Any], trl: dict[str, Any]) -> dict[str, float]:
    """grpokit / TRL for each of ``RATIO_KEYS`` (below 1: grpokit spends less)."""
    return {key: grpokit[key] / trl[key] for key in RATIO_KEYS}


# ---------------------------------------------------------------------------------------------------------
# Worker side (a fresh process per run)
# ---------------------------------------------------------------------------------------------------------


class StepClock:
    """Wall and CPU seconds from one step's start to the next, the rollout's share and its episodes' work."""

    def __init__(self) -> None:
        self.marks: list[tuple[float, float]] = []
        self.rollouts: list[dict[str, float]] = []
        self.work: list[dict[str, float]] = []

    def step_started(self) -> None:
        self.marks.append((time.perf_counter(), time.process_time()))

    def timed_rollout(self, function: Any, record: Any) -> Any:
        """``function`` wrapped: its seconds go to the current step, ``record(result)`` to its work."""

        def timed(*args: Any, **kwargs: Any) -> Any:
            wall, cpu = time.perf_counter(), time.process_time()
            result = function(*args, **kwargs)
            self.rollouts.append({"wall": time.perf_counter() - wall, "cpu": time.process_time() - cpu})
            self.work.append(record(result))
            return result

        return timed

    def steps(self) -> list[dict[str, Any]]:
        """One record per step that has a successor (the last step's end is not marked)."""
        return [
            {
                "wall": self.marks[k + 1][0] - self.marks[k][0],
                "cpu": self.marks[k + 1][1] - self.marks[k][1],
                "rollout": self.rollouts[k],
                "work": self.work[k],
            }
            for k in range(len(self.marks) - 1)
        ]


def run_grpokit(w: Workload, model_dir: str) -> list[dict[str, Any]]:
    """grpokit's GRPOTrainer with ``env.adapter: trl`` on the benchmark environment."""
    from grpokit.config import GRPOConfig
    from grpokit.trainers.grpo import GRPOTrainer
    from multiturn_workload import problem_rows

    clock = StepClock()
    config = GRPOConfig.model_validate(
        {
            "seed": w.seed,
            "max_steps": w.steps,
            "model": {"name_or_path": model_dir, "device": "cpu", "mixed_precision": "no"},
            "data": {"prompts_per_step": w.prompts},
            "generation": {"max_new_tokens": w.max_tokens, "temperature": 1.0},
            "optim": {
                "learning_rate": w.learning_rate, "adam_beta2": 0.999, "max_grad_norm": 1.0,
                "micro_batch_tokens": w.grpokit_micro_batch_tokens,
            },  # fmt: skip
            "algorithm": {
                "num_generations": w.generations,
                "beta": w.beta,
                "num_iterations": 1,
                "loss_aggregation": "sequence_mean",
                "advantage_estimator": "grpo",
            },
            "env": {
                "name": f"{HERE / 'multiturn_workload.py'}:MultiplyEnv",
                "adapter": "trl",
                "max_turns": w.tool_iterations + 1,
                "tool_call_parser": "hermes",
            },
            "logging": {
                "quiet": True,
                "output_dir": tempfile.mkdtemp(prefix="grpokit-mt-bench-"),
                "report_to": [],
                "report": False,
                "log_sample_groups": 1,
            },
        }
    )

    class TimedTrainer(GRPOTrainer):
        def collect_rollouts(self, timer: Any) -> Any:
            clock.step_started()
            return super().collect_rollouts(timer)

    def record(result: Any) -> dict[str, float]:
        batch, scores = result
        sampled = batch.loss_mask.sum(dim=1).round().long().tolist()
        # An episode is cut at the token limit when its last turn has no stop token.
        stop_ids = set(trainer.episodes.stop_ids)
        cut = []
        for ids, mask in zip(batch.completion_ids.tolist(), batch.completion_mask.tolist()):
            length = int(sum(mask))
            cut.append(length > 0 and ids[length - 1] not in stop_ids)
        return episode_work(batch.conversations, sampled, cut, scores.rewards.tolist())

    trainer = TimedTrainer(config, dataset=problem_rows())
    trainer.episodes.run = clock.timed_rollout(trainer.episodes.run, record)
    trainer.train()
    return clock.steps()


def run_trl(w: Workload, model_dir: str) -> list[dict[str, Any]]:
    """TRL's GRPOTrainer with ``environment_factory=MultiplyEnv`` on the same work."""
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    from multiturn_workload import MultiplyEnv, problem_rows

    clock = StepClock()
    N = w.prompts * w.generations
    args = GRPOConfig(
        output_dir=tempfile.mkdtemp(prefix="trl-mt-bench-"),
        seed=w.seed,
        max_steps=w.steps,
        per_device_train_batch_size=N,
        gradient_accumulation_steps=1,
        generation_batch_size=N,
        num_generations=w.generations,
        # TRL's max_completion_length bounds the whole episode (turns and tool results); the per-turn bound is
        # generate's max_new_tokens. The episode bound is set high enough never to bind before the turn bound.
        max_completion_length=(w.tool_iterations + 1) * (w.max_tokens + 64),
        generation_kwargs={"max_new_tokens": w.max_tokens},
        max_tool_calling_iterations=w.tool_iterations,
        temperature=1.0,
        beta=w.beta,
        num_iterations=1,
        loss_type="grpo",
        scale_rewards="group",
        learning_rate=w.learning_rate,
        lr_scheduler_type="constant",
        max_grad_norm=1.0,
        use_cpu=True,
        report_to="none",
        save_strategy="no",
        logging_steps=1,
        disable_tqdm=True,
        dataloader_num_workers=0,
    )
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)

    class StepStart(TrainerCallback):
        def on_step_begin(self, *args: Any, **kwargs: Any) -> None:
            clock.step_started()

    trainer = GRPOTrainer(
        model=model,
        args=args,
        train_dataset=Dataset.from_list(problem_rows()),
        processing_class=tokenizer,
        environment_factory=MultiplyEnv,
        callbacks=[StepStart()],
    )

    def record(result: Any) -> dict[str, float]:
        _, completion_ids, tool_mask, completions, *_ = result
        eos = set(trainer.eos_token_ids) | {trainer._tokenizer.pad_token_id}
        sampled = [sum(mask) for mask in tool_mask]
        cut = [bool(ids) and ids[-1] not in eos for ids in completion_ids]
        rewards = [env.get_reward() for env in trainer.environments]
        return episode_work(completions, sampled, cut, rewards)

    trainer._generate = clock.timed_rollout(trainer._generate, record)
    trainer.train()
    return clock.steps()


def worker_main(system: str, workload: Workload, model_dir: str, result_path: str) -> None:
    import resource

    import torch

    torch.set_num_threads(1)
    load_before = os.getloadavg()
    started = time.perf_counter()
    steps = (run_grpokit if system == "grpokit" else run_trl)(workload, model_dir)
    result = {
        "system": system,
        "steps": steps,
        "rss_peak_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "load_before": load_before,
        "load_after": os.getloadavg(),
        "seconds_total": time.perf_counter() - started,
    }
    Path(result_path).write_text(json.dumps(result))


# ---------------------------------------------------------------------------------------------------------
# Driver side
# ---------------------------------------------------------------------------------------------------------


def spawn(system: str, workload: Workload, model_dir: str) -> dict[str, Any]:
    """One run of ``system`` in a fresh Python process; its JSON result."""
    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as f:
        result_path = f.name
    command = [sys.executable, __file__, "--worker", system, "--workload", json.dumps(workload.to_dict()),
               "--model-dir", model_dir, "--result", result_path]  # fmt: skip
    env = {**os.environ, **THREAD_ENV, "PYTHONWARNINGS": "ignore"}
    started = time.perf_counter()
    proc = subprocess.run(command, env=env, capture_output=True, text=True, timeout=1800)
    if proc.returncode != 0:
        raise RuntimeError(f"{system} run failed:\n{proc.stderr[-4000:]}")
    result = json.loads(Path(result_path).read_text())
    os.unlink(result_path)
    print(f"  {system:8s} {time.perf_counter() - started:6.1f} s, load {os.getloadavg()[0]:.1f}", flush=True)
    return result


def render_markdown(report: dict[str, Any]) -> str:
    w = report["workload"]
    lines = [
        f"Command: `{report['command']}`  ",
        f"Machine: {report['machine']['cpu']}, {report['machine']['cores']} cores, 1 torch thread per run; "
        f"{report['machine']['versions']}  ",
        f"Run: {report['started']} to {report['finished']}; B={w['prompts']} prompts x G={w['generations']} "
        f"episodes per step, <= {w['max_tokens']} tokens per turn, <= {w['tool_iterations']} tool rounds, "
        f"beta {w['beta']:g}, fp32; {report['model']['parameters'] / 1e6:.1f}M-parameter Qwen2, prompt "
        f"{report['model']['prompt_tokens']} tokens; {w['steps']} steps per run, first {w['warmup']} left out",
        "",
        "| system | s/step (CPU) | rollout CPU s | update CPU s | s/step (wall) | peak RSS MiB | turns / episode "
        "| tool calls / episode | sampled tokens / episode | cut at limit | reward | steps measured |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name in SYSTEMS:
        s = report[name]
        lines.append(
            f"| {name} | {s['step_cpu_s']:.3f} | {s['rollout_cpu_s']:.3f} | {s['update_cpu_s']:.3f} | "
            f"{s['step_wall_s']:.3f} | {s['rss_peak_mib']:.0f} | {s['turns']:.2f} | {s['tool_calls']:.2f} | "
            f"{s['sampled_tokens']:.1f} | {s['cut_fraction']:.3f} | {s['reward']:.2f} | {s['steps_measured']} |"
        )
    r = report["ratio"]
    lines.append(
        f"| **grpokit/TRL** | **{r['step_cpu_s']:.2f}** | {r['rollout_cpu_s']:.2f} | {r['update_cpu_s']:.2f} | "
        f"{r['step_wall_s']:.2f} | **{r['rss_peak_mib']:.2f}** | | | | | | |"
    )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--repeats", type=int, default=2, help="runs per system (interleaved)")
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--warmup", type=int, default=2, help="first steps left out of the medians")
    parser.add_argument("--prompts", type=int, default=4)
    parser.add_argument("--generations", type=int, default=8)
    parser.add_argument("--max-tokens", type=int, default=48, help="sampled tokens per turn at most")
    parser.add_argument("--tool-iterations", type=int, default=2, help="rounds of tool calls at most")
    parser.add_argument("--beta", type=float, default=0.04)
    parser.add_argument(
        "--micro-batch-tokens", default="2048",
        help="grpokit's optim.micro_batch_tokens (default 2048, its default; 'none': the update in one batch)",
    )  # fmt: skip
    parser.add_argument("--warm-start-steps", type=int, default=300, help="imitation steps of the model")
    parser.add_argument("--out", default="benchmarks/results/multiturn_vs_trl")
    # worker mode (internal)
    parser.add_argument("--worker", choices=SYSTEMS, help=argparse.SUPPRESS)
    parser.add_argument("--workload", help=argparse.SUPPRESS)
    parser.add_argument("--model-dir", help=argparse.SUPPRESS)
    parser.add_argument("--result", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        worker_main(args.worker, Workload(**json.loads(args.workload)), args.model_dir, args.result)
        return {}
    if args.warmup >= args.steps - 1:
        raise ValueError(
            f"--warmup ({args.warmup}) must leave at least one measured step of --steps {args.steps}"
        )
    workload = Workload(
        prompts=args.prompts, generations=args.generations, max_tokens=args.max_tokens,
        tool_iterations=args.tool_iterations, beta=args.beta, steps=args.steps, warmup=args.warmup,
        grpokit_micro_batch_tokens=None if args.micro_batch_tokens == "none" else int(args.micro_batch_tokens),
    )  # fmt: skip

    import torch

    from multiturn_workload import build_warm_model

    torch.set_num_threads(1)
    model_dir = tempfile.mkdtemp(prefix="mt-bench-model-")
    print(f"warm-starting the model ({args.warm_start_steps} imitation steps) into {model_dir}", flush=True)
    model_info = build_warm_model(model_dir, steps=args.warm_start_steps)
    report: dict[str, Any] = {
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "machine": {"cpu": cpu_name(), "cores": os.cpu_count(), "python": platform.python_version(),
                    "versions": _versions()},
        "model": model_info,
        "workload": workload.to_dict(),
        "started": time.strftime("%Y-%m-%d %H:%M:%S"),
    }  # fmt: skip
    runs: dict[str, list[dict[str, Any]]] = {s: [] for s in SYSTEMS}
    for repeat in range(args.repeats):
        for system in SYSTEMS if repeat % 2 == 0 else SYSTEMS[::-1]:
            runs[system].append(spawn(system, workload, model_dir))
    report["runs"] = runs
    for system in SYSTEMS:
        report[system] = summarize(runs[system], workload.warmup)
    report["ratio"] = ratios(report["grpokit"], report["trl"])
    report["finished"] = time.strftime("%Y-%m-%d %H:%M:%S")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(report, indent=1))
    markdown = render_markdown(report)
    out.with_suffix(".md").write_text(markdown)
    print(markdown)
    return report


def _versions() -> str:
    from importlib.metadata import version

    return ", ".join(f"{name} {version(name)}" for name in ("torch", "transformers", "trl", "grpokit"))


if __name__ == "__main__":
    main()
