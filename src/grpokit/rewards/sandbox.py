"""Run untrusted Python in a separate, resource-limited and isolated process.

The code reward (:mod:`grpokit.rewards.code`) executes what the policy writes. A policy under RL pressure
explores everything that moves the reward, so the sandbox assumes the program is hostile: it may loop
forever, fork without end, allocate or print without bound, fill the disk, read the trainer's secrets,
open network connections, or leave grandchildren behind. See ``docs/sandbox.md`` for the threat model.

One run is three processes besides the trainer::

    trainer ──Popen──► launcher (this file as a script) ──fork──► init ──fork──► program
                       unshare(user?, mount, pid, net, ipc)      pid 1 of the    rlimits, uid drop,
                       expose the interpreter, tmpfs workdir     pid namespace;  NO_NEW_PRIVS,
                       reports to the trainer over a pipe        /proc, reaping  Landlock, exec

Protections, each detected once (:func:`sandbox_isolation`) and used where the platform has it:

1. A fresh working directory, removed afterwards; a minimal environment; ``python -I``.
2. rlimits: ``RLIMIT_CPU``, ``RLIMIT_AS``, ``RLIMIT_NPROC``, ``RLIMIT_FSIZE``, ``RLIMIT_NOFILE``,
   ``RLIMIT_CORE = 0``; a wall-clock limit and an output cap enforced by the parent.
3. When the parent is root (or holds ``CAP_SETUID``): the program runs as a fresh unprivileged uid drawn
   per run, so ``RLIMIT_NPROC`` is enforced (it is not for root) and counts this run's processes only.
4. Linux namespaces: a pid namespace (when its pid 1 dies the kernel kills every process in it, so
   grandchildren that called ``setsid()`` die too), a network namespace (only a down loopback), an IPC
   namespace, and a mount namespace holding a private ``/proc`` and a size-capped tmpfs working directory.
5. Landlock (Linux >= 5.13): writes only inside the working directory (and ``/dev/null``), reads only in
   the system and interpreter directories, no TCP connect/bind (ABI >= 4), no signals or abstract Unix
   sockets outside the sandbox (ABI >= 6).

Without namespaces the whole process group is killed at the end and, when the uid was dropped, every
process of that uid; without network namespace and Landlock TCP rules, ``socket`` is patched in the
program (weak: a child interpreter gets around it). Sandbox setup failures raise
:class:`SandboxSetupError`; whatever the program does is reported in a :class:`SandboxResult`, never
raised.

This module imports only the standard library: the launcher runs it as ``python -I -S sandbox.py``.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import secrets
import selectors
import shutil
import signal
import stat
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from functools import lru_cache
from typing import Any, Literal

__all__ = [
    "SandboxIsolation",
    "SandboxLimits",
    "SandboxResult",
    "SandboxSetupError",
    "SandboxStatus",
    "run_in_sandbox",
    "sandbox_isolation",
]


class SandboxSetupError(RuntimeError):
    """The sandbox itself could not be set up (interpreter missing, kernel refused a protection, ...).

    Raised, unlike anything the sandboxed program does, because no score computed without a working
    sandbox would be meaningful.
    """


@dataclass(frozen=True)
class SandboxLimits:
    """Resource limits of one sandboxed run. Every field is validated on construction."""

    wall_time_s: float = 5.0
    """Wall-clock seconds from the program's start (after the sandbox is set up) until it is killed."""
    cpu_time_s: float = 5.0
    """CPU seconds (``RLIMIT_CPU``, rounded up to whole seconds): SIGXCPU, then SIGKILL one second later."""
    memory_mb: int = 512
    """Address space in MiB (``RLIMIT_AS``) of each process; allocations beyond it fail (MemoryError)."""
    max_output_bytes: int = 1_000_000
    """Bytes kept from stdout and from stderr each; the program is killed as soon as either exceeds it."""
    max_processes: int = 16
    """Processes and threads of the run (``RLIMIT_NPROC``; enforced only when the uid is dropped)."""
    max_file_size_mb: int = 16
    """Largest file the program may write, in MiB (``RLIMIT_FSIZE``; SIGXFSZ beyond it)."""
    max_open_files: int = 64
    """Open file descriptors per process (``RLIMIT_NOFILE``)."""
    workdir_size_mb: int = 64
    """Size of the working directory, a private tmpfs where a mount namespace exists (else unbounded:
    only each file is capped by ``max_file_size_mb``). Counts against RAM while the run lasts."""
    network: Literal["deny"] = "deny"
    """Network access. Only ``"deny"`` exists: the field makes the policy explicit in configs."""
    readable_paths: tuple[str, ...] = ()
    """Extra files or directories the program may read, beyond the system and interpreter directories
    (only matters where Landlock restricts reads)."""

    def __post_init__(self) -> None:
        for name in ("wall_time_s", "cpu_time_s"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or isinstance(value, bool) or not 0 < value < math.inf:
                raise ValueError(f"SandboxLimits.{name} must be a positive finite number, got {value!r}")
        minimum = {
            "memory_mb": 16,
            "max_output_bytes": 1,
            "max_processes": 1,
            "max_file_size_mb": 1,
            "max_open_files": 8,
            "workdir_size_mb": 1,
        }
        for name, low in minimum.items():
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < low:
                raise ValueError(f"SandboxLimits.{name} must be an integer >= {low}, got {value!r}")
        if self.network != "deny":
            raise ValueError(f"SandboxLimits.network must be 'deny', got {self.network!r}")
        if isinstance(self.readable_paths, str) or not all(
            isinstance(p, str) and os.path.isabs(p) for p in self.readable_paths
        ):
            raise ValueError(
                f"SandboxLimits.readable_paths must be a tuple of absolute paths, got {self.readable_paths!r}"
            )


class SandboxStatus(str, Enum):
    """How a sandboxed program ended. Only ``OK`` means it ran to completion with exit status 0."""

    OK = "ok"
    ERROR = "error"  # non-zero exit status, e.g. an uncaught exception or a failed assert
    SYNTAX_ERROR = "syntax_error"  # the code did not compile
    TIMEOUT = "timeout"  # wall-clock or CPU limit
    MEMORY = "memory"  # MemoryError under RLIMIT_AS
    OUTPUT_LIMIT = "output_limit"  # more than max_output_bytes on stdout or stderr
    CRASH = "crash"  # killed by a signal (SIGSEGV, SIGXFSZ for the file-size limit, ...)


@dataclass(frozen=True)
class SandboxResult:
    """What one sandboxed run produced. ``stdout`` and ``stderr`` hold at most ``max_output_bytes`` each."""

    status: SandboxStatus
    returncode: int | None
    """Exit status, or ``-signal`` when killed (the ``subprocess`` convention); None if it never ended."""
    stdout: str
    stderr: str
    wall_time: float
    """Seconds from the program's start to its end (sandbox setup excluded)."""
    cpu_time: float | None
    """User + system CPU seconds of the program's main process; None when it was killed by the
    wall-clock or output limit inside a pid namespace (its init died before reporting)."""
    reason: str
    """One human-readable line: why the run ended the way it did."""
    output_truncated: bool = False
    uid: int | None = None
    """The unprivileged uid the program ran as; None when privileges were not dropped."""


@dataclass(frozen=True)
class SandboxIsolation:
    """Which protections the sandbox uses on this machine (see :func:`sandbox_isolation`).

    Pass a copy with a field turned off to :func:`run_in_sandbox` to disable that protection (tests do
    this to check each layer alone); turning on a protection the platform lacks makes the run fail with
    :class:`SandboxSetupError`.
    """

    platform: str
    user_namespace: bool
    """Namespaces are created inside a new user namespace (needed when the parent is not root)."""
    pid_namespace: bool
    net_namespace: bool
    mount_namespace: bool
    """Private mounts: a fresh ``/proc`` for the pid namespace; exposing an interpreter under a 0700 home."""
    drop_privileges: bool
    """Run the program as a fresh unprivileged uid/gid from ``uid_range``."""
    uid_range: tuple[int, int] | None
    """Half-open range ``[low, high)`` of uids drawn per run when ``drop_privileges``."""
    landlock_abi: int
    """Landlock ABI version in use; 0 for none."""
    restrict_reads: bool = True
    """With Landlock: allow reads only in system, interpreter and ``readable_paths`` directories."""

    @property
    def network(self) -> str:
        """How network access is denied: ``namespace``, ``landlock-tcp`` or ``socket-patch`` (weak)."""
        if self.net_namespace:
            return "namespace"
        if self.landlock_abi >= 4:
            return "landlock-tcp"
        return "socket-patch"

    def describe(self) -> str:
        """One line per protection, for logs and bug reports."""

        def yes(flag: bool) -> str:
            return "yes" if flag else "NO"

        return "\n".join(
            [
                f"platform: {self.platform}",
                f"pid namespace (grandchildren killed): {yes(self.pid_namespace)}",
                f"network: {self.network}",
                f"mount namespace (private /proc): {yes(self.mount_namespace)}",
                f"unprivileged uid (RLIMIT_NPROC enforced): {yes(self.drop_privileges)}",
                f"landlock ABI: {self.landlock_abi or 'NO'}"
                + (" (reads restricted)" if self.landlock_abi and self.restrict_reads else ""),
            ]
        )


# ----------------------------------------------------------------------------------------------------
# Linux constants (linux/sched.h, linux/mount.h, linux/prctl.h, linux/landlock.h)

CLONE_NEWNS, CLONE_NEWIPC, CLONE_NEWUSER = 0x00020000, 0x08000000, 0x10000000
CLONE_NEWPID, CLONE_NEWNET = 0x20000000, 0x40000000
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC, MS_REMOUNT = 1, 2, 4, 8, 32
MS_BIND, MS_REC, MS_PRIVATE, MNT_DETACH = 4096, 16384, 1 << 18, 2
PR_SET_PDEATHSIG, PR_SET_CHILD_SUBREAPER, PR_SET_NO_NEW_PRIVS = 1, 36, 38
# Landlock syscalls have the same numbers on every architecture (unified syscall table).
SYS_LANDLOCK_CREATE_RULESET, SYS_LANDLOCK_ADD_RULE, SYS_LANDLOCK_RESTRICT_SELF = 444, 445, 446
LL_EXECUTE, LL_WRITE_FILE, LL_READ_FILE, LL_READ_DIR = 1 << 0, 1 << 1, 1 << 2, 1 << 3
LL_REFER, LL_TRUNCATE, LL_IOCTL_DEV = 1 << 13, 1 << 14, 1 << 15
LL_FILE_RIGHTS = LL_EXECUTE | LL_WRITE_FILE | LL_READ_FILE | LL_TRUNCATE | LL_IOCTL_DEV
LL_READ_RIGHTS = LL_EXECUTE | LL_READ_FILE | LL_READ_DIR
LL_NET_BIND_TCP, LL_NET_CONNECT_TCP = 1 << 0, 1 << 1
LL_SCOPE_ABSTRACT_UNIX_SOCKET, LL_SCOPE_SIGNAL = 1 << 0, 1 << 1

_SETUP_TIMEOUT_S = 30.0  # launcher start-up on a loaded machine; not charged to the program
_KILL_GRACE_S = 2.0  # after a kill, how long to wait for the launcher's report
_EOF_GRACE_S = 0.5  # after the program's exit, how long leftover writers may hold the pipes
_READ_CHUNK = 65536
_SYSTEM_READ_DIRS = ("/usr", "/lib", "/lib32", "/lib64", "/libx32", "/bin", "/sbin", "/etc", "/dev", "/nix")
_SAFE_PATH = "/usr/local/bin:/usr/bin:/bin"

# Last resort when neither a network namespace nor Landlock TCP rules exist. Weak: ctypes, a
# subprocess running another interpreter, or re-importing _socket from a fresh module table bypass it.
_SOCKET_PATCH = """
import socket as _s, sys as _y, runpy as _r
def _deny(*a, **k):
    raise PermissionError(13, "network access is disabled in the grpokit sandbox")  # EACCES
_s.socket = _s.create_connection = _s.socketpair = _s.fromfd = _s.getaddrinfo = _deny
import _socket; _socket.socket = _deny
del _s, _socket, _deny
_y.argv = _y.argv[1:]
_r.run_path(_y.argv[0], run_name="__main__")
"""


# ----------------------------------------------------------------------------------------------------
# Detection


@lru_cache(maxsize=1)
def sandbox_isolation() -> SandboxIsolation:
    """Detect, once per process, which protections this machine supports.

    Runs the launcher in probe mode: it tries each namespace, a private ``/proc`` mount, a uid change
    and the Landlock ABI in throw-away child processes, and reports what worked.

    Raises:
        SandboxSetupError: on platforms without POSIX processes (Windows) or if the probe fails.
    """
    if os.name != "posix":
        raise SandboxSetupError(f"the code sandbox needs a POSIX system, this is {sys.platform!r}")
    proc = subprocess.run(
        [sys.executable, "-I", "-S", os.path.abspath(__file__), "--probe"],
        capture_output=True,
        text=True,
        timeout=_SETUP_TIMEOUT_S,
        env={"PATH": _SAFE_PATH, "LANG": "C.UTF-8"},
    )
    if proc.returncode != 0:
        raise SandboxSetupError(f"sandbox probe failed (exit {proc.returncode}): {proc.stderr.strip()}")
    found = json.loads(proc.stdout)
    is_root = found["euid"] == 0
    namespaces = found["namespaces"]
    return SandboxIsolation(
        platform=sys.platform,
        user_namespace=not is_root and namespaces.get("user", False),
        pid_namespace=namespaces.get("pid", False),
        net_namespace=namespaces.get("net", False),
        mount_namespace=namespaces.get("mount", False) and found["mount_proc"],
        drop_privileges=found["setuid"],
        uid_range=tuple(found["uid_range"]) if found["setuid"] else None,
        landlock_abi=found["landlock_abi"],
    )


# ----------------------------------------------------------------------------------------------------
# Parent side: run one program


def run_in_sandbox(
    code: str,
    *,
    stdin: str = "",
    limits: SandboxLimits | None = None,
    files: dict[str, str] | None = None,
    python: str | None = None,
    isolation: SandboxIsolation | None = None,
) -> SandboxResult:
    """Run ``code`` as ``python -I main.py`` in a fresh sandbox and report how it ended.

    Args:
        code: the program's source (the text of ``main.py``).
        stdin: text fed to the program's standard input.
        limits: resource limits; :class:`SandboxLimits` defaults when None.
        files: extra files to create next to ``main.py`` (name -> text), e.g. test data.
        python: interpreter to run; defaults to the one running this process.
        isolation: protections to use; :func:`sandbox_isolation` when None.

    Returns:
        A :class:`SandboxResult`. Everything the program does (errors, timeouts, crashes, floods) is
        reported there; the call itself does not raise because of the program.

    Raises:
        SandboxSetupError: the interpreter is missing, or the kernel refused a requested protection.
        ValueError: a file name in ``files`` is not a plain name.
    """
    limits = limits if limits is not None else SandboxLimits()
    isolation = isolation if isolation is not None else sandbox_isolation()
    python = python if python is not None else sys.executable
    files = dict(files or {})
    for name in files:
        if not name or name in (".", "..", "main.py") or "/" in name or "\0" in name:
            raise ValueError(f"files: {name!r} is not an allowed file name")
    files["main.py"] = code
    interpreter_dirs = _interpreter_dirs(python)

    run_dir = tempfile.mkdtemp(prefix="grpokit-sandbox-")
    try:
        return _Run(run_dir, files, stdin, limits, python, interpreter_dirs, isolation).execute()
    finally:
        _remove_tree(run_dir)


@lru_cache(maxsize=8)
def _interpreter_dirs(python: str) -> tuple[str, ...]:
    """Directories the interpreter needs to start: its bin directory, prefix and base prefix."""
    if python == sys.executable:
        dirs = {os.path.dirname(sys.executable), sys.prefix, sys.base_prefix}
        real = os.path.realpath(sys.executable)
    else:
        try:
            out = subprocess.run(
                [python, "-I", "-S", "-c", "import sys; print(sys.prefix); print(sys.base_prefix)"],
                capture_output=True,
                text=True,
                timeout=_SETUP_TIMEOUT_S,
                env={"PATH": _SAFE_PATH},
                check=True,
            )
        except (OSError, subprocess.SubprocessError) as exc:
            raise SandboxSetupError(f"python interpreter {python!r} cannot be run: {exc}") from exc
        dirs = {os.path.dirname(os.path.abspath(python)), *out.stdout.split()}
        real = os.path.realpath(python)
    if not os.access(real, os.X_OK):
        raise SandboxSetupError(f"python interpreter {python!r} does not exist or is not executable")
    dirs |= {os.path.dirname(real), os.path.dirname(os.path.dirname(real))}
    dirs |= {os.path.realpath(d) for d in dirs}
    return tuple(sorted(dirs))


def _remove_tree(path: str) -> None:
    """Remove the run directory, even where the program made its directories unreadable (chmod 000)."""
    shutil.rmtree(path, ignore_errors=True)
    if not os.path.exists(path):
        return
    # Every process of the run is dead by now, so nothing can swap a directory for a symlink between
    # the lstat and the chmod; lstat keeps us from following one the program left.
    for root, dirs, _ in os.walk(path):
        for name in dirs:
            full = os.path.join(root, name)
            if stat.S_ISDIR(os.lstat(full).st_mode):
                os.chmod(full, 0o700)
    shutil.rmtree(path)


def _blocked_ancestor(path: str) -> str | None:
    """The outermost directory on ``path`` that others cannot traverse (no o+x), or None."""
    parts = os.path.abspath(path).split(os.sep)[1:]
    current = ""
    for part in parts:
        current += os.sep + part
        try:
            mode = os.stat(current).st_mode
        except OSError:
            return None
        if stat.S_ISDIR(mode) and not mode & stat.S_IXOTH:
            return current
    return None


def _draw_uid(uid_range: tuple[int, int]) -> int:
    # Random rather than sequential: concurrent trainers (or test runs) on one machine must not share
    # a uid, since RLIMIT_NPROC, signals and the kill-all-of-uid cleanup are per uid.
    low, high = uid_range
    return low + secrets.randbelow(high - low)


class _Run:
    """One sandboxed execution: prepare the directory, spawn the launcher, supervise, clean up."""

    def __init__(
        self,
        run_dir: str,
        files: dict[str, str],
        stdin: str,
        limits: SandboxLimits,
        python: str,
        interpreter_dirs: tuple[str, ...],
        isolation: SandboxIsolation,
    ):
        self.run_dir = run_dir
        self.work_dir = os.path.join(run_dir, "work")
        self.files = files
        self.stdin = stdin
        self.limits = limits
        self.python = python
        self.interpreter_dirs = interpreter_dirs
        self.iso = isolation
        self.uid = (
            _draw_uid(isolation.uid_range) if isolation.drop_privileges and isolation.uid_range else None
        )

    # -- preparation -----------------------------------------------------------------------------

    def _prepare_files(self) -> None:
        os.mkdir(self.work_dir, 0o700)
        for name, text in self.files.items():
            with open(os.path.join(self.work_dir, name), "w", encoding="utf-8") as f:
                f.write(text)
        if self.uid is not None:
            # run_dir stays root's; 0o711 lets the sandbox uid reach work/ without listing run_dir.
            os.chmod(self.run_dir, 0o711)
            for name in [*self.files, ""]:
                os.chown(os.path.join(self.work_dir, name), self.uid, self.uid)

    def _exposed_dirs(self) -> list[str]:
        """Interpreter directories behind a directory that the sandbox uid cannot traverse."""
        if self.uid is None:
            return []
        blocked = [d for d in self.interpreter_dirs if _blocked_ancestor(d) is not None]
        if not blocked:
            return []
        if not self.iso.mount_namespace:
            raise SandboxSetupError(
                f"the interpreter under {blocked[0]!r} is not reachable by an unprivileged user and this "
                f"machine has no mount namespace to expose it: install Python in a world-readable "
                f"location (or chmod o+x its parent directories), or pass python=..."
            )
        for d in blocked:
            if _blocked_ancestor(d) == d:
                raise SandboxSetupError(f"interpreter directory {d!r} itself is not traversable by others")
        hidden = {h for d in blocked if (h := _blocked_ancestor(d)) is not None}
        if any(self.run_dir.startswith(h + os.sep) for h in hidden):
            raise SandboxSetupError(
                f"the temporary directory {self.run_dir!r} lies under {hidden}, which "
                f"is hidden to expose the interpreter; set TMPDIR elsewhere"
            )
        return blocked

    def _config(self, ctl_w: int, ack_r: int, expose: list[str]) -> dict[str, Any]:
        iso, lim = self.iso, self.limits
        flags = 0
        if iso.pid_namespace:
            flags |= CLONE_NEWPID
        if iso.net_namespace:
            flags |= CLONE_NEWNET | CLONE_NEWIPC
        if iso.mount_namespace:
            flags |= CLONE_NEWNS
        if iso.user_namespace and flags:
            flags |= CLONE_NEWUSER
        cpu = math.ceil(lim.cpu_time_s)
        mib = 1024 * 1024
        argv = [self.python, "-I", "main.py"]
        if iso.network == "socket-patch":
            argv = [self.python, "-I", "-c", _SOCKET_PATCH, "main.py"]
        landlock = None
        if iso.landlock_abi:
            read = [*_SYSTEM_READ_DIRS, *self.interpreter_dirs, *lim.readable_paths]
            if iso.mount_namespace and iso.pid_namespace:
                read.append("/proc")  # our own /proc: shows the sandbox's processes only
            landlock = {
                "abi": iso.landlock_abi,
                "restrict_reads": iso.restrict_reads,
                "write": [self.work_dir],
                "write_files": ["/dev/null"],
                "read": [p for p in read if os.path.exists(p)],
            }
        return {
            "mode": "run",
            "argv": argv,
            "env": {"PATH": _SAFE_PATH, "HOME": self.work_dir, "TMPDIR": self.work_dir, "LANG": "C.UTF-8"},
            "cwd": self.work_dir,
            "run_dir": self.run_dir,
            "ctl_fd": ctl_w,
            "ack_fd": ack_r,
            "unshare": flags,
            "map_user": bool(flags & CLONE_NEWUSER),
            "mount_proc": iso.mount_namespace and iso.pid_namespace,
            "expose": expose,
            "workdir_tmpfs_mb": lim.workdir_size_mb if iso.mount_namespace else None,
            "uid": self.uid,
            "kill_uid_on_exit": self.uid is not None and not iso.pid_namespace,
            "backstop_s": lim.wall_time_s + 10 * _KILL_GRACE_S,
            "rlimits": {
                "RLIMIT_CPU": [cpu, cpu + 1],
                "RLIMIT_AS": [lim.memory_mb * mib] * 2,
                "RLIMIT_NPROC": [lim.max_processes] * 2,
                "RLIMIT_FSIZE": [lim.max_file_size_mb * mib] * 2,
                "RLIMIT_NOFILE": [lim.max_open_files] * 2,
                "RLIMIT_CORE": [0, 0],
            },
            "landlock": landlock,
        }

    # -- execution -------------------------------------------------------------------------------

    def execute(self) -> SandboxResult:
        self._prepare_files()
        expose = self._exposed_dirs()
        ctl_r, ctl_w = os.pipe()
        ack_r, ack_w = os.pipe()
        config = self._config(ctl_w, ack_r, expose)
        stdin_file = tempfile.TemporaryFile(dir=self.run_dir)  # noqa: SIM115 - closed once inherited
        stdin_file.write(self.stdin.encode("utf-8"))
        stdin_file.seek(0)
        try:
            launcher = subprocess.Popen(
                [sys.executable, "-I", "-S", os.path.abspath(__file__), json.dumps(config)],
                stdin=stdin_file,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                cwd=self.run_dir,
                env={"PATH": _SAFE_PATH, "LANG": "C.UTF-8"},
                start_new_session=True,
                pass_fds=(ctl_w, ack_r),
                close_fds=True,
            )
        except OSError as exc:
            for fd in (ctl_r, ctl_w, ack_r, ack_w):
                os.close(fd)
            raise SandboxSetupError(f"cannot start the sandbox launcher: {exc}") from exc
        finally:
            stdin_file.close()
        os.close(ctl_w)
        os.close(ack_r)
        supervisor = _Supervisor(launcher, ctl_r, ack_w, self.limits, self.uid)
        try:
            supervisor.loop()
        finally:
            supervisor.kill_all()
            os.close(ctl_r)
            os.close(ack_w)
        return supervisor.result()


class _Supervisor:
    """Reads the launcher's pipes under deadlines, enforces the wall-clock and output limits, kills."""

    def __init__(
        self,
        launcher: subprocess.Popen[bytes],
        ctl_r: int,
        ack_w: int,
        limits: SandboxLimits,
        uid: int | None,
    ):
        if launcher.stdout is None or launcher.stderr is None:
            raise ValueError("the sandbox launcher must be started with stdout=PIPE and stderr=PIPE")
        self.launcher = launcher
        self.stdout, self.stderr = launcher.stdout, launcher.stderr
        self.uid = uid
        self.ctl_r = ctl_r
        self.ack_w = ack_w
        self.limits = limits
        self.out = {"stdout": bytearray(), "stderr": bytearray()}
        self.truncated = False
        self.ctl_buffer = b""
        self.child_pid: int | None = None
        self.pidfd: int | None = None
        self.killed_for: str | None = None
        self.setup_error: str | None = None
        self.exit: dict[str, Any] | None = None
        self.started_at = time.monotonic()
        self.exec_at: float | None = None
        self.ended_at: float | None = None
        self.deadline = self.started_at + _SETUP_TIMEOUT_S

    def loop(self) -> None:
        sel = selectors.DefaultSelector()
        names = {
            self.stdout.fileno(): "stdout",
            self.stderr.fileno(): "stderr",
            self.ctl_r: "ctl",
        }
        for fd in names:
            sel.register(fd, selectors.EVENT_READ)
        while sel.get_map():
            remaining = self.deadline - time.monotonic()
            if remaining <= 0:
                if not self._on_deadline():
                    break
                continue
            for key, _ in sel.select(remaining):
                data = os.read(key.fd, _READ_CHUNK)
                if not data:
                    sel.unregister(key.fd)
                elif names[key.fd] == "ctl":
                    self._on_control(data)
                else:
                    self._on_output(names[key.fd], data)
        sel.close()

    def _on_deadline(self) -> bool:
        """Handle a passed deadline; False stops reading."""
        now = time.monotonic()
        if self.exec_at is None and self.setup_error is None and self.killed_for is None:
            self.setup_error = f"the sandbox did not start within {_SETUP_TIMEOUT_S:.0f} s"
            self.killed_for = "setup"
            self._kill_program()
            self.deadline = now + _KILL_GRACE_S
            return True
        if self.killed_for is None and self.exit is None:
            self.killed_for = "timeout"
            self.ended_at = now
            self._kill_program()
            self.deadline = now + _KILL_GRACE_S
            return True
        return False

    def _on_control(self, data: bytes) -> None:
        self.ctl_buffer += data
        *lines, self.ctl_buffer = self.ctl_buffer.split(b"\n")
        for line in lines:
            msg = json.loads(line)
            now = time.monotonic()
            if "pid" in msg:
                self.child_pid = msg["pid"]
                # The launcher does not reap the program before this ack, so the pid cannot have been
                # reused yet: the pidfd names exactly our program.
                if hasattr(os, "pidfd_open"):
                    self.pidfd = os.pidfd_open(self.child_pid)
                os.write(self.ack_w, b"k")
            elif "exec" in msg:
                self.exec_at = now
                if self.killed_for is None:
                    self.deadline = now + self.limits.wall_time_s
            elif "setup_error" in msg:
                self.setup_error = msg["setup_error"]
            elif "exit" in msg:
                self.exit = msg["exit"]
                self.ended_at = self.ended_at or now
                # Pipes held by a leftover process (only possible without a pid namespace) must not
                # keep us waiting: read what arrives quickly, then kill the group.
                self.deadline = min(self.deadline, now + _EOF_GRACE_S)

    def _on_output(self, name: str, data: bytes) -> None:
        buffer = self.out[name]
        room = self.limits.max_output_bytes - len(buffer)
        if len(data) > room:
            buffer += data[: max(room, 0)]
            self.truncated = True
            if self.killed_for is None and self.exit is None:
                self.killed_for = "output"
                self.ended_at = time.monotonic()
                self._kill_program()
                self.deadline = min(self.deadline, time.monotonic() + _KILL_GRACE_S)
        else:
            buffer += data

    def _kill_program(self) -> None:
        """SIGKILL the program; as pid 1 of its pid namespace, its death takes every descendant along."""
        if self.pidfd is not None:
            with contextlib.suppress(ProcessLookupError):
                signal.pidfd_send_signal(self.pidfd, signal.SIGKILL)
        elif self.child_pid is not None and self.exit is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.child_pid, signal.SIGKILL)
        else:
            self._kill_group()

    def _kill_group(self) -> None:
        # Only called before the launcher is reaped: its pid, hence the group id, cannot be reused.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.launcher.pid, signal.SIGKILL)

    def kill_all(self) -> None:
        """Final cleanup, whatever happened: the program, the launcher's process group, the launcher."""
        if self.exit is None:
            self._kill_program()
        self._kill_group()
        try:
            self.launcher.wait(timeout=_KILL_GRACE_S)
        except subprocess.TimeoutExpired:
            self.launcher.kill()
            self.launcher.wait()
        self.stdout.close()
        self.stderr.close()
        if self.pidfd is not None:
            os.close(self.pidfd)

    def result(self) -> SandboxResult:
        stdout = self.out["stdout"].decode("utf-8", errors="replace")
        stderr = self.out["stderr"].decode("utf-8", errors="replace")
        if self.setup_error is not None or (self.exit is None and self.killed_for is None):
            detail = self.setup_error or f"the launcher ended without a report: {stderr.strip()[-2000:]}"
            raise SandboxSetupError(detail)
        wall = (self.ended_at or time.monotonic()) - (self.exec_at or self.started_at)
        exit_info = self.exit or {}
        returncode = exit_info.get("returncode")
        cpu_time = exit_info.get("cpu_time")
        status, reason = _classify(self.killed_for, returncode, cpu_time, stderr, self.limits)
        return SandboxResult(
            status=status,
            returncode=returncode,
            stdout=stdout,
            stderr=stderr,
            wall_time=wall,
            cpu_time=cpu_time,
            reason=reason,
            output_truncated=self.truncated,
            uid=self.uid,
        )


