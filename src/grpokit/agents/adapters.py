"""Environments written for other contracts, driven as :class:`~grpokit.agents.environment.TextEnvironment`.

- :class:`TRLEnvironment`: a class written for TRL's ``GRPOTrainer(environment_factory=...)`` (TRL 1.x):
  ``reset(**row)`` returns ``None`` or a text appended to the prompt's last user message, every public method
  other than ``reset`` and ``get_reward`` is a tool, and an optional ``get_reward()`` scores the episode.
- :class:`GymTextEnvironment`: a gymnasium-style environment whose observations and actions are text
  (``reset(seed=, options=) -> (obs, info)``, ``step(action) -> (obs, reward, terminated, truncated, info)``).

:func:`adapt_environment` picks one by name, or from the methods the object has. Every adapter sets
``reset_info`` (a dict) at ``reset``: the trainer reads its ``task`` key and its ``features`` for grouping.
"""

from __future__ import annotations

import asyncio
import inspect
import sys
import weakref
from collections.abc import Callable
from typing import Any

from grpokit.agents.environment import EnvStep, Message, TextEnvironment, tool_callables

__all__ = ["ADAPTERS", "GymTextEnvironment", "TRLEnvironment", "adapt_environment"]

ADAPTERS = ("auto", "native", "trl", "gymnasium")
"""The values of ``env.adapter``."""


# By class: every episode makes a new instance of the same class, and scanning its members each time is waste.
_TRL_TOOL_NAMES: weakref.WeakKeyDictionary[type, tuple[str, ...]] = weakref.WeakKeyDictionary()


def _trl_tool_names(cls: type) -> tuple[str, ...]:
    """The tool methods of a TRL environment class, found as TRL finds them: the functions of the class (so
    properties are not evaluated, and class methods are not tools) not named ``reset``, ``get_reward`` or
    ``_private``."""
    names = _TRL_TOOL_NAMES.get(cls)
    if names is None:
        names = tuple(
            name
            for name, _ in inspect.getmembers(cls, predicate=inspect.isfunction)
            if name not in ("reset", "get_reward") and not name.startswith("_")
        )
        _TRL_TOOL_NAMES[cls] = names
    return names


class TRLEnvironment:
    """A TRL ``environment_factory`` instance as a text environment.

    The opening messages are the row's ``prompt_column``: a string becomes one user message, a list of
    messages is copied (a missing prompt is one empty user message, as in TRL). A text returned by the
    instance's ``reset(**row)`` is appended to the last user message (a new user message when the prompt has
    none). The tools are the instance's public methods. The first turn without a tool call is the final
    answer: :meth:`step` ends the episode with ``get_reward()`` (``0.0`` when the class has none).

    ``reset_info`` is the instance's own ``reset_info`` dict when it sets one after ``reset``, else empty.
    TRL's ``reset`` takes only the row: the ``seed`` of :meth:`reset` is not passed on, so the G episodes of a
    group start alike only when the instance's ``reset`` is deterministic given the row.

    Args:
        instance: the object ``environment_factory`` would return.
        prompt_column: the row's column holding the prompt.
    """

    def __init__(self, instance: Any, prompt_column: str = "prompt") -> None:
        if not callable(getattr(instance, "reset", None)):
            raise TypeError(
                f"{type(instance).__name__} has no reset method; a TRL environment defines reset(**row)"
            )
        self.instance = instance
        self.prompt_column = prompt_column
        self.tools: list[Callable[..., Any]] = [
            getattr(instance, name) for name in _trl_tool_names(type(instance))
        ]
        self.reset_info: dict[str, Any] = {}

    def reset(self, row: dict[str, Any], seed: int) -> list[Message]:
        observation = self.instance.reset(**row)
        prompt = row.get(self.prompt_column)
        if prompt is None:
            messages: list[Message] = [{"role": "user", "content": ""}]
        elif isinstance(prompt, str):
            messages = [{"role": "user", "content": prompt}]
        else:
            messages = [dict(message) for message in prompt]
        if observation is not None:
            if not isinstance(observation, str):
                raise TypeError(
                    f"{type(self.instance).__name__}.reset returned a {type(observation).__name__}; "
                    "expected None or a str to append to the prompt"
                )
            _append_to_last_user_message(messages, observation, type(self.instance).__name__)
        info = getattr(self.instance, "reset_info", None)
        self.reset_info = dict(info) if isinstance(info, dict) else {}
        return messages

    def step(self, message: Message) -> EnvStep:
        return EnvStep(reward=self.truncation_reward(), terminated=True)

    def truncation_reward(self) -> float:
        """``get_reward()`` (0.0 without one): TRL scores every rollout, a cut one too."""
        get_reward = getattr(self.instance, "get_reward", None)
        if get_reward is None:
            return 0.0
        reward = get_reward()
        if inspect.isawaitable(reward):  # TRL allows an async get_reward (an LLM judge)
            reward = asyncio.run(_awaited(reward))
        return float(reward)


