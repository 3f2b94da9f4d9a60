import json

import pytest
import torch
from safetensors.torch import load_file

from grpokit.apps import demo
from grpokit.apps.demo import (
    cache_dir,
    format_summary,
    held_out_metrics,
    held_out_problems,
    prepare_demo_model,
    run_control,
    run_demo,
    warmup_problems,
)
from grpokit.config import DemoGRPOConfig, GRPOConfig, build_config
from grpokit.data import get_task


def tiny_demo_config(tmp_path, run_name="run", **demo_fields) -> DemoGRPOConfig:
    """The demo pipeline at toy size: every phase runs, in about a second."""
    return build_config(DemoGRPOConfig, {
        "max_steps": 4,
        "data": {"task": "addition", "prompts_per_step": 2, "num_train_problems": 40, "num_eval_problems": 8},
        "generation": {"max_new_tokens": 5},
        "algorithm": {"num_generations": 2},
        "optim": {"learning_rate": 3e-3},
        # The toy warm-up never gets a sum right; a format reward on the first digit gives GRPO a signal.
        "rewards": {
            "reward_funcs": ["task", "format"],
            "reward_kwargs": {"format": {"pattern": "^[0-4]", "mode": "search"}},
        },
        "demo": {
            "hidden_size": 16, "num_layers": 1, "num_heads": 2, "sft_batch_size": 8, "sft_eval_every": 2,
            "sft_eval_problems": 8, "sft_max_steps": 4, "eval_every": 2, **demo_fields,
        },
        "logging": {
            "output_dir": str(tmp_path / "runs"), "run_name": run_name, "quiet": True, "report_to": [],
            "report": False,
        },
    })  # fmt: skip


def weights(model_dir):
    return load_file(str(model_dir / "model.safetensors"))


@pytest.mark.slow
def test_demo_runs_caches_the_warmup_and_repeats_exactly(tmp_path, monkeypatch):
    monkeypatch.setenv("GRPOKIT_CACHE", str(tmp_path / "cache"))
    assert cache_dir() == tmp_path / "cache" / "demo"
    torch.set_num_threads(1)
    messages, threads = [], []

    def log(message):
        messages.append(message)
        threads.append(torch.get_num_threads())

    config = tiny_demo_config(tmp_path, num_threads=2)
    result = run_demo(config, log=log)
    assert set(threads) == {2} and torch.get_num_threads() == 1  # demo.num_threads, then restored
    assert result.model_dir.parent == cache_dir()
    assert any(m.startswith("warm-up: 0.") and "imitating the teacher" in m for m in messages)

    summary = json.loads((result.train_result.run_dir / "demo_summary.json").read_text())
    assert summary == json.loads(json.dumps(result.summary))
    assert summary["before"] == result.before and summary["num_eval_problems"] == 8
    assert summary["warmup"]["steps"] == 4 and summary["warmup"]["cached"] is False
    assert summary["warmup"]["stop_reason"] in ("threshold", "max_steps")
    assert [p["step"] for p in summary["curve"]] == [0, 2, 4]  # before, every eval_every steps, the end
    assert summary["curve"][0]["accuracy"] == result.before["accuracy"]
    assert summary["curve"][-1]["accuracy"] == result.after["accuracy"]
    assert summary["gain"] == result.after["accuracy"] - result.before["accuracy"]
    assert summary["control"] is None
    rows = [
        json.loads(line) for line in (result.train_result.run_dir / "metrics.jsonl").read_text().splitlines()
    ]
    eval_rows = [r for r in rows if "eval/accuracy" in r]
    assert [(r["step"], r["eval/accuracy"]) for r in eval_rows] == [
        (2, result.curve[1]["accuracy"]),
        (4, result.after["accuracy"]),
    ]

    # A cold cache elsewhere repeats the warm-up bit for bit, and the whole run's numbers.
    monkeypatch.setenv("GRPOKIT_CACHE", str(tmp_path / "cache2"))
    again = run_demo(tiny_demo_config(tmp_path, "again", num_threads=2), log=lambda _: None)
    assert again.model_dir.name == result.model_dir.name
    first, second = weights(result.model_dir), weights(again.model_dir)
    assert first.keys() == second.keys() and all(torch.equal(first[k], second[k]) for k in first)
    assert (again.before, again.after, again.curve) == (result.before, result.after, result.curve)
    final, final_again = weights(result.train_result.final_dir), weights(again.train_result.final_dir)
    assert all(torch.equal(final[k], final_again[k]) for k in final)
    assert not all(torch.equal(final[k], first[k]) for k in final)  # GRPO did change the model

    # The warm cache is reused.
    messages.clear()
    monkeypatch.setenv("GRPOKIT_CACHE", str(tmp_path / "cache"))
    cached = run_demo(tiny_demo_config(tmp_path, "cached", num_threads=2), log=log)
    assert cached.model_dir == result.model_dir and cached.summary["warmup"]["cached"] is True
    assert messages[0] == f"warm-up: cached model {result.model_dir}"
    assert cached.after == result.after


