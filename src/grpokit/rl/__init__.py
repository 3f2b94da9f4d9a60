"""GRPO for any policy: gym policies, episode collection, grouping strategies and the built-in environments.

The trainer is :mod:`grpokit.trainers.rl` (GRPO or PPO on the shared update engine and run harness).
Quick start::

    from grpokit.rl import RLConfig
    from grpokit.trainers.rl import train

    config = RLConfig.model_validate({"environment": {"env": "CartPole-v1"},
                                      "evaluation": {"target_return": 475}})
    result = train(config)

or from the shell: ``grpokit rl --env CartPole-v1 --target-return 475``. See docs/rl.md.
"""

from grpokit.rl.config import (
    EnvironmentConfig,
    EvaluationConfig,
    PolicyConfig,
    RLAlgorithmConfig,
    RLConfig,
    RLOptimConfig,
)
from grpokit.rl.envs import CueTasksEnv, register_envs
from grpokit.rl.grouping import (
    EpisodeStart,
    Grouping,
    available_groupings,
    group_ids_from_keys,
    key_grouping,
    make_grouping,
    register_grouping,
)
from grpokit.rl.policies import (
    CategoricalPolicy,
    GaussianPolicy,
    Policy,
    ValueNetwork,
    make_policy,
    make_value_network,
    mlp,
)
from grpokit.rl.rollout import EpisodeBatch, EpisodeCollector, StartState, evaluation_starts, plan_starts

register_envs()

__all__ = [
    "CategoricalPolicy",
    "CueTasksEnv",
    "EnvironmentConfig",
    "EpisodeBatch",
    "EpisodeCollector",
    "EpisodeStart",
    "EvaluationConfig",
    "GaussianPolicy",
    "Grouping",
    "Policy",
    "PolicyConfig",
    "RLAlgorithmConfig",
    "RLConfig",
    "RLOptimConfig",
    "StartState",
    "ValueNetwork",
    "available_groupings",
    "evaluation_starts",
    "group_ids_from_keys",
    "key_grouping",
    "make_grouping",
    "make_policy",
    "make_value_network",
    "mlp",
    "plan_starts",
    "register_envs",
    "register_grouping",
]
