import base64
import hashlib
import json
import math
import re
from pathlib import Path

import pytest

from grpokit.tracking.report import (
    chart_layout,
    constant_metrics,
    downsample,
    goal_metric,
    load_run,
    main,
    metric_series,
    render_report,
    run_header,
    write_report,
)

XSS = "</script><script>alert(1)</script><img src=x onerror=alert(2)> & \u2028"


def write_jsonl(path: Path, rows) -> None:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))


def make_run(
    path: Path, *, metrics=None, samples=None, config="optim:\n  lr: 1.0e-6\nseed: 3\n", environment=None
):
    path.mkdir(parents=True)
    if config is not None:
        (path / "config.yaml").write_text(config)
    if metrics is not None:
        write_jsonl(path / "metrics.jsonl", metrics)
    if samples is not None:
        write_jsonl(path / "samples.jsonl", samples)
    if environment is not None:
        (path / "environment.json").write_text(json.dumps(environment))
    return path


METRICS = [
    {"step": 0, "reward/mean": 0.25, "kl": 0.0, "note": "warmup", "done": False},
    {"step": 1, "reward/mean": 0.5, "kl": float("nan"), "time/step": 2.0},
    {"step": 2, "reward/mean": 0.75, "kl": 0.125},
]
SAMPLES = [
    {
        "step": 1,
        "prompt": "What is 2 + 2?",
        "completions": ["4", XSS, "5"],
        "rewards": [1.0, None, 0.0],
        "advantages": [1.0, 0.0, -1.0],
        "reward_components": {"math_verify": [1.0, None, 0.0]},
    },
]


def page_data(page: str) -> dict:
    """The JSON the page embeds, decoded exactly as the browser's JSON.parse would."""
    (block,) = re.findall(r'<script type="application/json" id="report-data">(.*?)</script>', page, re.DOTALL)
    return json.loads(block)


def test_metric_series_tolerates_gaps_nan_and_non_numbers():
    series = metric_series(METRICS)
    assert list(series) == ["reward/mean", "kl", "time/step"]  # "note" and the bool "done" are not metrics
    assert series["reward/mean"] == ([0.0, 1.0, 2.0], [0.25, 0.5, 0.75])
    assert series["kl"] == ([0.0, 1.0, 2.0], [0.0, None, 0.125])  # NaN is a gap
    assert series["time/step"] == ([1.0], [2.0])  # absent elsewhere: no gap, just one point


def test_metric_series_resumed_steps_and_missing_step():
    rows = [
        {"step": 0, "loss": 1.0},
        {"step": 1, "loss": 2.0},
        {"step": 1, "loss": 3.0},  # a resumed run logs step 1 again: the later row wins
        {"loss": 4.0},  # no step: placed at its row index, 3
        {"step": "5", "loss": 5.0},  # a non-numeric step too: row index 4
    ]
    assert metric_series(rows)["loss"] == ([0.0, 1.0, 3.0, 4.0], [1.0, 3.0, 4.0, 5.0])


