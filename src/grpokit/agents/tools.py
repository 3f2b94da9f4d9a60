"""Tools as Python functions: their JSON schema, and their guarded execution during an episode.

A tool is any function (or bound method, or ``async def``) with type hints on every parameter and a
Google-style docstring describing each one: the schema the chat template shows the model comes from
``transformers.utils.get_json_schema``, exactly as in TRL and the Hugging Face chat-template docs.

:class:`ToolExecutor` runs one episode's calls. Everything a model can get wrong is a *failure* rather than a
crash: an unknown tool name, arguments that do not fit the signature, an exception, a call past its deadline,
a result that cannot be shown as text. With ``failure="fallback"`` the model is answered ``error: <what
happened>`` (the episode goes on; failures are counted per tool and the first of each tool is logged with its
traceback on the ``grpokit.agents`` logger); with ``failure="raise"`` the run stops with a
:class:`ToolCallError` naming the tool, its arguments and the episode. Out-of-memory errors always propagate.

Each call runs in a daemon worker thread that the caller waits on with a deadline. Python cannot kill a
thread: a call past its deadline is abandoned, not stopped, and keeps running (and holding whatever it holds)
until it returns by itself. A tool that can hang for good should do its work in a subprocess it can kill.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import inspect
import json
import logging
import numbers
import sys
import threading
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from grpokit.agents.tool_calls import ToolCall

__all__ = ["ToolCallError", "ToolExecutor", "ToolResult", "ToolStats", "tool_name", "tool_schema"]

log = logging.getLogger("grpokit.agents")

UNKNOWN_TOOL = "<unknown tool>"
"""The key under which calls to a tool that does not exist are counted in :attr:`ToolStats.failures`."""


def tool_name(fn: Callable[..., Any]) -> str:
    """The name a tool is called by: its ``__name__``.

    Raises:
        TypeError: the callable has no ``__name__`` (a ``functools.partial``, a callable object): wrap it in a
            named function.
    """
    name = getattr(fn, "__name__", None)
    if not isinstance(name, str) or not name:
        raise TypeError(f"tool {fn!r} has no __name__; wrap it in a function named after the tool")
    return name


# Schemas by underlying function: every episode binds the same methods to a new instance, and parsing a
# docstring per episode would cost more than the episode's bookkeeping.
_SCHEMAS: weakref.WeakKeyDictionary[Callable[..., Any], dict[str, Any]] = weakref.WeakKeyDictionary()


def tool_schema(fn: Callable[..., Any]) -> dict[str, Any]:
    """The tool's JSON schema in the form chat templates take, ``{"type": "function", "function": {"name",
    "description", "parameters"}}``, from its signature and docstring (a bound method's ``self`` is left out).

    Raises:
        ValueError: the docstring is missing or does not describe every parameter, or a parameter has no type
            hint (the message names the function and says what to add).
    """
    key = getattr(fn, "__func__", fn)
    try:
        cached = _SCHEMAS.get(key)
    except TypeError:  # not weak-referenceable: compute every time
        cached = None
    if cached is None:
        from transformers.utils import get_json_schema
        from transformers.utils.chat_template_utils import DocstringParsingException, TypeHintParsingException

        name = getattr(fn, "__qualname__", None) or tool_name(fn)
        try:
            cached = get_json_schema(fn)
        except (DocstringParsingException, TypeHintParsingException) as err:
            raise ValueError(
                f"tool {name}: cannot build its JSON schema ({err}). A tool needs a type hint on every parameter "
                "and a Google-style docstring: a description line, then 'Args:' with one 'name: description' "
                "line per parameter"
            ) from None
        with contextlib.suppress(TypeError):  # not weak-referenceable: not cached
            _SCHEMAS[key] = cached
    return copy.deepcopy(cached)


@dataclass(frozen=True)
class ToolResult:
    """A call's answer to the model.

    Attributes:
        content: the ``tool`` message's text: the result, or ``error: <what happened>``.
        failed: the call failed (only with ``failure="fallback"``; ``raise`` raises instead).
        error: what happened, without the ``error: `` prefix (``None`` when the call succeeded).
    """

    content: str
    failed: bool = False
    error: str | None = None


class ToolCallError(RuntimeError):
    """A tool call failed under ``failure="raise"``; the message names the tool, its arguments and the episode."""


@dataclass
class ToolStats:
    """Counters shared by the executors of a run (one executor per episode, many episodes at once).

    Attributes:
        calls: calls made, failed ones included.
        failures: failed calls by tool name (:data:`UNKNOWN_TOOL` for names no tool has).
        logged: the tools whose first failure has been logged.
    """

    calls: int = 0
    failures: dict[str, int] = field(default_factory=dict)
    logged: set[str] = field(default_factory=set)
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)


class _Failure(Exception):
    """A failed call inside :meth:`ToolExecutor.call`: the counter key, the message, the exception if any."""

    def __init__(self, key: str, message: str, cause: BaseException | None = None) -> None:
        super().__init__(message)
        self.key = key
        self.message = message
        self.cause = cause


class ToolExecutor:
    """Runs the tool calls of one episode.

    Built per episode from that episode's tools (the environment's bound methods plus the run's shared tools),
    so construction only indexes the tools by name; signatures are read at the first call of each tool.

    Args:
        tools: the callables the model may call, by their ``__name__``.
        timeout_s: seconds one call may take; ``None``: no deadline.
        failure: ``"fallback"`` answers a failed call ``error: ...``; ``"raise"`` raises :class:`ToolCallError`.
        stats: counters shared with other executors (a new one when omitted).

    Raises:
        ValueError: two tools share a name, ``failure`` or ``timeout_s`` is invalid.
        TypeError: a tool has no ``__name__``.
    """

    def __init__(
        self,
        tools: Sequence[Callable[..., Any]],
        *,
        timeout_s: float | None = 30.0,
        failure: Literal["raise", "fallback"] = "fallback",
        stats: ToolStats | None = None,
    ) -> None:
        if failure not in ("raise", "fallback"):
            raise ValueError(f"failure must be 'raise' or 'fallback', got {failure!r}")
        if timeout_s is not None and not timeout_s > 0:
            raise ValueError(f"timeout_s must be positive or None, got {timeout_s!r}")
        self.tools: dict[str, Callable[..., Any]] = {}
        for tool in tools:
            name = tool_name(tool)
            if name in self.tools:
                raise ValueError(
                    f"two tools are named {name!r} ({self.tools[name]!r} and {tool!r}); rename one"
                )
            self.tools[name] = tool
        self.timeout_s = timeout_s
        self.failure = failure
        self.stats = stats if stats is not None else ToolStats()

    @property
    def calls(self) -> int:
        """Calls made through the shared :class:`ToolStats`."""
        return self.stats.calls

    @property
    def failures(self) -> dict[str, int]:
        """Failed calls by tool name, from the shared :class:`ToolStats`."""
        return self.stats.failures

    def schemas(self) -> list[dict[str, Any]]:
        """The tools' JSON schemas (``tools=`` of ``apply_chat_template``), in the order given."""
        return [tool_schema(tool) for tool in self.tools.values()]

    def call(self, call: ToolCall, episode: str) -> ToolResult:
        """Run one call and return what the model is answered.

        Args:
            call: the parsed call.
            episode: names the episode in errors and logs (e.g. ``"step 3, row 5, sample 2"``).

        Raises:
            ToolCallError: the call failed and ``failure="raise"``.
            MemoryError, torch.OutOfMemoryError: always, whatever ``failure`` says.
        """
        with self.stats.lock:
            self.stats.calls += 1
        try:
            return ToolResult(self._run(call))
        except _Failure as failure:
            return self._fail(call, episode, failure)

    def _run(self, call: ToolCall) -> str:
        fn = self.tools.get(call.name)
        if fn is None:
            names = ", ".join(self.tools) or "none"
            raise _Failure(UNKNOWN_TOOL, f"unknown tool {call.name!r} (the tools are: {names})")
        signature = inspect.signature(fn)
        try:
            signature.bind(**call.arguments)
        except TypeError as err:
            raise _Failure(call.name, f"arguments do not fit {call.name}{signature}: {err}") from None
        value = self._run_with_deadline(fn, call)
        return _as_text(value, call.name)

    def _run_with_deadline(self, fn: Callable[..., Any], call: ToolCall) -> Any:
        outcome: dict[str, Any] = {}
        done = threading.Event()

        def work() -> None:
            try:
                value = fn(**call.arguments)
                if inspect.isawaitable(value):  # an async tool: its own event loop, in this thread
                    value = asyncio.run(_awaited(value))
                outcome["value"] = value
            except BaseException as err:  # handed to the caller, which decides
                outcome["error"] = err
            finally:
                done.set()

        worker = threading.Thread(target=work, name=f"grpokit-tool-{call.name}", daemon=True)
        worker.start()
        if not done.wait(self.timeout_s):
            raise _Failure(
                call.name,
                f"tool {call.name!r} did not return within {self.timeout_s:g} s (it keeps running in the "
                "background: a thread cannot be stopped)",
            )
        error = outcome.get("error")
        if error is not None:
            if _is_out_of_memory(error) or not isinstance(error, Exception):
                raise error
            raise _Failure(call.name, f"{type(error).__name__}: {error}", error)
        return outcome["value"]

    def _fail(self, call: ToolCall, episode: str, failure: _Failure) -> ToolResult:
        if self.failure == "raise":
            raise ToolCallError(
                f"tool call {call.name}({_arguments_text(call.arguments)}) in episode {episode} failed: "
                f"{failure.message}"
            ) from failure.cause
        with self.stats.lock:
            self.stats.failures[failure.key] = self.stats.failures.get(failure.key, 0) + 1
            first = failure.key not in self.stats.logged
            self.stats.logged.add(failure.key)
        if first:
            cause = failure.cause
            log.warning(
                "tool call %s(%s) in episode %s failed: %s (answered with an error message; further failures "
                "of this tool are only counted)",
                call.name,
                _arguments_text(call.arguments),
                episode,
                failure.message,
                exc_info=(type(cause), cause, cause.__traceback__) if cause is not None else None,
            )
        return ToolResult(f"error: {failure.message}", failed=True, error=failure.message)


async def _awaited(awaitable: Any) -> Any:
    return await awaitable


def _is_out_of_memory(err: BaseException) -> bool:
    """``MemoryError`` or torch's out-of-memory error (torch is not imported for this: no torch, no torch OOM)."""
    if isinstance(err, MemoryError):
        return True
    torch = sys.modules.get("torch")
    oom = getattr(torch, "OutOfMemoryError", None)
    return isinstance(oom, type) and isinstance(err, oom)


def _as_text(value: Any, name: str) -> str:
    """A tool's result as the ``tool`` message's text: a str as is, a number, bool or ``None`` through ``str``,
    a dict, list or tuple as JSON.

    Raises:
        _Failure: anything else, or a container JSON cannot encode.
    """
    if isinstance(value, str):
        return value
    if value is None or isinstance(value, (bool, numbers.Number)):
        return str(value)
    if isinstance(value, (dict, list, tuple)):
        try:
            return json.dumps(value, ensure_ascii=False)
        except (TypeError, ValueError) as err:
            raise _Failure(
                name, f"tool {name!r} returned a {type(value).__name__} that is not JSON: {err}"
            ) from None
    raise _Failure(
        name,
        f"tool {name!r} returned a value of type {type(value).__name__}; a tool returns a str, number, bool, "
        "None or a JSON-serialisable dict or list",
    )


def _arguments_text(arguments: dict[str, Any]) -> str:
    """``a=1, b='x'``: the arguments as they would be written in Python."""
    return ", ".join(f"{key}={value!r}" for key, value in arguments.items())
