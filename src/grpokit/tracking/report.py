"""The run report: one self-contained HTML file that opens on the result, then the curves, the sampled
groups, the config and versions.

``write_report(run_dir)`` reads what a training run left in its directory::

    RUN_DIR/config.yaml        resolved config (a YAML mapping)
    RUN_DIR/metrics.jsonl      {"step": 3, "reward/mean": 0.41, "kl": 0.002, ...} per training step
    RUN_DIR/samples.jsonl      {"step": 3, "prompt": ..., "completions": [G], "rewards": [G], "advantages": [G]}
    RUN_DIR/environment.json   optional: library versions at training time
    RUN_DIR/demo_summary.json  optional (``grpokit train`` demo): held-out accuracy before and after

and writes ``RUN_DIR/report.html``. Its header says what was trained on what (model, data, rewards,
trainer and key settings, from the config), the goal metric before -> after (held-out accuracy when the
run evaluated, else the mean reward or episode return, averaged over the first and the last steps), the
training time, speed, peak memory and warnings (reward failures, skipped non-finite updates, truncated
completions). Below it: every metric that changed as a curve (one chart per metric group, the prefix before
the first ``/``, in the order of the algorithm: reward, advantages, policy, lengths, speed and memory),
the metrics that never changed on one line, a per-step browser of the sampled groups (the G completions of
each prompt side by side with reward and advantage, best and worst marked; a multi-turn episode, whose row
holds a ``conversation`` per completion, as its messages in order: model turns with their tool calls and
rewards, tool results, environment feedback), the config and the environment. With ``other_runs`` the same charts overlay several runs on shared axes (``grpokit compare``).

The file needs no network and no other file: the data is one inline JSON block and the charts are drawn
as SVG by a small inline script. Reading is forgiving, because a report is most wanted for runs that went
wrong: truncated or malformed lines, NaN values, keys that come and go, missing files are shown as
notes or gaps, never as a crash.

Safety: completions are model output and may contain markup (``<script>``). The data block escapes
``<``, ``>`` and ``&``, the page inserts every run string as text (``textContent``), and a
Content-Security-Policy allows only the report's own script (by hash) and no network access at all.
"""

from __future__ import annotations

import argparse
import base64
import datetime
import hashlib
import html
import importlib.metadata
import importlib.resources
import json
import math
import os
import platform
import re
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeGuard

__all__ = [
    "KNOWN_GROUPS",
    "Chart",
    "RunData",
    "chart_layout",
    "constant_metrics",
    "current_environment",
    "downsample",
    "goal_metric",
    "load_run",
    "main",
    "metric_series",
    "proxy_and_gold",
    "render_report",
    "run_header",
    "write_report",
]

# Charts of these groups come first, in this order (the order of the algorithm: the goal and the reward,
# the advantages and the groups that carry no signal, the policy update, lengths, then speed and memory);
# any other group follows alphabetically.
KNOWN_GROUPS = (
    "eval",
    "reward",
    "rewards",
    "episode",
    "advantages",
    "zero_std",
    "groups",
    "dynamic_sampling",
    "ratio",
    "clip",
    "kl",
    "entropy",
    "loss",
    "value",
    "explained_variance",
    "grad_norm",
    "lr",
    "completion_length",
    "completions",
    "loss_mask",
    "logprobs",
    "rollout_is",
    "throughput",
    "tokens",
    "time",
    "memory",
    "weight_sync",
    "faults",
    "data",
)
# The goal metric of the header, the first of these a run logged at two steps or more: held-out
# accuracy (language-model runs that evaluate), evaluation return (classic RL), else the training reward.
GOAL_METRICS = (
    ("eval/accuracy", "held-out accuracy"),
    ("eval/return_mean", "evaluation return"),
    ("reward/mean", "mean reward"),
    ("episode/return_mean", "mean episode return"),
)
# The training curve drawn under an evaluation goal in the header (smoothed, the raw values faint).
_GOAL_COMPANIONS = {"eval/accuracy": "reward/mean", "eval/return_mean": "episode/return_mean"}
# Completions cut at max_new_tokens above this share (mean over the run) are a warning in the header.
TRUNCATION_WARNING = 0.1
_MAX_NOTES = 20


@dataclass
class RunData:
    """What one run directory holds, as read by :func:`load_run` (problems are kept in ``notes``)."""

    path: Path
    name: str
    config: dict[str, Any] | str | None  # a str when config.yaml exists but is not a YAML mapping
    metrics: list[dict[str, Any]]  # metrics.jsonl rows, in file order
    samples: list[dict[str, Any]]  # samples.jsonl rows, in file order, each with its line number as "_line"
    environment: dict[str, Any]
    environment_source: str
    notes: list[str] = field(default_factory=list)
    demo_summary: dict[str, Any] | None = None  # demo_summary.json of a ``grpokit train`` demo run


@dataclass
class Chart:
    """One chart: the metric keys drawn on it with their legend labels, in first-logged order."""

    group: str
    title: str
    keys: list[str]
    labels: list[str]


def load_run(run_dir: str | os.PathLike) -> RunData:
    """Read a run directory; missing or malformed parts become notes, not errors.

    Raises:
        FileNotFoundError: ``run_dir`` is not a directory.
    """
    path = Path(run_dir)
    if not path.is_dir():
        raise FileNotFoundError(f"run directory {str(path)!r} does not exist or is not a directory")
    notes: list[str] = []
    config = _read_config(path / "config.yaml", notes)
    metrics = [row for _, row in _read_jsonl(path / "metrics.jsonl", notes)]
    samples = _read_jsonl(path / "samples.jsonl", notes)
    environment, source = _read_environment(path / "environment.json", notes)
    demo_summary = _read_demo_summary(path / "demo_summary.json", notes)
    return RunData(
        path=path,
        name=path.resolve().name,
        config=config,
        metrics=metrics,
        samples=[{"_line": line, **row} for line, row in samples],
        environment=environment,
        environment_source=source,
        notes=notes,
        demo_summary=demo_summary,
    )


