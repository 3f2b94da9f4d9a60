"""The reward function interfaces and the registry of reward factories by name (``rewards.builtin`` fills it;
``rewards.base`` resolves names against it)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol, runtime_checkable

__all__ = ["ProcessRewardFunction", "RewardFunction", "register_reward"]


@runtime_checkable
class RewardFunction(Protocol):
    """``f(prompts, completions, **columns) -> list[float | None]``, one entry per completion."""

    def __call__(
        self, prompts: list[Any], completions: list[str], **columns: list[Any]
    ) -> list[float | None]: ...


@runtime_checkable
class ProcessRewardFunction(Protocol):
    """``f(prompts, completions, **columns) -> list[list[tuple[int, float]] | None]``: steps per completion."""

    def __call__(
        self, prompts: list[Any], completions: list[str], **columns: list[Any]
    ) -> list[list[tuple[int, float]] | None]: ...


_REGISTRY: dict[str, Callable[..., RewardFunction]] = {}
"""name -> factory(**options) -> RewardFunction"""


def register_reward(name: str) -> Callable[[Callable[..., RewardFunction]], Callable[..., RewardFunction]]:
    """Register a reward *factory* under ``name``: ``factory(**options)`` returns the reward function.

    Options come from ``RewardConfig.reward_kwargs[name]`` plus the run's context (``answer_column``,
    ``task``, ``max_new_tokens``), of which a factory receives only the ones its signature names.
    """

    def decorator(factory: Callable[..., RewardFunction]) -> Callable[..., RewardFunction]:
        if name in _REGISTRY:
            raise ValueError(f"a reward named {name!r} is already registered")
        _REGISTRY[name] = factory
        return factory

    return decorator