_SYNTAX_ERRORS = ("SyntaxError", "IndentationError", "TabError")


def _classify(
    killed_for: str | None, returncode: int | None, cpu_time: float | None, stderr: str, limits: SandboxLimits
) -> tuple[SandboxStatus, str]:
    """Map how the program ended to a status and a one-line reason."""
    last_line = stderr.strip().splitlines()[-1] if stderr.strip() else ""
    if killed_for == "output":
        return SandboxStatus.OUTPUT_LIMIT, f"output exceeded {limits.max_output_bytes} bytes; killed"
    if killed_for == "timeout":
        return SandboxStatus.TIMEOUT, f"wall-clock limit of {limits.wall_time_s:g} s exceeded; killed"
    cpu_limit = math.ceil(limits.cpu_time_s)
    if returncode == -signal.SIGXCPU or (returncode == -signal.SIGKILL and (cpu_time or 0) >= cpu_limit):
        return SandboxStatus.TIMEOUT, f"CPU time limit of {cpu_limit} s exceeded"
    if last_line.startswith("MemoryError"):
        return SandboxStatus.MEMORY, f"MemoryError under the {limits.memory_mb} MiB address-space limit"
    if returncode is not None and returncode < 0:
        sig = signal.Signals(-returncode).name if -returncode in signal.valid_signals() else -returncode
        if returncode == -signal.SIGXFSZ:
            return SandboxStatus.CRASH, f"file size limit of {limits.max_file_size_mb} MiB exceeded (SIGXFSZ)"
        return SandboxStatus.CRASH, f"killed by signal {sig}"
    if returncode == 0:
        return SandboxStatus.OK, "exited with status 0"
    if last_line.startswith(_SYNTAX_ERRORS):
        return SandboxStatus.SYNTAX_ERROR, last_line[:300]
    return SandboxStatus.ERROR, f"exit status {returncode}: {last_line[:300] or '(no stderr)'}"