def _read_config(path: Path, notes: list[str]) -> dict[str, Any] | str | None:
    import yaml  # lazy: only the report needs it here

    if not path.is_file():
        notes.append("no config.yaml")
        return None
    text = path.read_text(encoding="utf-8", errors="replace")
    try:
        config = yaml.safe_load(text)
    except yaml.YAMLError as err:
        notes.append(f"config.yaml is not valid YAML ({str(err).splitlines()[0]}); shown as text")
        return text
    if not isinstance(config, dict):
        notes.append(f"config.yaml holds a {type(config).__name__}, not a mapping; shown as text")
        return text
    return config


def _read_jsonl(path: Path, notes: list[str]) -> list[tuple[int, dict[str, Any]]]:
    """(line number, object) for each JSON-object line; a bad line (e.g. cut by a crash) becomes a note."""
    if not path.is_file():
        notes.append(f"no {path.name}")
        return []
    rows = []
    with open(path, encoding="utf-8", errors="replace") as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line.strip())
            except json.JSONDecodeError as err:
                notes.append(f"{path.name} line {number}: not valid JSON ({err.msg}); skipped")
                continue
            if not isinstance(row, dict):
                notes.append(
                    f"{path.name} line {number}: a JSON {type(row).__name__}, not an object; skipped"
                )
                continue
            rows.append((number, row))
    return rows


def _read_environment(path: Path, notes: list[str]) -> tuple[dict[str, Any], str]:
    if path.is_file():
        try:
            environment = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as err:
            notes.append(f"environment.json is not valid JSON ({err.msg})")
        else:
            if isinstance(environment, dict):
                return environment, "recorded by the training run (environment.json)"
            notes.append("environment.json is not a JSON object")
    return current_environment(), (
        "no environment.json in the run directory: versions collected when this report was written, "
        "which may differ from the training run"
    )


def _read_demo_summary(path: Path, notes: list[str]) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    try:
        summary = json.loads(path.read_text(encoding="utf-8", errors="replace"))
    except json.JSONDecodeError as err:
        notes.append(f"demo_summary.json is not valid JSON ({err.msg}); ignored")
        return None
    if not isinstance(summary, dict):
        notes.append("demo_summary.json is not a JSON object; ignored")
        return None
    return summary


