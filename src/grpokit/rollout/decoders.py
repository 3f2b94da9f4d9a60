"""Model steppers for the sampler: prefill the B prompts once, then one token per call for N = B*G rows.

A decoder owns the KV cache of one ``generate`` call. Its contract:

- ``prefill(prompt_ids (B, P), prompt_mask (B, P), G, max_new_tokens) -> (N, V)`` runs the prompts
  once and returns the logits of each row's first completion token; the cache is then expanded to the
  G samples of each prompt (``repeat_interleave``) instead of prefilling B*G identical rows;
- ``step(tokens (n,)) -> (n, V)`` feeds the tokens just sampled and returns the next logits;
- ``select(keep (n',))`` keeps only rows ``keep`` (ascending) of the current n rows, in that order: the
  sampler drops finished rows so that compute follows the rows still generating.

Positions follow the left padding: ``position = cumsum(mask) - 1``, so a row's numbers do not depend on
the padding the other rows forced on it.

The KV cache goes to the model's forward under the keyword its transformers version names it:
``cache`` (transformers 5.25 deprecates ``past_key_values`` and warns on every call that uses it) or
``past_key_values`` (older versions); see :func:`cache_keyword`.
"""

from __future__ import annotations

import functools
import inspect
from typing import Any

import torch

CACHE_KEYWORDS: tuple[str, ...] = ("cache", "past_key_values")  # the current name first


def cache_keyword(model: Any) -> str:
    """The keyword under which ``model``'s forward takes its KV cache: ``"cache"`` or ``"past_key_values"``.

    Read from the forward's signature (a PEFT wrapper's from the model it wraps), so that each model gets the
    name its own modelling code declares, whatever the installed transformers version; a forward that
    declares neither (``**kwargs`` only) gets the name transformers' own Llama declares.
    """
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    model_class: Any = type(base)
    return _declared_cache_keyword(model_class) or _transformers_cache_keyword()


@functools.cache
def _declared_cache_keyword(model_class: Any) -> str | None:
    try:
        parameters = inspect.signature(model_class.forward).parameters
    except (AttributeError, TypeError, ValueError):
        return None
    return next((name for name in CACHE_KEYWORDS if name in parameters), None)


@functools.cache
def _transformers_cache_keyword() -> str:
    from transformers import LlamaForCausalLM

    return _declared_cache_keyword(LlamaForCausalLM) or "past_key_values"


class HFDecoder:
    """Decodes with the model's own ``forward`` and a transformers ``DynamicCache``.

    Works for any causal LM in transformers (and PEFT wrappers), at the cost of the per-layer Python
    overhead of the modelling code.
    """

    def __init__(self, model: Any):
        self.model = model
        self.cache_keyword = cache_keyword(model)

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
            use_cache=True,
            logits_to_keep=1,
            **{self.cache_keyword: self.cache},
        )
        self.cache.batch_repeat_interleave(G)  # (B, ...) -> (B*G, ...), group by group
        # One mask for the whole call, sliced per step: prompt part, then all ones for the completion
        # (finished rows keep attending to their pad inputs, which only they can see).
        self.attention_mask = torch.ones(B * G, P + max_new_tokens, dtype=prompt_mask.dtype, device=prompt_ids.device)
        self.attention_mask[:, :P] = prompt_mask.repeat_interleave(G, dim=0)
        self.next_position = position_ids[:, -1:].repeat_interleave(G, dim=0) + 1  # (N, 1)
        self.length = P
        return output.logits[:, -1].repeat_interleave(G, dim=0)  # (N, V)

    def select(self, keep: torch.Tensor) -> None:
        self.cache.batch_select_indices(keep)
        self.attention_mask = self.attention_mask[keep]
        self.next_position = self.next_position[keep]

    def step(self, tokens: torch.Tensor) -> torch.Tensor:
        self.length += 1
        output = self.model(
            input_ids=tokens[:, None],  # (N, 1)
            attention_mask=self.attention_mask[:, : self.length],  # (N, P + t + 1)
            position_ids=self.next_position,  # (N, 1)
            use_cache=True,
            **{self.cache_keyword: self.cache},
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
    hidden_act = getattr(config, "hidden_act", None)
    if hidden_act != "silu":
        return f"hidden_act {hidden_act!r} is not 'silu'"
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


def _rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """Llama RMSNorm as transformers computes it (float32 inside, weight applied in x's dtype)."""
    if x.dtype == torch.float32 and weight.dtype == torch.float32:
        # One fused kernel; the same math as below up to float32 rounding.
        return torch.nn.functional.rms_norm(x, weight.shape, weight, eps)
    x32 = x.float()
    x32 = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + eps)
    return weight * x32.to(x.dtype)


