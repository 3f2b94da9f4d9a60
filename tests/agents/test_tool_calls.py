import pytest

from grpokit.agents import tool_calls as tool_calls_module
from grpokit.agents.tool_calls import (
    ParsedTurn,
    ToolCall,
    available_tool_call_parsers,
    get_tool_call_parser,
    message_tool_calls,
    parse_hermes,
    parse_pythonic,
    register_tool_call_parser,
)

# --- hermes ---------------------------------------------------------------------------------------------------


def test_hermes_one_call_content_stripped():
    text = 'Let me add.\n<tool_call>\n{"name": "add", "arguments": {"a": 1, "b": 2}}\n</tool_call>\n'
    parsed = parse_hermes(text)
    assert parsed == ParsedTurn("Let me add.", [ToolCall("add", {"a": 1, "b": 2})], [])


def test_hermes_several_calls_in_order_and_text_between_kept():
    text = (
        '<tool_call>{"name": "a", "arguments": {}}</tool_call> then '
        '<tool_call>{"name": "b", "arguments": {"x": [1, 2]}}</tool_call> done'
    )
    parsed = parse_hermes(text)
    assert [c.name for c in parsed.tool_calls] == ["a", "b"]
    assert parsed.tool_calls[1].arguments == {"x": [1, 2]}
    assert parsed.content == "then  done"
    assert parsed.errors == []


def test_hermes_no_call_is_plain_content():
    assert parse_hermes("  The answer is 4.  ") == ParsedTurn("The answer is 4.", [], [])


def test_hermes_arguments_as_json_string_and_missing_arguments():
    text = (
        '<tool_call>{"name": "add", "arguments": "{\\"a\\": 1}"}</tool_call>'
        '<tool_call>{"name": "now"}</tool_call>'
        '<tool_call>{"name": "old", "parameters": {"k": true}}</tool_call>'
    )
    parsed = parse_hermes(text)
    assert parsed.tool_calls == [ToolCall("add", {"a": 1}), ToolCall("now", {}), ToolCall("old", {"k": True})]
    assert parsed.errors == []


def test_hermes_malformed_json_is_an_error_and_good_calls_survive():
    text = (
        '<tool_call>{"name": "add", "arguments": {"a": 1,}}</tool_call>'
        '<tool_call>{"name": "ok", "arguments": {}}</tool_call>'
    )
    parsed = parse_hermes(text)
    assert parsed.tool_calls == [ToolCall("ok", {})]
    assert len(parsed.errors) == 1
    assert parsed.errors[0].startswith("tool call 1: invalid JSON")
    assert parsed.content == ""  # the malformed block's markup is removed too


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ('{"arguments": {"a": 1}}', 'missing "name"'),
        ('{"name": "", "arguments": {}}', 'missing "name"'),
        ('["add", {"a": 1}]', "expected a JSON object"),
        ('{"name": "add", "arguments": [1, 2]}', '"arguments" must be an object, got list'),
        ('{"name": "add", "arguments": "{not json"}', '"arguments" is a string but not JSON'),
        ('{"name": "add", "arguments": "[1]"}', '"arguments" must be an object, got list'),
    ],
)
def test_hermes_malformed_calls_name_the_problem(body, message):
    parsed = parse_hermes(f"<tool_call>{body}</tool_call>")
    assert parsed.tool_calls == []
    assert len(parsed.errors) == 1 and message in parsed.errors[0]


def test_hermes_unclosed_block_is_an_error_and_removed_from_content():
    parsed = parse_hermes('Thinking. <tool_call>{"name": "add", "arguments": {"a"')
    assert parsed.content == "Thinking."
    assert parsed.tool_calls == []
    assert "not closed" in parsed.errors[0]


# --- pythonic -------------------------------------------------------------------------------------------------


def test_pythonic_calls_with_literal_keywords():
    parsed = parse_pythonic('[get_weather(city="Paris", days=3), now()]')
    assert parsed == ParsedTurn(
        "", [ToolCall("get_weather", {"city": "Paris", "days": 3}), ToolCall("now", {})], []
    )


def test_pythonic_text_before_the_list_is_content_and_json_constants_read():
    parsed = parse_pythonic('I will check. <|python_tag|>[f(flag=true, nothing=null, xs=[1, {"k": false}])]')
    assert parsed.content == "I will check."
    assert parsed.tool_calls == [ToolCall("f", {"flag": True, "nothing": None, "xs": [1, {"k": False}]})]


def test_pythonic_prose_with_brackets_is_not_a_call():
    text = "The list [1, 2] and see [the docs] for more."
    assert parse_pythonic(text) == ParsedTurn(text, [], [])


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[add(1, 2)]", "positional arguments are not allowed"),
        ("[add(**kw)]", "**kw is not allowed"),
        ("[add(a=x)]", "argument a=x is not a literal"),
        ("[add(a=__import__('os').system('true'))]", "is not a literal"),
        ("[add(a=1, a=2)]", "given twice"),
        ("[math.sqrt(x=2)]", "not a plain tool name"),
    ],
)
def test_pythonic_malformed_call_errors(text, message):
    parsed = parse_pythonic(text)
    assert parsed.tool_calls == []
    assert len(parsed.errors) == 1 and message in parsed.errors[0]


def test_pythonic_bad_element_does_not_drop_the_good_ones():
    parsed = parse_pythonic("[ok(a=1), 3, fine()]")
    assert [c.name for c in parsed.tool_calls] == ["ok", "fine"]
    assert parsed.errors == ["tool call 2: '3' is not a call name(arg=value, ...)"]


def test_pythonic_syntax_error_and_trailing_text():
    parsed = parse_pythonic('Sure. [add(a=1, b="x"')
    assert parsed.content == "Sure."
    assert parsed.tool_calls == [] and "not a Python list of calls" in parsed.errors[0]
    parsed = parse_pythonic("[add(a=1)] and then more")
    assert parsed.tool_calls == [] and len(parsed.errors) == 1


# --- registry and message form --------------------------------------------------------------------------------


def test_registry_lookup_and_errors(monkeypatch):
    monkeypatch.setattr(tool_calls_module, "_PARSERS", dict(tool_calls_module._PARSERS))
    assert {"hermes", "pythonic"} <= set(available_tool_call_parsers())
    assert get_tool_call_parser("hermes") is parse_hermes

    @register_tool_call_parser("upper")
    def upper(text):
        return ParsedTurn(text.upper())

    assert get_tool_call_parser("upper")("a").content == "A"
    with pytest.raises(ValueError, match="already registered"):
        register_tool_call_parser("hermes")(upper)
    with pytest.raises(
        ValueError, match="unknown tool-call parser 'nope'; valid names: hermes, pythonic, upper"
    ):
        get_tool_call_parser("nope")


def test_message_tool_calls_is_the_chat_template_form():
    calls = [ToolCall("add", {"a": 1}), ToolCall("now", {})]
    assert message_tool_calls(calls) == [
        {"type": "function", "function": {"name": "add", "arguments": {"a": 1}}},
        {"type": "function", "function": {"name": "now", "arguments": {}}},
    ]
