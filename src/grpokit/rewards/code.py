"""``code_tests``: reward a completion by running its Python code against the row's tests.

The code is the last ```` ```python ```` block of the completion (```` ```py ```` and ```` ```python3 ````
count too), else the last untagged ```` ``` ```` block, else the whole text; a block cut off by the
generation length limit runs to the end of the text. Each program runs in :func:`run_in_sandbox`.

Two test formats, chosen per row from the type of its ``tests`` entry:

* **assert tests**: a string (one test: score 1 or 0) or a list of strings (one test each: score =
  fraction passed). The code runs first, then each test in the same namespace, each in its own
  ``try``: one failing assert does not hide the others. A test counts as passed only when the harness
  prints a per-run random marker after it, so ``exit(0)`` or ``os._exit(0)`` before the tests scores 0.
* **stdin/stdout tests**: a list of ``(stdin, expected_stdout)`` pairs (2-item lists, or dicts with
  ``input`` and ``output`` keys), or a dict ``{"inputs": [...], "outputs": [...]}``. One sandboxed run per
  pair; a pair passes when the program exits with status 0 and its output equals the expected output
  after removing trailing whitespace from each line and trailing blank lines. Score = fraction passed.

Completions whose program could not be judged on any test (syntax error, or every run ended in a
timeout, memory error, output flood or crash) get ``error_score`` (0.0 by default; ``None`` drops them).
"""

from __future__ import annotations

import json
import os
import re
import secrets
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from grpokit.rewards.sandbox import SandboxLimits, SandboxResult, SandboxStatus, run_in_sandbox

__all__ = ["CodeTestOutcome", "CodeTestsReward", "code_tests", "extract_code", "make_code_tests_reward"]

_FENCE = re.compile(r"```[ \t]*([A-Za-z0-9_+.-]*)[^\n]*\n(.*?)(?:```|\Z)", re.DOTALL)
_PYTHON_TAGS = {"python", "py", "python3"}
_UNJUDGEABLE = {
    SandboxStatus.SYNTAX_ERROR,
    SandboxStatus.TIMEOUT,
    SandboxStatus.MEMORY,
    SandboxStatus.OUTPUT_LIMIT,
    SandboxStatus.CRASH,
}

# Runs inside the sandbox as main.py. It deletes tests.json before running the solution, so the marker
# is not on disk; a program that inspects the harness's frames can still find it (see docs/sandbox.md).
_HARNESS = """\
import json, os, sys, traceback
with open("tests.json", encoding="utf-8") as _f:
    _spec = json.load(_f)
os.remove("tests.json")
with open("solution.py", encoding="utf-8") as _f:
    _source = _f.read()
try:
    _code = compile(_source, "solution.py", "exec")
except (SyntaxError, ValueError) as _exc:
    sys.stderr.write("".join(traceback.format_exception_only(type(_exc), _exc)))
    sys.exit(1)
_namespace = {"__name__": "__main__", "__builtins__": __builtins__}
exec(_code, _namespace)
_failed = 0
for _i, _test in enumerate(_spec["tests"]):
    try:
        exec(compile(_test, f"<test {_i}>", "exec"), _namespace)
    except Exception:
        traceback.print_exc()
        _failed += 1
        continue
    sys.stdout.write(f"\\n{_spec['marker']} {_i}\\n")
    sys.stdout.flush()
sys.exit(1 if _failed else 0)
"""


def extract_code(completion: str) -> str:
    """The code to run from a completion: last python block, else last untagged block, else the text."""
    blocks = [(tag.lower(), body) for tag, body in _FENCE.findall(completion)]
    for wanted in (lambda t: t in _PYTHON_TAGS, lambda t: t == ""):
        chosen = [body for tag, body in blocks if wanted(tag)]
        if chosen:
            return chosen[-1]
    return completion


@dataclass(frozen=True)
class CodeTestOutcome:
    """How one completion fared. ``status`` is that of the first failing run (``ok`` if none failed)."""

    score: float | None
    passed: int
    total: int
    status: SandboxStatus
    reason: str


@dataclass(frozen=True)
class _Job:
    row: int
    code: str
    stdin: str
    files: dict[str, str] | None
    expected: str | None  # stdin/stdout test: expected output; None for an assert run
    marker: str | None
    count: int  # tests this run decides


