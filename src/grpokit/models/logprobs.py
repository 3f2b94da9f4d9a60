"""Per-token log-probabilities of sampled completions: the quantity every policy-gradient loss needs.

For a response ``o`` to prompt ``q``, token ``t`` gets

    log pi(o_t | q, o_<t) = z_{t, o_t} / tau - logsumexp_v(z_{t, v} / tau)

where ``z`` are the model's logits and ``tau`` the sampling temperature. The same function computes the
policy, old-policy and reference log-probs, so the importance ratio ``pi_theta / pi_old`` is exactly 1
before the first update (any difference would be a silent off-policy bias).

Details that matter:

1. One forward over ``cat(prompt, completion[:, :-1])``: the last completion token is never an input.
2. Prompts are left-padded, so ``position_ids = cumsum(mask) - 1``: a prompt's log-probs then do not
   depend on how much padding other rows of the batch forced on it (batch invariance).
3. Logits are computed only for the T positions that predict completion tokens (``logits_to_keep``).
4. The log-softmax is never materialised: ``gather - logsumexp`` over chunks of positions, so the
   float32 (N, T, V) tensor exists at most one chunk at a time (without grad; with grad, autograd keeps
   what backward needs, which is the logits themselves when ``temperature == 1`` in float32).
"""

from __future__ import annotations

from typing import Any

import torch

# Elements (positions x vocabulary) per float32 chunk: 2**24 floats = 64 MiB.
_CHUNK_ELEMENTS = 2**24


def _temperature_column(temperature: float | torch.Tensor, N: int, device: torch.device) -> torch.Tensor:
    """(N, 1) float32 temperatures, validated."""
    tau = torch.as_tensor(temperature, dtype=torch.float32, device=device)
    if tau.ndim == 0:
        tau = tau.expand(N)
    if tau.shape != (N,):
        raise ValueError(f"temperature must be a float or a tensor of shape ({N},), got shape {tuple(tau.shape)}")
    if not bool((tau > 0).all()):
        raise ValueError("temperature must be > 0 (greedy decoding has no log-probs to correct for)")
    return tau[:, None]


def _check_inputs(
    prompt_ids: torch.Tensor,
    prompt_mask: torch.Tensor,
    completion_ids: torch.Tensor,
    completion_mask: torch.Tensor,
) -> None:
    if prompt_ids.ndim != 2 or completion_ids.ndim != 2:
        raise ValueError(
            f"prompt_ids and completion_ids must be 2-D (N, P) / (N, T), got shapes "
            f"{tuple(prompt_ids.shape)} and {tuple(completion_ids.shape)}"
        )
    if prompt_mask.shape != prompt_ids.shape:
        raise ValueError(f"prompt_mask shape {tuple(prompt_mask.shape)} != prompt_ids shape {tuple(prompt_ids.shape)}")
    if completion_mask.shape != completion_ids.shape:
        raise ValueError(
            f"completion_mask shape {tuple(completion_mask.shape)} != completion_ids shape "
            f"{tuple(completion_ids.shape)}"
        )
    if prompt_ids.shape[0] != completion_ids.shape[0]:
        raise ValueError(
            f"prompt_ids has {prompt_ids.shape[0]} rows but completion_ids has {completion_ids.shape[0]}"
        )
    if completion_ids.shape[1] == 0:
        raise ValueError("completion_ids has no tokens (T = 0)")


def compute_logits_for_completion(
    model: Any,
    prompt_ids: torch.Tensor,
    prompt_mask: torch.Tensor,
    completion_ids: torch.Tensor,
    completion_mask: torch.Tensor,
    *,
    temperature: float | torch.Tensor = 1.0,
) -> torch.Tensor:
    """Logits that predict each completion token, divided by the temperature.

    Args:
        model: a causal LM (transformers ``PreTrainedModel``, or a PEFT/DDP wrapper of one).
        prompt_ids: (N, P) left-padded prompt tokens.
        prompt_mask: (N, P) 1 on real prompt tokens.
        completion_ids: (N, T) right-padded completion tokens.
        completion_mask: (N, T) 1 on real completion tokens.
        temperature: a float, or (N,) per-row temperatures.

    Returns:
        (N, T, V) logits in the model's dtype (float32 when dividing by a temperature other than 1);
        row ``t`` is the distribution of ``completion_ids[:, t]``.
    """
    _check_inputs(prompt_ids, prompt_mask, completion_ids, completion_mask)
    N, T = completion_ids.shape
    # Position t-1 predicts token t, so the last completion token is never fed.
    input_ids = torch.cat([prompt_ids, completion_ids[:, :-1]], dim=1)  # (N, P+T-1)
    attention_mask = torch.cat([prompt_mask.long(), completion_mask[:, :-1].long()], dim=1)  # (N, P+T-1)
    # Left padding: the first real token is position 0 whatever the row's padding.
    position_ids = (attention_mask.cumsum(dim=1) - 1).clamp(min=0)  # (N, P+T-1)
    output = model(
        input_ids=input_ids,
        attention_mask=attention_mask,
        position_ids=position_ids,
        use_cache=False,
        logits_to_keep=T,
    )
    logits = output.logits  # (N, T, V)
    if isinstance(temperature, (int, float)) and temperature == 1.0:
        return logits
    return logits.float() / _temperature_column(temperature, N, logits.device)[:, :, None]


