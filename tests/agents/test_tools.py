import logging
import threading

import pytest

from grpokit.agents.tool_calls import ToolCall
from grpokit.agents.tools import UNKNOWN_TOOL, ToolCallError, ToolExecutor, ToolResult, ToolStats, tool_schema


def add(a: int, b: int = 0) -> int:
    """Add two integers.

    Args:
        a: the first term.
        b: the second term.
    """
    return a + b


def divide(a: float, b: float) -> float:
    """Divide.

    Args:
        a: numerator.
        b: denominator.
    """
    return a / b


async def shout(text: str) -> str:
    """Upper-case a text.

    Args:
        text: what to shout.
    """
    return text.upper()


def no_docstring(a: int) -> int:
    return a


def no_hints(a):
    """Echo.

    Args:
        a: anything.
    """
    return a


class Counter:
    def __init__(self):
        self.total = 0

    def bump(self, by: int) -> dict:
        """Increase the counter.

        Args:
            by: the increment.
        """
        self.total += by
        return {"total": self.total}


# --- schema ---------------------------------------------------------------------------------------------------


def test_schema_from_signature_and_docstring():
    schema = tool_schema(add)
    assert schema["type"] == "function"
    function = schema["function"]
    assert function["name"] == "add" and function["description"] == "Add two integers."
    assert function["parameters"]["properties"] == {
        "a": {"type": "integer", "description": "the first term."},
        "b": {"type": "integer", "description": "the second term."},
    }
    assert function["parameters"]["required"] == ["a"]


def test_schema_of_a_bound_method_leaves_self_out_and_copies():
    schema = tool_schema(Counter().bump)
    assert list(schema["function"]["parameters"]["properties"]) == ["by"]
    schema["function"]["name"] = "mutated"
    assert tool_schema(Counter().bump)["function"]["name"] == "bump"


@pytest.mark.parametrize(
    ("fn", "detail"), [(no_docstring, "no docstring"), (no_hints, "missing a type hint")]
)
def test_schema_error_names_the_function(fn, detail):
    with pytest.raises(
        ValueError, match=rf"tool {fn.__name__}: cannot build its JSON schema .*{detail}.*Args:"
    ):
        tool_schema(fn)


# --- executor -------------------------------------------------------------------------------------------------


def test_success_results_as_text():
    counter = Counter()

    def flag() -> bool:
        """A flag."""
        return True

    def nothing() -> None:
        """Nothing."""

    executor = ToolExecutor([add, counter.bump, flag, nothing], timeout_s=5)
    assert executor.call(ToolCall("add", {"a": 2, "b": 3}), "e0") == ToolResult("5")
    assert executor.call(ToolCall("bump", {"by": 4}), "e0") == ToolResult('{"total": 4}')
    assert counter.total == 4  # the bound method changed its own episode's state
    assert executor.call(ToolCall("flag", {}), "e0").content == "True"
    assert executor.call(ToolCall("nothing", {}), "e0").content == "None"
    assert executor.calls == 4 and executor.failures == {}


def test_async_tool_runs():
    executor = ToolExecutor([shout], timeout_s=5)
    assert executor.call(ToolCall("shout", {"text": "hi"}), "e0") == ToolResult("HI")


@pytest.mark.parametrize(
    ("call", "key", "error"),
    [
        (ToolCall("divide", {"a": 1, "b": 0}), "divide", "ZeroDivisionError: division by zero"),
        (ToolCall("mul", {"a": 1}), UNKNOWN_TOOL, "unknown tool 'mul' (the tools are: add, divide)"),
        (ToolCall("add", {"c": 1}), "add", "arguments do not fit add(a: int, b: int = 0)"),
        (ToolCall("add", {}), "add", "missing a required argument: 'a'"),
    ],
)
def test_fallback_failures_answer_with_the_error(call, key, error):
    executor = ToolExecutor([add, divide], timeout_s=5)
    result = executor.call(call, "e0")
    assert result.failed and error in result.error
    assert result.content == f"error: {result.error}"
    assert executor.failures == {key: 1} and executor.calls == 1