# ----------------------------------------------------------------------------------------------------
# Launcher side: runs as `python -I -S sandbox.py CONFIG` (or `--probe`), standard library only.


def _libc() -> Any:
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    libc.syscall.restype = ctypes.c_long
    return libc


def _check(ret: int, what: str) -> int:
    if ret < 0:
        import ctypes

        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")
    return ret


def _unshare(libc: Any, flags: int) -> None:
    _check(libc.unshare(flags), f"unshare({flags:#x})")


def _mount(
    libc: Any, source: str | None, target: str, fstype: str | None, flags: int, data: str | None = None
) -> None:
    enc = lambda s: s.encode() if s is not None else None  # noqa: E731
    _check(libc.mount(enc(source), enc(target), enc(fstype), flags, enc(data)), f"mount {target}")


def _landlock_abi(libc: Any) -> int:
    import ctypes

    ret = libc.syscall(
        ctypes.c_long(SYS_LANDLOCK_CREATE_RULESET), None, ctypes.c_size_t(0), ctypes.c_uint32(1)
    )  # LANDLOCK_CREATE_RULESET_VERSION
    return max(int(ret), 0)


def _apply_landlock(libc: Any, spec: dict[str, Any]) -> None:
    """Restrict this process (and its future children) with a Landlock ruleset; cannot be undone."""
    import ctypes

    abi = spec["abi"]
    fs_all = (1 << 13) - 1  # ABI 1: EXECUTE .. MAKE_SYM
    if abi >= 2:
        fs_all |= LL_REFER
    if abi >= 3:
        fs_all |= LL_TRUNCATE
    if abi >= 5:
        fs_all |= LL_IOCTL_DEV
    handled = fs_all if spec["restrict_reads"] else fs_all & ~LL_READ_RIGHTS
    net = LL_NET_BIND_TCP | LL_NET_CONNECT_TCP if abi >= 4 else 0
    scoped = LL_SCOPE_ABSTRACT_UNIX_SOCKET | LL_SCOPE_SIGNAL if abi >= 6 else 0
    attr = struct.pack("=QQQ", handled, net, scoped)[: 8 if abi < 4 else 16 if abi < 6 else 24]
    ruleset = _check(
        libc.syscall(
            ctypes.c_long(SYS_LANDLOCK_CREATE_RULESET), attr, ctypes.c_size_t(len(attr)), ctypes.c_uint32(0)
        ),
        "landlock_create_ruleset",
    )
    rules = [(p, fs_all) for p in spec["write"]] + [
        (p, LL_READ_FILE | LL_WRITE_FILE | LL_TRUNCATE) for p in spec["write_files"]
    ]
    if spec["restrict_reads"]:
        rules += [(p, LL_READ_RIGHTS) for p in spec["read"]]
    for path, access in rules:
        try:
            fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
        except FileNotFoundError:
            continue
        if not stat.S_ISDIR(os.fstat(fd).st_mode):
            access &= LL_FILE_RIGHTS
        rule = struct.pack("=Qi", access & handled, fd)  # struct landlock_path_beneath_attr (packed)
        _check(
            libc.syscall(
                ctypes.c_long(SYS_LANDLOCK_ADD_RULE),
                ctypes.c_long(ruleset),
                ctypes.c_long(1),
                rule,
                ctypes.c_uint32(0),
            ),
            f"landlock_add_rule {path}",
        )
        os.close(fd)
    _check(
        libc.syscall(ctypes.c_long(SYS_LANDLOCK_RESTRICT_SELF), ctypes.c_long(ruleset), ctypes.c_uint32(0)),
        "landlock_restrict_self",
    )
    os.close(ruleset)