def completion_logprobs(
    model: Any,
    prompt_ids: torch.Tensor,
    prompt_mask: torch.Tensor,
    completion_ids: torch.Tensor,
    completion_mask: torch.Tensor,
    *,
    temperature: float | torch.Tensor = 1.0,
    return_entropy: bool = False,
    chunk_size: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Log-probabilities (and optionally entropies) of the completion tokens under ``model``.

    ``logp[n, t] = z[n, t, o_t] / tau_n - logsumexp_v(z[n, t, v] / tau_n)`` and
    ``H[n, t] = logsumexp_v(z / tau_n) - sum_v softmax(z / tau_n)_v * z_v / tau_n``,
    with masked positions set to 0. Differentiable: use it under ``torch.no_grad()`` for the
    old-policy and reference log-probs.

    Args:
        model: a causal LM (transformers ``PreTrainedModel``, or a PEFT/DDP wrapper of one).
        prompt_ids: (N, P) long, left-padded prompt tokens.
        prompt_mask: (N, P) 1 on real prompt tokens.
        completion_ids: (N, T) long, right-padded completion tokens.
        completion_mask: (N, T) 1 on real completion tokens (EOS included).
        temperature: sampling temperature, a float or (N,) per-row values; must match the sampler's
            so that the ratio to the sampling policy is 1 on-policy.
        return_entropy: also return the per-token entropy of the temperature-scaled distribution, detached
            (for logging; an entropy bonus needs the logits, :func:`compute_logits_for_completion`).
        chunk_size: token positions per float32 log-softmax chunk; default keeps a chunk near 64 MiB.

    Returns:
        ``(logprobs, entropy)``: (N, T) float32 each; ``entropy`` is None unless ``return_entropy``.
    """
    N, T = completion_ids.shape
    logits = compute_logits_for_completion(
        model, prompt_ids, prompt_mask, completion_ids, completion_mask, temperature=1.0
    )  # (N, T, V)
    V = logits.shape[-1]
    tau = _temperature_column(temperature, N, logits.device)  # (N, 1)
    scale = (1.0 / tau).expand(N, T).reshape(N * T, 1)  # (N*T, 1)
    flat_logits = logits.reshape(N * T, V)  # (N*T, V)
    flat_ids = completion_ids.reshape(N * T, 1)  # (N*T, 1)
    if chunk_size is None:
        chunk_size = max(1, _CHUNK_ELEMENTS // V)
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    unit_temperature = bool((tau == 1.0).all())

    logprob_chunks, entropy_chunks = [], []
    for start in range(0, N * T, chunk_size):
        z = flat_logits[start : start + chunk_size].float()  # (C, V)
        if not unit_temperature:
            z = z * scale[start : start + chunk_size]
        log_norm = torch.logsumexp(z, dim=-1)  # (C,)
        picked = z.gather(-1, flat_ids[start : start + chunk_size]).squeeze(-1)  # (C,)
        logprob_chunks.append(picked - log_norm)
        if return_entropy:
            # A measurement, not a loss term: without grad, so autograd keeps no (C, V) softmax for it.
            with torch.no_grad():
                probs = torch.softmax(z, dim=-1)  # (C, V)
                entropy_chunks.append(log_norm - (probs * z).sum(dim=-1))
    mask = completion_mask.bool()
    zero = torch.zeros((), dtype=torch.float32, device=logits.device)
    logprobs = torch.where(mask, torch.cat(logprob_chunks).view(N, T), zero)  # (N, T)
    entropy = torch.where(mask, torch.cat(entropy_chunks).view(N, T), zero) if return_entropy else None
    return logprobs, entropy