def _append_to_last_user_message(messages: list[Message], text: str, owner: str) -> None:
    for index in range(len(messages) - 1, -1, -1):
        if messages[index].get("role") == "user":
            content = messages[index].get("content", "")
            if not isinstance(content, str):
                raise TypeError(
                    f"{owner}.reset returned text, but the prompt's last user message has {type(content).__name__} "
                    "content; only text content can be extended"
                )
            messages[index] = {**messages[index], "content": content + text}
            return
    messages.append({"role": "user", "content": text})


async def _awaited(awaitable: Any) -> Any:
    return await awaitable


class GymTextEnvironment:
    """A gymnasium-style environment with text observations and text actions, as a text environment.

    ``reset(row, seed)`` calls ``env.reset(seed=seed, options=row)`` and opens the episode with the
    observation as a user message (``info`` becomes ``reset_info``). Each tool-free turn's text is the
    action: ``env.step(text)``. While the episode goes on, the observation is the next user message; once it
    ends (terminated or truncated) no message is added, as :class:`EnvStep` asks, and a non-empty final
    observation is kept in ``info["final_observation"]`` (logged, not shown to the model, whose turn is over).
    Rewards are cast to ``float``. Tools: the env's ``tools``, if it lists any.
    """

    def __init__(self, env: Any) -> None:
        self.env = env
        self.reset_info: dict[str, Any] = {}

    @property
    def tools(self) -> list[Callable[..., Any]]:
        """The wrapped env's ``tools`` (none for a plain gymnasium env)."""
        return tool_callables(self.env)

    def reset(self, row: dict[str, Any], seed: int) -> list[Message]:
        observation, info = self.env.reset(seed=seed, options=dict(row))
        self.reset_info = dict(info or {})
        return [{"role": "user", "content": self._text(observation, "reset")}]

    def step(self, message: Message) -> EnvStep:
        observation, reward, terminated, truncated, info = self.env.step(message["content"])
        text = self._text(observation, "step")
        info = dict(info or {})
        ended = bool(terminated) or bool(truncated)
        if ended and text:
            info.setdefault("final_observation", text)
        messages: list[Message] = [] if ended else [{"role": "user", "content": text}]
        return EnvStep(messages, float(reward), bool(terminated), bool(truncated), info)

    def close(self) -> None:
        close = getattr(self.env, "close", None)
        if callable(close):
            close()

    def _text(self, observation: Any, method: str) -> str:
        if not isinstance(observation, str):
            raise TypeError(
                f"{type(self.env).__name__}.{method} returned a {type(observation).__name__} observation; "
                "a text environment's observations are str"
            )
        return observation


def adapt_environment(obj: Any, adapter: str = "auto", prompt_column: str = "prompt") -> TextEnvironment:
    """``obj`` driven as a text environment (``env.adapter``).

    Args:
        obj: an environment instance.
        adapter: ``native`` (``obj`` itself: ``reset(row, seed)`` / ``step(message)``), ``trl``
            (:class:`TRLEnvironment`), ``gymnasium`` (:class:`GymTextEnvironment`), or ``auto``: gymnasium for a
            ``gymnasium.Env`` or an object with ``action_space`` / ``observation_space``, trl for ``reset``
            without ``step``, native for ``reset`` and ``step``. A TRL class with a tool named ``step`` reads
            as native: name ``trl`` for it.
        prompt_column: the prompt's column, for ``trl``.

    Raises:
        ValueError: an unknown ``adapter``.
        TypeError: ``obj`` lacks the methods its adapter needs (the message names its class and them).
    """
    if adapter not in ADAPTERS:
        raise ValueError(f"unknown environment adapter {adapter!r}; valid: {', '.join(ADAPTERS)}")
    if adapter == "auto":
        adapter = _detect(obj)
    if adapter == "trl":
        return TRLEnvironment(obj, prompt_column)
    missing = [name for name in ("reset", "step") if not callable(getattr(obj, name, None))]
    if missing:
        raise TypeError(
            f"{type(obj).__name__} has no {' or '.join(missing)} method, which the {adapter} adapter calls"
        )
    if adapter == "gymnasium":
        return GymTextEnvironment(obj)
    return obj


def _detect(obj: Any) -> str:
    # gymnasium is not imported for this: an instance of gymnasium.Env means it already is.
    gymnasium = sys.modules.get("gymnasium")
    if gymnasium is not None and isinstance(obj, gymnasium.Env):
        return "gymnasium"
    if hasattr(obj, "action_space") or hasattr(obj, "observation_space"):
        return "gymnasium"
    has_reset = callable(getattr(obj, "reset", None))
    has_step = callable(getattr(obj, "step", None))
    if has_reset and has_step:
        return "native"
    if has_reset:
        return "trl"
    raise TypeError(
        f"{type(obj).__name__} is not an environment: it has no reset method (a native environment has "
        "reset(row, seed) and step(message), a TRL one reset(**row) and tool methods, a gymnasium one "
        "reset(seed, options) and step(action))"
    )
