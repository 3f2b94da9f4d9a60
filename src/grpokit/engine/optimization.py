"""The optimizer and learning-rate schedule of the LLM trainers (AdamW, warmup then decay)."""

from __future__ import annotations

import math

import torch

from grpokit.config import OptimConfig

__all__ = ["build_optimizer", "build_scheduler"]


def build_optimizer(model: torch.nn.Module, optim: OptimConfig) -> torch.optim.Optimizer:
    """AdamW over the trainable parameters (LoRA-wrapped models train only their adapters).

    The fused kernel (one pass over each tensor instead of a dozen element-wise ops) where torch has it:
    floating-point parameters on CPU or CUDA; 3x faster than the default for-loop on CPU.
    """
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError("the policy has no trainable parameters")
    fused = all(p.is_floating_point() and p.device.type in ("cpu", "cuda") for p in params)
    return torch.optim.AdamW(
        params,
        lr=optim.learning_rate,
        betas=(optim.adam_beta1, optim.adam_beta2),
        eps=optim.adam_epsilon,
        weight_decay=optim.weight_decay,
        fused=fused or None,
    )


def build_scheduler(
    optimizer: torch.optim.Optimizer, optim: OptimConfig, total_steps: int
) -> torch.optim.lr_scheduler.LRScheduler:
    """Linear warmup then constant/linear/cosine decay, stepped once per training step."""
    from transformers import get_scheduler

    warmup = optim.warmup_steps or math.ceil(optim.warmup_ratio * total_steps)
    name = "constant_with_warmup" if optim.lr_scheduler == "constant" else optim.lr_scheduler
    return get_scheduler(name, optimizer, num_warmup_steps=warmup, num_training_steps=total_steps)
