"""Multi-turn text environments and tools: what a language-model agent is trained in.

- :mod:`~grpokit.agents.environment`: the environment contract (``reset`` / ``step``, :class:`EnvStep`);
- :mod:`~grpokit.agents.tools`: tools as Python functions (JSON schema from signature and docstring) and
  their guarded execution (deadline, failure policy);
- :mod:`~grpokit.agents.tool_calls`: parsers of the model's tool calls, registered by name;
- :mod:`~grpokit.agents.chat`: token-in/token-out rendering of turns through the chat template;
- :mod:`~grpokit.agents.adapters`: gymnasium-style text environments and TRL ``environment_factory`` classes;
- :mod:`~grpokit.agents.registry`: environments by name (built-in) or ``file.py:Class``;
- :mod:`~grpokit.agents.builtin`: the built-in environments (a calculator tool, a guessing game).

The episode loop that joins them with a sampler is :mod:`grpokit.trainers.episodes`.
"""

from grpokit.agents.adapters import GymTextEnvironment, TRLEnvironment, adapt_environment
from grpokit.agents.environment import Environment, EnvStep, Message, TextEnvironment, tool_callables
from grpokit.agents.registry import (
    EnvironmentFactory,
    available_environments,
    environment_class,
    environment_factory,
    load_tools,
    register_environment,
)
from grpokit.agents.tool_calls import (
    ParsedTurn,
    ToolCall,
    available_tool_call_parsers,
    get_tool_call_parser,
    message_tool_calls,
    register_tool_call_parser,
)
from grpokit.agents.tools import ToolCallError, ToolExecutor, ToolResult, ToolStats, tool_schema

__all__ = [
    "EnvStep",
    "Environment",
    "EnvironmentFactory",
    "GymTextEnvironment",
    "Message",
    "ParsedTurn",
    "TRLEnvironment",
    "TextEnvironment",
    "ToolCall",
    "ToolCallError",
    "ToolExecutor",
    "ToolResult",
    "ToolStats",
    "adapt_environment",
    "available_environments",
    "available_tool_call_parsers",
    "environment_class",
    "environment_factory",
    "get_tool_call_parser",
    "load_tools",
    "message_tool_calls",
    "register_environment",
    "register_tool_call_parser",
    "tool_callables",
    "tool_schema",
]
