"""Model steppers for the sampler: prefill the B prompts once, then one token per call for N = B*G rows.

A decoder owns the KV cache of one ``generate`` call. Its contract:

- ``prefill(prompt_ids (B, P), prompt_mask (B, P), G, max_new_tokens) -> (N, V)`` runs the prompts
  once and returns the logits of each row's first completion token; the cache is then expanded to the
  G samples of each prompt (``repeat_interleave``) instead of prefilling B*G identical rows;
- ``step(tokens (N,)) -> (N, V)`` feeds the tokens just sampled and returns the next logits.

Positions follow the left padding: ``position = cumsum(mask) - 1``, so a row's numbers do not depend on
the padding the other rows forced on it.
"""

from __future__ import annotations

from typing import Any

import torch


class HFDecoder:
    """Decodes with the model's own ``forward`` and a transformers ``DynamicCache``.

    Works for any causal LM in transformers (and PEFT wrappers), at the cost of the per-layer Python
    overhead of the modelling code.
    """

    def __init__(self, model: Any):
        self.model = model

    def prefill(
        self, prompt_ids: torch.Tensor, prompt_mask: torch.Tensor, num_generations: int, max_new_tokens: int
    ) -> torch.Tensor:
        from transformers import DynamicCache

        B, P = prompt_ids.shape
        G = num_generations
        position_ids = (prompt_mask.cumsum(dim=1) - 1).clamp(min=0)  # (B, P)
        self.cache = DynamicCache(config=self.model.config)
        output = self.model(
            input_ids=prompt_ids,
            attention_mask=prompt_mask,
            position_ids=position_ids,
            past_key_values=self.cache,
            use_cache=True,
            logits_to_keep=1,
        )
        self.cache.batch_repeat_interleave(G)  # (B, ...) -> (B*G, ...), group by group
        # One mask for the whole call, sliced per step: prompt part, then all ones for the completion
        # (finished rows keep attending to their pad inputs, which only they can see).
        self.attention_mask = torch.ones(B * G, P + max_new_tokens, dtype=prompt_mask.dtype, device=prompt_ids.device)
        self.attention_mask[:, :P] = prompt_mask.repeat_interleave(G, dim=0)
        self.next_position = position_ids[:, -1:].repeat_interleave(G, dim=0) + 1  # (N, 1)
        self.length = P
        return output.logits[:, -1].repeat_interleave(G, dim=0)  # (N, V)

    def step(self, tokens: torch.Tensor) -> torch.Tensor:
        self.length += 1
        output = self.model(
            input_ids=tokens[:, None],  # (N, 1)
            attention_mask=self.attention_mask[:, : self.length],  # (N, P + t + 1)
            position_ids=self.next_position,  # (N, 1)
            past_key_values=self.cache,
            use_cache=True,
        )
        self.next_position = self.next_position + 1
        return output.logits[:, -1]  # (N, V)


# Llama-family decoder layers that share one block: RMSNorm -> attention with RoPE (GQA) -> residual ->
# RMSNorm -> SwiGLU MLP -> residual. Qwen3 adds an RMSNorm on each query/key head before RoPE.
FAST_MODEL_TYPES: tuple[str, ...] = ("llama", "qwen2", "qwen3", "mistral")
# RoPE types whose angles depend on the position only (not on the current sequence length), so one
# cos/sin table serves the whole call.
_STATIC_ROPE_TYPES: tuple[str, ...] = ("default", "linear", "llama3", "yarn")