class CodeTestsReward:
    """Reward ``f(prompts, completions, tests, **_) -> list[float | None]`` that runs code in a sandbox.

    Args:
        limits: sandbox limits of each run.
        max_workers: sandboxed runs in flight at once (threads driving processes).
        error_score: score of a completion that could not be judged on any test; None drops it.
        tests_column: dataset column holding each row's tests.

    After each call, ``last_outcomes`` holds one :class:`CodeTestOutcome` per completion and
    ``last_metrics`` the share of runs that ended in each status (``code/status_<name>``) and the mean
    pass rate (``code/pass_rate``).
    """

    def __init__(
        self,
        *,
        limits: SandboxLimits | None = None,
        max_workers: int | None = None,
        error_score: float | None = 0.0,
        tests_column: str = "tests",
    ):
        if max_workers is not None and (not isinstance(max_workers, int) or max_workers < 1):
            raise ValueError(f"max_workers must be a positive integer, got {max_workers!r}")
        self.limits = limits if limits is not None else SandboxLimits()
        self.max_workers = max_workers or max(1, min(4, os.cpu_count() or 1))
        self.error_score = error_score
        self.tests_column = tests_column
        self.__name__ = "code_tests"  # reward registries and logs name a reward by its __name__
        self.last_outcomes: list[CodeTestOutcome] = []
        self.last_metrics: dict[str, float] = {}

    def __call__(
        self, prompts: list, completions: list[str], tests: Sequence[Any] | None = None, **columns: Any
    ) -> list[float | None]:
        available = sorted([*columns, *(["tests"] if tests is not None else [])])
        if self.tests_column != "tests":
            tests = columns.get(self.tests_column)
        if tests is None:
            raise ValueError(
                f"code_tests needs a {self.tests_column!r} dataset column; the dataset has {available}"
            )
        if len(tests) != len(completions):
            raise ValueError(f"tests has {len(tests)} entries but there are {len(completions)} completions")
        jobs: list[_Job] = []
        totals: list[int] = []
        for row, (completion, row_tests) in enumerate(zip(completions, tests)):
            if not isinstance(completion, str):
                raise ValueError(f"completions[{row}] must be a string, got {type(completion).__name__}")
            row_jobs = _jobs_for_row(row, extract_code(completion), row_tests)
            jobs += row_jobs
            totals.append(sum(job.count for job in row_jobs))
        with ThreadPoolExecutor(max_workers=self.max_workers, thread_name_prefix="code-sandbox") as pool:
            results = list(
                pool.map(
                    lambda job: run_in_sandbox(
                        job.code, stdin=job.stdin, files=job.files, limits=self.limits
                    ),
                    jobs,
                )
            )
        per_row: list[list[tuple[_Job, SandboxResult]]] = [[] for _ in completions]
        for job, result in zip(jobs, results):
            per_row[job.row].append((job, result))
        self.last_outcomes = [self._outcome(runs, total) for runs, total in zip(per_row, totals)]
        statuses = Counter(result.status for result in results)
        self.last_metrics = {f"code/status_{s.value}": statuses[s] / len(results) for s in SandboxStatus}
        self.last_metrics["code/pass_rate"] = (
            sum(o.passed / o.total for o in self.last_outcomes) / len(self.last_outcomes)
            if self.last_outcomes
            else 0.0
        )
        return [o.score for o in self.last_outcomes]

    def _outcome(self, runs: list[tuple[_Job, SandboxResult]], total: int) -> CodeTestOutcome:
        passed = 0
        failure: tuple[_Job, SandboxResult] | None = None
        for job, result in runs:
            ok = _passed(job, result)
            passed += ok
            if ok < job.count and failure is None:
                failure = (job, result)
        if failure is None:
            return CodeTestOutcome(passed / total, passed, total, SandboxStatus.OK, "all tests passed")
        failed_job, failed = failure
        if failed.status is not SandboxStatus.OK:
            reason = failed.reason
        elif failed_job.expected is not None:
            reason = "wrong output"
        else:
            reason = "exited before running every test"
        unjudgeable = passed == 0 and all(r.status in _UNJUDGEABLE for _, r in runs)
        score = self.error_score if unjudgeable else passed / total
        return CodeTestOutcome(score, passed, total, failed.status, reason)


def _passed(job: _Job, result: SandboxResult) -> int:
    """Number of this run's tests that passed."""
    if job.expected is not None:
        return int(
            result.status is SandboxStatus.OK and _normalize(result.stdout) == _normalize(job.expected)
        )
    prefix = f"{job.marker} "
    marked = {line[len(prefix) :] for line in result.stdout.splitlines() if line.startswith(prefix)}
    return sum(str(i) in marked for i in range(job.count))


