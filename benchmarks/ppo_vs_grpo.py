"""GRPO vs PPO on the built-in addition task: the study behind ``docs/ppo_vs_grpo.md``.

    OMP_NUM_THREADS=1 python benchmarks/ppo_vs_grpo.py --output-dir runs/ppo_vs_grpo

Two parts, both through :func:`grpokit.apps.compare.run_comparison` (what ``grpokit compare`` runs:
every system in a fresh subprocess, one after the other):

1. **Study** (``--seeds``, default 0 1 2; one per ``--learning-rate``, default 3e-4 and 2e-4): the demo's
   tiny model warmed up on the flawed teacher (the demo's defaults, cached under ``$GRPOKIT_CACHE``), then
   GRPO and PPO for ``--steps`` steps of 64 completions (GRPO 8 prompts x 8, PPO 64 prompts x 1), both
   with a reference model (beta 0.04) and one pass per batch, so each holds the same models but PPO's
   value model. Writes ``study-lr<rate>/compare.md``.
2. **Scale** (``--scale-hidden``, default 256 512): the same comparison, 3 steps and one seed, on randomly
   initialised larger models of the same family, for memory only: at the demo's scale the process RSS is
   dominated by library imports, and this shows how the RSS ratio moves toward the model-state ratio as
   the model grows. Writes ``scale.md``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from grpokit.apps.compare import build_compare_configs, run_comparison
from grpokit.apps.compare_report import render_markdown

# The study's settings: the demo's warmed-up tiny model (its defaults: warmed up until it imitates the flawed
# teacher), then RL with both systems on the same footing: a reference model and one pass per batch each.
STUDY: dict[str, Any] = {
    "data": {"prompts_per_step": 8, "num_eval_problems": 200},
    "algorithm": {"num_generations": 8, "beta": 0.04, "num_iterations": 1},
}


def study(output_dir: Path, seeds: list[int], steps: int, learning_rate: float) -> dict[str, Any]:
    grpo, ppo = build_compare_configs(
        {**STUDY, "max_steps": steps, "optim": {"learning_rate": learning_rate}}
    )
    return run_comparison(grpo, ppo, seeds=seeds, output_dir=output_dir / f"study-lr{learning_rate:g}")


def scale(output_dir: Path, hidden_sizes: list[int]) -> list[dict[str, Any]]:
    """Memory at larger widths: a fresh model per width (4 layers, head size 32, MLP 4x), 3 steps, 1 seed."""
    from grpokit.data.tasks import get_task
    from grpokit.models.tiny import build_char_tokenizer, build_tiny_model

    tokenizer = build_char_tokenizer(get_task("addition").alphabet)
    rows = []
    for hidden in hidden_sizes:
        model_dir = output_dir / "models" / f"hidden{hidden}"
        if not (model_dir / "config.json").is_file():
            build_tiny_model(
                tokenizer, model_dir, hidden_size=hidden, num_layers=4, num_heads=hidden // 32,
                intermediate_size=4 * hidden,
            )  # fmt: skip
        data = {**STUDY, "max_steps": 3, "model": {"name_or_path": str(model_dir)},
                "rewards": {"reward_funcs": ["task"]}, "generation": {"max_new_tokens": 16}}  # fmt: skip
        data["data"] = {**STUDY["data"], "task": "addition", "num_train_problems": 200, "num_eval_problems": 16}
        grpo, ppo = build_compare_configs(data)
        done = output_dir / f"scale-hidden{hidden}" / "compare.json"
        if done.is_file():  # measured by an earlier invocation: reuse it
            summary = json.loads(done.read_text(encoding="utf-8"))
        else:
            summary = run_comparison(grpo, ppo, seeds=[0], output_dir=done.parent)
        rows.append({"hidden_size": hidden, "summary": summary})
    return rows


def scale_table(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| hidden | parameters held GRPO / PPO (M) | model state GRPO / PPO (MiB) | ratio | "
        "peak RSS above baseline GRPO / PPO (MiB) | ratio | peak RSS GRPO / PPO (MiB) | ratio |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        s = row["summary"]
        run = {name: s["systems"][name]["runs"][0] for name in ("grpo", "ppo")}
        ratios = s["ratios_grpo_over_ppo"]
        lines.append(
            f"| {row['hidden_size']} | {run['grpo']['parameters'] / 1e6:.2f} / {run['ppo']['parameters'] / 1e6:.2f} | "
            f"{run['grpo']['state_mb']:.0f} / {run['ppo']['state_mb']:.0f} | {ratios['state_mb']:.2f} | "
            f"{run['grpo']['peak_rss_above_baseline_mb']:.0f} / {run['ppo']['peak_rss_above_baseline_mb']:.0f} | "
            f"{ratios['peak_rss_above_baseline_mb']:.2f} | "
            f"{run['grpo']['peak_rss_mb']:.0f} / {run['ppo']['peak_rss_mb']:.0f} | {ratios['peak_rss_mb']:.2f} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output-dir", default="runs/ppo_vs_grpo", help="where runs and tables go")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="study seeds")
    parser.add_argument("--steps", type=int, default=200, help="training steps per study run")
    parser.add_argument(
        "--learning-rate", type=float, nargs="+", default=[3e-4, 2e-4], help="one study per learning rate"
    )
    parser.add_argument("--scale-hidden", type=int, nargs="*", default=[256, 512], help="widths for part 2")
    parser.add_argument("--skip-study", action="store_true", help="only the scale part")
    args = parser.parse_args(argv)
    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    if not args.skip_study:
        for learning_rate in args.learning_rate:
            print(render_markdown(study(out, args.seeds, args.steps, learning_rate)))
    if args.scale_hidden:
        rows = scale(out, args.scale_hidden)
        table = scale_table(rows)
        (out / "scale.md").write_text(table, encoding="utf-8")
        (out / "scale.json").write_text(json.dumps(rows, indent=2) + "\n", encoding="utf-8")
        print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