def fast_decoder_unsupported_reason(model: Any, total_length: int) -> str | None:
    """Why :class:`FastLlamaDecoder` cannot decode ``model`` exactly, or None when it can.

    It needs a plain (not PEFT-wrapped) Llama-family model: SiLU MLP, plain ``nn.Linear`` projections,
    no sliding window within ``total_length`` tokens, and a position-only RoPE.
    """
    config = getattr(model, "config", None)
    model_type = getattr(config, "model_type", None)
    if model_type not in FAST_MODEL_TYPES:
        return f"model_type {model_type!r} is not one of {FAST_MODEL_TYPES}"
    base = getattr(model, "model", None)
    if base is None or not hasattr(base, "layers") or not isinstance(getattr(model, "lm_head", None), torch.nn.Linear):
        return f"{type(model).__name__} is not a plain *ForCausalLM (wrapped by PEFT or another library?)"
    if getattr(config, "hidden_act", None) != "silu":
        return f"hidden_act {config.hidden_act!r} is not 'silu'"
    rope_type = getattr(base.rotary_emb, "rope_type", "default")
    if rope_type not in _STATIC_ROPE_TYPES:
        return f"rope_type {rope_type!r} depends on the sequence length"
    for layer in base.layers:
        attention, mlp = layer.self_attn, layer.mlp
        projections = [attention.q_proj, attention.k_proj, attention.v_proj, attention.o_proj,
                       mlp.gate_proj, mlp.up_proj, mlp.down_proj]
        if any(type(p) is not torch.nn.Linear for p in projections):
            return "a projection is not a plain nn.Linear (LoRA or quantised layers)"
        window = getattr(attention, "sliding_window", None)
        if window is not None and window < total_length:
            return f"sliding window {window} < {total_length} tokens"
    return None


def _rms_norm(x: torch.Tensor, norm: Any) -> torch.Tensor:
    """Llama RMSNorm as transformers computes it (float32 inside, weight applied in x's dtype)."""
    if x.dtype == torch.float32:
        # One fused kernel; the same math as below up to float32 rounding.
        return torch.nn.functional.rms_norm(x, norm.weight.shape, norm.weight, norm.variance_epsilon)
    x32 = x.float()
    x32 = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + norm.variance_epsilon)
    return norm.weight * x32.to(x.dtype)


def _rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """RoPE with the rotate-half convention: x * cos + rotate_half(x) * sin."""
    half = x.shape[-1] // 2
    rotated = torch.cat((-x[..., half:], x[..., :half]), dim=-1)
    return x * cos + rotated * sin


def _linear_residual(residual: torch.Tensor, x: torch.Tensor, linear: torch.nn.Linear) -> torch.Tensor:
    """``residual + linear(x)`` in one addmm call."""
    out = torch.addmm(residual, x, linear.weight.t())
    return out if linear.bias is None else out + linear.bias


