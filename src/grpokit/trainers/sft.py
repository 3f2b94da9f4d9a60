"""Supervised warm-up: maximise the log-likelihood of demonstration completions given their prompts.

    L(theta) = - 1/|D| sum_{(x, y) in D} 1/|y| sum_t log pi_theta(y_t | x, y_<t)

Prompts are encoded exactly as the sampler encodes them (:func:`grpokit.rollout.encode_prompts`) and every
completion ends with EOS, so the warmed-up policy has seen the same token layout it will generate in. The
loss uses :func:`grpokit.models.logprobs.completion_logprobs`, the function GRPO uses for its ratios.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

__all__ = ["supervised_finetune"]


def _pad(rows: list[list[int]], pad_id: int, left: bool) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros(len(rows), width, dtype=torch.long)
    for i, r in enumerate(rows):
        span = slice(width - len(r), width) if left else slice(0, len(r))
        ids[i, span] = torch.tensor(r, dtype=torch.long)
        mask[i, span] = 1
    return ids, mask


def supervised_finetune(
    model: torch.nn.Module,
    tokenizer: Any,
    examples: Sequence[tuple[Any, str]],
    *,
    steps: int,
    learning_rate: float,
    batch_size: int,
    seed: int = 0,
    weight_decay: float = 0.0,
    max_grad_norm: float = 1.0,
) -> list[float]:
    """Train ``model`` in place on ``(prompt, completion)`` pairs for ``steps`` AdamW steps.

    Batches are drawn uniformly at random (seeded); the learning rate decays linearly to 0.

    Returns:
        The loss (mean negative log-likelihood per completion token, sequence-averaged) of every step.
    """
    from grpokit.models.logprobs import completion_logprobs
    from grpokit.rollout import encode_prompts

    if not examples:
        raise ValueError("supervised_finetune needs at least one (prompt, completion) example")
    if steps < 0 or batch_size < 1:
        raise ValueError(f"steps must be >= 0 and batch_size >= 1, got {steps}, {batch_size}")
    eos = tokenizer.eos_token_id
    pad = tokenizer.pad_token_id
    prompt_ids = encode_prompts(tokenizer, [p for p, _ in examples])
    completion_ids = [tokenizer(c, add_special_tokens=False)["input_ids"] + [eos] for _, c in examples]
    device = next(model.parameters()).device
    optimizer = torch.optim.AdamW(model.parameters(), lr=learning_rate, weight_decay=weight_decay)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 1.0 - s / max(steps, 1))
    generator = torch.Generator().manual_seed(seed)
    model.eval()  # no dropout, as in the RL phase
    losses = []
    for _ in range(steps):
        rows = torch.randint(len(examples), (batch_size,), generator=generator).tolist()
        p_ids, p_mask = _pad([prompt_ids[i] for i in rows], pad, left=True)  # (b, P) each
        c_ids, c_mask = _pad([completion_ids[i] for i in rows], pad, left=False)  # (b, T) each
        logprobs, _ = completion_logprobs(
            model, p_ids.to(device), p_mask.to(device), c_ids.to(device), c_mask.to(device)
        )  # (b, T)
        c_mask = c_mask.to(device).float()
        loss = -((logprobs * c_mask).sum(1) / c_mask.sum(1)).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), max_grad_norm)
        optimizer.step()
        schedule.step()
        losses.append(loss.item())
    return losses
