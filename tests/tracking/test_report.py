import base64
import hashlib
import json
import math
import re
from pathlib import Path

import pytest

from grpokit.tracking.report import (
    chart_layout,
    downsample,
    load_run,
    main,
    metric_series,
    render_report,
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
    ]
    layout = [(c.title, c.labels) for c in chart_layout(keys)]
    assert layout == [
        ("reward", ["std", "mean"]),
        ("rewards · mean", ["math_verify", "think_answer_format"]),
        ("rewards · std", ["math_verify"]),
        ("kl", ["kl", "approx_kl"]),
        ("clip", ["clip_fraction_high", "clip_fraction_low"]),
        ("entropy", ["entropy"]),
        ("completion_length", ["mean"]),
        ("zero_std", ["zero_std_group_fraction"]),
        ("tokens_per_second", ["generation"]),
        ("memory", ["peak_rss_mb"]),
        ("time", ["step"]),
        ("loss", ["loss", "policy_loss"]),
        ("grad_norm", ["grad_norm"]),  # a lone first word: its own chart
        ("ratio", ["ratio_min", "ratio_max"]),  # a shared first word: one chart
        ("zeta", ["custom"]),
    ]


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
    assert info["summary"]["headline"] == [
        ["reward/mean (last)", 0.75],
        ["reward/mean (max)", 0.75],
        ["kl (last)", 0.125],
    ]
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