def current_environment() -> dict[str, str]:
    """Python, platform and the versions of the libraries a grpokit run depends on, in this process."""
    environment = {"python": platform.python_version(), "platform": platform.platform()}
    for package in (
        "grpokit",
        "torch",
        "transformers",
        "tokenizers",
        "accelerate",
        "peft",
        "trl",
        "numpy",
        "math-verify",
    ):
        try:
            environment[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            environment[package] = "not installed"
    return environment


def _number(value: Any) -> float | None:
    """A JSON number as float (NaN and inf included); anything else, bool included, is None."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value)


def metric_series(rows: Sequence[dict[str, Any]]) -> dict[str, tuple[list[float], list[float | None]]]:
    """Every numeric metric as ``key -> (steps, values)``, steps ascending, keys in first-logged order.

    A row without a numeric ``step`` sits at its row index. When a step is logged twice (a resumed run
    repeats the steps after its last checkpoint) the later row wins. A key missing from a row is skipped
    for that step (metrics logged every k steps stay connected); a NaN or inf value is kept as ``None``,
    a gap in the curve. Keys that never hold a number are left out.
    """
    series: dict[str, tuple[list[float], list[float | None]]] = {}
    for key, (xs, values) in _raw_series(rows).items():
        series[key] = (xs, [value if math.isfinite(value) else None for value in values])
    return series


def _raw_series(rows: Sequence[dict[str, Any]]) -> dict[str, tuple[list[float], list[float]]]:
    """:func:`metric_series` with the non-finite values kept as they were logged (NaN, inf, -inf)."""
    by_step: dict[float, dict[str, float]] = {}
    order: dict[str, None] = {}
    for index, row in enumerate(rows):
        step = _number(row.get("step"))
        step = float(index) if step is None or not math.isfinite(step) else step
        merged = by_step.setdefault(step, {})
        for key, value in row.items():
            number = _number(value)
            if key != "step" and number is not None:
                merged[key] = number
                order.setdefault(key, None)
    steps = sorted(by_step)
    series: dict[str, tuple[list[float], list[float]]] = {}
    for key in order:
        xs = [step for step in steps if key in by_step[step]]
        series[key] = (xs, [by_step[step][key] for step in xs])
    return series


def _same(a: float, b: float) -> bool:
    """Equal, with NaN equal to NaN."""
    return a == b or (math.isnan(a) and math.isnan(b))


def constant_metrics(rows: Sequence[dict[str, Any]]) -> dict[str, float]:
    """The metrics logged at two steps or more whose every value is the same (NaN counts as equal to NaN),
    ``key -> value``, in first-logged order: the report lists them on one line instead of drawing a flat
    chart each. A metric with a single value, or one that varies by one ulp, is not constant."""
    out = {}
    for key, (_, values) in _raw_series(rows).items():
        if len(values) > 1 and all(_same(v, values[0]) for v in values[1:]):
            out[key] = values[0]
    return out


def _group_of(segment: str) -> str | None:
    """The known group of a key segment (``clip_fraction_low`` -> ``clip``, ``policy_loss`` -> ``loss``)."""
    for group in sorted(KNOWN_GROUPS, key=len, reverse=True):
        if segment == group or segment.startswith(group + "_") or segment.endswith("_" + group):
            return group
    return None


def chart_layout(keys: Iterable[str]) -> list[Chart]:
    """Arrange metric keys into charts: one chart per prefix, known groups first (:data:`KNOWN_GROUPS`).

    - ``reward/mean``, ``reward/std``: chart ``reward``, labels ``mean``, ``std``;
    - ``rewards/<func>/mean``: chart ``rewards · mean`` with one line per reward function; the same for
      any key of three or more segments (chart = first and last segment, label = the middle);
    - a key without ``/`` joins its known group (``kl``; ``clip_fraction_low`` in ``clip``; ``policy_loss``
      in ``loss``), else the keys sharing its first ``_`` word (``ratio_min``, ``ratio_max`` in
      ``ratio``), else it has its own chart; it is labelled by the whole key;
    - ``train/<key>`` (the update's metrics of a classic-RL run) is placed as ``<key>`` would be and
      labelled by the whole key (``train/kl`` on chart ``kl``);
    - every ``eval/...`` key is on chart ``eval``, labelled by the rest of the key.
    """
    keys = list(keys)
    placed = {
        key: key[len("train/") :] if key.startswith("train/") and key != "train/" else key for key in keys
    }
    words: dict[str, int] = {}
    for key in placed.values():
        if "/" not in key and _group_of(key) is None:
            words[key.split("_")[0]] = words.get(key.split("_")[0], 0) + 1
    charts: dict[tuple[str, str], Chart] = {}
    for original, key in placed.items():
        parts = key.split("/")
        if len(parts) == 1:
            word = key.split("_")[0]
            group = _group_of(key) or (word if words.get(word, 0) > 1 else key)
            title, label = group, key
        else:
            group = _group_of(parts[0]) or parts[0]
            if group == "eval":  # one chart of the evaluation: eval/accuracy, eval/accuracy/teacher_right
                title, label = "eval", "/".join(parts[1:])
            elif len(parts) == 2:
                title, label = parts[0], parts[1]
            else:
                title, label = f"{parts[0]} · {parts[-1]}", "/".join(parts[1:-1])
        if original != key:
            label = original
        chart = charts.setdefault((group, title), Chart(group=group, title=title, keys=[], labels=[]))
        chart.keys.append(original)
        chart.labels.append(label)

    def rank(chart: Chart) -> tuple[int, str, str]:
        known = KNOWN_GROUPS.index(chart.group) if chart.group in KNOWN_GROUPS else len(KNOWN_GROUPS)
        return known, chart.group, chart.title

    return sorted(charts.values(), key=rank)


def downsample(
    xs: list[float], ys: list[float | None], max_points: int
) -> tuple[list[float], list[float | None]]:
    """At most about ``max_points`` points that keep each bucket's minimum and maximum (spikes survive).

    Buckets of ``ceil(2 n / max_points)`` consecutive points keep their lowest and highest value in
    step order; an all-gap bucket keeps one gap, so breaks in the curve survive too.
    """
    n = len(xs)
    if n <= max_points:
        return xs, ys
    size = math.ceil(2 * n / max_points)
    out_x: list[float] = []
    out_y: list[float | None] = []
    for start in range(0, n, size):
        idx = [i for i in range(start, min(start + size, n)) if ys[i] is not None]
        if not idx:
            out_x.append(xs[start])
            out_y.append(None)
            continue
        lo = min(idx, key=lambda i: ys[i])  # type: ignore[arg-type,return-value]
        hi = max(idx, key=lambda i: ys[i])  # type: ignore[arg-type,return-value]
        for i in sorted({lo, hi}):
            out_x.append(xs[i])
            out_y.append(ys[i])
    return out_x, out_y


def _summary(run: RunData, series: dict[str, tuple[list[float], list[float | None]]]) -> dict[str, Any]:
    final = {}
    for key, (_, ys) in series.items():
        finite = [y for y in ys if y is not None]
        if finite:
            final[key] = finite[-1]
    steps = sorted({x for xs, _ in series.values() for x in xs})
    return {
        "rows": len(run.metrics),
        "first_step": steps[0] if steps else None,
        "last_step": steps[-1] if steps else None,
        "final": final,
    }


def _metric_rows(run: RunData) -> list[dict[str, Any]]:
    """The metrics rows, plus the points of the demo's accuracy curve (``demo_summary.json``) that
    ``metrics.jsonl`` lacks: the demo measures held-out accuracy before training (step 0) but logs only the
    measurements during training."""
    rows = list(run.metrics)
    curve = (run.demo_summary or {}).get("curve")
    if not isinstance(curve, list):
        return rows
    logged = set()
    for row in rows:
        step = _number(row.get("step"))
        if step is not None and "eval/accuracy" in row:
            logged.add(step)
    for point in curve:
        step = _number(point.get("step")) if isinstance(point, dict) else None
        if step is None or not math.isfinite(step) or step in logged:
            continue
        values = {f"eval/{k}": v for k, v in point.items() if k != "step" and _number(v) is not None}
        if values:
            rows.append({"step": point["step"], **values})
    return rows


Series = dict[str, tuple[list[float], list[float | None]]]


def _finite(series: Series, key: str) -> list[tuple[float, float]]:
    xs, ys = series.get(key, ([], []))
    return [(x, y) for x, y in zip(xs, ys) if y is not None]


def _step_text(step: float) -> str:
    return _step_key(step) if math.isfinite(step) else str(step)


def goal_metric(series: Series) -> dict[str, Any] | None:
    """The number the run exists for, before and after: the first of :data:`GOAL_METRICS` with finite
    values at two steps or more, or None.

    An evaluation metric (``eval/...``) is compared first against last measurement. A training curve is
    noisy, so its before and after are the means of its first and last ``n`` values (a tenth of the run,
    1 to 50 steps).
    """
    for key, label in GOAL_METRICS:
        points = _finite(series, key)
        if len(points) < 2:
            continue
        n = 1 if key.startswith("eval/") else max(1, min(50, len(points) // 10))
        head, tail = points[:n], points[-n:]
        if n == 1:
            how = f"step {_step_text(head[0][0])} → step {_step_text(tail[0][0])}"
        else:
            how = (
                f"mean of steps {_step_text(head[0][0])}–{_step_text(head[-1][0])} → "
                f"{_step_text(tail[0][0])}–{_step_text(tail[-1][0])}"
            )
        return {
            "key": key,
            "label": label,
            "before": sum(y for _, y in head) / n,
            "after": sum(y for _, y in tail) / n,
            "how": how,
            "points": len(points),
        }
    return None


def _get(config: dict[str, Any], path: str) -> Any:
    value: Any = config
    for part in path.split("."):
        if not isinstance(value, dict):
            return None
        value = value.get(part)
    return value


def _plain(value: Any) -> str:
    """A config value as a short text: ``0.0003``, ``1e-06``, ``True``, ``a, b``."""
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, list):
        return ", ".join(_plain(v) for v in value)
    return str(value)


def _settings(config: dict[str, Any], spec: Sequence[tuple[str, str]]) -> list[str]:
    """``label value`` for each config path of ``spec`` that is set (``{}`` in the label: the value)."""
    out = []
    for path, label in spec:
        value = _get(config, path)
        if value is None or value == [] or value == {} or _UNREMARKABLE.get(path) == value:
            continue
        out.append(label.format(_plain(value)) if "{}" in label else f"{label} {_plain(value)}")
    return out


_LM_SETTINGS = (
    ("algorithm.loss_type", "loss"),
    ("algorithm.advantage_estimator", "advantages"),
    ("algorithm.num_generations", "G = {}"),
    ("data.prompts_per_step", "{} prompts/step"),
    ("optim.learning_rate", "lr"),
    ("optim.lr_scheduler", "{}"),
    ("algorithm.beta", "β"),
    ("algorithm.epsilon_low", "ε_low"),
    ("algorithm.epsilon_high", "ε_high"),
    ("algorithm.num_iterations", "iterations"),
    ("generation.max_new_tokens", "max_new_tokens"),
    ("generation.temperature", "temperature"),
    ("max_steps", "{} steps"),
)
_RL_SETTINGS = (
    ("algorithm.num_start_states", "B = {}"),
    ("algorithm.num_generations", "G = {}"),
    ("algorithm.grouping", "grouping"),
    ("algorithm.advantage_mode", "advantages"),
    ("optim.learning_rate", "lr"),
    ("algorithm.beta", "β"),
    ("algorithm.epsilon_low", "ε"),
    ("algorithm.num_iterations", "iterations"),
    ("max_steps", "{} steps"),
)
# Settings left out of the trainer line at these values (the usual ones).
_UNREMARKABLE = {"algorithm.advantage_estimator": "grpo", "optim.lr_scheduler": "constant"}


def _trained(config: Any) -> list[list[str]]:
    """What was trained on what: model, data, rewards, trainer and its key settings, from the config."""
    if not isinstance(config, dict):
        return []
    rows = []
    if isinstance(config.get("environment"), dict) and "model" not in config:  # classic RL (grpokit.rl)
        env = _get(config, "environment.env")
        tasks = _get(config, "environment.tasks")
        rows.append(
            ["environment", _plain(env) + (f", {len(tasks)} tasks" if isinstance(tasks, list) else "")]
        )
        sizes = _get(config, "policy.hidden_sizes")
        if isinstance(sizes, list):
            activation = _get(config, "policy.activation")
            rows.append(
                ["policy", "MLP " + "×".join(map(str, sizes)) + (f", {activation}" if activation else "")]
            )
        algorithm = _get(config, "algorithm.algorithm") or "?"
        rows.append(["trainer", f"rl {algorithm}: " + " · ".join(_settings(config, _RL_SETTINGS))])
        return rows
    if not any(section in config for section in ("model", "data", "rewards", "trainer")):
        return []  # not a trainer's config
    model = _get(config, "model.name_or_path")
    text = "(none)" if model is None else str(model)
    demo = config.get("demo")
    if isinstance(demo, dict):
        text = (
            f"demo {demo.get('architecture', 'model')} (hidden size {demo.get('hidden_size', '?')}, "
            f"{demo.get('num_layers', '?')} layers), warm-started by imitation: {text}"
        )
    lora = _get(config, "model.lora.r")
    if isinstance(lora, int) and lora > 0:
        text += f", LoRA r = {lora}"
    dtype = _get(config, "model.dtype")
    if dtype not in (None, "float32"):
        text += f", {dtype}"
    rows.append(["model", text])
    data = _get(config, "data.path")
    task = _get(config, "data.task")
    rows.append(["data", str(data) if data is not None else f"task {task}" if task is not None else "(none)"])
    funcs = _get(config, "rewards.reward_funcs")
    weights = _get(config, "rewards.reward_weights")
    rewards = []
    if isinstance(funcs, list):
        if isinstance(weights, list) and len(weights) >= len(funcs) and any(w != 1 for w in weights):
            rewards = [f"{f} ×{_plain(w)}" for f, w in zip(funcs, weights)]
        else:
            rewards = [str(f) for f in funcs]
    for path, label in (("rewards.reward_model", "reward model"), ("rewards.process_reward_func", "process")):
        if _get(config, path):
            rewards.append(f"{label} {_get(config, path)}")
    with_model = isinstance(funcs, list) and isinstance(weights, list) and len(weights) == len(funcs) + 1
    if with_model and _get(config, "rewards.reward_model") and any(w != 1 for w in weights):
        rewards[len(funcs)] += f" ×{_plain(weights[-1])}"  # the reward model's weight comes last
    rows.append(["rewards", ", ".join(rewards) or "(none)"])
    trainer = config.get("trainer")
    settings = " · ".join(_settings(config, _LM_SETTINGS))
    rows.append(["trainer", f"{trainer or '?'}: {settings}" if settings else str(trainer or "?")])
    return rows


def _duration(seconds: float) -> str:
    seconds = round(seconds)
    if seconds < 60:
        return f"{seconds} s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes} min {seconds} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes} min"


def _count(value: float) -> str:
    """``850``, ``17.0k``, ``2.3M``."""
    for scale, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= scale:
            return f"{value / scale:.1f}{suffix}"
    return f"{value:.3g}" if abs(value) < 10 else f"{value:.0f}"


def _megabytes(value: float) -> str:
    return f"{value / 1024:.1f} GB" if value >= 1024 else f"{value:.0f} MB"


def _median(values: list[float]) -> float:
    ordered = sorted(values)
    mid = len(ordered) // 2
    return ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2


def _facts(series: Series) -> list[list[str]]:
    """Training time, speed and peak memory, as far as the run logged them."""
    facts = []
    step_times = [y for _, y in _finite(series, "time/step")]
    wall = _finite(series, "time/wall_s")  # classic RL: seconds since the start
    if step_times:
        facts.append(["training time", f"{_duration(sum(step_times))} ({len(step_times)} steps)"])
    elif wall:
        facts.append(["training time", _duration(wall[-1][1])])
    speed = []
    for key, what in (
        ("throughput/generate_tokens_per_s", "generation"),
        ("throughput/train_tokens_per_s", "update"),
    ):
        values = [y for _, y in _finite(series, key)]
        if values:
            speed.append(f"{what} {_count(_median(values))} tokens/s")
    env_steps = _finite(series, "time/env_steps")
    if env_steps and wall and wall[-1][1] > 0:
        speed.append(f"{_count(env_steps[-1][1] / wall[-1][1])} env steps/s")
    if speed:
        facts.append(
            ["speed" + (" (median step)" if len(speed) > 1 or "tokens" in speed[0] else ""), ", ".join(speed)]
        )
    memory = []
    for key, what in (("memory/peak_rss_mb", "RSS"), ("memory/peak_cuda_mb", "CUDA")):
        values = [y for _, y in _finite(series, key)]
        if values:
            memory.append(f"{what} {_megabytes(max(values))}")
    if memory:
        facts.append(["peak memory", ", ".join(memory)])
    return facts


def _plural(n: float, word: str) -> str:
    return f"{n:g} {word}" + ("" if n == 1 else "s")


def _warnings(series: Series) -> list[str]:
    """One short line per problem the run logged: reward failures, skipped non-finite updates, many
    truncated completions, unscored completions, non-finite metric values. None: an empty list."""
    out = []
    for key in series:
        parts = key.split("/")
        if len(parts) == 3 and parts[0] == "rewards" and parts[2] == "failures":
            points = [(x, y) for x, y in _finite(series, key) if y > 0]
            if points:
                total = sum(y for _, y in points)
                out.append(
                    f"reward function {parts[1]} failed {_plural(total, 'time')} at "
                    f"{_plural(len(points), 'step')} (first at step {_step_text(points[0][0])}); "
                    f"those completions got the fallback reward ({key})"
                )
    for key in ("faults/nonfinite_skipped", "train/faults/nonfinite_skipped"):
        points = [(x, y) for x, y in _finite(series, key) if y > 0]
        if points:
            total = sum(y for _, y in points)
            out.append(
                f"{_plural(total, 'update')} skipped for a non-finite loss or gradient at "
                f"{_plural(len(points), 'step')} (first at step {_step_text(points[0][0])}; {key})"
            )
    truncated = [y for _, y in _finite(series, "completions/truncated_fraction")]
    if truncated and sum(truncated) / len(truncated) > TRUNCATION_WARNING:
        out.append(
            f"{sum(truncated) / len(truncated):.0%} of completions were cut at max_new_tokens "
            f"(mean over the run; the last step: {truncated[-1]:.0%}); raise it or reward shorter answers"
        )
    unscored = [y for _, y in _finite(series, "rewards/unscored_fraction")]
    if unscored and max(unscored) > 0:
        out.append(
            f"{sum(unscored) / len(unscored):.1%} of completions were unscored (every reward function "
            "returned None) and left out of the loss (rewards/unscored_fraction)"
        )
    gaps = [(key, sum(y is None for y in ys)) for key, (_, ys) in series.items()]
    gaps = [(key, n) for key, n in gaps if n]
    if gaps:
        listed = ", ".join(f"{key} ({_plural(n, 'step')})" for key, n in gaps[:5])
        more = f" and {len(gaps) - 5} more metrics" if len(gaps) > 5 else ""
        out.append(f"non-finite values (NaN or inf) logged: {listed}{more}")
    return out


def _reward_weights(config: dict[str, Any]) -> list[tuple[str, float]]:
    """``(metric name, weight)`` of every configured reward, named as the reward pipeline logs them
    (``rewards/<name>/mean``): a spec's function name unless two specs share it, then ``reward_model``."""
    funcs = _get(config, "rewards.reward_funcs")
    specs = [str(f) for f in funcs] if isinstance(funcs, list) else []
    short = [spec.rsplit(":", 1)[-1] for spec in specs]
    names = [s if short.count(s) == 1 else spec for s, spec in zip(short, specs)]
    if _get(config, "rewards.reward_model"):
        names.append("reward_model")
    weights = _get(config, "rewards.reward_weights")
    if not (isinstance(weights, list) and len(weights) == len(names)):
        weights = [1.0] * len(names)
    return [(name, float(w)) for name, w in zip(names, weights)]


def _change(series: Series, key: str) -> dict[str, float] | None:
    """``before``/``after`` as :func:`goal_metric` takes them for a training curve (means of the first and
    last tenth, 1 to 50 steps) and ``significant``: whether they differ by more than twice the standard error
    of the difference (with one step each: whether they differ at all); None under two logged steps."""
    points = [y for _, y in _finite(series, key)]
    if len(points) < 2:
        return None
    n = max(1, min(50, len(points) // 10))
    head, tail = points[:n], points[-n:]
    before, after = sum(head) / n, sum(tail) / n
    if n == 1:
        significant = after != before
    else:
        var = lambda xs, m: sum((x - m) ** 2 for x in xs) / (n - 1)  # noqa: E731
        significant = abs(after - before) > 2 * math.sqrt((var(head, before) + var(tail, after)) / n)
    return {"before": before, "after": after, "significant": float(significant)}


def proxy_and_gold(config: Any, series: Series) -> dict[str, list[dict[str, Any]]] | None:
    """Optimised rewards (the proxy) against rewards logged at weight 0 (a gold or monitor function), before
    -> after: ``{"proxy": [...], "gold": [...]}``, each ``{"name", "before", "after", "significant"}``
    (:func:`_change` of ``rewards/<name>/mean``); None unless the config has both kinds and they were logged.
    """
    if not isinstance(config, dict):
        return None
    named = _reward_weights(config)
    out: dict[str, list[dict[str, Any]]] = {"proxy": [], "gold": []}
    for name, weight in named:
        change = _change(series, f"rewards/{name}/mean")
        if change is not None:
            out["gold" if weight == 0 else "proxy"].append({"name": name, **change})
    return out if out["proxy"] and out["gold"] else None


def _proxy_gold_lines(config: Any, series: Series) -> tuple[list[list[str]], list[str]]:
    """The header's ``proxy vs gold`` fact and, when an optimised reward rose while a weight-0 one fell
    (both beyond noise), the warning that the optimised reward is being over-optimised."""
    found = proxy_and_gold(config, series)
    if found is None:
        return [], []
    text = lambda r: f"{r['name']} {_plain(round(r['before'], 4))} → {_plain(round(r['after'], 4))}"  # noqa: E731
    fact = [
        "proxy vs gold",
        "optimised: " + ", ".join(map(text, found["proxy"]))
        + " · logged at weight 0: " + ", ".join(map(text, found["gold"])),
    ]  # fmt: skip
    rose = [r for r in found["proxy"] if r["significant"] and r["after"] > r["before"]]
    fell = [r for r in found["gold"] if r["significant"] and r["after"] < r["before"]]
    warnings = []
    if rose and fell:
        warnings.append(
            f"the optimised reward rose ({', '.join(map(text, rose))}) while the reward logged at weight 0 fell "
            f"({', '.join(map(text, fell))}): the optimised reward is being over-optimised (reward hacking)"
        )
    return [fact], warnings


def run_header(run: RunData, series: Series | None = None) -> dict[str, Any]:
    """The top of a run's report: ``trained`` (what was trained on what, ``[label, text]`` rows from the
    config), ``goal`` (:func:`goal_metric`), ``facts`` (time, speed, peak memory; optimised rewards against
    those logged at weight 0, :func:`proxy_and_gold`) and ``warnings``."""
    series = metric_series(_metric_rows(run)) if series is None else series
    gold_facts, gold_warnings = _proxy_gold_lines(run.config, series)
    return {
        "trained": _trained(run.config),
        "goal": goal_metric(series),
        "facts": _facts(series) + gold_facts,
        "warnings": _warnings(series) + gold_warnings,
    }


def _text(content: Any) -> str:
    """Message content as text: a string, or a list of ``{"type": "text", "text": ...}`` parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(str(p.get("text", "")) if isinstance(p, dict) else str(p) for p in content)
    return "" if content is None else json.dumps(content, default=str)


def _is_chat(value: Any) -> TypeGuard[list[dict[str, Any]]]:
    return isinstance(value, list) and bool(value) and all(isinstance(m, dict) for m in value)


def _truncate(text: str, max_chars: int) -> str:
    if len(text) <= max_chars:
        return text
    return text[:max_chars] + f"\n… [{len(text) - max_chars} more characters not shown in the report]"


def _floats(values: Any, length: int) -> list[float | None]:
    """``length`` entries from a list of numbers; non-numbers and NaN become None, missing ones too."""
    values = values if isinstance(values, list) else []
    out: list[float | None] = []
    for i in range(length):
        value = _number(values[i]) if i < len(values) else None
        out.append(value if value is not None and math.isfinite(value) else None)
    return out


def _sample_groups(run: RunData, max_steps: int, max_chars: int, notes: list[str]) -> dict[str, Any]:
    """Sampled groups by step for the browser: at most ``max_steps`` steps, evenly spread, first and last kept.

    Rows without a ``completions`` list are skipped and rows without a numeric step are shown at step -1,
    each with a note.
    """
    by_step: dict[float, list[dict[str, Any]]] = {}
    for row in run.samples:
        completions = row.get("completions")
        where = f"samples.jsonl line {row.get('_line', '?')}"
        if not isinstance(completions, list):
            notes.append(f"{where}: no 'completions' list; skipped")
            continue
        step = _number(row.get("step"))
        if step is None or not math.isfinite(step):
            notes.append(f"{where}: no numeric 'step'; shown at step -1")
            step = -1.0
        prompt = row.get("prompt")
        components = row.get("reward_components")
        conversations = (
            {"conversations": _conversations(row["conversation"], len(completions), max_chars, where, notes)}
            if row.get("conversation") is not None
            else {}  # single completions: the row's data stays as it always was
        )
        by_step.setdefault(step, []).append(
            {
                "prompt": (
                    [
                        {
                            "role": str(m.get("role", "")),
                            "content": _truncate(_text(m.get("content")), max_chars),
                        }
                        for m in prompt
                    ]
                    if _is_chat(prompt)
                    else _truncate(_text(prompt), max_chars)
                ),
                "completions": [
                    _truncate(_text(c[-1].get("content")) if _is_chat(c) else _text(c), max_chars)
                    for c in completions
                ],
                "rewards": _floats(row.get("rewards"), len(completions)),
                "advantages": _floats(row.get("advantages"), len(completions)),
                "reward_components": {
                    str(name): _floats(values, len(completions))
                    for name, values in (components.items() if isinstance(components, dict) else [])
                },
                **conversations,
                **_extra_fields(row, len(completions), max_chars),
            }
        )
    steps = sorted(by_step)
    note = ""
    if len(steps) > max_steps:
        keep = (
            sorted({round(i * (len(steps) - 1) / (max_steps - 1)) for i in range(max_steps)})
            if max_steps > 1
            else [len(steps) - 1]
        )
        note = f"showing {len(keep)} of the {len(steps)} steps with samples, evenly spread"
        steps = [steps[i] for i in keep]
    return {
        "steps": [int(s) if s.is_integer() else s for s in steps],
        "groups": {_step_key(s): by_step[s] for s in steps},
        "group_count": sum(len(g) for g in by_step.values()),
        "step_count": len(by_step),
        "note": note,
    }


_SAMPLE_FIELDS = frozenset(
    {"_line", "step", "prompt", "completions", "rewards", "advantages", "reward_components", "conversation"}
)


def _conversations(
    value: Any, size: int, max_chars: int, where: str, notes: list[str]
) -> list[list[dict[str, Any]] | None]:
    """A row's ``conversation`` (one message list per completion) for the page; an entry that is not a list
    of messages is None (its completion is shown as text), with a note."""
    if not isinstance(value, list) or len(value) != size:
        notes.append(
            f"{where}: 'conversation' is not a list of {size} message lists; completions shown as text"
        )
        return [None] * size
    out: list[list[dict[str, Any]] | None] = []
    for i, messages in enumerate(value):
        if isinstance(messages, list):
            out.append([_message(m, max_chars) for m in messages])
        else:
            notes.append(
                f"{where}: conversation {i + 1} is not a list of messages; its completion shown as text"
            )
            out.append(None)
    return out


def _message(message: Any, max_chars: int) -> dict[str, Any]:
    """One message of an episode for the page: role, content and, where the message has them, the tool's
    ``name``, ``failed`` (a tool result that is an error), ``tool_calls`` (name and arguments as text) and the
    turn's ``reward`` (None when not a finite number)."""
    if not isinstance(message, dict):
        return {"role": "", "content": _truncate(_text(message), max_chars)}
    out: dict[str, Any] = {
        "role": str(message.get("role", "")),
        "content": _truncate(_text(message.get("content")), max_chars),
    }
    if message.get("name") is not None:
        out["name"] = _truncate(str(message["name"]), 200)
    if message.get("failed") is True:
        out["failed"] = True
    calls = message.get("tool_calls")
    if isinstance(calls, list) and calls:
        out["tool_calls"] = [_tool_call(call, max_chars) for call in calls]
    if "reward" in message:
        reward = _number(message["reward"])
        out["reward"] = reward if reward is not None and math.isfinite(reward) else None
    return out


def _tool_call(call: Any, max_chars: int) -> dict[str, str]:
    """A tool call as ``{"name", "arguments"}`` text: the OpenAI shape (``{"function": {"name", "arguments"}}``)
    or a flat ``{"name", "arguments"}``; arguments as given when a string, else as JSON."""
    function = call.get("function", call) if isinstance(call, dict) else None
    if not isinstance(function, dict):
        return {"name": "", "arguments": _truncate(_text(call), max_chars)}
    arguments = function.get("arguments")
    text = (
        _text(arguments)
        if isinstance(arguments, str) or arguments is None
        else json.dumps(arguments, ensure_ascii=False, default=str)
    )
    return {"name": _truncate(str(function.get("name", "")), 200), "arguments": _truncate(text, max_chars)}


def _scalar(value: Any, max_chars: int) -> str | float | bool | None:
    """A value the page can show on one line: numbers (non-finite as None), bools, short strings."""
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, (int, float)):
        return float(value) if math.isfinite(value) else None
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    return _truncate(text, max_chars)


def _extra_fields(row: dict[str, Any], size: int, max_chars: int) -> dict[str, Any]:
    """Other fields of a sample row: lists of G values (``truncated``) go with the completions, anything
    else (a gold ``answer``) with the prompt."""
    per_completion, per_group = {}, {}
    for name, value in row.items():
        if name in _SAMPLE_FIELDS:
            continue
        if isinstance(value, list) and len(value) == size:
            per_completion[str(name)] = [_scalar(v, 200) for v in value]
        else:
            per_group[str(name)] = _scalar(value, max_chars)
    return {"extras": per_completion, "info": per_group}


def _step_key(step: float) -> str:
    """The step as the page's <select> spells it (JavaScript's String(number): ``3``, not ``3.0``)."""
    return str(int(step)) if step.is_integer() else repr(step)


def _unique_names(paths: Sequence[Path]) -> list[str]:
    """Directory names, lengthened with parent directories until no two runs share one."""
    parts = [p.resolve().parts for p in paths]
    for depth in range(1, max(len(p) for p in parts) + 1):
        names = ["/".join(p[-depth:]) for p in parts]
        if len(set(names)) == len(names):
            return names
    return [f"{name} ({i + 1})" for i, name in enumerate(names)]


def _json_safe(value: Any) -> Any:
    """Non-finite floats to their string (JSON has no NaN); everything else unchanged, recursively."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value


def _script_json(data: Any) -> str:
    """JSON that is inert inside <script type="application/json">: no <, > or & can close the element."""
    text = json.dumps(data, ensure_ascii=False, allow_nan=False, separators=(",", ":"), default=str)
    for char, escape in (
        ("<", "\\u003c"),
        (">", "\\u003e"),
        ("&", "\\u0026"),
        ("\u2028", "\\u2028"),
        ("\u2029", "\\u2029"),
    ):
        text = text.replace(char, escape)
    return text


def render_report(
    runs: Sequence[RunData],
    *,
    max_points: int = 1000,
    max_sample_steps: int = 64,
    max_completion_chars: int = 6000,
) -> str:
    """The report page for one run, or several overlaid (the first is the primary run)."""
    if not runs:
        raise ValueError("runs is empty: render_report needs at least one run")
    if max_points < 2:
        raise ValueError(f"max_points must be at least 2, got {max_points}")
    if max_sample_steps < 1:
        raise ValueError(f"max_sample_steps must be at least 1, got {max_sample_steps}")
    names = _unique_names([run.path for run in runs])
    all_rows = [_metric_rows(run) for run in runs]
    all_series = [metric_series(rows) for rows in all_rows]
    keys = list(dict.fromkeys(key for series in all_series for key in series))
    constant = _shared_constants(keys, all_series, [constant_metrics(rows) for rows in all_rows])

    def line(r: int, key: str, label: str) -> dict[str, Any]:
        xs, ys = downsample(*all_series[r][key], max_points)
        # "3", not "3.0", and 6 significant digits: the page shows 4, the file stays small
        return {
            "id": f"{r}:{key}",
            "run": r,
            "key": key,
            "label": label,
            "x": [int(x) if x.is_integer() else x for x in xs],
            "y": [None if y is None else float(f"{y:.6g}") for y in ys],
        }

    charts = []
    for chart in chart_layout(key for key in keys if key not in constant):
        lines = [
            line(r, key, label)
            for r, series in enumerate(all_series)
            for key, label in zip(chart.keys, chart.labels)
            if key in series
        ]
        charts.append({"title": chart.title, "group": chart.group, "series": lines})
    headers = [run_header(run, series) for run, series in zip(runs, all_series)]
    goal_lines, goal_titles = [], []
    for r, header in enumerate(headers):
        if header["goal"]:
            goal = header["goal"]["key"]
            goal_lines.append(line(r, goal, goal))
            goal_titles.append(header["goal"]["label"])
            companion = _GOAL_COMPANIONS.get(goal)
            if companion in all_series[r]:
                goal_lines.append(line(r, companion, companion))
                goal_titles.append(dict(GOAL_METRICS)[companion])
    goal_titles = list(dict.fromkeys(goal_titles))
    run_data = []
    for run, name, series, header in zip(runs, names, all_series, headers):
        notes = list(run.notes)
        samples = _sample_groups(run, max_sample_steps, max_completion_chars, notes)
        if len(notes) > _MAX_NOTES:
            notes[_MAX_NOTES:] = [f"... and {len(notes) - _MAX_NOTES} more problems"]
        run_data.append(
            {
                "name": name,
                "path": str(run.path.resolve()),
                "config": _json_safe(run.config),
                "environment": _json_safe(run.environment),
                "environment_source": run.environment_source,
                "notes": notes,
                "summary": _summary(run, series),
                "header": header,
                "samples": samples,
            }
        )
    title = f"grpokit report: {names[0]}" if len(runs) == 1 else "grpokit compare: " + " vs ".join(names)
    data = {
        "title": title,
        "generated": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "grpokit_version": _grpokit_version(),
        "runs": run_data,
        "charts": charts,
        "goal_chart": (
            {"title": " and ".join(goal_titles), "group": "goal", "series": goal_lines}
            if goal_lines
            else None
        ),
        "constant": [[key, _json_safe(value)] for key, value in constant.items()],
    }
    template = (
        importlib.resources.files("grpokit.tracking").joinpath("report_template.html").read_text("utf-8")
    )
    scripts = re.findall(r"<script>(.*?)</script>", template, flags=re.DOTALL)
    if len(scripts) != 1:
        raise RuntimeError("report_template.html must hold exactly one inline <script> block")
    digest = base64.b64encode(hashlib.sha256(scripts[0].encode("utf-8")).digest()).decode("ascii")
    csp = f"default-src 'none'; script-src 'sha256-{digest}'; style-src 'unsafe-inline'; img-src data:"
    page = template.replace("__GRPOKIT_CSP__", csp).replace("__GRPOKIT_TITLE__", html.escape(title))
    return page.replace("__GRPOKIT_DATA__", _script_json(data))


def _shared_constants(
    keys: list[str], all_series: list[Series], constants: list[dict[str, float]]
) -> dict[str, float]:
    """The metrics constant in every run that logged them, with the same value in all: listed on one line
    instead of charted. A metric constant in each run but at different values is charted (the runs differ)."""
    out = {}
    for key in keys:
        values = [c.get(key) for series, c in zip(all_series, constants) if key in series]
        first = values[0]
        if first is not None and all(v is not None and _same(v, first) for v in values):
            out[key] = first
    return out


def _grpokit_version() -> str:
    from grpokit import __version__

    return __version__


def write_report(
    run_dir: str | os.PathLike,
    output: str | os.PathLike | None = None,
    *,
    other_runs: Iterable[str | os.PathLike] = (),
    max_points: int = 1000,
    max_sample_steps: int = 64,
    max_completion_chars: int = 6000,
) -> Path:
    """Write the HTML report of ``run_dir`` (overlaying ``other_runs``) and return its path.

    Args:
        run_dir: the run directory (config.yaml, metrics.jsonl, samples.jsonl, environment.json).
        output: where to write; default ``RUN_DIR/report.html``, or ``RUN_DIR/compare.html`` when
            ``other_runs`` is given (so the single-run report is not overwritten).
        other_runs: more run directories drawn on the same charts, with a legend.
        max_points: points kept per curve (min/max-preserving downsampling beyond it).
        max_sample_steps: steps with sampled groups kept in the browser (evenly spread).
        max_completion_chars: longer prompts and completions are cut, with a marker saying so.
    Raises:
        FileNotFoundError: a run directory does not exist.
    """
    others = [Path(p) for p in other_runs]
    runs = [load_run(run_dir), *(load_run(p) for p in others)]
    page = render_report(
        runs,
        max_points=max_points,
        max_sample_steps=max_sample_steps,
        max_completion_chars=max_completion_chars,
    )
    path = (
        Path(output) if output is not None else Path(run_dir) / ("compare.html" if others else "report.html")
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(page, encoding="utf-8")
    return path


def main(argv: Sequence[str] | None = None) -> int:
    """``grpokit report RUN_DIR [--compare OTHER_RUN ...] [--output PATH]``."""
    parser = argparse.ArgumentParser(
        prog="grpokit report",
        description="Write a self-contained HTML report (curves, sampled groups, config) of a training run.",
    )
    parser.add_argument("run_dir", help="the run directory (holds metrics.jsonl, samples.jsonl, config.yaml)")
    parser.add_argument(
        "--compare", nargs="+", default=[], metavar="OTHER_RUN", help="overlay these runs on the same charts"
    )
    parser.add_argument(
        "--output",
        "-o",
        default=None,
        help="output file (default RUN_DIR/report.html, or RUN_DIR/compare.html)",
    )
    args = parser.parse_args(argv)
    try:
        path = write_report(args.run_dir, args.output, other_runs=args.compare)
    except (FileNotFoundError, ValueError) as err:
        parser.error(str(err))
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
