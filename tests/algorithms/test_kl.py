"""KL estimators (k1/k2/k3/k3+), what their gradients optimise, and the fixed / adaptive KL controllers."""

import math

import pytest
import torch

from grpokit.algorithms import (
    AdaptiveKLController,
    FixedKLController,
    kl_divergence,
    kl_loss_gradient,
    register,
)
from grpokit.algorithms.registry import _REGISTRIES

F64 = torch.float64


def f64(values):
    return torch.tensor(values, dtype=F64)


def test_estimators_by_hand():
    # log pi = [-1, -2], log ref = [-1.5, -1]: log pi - log ref = [0.5, -1]
    logprobs, ref = f64([[-1.0, -2.0]]), f64([[-1.5, -1.0]])
    torch.testing.assert_close(kl_divergence(logprobs, ref, "k1"), f64([[0.5, -1.0]]), rtol=1e-12, atol=0)
    # k2 = 0.5 * [0.25, 1] = [0.125, 0.5]
    torch.testing.assert_close(kl_divergence(logprobs, ref, "k2"), f64([[0.125, 0.5]]), rtol=1e-12, atol=0)
    # k3 = e^(ref - pi) - (ref - pi) - 1 = [e^-0.5 + 0.5 - 1, e^1 - 1 - 1] = [0.1065307, 0.7182818]
    expected = f64([[math.exp(-0.5) - 0.5, math.e - 2]])
    torch.testing.assert_close(kl_divergence(logprobs, ref), expected, rtol=1e-12, atol=0)


def test_k3_is_accurate_when_the_policies_are_close():
    # x = ref - pi = 1e-9: k3 = e^x - x - 1 = x^2 / 2 + O(x^3) = 5e-19; the naive form returns 0 or 1e-16 noise
    k3 = kl_divergence(f64([[0.0]]), f64([[1e-9]]), "k3")
    assert k3.item() == pytest.approx(5e-19, rel=1e-6)


def test_k1_and_k3_are_unbiased_for_the_exact_kl():
    # E_{x ~ p}[k(x)] over a categorical, computed exactly by weighting with p, equals KL(p || q)
    p = f64([0.5, 0.3, 0.15, 0.05])
    q = f64([0.25, 0.25, 0.25, 0.25])
    exact = (p * (p / q).log()).sum()
    log_p, log_q = p.log()[None], q.log()[None]  # (1, V): one "token" per outcome
    for name in ("k1", "k3"):
        estimate = (p * kl_divergence(log_p, log_q, name)[0]).sum()
        torch.testing.assert_close(estimate, exact, rtol=1e-12, atol=0)
    # k2 is biased: E[k2] = 0.5 * sum p log(p/q)^2
    #   = 0.5 * (0.5 * 0.6931^2 + 0.3 * 0.1823^2 + 0.15 * 0.5108^2 + 0.05 * 1.6094^2) = 0.2094,
    # against KL = sum p log(p/q) = 0.2442. k2 and k3 are nonnegative per sample.
    assert (p * kl_divergence(log_p, log_q, "k2")[0]).sum().item() == pytest.approx(0.2094, abs=1e-4)
    assert exact.item() == pytest.approx(0.2442, abs=1e-4)
    assert (kl_divergence(log_p, log_q, "k2") >= 0).all() and (kl_divergence(log_p, log_q, "k3") >= 0).all()


def test_gradcheck_estimators():
    logprobs = f64([[-1.0, -0.3, -2.0]]).requires_grad_(True)
    ref = f64([[-1.2, -0.1, -2.5]])
    for name in ("k1", "k2", "k3"):  # not k3+: its gradient is k2's by design, not its value's
        assert torch.autograd.gradcheck(lambda lp, name=name: kl_divergence(lp, ref, name), (logprobs,))


def test_float32_is_kept_and_bad_input():
    out = kl_divergence(torch.zeros(2, 3), torch.zeros(2, 3, dtype=F64))
    assert out.dtype == torch.float32
    with pytest.raises(ValueError, match=r"estimator='kl'.*\['k1', 'k2', 'k3', 'k3\+'\]"):
        kl_divergence(torch.zeros(1, 2), torch.zeros(1, 2), "kl")
    with pytest.raises(ValueError, match=r"ref_logprobs has shape \(1, 3\) but logprobs has shape \(1, 2\)"):
        kl_divergence(torch.zeros(1, 2), torch.zeros(1, 3))


# ----------------------------------------------------------------------------------------------
# Controllers
# ----------------------------------------------------------------------------------------------


def test_adaptive_controller_by_hand():
    ctl = AdaptiveKLController(init_beta=0.1, target=6.0, horizon=10000)
    # KL = 12: error = clip(12/6 - 1, -0.2, 0.2) = 0.2; beta = 0.1 * (1 + 0.2 * 256 / 10000) = 0.100512
    ctl.update(12.0, n_steps=256)
    assert ctl.beta == pytest.approx(0.100512, rel=1e-12)
    # KL = 6.6: error = 0.1 (inside the clip); beta *= 1 + 0.1 * 1000 / 10000 = 1.01
    ctl.update(6.6, n_steps=1000)
    assert ctl.beta == pytest.approx(0.100512 * 1.01, rel=1e-12)
    # KL = 0: error = clip(-1) = -0.2; beta *= 1 - 0.2 * 5000 / 10000 = 0.9
    ctl.update(0.0, n_steps=5000)
    assert ctl.beta == pytest.approx(0.100512 * 1.01 * 0.9, rel=1e-12)


