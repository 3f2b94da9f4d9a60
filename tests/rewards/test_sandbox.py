"""The code sandbox against hostile programs, and the code_tests reward on normal ones.

Each hostile test checks the protection it names: several also run with that one protection switched
off (``dataclasses.replace(isolation, ...)``) to show the layer is what stops the program, so removing
it from the sandbox makes the test fail.
"""

from __future__ import annotations

import dataclasses
import os
import signal
import socket
import sys
import tempfile
import textwrap
import threading
import time

import psutil
import pytest

from grpokit.rewards.code import CodeTestsReward, code_tests, extract_code, make_code_tests_reward
from grpokit.rewards.sandbox import (
    SandboxLimits,
    SandboxSetupError,
    SandboxStatus,
    run_in_sandbox,
    sandbox_isolation,
)

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the sandbox tests need Linux")

FAST = SandboxLimits(
    wall_time_s=1.0,
    cpu_time_s=1.0,
    memory_mb=256,
    max_output_bytes=100_000,
    max_processes=8,
    max_file_size_mb=1,
)
# For tests not about time: a loaded 2-core machine can take most of a second to start Python.
ROOMY = dataclasses.replace(FAST, wall_time_s=10.0, cpu_time_s=10.0)
SLACK_S = 1.5  # launcher start-up and teardown on a loaded 2-core machine


@pytest.fixture(scope="module")
def iso():
    isolation = sandbox_isolation()
    if not (
        isolation.pid_namespace
        and isolation.net_namespace
        and isolation.drop_privileges
        and isolation.landlock_abi >= 6
    ):
        pytest.skip(f"this machine lacks a protection the hostile tests check:\n{isolation.describe()}")
    return isolation


RUN_UIDS: list[int] = []  # uids of the runs made by the current test (each run draws a fresh one)


def run(code: str, limits: SandboxLimits = ROOMY, **kwargs):
    start = time.monotonic()
    result = run_in_sandbox(textwrap.dedent(code), limits=limits, **kwargs)
    if result.uid is not None:
        RUN_UIDS.append(result.uid)
    return result, time.monotonic() - start


def kill_processes_of(uids: list[int]) -> list[int]:
    """Kill every process running as one of ``uids`` (anywhere on the machine); return their pids."""
    found = [p for p in psutil.process_iter(["uids"]) if p.info["uids"] and p.info["uids"].real in uids]
    for proc in found:
        proc.kill()
    psutil.wait_procs(found, timeout=5)
    return [p.pid for p in found]


@pytest.fixture
def no_survivors(iso):
    """Fails the test if a process of one of its runs outlives it; kills survivors so they do not leak.

    Only this test's uids are checked, so sandboxes of a concurrent session do not count.
    """
    RUN_UIDS.clear()
    yield
    assert RUN_UIDS, "the test made no run under a dropped uid"
    survivors = kill_processes_of(RUN_UIDS)
    assert not survivors, f"sandbox processes survived: {survivors}"


# --------------------------------------------------------------------------------------------------
# Normal programs


def test_runs_program_with_stdin_in_a_fresh_directory_that_is_removed(iso):
    result, _ = run("import os, sys\nprint(sys.stdin.read().upper())\nprint(os.getcwd())", stdin="hello")
    assert result.status is SandboxStatus.OK and result.returncode == 0
    upper, cwd = result.stdout.splitlines()
    assert upper == "HELLO"
    assert os.path.basename(cwd) == "work" and "grpokit-sandbox-" in cwd
    assert not os.path.exists(cwd)


def test_extra_files_are_readable_and_bad_names_rejected(iso):
    result, _ = run("print(open('data.txt').read())", files={"data.txt": "42"})
    assert result.stdout.strip() == "42"
    with pytest.raises(ValueError, match="'../x'"):
        run_in_sandbox("pass", files={"../x": ""})


def test_error_and_syntax_error_are_classified(iso):
    error, _ = run("raise KeyError('boom')")
    assert error.status is SandboxStatus.ERROR and error.returncode == 1
    assert "KeyError: 'boom'" in error.reason
    syntax, _ = run("def f(:\n    pass")
    assert syntax.status is SandboxStatus.SYNTAX_ERROR and syntax.reason.startswith("SyntaxError")


