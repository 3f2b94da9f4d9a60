"""The "loss" registry: whole losses behind fn(LossInputs, LossSettings), against hand computations."""

import math

import pytest
import torch

from grpokit.algorithms import LossInputs, LossSettings, available, compute_loss, policy_loss, register
from grpokit.algorithms.registry import _REGISTRIES

F64 = torch.float64


def f64(values):
    return torch.tensor(values, dtype=F64)


def inputs(log_ratio, advantages, **kwargs):
    """Rows of tokens with log pi_old = 0, so log pi_theta = the log ratio (with grad)."""
    logprobs = f64(log_ratio).requires_grad_(True)
    return LossInputs(
        logprobs, torch.zeros_like(logprobs), f64(advantages), torch.ones_like(logprobs), **kwargs
    )


def test_builtin_losses_are_registered():
    assert available("loss") == ["cispo", "grpo", "gspo", "ppo", "sapo"]


def test_grpo_is_policy_loss_by_hand():
    # log ratio [0.1, -0.3] -> r = [1.1051709, 0.7408182]; A = -1, eps 0.2:
    # min(r A, clip(r) A) = min([-1.105, -0.741], [-1.105, -0.8]) = [-1.1051709, -0.8] (token 2 clipped).
    x = inputs([[0.1, -0.3]], [-1.0])
    loss, m = compute_loss("grpo", x, LossSettings())
    assert loss.item() == pytest.approx((math.exp(0.1) + 0.8) / 2, rel=1e-12)
    assert m["loss"] == loss.item()
    reference, ref_metrics = policy_loss(x.logprobs, x.old_logprobs, x.advantages, x.mask)
    assert loss.item() == reference.item()
    assert {k: v for k, v in m.items() if k != "loss"} == ref_metrics
    loss.backward()
    # token 1: d(-r A)/d log r / 2 = r / 2; token 2 is clipped: 0.
    torch.testing.assert_close(x.logprobs.grad, f64([[math.exp(0.1) / 2, 0.0]]), rtol=1e-12, atol=0)


def test_gspo_uses_the_sequence_ratio_by_hand():
    # s = exp((0.1 - 0.3) / 2) = exp(-0.1) = 0.9048374 inside [0.8, 1.2]; A = +1: loss = -s.
    x = inputs([[0.1, -0.3]], [1.0])
    loss, m = compute_loss("gspo", x, LossSettings(ratio_level="token"))  # the ratio level is GSPO's anyway
    assert loss.item() == pytest.approx(-math.exp(-0.1), rel=1e-12)
    assert m["ratio_mean"] == pytest.approx(math.exp(-0.1), rel=1e-12)
    loss.backward()
    # gradient of -s: -s * 1/|o| per token
    torch.testing.assert_close(x.logprobs.grad, f64([[-math.exp(-0.1) / 2] * 2]), rtol=1e-12, atol=0)


def test_cispo_by_hand_keeps_the_gradient_of_clipped_tokens():
    # r = [1.1051709, 0.7408182], weights sg(clip(r, 0.8, 1.2)) = [1.1051709, 0.8], A = -1:
    # l = -w A log pi = [1.1051709 * 0.1, 0.8 * -0.3] = [0.1105171, -0.24]; mean = -0.0647415.
    x = inputs([[0.1, -0.3]], [-1.0])
    loss, m = compute_loss("cispo", x, LossSettings())
    assert loss.item() == pytest.approx((math.exp(0.1) * 0.1 - 0.24) / 2, rel=1e-12)
    assert m["clip_fraction_low"] == 0.5 and m["clip_fraction_high"] == 0.0
    loss.backward()
    # d l / d log pi = -w A / 2 = [0.5525855, 0.4]: the clipped token still has a gradient (GRPO: 0).
    torch.testing.assert_close(x.logprobs.grad, f64([[math.exp(0.1) / 2, 0.4]]), rtol=1e-12, atol=0)


def test_sapo_soft_gate_by_hand():
    # Row 0: A = +1, tau_pos = 1; row 1: A = -1, tau_neg = 1.05. One token each, log ratio 0.2 and -0.1.
    x = inputs([[0.2], [-0.1]], [1.0, -1.0])
    loss, _ = compute_loss("sapo", x, LossSettings())
    r0, r1 = math.exp(0.2), math.exp(-0.1)
    p0, p1 = 1 / (1 + math.exp(-(r0 - 1))), 1 / (1 + math.exp(-1.05 * (r1 - 1)))
    f0, f1 = 4 * p0, 4 * p1 / 1.05  # f(r) = sigmoid(tau (r - 1)) * 4 / tau
    assert loss.item() == pytest.approx((-f0 * 1 + f1 * 1) / 2, rel=1e-12)
    loss.backward()
    # d(-f(r) A)/d log pi = -4 p (1 - p) r A, halved by the mean over 2 rows
    expected = f64([[-4 * p0 * (1 - p0) * r0 / 2], [4 * p1 * (1 - p1) * r1 / 2]])
    torch.testing.assert_close(x.logprobs.grad, expected, rtol=1e-12, atol=0)


