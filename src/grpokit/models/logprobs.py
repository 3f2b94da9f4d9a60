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
   float32 (N, T, V) tensor exists at most one chunk at a time.
5. When the (N*T, V) logits would not fit in one chunk (a large vocabulary: 150k for Qwen2.5) and the
   model is a plain Llama-family causal LM, the logits are not materialised at all, with or without grad:
   the LM head runs chunk by chunk on the backbone's hidden states and backward recomputes each chunk's
   logits from the saved hidden states and log-normalisers (:class:`_HeadLogprobs`, the fused
   linear-cross-entropy idea of Liger-Kernel and TRL's fused LM head). Memory for the head drops from
   N*T*V to N*T*(C + 2) numbers, for one more head matmul in backward.
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


# Model types whose logits are exactly ``lm_head(model.model(...).last_hidden_state)``: no logit scaling or
# soft-capping between the backbone and the head.
_PLAIN_HEAD_MODEL_TYPES: tuple[str, ...] = ("llama", "qwen2", "qwen3", "mistral")


def _plain_head(model: Any) -> tuple[Any, torch.nn.Linear] | None:
    """``(backbone, lm_head)`` of a plain Llama-family causal LM (PEFT-wrapped or not), else None.

    DDP / DeepSpeed wrappers return None: their own ``forward`` must run for gradient synchronisation.
    """
    inner = model.get_base_model() if hasattr(model, "get_base_model") else model  # PEFT
    config = getattr(inner, "config", None)
    backbone, head = getattr(inner, "model", None), getattr(inner, "lm_head", None)
    if getattr(config, "model_type", None) not in _PLAIN_HEAD_MODEL_TYPES or backbone is None:
        return None
    if type(head) is not torch.nn.Linear or head.bias is not None:
        return None
    return backbone, head


class _HeadLogprobs(torch.autograd.Function):
    """``log softmax(h W^T * s)[o]`` chunk by chunk over positions, logits recomputed in backward.

    Forward, for each chunk of positions: ``z = (h W^T) * s`` in float32, ``lse = logsumexp(z)``,
    ``logp = z[o] - lse`` and (detached) ``H = lse - sum softmax(z) * z``. Saved for backward: ``h``, ``lse``.
    Backward: ``dlogp/dz = onehot(o) - softmax(z)``, so ``dz = g * (onehot(o) - exp(z - lse)) * s``, then
    ``dh = dz W`` and ``dW = dz^T h``.

    Shapes: hidden (M, C) with M = N*T positions, weight (V, C), ids (M,), scale (M, 1); outputs (M,) each.
    Matmuls run in ``dtype`` (the autocast dtype, or the weight's), log-softmax maths in float32.
    """

    @staticmethod
    def forward(ctx, hidden, weight, ids, scale, chunk_size, dtype, want_entropy):
        M = hidden.shape[0]
        w = weight.to(dtype)
        logprobs = torch.empty(M, dtype=torch.float32, device=hidden.device)
        lse = torch.empty_like(logprobs)
        entropy = torch.empty_like(logprobs) if want_entropy else None
        for start in range(0, M, chunk_size):
            rows = slice(start, start + chunk_size)
            z = torch.mm(hidden[rows].to(dtype), w.t()).float() * scale[rows]  # (c, V)
            lse[rows] = torch.logsumexp(z, dim=-1)
            logprobs[rows] = z.gather(-1, ids[rows, None]).squeeze(-1) - lse[rows]
            if entropy is not None:
                entropy[rows] = lse[rows] - (torch.exp(z - lse[rows, None]) * z).sum(-1)
        ctx.save_for_backward(hidden, weight, ids, scale, lse)
        ctx.chunk_size, ctx.dtype = chunk_size, dtype
        if entropy is not None:
            ctx.mark_non_differentiable(entropy)
        return logprobs, entropy

    @staticmethod
    def backward(ctx, grad_logprobs, grad_entropy):
        hidden, weight, ids, scale, lse = ctx.saved_tensors
        w = weight.to(ctx.dtype)
        need_hidden, need_weight = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        grad_hidden = torch.empty_like(hidden) if need_hidden else None
        grad_weight = torch.zeros(weight.shape, dtype=torch.float32, device=weight.device) if need_weight else None
        for start in range(0, hidden.shape[0], ctx.chunk_size):
            rows = slice(start, start + ctx.chunk_size)
            h = hidden[rows].to(ctx.dtype)  # (c, C)
            z = torch.mm(h, w.t()).float() * scale[rows]  # (c, V), recomputed
            g = grad_logprobs[rows, None]  # (c, 1)
            dz = torch.exp(z - lse[rows, None]).mul_(-g)  # -g * softmax(z)
            dz.scatter_add_(-1, ids[rows, None], g)  # + g * onehot(o)
            dz = dz.mul_(scale[rows]).to(ctx.dtype)  # through z = logits * s: (c, V)
            if grad_hidden is not None:
                grad_hidden[rows] = torch.mm(dz, w).to(hidden.dtype)
            if grad_weight is not None:
                grad_weight += torch.mm(dz.t(), h).float()
        if grad_weight is not None:
            grad_weight = grad_weight.to(weight.dtype)
        return grad_hidden, grad_weight, None, None, None, None, None


def _fused_head_logprobs(
    model: Any,
    parts: tuple[Any, torch.nn.Linear],
    prompt_ids: torch.Tensor,
    prompt_mask: torch.Tensor,
    completion_ids: torch.Tensor,
    completion_mask: torch.Tensor,
    scale: torch.Tensor,
    chunk_size: int,
    return_entropy: bool,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(N*T,) log-probs (and detached entropies) through the backbone and :class:`_HeadLogprobs`."""
    backbone, head = parts
    N, T = completion_ids.shape
    input_ids = torch.cat([prompt_ids, completion_ids[:, :-1]], dim=1)  # (N, P+T-1)
    attention_mask = torch.cat([prompt_mask.long(), completion_mask[:, :-1].long()], dim=1)  # (N, P+T-1)
    position_ids = (attention_mask.cumsum(dim=1) - 1).clamp(min=0)  # (N, P+T-1)
    # Mixed precision (grpokit.models.precision) wraps the model's forward; the backbone is called directly.
    device_type, autocast_dtype = getattr(model, "grpokit_autocast", (input_ids.device.type, None))
    with torch.autocast(device_type, dtype=autocast_dtype, enabled=autocast_dtype is not None):
        hidden = backbone(
            input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids, use_cache=False
        ).last_hidden_state[:, -T:]  # (N, T, C)
    dtype = autocast_dtype or head.weight.dtype
    return _HeadLogprobs.apply(
        hidden.reshape(N * T, -1), head.weight, completion_ids.reshape(N * T), scale, chunk_size, dtype, return_entropy
    )


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
    if chunk_size is not None and chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    parts = _plain_head(model)
    if parts is not None:
        V = parts[1].out_features
        chunk = chunk_size or max(1, _CHUNK_ELEMENTS // V)
        if chunk < N * T:  # the logits would not fit in one chunk: never materialise them (note 5)
            _check_inputs(prompt_ids, prompt_mask, completion_ids, completion_mask)
            tau = _temperature_column(temperature, N, completion_ids.device)  # (N, 1)
            scale = (1.0 / tau).expand(N, T).reshape(N * T, 1)  # (N*T, 1)
            flat_logprobs, flat_entropy = _fused_head_logprobs(
                model, parts, prompt_ids, prompt_mask, completion_ids, completion_mask, scale, chunk, return_entropy
            )  # (N*T,) each
            return _masked(flat_logprobs, flat_entropy, completion_mask)
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
    return _masked(torch.cat(logprob_chunks), torch.cat(entropy_chunks) if return_entropy else None, completion_mask)


def _masked(
    flat_logprobs: torch.Tensor, flat_entropy: torch.Tensor | None, completion_mask: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(N*T,) values -> (N, T), zero on masked positions."""
    mask = completion_mask.bool()  # (N, T)
    zero = torch.zeros((), dtype=torch.float32, device=mask.device)
    logprobs = torch.where(mask, flat_logprobs.view(mask.shape), zero)  # (N, T)
    entropy = None if flat_entropy is None else torch.where(mask, flat_entropy.view(mask.shape), zero)
    return logprobs, entropy