def test_timeout_is_a_failure_and_the_call_returns_by_the_deadline():
    release = threading.Event()

    def slow() -> str:
        """Wait."""
        release.wait(10)
        return "late"

    executor = ToolExecutor([slow], timeout_s=0.2)
    try:
        result = executor.call(ToolCall("slow", {}), "e0")
    finally:
        release.set()  # let the abandoned thread finish
    assert result.failed and "did not return within 0.2 s" in result.error
    assert executor.failures == {"slow": 1}


def test_results_that_are_not_text_are_failures():
    def obj() -> object:
        """An object."""
        return object()

    def bad_json() -> dict:
        """A dict with a set."""
        return {"s": {1, 2}}

    executor = ToolExecutor([obj, bad_json], timeout_s=5)
    result = executor.call(ToolCall("obj", {}), "e0")
    assert result.failed and "returned a value of type object; a tool returns a str" in result.error
    result = executor.call(ToolCall("bad_json", {}), "e0")
    assert result.failed and "returned a dict that is not JSON" in result.error


def test_raise_mode_names_tool_arguments_and_episode():
    executor = ToolExecutor([divide], timeout_s=5, failure="raise")
    with pytest.raises(ToolCallError) as info:
        executor.call(ToolCall("divide", {"a": 1, "b": 0}), "step 3, sample 7")
    message = str(info.value)
    assert "divide(a=1, b=0)" in message and "step 3, sample 7" in message and "ZeroDivisionError" in message
    assert isinstance(info.value.__cause__, ZeroDivisionError)
    with pytest.raises(ToolCallError, match=r"tool call nope\(x=1\) in episode e1 failed: unknown tool"):
        executor.call(ToolCall("nope", {"x": 1}), "e1")


def test_fallback_counts_every_failure_and_logs_each_tool_once(caplog):
    stats = ToolStats()
    caplog.set_level(logging.WARNING, logger="grpokit.agents")
    for episode in range(3):  # one executor per episode, sharing the counters
        executor = ToolExecutor([add, divide], timeout_s=5, stats=stats)
        executor.call(ToolCall("divide", {"a": 1, "b": 0}), f"e{episode}")
        executor.call(ToolCall("add", {"zz": 1}), f"e{episode}")
        executor.call(ToolCall("add", {"a": 1}), f"e{episode}")
    assert stats.calls == 9
    assert stats.failures == {"divide": 3, "add": 3}
    records = [r for r in caplog.records if r.name == "grpokit.agents"]
    assert len(records) == 2
    divide_record = next(r for r in records if "divide" in r.getMessage())
    assert "in episode e0" in divide_record.getMessage()
    assert divide_record.exc_info is not None and divide_record.exc_info[0] is ZeroDivisionError


@pytest.mark.parametrize("error", [MemoryError, "torch"])
def test_out_of_memory_propagates_even_in_fallback(error):
    if error == "torch":
        torch = pytest.importorskip("torch")
        error = torch.OutOfMemoryError

    def hungry() -> str:
        """Allocate."""
        raise error("out of memory")

    executor = ToolExecutor([hungry], timeout_s=5)
    with pytest.raises(error):
        executor.call(ToolCall("hungry", {}), "e0")


def test_construction_errors():
    with pytest.raises(ValueError, match="two tools are named 'add'"):
        ToolExecutor([add, add])
    with pytest.raises(TypeError, match="has no __name__"):
        ToolExecutor([Counter()])  # not callable with a name
    with pytest.raises(ValueError, match="failure must be"):
        ToolExecutor([add], failure="ignore")  # type: ignore[arg-type]


def test_schemas_in_order():
    executor = ToolExecutor([divide, add])
    assert [s["function"]["name"] for s in executor.schemas()] == ["divide", "add"]