def test_adaptive_controller_moves_beta_toward_the_target():
    high, low, on = (AdaptiveKLController(0.05, target=1.0, horizon=100) for _ in range(3))
    for _ in range(10):
        high.update(3.0, n_steps=10)
        low.update(0.2, n_steps=10)
        on.update(1.0, n_steps=10)
    assert high.beta > 0.05 > low.beta
    assert on.beta == 0.05


def test_controllers_state_dict_round_trip():
    ctl = AdaptiveKLController(0.2, target=3.0, horizon=50)
    ctl.update(5.0, n_steps=7)
    resumed = AdaptiveKLController(1.0, target=1.0, horizon=1)
    resumed.load_state_dict(ctl.state_dict())
    assert resumed.state_dict() == ctl.state_dict()
    ctl.update(0.5, n_steps=3)
    resumed.update(0.5, n_steps=3)
    assert resumed.beta == ctl.beta

    fixed = FixedKLController(0.04)
    fixed.update(100.0, n_steps=1000)
    assert fixed.beta == 0.04
    other = FixedKLController(0.0)
    other.load_state_dict(fixed.state_dict())
    assert other.beta == 0.04


def test_controllers_bad_input():
    with pytest.raises(ValueError, match="target must be > 0"):
        AdaptiveKLController(0.1, target=0.0, horizon=10)
    with pytest.raises(ValueError, match="horizon must be > 0"):
        AdaptiveKLController(0.1, target=1.0, horizon=0)
    with pytest.raises(ValueError, match="init_beta must be >= 0"):
        AdaptiveKLController(-0.1, target=1.0, horizon=10)
    with pytest.raises(ValueError, match="current_kl must be finite"):
        AdaptiveKLController(0.1, target=1.0, horizon=10).update(float("nan"), n_steps=1)
    with pytest.raises(ValueError, match="beta must be >= 0"):
        FixedKLController(-1.0)
    with pytest.raises(ValueError, match=r"state\['target'\] must be > 0"):
        AdaptiveKLController(0.1, 1.0, 10).load_state_dict({"beta": 0.1, "target": -1.0, "horizon": 10})


def test_k3_plus_has_the_value_of_k3_and_the_gradient_of_k2():
    ref = f64([[-1.2, -0.1, -2.5]])
    values = {}
    grads = {}
    for name in ("k2", "k3", "k3+"):
        logprobs = f64([[-1.0, -0.3, -2.0]]).requires_grad_(True)
        values[name] = kl_divergence(logprobs, ref, name)
        values[name].sum().backward()
        grads[name] = logprobs.grad
    torch.testing.assert_close(values["k3+"], values["k3"], rtol=1e-15, atol=0)
    torch.testing.assert_close(grads["k3+"], grads["k2"], rtol=1e-15, atol=0)
    # k2's gradient is log pi - log pi_ref = [0.2, -0.2, 0.5]; k3's is 1 - pi_ref/pi.
    torch.testing.assert_close(grads["k3+"], f64([[0.2, -0.2, 0.5]]), rtol=1e-12, atol=1e-15)
    assert not torch.allclose(grads["k3"], grads["k2"])


@pytest.mark.parametrize(
    "estimator,target", [("k1", None), ("k2", "pi||ref"), ("k3", "ref||pi"), ("k3+", "pi||ref")]
)
def test_expected_gradient_of_each_estimator_as_a_loss_term(estimator, target):
    # Exact expectation over a 4-token vocabulary: E_{x ~ pi}[grad k(x)] = sum_x sg(pi(x)) grad k(x),
    # against autograd of the true KL(pi || ref) = sum pi log(pi/ref) and KL(ref || pi) = sum ref log(ref/pi).
    theta = f64([0.3, -1.0, 0.8, 0.1]).requires_grad_(True)
    log_ref = torch.log_softmax(f64([0.0, 0.5, -0.4, 1.2]), 0)
    log_pi = torch.log_softmax(theta, 0)
    k = kl_divergence(log_pi[None], log_ref[None], estimator)[0]  # (V,) one sampled token per outcome
    (expected_grad,) = torch.autograd.grad((log_pi.exp().detach() * k).sum(), theta, retain_graph=True)

    def grad_of(kl):
        return torch.autograd.grad(kl, theta, retain_graph=True)[0]

    reverse = grad_of((log_pi.exp() * (log_pi - log_ref)).sum())  # grad KL(pi || ref)
    forward = grad_of((log_ref.exp() * (log_ref - log_pi)).sum())  # grad KL(ref || pi)
    assert not torch.allclose(reverse, forward)  # the check below can tell them apart
    wanted = {None: torch.zeros(4, dtype=F64), "pi||ref": reverse, "ref||pi": forward}[target]
    torch.testing.assert_close(expected_grad, wanted, rtol=1e-10, atol=1e-12)
    assert kl_loss_gradient(estimator) == (None if target is None else f"KL({target})")


def test_kl_loss_gradient_of_custom_and_unknown_names():
    try:

        @register("kl", "half_k2")
        def half_k2(logprobs, ref_logprobs):
            return 0.25 * (logprobs - ref_logprobs) ** 2

        assert kl_loss_gradient("half_k2") == "unknown"
    finally:
        _REGISTRIES["kl"].pop("half_k2", None)
    with pytest.raises(ValueError, match=r"estimator='k4' is not a known kl name"):
        kl_loss_gradient("k4")
