"""The fused LM-head log-prob path: same numbers and gradients as the logits path, no (N*T, V) tensor kept."""

import pytest
import torch

from grpokit.models import build_char_tokenizer, build_tiny_model, completion_logprobs
from grpokit.models.logprobs import _plain_head
from grpokit.models.precision import enable_autocast

N, P, T = 4, 5, 6


@pytest.fixture
def model():
    tok = build_char_tokenizer("0123456789+=abcdefghijklmnopqrstuvwxyz")
    return build_tiny_model(tok, hidden_size=32, num_layers=2, num_heads=4, num_kv_heads=2,
                            intermediate_size=64, seed=0, initializer_range=0.2).eval()


def batch():
    g = torch.Generator().manual_seed(0)
    prompt_ids = torch.randint(4, 40, (N, P), generator=g)
    prompt_mask = torch.ones(N, P, dtype=torch.long)
    prompt_mask[0, :3] = 0
    completion_ids = torch.randint(2, 40, (N, T), generator=g)
    completion_mask = torch.ones(N, T)
    completion_mask[2, 3:] = 0
    return prompt_ids, prompt_mask, completion_ids, completion_mask


TAU = torch.tensor([1.0, 0.7, 1.3, 1.0])


def run(model, chunk_size):
    """Log-probs, entropy and the gradient of a weighted sum; chunk_size < N*T takes the fused path."""
    model.zero_grad(set_to_none=True)
    logprobs, entropy = completion_logprobs(model, *batch(), temperature=TAU, return_entropy=True,
                                            chunk_size=chunk_size)
    (logprobs * torch.linspace(-1, 2, T)).sum().backward()
    return logprobs.detach(), entropy, {name: p.grad.clone() for name, p in model.named_parameters()}


def test_fused_matches_the_logits_path(model):
    logprobs, entropy, grads = run(model, chunk_size=N * T)  # one chunk: the model's own logits
    fused_logprobs, fused_entropy, fused_grads = run(model, chunk_size=5)  # 5 chunks, the last one short
    torch.testing.assert_close(fused_logprobs, logprobs, rtol=0, atol=1e-6)
    torch.testing.assert_close(fused_entropy, entropy, rtol=0, atol=1e-6)
    assert not fused_entropy.requires_grad
    for name, grad in grads.items():  # lm_head is tied to the embedding: both contributions arrive
        torch.testing.assert_close(fused_grads[name], grad, rtol=1e-5, atol=1e-7, msg=name)


def saved_logits(model, chunk_size):
    """Tensors autograd keeps for backward that hold a logit for every position: (..., V) with >= N*T*V."""
    V = model.config.vocab_size
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t) or t, lambda t: t):
        completion_logprobs(model, *batch(), chunk_size=chunk_size)
    return [tuple(t.shape) for t in saved if t.shape[-1] == V and t.numel() >= N * T * V]


def test_fused_path_keeps_no_logits_for_backward(model):
    assert saved_logits(model, chunk_size=N * T) != []  # the logits path keeps the (N, T, V) logits
    assert saved_logits(model, chunk_size=5) == []


def test_fused_path_under_autocast(model):
    with torch.no_grad():
        exact, _ = completion_logprobs(model, *batch(), chunk_size=5)
    enable_autocast(model, "bf16")
    with torch.no_grad():
        mixed_logits, _ = completion_logprobs(model, *batch(), chunk_size=N * T)
        mixed_fused, _ = completion_logprobs(model, *batch(), chunk_size=5)
    assert (mixed_fused - exact).abs().max() > 1e-4  # the head really ran in bf16
    # Same bf16 matmuls in both paths; only the head's blocking differs.
    torch.testing.assert_close(mixed_fused, mixed_logits, rtol=0, atol=2e-2)


def test_only_plain_heads_are_fused(model):
    from peft import LoraConfig, get_peft_model

    assert _plain_head(model) is not None
    lora = get_peft_model(model, LoraConfig(r=2, target_modules=["q_proj", "v_proj"]))
    assert _plain_head(lora) is not None  # adapters live in the backbone; the head is plain

    class Wrapper(torch.nn.Module):  # DDP-like: its own forward must run
        def __init__(self, inner):
            super().__init__()
            self.module = inner

        def forward(self, **kwargs):
            return self.module(**kwargs)

    assert _plain_head(Wrapper(model)) is None
    fused, _ = completion_logprobs(lora, *batch(), chunk_size=5)
    wrapped, _ = completion_logprobs(Wrapper(lora), *batch(), chunk_size=5)
    torch.testing.assert_close(fused, wrapped, rtol=0, atol=1e-6)