def _packed(weights: list[torch.Tensor], dtype: torch.dtype) -> torch.Tensor:
    """``cat(weights)`` transposed to (in, out) and made contiguous in ``dtype``: the layout whose
    ``x @ W`` runs fastest for a few rows (about 20% less time than ``F.linear``'s (out, in) weight when the
    weights stream from memory, as they do in a decode step)."""
    return torch.cat(weights).t().to(dtype).contiguous()


def _packed_bias(linears: list[torch.nn.Linear], dtype: torch.dtype) -> torch.Tensor | None:
    """The concatenated biases of ``linears`` (zeros for one without), or None when none has one."""
    if all(linear.bias is None for linear in linears):
        return None
    return torch.cat(
        [linear.bias if linear.bias is not None else linear.weight.new_zeros(linear.out_features) for linear in linears]
    ).to(dtype)


def _project(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """``x @ weight (+ bias)`` with ``weight`` packed (in, out), in the weight's dtype."""
    x = x.to(weight.dtype)
    return torch.mm(x, weight) if bias is None else torch.addmm(bias, x, weight)


def _project_residual(
    residual: torch.Tensor, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None
) -> torch.Tensor:
    """``residual + x @ weight (+ bias)``: one ``addmm`` when everything is in the residual's dtype; otherwise
    (autocast) the product stays in the compute dtype and the sum is promoted, as in transformers."""
    if residual.dtype == weight.dtype and bias is None:
        return torch.addmm(residual, x.to(weight.dtype), weight)
    return residual + _project(x, weight, bias)


class _Layer:
    """One decoder layer's weights, packed for the decode step (see :func:`_packed`).

    ``qkv``: (C, (H + 2 H_kv) D), the q, k and v projections side by side; ``gate_up``: (C, 2 I); ``o``:
    (H D, C); ``down``: (I, C); norms in the model's dtype.
    """

    def __init__(self, layer: Any, dtype: torch.dtype):
        attention, mlp = layer.self_attn, layer.mlp
        projections = [attention.q_proj, attention.k_proj, attention.v_proj]
        self.qkv = _packed([p.weight for p in projections], dtype)
        self.qkv_bias = _packed_bias(projections, dtype)
        self.o = _packed([attention.o_proj.weight], dtype)
        self.o_bias = _packed_bias([attention.o_proj], dtype)
        self.gate_up = _packed([mlp.gate_proj.weight, mlp.up_proj.weight], dtype)
        self.gate_up_bias = _packed_bias([mlp.gate_proj, mlp.up_proj], dtype)
        self.down = _packed([mlp.down_proj.weight], dtype)
        self.down_bias = _packed_bias([mlp.down_proj], dtype)
        self.input_norm = layer.input_layernorm.weight
        self.input_eps = layer.input_layernorm.variance_epsilon
        self.post_norm = layer.post_attention_layernorm.weight
        self.post_eps = layer.post_attention_layernorm.variance_epsilon
        # Qwen3: an RMSNorm on each query / key head before RoPE (modules: Llama has none).
        q_norm, k_norm = getattr(attention, "q_norm", None), getattr(attention, "k_norm", None)
        self.qk_norms: tuple[Any, Any] | None = None if q_norm is None else (q_norm, k_norm)


def _prefilled(layer: object) -> tuple[torch.Tensor, torch.Tensor]:
    """The prompt keys and values that the model's forward left in one layer of a ``DynamicCache``."""
    keys, values = getattr(layer, "keys", None), getattr(layer, "values", None)
    if not isinstance(keys, torch.Tensor) or not isinstance(values, torch.Tensor):
        raise TypeError(
            f"the prefill left a {type(layer).__name__} without key/value tensors in the cache; the fast "
            "decoder needs full-attention cache layers"
        )
    return keys, values


def compute_dtype(model: Any, device: torch.device) -> torch.dtype:
    """The dtype the model's matmuls run in here: the autocast dtype when autocast is on, else the weights'."""
    if torch.is_autocast_enabled(device.type):
        return torch.get_autocast_dtype(device.type)
    return model.model.embed_tokens.weight.dtype


class FastLlamaDecoder:
    """A decode step for Llama-family models without the transformers per-layer machinery.

    The prompt is prefilled by the model's own ``forward`` (so prompt keys/values are transformers'
    own); each new token then runs a lean re-implementation of the same layer math on the model's own
    weights, packed once per ``generate`` call (:class:`_Layer`): q/k/v in one matmul and gate/up in
    another, weights transposed to (in, out) in the compute dtype, a preallocated KV cache written in
    place (no ``torch.cat`` of the whole cache per token), one cos/sin table for the call, RoPE on q and
    k together, one additive padding mask sliced per step, attention as ``baddbmm -> softmax -> bmm`` (one
    query per row needs no flash kernel), residual adds fused into ``addmm``. Outputs agree with the
    model's ``forward`` to float32 rounding (the tests check log-probs to 1e-5 and greedy tokens exactly,
    for Llama, Qwen2 and Qwen3).

    Under ``torch.autocast`` the packed weights and the projection matmuls are in the autocast dtype (cast
    once per call instead of once per matmul) while the residual stream, RoPE, the KV cache and attention
    stay in the weights' dtype.

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
        base = self.model.model
        self.device_type = device.type
        self.dtype = compute_dtype(self.model, device)
        # Attention and its cache stay in the weights' dtype: under autocast, bf16 batched matmuls of a new
        # length every step would each JIT a oneDNN kernel (hundreds of MiB of kernel cache) for no speed-up
        # (attention is bound by reading the cache, not by its FLOPs).
        self.kv_dtype = base.embed_tokens.weight.dtype
        position_ids = (prompt_mask.cumsum(dim=1) - 1).clamp(min=0)  # (B, P)
        cache = DynamicCache(config=self.model.config)
        output = self.model(
            input_ids=prompt_ids,
            attention_mask=prompt_mask,
            position_ids=position_ids,
            use_cache=True,
            logits_to_keep=1,
            **{cache_keyword(self.model): cache},
        )
        self.layers = [_Layer(layer, self.dtype) for layer in base.layers]
        self.final_norm, self.final_eps = base.norm.weight, base.norm.variance_epsilon
        self.lm_head = _packed([self.model.lm_head.weight], self.dtype)
        self.lm_head_bias = _packed_bias([self.model.lm_head], self.dtype)
        self.embedding = base.embed_tokens.weight
        self.keys, self.values = [], []
        for layer in cache.layers:
            prompt_keys, prompt_values = _prefilled(layer)  # (B, H_kv, P, D) each
            keys = torch.empty(N, H_kv, L, D, dtype=self.kv_dtype, device=device)
            values = torch.empty_like(keys)
            # Each prompt's cache is copied to its G rows (no B*G prefill).
            keys.view(B, G, H_kv, L, D)[:, :, :, :P] = prompt_keys[:, None]
            values.view(B, G, H_kv, L, D)[:, :, :, :P] = prompt_values[:, None]
            self.keys.append(keys)
            self.values.append(values)
        # Additive mask over the cache columns, -inf on prompt padding, already laid out as the
        # (N * H_kv, R, L) batch of baddbmm so that each step only slices it.
        mask = torch.zeros(N, 1, 1, L, dtype=self.kv_dtype, device=device)
        mask[:, 0, 0, :P].masked_fill_(prompt_mask.repeat_interleave(G, dim=0) == 0, float("-inf"))
        self.mask = mask.expand(N, H_kv, R, L).reshape(N * H_kv, R, L)
        # cos/sin for every position this call can reach, from the model's own rotary module. RoPE's
        # rotate_half(x) * sin equals roll(x, D/2) * sin_signed, one op fewer per step.
        positions = torch.arange(L, device=device)[None]  # (1, L)
        cos, sin = base.rotary_emb(self.embedding, positions)  # (1, L, D) each
        sign = torch.ones(D, dtype=sin.dtype, device=device)
        sign[: D // 2] = -1
        self.cos, self.sin = cos[0], sin[0] * sign  # (L, D) each
        self.next_position = position_ids[:, -1].repeat_interleave(G) + 1  # (N,)
        self.length = P
        return output.logits[:, -1].repeat_interleave(G, dim=0)  # (N, V)

    def select(self, keep: torch.Tensor) -> None:
        # Kept rows move to the front of the preallocated caches (only the columns written so far are
        # copied); the decoder then works on views of the first n' rows.
        n, L = keep.numel(), self.length
        H_kv, R = self.num_kv_heads, self.num_heads // self.num_kv_heads
        for cache in (*self.keys, *self.values):
            cache[:n, :, :L] = cache[keep, :, :L]
        self.keys = [keys[:n] for keys in self.keys]
        self.values = [values[:n] for values in self.values]
        rows = self.mask.shape[0] // H_kv
        self.mask = self.mask.view(rows, H_kv, R, -1)[keep].reshape(n * H_kv, R, -1)
        self.next_position = self.next_position[keep]

    def step(self, tokens: torch.Tensor) -> torch.Tensor:
        with torch.autocast(self.device_type, enabled=False):
            return self._step(tokens)

    def _step(self, tokens: torch.Tensor) -> torch.Tensor:
        N = tokens.shape[0]
        H, H_kv, D = self.num_heads, self.num_kv_heads, self.head_dim
        R = H // H_kv  # query heads per key/value head; query head h reads kv head h // R (repeat_kv)
        column = self.length
        self.length += 1
        L = self.length
        cos = self.cos[self.next_position][:, None]  # (N, 1, D)
        sin = self.sin[self.next_position][:, None]  # (N, 1, D), signed (see prefill)
        mask = self.mask[:, :, :L]  # (N H_kv, R, L)
        x = torch.nn.functional.embedding(tokens, self.embedding)  # (N, C)
        for i, layer in enumerate(self.layers):
            h = _rms_norm(x, layer.input_norm, layer.input_eps)
            qkv = _project(h, layer.qkv, layer.qkv_bias)  # (N, (H + 2 H_kv) D)
            qk = qkv[:, : (H + H_kv) * D].view(N, H + H_kv, D)
            if layer.qk_norms is not None:
                q_norm, k_norm = layer.qk_norms
                qk = torch.cat([q_norm(qk[:, :H]), k_norm(qk[:, H:])], dim=1)
            # RoPE on q and k at once, in the weights' dtype as transformers does: (N, H + H_kv, D)
            qk = qk.to(cos.dtype)
            qk = qk * cos + torch.roll(qk, D // 2, dims=-1) * sin
            keys, values = self.keys[i], self.values[i]
            keys[:, :, column] = qk[:, H:]
            values[:, :, column] = qkv[:, (H + H_kv) * D :].view(N, H_kv, D)
            scores = torch.baddbmm(
                mask,
                qk[:, :H].reshape(N * H_kv, R, D),
                keys[:, :, :L].reshape(N * H_kv, L, D).transpose(1, 2),
                alpha=self.scaling,
            )  # (N H_kv, R, L)
            probs = torch.softmax(scores, dim=-1, dtype=torch.float32).to(self.kv_dtype)
            attended = torch.bmm(probs, values[:, :, :L].reshape(N * H_kv, L, D))  # (N H_kv, R, D)
            x = _project_residual(x, attended.view(N, H * D), layer.o, layer.o_bias)
            h = _rms_norm(x, layer.post_norm, layer.post_eps)
            gate_up = _project(h, layer.gate_up, layer.gate_up_bias)  # (N, 2 I)
            I = gate_up.shape[1] // 2  # noqa: E741 - the MLP width's usual letter
            x = _project_residual(
                x, torch.nn.functional.silu(gate_up[:, :I]) * gate_up[:, I:], layer.down, layer.down_bias
            )
        x = _rms_norm(x, self.final_norm, self.final_eps)
        self.next_position = self.next_position + 1
        return _project(x, self.lm_head, self.lm_head_bias)  # (N, V)