def test_chart_layout_groups_by_prefix_known_groups_first():
    keys = [
        "zeta/custom",
        "loss",
        "memory/peak_rss_mb",
        "tokens_per_second/generation",
        "clip_fraction_high",
        "ratio_min",
        "entropy",
        "rewards/math_verify/mean",
        "rewards/think_answer_format/mean",
        "rewards/math_verify/std",
        "kl",
        "approx_kl",
        "reward/std",
        "reward/mean",
        "policy_loss",
        "clip_fraction_low",
        "ratio_max",
        "grad_norm",
        "zero_std_group_fraction",
        "completion_length/mean",
        "time/step",
        "eval/accuracy/teacher_right",
        "eval/accuracy",
        "learning_rate",
        "learning_warmup",
        "advantages/std",
    ]
    layout = [(c.title, c.labels) for c in chart_layout(keys)]
    # the order of the algorithm: goal, reward, advantages, policy, lengths, speed and memory
    assert layout == [
        ("eval", ["accuracy/teacher_right", "accuracy"]),  # every eval/ key on one chart
        ("reward", ["std", "mean"]),
        ("rewards · mean", ["math_verify", "think_answer_format"]),
        ("rewards · std", ["math_verify"]),
        ("advantages", ["std"]),
        ("zero_std", ["zero_std_group_fraction"]),
        ("ratio", ["ratio_min", "ratio_max"]),
        ("clip", ["clip_fraction_high", "clip_fraction_low"]),
        ("kl", ["kl", "approx_kl"]),
        ("entropy", ["entropy"]),
        ("loss", ["loss", "policy_loss"]),
        ("grad_norm", ["grad_norm"]),
        ("completion_length", ["mean"]),
        ("tokens_per_second", ["generation"]),
        ("time", ["step"]),
        ("memory", ["peak_rss_mb"]),
        ("learning", ["learning_rate", "learning_warmup"]),  # a shared first word: one chart
        ("zeta", ["custom"]),  # unknown groups last, alphabetically
    ]


def test_chart_layout_places_classic_rl_update_metrics_like_their_language_model_names():
    keys = [
        "episode/return_mean",
        "train/kl",
        "train/clip_fraction",
        "train/faults/nonfinite_skipped",
        "time/wall_s",
    ]
    layout = [(c.title, c.labels) for c in chart_layout(keys)]
    assert layout == [
        ("episode", ["return_mean"]),
        ("clip", ["train/clip_fraction"]),
        ("kl", ["train/kl"]),
        ("time", ["wall_s"]),
        ("faults", ["train/faults/nonfinite_skipped"]),
    ]


def test_constant_metrics_are_exactly_equal_at_every_logged_step():
    nan = float("nan")
    rows = [
        {
            "step": 1,
            "clip": 0.0,
            "ratio": 1.0,
            "nan": nan,
            "ulp": 0.1,
            "once": 3.0,
            "gap": 1.0,
            "inf": math.inf,
        },
        {
            "step": 2,
            "clip": 0.0,
            "ratio": 1,
            "nan": nan,
            "ulp": math.nextafter(0.1, 1),
            "gap": nan,
            "inf": nan,
        },
        {"step": 3, "clip": 0.0, "ratio": 1.0, "ulp": 0.1, "gap": 1.0},
    ]
    constant = constant_metrics(rows)
    assert list(constant) == ["clip", "ratio", "nan"]  # NaN equals NaN; one ulp, a NaN gap, inf vs NaN do not
    assert constant["clip"] == 0.0 and constant["ratio"] == 1.0 and math.isnan(constant["nan"])
    assert "once" not in constant  # a single value is not "constant over the run"


def test_downsample_keeps_extremes_and_gaps():
    xs = [float(i) for i in range(100)]
    ys = [math.sin(i / 5) for i in range(100)]
    ys[50] = 9.0  # a spike must survive
    ys[20:30] = [None] * 10  # so must a gap of a whole bucket
    out_x, out_y = downsample(xs, ys, 20)
    assert len(out_x) <= 20 and out_x == sorted(out_x)
    assert 9.0 in out_y and None in out_y
    assert max(y for y in out_y if y is not None) == 9.0
    assert min(y for y in out_y if y is not None) == min(y for y in ys if y is not None)
    assert downsample(xs[:5], ys[:5], 20) == (xs[:5], ys[:5])


def test_load_run_reports_problems_as_notes(tmp_path):
    run = make_run(
        tmp_path / "crashed",
        metrics=[json.dumps(METRICS[0]), "[1, 2]", '{"step": 1, "reward/me'],  # last line cut by a crash
        config="- not\n- a mapping\n",
    )
    data = load_run(run)
    assert data.metrics == [METRICS[0]]
    assert data.config == "- not\n- a mapping\n"
    assert data.notes == [
        "config.yaml holds a list, not a mapping; shown as text",
        "metrics.jsonl line 2: a JSON list, not an object; skipped",
        "metrics.jsonl line 3: not valid JSON (Unterminated string starting at); skipped",
        "no samples.jsonl",
    ]
    assert data.environment_source.startswith("no environment.json in the run directory")
    assert set(data.environment) >= {"python", "torch", "transformers", "grpokit"}