def _expose(libc: Any, dirs: list[str], run_dir: str) -> None:
    """Make interpreter directories reachable by an unprivileged uid, at their own paths.

    Their outer directory (say ``/root``, mode 0700) is covered with an empty tmpfs in the private mount
    namespace; each directory is bound read-only at its old path inside it. The rest of ``/root`` is
    hidden from the sandbox as a bonus. Needs CAP_SYS_ADMIN in a private mount namespace.
    """
    dirs = [d for d in sorted(set(dirs)) if not any(d.startswith(o + os.sep) for o in dirs if o != d)]
    staged = []
    for i, d in enumerate(dirs):
        stage = os.path.join(run_dir, f"expose{i}")
        os.mkdir(stage, 0o700)
        _mount(libc, d, stage, None, MS_BIND | MS_REC)
        staged.append((d, stage))
    covered: list[str] = []
    for d in dirs:
        blocked = _blocked_ancestor(d)
        if blocked is not None and not any(blocked == c or blocked.startswith(c + os.sep) for c in covered):
            _mount(libc, "tmpfs", blocked, "tmpfs", MS_NOSUID | MS_NODEV, "mode=0755,size=1m")
            covered.append(blocked)
    for d, stage in staged:
        os.makedirs(d, mode=0o755, exist_ok=True)
        _mount(libc, stage, d, None, MS_BIND | MS_REC)
        _mount(libc, None, d, None, MS_REMOUNT | MS_BIND | MS_RDONLY)
        _check(libc.umount2(stage.encode(), MNT_DETACH), f"umount {stage}")