def test_missing_interpreter_is_a_setup_error():
    with pytest.raises(SandboxSetupError, match="/nonexistent/python"):
        run_in_sandbox("pass", python="/nonexistent/python")


@pytest.mark.parametrize(
    "field, value",
    [
        ("wall_time_s", 0),
        ("cpu_time_s", float("inf")),
        ("memory_mb", 8),
        ("max_output_bytes", 0),
        ("max_processes", True),
        ("max_file_size_mb", 1.5),
        ("network", "allow"),
        ("readable_paths", ("relative/path",)),
    ],
)
def test_limits_reject_bad_values_naming_the_field(field, value):
    with pytest.raises(ValueError, match=f"SandboxLimits.{field}"):
        SandboxLimits(**{field: value})


# --------------------------------------------------------------------------------------------------
# Hostile programs: time


def test_sleeping_forever_is_killed_at_the_wall_clock_limit(iso, no_survivors):
    limits = dataclasses.replace(FAST, wall_time_s=0.5, cpu_time_s=10)
    result, elapsed = run("import time\ntime.sleep(100)", limits)
    assert result.status is SandboxStatus.TIMEOUT and "wall-clock" in result.reason
    assert result.returncode == -signal.SIGKILL
    assert 0.5 <= result.wall_time < 0.5 + 0.5  # the excess is the supervisor's wake-up latency
    assert elapsed < 0.5 + SLACK_S


def test_busy_loop_is_stopped_by_the_cpu_limit(iso, no_survivors):
    # Wall limit far away: only RLIMIT_CPU (SIGXCPU after 1 CPU second) can end this run in time.
    limits = dataclasses.replace(FAST, wall_time_s=20, cpu_time_s=1)
    result, elapsed = run("while True:\n    pass", limits)
    assert result.status is SandboxStatus.TIMEOUT and "CPU time limit" in result.reason
    assert result.returncode == -signal.SIGXCPU
    # rusage samples CPU time at tick granularity while the rlimit uses the precise runtime, so the
    # report can read a little under the 1 s that fired SIGXCPU; the hard limit (SIGKILL) is at 2 s.
    assert 0.8 < result.cpu_time < 2.0
    assert elapsed < 10  # CPU seconds accrue slower than wall seconds on a shared machine


# --------------------------------------------------------------------------------------------------
# Hostile programs: processes


def test_process_count_is_capped_by_rlimit_nproc(iso, no_survivors):
    # 30 sleeping children requested, 8 processes allowed in all (RLIMIT_NPROC counts the parent).
    result, _ = run("""
        import os, time
        made = 0
        for _ in range(30):
            try:
                pid = os.fork()
            except OSError:
                continue
            if pid == 0:
                time.sleep(100)
                os._exit(0)
            made += 1
        print(made)
    """)
    assert result.status is SandboxStatus.OK
    assert int(result.stdout) == FAST.max_processes - 1


def test_fork_bomb_is_contained_and_leaves_no_process(iso, no_survivors):
    start_load = time.monotonic()
    result, elapsed = run(
        """
        import os
        while True:
            try:
                os.fork()
            except OSError:
                pass
    """,
        dataclasses.replace(FAST, wall_time_s=0.5),
    )
    assert result.status is SandboxStatus.TIMEOUT
    assert elapsed < 0.5 + SLACK_S
    # The machine still answers: a plain program runs normally right after.
    after, _ = run("print('alive')")
    assert after.stdout == "alive\n" and time.monotonic() - start_load < 0.5 + 2 * SLACK_S


@pytest.mark.parametrize("layer", ["all", "no_pid_namespace"])
def test_grandchild_that_outlives_the_program_is_killed(iso, no_survivors, layer):
    # Without a pid namespace, the launcher's kill-all-of-uid cleanup must catch the setsid() escapee.
    isolation = iso if layer == "all" else dataclasses.replace(iso, pid_namespace=False)
    result, elapsed = run(
        """
        import os, time
        if os.fork() == 0:
            os.setsid()          # leave the process group: killpg alone would miss it
            if os.fork() == 0:
                time.sleep(30)   # keeps stdout open, too
            os._exit(0)
        print("parent done")
    """,
        isolation=isolation,
    )
    assert result.status is SandboxStatus.OK and result.stdout == "parent done\n"
    assert elapsed < SLACK_S