def test_load_run_missing_directory(tmp_path):
    with pytest.raises(FileNotFoundError, match="run directory .*nowhere.* does not exist"):
        load_run(tmp_path / "nowhere")


def test_report_embeds_escaped_data_and_one_hashed_script(tmp_path):
    run = make_run(tmp_path / "run<i>", metrics=METRICS, samples=SAMPLES, environment={"torch": "2.13.0"})
    path = write_report(run)
    assert path == run / "report.html"
    page = path.read_text()
    assert "<title>grpokit report: run&lt;i&gt;</title>" in page

    # model output never appears as markup: only the template's two <script> elements exist
    assert page.count("<script") == 2 and page.count("</script>") == 2
    assert "alert(" in page and "<img" not in page and "\u2028" not in page
    data = page_data(page)
    (group,) = data["runs"][0]["samples"]["groups"]["1"]
    assert group["completions"] == ["4", XSS, "5"]  # decoded back to the exact text
    assert group["rewards"] == [1.0, None, 0.0] and group["reward_components"] == {
        "math_verify": [1.0, None, 0.0]
    }

    # the CSP allows exactly the inline script, and nothing may be fetched
    (csp,) = re.findall(r'http-equiv="Content-Security-Policy" content="([^"]*)"', page)
    (script,) = re.findall(r"<script>(.*?)</script>", page, re.DOTALL)
    digest = base64.b64encode(hashlib.sha256(script.encode()).digest()).decode()
    assert (
        csp == f"default-src 'none'; script-src 'sha256-{digest}'; style-src 'unsafe-inline'; img-src data:"
    )
    markup = re.sub(r'(id="report-data">).*?(</script>)', r"\1\2", page, flags=re.DOTALL)
    assert not re.search(r"""\s(?:src|href)=(?!["']?#)""", markup)  # no external resources, only #anchors


def test_report_data_charts_summary_and_environment(tmp_path):
    run = make_run(tmp_path / "run", metrics=METRICS, samples=SAMPLES, environment={"torch": "2.13.0"})
    data = page_data(render_report([load_run(run)]))
    assert data["title"] == "grpokit report: run"
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d UTC", data["generated"]) and data["grpokit_version"]
    charts = {c["title"]: c["series"] for c in data["charts"]}
    assert list(charts) == ["reward", "kl", "time"]
    (kl,) = charts["kl"]
    assert (kl["label"], kl["x"], kl["y"]) == ("kl", [0, 1, 2], [0.0, None, 0.125])
    (info,) = data["runs"]
    assert info["config"] == {"optim": {"lr": 1e-6}, "seed": 3}
    assert info["environment"] == {"torch": "2.13.0"}
    assert info["environment_source"] == "recorded by the training run (environment.json)"
    assert info["summary"]["final"] == {"reward/mean": 0.75, "kl": 0.125, "time/step": 2.0}
    assert info["header"]["goal"] == {
        "key": "reward/mean",
        "label": "mean reward",
        "before": 0.25,
        "after": 0.75,
        "how": "step 0 → step 2",
        "points": 3,
    }
    assert info["header"]["trained"] == []  # not a trainer's config: nothing to say
    assert info["header"]["warnings"] == ["non-finite values (NaN or inf) logged: kl (1 step)"]
    assert data["constant"] == []
    assert [s["key"] for s in data["goal_chart"]["series"]] == ["reward/mean"]
    assert (info["summary"]["first_step"], info["summary"]["last_step"], info["summary"]["rows"]) == (
        0.0,
        2.0,
        3,
    )
    assert info["notes"] == []