def _mount_workdir(libc: Any, work_dir: str, size_mb: int, uid: int | None) -> None:
    """Replace the working directory by a tmpfs of ``size_mb`` holding the same files.

    Caps what the program can write in total (RLIMIT_FSIZE caps one file, not their number); the
    tmpfs vanishes with the mount namespace, so nothing the program writes reaches the disk.
    """
    files = {}
    for name in os.listdir(work_dir):
        with open(os.path.join(work_dir, name), "rb") as f:
            files[name] = f.read()
    owner = f",uid={uid},gid={uid}" if uid is not None else ""
    _mount(libc, "tmpfs", work_dir, "tmpfs", MS_NOSUID | MS_NODEV, f"size={size_mb}m,mode=0700{owner}")
    for name, data in files.items():
        path = os.path.join(work_dir, name)
        with open(path, "wb") as f:
            f.write(data)
        if uid is not None:
            os.chown(path, uid, uid)


def _enter_sandbox(libc: Any, cfg: dict[str, Any]) -> None:
    """In the program's process, before exec: limits, uid, Landlock. Order matters."""
    import resource

    os.chdir(cfg["cwd"])
    for name, (soft, hard) in cfg["rlimits"].items():
        resource.setrlimit(getattr(resource, name), (soft, hard))
    uid = cfg["uid"]
    if uid is not None:
        os.setgroups([])
        os.setresgid(uid, uid, uid)
        os.setresuid(uid, uid, uid)
    if sys.platform.startswith("linux"):
        _check(libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "prctl(NO_NEW_PRIVS)")
        # Set after the uid change, which clears it: the program dies with its parent.
        _check(libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0), "prctl(PDEATHSIG)")
    if cfg["landlock"]:
        _apply_landlock(libc, cfg["landlock"])