@pytest.mark.slow
def test_evaluating_during_grpo_does_not_change_the_run(tmp_path, monkeypatch):
    monkeypatch.setenv("GRPOKIT_CACHE", str(tmp_path / "cache"))
    curve = run_demo(tiny_demo_config(tmp_path, "curve", eval_every=1), log=lambda _: None)
    plain = run_demo(tiny_demo_config(tmp_path, "plain", eval_every=0), log=lambda _: None)
    assert [p["step"] for p in curve.curve] == [0, 1, 2, 3, 4] and [p["step"] for p in plain.curve] == [0]
    assert curve.after == plain.after
    a, b = weights(curve.train_result.final_dir), weights(plain.train_result.final_dir)
    assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.slow
def test_control_continues_the_warmup_on_the_teachers_data(tmp_path, monkeypatch):
    monkeypatch.setenv("GRPOKIT_CACHE", str(tmp_path / "cache"))
    result = run_demo(tiny_demo_config(tmp_path, control=True), log=lambda _: None)
    control = result.summary["control"]
    assert control["steps"] == 4 and [p["step"] for p in control["curve"]] == [0, 2, 4]
    assert control["curve"] == result.control
    assert control["curve"][0] == result.curve[0]  # both start from the warmed-up model
    assert result.summary["seconds"]["control"] > 0
    assert "control: 4 more supervised steps" in format_summary(result.summary)
    # Deterministic, and independent of the GRPO run before it.
    config = tiny_demo_config(tmp_path, "unused")
    again, _ = run_control(
        config, result.model_dir, held_out_problems(get_task("addition"), 8), 4, 2, log=lambda _: None
    )
    assert again == result.control


def test_warmup_stops_at_the_first_check_over_the_threshold(tmp_path, monkeypatch):
    monkeypatch.setenv("GRPOKIT_CACHE", str(tmp_path / "cache"))
    scripted = iter([0.2, 0.5, 0.95, 1.0])
    monkeypatch.setattr(demo, "imitation_accuracy", lambda *args: next(scripted))
    config = tiny_demo_config(tmp_path, sft_stop_accuracy=0.9, sft_eval_every=1, sft_max_steps=10)
    info = json.loads((prepare_demo_model(config, lambda _: None) / "warmup.json").read_text())
    assert info["steps"] == 3 and info["stop_reason"] == "threshold"
    assert [p["imitation_accuracy"] for p in info["curve"]] == [0.2, 0.5, 0.95]

    messages = []
    monkeypatch.setattr(demo, "imitation_accuracy", lambda *args: 0.1)
    config = tiny_demo_config(tmp_path, sft_eval_every=2, sft_max_steps=6)
    info = json.loads((prepare_demo_model(config, messages.append) / "warmup.json").read_text())
    assert info["steps"] == 6 and info["stop_reason"] == "max_steps" and len(info["curve"]) == 3
    assert any("stayed below 0.9 for 6 steps" in m for m in messages)