def test_report_without_samples_or_metrics(tmp_path):
    run = make_run(tmp_path / "empty", config=None)
    data = page_data(render_report([load_run(run)]))
    assert data["charts"] == []
    (info,) = data["runs"]
    assert info["samples"]["steps"] == [] and info["config"] is None
    assert info["notes"] == ["no config.yaml", "no metrics.jsonl", "no samples.jsonl"]


def test_sample_rows_are_read_forgivingly(tmp_path):
    samples = [
        {
            "step": 0,
            "prompt": [{"role": "user", "content": [{"type": "text", "text": "hi"}]}],
            "completions": [[{"role": "assistant", "content": "hello"}], "x" * 50],
        },
        {"step": 0, "prompt": "p", "completions": "not a list"},
        {"prompt": "p", "completions": ["a"], "rewards": [float("nan")], "advantages": "bad"},
    ]
    run = make_run(tmp_path / "run", metrics=[], samples=samples)
    data = page_data(render_report([load_run(run)], max_completion_chars=10))
    (info,) = data["runs"]
    assert info["samples"]["steps"] == [-1, 0]
    (chat,) = info["samples"]["groups"]["0"]
    assert chat["prompt"] == [{"role": "user", "content": "hi"}]
    assert chat["completions"] == ["hello", "x" * 10 + "\n… [40 more characters not shown in the report]"]
    assert chat["rewards"] == [None, None] and chat["advantages"] == [None, None]
    assert chat["extras"] == {} and chat["info"] == {}
    (no_step,) = info["samples"]["groups"]["-1"]
    assert no_step["rewards"] == [None] and no_step["advantages"] == [None]
    assert info["notes"] == [
        "samples.jsonl line 2: no 'completions' list; skipped",
        "samples.jsonl line 3: no numeric 'step'; shown at step -1",
    ]


def test_sample_steps_are_spread_when_there_are_too_many(tmp_path):
    samples = [{"step": s, "prompt": "p", "completions": ["a"], "rewards": [1.0]} for s in range(0, 100, 2)]
    run = make_run(tmp_path / "run", metrics=[], samples=samples)
    (info,) = page_data(render_report([load_run(run)], max_sample_steps=5))["runs"]
    assert info["samples"]["steps"] == [0, 24, 48, 74, 98]  # first and last kept, evenly spread
    assert info["samples"]["note"] == "showing 5 of the 50 steps with samples, evenly spread"
    assert info["samples"]["group_count"] == 50 and sorted(info["samples"]["groups"]) == [
        "0",
        "24",
        "48",
        "74",
        "98",
    ]


def test_compare_overlays_runs_on_shared_charts(tmp_path):
    a = make_run(tmp_path / "a" / "seed1", metrics=METRICS)
    b = make_run(tmp_path / "b" / "seed1", metrics=[{"step": 0, "kl": 0.5, "entropy": 1.0}])
    path = write_report(a, other_runs=[b])
    assert path == a / "compare.html"
    data = page_data(path.read_text())
    assert data["title"] == "grpokit compare: a/seed1 vs b/seed1"  # same directory names: parents added
    charts = {c["title"]: [(s["run"], s["label"]) for s in c["series"]] for c in data["charts"]}
    assert charts == {
        "reward": [(0, "mean")],
        "kl": [(0, "kl"), (1, "kl")],
        "entropy": [(1, "entropy")],
        "time": [(0, "step")],
    }
    assert [c["title"] for c in data["charts"]] == ["reward", "kl", "entropy", "time"]


def test_many_points_are_downsampled(tmp_path):
    run = make_run(tmp_path / "long", metrics=[{"step": s, "loss": math.sin(s)} for s in range(5000)])
    (chart,) = page_data(render_report([load_run(run)], max_points=200))["charts"]
    assert len(chart["series"][0]["x"]) <= 200


def test_render_report_rejects_bad_arguments(tmp_path):
    run = load_run(make_run(tmp_path / "run", metrics=METRICS))
    with pytest.raises(ValueError, match="runs is empty"):
        render_report([])
    with pytest.raises(ValueError, match="max_points must be at least 2, got 1"):
        render_report([run], max_points=1)
    with pytest.raises(ValueError, match="max_sample_steps must be at least 1, got 0"):
        render_report([run], max_sample_steps=0)