def test_grandchild_survives_when_every_kill_layer_is_off(iso, monkeypatch):
    # The control for the test above: with neither pid namespace nor uid cleanup the escapee lives,
    # so the no_survivors check would fail there if those layers were removed from the sandbox.
    isolation = dataclasses.replace(iso, pid_namespace=False)
    code = "import os, time\nif os.fork() == 0:\n    os.setsid()\n    time.sleep(30)\n"
    from grpokit.rewards import sandbox

    original = sandbox._Run._config

    def without_cleanup(self, *args):
        config = original(self, *args)
        config["kill_uid_on_exit"] = False
        return config

    monkeypatch.setattr(sandbox._Run, "_config", without_cleanup)
    RUN_UIDS.clear()
    run(code, isolation=isolation)
    assert len(kill_processes_of(RUN_UIDS)) == 1


# --------------------------------------------------------------------------------------------------
# Hostile programs: memory, output, files


def test_50_gb_allocation_fails_with_memory_error(iso, no_survivors):
    result, elapsed = run("x = bytearray(50 * 1024**3)")
    assert result.status is SandboxStatus.MEMORY and "256 MiB" in result.reason
    assert elapsed < SLACK_S


def test_allocation_that_fits_the_machine_but_not_the_limit_fails(iso):
    # 400 MiB fits in RAM, and bytes(n) is calloc'd (no page is touched), so only RLIMIT_AS stops it.
    code = "x = bytes(400 * 1024**2)\nprint('allocated')"
    limited, _ = run(code, dataclasses.replace(ROOMY, memory_mb=128))
    assert limited.status is SandboxStatus.MEMORY
    roomy, _ = run(code, dataclasses.replace(ROOMY, memory_mb=1024))
    assert roomy.status is SandboxStatus.OK and roomy.stdout == "allocated\n"


def test_printing_gigabytes_is_capped_and_killed_fast(iso, no_survivors):
    result, elapsed = run("import sys\nwhile True:\n    sys.stdout.write('x' * 65536)")
    assert result.status is SandboxStatus.OUTPUT_LIMIT and result.output_truncated
    assert len(result.stdout) == FAST.max_output_bytes
    assert result.returncode == -signal.SIGKILL
    assert elapsed < SLACK_S


def test_file_size_is_capped(iso):
    result, _ = run("open('big', 'wb').write(b'x' * (5 * 1024 * 1024))")
    # CPython ignores SIGXFSZ, so RLIMIT_FSIZE surfaces as EFBIG.
    assert result.status is SandboxStatus.ERROR and "File too large" in result.reason


FILL_DISK = """
import errno
written = 0
try:
    for i in range(24):
        with open(f"f{i}", "wb") as f:
            f.write(b"x" * 1024 * 1024)
        written += 1
    print(written)
except OSError as exc:
    print(written, errno.errorcode[exc.errno])
"""


@pytest.mark.parametrize("layer", ["all", "no_mount_namespace"])
def test_total_disk_use_is_capped_by_the_tmpfs_working_directory(iso, layer):
    # 24 files of 1 MiB, each under max_file_size_mb, against an 8 MiB working directory. Without a
    # mount namespace (the control; run as root, since the interpreter then cannot be exposed) the
    # only cap is per file, and all 24 land on disk.
    isolation = (
        iso if layer == "all" else dataclasses.replace(iso, mount_namespace=False, drop_privileges=False)
    )
    limits = dataclasses.replace(ROOMY, max_file_size_mb=2, workdir_size_mb=8)
    result, _ = run(FILL_DISK, limits, isolation=isolation)
    written, *error = result.stdout.split()
    if layer == "all":
        assert 5 <= int(written) < 8 and error == ["ENOSPC"]
    else:
        assert int(written) == 24 and error == []


@pytest.fixture
def outside_dirs(tmp_path):
    """A root-only directory (pytest's tmp_path, 0700) and a world-writable one outside the sandbox."""
    open_dir = tempfile.mkdtemp(prefix="grpokit-test-open-")
    os.chmod(open_dir, 0o1777)
    yield str(tmp_path), open_dir
    for name in os.listdir(open_dir):
        os.remove(os.path.join(open_dir, name))
    os.rmdir(open_dir)


WRITE = """
import sys
for d in sys.argv[1:] or {dirs!r}:
    try:
        open(d + "/escape.txt", "w").write("x")
        print("wrote", d)
    except OSError as exc:
        print("blocked", d, type(exc).__name__)
"""


