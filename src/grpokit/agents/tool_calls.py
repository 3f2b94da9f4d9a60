"""Reading tool calls out of an assistant turn's text, by a parser registered under a name.

A parser maps the decoded turn (special tokens kept where they mark calls, e.g. Qwen's ``<tool_call>``) to a
:class:`ParsedTurn`: the text without the call markup, the well-formed calls, and one message per malformed
call. A malformed call is not dropped silently: the episode answers it with an ``error: ...`` tool message, so
the model is told (and trained on) what it got wrong. Built-ins:

- ``hermes`` (Qwen 2.5/3, Hermes): any number of ``<tool_call>{"name": ..., "arguments": {...}}</tool_call>``
  blocks anywhere in the text; ``arguments`` may also be a JSON string holding an object (some models
  double-encode), or be named ``parameters`` (Llama 3.1's JSON style).
- ``pythonic`` (Llama 3.2/4): one list of calls, ``[name(a=1, b="x"), other()]``, ending the text. It is
  parsed with :mod:`ast` and only keyword values are evaluated, with :func:`ast.literal_eval` (no code runs);
  JSON's ``true``/``false``/``null`` are read as Python's. Positional arguments are an error: a schema names
  every parameter.

:func:`message_tool_calls` gives the calls in the form chat templates take on an assistant message.
"""

from __future__ import annotations

import ast
import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "ParsedTurn",
    "ToolCall",
    "ToolCallParser",
    "available_tool_call_parsers",
    "get_tool_call_parser",
    "message_tool_calls",
    "parse_hermes",
    "parse_pythonic",
    "register_tool_call_parser",
]


@dataclass(frozen=True)
class ToolCall:
    """One call the model asked for: the tool's ``name`` and its keyword ``arguments``."""

    name: str
    arguments: dict[str, Any]


@dataclass
class ParsedTurn:
    """An assistant turn read by a parser.

    Attributes:
        content: the text with every call's markup (well-formed or not) removed, stripped.
        tool_calls: the well-formed calls, in the order written.
        errors: one message per malformed call, saying what is wrong with it.
    """

    content: str
    tool_calls: list[ToolCall] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


ToolCallParser = Callable[[str], ParsedTurn]
"""``parser(text) -> ParsedTurn``."""

_PARSERS: dict[str, ToolCallParser] = {}


def register_tool_call_parser(name: str) -> Callable[[ToolCallParser], ToolCallParser]:
    """Decorator registering ``parser(text) -> ParsedTurn`` under ``name`` (``env.tool_call_parser``).

    Raises:
        ValueError: the name is empty or taken (replacing a parser silently would change every config naming it).
    """
    if not isinstance(name, str) or not name:
        raise ValueError(f"name must be a non-empty string, got {name!r}")

    def decorator(parser: ToolCallParser) -> ToolCallParser:
        if name in _PARSERS:
            raise ValueError(f"tool-call parser {name!r} is already registered; pick another name")
        _PARSERS[name] = parser
        return parser

    return decorator


def available_tool_call_parsers() -> list[str]:
    """Names of the registered tool-call parsers."""
    return sorted(_PARSERS)


def get_tool_call_parser(name: str) -> ToolCallParser:
    """The parser registered under ``name``.

    Raises:
        ValueError: no parser has that name (the message lists those that do).
    """
    try:
        return _PARSERS[name]
    except KeyError:
        raise ValueError(
            f"unknown tool-call parser {name!r}; valid names: {', '.join(available_tool_call_parsers())}"
        ) from None


def message_tool_calls(calls: list[ToolCall]) -> list[dict[str, Any]]:
    """The calls as an assistant message's ``tool_calls``, the form chat templates render:
    ``[{"type": "function", "function": {"name": ..., "arguments": {...}}}]``."""
    return [{"type": "function", "function": {"name": c.name, "arguments": dict(c.arguments)}} for c in calls]


def _excerpt(text: str, limit: int = 200) -> str:
    text = text.strip()
    return repr(text if len(text) <= limit else text[:limit] + "...")


# --- hermes ---------------------------------------------------------------------------------------------------

_HERMES_BLOCK = re.compile(r"<tool_call>(.*?)</tool_call>", re.DOTALL)
_HERMES_OPEN = "<tool_call>"


@register_tool_call_parser("hermes")
def parse_hermes(text: str) -> ParsedTurn:
    """Calls written ``<tool_call>{"name": ..., "arguments": {...}}</tool_call>`` (any number of them).

    An opening tag never closed (the turn stopped inside a call) is malformed and runs to the end of the text.
    """
    calls: list[ToolCall] = []
    errors: list[str] = []
    kept: list[str] = []
    position = 0
    for index, match in enumerate(_HERMES_BLOCK.finditer(text), start=1):
        kept.append(text[position : match.start()])
        position = match.end()
        call, error = _hermes_call(match.group(1), index)
        if call is not None:
            calls.append(call)
        else:
            errors.append(error)
    rest = text[position:]
    opened = rest.find(_HERMES_OPEN)
    if opened >= 0:
        errors.append(
            f"tool call {len(calls) + len(errors) + 1}: <tool_call> is not closed by </tool_call>: "
            f"{_excerpt(rest[opened + len(_HERMES_OPEN) :])}"
        )
        rest = rest[:opened]
    kept.append(rest)
    return ParsedTurn("".join(kept).strip(), calls, errors)