class RecordingBar:
    """Stands in for grpokit.tracking.ProgressBar: records what the warm-up shows."""

    made: list["RecordingBar"] = []

    def __init__(self, total, *, enabled=True, desc="train", **kwargs):
        self.total, self.enabled, self.desc, self.updates, self.closed = total, enabled, desc, [], False
        RecordingBar.made.append(self)

    def update(self, metrics, keys=()):
        self.updates.append({key: metrics[key] for key in keys})

    def close(self):
        self.closed = True


@pytest.mark.parametrize("logging", [{"quiet": False}, {"quiet": True}, {"quiet": False, "json_logs": True}])
def test_warmup_progress_bar_carries_the_imitation_accuracy(tmp_path, monkeypatch, logging):
    monkeypatch.setenv("GRPOKIT_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(demo, "imitation_accuracy", lambda *args: 0.25)
    monkeypatch.setattr(demo, "ProgressBar", RecordingBar)
    RecordingBar.made = []
    config = tiny_demo_config(tmp_path, sft_eval_every=2, sft_max_steps=4)
    config = config.model_copy(update={"logging": config.logging.model_copy(update=logging)})
    messages = []
    prepare_demo_model(config, messages.append)
    (bar,) = RecordingBar.made
    shown = not (logging["quiet"] or logging.get("json_logs", False))
    assert bar.enabled == shown and bar.desc == "warm-up" and bar.total == 4 and bar.closed
    # One tick per step; the accuracy appears at the first check (step 2) and stays until the next.
    assert [u["imitation_accuracy"] for u in bar.updates][1:] == [0.25, 0.25, 0.25]
    assert all(u["loss"] > 0 for u in bar.updates)
    checks = [m for m in messages if "imitation accuracy 0.250" in m and m.startswith("warm-up: step")]
    # With the bar, the checks are in its postfix, not printed; without it they are log lines.
    assert len(checks) == (0 if shown else 2)
    assert any(
        m.startswith("warm-up: done after 4 steps") and "imitation accuracy 0.250" in m for m in messages
    )


def test_fixed_warmup_steps_skip_the_checks(tmp_path, monkeypatch):
    monkeypatch.setenv("GRPOKIT_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(demo, "imitation_accuracy", lambda *args: pytest.fail("no check with sft_steps set"))
    model_dir = prepare_demo_model(tiny_demo_config(tmp_path, sft_steps=3), lambda _: None)
    info = json.loads((model_dir / "warmup.json").read_text())
    assert info["steps"] == 3 and info["stop_reason"] == "fixed_steps" and info["curve"] == []
    assert (model_dir / "warmup_state.pt").is_file()


def test_the_cache_key_follows_the_warmup_settings_only(tmp_path):
    key = demo._warmup_key
    base = tiny_demo_config(tmp_path)
    assert key(base) == key(
        tiny_demo_config(tmp_path, "other", eval_every=0, control=True, num_threads=2, eval_k=4)
    )
    assert key(base) != key(tiny_demo_config(tmp_path, sft_stop_accuracy=0.8))
    assert key(base) != key(base.model_copy(update={"seed": 1}))


def test_held_out_metrics_are_split_by_whether_the_teacher_is_right(monkeypatch):
    task = get_task("addition")
    rows = held_out_problems(task, 40)
    n_wrong = sum(task.teacher_is_wrong(r) for r in rows)
    assert 0 < n_wrong < 40

    def fake_evaluate(model, tokenizer, group, check, *, k, max_new_tokens, seed):
        # a policy that is right exactly where the teacher is, with 2 of 4 samples right there
        right = not task.teacher_is_wrong(group[0])
        assert all(task.teacher_is_wrong(r) != right for r in group)
        out = {"accuracy": float(right), "num_problems": len(group)}
        if k > 1:
            out.update({f"pass@{k}": float(right), "sample_accuracy": 0.5 * right, "num_samples": k})
        return out

    monkeypatch.setattr("grpokit.apps.evaluation.evaluate", fake_evaluate)
    metrics = held_out_metrics(None, None, task, rows, k=4, max_new_tokens=5)
    assert metrics["accuracy"] == pytest.approx((40 - n_wrong) / 40, abs=1e-12)
    assert metrics["pass@4"] == pytest.approx((40 - n_wrong) / 40, abs=1e-12)
    assert metrics["sample_accuracy"] == pytest.approx(0.5 * (40 - n_wrong) / 40, abs=1e-12)
    assert metrics["accuracy/teacher_right"] == 1.0 and metrics["accuracy/teacher_wrong"] == 0.0
    assert metrics["teacher_wrong_fraction"] == n_wrong / 40 and metrics["num_problems"] == 40
    with pytest.raises(ValueError, match="rows is empty"):
        held_out_metrics(None, None, task, [], max_new_tokens=5)


def test_held_out_and_validation_problems_never_appear_in_training(tmp_path):
    task = get_task("addition")
    config = tiny_demo_config(tmp_path)
    train, validation = warmup_problems(task, config)
    assert len(train) == 40 and len(validation) == 8
    assert train == task.make_problems(40, seed=0, split="train")  # the prompts GRPO trains on, too
    held_out = {row["prompt"] for row in held_out_problems(task, 500)}
    train_prompts = {row["prompt"] for row in train}
    assert not train_prompts & held_out and not train_prompts & {row["prompt"] for row in validation}
    assert not held_out & {row["prompt"] for row in task.make_problems(5000, seed=0, split="train")}


def test_summary_table():
    point = {"accuracy": 0.5, "accuracy/teacher_right": 0.99, "accuracy/teacher_wrong": 0.02}
    after = {"accuracy": 0.75, "accuracy/teacher_right": 0.98, "accuracy/teacher_wrong": 0.51}
    summary = {
        "num_eval_problems": 500, "teacher_flaw": "forgets a carry", "grpo": {"steps": 900},
        "before": {**point, "teacher_wrong_fraction": 0.49}, "after": after, "gain": 0.25,
        "control": {"steps": 900, "curve": [{"step": 0, **point}, {"step": 900, **point}]},
    }  # fmt: skip
    table = format_summary(summary)
    assert "500 problems never trained on" in table and "(teacher forgets a carry)" in table
    assert "(51%)" in table and "(49%)" in table
    lines = table.splitlines()
    assert lines[3].split()[-3:] == ["0.500", "0.990", "0.020"]
    assert lines[4].startswith("  after GRPO (900 steps)") and lines[4].split()[-3:] == [
        "0.750",
        "0.980",
        "0.510",
    ]
    assert lines[5].startswith("  control: 900 more supervised steps")
    assert lines[-1] == "  GRPO gain: +25.0 points"


def test_grpo_uses_the_demo_learning_rate_unless_the_config_sets_one(tmp_path):
    from grpokit.apps.demo import demo_config, demo_optim

    default = demo_optim(demo_config())
    assert (default.learning_rate, default.lr_scheduler) == (3e-4, "linear")
    assert GRPOConfig().optim.learning_rate == 1e-4  # the general default is left alone
    mine = demo_optim(demo_config({"learning_rate": "1e-4", "demo.grpo_lr_scheduler": "cosine"}))
    assert (mine.learning_rate, mine.lr_scheduler) == (1e-4, "cosine")
    mine = demo_optim(demo_config({"lr_scheduler": "constant"}))
    assert (mine.learning_rate, mine.lr_scheduler) == (3e-4, "constant")


def test_demo_model_shape_is_validated():
    from grpokit.apps.demo import demo_config
    from grpokit.config import ConfigError

    with pytest.raises(ConfigError, match=r"demo: .*hidden_size \(64\) must be divisible by num_heads \(3\)"):
        demo_config({"demo.num_heads": "3"})


def test_a_demo_config_without_a_task_is_named(tmp_path, monkeypatch):
    monkeypatch.setenv("GRPOKIT_CACHE", str(tmp_path / "cache"))
    # A user's model with the demo section passes validation without data.task; the demo still needs one.
    config = build_config(DemoGRPOConfig, {"model": {"name_or_path": str(tmp_path / "model")}})
    with pytest.raises(ValueError, match=r"data.task is unset: the demo .* on a built-in task"):
        prepare_demo_model(config, lambda _: None)
    with pytest.raises(ValueError, match=r"data.task is unset"):
        run_demo(config, log=lambda _: None)