@pytest.mark.parametrize(
    "layer, open_dir_writable", [("all", False), ("no_landlock", True), ("no_uid_drop", False)]
)
def test_writes_outside_the_working_directory(iso, outside_dirs, layer, open_dir_writable):
    # Landlock blocks both directories; the uid drop alone protects only the root-owned one.
    isolation = {
        "all": iso,
        "no_landlock": dataclasses.replace(iso, landlock_abi=0),
        "no_uid_drop": dataclasses.replace(iso, drop_privileges=False),
    }[layer]
    root_only, world_writable = outside_dirs
    result, _ = run(WRITE.format(dirs=[root_only, world_writable]), isolation=isolation)
    assert result.status is SandboxStatus.OK, result.stderr
    assert f"blocked {root_only} PermissionError" in result.stdout
    assert not os.path.exists(os.path.join(root_only, "escape.txt"))
    assert os.path.exists(os.path.join(world_writable, "escape.txt")) is open_dir_writable


def test_reading_files_outside_the_allowed_directories_is_blocked(iso):
    with tempfile.TemporaryDirectory(prefix="grpokit-test-read-") as public:
        os.chmod(public, 0o755)
        secret = os.path.join(public, "answers.txt")
        with open(secret, "w") as f:
            f.write("expected outputs")
        os.chmod(secret, 0o644)
        code = f"print(open({secret!r}).read())"
        blocked, _ = run(code)
        assert blocked.status is SandboxStatus.ERROR and "PermissionError" in blocked.reason
        allowed, _ = run(code, dataclasses.replace(ROOMY, readable_paths=(public,)))
        assert allowed.stdout == "expected outputs\n"


# --------------------------------------------------------------------------------------------------
# Hostile programs: secrets and network


def test_parent_environment_is_not_visible(iso, monkeypatch):
    monkeypatch.setenv("GRPOKIT_TEST_SECRET", "hunter2-token")
    result, _ = run(f"""
        import os
        print(dict(os.environ))
        for path in ("/proc/{os.getpid()}/environ", "/proc/1/environ"):
            try:
                print(open(path, "rb").read())
            except OSError as exc:
                print(path, type(exc).__name__)
    """)
    assert result.status is SandboxStatus.OK, result.stderr
    assert "hunter2-token" not in result.stdout + result.stderr
    assert sorted(eval(result.stdout.splitlines()[0])) == ["HOME", "LANG", "PATH", "TMPDIR"]


def test_proc_shows_only_the_sandbox(iso):
    result, _ = run("import os\nprint(sorted(int(p) for p in os.listdir('/proc') if p.isdigit()))")
    assert result.stdout == "[1, 2]\n"  # the sandbox's init and the program


@pytest.fixture
def listener():
    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    server.setblocking(False)
    yield server
    server.close()


CONNECT = """
import errno, socket
try:
    socket.create_connection(("127.0.0.1", {port}), timeout=1).sendall(b"leak")
    print("connected")
except OSError as exc:
    print("blocked", errno.errorcode.get(exc.errno, exc.errno))
"""

# Runs CONNECT in a fresh interpreter, where a monkey-patched socket module is intact.
CONNECT_VIA_SUBPROCESS = """
import subprocess, sys
print(subprocess.run([sys.executable, "-I", "-c", {code!r}], capture_output=True, text=True).stdout, end="")
"""


@pytest.mark.parametrize(
    "layer, error",
    [
        ("all", "EACCES"),
        ("net_namespace_only", "ENETUNREACH"),
        ("landlock_only", "EACCES"),
        ("socket_patch_only", "EACCES"),
    ],
)
def test_network_connection_to_the_host_fails(iso, listener, layer, error):
    isolation = {
        "all": iso,
        "net_namespace_only": dataclasses.replace(iso, landlock_abi=0),
        "landlock_only": dataclasses.replace(iso, net_namespace=False),
        "socket_patch_only": dataclasses.replace(iso, net_namespace=False, landlock_abi=0),
    }[layer]
    assert (
        isolation.network
        == {
            "all": "namespace",
            "net_namespace_only": "namespace",
            "landlock_only": "landlock-tcp",
            "socket_patch_only": "socket-patch",
        }[layer]
    )
    result, _ = run(CONNECT.format(port=listener.getsockname()[1]), isolation=isolation)
    assert result.stdout == f"blocked {error}\n"
    with pytest.raises(BlockingIOError):
        listener.accept()


