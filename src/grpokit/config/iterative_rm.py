"""The ``rewards.iterative_rm`` section: DeepSeekMath's iterative RL, where the reward model keeps learning from
the policy's own samples, labelled by a gold function (``grpokit.trainers.iterative_rm``)."""

from __future__ import annotations

from pydantic import Field

from grpokit.config.base import Section

__all__ = ["IterativeRewardModelConfig"]


class IterativeRewardModelConfig(Section):
    """Iterative RL (DeepSeekMath, arXiv 2402.03300, section 4.2): every ``every_steps`` steps, pairs of the
    policy's own samples labelled by ``gold_func`` retrain ``rewards.reward_model`` briefly, with a replay of
    older pairs. Off while ``gold_func`` is unset."""

    gold_func: str | None = None
    """The gold (oracle) reward that labels the policy's samples, ``module:function`` or
    ``path/to/file.py:function`` with the reward signature ``f(prompts, completions, **columns) -> list[float |
    None]``. In each group the completion it scores highest becomes ``chosen`` and the lowest ``rejected``
    (groups without a strict difference give no pair). Setting it turns iterative RL on; it needs
    ``rewards.reward_model``."""

    every_steps: int = Field(10, ge=1)
    """K: the reward model is retrained after every K-th training step, on the pairs labelled since the last
    retraining."""

    pairs_per_update: int = Field(64, ge=1)
    """At most this many labelled pairs, the newest, enter each retraining (older ones labelled since the last
    retraining are dropped)."""

    replay_fraction: float = Field(0.1, ge=0, le=1)
    """Each retraining also replays this fraction of every pair used before (the pool, which starts with
    ``initial_pairs``), drawn at random; DeepSeekMath replays 10% of the historical data."""

    rm_steps: int = Field(10, ge=1)
    """Optimizer steps of the reward model per retraining."""

    rm_batch_size: int = Field(8, ge=1)
    """Pairs per reward-model step (drawn at random from the retraining set)."""

    rm_learning_rate: float = Field(1e-5, gt=0)
    """AdamW learning rate of the reward model (its optimizer state is kept across retrainings)."""

    initial_pairs: str | None = None
    """The pairs the reward model was first trained on (a pairs file as for ``grpokit rm``, its default
    ``chosen``/``rejected``/``prompt``/``margin`` columns), put in the replay pool; ``None``: the pool starts
    empty."""
