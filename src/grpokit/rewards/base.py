"""The reward-function protocol, the registry of built-ins and loading of user functions by name.

A reward function scores N completions at once::

    f(prompts: list[str | list[dict]], completions: list[str], **columns: list) -> list[float | None]

``columns`` holds every dataset column (``answer``, ``test_cases``...), N entries each, so a function takes
what it needs by keyword and ignores the rest with ``**kwargs``. ``None`` means "not applicable to this
sample": the sample's reward is the weighted sum over the functions that do apply, never a silent 0.

A process reward returns, per sample, the list of steps ``[(step_end, score), ...]`` (``step_end`` a
completion token index or character offset, see ``RewardConfig.process_reward_unit``), or ``None``.

Functions are named in the config as a registered built-in (``accuracy``), ``package.module:function`` or
``path/to/file.py:function``.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import Any

from grpokit.config.user_code import load_object
from grpokit.rewards import builtin  # noqa: F401  (registers the built-in rewards)
from grpokit.rewards.registry import _REGISTRY, ProcessRewardFunction, RewardFunction, register_reward

__all__ = [
    "ProcessRewardFunction",
    "RewardFunction",
    "available_rewards",
    "load_callable",
    "register_reward",
    "resolve_reward",
]


def available_rewards() -> list[str]:
    """Names of the built-in (registered) rewards."""
    return sorted(_REGISTRY)


def load_callable(spec: str) -> Callable[..., Any]:
    """Import ``package.module:function`` or ``path/to/file.py:function`` (attribute paths like ``a.b`` too).

    Raises:
        ValueError: the spec is malformed, names a missing file, module or attribute, or something not callable.
    """
    obj = load_object(spec, "reward", builtins=available_rewards(), noun="function")
    if not callable(obj):
        raise ValueError(f"reward {spec!r} is not callable (got {type(obj).__name__})")
    return obj


def resolve_reward(
    spec: str, options: dict[str, Any] | None = None, context: dict[str, Any] | None = None
) -> Callable:
    """The reward function named ``spec``.

    Built-ins are built by their factory from ``options`` and the ``context`` entries their signature
    accepts; a user function gets ``options`` bound with ``functools.partial`` (context is not passed).
    """
    options = dict(options or {})
    available_rewards()  # make sure built-ins are registered
    if spec in _REGISTRY:
        factory = _REGISTRY[spec]
        params = inspect.signature(factory).parameters
        accepted = {k: v for k, v in (context or {}).items() if k in params}
        unknown = [k for k in options if k not in params]
        if unknown:
            raise ValueError(f"reward {spec!r} has no option {unknown[0]!r} (options: {', '.join(params)})")
        return factory(**{**accepted, **options})
    fn = load_callable(spec)
    return functools.partial(fn, **options) if options else fn
