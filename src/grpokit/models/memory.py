"""Memory options for the policy update: activation (gradient) checkpointing.

Backward needs the activations the forward produced; for a causal LM they grow as layers x N x (P + T) x
hidden and dominate the update's memory. Activation checkpointing (Chen et al., 2016, arXiv 1604.06174)
keeps only each decoder layer's input and recomputes the layer's inside during backward: activation
memory drops to about one layer's worth, for one extra forward of the layers (about a third more
compute in the update).

Why not transformers' own ``gradient_checkpointing_enable``: it only checkpoints in training mode, and
grpokit's update runs the policy in eval mode (no dropout, so the ratio is exactly 1 before the first
step). The wrapper here checkpoints whenever autograd records, whatever the mode, and never otherwise
(generation and reference passes run under ``no_grad`` and pay nothing).
"""

from __future__ import annotations

import types
from typing import Any

import torch
from torch.utils.checkpoint import checkpoint

__all__ = ["decoder_layers", "enable_gradient_checkpointing"]


def decoder_layers(model: torch.nn.Module) -> list[torch.nn.Module]:
    """The transformer blocks of ``model`` (any transformers causal LM, PEFT-wrapped or not), in order.

    A block is a module transformers marks as checkpointable (``GradientCheckpointingLayer``).
    """
    from transformers.modeling_layers import GradientCheckpointingLayer

    return [module for module in model.modules() if isinstance(module, GradientCheckpointingLayer)]


def _checkpointed_forward(self: torch.nn.Module, *args: Any, **kwargs: Any) -> Any:
    forward = type(self).forward
    if not torch.is_grad_enabled():
        return forward(self, *args, **kwargs)
    # Non-reentrant checkpointing: keyword arguments are supported, and the inputs need not require grad.
    return checkpoint(forward, self, *args, use_reentrant=False, **kwargs)


def enable_gradient_checkpointing(model: torch.nn.Module) -> int:
    """Recompute each decoder layer of ``model`` in backward instead of storing its activations.

    The layers' outputs and gradients are unchanged (the recomputation runs the same ops on the same
    inputs); only memory and time change. Idempotent. The wrapper is an instance attribute bound to its
    layer, so ``copy.deepcopy(model)`` (the reference policy) gets a correctly bound copy.

    Returns:
        The number of layers wrapped.

    Raises:
        ValueError: the model has no transformers decoder layers to checkpoint.
    """
    layers = decoder_layers(model)
    if not layers:
        raise ValueError(
            f"gradient checkpointing: {type(model).__name__} has no transformers decoder layers "
            "(GradientCheckpointingLayer) to checkpoint"
        )
    for layer in layers:
        layer.forward = types.MethodType(_checkpointed_forward, layer)
    return len(layers)