def _exec_program(libc: Any, cfg: dict[str, Any], err_w: int) -> None:
    """Become the program; on failure report the reason on ``err_w`` (close-on-exec) and exit 127."""
    try:
        _enter_sandbox(libc, cfg)
        os.execve(cfg["argv"][0], cfg["argv"], cfg["env"])
    except BaseException as exc:  # noqa: BLE001 - anything here is a setup failure to report
        os.write(err_w, f"{type(exc).__name__}: {exc}".encode()[:4000])
    os._exit(127)


def _init_main(libc: Any, cfg: dict[str, Any], err_w: int, res_w: int) -> None:
    """Pid 1 of the new pid namespace: mount /proc, fork the program, reap, report its end.

    The program must not be pid 1 itself: the kernel drops signals whose action is the default when
    they target a namespace's init (SIGXCPU from RLIMIT_CPU would be lost), and orphans are reparented
    to pid 1, which has to reap them. When this process exits, the kernel kills the whole namespace.
    """
    try:
        _check(libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0), "prctl(PDEATHSIG)")
        if cfg["mount_proc"]:
            _mount(libc, "proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
        program = os.fork()
    except BaseException as exc:  # noqa: BLE001
        os.write(err_w, f"{type(exc).__name__}: {exc}".encode()[:4000])
        os._exit(127)
    if program == 0:
        os.close(res_w)
        _exec_program(libc, cfg, err_w)
    os.close(err_w)
    while True:
        pid, status, usage = os.wait4(-1, 0)
        if pid == program:
            break
    returncode = -os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)
    os.write(
        res_w, json.dumps({"returncode": returncode, "cpu_time": usage.ru_utime + usage.ru_stime}).encode()
    )
    os._exit(0)


