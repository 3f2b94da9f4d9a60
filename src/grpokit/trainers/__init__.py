"""Trainers: the GRPO loop for causal LMs and the machinery PPO shares with it.

``grpokit.trainers.grpo.train(config)`` runs a configured GRPO job (the built-in demo when no model is set).
"""

__all__ = ["GRPOTrainer", "TrainResult", "train"]


def __getattr__(name: str):
    # Lazy: ``import grpokit.trainers`` must not pull in torch/transformers for the CLI's --help.
    if name in __all__:
        from grpokit.trainers import grpo

        return getattr(grpo, name)
    raise AttributeError(f"module 'grpokit.trainers' has no attribute {name!r}")
