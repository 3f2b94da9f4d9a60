"""Gradient checkpointing and bf16 autocast: same results (to the stated precision), less memory / lower dtype."""

import copy

import pytest
import torch

from grpokit.models import build_char_tokenizer, build_tiny_model, completion_logprobs
from grpokit.models.memory import decoder_layers, enable_gradient_checkpointing
from grpokit.models.precision import autocast_dtype, enable_autocast


@pytest.fixture
def tok():
    return build_char_tokenizer("0123456789+=")


@pytest.fixture
def model(tok):
    return build_tiny_model(tok, hidden_size=32, num_layers=3, num_heads=4, num_kv_heads=2,
                            intermediate_size=64, seed=0, initializer_range=0.2).eval()


def batch():
    g = torch.Generator().manual_seed(0)
    prompt_ids = torch.randint(4, 16, (4, 5), generator=g)
    prompt_mask = torch.ones(4, 5, dtype=torch.long)
    prompt_mask[0, :2] = 0  # left padding
    completion_ids = torch.randint(2, 16, (4, 6), generator=g)
    completion_mask = torch.ones(4, 6)
    completion_mask[1, 4:] = 0  # right padding
    return prompt_ids, prompt_mask, completion_ids, completion_mask


def loss_and_grads(model):
    model.zero_grad(set_to_none=True)
    logprobs, _ = completion_logprobs(model, *batch())
    loss = -(logprobs * torch.linspace(-1, 1, 6)).sum()
    loss.backward()
    return loss.detach(), {name: p.grad.clone() for name, p in model.named_parameters()}


def count_layer_forwards(model):
    """Calls of each layer's MLP: its module hooks run on every execution of the layer's body, including the
    recomputation (the layer's own hooks stay outside the checkpoint)."""
    calls = []
    for layer in decoder_layers(model):
        layer.mlp.register_forward_pre_hook(lambda module, args: calls.append(module))
    return calls


def test_checkpointing_recomputes_layers_and_keeps_gradients(model):
    loss, grads = loss_and_grads(model)
    assert enable_gradient_checkpointing(model) == 3
    calls = count_layer_forwards(model)
    loss_ckpt, grads_ckpt = loss_and_grads(model)
    # 3 layers in the forward, 3 again when backward recomputes them.
    assert len(calls) == 6
    torch.testing.assert_close(loss_ckpt, loss, rtol=0, atol=0)
    for name, grad in grads.items():
        torch.testing.assert_close(grads_ckpt[name], grad, rtol=0, atol=1e-7, msg=name)


def test_checkpointing_is_free_without_grad(model):
    enable_gradient_checkpointing(model)
    calls = count_layer_forwards(model)
    with torch.no_grad():
        completion_logprobs(model, *batch())
    assert len(calls) == 3


def test_checkpointing_survives_deepcopy_and_is_idempotent(model):
    enable_gradient_checkpointing(model)
    enable_gradient_checkpointing(model)
    copied = copy.deepcopy(model)
    for original, clone in zip(decoder_layers(model), decoder_layers(copied)):
        assert clone.forward.__self__ is clone and original.forward.__self__ is original
    torch.testing.assert_close(loss_and_grads(copied)[0], loss_and_grads(model)[0], rtol=0, atol=0)


def test_checkpointing_needs_decoder_layers():
    with pytest.raises(ValueError, match="no transformers decoder layers"):
        enable_gradient_checkpointing(torch.nn.Linear(2, 2))


def test_autocast_runs_forwards_in_bf16_and_keeps_fp32_state(model):
    with torch.no_grad():
        reference, _ = completion_logprobs(model, *batch())
    seen = []
    model.model.layers[0].mlp.down_proj.register_forward_hook(lambda m, args, out: seen.append(out.dtype))
    assert enable_autocast(model, "bf16") is torch.bfloat16
    loss, grads = loss_and_grads(model)
    assert seen == [torch.bfloat16]
    assert all(g.dtype == torch.float32 for g in grads.values())  # gradients in the weights' dtype
    with torch.no_grad():
        mixed, _ = completion_logprobs(model, *batch())
    assert mixed.dtype == torch.float32
    error = (mixed - reference).abs().max().item()
    # bf16 rounding (8 bits of mantissa) moves the log-probs, but only by its own size.
    assert 1e-5 < error < 5e-2
    clone = copy.deepcopy(model)
    assert clone.forward.__self__ is clone


def test_autocast_no_changes_nothing(model):
    forward = model.forward
    assert enable_autocast(model, "no") is None
    assert model.forward == forward


def test_autocast_dtype_rejects_unknown_names():
    assert autocast_dtype("no") is None
    with pytest.raises(ValueError, match="mixed_precision must be one of"):
        autocast_dtype("fp16")
