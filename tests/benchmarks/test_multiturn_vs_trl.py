"""benchmarks/multiturn_vs_trl.py: the episodes' work is counted the same way from both systems' conversations,
and the summary pools the steady-state steps of every run."""

import importlib.util
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location(
        "multiturn_vs_trl", ROOT / "benchmarks" / "multiturn_vs_trl.py"
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclass looks its module up there
    spec.loader.exec_module(module)
    yield module
    del sys.modules[spec.name]
    sys.path.remove(str(ROOT / "benchmarks"))


CALL = {"role": "assistant", "content": "", "tool_calls": [{"type": "function"}]}
RESULT = {"role": "tool", "name": "multiply", "content": "9022"}
ANSWER = {"role": "assistant", "content": "9022"}


def test_episode_work_counts_turns_tool_results_tokens_cuts_and_rewards(bench):
    conversations = [[CALL, RESULT, ANSWER], [ANSWER], [CALL, RESULT, CALL, RESULT, CALL]]
    work = bench.episode_work(conversations, [30, 4, 75], [False, False, True], [1.0, 0.0, 1.0])
    assert work == {
        "episodes": 3.0,
        "turns": (2 + 1 + 3) / 3,
        "tool_calls": (1 + 0 + 2) / 3,
        "sampled_tokens": (30 + 4 + 75) / 3,
        "cut_fraction": 1 / 3,
        "reward": 2 / 3,
    }


def test_episode_work_refuses_lists_of_different_lengths(bench):
    with pytest.raises(ValueError, match="2 conversations, 1 token counts"):
        bench.episode_work([[ANSWER], [ANSWER]], [4], [False, False], [0.0, 0.0])


def _step(cpu, rollout_cpu, turns):
    work = {"turns": turns, "tool_calls": 1.0, "sampled_tokens": 20.0, "cut_fraction": 0.0, "reward": 0.5}
    return {
        "cpu": cpu,
        "wall": cpu * 2,
        "rollout": {"cpu": rollout_cpu, "wall": rollout_cpu * 2},
        "work": work,
    }


def test_summarize_pools_the_steps_after_warmup_of_every_run(bench):
    run_a = {"steps": [_step(100.0, 90.0, 9.0), _step(1.0, 0.5, 2.0), _step(3.0, 1.0, 2.0)], "rss_peak_mib": 500.0,
             "load_before": [1.0], "load_after": [1.5]}  # fmt: skip
    run_b = {"steps": [_step(100.0, 90.0, 9.0), _step(2.0, 1.5, 1.0)], "rss_peak_mib": 700.0,
             "load_before": [2.0], "load_after": [2.5]}  # fmt: skip
    s = bench.summarize([run_a, run_b], warmup=1)
    assert s["steps_measured"] == 3
    assert s["step_cpu_s"] == 2.0  # median of 1, 3, 2: the warm-up steps (100 s) are left out
    assert s["rollout_cpu_s"] == 1.0
    assert s["update_cpu_s"] == 0.5  # median of 0.5, 2.0, 0.5
    assert s["step_wall_s"] == 4.0
    assert s["turns"] == pytest.approx(5 / 3)
    assert s["rss_peak_mib"] == 600.0
    assert s["load_avg"] == [1.0, 1.5, 2.0, 2.5]


def test_summarize_refuses_a_warmup_that_leaves_no_step(bench):
    run = {"steps": [_step(1.0, 0.5, 2.0)], "rss_peak_mib": 1.0, "load_before": [0.0], "load_after": [0.0]}
    with pytest.raises(ValueError, match="no step after the 1 warm-up steps"):
        bench.summarize([run], warmup=1)


def test_ratios_are_grpokit_over_trl(bench):
    trl = {
        "step_cpu_s": 4.0,
        "step_wall_s": 8.0,
        "rollout_cpu_s": 2.0,
        "update_cpu_s": 2.0,
        "rss_peak_mib": 800.0,
    }
    grpokit = {
        "step_cpu_s": 2.0,
        "step_wall_s": 4.0,
        "rollout_cpu_s": 1.5,
        "update_cpu_s": 0.5,
        "rss_peak_mib": 400.0,
    }
    assert bench.ratios(grpokit, trl) == {
        "step_cpu_s": 0.5, "step_wall_s": 0.5, "rollout_cpu_s": 0.75, "update_cpu_s": 0.25, "rss_peak_mib": 0.5,
    }  # fmt: skip
