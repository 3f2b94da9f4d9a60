"""The ``env`` section: multi-turn episodes in a text environment instead of single completions."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from grpokit.config.base import Section


class EnvConfig(Section):
    """A multi-turn text environment (``grpokit train --env NAME``; ``docs/agents.md``). Unset ``name``: the
    usual single-turn GRPO on prompts."""

    name: str | None = None
    """The environment: a built-in or registered name (``calculator``, ``guess_number``;
    ``grpokit.agents.available_environments()`` lists them), or a class in a Python file or module,
    ``path/to/my_env.py:MyEnv`` / ``package.module:MyEnv``. One instance is made per episode with ``kwargs``."""

    kwargs: dict[str, Any] = Field(default_factory=dict)
    """Keyword arguments of the environment's constructor."""

    adapter: Literal["auto", "native", "trl", "gymnasium"] = "auto"
    """How the class is driven: ``native`` (``reset(row, seed)`` / ``step(message)``, ``grpokit.agents``),
    ``trl`` (a class written for TRL's ``environment_factory``: ``reset(**row)``, public methods as tools,
    ``get_reward()``), ``gymnasium`` (a gymnasium-style env with text observations and actions); ``auto``
    picks from the methods the class defines."""

    max_turns: int = Field(8, ge=1)
    """Assistant turns per episode; an episode that reaches it without ending is truncated."""

    max_total_tokens: int | None = Field(None, ge=2)
    """Tokens per episode, opening prompt and every turn included (the context budget); an episode whose next
    turn would not fit is truncated. ``null``: only ``max_turns`` and ``generation.max_new_tokens`` (per
    turn) bound it."""

    tool_call_parser: str = "hermes"
    """How tool calls are read from the model's text: ``hermes`` (``<tool_call>{"name": ..., "arguments":
    {...}}</tool_call>``, Qwen / Hermes style), ``pythonic`` (``[name(arg=value, ...)]``, Llama 3.2 style), or
    a name registered with ``grpokit.agents.tool_calls.register_tool_call_parser``."""

    tools: list[str] = Field(default_factory=list)
    """Extra tools every episode gets besides the environment's own: Python functions as ``file.py:func``
    or ``module:func``."""

    tool_timeout_s: float | None = Field(30.0, gt=0)
    """Seconds one tool call may take (run in a worker thread, which cannot be killed: a tool that may hang
    on purpose should run its work in a subprocess); ``null``: no limit."""

    tool_failure: Literal["raise", "fallback"] = "fallback"
    """A tool call that raises, times out, names an unknown tool or has arguments that do not fit:
    ``fallback`` answers the model with a ``tool`` message ``error: ...`` (the episode goes on; counted in
    ``env/tool_failures``, first traceback logged once); ``raise`` stops training with an error naming the
    tool, its arguments and the episode."""

    reward_mode: Literal["outcome", "process"] = "outcome"
    """``outcome``: the episode's return (the sum of its turns' rewards) gives one group-relative advantage
    per episode; ``process``: each turn's reward is a step reward at that turn's last token, and the
    advantages are DeepSeekMath's process-supervised ones (every token gets the normalised rewards of the
    turns from its own on)."""

    grouping: str = "same_start"
    """Which episodes share a baseline: ``same_start`` (the G episodes of one row and reset seed), ``task``
    (the row's or reset info's ``task`` key), ``similarity`` (k-means on ``reset info['features']``),
    ``batch`` (one group), or a name registered with ``grpokit.rl.grouping.register_grouping``."""

    grouping_kwargs: dict[str, Any] = Field(default_factory=dict)
    """Options of the grouping (``{key: level}`` for ``task``, ``{num_clusters: 4}`` for ``similarity``)."""

    chat_template_kwargs: dict[str, Any] = Field(default_factory=dict)
    """Extra keyword arguments of ``tokenizer.apply_chat_template`` (``enable_thinking: false``)."""
