"""Reward functions: the protocol, built-ins, reward models, and the pipeline that combines them.

See :mod:`grpokit.rewards.base` for the protocol ``f(prompts, completions, **columns) -> list[float | None]``.
"""

from grpokit.rewards.base import (
    ProcessRewardFunction,
    RewardFunction,
    available_rewards,
    load_callable,
    register_reward,
    resolve_reward,
)
from grpokit.rewards.pipeline import RewardPipeline, RewardScores
from grpokit.rewards.shaping import soft_overlong_penalty

__all__ = [
    "ProcessRewardFunction",
    "RewardFunction",
    "RewardPipeline",
    "RewardScores",
    "available_rewards",
    "load_callable",
    "register_reward",
    "resolve_reward",
    "soft_overlong_penalty",
]
