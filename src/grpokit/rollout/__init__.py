"""Samplers that turn prompts into :class:`RolloutBatch` es."""

from grpokit.rollout.batch import RolloutBatch

__all__ = ["RolloutBatch"]