@pytest.mark.parametrize("layer, output", [("all", "blocked EACCES\n"), ("socket_patch_only", "connected\n")])
def test_socket_patch_fallback_is_weak(iso, listener, layer, output):
    # The kernel layers hold for a child interpreter; the socket patch does not, as docs/sandbox.md says.
    # The "connected" case is also the control showing the listener can be reached at all.
    isolation = iso if layer == "all" else dataclasses.replace(iso, net_namespace=False, landlock_abi=0)
    code = CONNECT_VIA_SUBPROCESS.format(code=CONNECT.format(port=listener.getsockname()[1]))
    result, _ = run(code, isolation=isolation)
    assert result.stdout == output, result.stderr
    if output == "connected\n":
        conn, _ = listener.accept()
        conn.close()
    else:
        with pytest.raises(BlockingIOError):
            listener.accept()


# --------------------------------------------------------------------------------------------------
# extract_code


@pytest.mark.parametrize(
    "completion, code",
    [
        ("Here:\n```python\nprint(1)\n```\nDone.", "print(1)\n"),
        ("```py\nx = 1\n```", "x = 1\n"),
        ("```python\nfirst()\n```\nbetter:\n```python\nsecond()\n```", "second()\n"),
        ("```\nuntagged()\n```", "untagged()\n"),
        ("```text\nnote\n```\n```python\ncode()\n```\n```\nlast_untagged()\n```", "code()\n"),
        ("```python\ncut_off_by_max_tokens(", "cut_off_by_max_tokens("),
        ("print('no fence')", "print('no fence')"),
        ("```bash\nls\n```", "```bash\nls\n```"),
    ],
)
def test_extract_code(completion, code):
    assert extract_code(completion) == code


# --------------------------------------------------------------------------------------------------
# The code_tests reward

SQUARE = "```python\ndef square(x):\n    return x * x\n```"
ECHO_SUM = "```python\na, b = map(int, input().split())\nprint(a + b)\n```"


def test_assert_block_scores_one_or_zero(iso):
    reward = CodeTestsReward(limits=ROOMY, max_workers=2)
    tests = "assert square(2) == 4\nassert square(3) == 9"
    wrong = "```python\ndef square(x):\n    return x + x\n```"  # right for 2, wrong for 3
    assert reward(["p", "p"], [SQUARE, wrong], tests=[tests, tests]) == [1.0, 0.0]
    assert reward.last_outcomes[1].status is SandboxStatus.ERROR
    assert "AssertionError" in reward.last_outcomes[1].reason


def test_assert_list_scores_the_fraction_passed(iso):
    reward = CodeTestsReward(limits=ROOMY)
    half_right = "```python\ndef square(x):\n    return 4\n```"
    tests = ["assert square(2) == 4", "assert square(3) == 9", "assert square(-2) == 4"]
    # Passes tests 0 and 2, fails test 1 without hiding test 2.
    assert reward(["p"], [half_right], tests=[tests]) == [pytest.approx(2 / 3, rel=1e-12)]
    assert reward.last_outcomes[0].passed == 2 and reward.last_outcomes[0].total == 3


def test_stdin_stdout_pairs_score_the_fraction_passed(iso):
    reward = CodeTestsReward(limits=ROOMY, max_workers=2)
    pairs = [("1 2\n", "3\n"), ["10 5", "15"], {"input": "0 0", "output": "0  \n\n"}]
    off_by_one = "```python\na, b = map(int, input().split())\nprint(a + b + (a == 10))\n```"
    apps = {"inputs": ["2 2"], "outputs": ["4"]}
    assert reward(["p"] * 3, [ECHO_SUM, off_by_one, ECHO_SUM], tests=[pairs, pairs, apps]) == [
        1.0,
        pytest.approx(2 / 3, rel=1e-12),
        1.0,
    ]
    assert reward.last_outcomes[1].reason == "wrong output"


