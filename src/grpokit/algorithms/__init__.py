"""The algorithm core of grpokit: pure tensor functions, no models, no I/O, no logging.

Shape letters: B prompts, G group size, N = B*G responses, T completion tokens, V vocabulary.
Masks are bool or float tensors with 1/True on real tokens. Every function computes in its
inputs' floating dtype (float32 and float64 both work) and returns python-float metrics.

GRPO (DeepSeekMath, arXiv 2402.03300) in three calls::

    adv = group_advantages(rewards, group_ids, estimator="grpo")                 # (N,)
    loss, metrics = policy_loss(logprobs, old_logprobs, adv, mask,
                                ref_logprobs=ref_logprobs, beta=0.04)            # scalar, dict
    loss.backward()

PPO: ``kl_penalized_rewards`` -> ``gae`` -> ``policy_loss`` (per-token advantages) + ``value_loss``.
Reward models: ``bradley_terry_loss`` on (chosen, rejected) scores of preference pairs.

Swappable pieces are chosen by name from five registries (``available(kind)`` lists them,
``register(kind, name)`` adds one): "advantage", "kl", "aggregation", "ratio", and "loss" (whole
losses with one signature, ``compute_loss(name, LossInputs(...), LossSettings(...))``).
"""

from grpokit.algorithms.advantages import (
    GroupIndex,
    group_advantages,
    group_reward_stats,
    multi_reward_advantages,
    outcome_as_process,
    process_advantages,
)
from grpokit.algorithms.importance import truncated_importance_weights
from grpokit.algorithms.kl import AdaptiveKLController, FixedKLController, kl_divergence, kl_loss_gradient
from grpokit.algorithms.masked import entropy_from_logits, masked_mean, masked_sum, masked_var, masked_whiten
from grpokit.algorithms.objectives import LossInputs, LossSettings, compute_loss
from grpokit.algorithms.policy_loss import aggregate, aggregation_count, policy_loss
from grpokit.algorithms.ppo import gae, kl_penalized_rewards, value_loss
from grpokit.algorithms.preference import bradley_terry_loss
from grpokit.algorithms.registry import available, register

__all__ = [
    "AdaptiveKLController",
    "FixedKLController",
    "GroupIndex",
    "LossInputs",
    "LossSettings",
    "aggregate",
    "aggregation_count",
    "available",
    "bradley_terry_loss",
    "compute_loss",
    "entropy_from_logits",
    "gae",
    "group_advantages",
    "group_reward_stats",
    "kl_divergence",
    "kl_loss_gradient",
    "kl_penalized_rewards",
    "masked_mean",
    "masked_sum",
    "masked_var",
    "masked_whiten",
    "multi_reward_advantages",
    "outcome_as_process",
    "policy_loss",
    "process_advantages",
    "register",
    "truncated_importance_weights",
    "value_loss",
]