def _send(fd: int, msg: dict[str, Any]) -> None:
    os.write(fd, (json.dumps(msg) + "\n").encode())


def _wait(pid: int, ack: int, backstop_s: float) -> tuple[int, Any]:
    """Wait for ``pid``; kill it first if the parent dies (EOF on ``ack``) or ``backstop_s`` passes.

    The parent enforces the wall-clock limit; this backstop keeps a sleeping program from outliving a
    parent that crashed or hangs.
    """
    import select

    if hasattr(os, "pidfd_open"):
        pidfd = os.pidfd_open(pid)
        deadline = time.monotonic() + backstop_s
        while True:
            ready, _, _ = select.select([pidfd, ack], [], [], max(deadline - time.monotonic(), 0))
            if pidfd in ready:
                break
            if not ready or not os.read(ack, 1):
                signal.pidfd_send_signal(pidfd, signal.SIGKILL)
                break
        os.close(pidfd)
    _, status, usage = os.wait4(pid, 0)
    return status, usage


def _launcher_main(cfg: dict[str, Any]) -> None:
    ctl, ack = cfg["ctl_fd"], cfg["ack_fd"]
    os.set_inheritable(ctl, False)
    os.set_inheritable(ack, False)
    # None off Linux, where the isolation probe enables none of the features that use it.
    libc: Any = _libc() if sys.platform.startswith("linux") else None
    if cfg["kill_uid_on_exit"]:
        # Orphans of the program are reparented to us rather than to the host's init: we reap them.
        _check(libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0), "prctl(CHILD_SUBREAPER)")
    try:
        if cfg["unshare"]:
            uid, gid = os.geteuid(), os.getegid()
            _unshare(libc, cfg["unshare"])
            if cfg["map_user"]:
                # Map our own ids only: after exec the program is not root in the new namespace.
                for path, text in (
                    ("/proc/self/setgroups", "deny"),
                    ("/proc/self/uid_map", f"{uid} {uid} 1"),
                    ("/proc/self/gid_map", f"{gid} {gid} 1"),
                ):
                    with open(path, "w") as f:
                        f.write(text)
        if cfg["unshare"] & CLONE_NEWNS:
            _mount(libc, None, "/", None, MS_REC | MS_PRIVATE)  # nothing we mount leaks to the host
            if cfg["expose"]:
                _expose(libc, cfg["expose"], cfg["run_dir"])
            if cfg["workdir_tmpfs_mb"]:
                _mount_workdir(libc, cfg["cwd"], cfg["workdir_tmpfs_mb"], cfg["uid"])
    except OSError as exc:
        _send(ctl, {"setup_error": f"sandbox setup failed: {exc}"})
        return
    with_init = bool(cfg["unshare"] & CLONE_NEWPID)
    err_r, err_w = os.pipe()  # close-on-exec: EOF without data means the program was exec'd
    res_r, res_w = os.pipe()  # the init process reports the program's exit status here
    child = os.fork()
    if child == 0:
        os.close(err_r)
        os.close(res_r)
        if with_init:
            _init_main(libc, cfg, err_w, res_w)
        _exec_program(libc, cfg, err_w)
    os.close(err_w)
    os.close(res_w)
    _send(ctl, {"pid": child})
    os.read(ack, 1)  # the parent now holds a pidfd on the child; reaping is safe from here on
    error = b""
    while chunk := os.read(err_r, 4096):
        error += chunk
    os.close(err_r)
    if error:
        os.waitpid(child, 0)
        _send(ctl, {"setup_error": f"sandbox setup failed: {error.decode(errors='replace')}"})
        return
    _send(ctl, {"exec": True})
    status, usage = _wait(child, ack, cfg["backstop_s"])
    if cfg["kill_uid_on_exit"]:
        _kill_uid(cfg["uid"])
        with contextlib.suppress(ChildProcessError):
            while True:  # every descendant left is dying from SIGKILL: reap them all
                os.waitpid(-1, 0)
    if with_init:
        report = os.read(res_r, 4096)
        # Empty when the init was killed (wall-clock limit): the program's CPU time is then unknown.
        exit_info = json.loads(report) if report else {"returncode": -signal.SIGKILL, "cpu_time": None}
    else:
        returncode = -os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)
        exit_info = {"returncode": returncode, "cpu_time": usage.ru_utime + usage.ru_stime}
    _send(ctl, {"exit": exit_info})


