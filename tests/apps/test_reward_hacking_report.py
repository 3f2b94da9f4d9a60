import json
import math

import pytest

from grpokit.apps.reward_hacking_report import (
    analyse,
    at_kl,
    moving_average,
    moving_median,
    render_markdown,
    run_curves,
    run_summary,
)


def test_moving_average_and_median_keep_the_length():
    assert moving_average([0, 3, 6, 9], 3) == [1.5, 3.0, 6.0, 7.5]
    assert moving_median([0, 100, 1, 2, 3], 3) == [50.0, 1, 2, 2, 2.5]  # the spike does not carry
    with pytest.raises(ValueError, match="window"):
        moving_average([1.0], 0)


def _curves(n, gold, kl):
    return {
        "step": list(range(1, n + 1)), "proxy": [0.1 * s for s in range(n)], "gold": gold,
        "kl": kl, "length": [4.0 + 0.1 * s for s in range(n)], "repetition": [0.0] * n,
    }  # fmt: skip


def test_run_summary_finds_the_gold_peak_and_the_ends():
    n = 50
    gold = [0.2 + 0.01 * s if s < 20 else 0.4 - 0.01 * (s - 20) for s in range(n)]  # peaks at step 21
    curves = _curves(n, gold, [0.1 * s for s in range(n)])
    out = run_summary(curves)
    assert out["gold_start"] == pytest.approx(sum(gold[:5]) / 5)
    assert out["gold_end"] == pytest.approx(sum(gold[-5:]) / 5)
    assert 18 <= out["step_at_gold_best"] <= 22
    assert out["kl_at_gold_best"] == pytest.approx(0.1 * (out["step_at_gold_best"] - 1), abs=0.11)
    # at a KL the run reaches: the first step whose smoothed KL gets there; else the last step
    assert at_kl(curves, 2.0)["step_at_matched_kl"] == 21
    assert at_kl(curves, 100.0)["step_at_matched_kl"] == n


def _write_run(path, *, gold, proxy, lengths):
    path.mkdir()
    metrics = [
        {"step": s + 1, "rewards/reward_model/mean": p, "rewards/task/mean": g, "kl": 0.1 * s,
         "completions/mean_length": float(length)}
        for s, (g, p, length) in enumerate(zip(gold, proxy, lengths))
    ]  # fmt: skip
    samples = [{"step": s + 1, "prompt": "1+1=", "completions": ["0002" + "9" * (length - 4)]}
               for s, length in enumerate(lengths)]  # fmt: skip
    (path / "metrics.jsonl").write_text("".join(json.dumps(m) + "\n" for m in metrics))
    (path / "samples.jsonl").write_text("".join(json.dumps(m) + "\n" for m in samples))
    return str(path)


def test_curves_and_table_from_run_directories(tmp_path):
    n = 10
    runs = {}
    for name, lengths in (("grpo", [4] * n), ("ppo", [4, 4, 5, 6, 8, 10, 12, 12, 12, 12])):
        runs[name] = _write_run(tmp_path / name, gold=[0.5] * n, proxy=[0.0] * n, lengths=lengths)
    curves = run_curves(runs["ppo"])
    assert curves["length"][-1] == 12.0
    assert curves["kl"][2] == pytest.approx(0.2 * 5)  # per-token kl x mean length
    # "000299999999": 10 trigrams, 5 distinct (000 002 029 299 999): 5 repeat an earlier one
    assert curves["repetition"][-1] == pytest.approx(5 / 10)
    assert curves["repetition"][0] == 0.0
    comparison = {
        "systems": {name: {"runs": [{"seed": 0, "run_dir": d, "held_out": 0.5}]} for name, d in runs.items()},
        "matching": {"max_steps": n, "completions_per_step": 1},
        "config_differences": {},
    }
    summary = analyse(comparison)
    assert summary["systems"]["ppo"]["stats"]["length_end"]["mean"] > summary["systems"]["grpo"]["stats"][
        "length_end"
    ]["mean"]
    assert math.isclose(summary["systems"]["grpo"]["stats"]["repetition_end"]["mean"], 0.0)
    assert summary["differences_grpo_minus_ppo"]["held_out"]["mean"] == 0.0
    table = render_markdown(summary)
    assert "| mean completion length at the end (characters) | 4.00 ± 0.00 | " in table
