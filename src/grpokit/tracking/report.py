"""The run report: one self-contained HTML file with the curves, the sampled groups, the config and versions.

``write_report(run_dir)`` reads what a training run left in its directory::

    RUN_DIR/config.yaml        resolved config (a YAML mapping)
    RUN_DIR/metrics.jsonl      {"step": 3, "reward/mean": 0.41, "kl": 0.002, ...} per training step
    RUN_DIR/samples.jsonl      {"step": 3, "prompt": ..., "completions": [G], "rewards": [G], "advantages": [G]}
    RUN_DIR/environment.json   optional: library versions at training time

and writes ``RUN_DIR/report.html``: every numeric metric as a curve (one chart per metric group, the
prefix before the first ``/``), a per-step browser of the sampled groups (the G completions of each
prompt side by side with reward and advantage, best and worst marked), the config and the environment.
With ``other_runs`` the same charts overlay several runs on shared axes (``grpokit compare``).

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
    "current_environment",
    "downsample",
    "load_run",
    "main",
    "metric_series",
    "render_report",
    "write_report",
]

# Charts of these groups come first, in this order; any other group follows alphabetically.
KNOWN_GROUPS = (
    "reward",
    "rewards",
    "advantages",
    "kl",
    "clip",
    "entropy",
    "completion_length",
    "completions",
    "zero_std",
    "groups",
    "throughput",
    "tokens",
    "memory",
    "time",
    "loss",
)
# Headline numbers of the summary card, when the run logged them.
_HEADLINE = (("reward/mean", "last"), ("reward/mean", "max"), ("kl", "last"), ("entropy", "last"))
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
    return RunData(
        path=path,
        name=path.resolve().name,
        config=config,
        metrics=metrics,
        samples=[{"_line": line, **row} for line, row in samples],
        environment=environment,
        environment_source=source,
        notes=notes,
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
    by_step: dict[float, dict[str, Any]] = {}
    order: dict[str, None] = {}
    for index, row in enumerate(rows):
        step = _number(row.get("step"))
        step = float(index) if step is None or not math.isfinite(step) else step
        merged = by_step.setdefault(step, {})
        for key, value in row.items():
            if key != "step" and _number(value) is not None:
                merged[key] = value
                order.setdefault(key, None)
    steps = sorted(by_step)
    series: dict[str, tuple[list[float], list[float | None]]] = {}
    for key in order:
        xs, ys = [], []
        for step in steps:
            value = _number(by_step[step].get(key))
            if value is not None:
                xs.append(step)
                ys.append(value if math.isfinite(value) else None)
        series[key] = (xs, ys)
    return series


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
      ``ratio``), else it has its own chart; it is labelled by the whole key.
    """
    keys = list(keys)
    words: dict[str, int] = {}
    for key in keys:
        if "/" not in key and _group_of(key) is None:
            words[key.split("_")[0]] = words.get(key.split("_")[0], 0) + 1
    charts: dict[tuple[str, str], Chart] = {}
    for key in keys:
        parts = key.split("/")
        if len(parts) == 1:
            word = key.split("_")[0]
            group = _group_of(key) or (word if words.get(word, 0) > 1 else key)
            title, label = group, key
        else:
            group = _group_of(parts[0]) or parts[0]
            if len(parts) == 2:
                title, label = parts[0], parts[1]
            else:
                title, label = f"{parts[0]} · {parts[-1]}", "/".join(parts[1:-1])
        chart = charts.setdefault((group, title), Chart(group=group, title=title, keys=[], labels=[]))
        chart.keys.append(key)
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
    headline = []
    for key, how in _HEADLINE:
        finite = [y for y in series.get(key, ([], []))[1] if y is not None]
        if finite:
            headline.append([f"{key} ({how})", finite[-1] if how == "last" else max(finite)])
    steps = sorted({x for xs, _ in series.values() for x in xs})
    return {
        "rows": len(run.metrics),
        "first_step": steps[0] if steps else None,
        "last_step": steps[-1] if steps else None,
        "final": final,
        "headline": headline,
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
    {"_line", "step", "prompt", "completions", "rewards", "advantages", "reward_components"}
)


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
    all_series = [metric_series(run.metrics) for run in runs]
    keys = list(dict.fromkeys(key for series in all_series for key in series))
    charts = []
    for chart in chart_layout(keys):
        lines = []
        for r, series in enumerate(all_series):
            for key, label in zip(chart.keys, chart.labels):
                if key in series:
                    xs, ys = downsample(*series[key], max_points)
                    # "3", not "3.0", and 6 significant digits: the page shows 4, the file stays small
                    xs = [int(x) if x.is_integer() else x for x in xs]
                    ys = [None if y is None else float(f"{y:.6g}") for y in ys]
                    lines.append({"id": f"{r}:{key}", "run": r, "key": key, "label": label, "x": xs, "y": ys})
        charts.append({"title": chart.title, "group": chart.group, "series": lines})
    run_data = []
    for run, name, series in zip(runs, names, all_series):
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
