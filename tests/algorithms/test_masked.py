"""masked_mean / masked_var / masked_whiten / entropy_from_logits."""

import math

import pytest
import torch

from grpokit.algorithms import entropy_from_logits, masked_mean, masked_var, masked_whiten

F64 = torch.float64


def f64(values):
    return torch.tensor(values, dtype=F64)


def test_masked_mean_by_hand():
    x = f64([[1.0, 2.0, float("inf")], [4.0, float("nan"), 0.0]])
    mask = torch.tensor([[True, True, False], [True, False, False]])
    assert masked_mean(x, mask).item() == pytest.approx(7 / 3, rel=1e-12)  # (1 + 2 + 4) / 3
    torch.testing.assert_close(masked_mean(x, mask, dim=1), f64([1.5, 4.0]), rtol=1e-12, atol=0)
    # an all-padding row gives 0, not nan
    torch.testing.assert_close(
        masked_mean(x, f64([[1, 0, 0], [0, 0, 0]]), dim=1), f64([1.0, 0.0]), rtol=0, atol=0
    )


def test_masked_var_and_whiten_by_hand():
    # real values [1, 2, 4]: mean 7/3, unbiased var = ((4/3)^2 + (1/3)^2 + (5/3)^2) / 2 = 42/18 = 7/3
    x = f64([[1.0, 2.0, 99.0], [4.0, 99.0, 99.0]])
    mask = f64([[1, 1, 0], [1, 0, 0]])
    assert masked_var(x, mask).item() == pytest.approx(7 / 3, rel=1e-12)
    w = masked_whiten(x, mask, eps=0.0)
    expected = (f64([[1.0, 2.0, 7 / 3], [4.0, 7 / 3, 7 / 3]]) - 7 / 3) / math.sqrt(7 / 3)
    torch.testing.assert_close(w, expected * mask, rtol=1e-12, atol=1e-15)
    w_scale_only = masked_whiten(x, mask, shift_mean=False, eps=0.0)
    torch.testing.assert_close(w_scale_only, (expected + 7 / 3) * mask, rtol=1e-12, atol=1e-15)
    with pytest.raises(ValueError, match="needs at least 2"):
        masked_var(x, f64([[1, 0, 0], [0, 0, 0]]))


def test_entropy_matches_torch_distributions():
    gen = torch.Generator().manual_seed(0)
    logits = 3 * torch.randn(2, 5, 11, generator=gen, dtype=F64)
    expected = torch.distributions.Categorical(logits=logits).entropy()
    torch.testing.assert_close(entropy_from_logits(logits), expected, rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(entropy_from_logits(logits, chunk_size=3), expected, rtol=1e-12, atol=1e-14)


def test_entropy_is_stable_for_huge_logits_and_keeps_dtype():
    # logits [1e4, 0, 0]: p ~ [1, e^-1e4, e^-1e4] -> H ~ 0 (no overflow, no nan); uniform V = 8 -> log 8
    logits = torch.tensor([[[1e4, 0.0, 0.0]], [[5e3, 5e3, 5e3]]], dtype=torch.float32)
    h = entropy_from_logits(logits)
    assert h.dtype == torch.float32
    torch.testing.assert_close(h, torch.tensor([[0.0], [math.log(3)]]), rtol=1e-5, atol=1e-6)
    assert entropy_from_logits(torch.zeros(8)).item() == pytest.approx(math.log(8), rel=1e-6)


def test_chunked_entropy_gradient_matches():
    logits = torch.randn(3, 4, 6, dtype=F64, generator=torch.Generator().manual_seed(1))
    a = logits.clone().requires_grad_(True)
    b = logits.clone().requires_grad_(True)
    entropy_from_logits(a).sum().backward()
    entropy_from_logits(b, chunk_size=5).sum().backward()
    torch.testing.assert_close(a.grad, b.grad, rtol=1e-12, atol=1e-15)
    assert torch.autograd.gradcheck(entropy_from_logits, (logits[:1, :2].clone().requires_grad_(True),))


def test_bad_input():
    with pytest.raises(ValueError, match=r"mask has shape \(2,\) but x has shape \(3,\)"):
        masked_mean(torch.zeros(3), torch.ones(2))
    with pytest.raises(ValueError, match="chunk_size must be a positive int"):
        entropy_from_logits(torch.zeros(2, 3), chunk_size=0)
    with pytest.raises(ValueError, match="non-empty last"):
        entropy_from_logits(torch.zeros(2, 0))