def test_main_writes_report_and_compare(tmp_path, capsys):
    a = make_run(tmp_path / "a", metrics=METRICS)
    b = make_run(tmp_path / "b", metrics=METRICS)
    assert main([str(a)]) == 0
    assert capsys.readouterr().out.strip() == str(a / "report.html")
    out = tmp_path / "out" / "cmp.html"
    assert main([str(a), "--compare", str(b), "--output", str(out)]) == 0
    assert [r["name"] for r in page_data(out.read_text())["runs"]] == ["a", "b"]


def test_main_missing_run_dir_is_a_usage_error(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([str(tmp_path / "missing")])
    assert exit_info.value.code == 2
    assert "missing' does not exist or is not a directory" in capsys.readouterr().err


def test_other_sample_fields_are_kept(tmp_path):
    row = {
        "step": 0,
        "prompt": "p",
        "completions": ["a", "b"],
        "truncated": [False, True],
        "lengths": [3, float("nan")],
        "answer": "72",
        "meta": {"source": "gsm8k"},
    }
    run = make_run(tmp_path / "run", metrics=[], samples=[row])
    ((group,),) = page_data(render_report([load_run(run)]))["runs"][0]["samples"]["groups"].values()
    assert group["extras"] == {"truncated": [False, True], "lengths": [3.0, None]}
    assert group["info"] == {"answer": "72", "meta": '{"source": "gsm8k"}'}


LM_CONFIG = """
max_steps: 4
model: {name_or_path: Qwen/Qwen2.5-0.5B-Instruct, dtype: bfloat16, lora: {r: 16}}
data: {path: data/gsm8k.jsonl, task: null, prompts_per_step: 8}
generation: {max_new_tokens: 256, temperature: 1.0}
rewards: {reward_funcs: [math_verify, think_format], reward_weights: [1.0, 0.2], reward_model: null}
optim: {learning_rate: 1.0e-06, lr_scheduler: constant}
trainer: grpo
algorithm: {loss_type: dapo, advantage_estimator: grpo, num_generations: 8, beta: 0.04, epsilon_low: 0.2,
  epsilon_high: 0.28, num_iterations: 1}
"""


def lm_row(step, **extra):
    return {
        "step": step,
        "reward/mean": 0.1 * step,
        "rewards/math_verify/failures": 0.0,
        "rewards/unscored_fraction": 0.0,
        "completions/truncated_fraction": 0.25,
        "clip_fraction": 0.0,
        "ratio_mean": 1.0,
        "faults/nonfinite_skipped": 0.0,
        "time/step": 30.0,
        "throughput/generate_tokens_per_s": 1000.0 * step,
        "throughput/train_tokens_per_s": 4000.0,
        "memory/peak_rss_mb": 1500.0 + step,
        "memory/peak_cuda_mb": 20000.0,
        **extra,
    }


def test_header_of_a_language_model_run_with_held_out_accuracy(tmp_path):
    rows = [lm_row(s) for s in range(1, 5)]
    rows[1]["rewards/math_verify/failures"] = 3.0
    rows[2]["faults/nonfinite_skipped"] = 1.0
    rows += [{"step": 2, "eval/accuracy": 0.5}, {"step": 4, "eval/accuracy": 0.7}]
    run = make_run(tmp_path / "run", metrics=rows, config=LM_CONFIG)
    # the demo measures accuracy before training (step 0) in demo_summary.json only
    curve = [{"step": 0, "accuracy": 0.25}, {"step": 2, "accuracy": 0.5}, {"step": 4, "accuracy": 0.7}]
    (run / "demo_summary.json").write_text(json.dumps({"curve": curve, "gain": 0.45}))
    header = run_header(load_run(run))
    assert header["trained"] == [
        ["model", "Qwen/Qwen2.5-0.5B-Instruct, LoRA r = 16, bfloat16"],
        ["data", "data/gsm8k.jsonl"],
        ["rewards", "math_verify ×1, think_format ×0.2"],
        [
            "trainer",
            "grpo: loss dapo · G = 8 · 8 prompts/step · lr 1e-06 · β 0.04 · ε_low 0.2 · ε_high 0.28 · "
            "iterations 1 · max_new_tokens 256 · temperature 1 · 4 steps",
        ],
    ]
    goal = header["goal"]
    assert (goal["key"], goal["label"], goal["before"], goal["after"]) == (
        "eval/accuracy",
        "held-out accuracy",
        0.25,
        0.7,
    )
    assert goal["how"] == "step 0 → step 4"
    assert header["facts"] == [
        ["training time", "2 min 0 s (4 steps)"],
        ["speed (median step)", "generation 2.5k tokens/s, update 4.0k tokens/s"],
        ["peak memory", "RSS 1.5 GB, CUDA 19.5 GB"],
    ]
    assert header["warnings"] == [
        "reward function math_verify failed 3 times at 1 step (first at step 2); those completions got the "
        "fallback reward (rewards/math_verify/failures)",
        "1 update skipped for a non-finite loss or gradient at 1 step (first at step 3; faults/nonfinite_skipped)",
        "25% of completions were cut at max_new_tokens (mean over the run; the last step: 25%); raise it or "
        "reward shorter answers",
    ]

    data = page_data(render_report([load_run(run)]))
    # constant metrics are one line, not charts; a metric that changed once is charted
    assert data["constant"] == [
        ["rewards/unscored_fraction", 0.0],
        ["completions/truncated_fraction", 0.25],
        ["clip_fraction", 0.0],
        ["ratio_mean", 1.0],
        ["time/step", 30.0],
        ["throughput/train_tokens_per_s", 4000.0],
        ["memory/peak_cuda_mb", 20000.0],
    ]
    charted = {s["key"] for chart in data["charts"] for s in chart["series"]}
    assert charted.isdisjoint(k for k, _ in data["constant"])
    assert {"rewards/math_verify/failures", "faults/nonfinite_skipped", "eval/accuracy"} <= charted
    eval_chart = next(c for c in data["charts"] if c["title"] == "eval")
    assert eval_chart["series"][0]["x"] == [0, 2, 4]  # the step-0 point of demo_summary.json joins the curve
    assert data["charts"][0]["title"] == "eval"
    # the header's chart: the goal and, under it, the training reward
    assert data["goal_chart"]["title"] == "held-out accuracy and mean reward"
    assert [s["key"] for s in data["goal_chart"]["series"]] == ["eval/accuracy", "reward/mean"]


def test_goal_without_evaluation_is_the_mean_reward_over_the_first_and_last_tenth():
    rows = [{"step": s, "reward/mean": 0.0 if s <= 10 else 1.0 if s > 90 else 0.5} for s in range(1, 101)]
    goal = goal_metric(metric_series(rows))
    assert (goal["key"], goal["before"], goal["after"]) == ("reward/mean", 0.0, 1.0)
    assert goal["how"] == "mean of steps 1–10 → 91–100"
    assert goal_metric(metric_series([{"step": 1, "reward/mean": 0.5}])) is None  # one value: no before/after
    assert goal_metric(metric_series([{"step": 1, "kl": 0.5}, {"step": 2, "kl": 0.6}])) is None


def test_header_of_a_classic_rl_run(tmp_path):
    config = """
max_steps: 50
environment: {env: CartPole-v1, tasks: null}
policy: {hidden_sizes: [64, 64], activation: tanh}
algorithm: {algorithm: grpo, num_start_states: 8, num_generations: 8, grouping: same_start,
  advantage_mode: returns_to_go, beta: 0.0, epsilon_low: 0.2, num_iterations: 4}
optim: {learning_rate: 0.003}
"""
    rows = [
        {
            "step": s,
            "episode/return_mean": 20.0 + s,
            "train/kl": 0.01,
            "train/faults/nonfinite_skipped": 0.0,
            "time/wall_s": 2.0 * s,
            "time/env_steps": 1000.0 * s,
        }
        for s in range(1, 6)
    ]
    rows += [{"step": 5, "eval/return_mean": 120.0}, {"step": 5, "eval/return_std": 3.0}]
    run = load_run(make_run(tmp_path / "rl", metrics=rows, config=config))
    header = run_header(run)
    assert header["trained"] == [
        ["environment", "CartPole-v1"],
        ["policy", "MLP 64×64, tanh"],
        [
            "trainer",
            "rl grpo: B = 8 · G = 8 · grouping same_start · advantages returns_to_go · lr 0.003 · β 0 · ε 0.2 · "
            "iterations 4 · 50 steps",
        ],
    ]
    # one evaluation only: the goal falls back to the training return
    goal = header["goal"]
    assert (goal["key"], goal["before"], goal["after"]) == ("episode/return_mean", 21.0, 25.0)
    assert header["facts"] == [["training time", "10 s"], ["speed", "500 env steps/s"]]
    assert header["warnings"] == []
    data = page_data(render_report([run]))
    assert [c["title"] for c in data["charts"]] == ["eval", "episode", "time"]
    assert [k for k, _ in data["constant"]] == ["train/kl", "train/faults/nonfinite_skipped"]


def test_compare_charts_a_metric_constant_at_different_values(tmp_path):
    a = make_run(tmp_path / "a", metrics=[{"step": s, "lr": 1e-6, "clip": 0.0} for s in range(3)])
    b = make_run(tmp_path / "b", metrics=[{"step": s, "lr": 2e-6, "clip": 0.0} for s in range(3)])
    data = page_data(render_report([load_run(a), load_run(b)]))
    assert data["constant"] == [["clip", 0.0]]  # the same in both runs
    assert [c["title"] for c in data["charts"]] == ["lr"]  # constant in each, but the runs differ
    assert data["goal_chart"] is None


PROXY_GOLD_CONFIG = """
trainer: grpo
model: {name_or_path: policy}
data: {task: addition}
rewards: {reward_funcs: [task], reward_model: rm/final, reward_weights: [0.0, 1.0]}
"""


def proxy_gold_rows(gold_after: float):
    # 20 steps: the header compares the mean of the first 2 with the mean of the last 2
    return [
        {
            "step": s,
            "reward/mean": -0.5 + 0.1 * s,
            "rewards/reward_model/mean": -0.5 + 0.1 * s,
            "rewards/task/mean": 0.5 if s <= 10 else gold_after + 0.01 * (s % 2),
        }
        for s in range(1, 21)
    ]


def test_header_shows_proxy_against_gold_and_warns_when_gold_falls(tmp_path):
    run = load_run(make_run(tmp_path / "hacked", metrics=proxy_gold_rows(0.1), config=PROXY_GOLD_CONFIG))
    header = run_header(run)
    assert ["rewards", "task ×0, reward model rm/final ×1"] in header["trained"]
    assert [
        "proxy vs gold",
        "optimised: reward_model -0.35 → 1.45 · logged at weight 0: task 0.5 → 0.105",
    ] in header["facts"]
    assert header["warnings"] == [
        "the optimised reward rose (reward_model -0.35 → 1.45) while the reward logged at weight 0 fell "
        "(task 0.5 → 0.105): the optimised reward is being over-optimised (reward hacking)"
    ]
    # both curves are charted together, one line per reward function
    data = page_data(render_report([run]))
    chart = next(c for c in data["charts"] if c["title"] == "rewards · mean")
    assert {s["key"] for s in chart["series"]} == {"rewards/reward_model/mean", "rewards/task/mean"}


def test_header_without_a_gold_function_or_when_gold_holds(tmp_path):
    # the gold rises with the proxy: the fact, no warning
    run = load_run(make_run(tmp_path / "fine", metrics=proxy_gold_rows(0.9), config=PROXY_GOLD_CONFIG))
    header = run_header(run)
    assert any(label == "proxy vs gold" for label, _ in header["facts"])
    assert header["warnings"] == []
    # every reward optimised (no weight 0): no proxy/gold line
    config = PROXY_GOLD_CONFIG.replace("[0.0, 1.0]", "[1.0, 1.0]")
    run = load_run(make_run(tmp_path / "plain", metrics=proxy_gold_rows(0.1), config=config))
    header = run_header(run)
    assert not any(label == "proxy vs gold" for label, _ in header["facts"]) and header["warnings"] == []


EPISODE = [
    {
        "role": "assistant",
        "content": "I will look it up",
        "tool_calls": [
            {
                "type": "function",
                "function": {"name": "search", "arguments": {"query": "<b>capital</b>", "k": 2}},
            }
        ],
        "reward": 0.0,
    },
    {"role": "tool", "name": "search", "content": "HTTP 500", "failed": True},
    {"role": "assistant", "content": "Paris " + XSS, "reward": 1.0},
    {"role": "user", "content": "correct, <i>well done</i>"},
]


def test_a_multi_turn_sample_is_its_conversation_message_by_message(tmp_path):
    row = {
        "step": 0,
        "prompt": [{"role": "user", "content": "What is the capital of France?"}],
        "completions": ["<decoded episode>", "Lyon"],
        "rewards": [1.0, 0.0],
        "advantages": [0.5, -0.5],
        "truncated": [False, False],
        "conversation": [EPISODE, [{"role": "assistant", "content": "Lyon", "reward": float("nan")}]],
        "turns": [2, 1],
    }
    run = make_run(tmp_path / "run", metrics=[], samples=[row, {**row, "step": 1, "conversation": "bad"}])
    page = write_report(run).read_text()
    data = page_data(page)
    (group,) = data["runs"][0]["samples"]["groups"]["0"]
    episode, short = group["conversations"]
    assert [m["role"] for m in episode] == ["assistant", "tool", "assistant", "user"]
    assert episode[0] == {
        "role": "assistant",
        "content": "I will look it up",
        "tool_calls": [{"name": "search", "arguments": '{"query": "<b>capital</b>", "k": 2}'}],
        "reward": 0.0,
    }
    assert episode[1] == {"role": "tool", "content": "HTTP 500", "name": "search", "failed": True}
    assert episode[2] == {"role": "assistant", "content": "Paris " + XSS, "reward": 1.0}
    assert episode[3] == {"role": "user", "content": "correct, <i>well done</i>"}
    assert short == [{"role": "assistant", "content": "Lyon", "reward": None}]  # NaN: no reward to show
    assert group["extras"] == {"truncated": [False, False], "turns": [2.0, 1.0]}  # shown beside each reward
    assert group["completions"] == ["<decoded episode>", "Lyon"]
    # a malformed conversation falls back to the completions' text, with a note
    (bad,) = data["runs"][0]["samples"]["groups"]["1"]
    assert bad["conversations"] == [None, None]
    assert data["runs"][0]["notes"] == [
        "samples.jsonl line 2: 'conversation' is not a list of 2 message lists; completions shown as text"
    ]
    # the messages are data, never markup
    assert page.count("<script") == 2 and "<i>" not in page and "<b>" not in page and "<img" not in page
    # every message is cut to max_completion_chars, as a completion is
    (group,) = page_data(render_report([load_run(run)], max_completion_chars=8))["runs"][0]["samples"][
        "groups"
    ]["0"]
    assert group["conversations"][0][2]["content"].startswith("Paris </\n… [")


def test_single_completion_groups_hold_no_conversation(tmp_path):
    run = make_run(tmp_path / "run", metrics=[], samples=SAMPLES)
    (group,) = page_data(render_report([load_run(run)]))["runs"][0]["samples"]["groups"]["1"]
    assert "conversations" not in group
    assert set(group) == {
        "prompt",
        "completions",
        "rewards",
        "advantages",
        "reward_components",
        "extras",
        "info",
    }
