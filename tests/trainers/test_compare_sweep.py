"""grpokit compare --lr-sweep: one comparison per learning rate, each system's best rate, best against best."""

import pytest

from grpokit.apps.compare_sweep import best_rates, render_sweep, run_lr_sweep


def summary(grpo: list[float], ppo: list[float]) -> dict:
    """A compare summary with held-out quality per seed (seeds 0, 1, 2...)."""

    def system(values: list[float]) -> dict:
        mean = sum(values) / len(values)
        std = (sum((v - mean) ** 2 for v in values) / (len(values) - 1)) ** 0.5
        return {"runs": [{"seed": s, "held_out": v} for s, v in enumerate(values)],
                "stats": {"held_out": {"mean": mean, "std": std}}}  # fmt: skip

    return {"systems": {"grpo": system(grpo), "ppo": system(ppo)}}


SWEEP = {
    1e-4: summary([0.50, 0.52, 0.54], [0.60, 0.62, 0.64]),
    3e-4: summary([0.70, 0.72, 0.74], [0.80, 0.81, 0.82]),
    1e-3: summary([0.30, 0.20, 0.10], [0.85, 0.86, 0.87]),  # GRPO collapses where PPO still gains
}


def test_each_system_gets_its_own_best_rate():
    assert best_rates(SWEEP) == {"grpo": 3e-4, "ppo": 1e-3}
    tie = {1e-4: summary([0.5, 0.5], [0.5, 0.5]), 3e-4: summary([0.5, 0.5], [0.5, 0.5])}
    assert best_rates(tie) == {"grpo": 1e-4, "ppo": 1e-4}  # the lower rate on a tie
    with pytest.raises(ValueError, match="at least one learning rate"):
        best_rates({})


def test_the_page_compares_the_two_at_their_own_best_rates():
    page = render_sweep(SWEEP)
    assert "| 0.0003 | 0.720 ± 0.020 | 0.810 ± 0.010 | -0.090 [" in page
    # best against best, per seed: GRPO at 3e-4 minus PPO at 1e-3 = -0.15, -0.14, -0.13
    assert "Best rate: GRPO 0.0003, PPO 0.001" in page and "seed: -0.140 [-0.165, -0.115]" in page


def test_the_sweep_runs_one_comparison_per_rate_with_the_rate_for_both(tmp_path):
    built, ran = [], []

    def build(extra):
        built.append(extra)
        return ("grpo", extra["learning_rate"]), ("ppo", extra["learning_rate"])

    def run(grpo, ppo, *, seeds, output_dir, eval_data, log):
        assert grpo[1] == ppo[1]  # one rate for both systems
        ran.append((grpo[1], list(seeds), output_dir.name))
        return SWEEP[grpo[1]]

    summaries = run_lr_sweep(build, [1e-4, 3e-4, 1e-3], run, seeds=[0, 1, 2], output_dir=tmp_path, log=lambda _: None)
    assert built == [{"learning_rate": r} for r in (1e-4, 3e-4, 1e-3)]
    assert ran == [(1e-4, [0, 1, 2], "lr0.0001"), (3e-4, [0, 1, 2], "lr0.0003"), (1e-3, [0, 1, 2], "lr0.001")]
    assert summaries == SWEEP and "Best rate" in (tmp_path / "lr_sweep.md").read_text()
    with pytest.raises(ValueError, match="already holds a learning-rate sweep"):
        run_lr_sweep(build, [1e-4], run, seeds=[0], output_dir=tmp_path)
    with pytest.raises(ValueError, match="must be > 0 and distinct"):
        run_lr_sweep(build, [1e-4, 1e-4], run, seeds=[0], output_dir=tmp_path / "b")


def test_cli_lr_sweep_gives_each_rate_to_both_systems(tmp_path, monkeypatch, capsys):
    from grpokit.apps import compare
    from grpokit.cli import main

    seen = []

    def fake_run(grpo, ppo, *, seeds, output_dir, eval_data, log):
        seen.append((grpo.optim.learning_rate, ppo.optim.learning_rate, list(seeds)))
        return SWEEP[grpo.optim.learning_rate]

    monkeypatch.setattr(compare, "run_comparison", fake_run)
    status = main(["compare", "--lr-sweep", "1e-4", "3e-4", "1e-3", "--seeds", "0", "1", "2",
                   "--output-dir", str(tmp_path / "sweep")])  # fmt: skip
    assert status == 0
    assert seen == [(1e-4, 1e-4, [0, 1, 2]), (3e-4, 3e-4, [0, 1, 2]), (1e-3, 1e-3, [0, 1, 2])]
    assert "Best rate: GRPO 0.0003, PPO 0.001" in capsys.readouterr().out
    assert main(["compare", "--lr-sweep", "fast"]) != 0
    assert "--lr-sweep takes learning rates, got ['fast']" in capsys.readouterr().err