def _normalize(output: str) -> list[str]:
    lines = [line.rstrip() for line in output.splitlines()]
    while lines and not lines[-1]:
        lines.pop()
    return lines


def _jobs_for_row(row: int, code: str, row_tests: Any) -> list[_Job]:
    """Turn one row's ``tests`` entry into sandbox runs; ValueError names the row on bad input."""
    if isinstance(row_tests, str) or (
        isinstance(row_tests, (list, tuple)) and row_tests and all(isinstance(t, str) for t in row_tests)
    ):
        asserts = [row_tests] if isinstance(row_tests, str) else list(row_tests)
        marker = secrets.token_hex(16)
        files = {"solution.py": code, "tests.json": json.dumps({"marker": marker, "tests": asserts})}
        return [_Job(row, _HARNESS, "", files, None, marker, len(asserts))]
    pairs = _io_pairs(row, row_tests)
    return [_Job(row, code, stdin, None, expected, None, 1) for stdin, expected in pairs]


def _io_pairs(row: int, row_tests: Any) -> list[tuple[str, str]]:
    where = f"tests[{row}]"
    if isinstance(row_tests, dict):
        if set(row_tests) != {"inputs", "outputs"}:
            raise ValueError(
                f"{where}: a dict of tests needs exactly the keys 'inputs' and 'outputs', "
                f"got {sorted(row_tests)}"
            )
        inputs, outputs = row_tests["inputs"], row_tests["outputs"]
        if not isinstance(inputs, list) or not isinstance(outputs, list) or len(inputs) != len(outputs):
            raise ValueError(f"{where}: 'inputs' and 'outputs' must be lists of the same length")
        row_tests = list(zip(inputs, outputs))
    if not isinstance(row_tests, (list, tuple)) or not row_tests:
        raise ValueError(
            f"{where} must be an assert string, a non-empty list of assert strings or of "
            f"(stdin, expected_stdout) pairs, or {{'inputs', 'outputs'}}; got {row_tests!r:.200}"
        )
    pairs = []
    for i, case in enumerate(row_tests):
        if isinstance(case, dict) and set(case) == {"input", "output"}:
            case = (case["input"], case["output"])
        if not (isinstance(case, (list, tuple)) and len(case) == 2 and all(isinstance(x, str) for x in case)):
            raise ValueError(
                f"{where}[{i}] must be a (stdin, expected_stdout) pair of strings or a dict "
                f"with 'input' and 'output'; got {case!r:.200}"
            )
        pairs.append((case[0], case[1]))
    return pairs


def make_code_tests_reward(
    *,
    tests_column: str = "tests",
    max_workers: int | None = None,
    error_score: float | None = 0.0,
    wall_time_s: float = SandboxLimits.wall_time_s,
    cpu_time_s: float = SandboxLimits.cpu_time_s,
    memory_mb: int = SandboxLimits.memory_mb,
    max_output_bytes: int = SandboxLimits.max_output_bytes,
    max_processes: int = SandboxLimits.max_processes,
    max_file_size_mb: int = SandboxLimits.max_file_size_mb,
    max_open_files: int = SandboxLimits.max_open_files,
    workdir_size_mb: int = SandboxLimits.workdir_size_mb,
    readable_paths: Sequence[str] = (),
) -> CodeTestsReward:
    """Build a :class:`CodeTestsReward` from flat options, as a config file gives them.

    The reward registry checks options against this signature, so every :class:`SandboxLimits` field is
    spelled out (its default read from the class, so the two cannot drift).
    """
    limits = SandboxLimits(
        wall_time_s=wall_time_s,
        cpu_time_s=cpu_time_s,
        memory_mb=memory_mb,
        max_output_bytes=max_output_bytes,
        max_processes=max_processes,
        max_file_size_mb=max_file_size_mb,
        max_open_files=max_open_files,
        workdir_size_mb=workdir_size_mb,
        readable_paths=tuple(readable_paths),
    )
    return CodeTestsReward(
        limits=limits, max_workers=max_workers, error_score=error_score, tests_column=tests_column
    )


code_tests = CodeTestsReward()
"""The default instance: :class:`SandboxLimits` defaults, up to 4 workers, failures score 0.0."""
