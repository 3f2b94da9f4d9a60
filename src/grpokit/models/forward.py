"""Forward passes of a causal LM over a batch of sampled completions: model inputs of some rows, log-probs
with gradient for the update, and micro-batched no-grad passes (pi_old, pi_ref, values)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol, TypedDict

import torch

__all__ = ["ModelInputs", "TokenBatch", "batch_to", "per_token_no_grad", "policy_forward", "sequence_logprobs"]


class TokenBatch(Protocol):
    """What the passes read of a rollout batch (``grpokit.rollout.RolloutBatch`` has it): left-padded prompts,
    right-padded completions, each row's sampling temperature. Shapes (N, P), (N, T), (N,)."""

    prompt_ids: torch.Tensor
    prompt_mask: torch.Tensor
    completion_ids: torch.Tensor
    completion_mask: torch.Tensor
    temperatures: torch.Tensor


class ModelInputs(TypedDict):
    """The keyword arguments of the log-prob and value passes for n rows: (n, P') and (n, T') each."""

    prompt_ids: torch.Tensor
    prompt_mask: torch.Tensor
    completion_ids: torch.Tensor
    completion_mask: torch.Tensor


def batch_to(batch: TokenBatch, rows: torch.Tensor, device: torch.device) -> ModelInputs:
    """Model inputs of ``rows``, trimmed to their longest prompt and completion (less padding compute)."""
    prompt_mask = batch.prompt_mask[rows]  # (n, P)
    completion_mask = batch.completion_mask[rows]  # (n, T)
    keep_p = int(prompt_mask.sum(1).max())
    keep_t = max(int(completion_mask.sum(1).max()), 1)
    return {
        "prompt_ids": batch.prompt_ids[rows][:, -keep_p:].to(device),
        "prompt_mask": prompt_mask[:, -keep_p:].to(device),
        "completion_ids": batch.completion_ids[rows][:, :keep_t].to(device),
        "completion_mask": completion_mask[:, :keep_t].to(device),
    }


@torch.no_grad()
def per_token_no_grad(
    module: torch.nn.Module,
    batch: TokenBatch,
    micro_batch_size: int,
    forward: Callable[[ModelInputs, torch.Tensor], torch.Tensor],
) -> torch.Tensor:
    """(N, T) float32 ``forward(inputs, rows)`` over the batch, ``micro_batch_size`` rows at a time, in eval
    mode and without gradient; ``forward`` returns (n, T') with T' <= T (the rest stays 0)."""
    was_training = module.training
    module.eval()
    N, T = batch.completion_ids.shape
    out = torch.zeros(N, T)
    device = next(module.parameters()).device
    try:
        for start in range(0, N, micro_batch_size):
            rows = torch.arange(start, min(start + micro_batch_size, N))
            values = forward(batch_to(batch, rows, device), rows)  # (n, T')
            out[rows, : values.shape[1]] = values.float().cpu()
    finally:
        module.train(was_training)
    return out


def sequence_logprobs(model: torch.nn.Module, batch: TokenBatch, micro_batch_size: int) -> torch.Tensor:
    """(N, T) log-probs of the sampled tokens under ``model`` at each row's sampling temperature, no grad.

    Used for pi_old (when num_iterations > 1) and pi_ref; rows are processed ``micro_batch_size`` at a time.
    """
    from grpokit.models.logprobs import completion_logprobs

    device = next(model.parameters()).device

    def forward(inputs: ModelInputs, rows: torch.Tensor) -> torch.Tensor:
        return completion_logprobs(model, **inputs, temperature=batch.temperatures[rows].to(device))[0]

    return per_token_no_grad(model, batch, micro_batch_size, forward)


def policy_forward(
    model: torch.nn.Module,
    inputs: ModelInputs,
    temperature: torch.Tensor,
    *,
    need_logits: bool,
) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
    """Log-probs of the sampled completion tokens, with gradient, for one micro-batch of the update.

    An entropy *bonus* needs the full (n, T, V) distribution in the graph, so ``need_logits`` returns the
    logits and leaves the entropy to the loss; otherwise the entropy is measured alongside (detached
    use only) without keeping the logits for backward.

    Args:
        inputs: :func:`batch_to` of the micro-batch rows.
        temperature: (n,) sampling temperature of each row.
    Returns:
        ``(logprobs, logits, entropy)``: (n, T) float32; (n, T, V) or None; (n, T) or None.
    """
    from grpokit.models.logprobs import completion_logprobs, compute_logits_for_completion

    if need_logits:
        logits = compute_logits_for_completion(model, **inputs, temperature=temperature)  # (n, T, V)
        logprobs = (
            torch.log_softmax(logits.float(), -1)
            .gather(-1, inputs["completion_ids"].unsqueeze(-1))
            .squeeze(-1)
        )  # (n, T)
        return logprobs, logits, None
    logprobs, entropy = completion_logprobs(model, **inputs, temperature=temperature, return_entropy=True)
    return logprobs, None, entropy