class FastLlamaDecoder:
    """A decode step for Llama-family models without the transformers per-layer machinery.

    The prompt is prefilled by the model's own ``forward`` (so prompt keys/values are transformers'
    own); each new token then runs a lean re-implementation of the same layer math on the model's own
    modules and weights: a preallocated KV cache written in place (no ``torch.cat`` of the whole cache
    per token), one cos/sin table for the call, one additive padding mask sliced per step, attention as
    ``baddbmm -> softmax -> bmm`` (one query per row needs no flash kernel), residual adds fused into
    ``addmm``. Outputs agree with the model's ``forward`` to float32 rounding (the tests check
    log-probs to 1e-5 and greedy tokens exactly, for Llama, Qwen2 and Qwen3).

    KV cache: ``keys[i]`` and ``values[i]`` are (N, H_kv, P + max_new_tokens, D) for layer i.
    """

    def __init__(self, model: Any):
        self.model = model
        config = model.config
        attention = model.model.layers[0].self_attn
        self.num_heads = config.num_attention_heads
        self.num_kv_heads = config.num_key_value_heads
        self.head_dim = attention.head_dim
        self.scaling = attention.scaling

    def prefill(
        self, prompt_ids: torch.Tensor, prompt_mask: torch.Tensor, num_generations: int, max_new_tokens: int
    ) -> torch.Tensor:
        from transformers import DynamicCache

        B, P = prompt_ids.shape
        G = num_generations
        N, L = B * G, P + max_new_tokens
        H_kv, D, R = self.num_kv_heads, self.head_dim, self.num_heads // self.num_kv_heads
        device = prompt_ids.device
        position_ids = (prompt_mask.cumsum(dim=1) - 1).clamp(min=0)  # (B, P)
        cache = DynamicCache(config=self.model.config)
        output = self.model(
            input_ids=prompt_ids,
            attention_mask=prompt_mask,
            position_ids=position_ids,
            past_key_values=cache,
            use_cache=True,
            logits_to_keep=1,
        )
        dtype = self.model.model.embed_tokens.weight.dtype
        self.keys, self.values = [], []
        for layer in cache.layers:
            keys = torch.empty(N, H_kv, L, D, dtype=dtype, device=device)
            values = torch.empty_like(keys)
            # Each prompt's cache is copied to its G rows (no B*G prefill).
            keys.view(B, G, H_kv, L, D)[:, :, :, :P] = layer.keys[:, None]
            values.view(B, G, H_kv, L, D)[:, :, :, :P] = layer.values[:, None]
            self.keys.append(keys)
            self.values.append(values)
        # Additive mask over the cache columns, -inf on prompt padding, already laid out as the
        # (N * H_kv, R, L) batch of baddbmm so that each step only slices it.
        mask = torch.zeros(N, 1, 1, L, dtype=dtype, device=device)
        mask[:, 0, 0, :P].masked_fill_(prompt_mask.repeat_interleave(G, dim=0) == 0, float("-inf"))
        self.mask = mask.expand(N, H_kv, R, L).reshape(N * H_kv, R, L)
        # cos/sin for every position this call can reach, from the model's own rotary module.
        positions = torch.arange(L, device=device)[None]  # (1, L)
        cos, sin = self.model.model.rotary_emb(self.keys[0], positions)  # (1, L, D) each
        self.cos, self.sin = cos[0], sin[0]  # (L, D)
        self.next_position = position_ids[:, -1].repeat_interleave(G) + 1  # (N,)
        self.length = P
        return output.logits[:, -1].repeat_interleave(G, dim=0)  # (N, V)

    def step(self, tokens: torch.Tensor) -> torch.Tensor:
        base = self.model.model
        N = tokens.shape[0]
        H, H_kv, D = self.num_heads, self.num_kv_heads, self.head_dim
        R = H // H_kv  # query heads per key/value head; query head h reads kv head h // R (repeat_kv)
        column = self.length
        self.length += 1
        L = self.length
        cos = self.cos[self.next_position][:, None]  # (N, 1, D)
        sin = self.sin[self.next_position][:, None]  # (N, 1, D)
        mask = self.mask[:, :, :L]  # (N H_kv, R, L)
        x = base.embed_tokens(tokens)  # (N, C)
        for i, layer in enumerate(base.layers):
            attention, mlp = layer.self_attn, layer.mlp
            h = _rms_norm(x, layer.input_layernorm)
            q = attention.q_proj(h).view(N, H, D)
            k = attention.k_proj(h).view(N, H_kv, D)
            v = attention.v_proj(h).view(N, H_kv, D)
            if hasattr(attention, "q_norm"):  # Qwen3: RMSNorm per head before RoPE
                q, k = attention.q_norm(q), attention.k_norm(k)
            q, k = _rotate(q, cos, sin), _rotate(k, cos, sin)  # (N, H, D), (N, H_kv, D)
            keys, values = self.keys[i], self.values[i]
            keys[:, :, column] = k
            values[:, :, column] = v
            scores = torch.baddbmm(
                mask,
                q.view(N * H_kv, R, D),
                keys[:, :, :L].reshape(N * H_kv, L, D).transpose(1, 2),
                alpha=self.scaling,
            )  # (N H_kv, R, L)
            probs = torch.softmax(scores, dim=-1, dtype=torch.float32).to(q.dtype)
            attended = torch.bmm(probs, values[:, :, :L].reshape(N * H_kv, L, D))  # (N H_kv, R, D)
            x = _linear_residual(x, attended.view(N, H * D), attention.o_proj)
            h = _rms_norm(x, layer.post_attention_layernorm)
            x = _linear_residual(x, torch.nn.functional.silu(mlp.gate_proj(h)) * mlp.up_proj(h), mlp.down_proj)
        x = _rms_norm(x, base.norm)
        self.next_position = self.next_position + 1
        return self.model.lm_head(x)  # (N, V)