def _kill_uid(uid: int) -> None:
    """Without a pid namespace: kill every process of the run's private uid (kill(-1) as that uid)."""
    pid = os.fork()
    if pid == 0:
        try:
            os.setresuid(uid, uid, uid)
            for _ in range(3):  # a fork bomb may add processes while we kill; -1 skips ourselves
                os.kill(-1, signal.SIGKILL)
        except OSError:
            pass
        os._exit(0)
    os.waitpid(pid, 0)


def _probe_uid_range() -> tuple[int, int]:
    """A range of uids valid in our user namespace and unlikely to belong to anyone."""
    try:
        with open("/proc/self/uid_map") as f:
            spans = [tuple(map(int, line.split())) for line in f if line.strip()]
    except OSError:
        spans = []
    if not spans or any(inside == 0 and count >= 2**32 - 1 for inside, _, count in spans):
        return (2**30, 2**30 + 2**24)
    inside, _, count = max(spans, key=lambda s: s[2])
    # Use the upper half of the largest mapped span, below the conventional nobody (65534).
    high = min(inside + count, 65534) if inside < 65534 else inside + count
    low = max(inside + count // 2, inside + 1000)
    if high - low < 1024:
        raise SandboxSetupError(f"no free uid range in this user namespace (uid_map {spans})")
    return (low, high)


def _succeeds(fn: Callable[..., object], *args: Any) -> bool:
    """Call ``fn(*args)``; True unless it raises (for probes of calls that return nothing)."""
    fn(*args)
    return True


def _probe_in_child(fn: Any) -> bool:
    pid = os.fork()
    if pid == 0:
        try:
            ok = fn()
        except BaseException:  # noqa: BLE001 - any failure means "not available"
            ok = False
        os._exit(0 if ok else 1)
    _, status = os.waitpid(pid, 0)
    return os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0


def _probe_main() -> None:
    report: dict[str, Any] = {
        "euid": os.geteuid(),
        "namespaces": {},
        "mount_proc": False,
        "setuid": False,
        "uid_range": None,
        "landlock_abi": 0,
    }
    if sys.platform.startswith("linux"):
        libc = _libc()
        user = 0 if os.geteuid() == 0 else CLONE_NEWUSER
        names = {"user": CLONE_NEWUSER, "pid": CLONE_NEWPID, "net": CLONE_NEWNET, "mount": CLONE_NEWNS}
        for name, flag in names.items():
            report["namespaces"][name] = _probe_in_child(lambda f=flag: _succeeds(_unshare, libc, f | user))

        def mount_proc() -> bool:
            _unshare(libc, CLONE_NEWNS | CLONE_NEWPID | user)
            _mount(libc, None, "/", None, MS_REC | MS_PRIVATE)
            return _probe_in_child(
                lambda: _succeeds(_mount, libc, "proc", "/proc", "proc", MS_NOSUID | MS_NODEV)
            )

        report["mount_proc"] = _probe_in_child(mount_proc)
        report["landlock_abi"] = _landlock_abi(libc)
    try:
        uid_range = _probe_uid_range()
        report["setuid"] = _probe_in_child(
            lambda: _succeeds(os.setresuid, *[uid_range[0]] * 3) and os.getuid() == uid_range[0]
        )
        report["uid_range"] = list(uid_range)
    except SandboxSetupError:
        pass
    print(json.dumps(report))


if __name__ == "__main__":
    if sys.argv[1:] == ["--probe"]:
        _probe_main()
    else:
        _launcher_main(json.loads(sys.argv[1]))