def _hermes_call(body: str, index: int) -> tuple[ToolCall | None, str]:
    """One block's JSON as a call, or ``(None, what is wrong)``."""
    where = f"tool call {index}"
    try:
        obj = json.loads(body)
    except json.JSONDecodeError as err:
        return (
            None,
            f"{where}: invalid JSON ({err.msg} at line {err.lineno} column {err.colno}): {_excerpt(body)}",
        )
    if not isinstance(obj, dict):
        return (
            None,
            f'{where}: expected a JSON object {{"name": ..., "arguments": {{...}}}}, got {_excerpt(body)}',
        )
    name = obj.get("name")
    if not isinstance(name, str) or not name:
        return None, f'{where}: missing "name" (a non-empty string): {_excerpt(body)}'
    arguments: Any = obj.get("arguments", obj.get("parameters", {}))
    if isinstance(arguments, str):
        encoded = arguments
        try:
            arguments = json.loads(encoded) if encoded.strip() else {}
        except json.JSONDecodeError as err:
            return (
                None,
                f'{where} ({name}): "arguments" is a string but not JSON ({err.msg}): {_excerpt(encoded)}',
            )
    if arguments is None:
        arguments = {}
    if not isinstance(arguments, dict):
        return None, f'{where} ({name}): "arguments" must be an object, got {type(arguments).__name__}'
    return ToolCall(name, arguments), ""


# --- pythonic -------------------------------------------------------------------------------------------------

# Where a call list starts: "[" then a name and "(" (so "[1, 2]" or "[see above]" in prose is not a call).
_PYTHONIC_START = re.compile(r"\[\s*[A-Za-z_][\w.]*\s*\(")
_PYTHON_TAG = "<|python_tag|>"
_JSON_CONSTANTS = {"true": True, "false": False, "null": None}


@register_tool_call_parser("pythonic")
def parse_pythonic(text: str) -> ParsedTurn:
    """Calls written as one Python list ``[name(a=1, b="x"), other()]`` that ends the text.

    The text before the list is the content. A list that does not parse, or that is followed by more text, is
    one error; inside a parsed list each malformed call is its own error.
    """
    text = text.replace(_PYTHON_TAG, "")
    match = _PYTHONIC_START.search(text)
    if match is None:
        return ParsedTurn(text.strip())
    content, source = text[: match.start()].strip(), text[match.start() :].strip()
    try:
        tree = ast.parse(source, mode="eval")
    except (SyntaxError, ValueError, RecursionError) as err:
        reason = err.msg if isinstance(err, SyntaxError) else str(err) or type(err).__name__
        return ParsedTurn(
            content, [], [f"tool calls: not a Python list of calls ({reason}): {_excerpt(source)}"]
        )
    if not isinstance(tree.body, ast.List):
        return ParsedTurn(
            content, [], [f"tool calls: expected one list [name(arg=value), ...]: {_excerpt(source)}"]
        )
    calls: list[ToolCall] = []
    errors: list[str] = []
    for index, node in enumerate(tree.body.elts, start=1):
        call, error = _pythonic_call(node, index)
        if call is not None:
            calls.append(call)
        else:
            errors.append(error)
    return ParsedTurn(content, calls, errors)


def _pythonic_call(node: ast.expr, index: int) -> tuple[ToolCall | None, str]:
    """One list element as a call, or ``(None, what is wrong)``."""
    where = f"tool call {index}"
    if not isinstance(node, ast.Call):
        return None, f"{where}: {ast.unparse(node)!r} is not a call name(arg=value, ...)"
    if not isinstance(node.func, ast.Name):
        return None, f"{where}: {ast.unparse(node.func)!r} is not a plain tool name"
    name = node.func.id
    if node.args:
        return None, f"{where} ({name}): positional arguments are not allowed, name each one (arg=value)"
    arguments: dict[str, Any] = {}
    for keyword in node.keywords:
        if keyword.arg is None:
            return (
                None,
                f"{where} ({name}): **{ast.unparse(keyword.value)} is not allowed, name each argument",
            )
        if keyword.arg in arguments:
            return None, f"{where} ({name}): argument {keyword.arg!r} is given twice"
        try:
            arguments[keyword.arg] = ast.literal_eval(_JsonConstants().visit(keyword.value))
        except (ValueError, TypeError, SyntaxError, RecursionError):
            return None, (
                f"{where} ({name}): argument {keyword.arg}={ast.unparse(keyword.value)} is not a literal "
                "(a string, number, bool, None, list, dict, tuple or set)"
            )
    return ToolCall(name, arguments), ""


class _JsonConstants(ast.NodeTransformer):
    """Read the bare names ``true``, ``false`` and ``null`` as constants (models mix JSON into Python)."""

    def visit_Name(self, node: ast.Name) -> ast.AST:
        if node.id in _JSON_CONSTANTS:
            return ast.copy_location(ast.Constant(_JSON_CONSTANTS[node.id]), node)
        return node