def test_sapo_on_policy_is_the_plain_policy_gradient():
    # r = 1: f(1) = 2 / tau, f'(1) = 1, so the gradient is -A grad log pi whatever tau.
    x = inputs([[0.0, 0.0]], [0.7])
    loss, _ = compute_loss("sapo", x, LossSettings(sapo_tau_pos=3.0))
    assert loss.item() == pytest.approx(-0.7 * 2 / 3, rel=1e-12)
    loss.backward()
    torch.testing.assert_close(x.logprobs.grad, f64([[-0.35, -0.35]]), rtol=1e-12, atol=0)


def test_ppo_adds_the_value_loss_by_hand():
    # Policy: ratio 1, A = 1 -> -1. Value: V = [1, 2], V_old = [1, 1.5], R = [2, 2], c = 0.2:
    # token 1: max((1-2)^2, (1-2)^2) = 1; token 2: max(0, (1.7 - 2)^2) = 0.09; 0.5 * mean = 0.2725.
    values = f64([[1.0, 2.0]]).requires_grad_(True)
    x = inputs([[0.0, 0.0]], [1.0], values=values, old_values=f64([[1.0, 1.5]]), returns=f64([[2.0, 2.0]]))
    loss, m = compute_loss("ppo", x, LossSettings(vf_coef=0.1))
    assert loss.item() == pytest.approx(-1 + 0.1 * 0.2725, rel=1e-12)
    assert m["loss"] == loss.item()
    assert m["policy_loss"] == pytest.approx(-1.0, rel=1e-12)
    assert m["value_loss"] == pytest.approx(0.2725, rel=1e-12)
    assert m["value_clip_fraction"] == 0.5
    loss.backward()
    # d/dV: token 1: 0.1 * 0.5 * 2 (V - R) / 2 = -0.05; token 2: clipped branch, no gradient.
    torch.testing.assert_close(values.grad, f64([[-0.05, 0.0]]), rtol=1e-12, atol=0)
    with pytest.raises(ValueError, match=r"loss 'ppo' needs inputs.values"):
        compute_loss("ppo", inputs([[0.0]], [1.0]))


def test_entropy_tensor_for_non_categorical_policies():
    # Ratio 1, A = 0: loss = -c_H * mean(H) = -0.1 * 1.0; the bonus is aggregated like the loss.
    entropy = f64([[0.5, 1.5]]).requires_grad_(True)
    x = inputs([[0.0, 0.0]], [0.0], entropy=entropy)
    for name in ("grpo", "gspo", "cispo", "sapo"):
        entropy.grad = None
        loss, m = compute_loss(name, x, LossSettings(entropy_coef=0.1))
        assert loss.item() == pytest.approx(-0.1, rel=1e-12), name
        assert m["entropy"] == pytest.approx(1.0, rel=1e-12)
        loss.backward()
        torch.testing.assert_close(entropy.grad, f64([[-0.05, -0.05]]), rtol=1e-12, atol=0)


def test_kl_term_is_shared_and_k1_is_refused():
    # Ratio 1, A = 0: loss = beta * mean k3; log ref - log pi = [0.5, -0.5].
    x = inputs([[0.0, 0.0]], [0.0], ref_logprobs=f64([[0.5, -0.5]]))
    k3 = ((math.exp(0.5) - 1.5) + (math.exp(-0.5) - 0.5)) / 2
    for name in ("grpo", "cispo", "sapo"):
        loss, m = compute_loss(name, x, LossSettings(beta=0.1))
        assert loss.item() == pytest.approx(0.1 * k3, rel=1e-12), name
        assert m["kl"] == pytest.approx(k3, rel=1e-12)
    with pytest.raises(ValueError, match=r"kl_estimator='k1' with beta>0 adds no regularisation"):
        compute_loss("grpo", x, LossSettings(beta=0.1, kl_estimator="k1"))


def test_custom_loss_works_like_a_builtin():
    try:

        @register("loss", "reinforce")
        def reinforce(inputs, settings):
            loss = -(inputs.advantages.unsqueeze(1) * inputs.logprobs * inputs.mask).sum() / inputs.mask.sum()
            return loss, {"loss": loss.item()}

        assert "reinforce" in available("loss")
        loss, m = compute_loss("reinforce", inputs([[0.5, -0.5], [1.0, 0.0]], [2.0, 1.0]))
        # -(2 * 0 + 1 * 1) / 4 = -0.25
        assert loss.item() == -0.25 and m == {"loss": -0.25}
    finally:
        _REGISTRIES["loss"].pop("reinforce", None)


def test_bad_input():
    with pytest.raises(ValueError, match=r"loss='trpo' is not a known loss name.*\['cispo', 'grpo'"):
        compute_loss("trpo", inputs([[0.0]], [1.0]))
    with pytest.raises(ValueError, match=r"inputs must be a LossInputs"):
        compute_loss("grpo", {"logprobs": torch.zeros(1, 1)})
    with pytest.raises(ValueError, match=r"sapo_tau_neg must be > 0"):
        LossSettings(sapo_tau_neg=0.0)
    with pytest.raises(ValueError, match=r"aggregation='mean' is not a known aggregation name"):
        LossSettings(aggregation="mean")
    with pytest.raises(ValueError, match=r"epsilon_low must be in \[0, 1\]"):
        LossSettings(epsilon_low=2.0)
    with pytest.raises(ValueError, match=r"entropy has shape \(1, 1\) but logprobs has shape \(1, 2\)"):
        compute_loss("grpo", inputs([[0.0, 0.0]], [1.0], entropy=f64([[1.0]])))
