"""Samplers that turn prompts into :class:`RolloutBatch` es."""

from grpokit.rollout.base import Continuation, Prompt, Sampler, TurnSampler
from grpokit.rollout.batch import RolloutBatch
from grpokit.rollout.prompts import encode_prompts
from grpokit.rollout.transformers_sampler import TransformersSampler, group_temperatures, schedule_for_spacing

__all__ = [
    "Continuation",
    "TurnSampler",
    "Prompt",
    "RolloutBatch",
    "Sampler",
    "TransformersSampler",
    "encode_prompts",
    "group_temperatures",
    "schedule_for_spacing",
]
