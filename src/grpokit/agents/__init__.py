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

from grpokit.agents.environment import EnvStep, Environment, Message, TextEnvironment, tool_callables

__all__ = ["EnvStep", "Environment", "Message", "TextEnvironment", "tool_callables"]
