"""The text-environment contract: what a multi-turn episode asks of an environment, and nothing more.

An episode is a conversation. The environment opens it, the policy writes an assistant turn, and the
environment answers with new messages (tool results, feedback), a reward and whether the episode is over::

    messages = env.reset(row, seed)              the opening messages (system, user), from a dataset row
    repeat:
        turn = policy(messages)                  one assistant message: text, maybe tool calls
        tool calls?  -> the tools run            each call's result becomes a ``tool`` message, reward 0
        otherwise    -> env.step(turn)           EnvStep(messages, reward, terminated, truncated, info)

A message is a dict in the chat-template format every Hugging Face tokenizer takes: ``{"role": ...,
"content": ...}``, with ``tool_calls`` on an assistant message that calls tools and ``name`` on a ``tool``
message. One environment instance serves one episode (the trainer makes G of them per start state), so a
tool method bound to it knows which episode called it and can keep that episode's state.

Any object with ``reset`` and ``step`` works (duck-typed, :class:`TextEnvironment`); :class:`Environment` is a
convenient base with no tools and a ``step`` that must be overridden. Tools are the callables the instance
lists in ``tools`` (bound methods or plain functions); their JSON schemas come from their signatures and
docstrings (:mod:`grpokit.agents.tools`).

A built-in or user environment may also offer ``make_rows(n, seed, split)``: a class method generating its
own dataset rows (problems), used when ``data.path`` is unset; and ``truncation_reward()``: the reward of an
episode the trainer cut short (``env.max_turns``, ``env.max_total_tokens``, a turn at
``generation.max_new_tokens``), added to its last turn's (0 without it).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

__all__ = ["EnvStep", "Environment", "Message", "TextEnvironment", "tool_callables"]

Message = dict[str, Any]
"""``{"role": "system" | "user" | "assistant" | "tool", "content": str, ...}`` (``tool_calls`` on an
assistant message, ``name`` on a tool message)."""


@dataclass
class EnvStep:
    """What the environment answers to one assistant turn.

    Attributes:
        messages: appended to the conversation after the turn (feedback as ``user`` messages, or ``tool``
            messages); empty when the episode ends.
        reward: this turn's reward. The episode's return is the sum over its turns; with
            ``env.reward_mode: process`` each turn's reward sits at that turn's last token.
        terminated: the episode reached its end (answered, solved, failed for good).
        truncated: the episode was cut short (a limit of the environment's own).
        info: anything to log with the episode (numbers become ``env/<key>`` metrics at the episode's end).
    """

    messages: list[Message] = field(default_factory=list)
    reward: float = 0.0
    terminated: bool = False
    truncated: bool = False
    info: dict[str, Any] = field(default_factory=dict)


@runtime_checkable
class TextEnvironment(Protocol):
    """What the trainer calls on an environment instance (one instance per episode)."""

    def reset(self, row: dict[str, Any], seed: int) -> list[Message]:
        """Start an episode from a dataset ``row`` (every column), seeded by ``seed``; return the opening
        messages. Episodes given the same row and seed must start in the same state (they form a group)."""
        ...

    def step(self, message: Message) -> EnvStep:
        """Answer an assistant turn that called no tool: ``message["content"]`` is the model's text (the
        decoded sampled tokens, special tokens stripped)."""
        ...


class Environment:
    """A base for text environments: no tools, and the ``reset`` / ``step`` of :class:`TextEnvironment` to
    override. Subclasses with tools list them in ``self.tools`` (bound methods know their episode)."""

    tools: Sequence[Callable[..., Any]] = ()

    def reset(self, row: dict[str, Any], seed: int) -> list[Message]:
        raise NotImplementedError(f"{type(self).__name__} must implement reset(row, seed)")

    def step(self, message: Message) -> EnvStep:
        raise NotImplementedError(f"{type(self).__name__} must implement step(message)")


def tool_callables(env: Any) -> list[Callable[..., Any]]:
    """The tools an environment instance exposes: its ``tools`` attribute (a sequence of callables, or a
    method returning one), empty when it has none.

    Raises:
        TypeError: ``tools`` holds something that is not callable (named with the environment's class).
    """
    tools = getattr(env, "tools", ())
    if callable(tools) and not isinstance(tools, Sequence):
        tools = tools()
    tools = list(tools or ())
    for tool in tools:
        if not callable(tool):
            raise TypeError(f"{type(env).__name__}.tools holds {tool!r}, which is not callable")
    return tools