def test_failures_score_the_error_score_with_a_reason(iso):
    # The loop is stopped by the CPU limit: a short wall limit would also hit the others on a busy machine.
    reward = CodeTestsReward(limits=dataclasses.replace(ROOMY, cpu_time_s=1), error_score=None)
    completions = ["```python\ndef square(x) return x\n```", "```python\nwhile True: pass\n```", SQUARE]
    tests = ["assert square(2) == 4"] * 3
    assert reward(["p"] * 3, completions, tests=tests) == [None, None, 1.0]
    syntax, timeout, ok = reward.last_outcomes
    assert syntax.status is SandboxStatus.SYNTAX_ERROR and timeout.status is SandboxStatus.TIMEOUT
    assert ok.status is SandboxStatus.OK
    assert reward.last_metrics["code/status_syntax_error"] == pytest.approx(1 / 3, rel=1e-12)
    assert reward.last_metrics["code/pass_rate"] == pytest.approx(1 / 3, rel=1e-12)


@pytest.mark.parametrize(
    "cheat",
    [
        "import sys\nsys.exit(0)",
        "import os\nos._exit(0)",
        "print('\\nPASS 0')",
    ],
)
def test_exiting_before_the_tests_or_faking_output_scores_zero(iso, cheat):
    reward = CodeTestsReward(limits=ROOMY)
    assert reward(["p"], [f"```python\n{cheat}\n```"], tests=["assert False"]) == [0.0]


def test_default_instance_is_named_for_the_registry(iso):
    assert code_tests.__name__ == "code_tests"
    assert code_tests(["p"], [SQUARE], tests=["assert square(5) == 25"]) == [1.0]


def test_factory_builds_limits_from_flat_options_and_reads_the_named_column(iso):
    reward = make_code_tests_reward(tests_column="test_cases", wall_time_s=2, memory_mb=128, error_score=-1.0)
    assert reward.limits == SandboxLimits(wall_time_s=2, memory_mb=128)
    assert reward.error_score == -1.0
    assert make_code_tests_reward().limits == SandboxLimits()
    scores = reward(
        ["p", "p"],
        [SQUARE, "def square(:"],
        tests=["ignored", "ignored"],
        test_cases=["assert square(4) == 16"] * 2,
    )
    assert scores == [1.0, -1.0]
    with pytest.raises(ValueError, match="'test_cases' dataset column; the dataset has \\['tests'\\]"):
        reward(["p"], [SQUARE], tests=["assert True"])
    with pytest.raises(ValueError, match="SandboxLimits.wall_time_s"):
        make_code_tests_reward(wall_time_s=-1)


@pytest.mark.parametrize(
    "tests, message",
    [
        ([None], r"tests\[0\] must be"),
        ([[("1", 2)]], r"tests\[0\]\[0\] must be"),
        ([{"inputs": ["1"]}], r"tests\[0\]: a dict"),
        ([{"inputs": ["1"], "outputs": []}], r"tests\[0\]: 'inputs' and 'outputs'"),
        ([[]], r"tests\[0\] must be"),
        (["a", "b"], "tests has 2 entries but there are 1 completions"),
    ],
)
def test_bad_tests_column_raises_naming_the_row(tests, message):
    with pytest.raises(ValueError, match=message):
        CodeTestsReward()(["p"], ["x"], tests=tests)


def test_runs_are_parallel_but_bounded_by_max_workers(iso, monkeypatch):
    from grpokit.rewards import code

    in_flight, peak, lock = 0, 0, threading.Lock()

    def counting_run(*args, **kwargs):
        nonlocal in_flight, peak
        with lock:
            in_flight += 1
            peak = max(peak, in_flight)
        try:
            return run_in_sandbox(*args, **kwargs)
        finally:
            with lock:
                in_flight -= 1

    monkeypatch.setattr(code, "run_in_sandbox", counting_run)
    reward = CodeTestsReward(limits=ROOMY, max_workers=2)
    slow = "```python\nimport time\ntime.sleep(0.3)\nprint(input())\n```"
    pairs = [("a", "a"), ("b", "b"), ("c", "c")]
    assert reward(["p", "p"], [slow, slow], tests=[pairs, pairs]) == [1.0, 1.0]
    assert peak == 2


def test_supervisor_needs_the_launchers_output_pipes():
    import subprocess

    from grpokit.rewards.sandbox import _Supervisor

    launcher = subprocess.Popen([sys.executable, "-c", "pass"], stderr=subprocess.PIPE)
    try:
        with pytest.raises(ValueError, match="stdout=PIPE and stderr=PIPE"):
            _Supervisor(launcher, -1, -1, FAST, None)
    finally:
        launcher.communicate()
