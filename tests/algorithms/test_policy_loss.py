"""policy_loss and aggregate: hand-computed values, gradient properties, gradcheck, bad input."""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from grpokit.algorithms import aggregate, available, policy_loss

F64 = torch.float64


def f64(values):
    return torch.tensor(values, dtype=F64)


def leaf(values):
    return f64(values).requires_grad_(True)


# ----------------------------------------------------------------------------------------------
# Hand-computed values
# ----------------------------------------------------------------------------------------------


def test_positive_advantage_by_hand():
    # log ratio = [0.1, -0.3, 0.0] -> ratio = [e^0.1, e^-0.3, 1] = [1.1051709, 0.7408182, 1]
    # A = +1, eps = 0.2: clip(ratio) = [1.1051709, 0.8, 1]
    # min(r*A, clip(r)*A) = [1.1051709, 0.7408182, 1] (the low clip does not bind when A > 0)
    # loss = -(1.1051709 + 0.7408182 + 1) / 3 = -0.9486630
    old = f64([[-1.0, -2.0, -0.5]])
    logprobs = old + f64([[0.1, -0.3, 0.0]])
    loss, m = policy_loss(logprobs, old, f64([1.0]), torch.ones(1, 3))
    expected = -(math.exp(0.1) + math.exp(-0.3) + 1) / 3
    assert loss.item() == pytest.approx(expected, rel=1e-12)
    assert m["policy_loss"] == pytest.approx(expected, rel=1e-12)
    assert (m["clip_fraction"], m["clip_fraction_low"], m["clip_fraction_high"]) == (0.0, 0.0, 0.0)
    assert m["ratio_min"] == pytest.approx(math.exp(-0.3), rel=1e-12)
    assert m["ratio_max"] == pytest.approx(math.exp(0.1), rel=1e-12)
    assert m["ratio_mean"] == pytest.approx((math.exp(0.1) + math.exp(-0.3) + 1) / 3, rel=1e-12)
    assert "kl" not in m and "entropy" not in m


def test_negative_advantage_by_hand():
    # Same ratios, A = -1: min(-r, -clip(r)) = [-1.1051709, -0.8, -1]
    # loss = (1.1051709 + 0.8 + 1) / 3 = 0.9683903; the token at 0.74 < 0.8 is low-clipped
    old = f64([[-1.0, -2.0, -0.5]])
    logprobs = old + f64([[0.1, -0.3, 0.0]])
    loss, m = policy_loss(logprobs, old, f64([-1.0]), torch.ones(1, 3))
    assert loss.item() == pytest.approx((math.exp(0.1) + 0.8 + 1) / 3, rel=1e-12)
    assert m["clip_fraction_low"] == pytest.approx(1 / 3, rel=1e-12)
    assert m["clip_fraction_high"] == 0.0
    assert m["clip_fraction"] == pytest.approx(1 / 3, rel=1e-12)


def test_clip_higher_by_hand():
    # ratio = e^0.25 = 1.2840254, A = +1: eps_high = 0.2 clips to 1.2; eps_high = 0.3 does not.
    old = f64([[0.0]])
    logprobs = f64([[0.25]])
    loss, m = policy_loss(logprobs, old, f64([1.0]), torch.ones(1, 1), epsilon_high=None)
    assert loss.item() == pytest.approx(-1.2, rel=1e-12)
    assert m["clip_fraction_high"] == 1.0
    loss, m = policy_loss(logprobs, old, f64([1.0]), torch.ones(1, 1), epsilon_high=0.3)
    assert loss.item() == pytest.approx(-math.exp(0.25), rel=1e-12)
    assert m["clip_fraction_high"] == 0.0


def test_kl_term_by_hand():
    # ratio 1 everywhere (logprobs == old), A = 0: surrogate 0, loss = beta * mean k3
    # log pi_ref - log pi = [0.5, -0.5] -> k3 = [e^0.5 - 0.5 - 1, e^-0.5 + 0.5 - 1]
    #                                          = [0.1487213, 0.1065307]; mean = 0.1276260
    logprobs = f64([[-1.0, -2.0]])
    ref = logprobs + f64([[0.5, -0.5]])
    loss, m = policy_loss(logprobs, logprobs, f64([0.0]), torch.ones(1, 2), ref_logprobs=ref, beta=0.1)
    k3 = ((math.exp(0.5) - 1.5) + (math.exp(-0.5) - 0.5)) / 2
    assert loss.item() == pytest.approx(0.1 * k3, rel=1e-12)
    assert m["kl"] == pytest.approx(k3, rel=1e-12)
    assert m["policy_loss"] == 0.0


def test_k1_with_beta_is_refused_but_still_logs_the_kl_metric():
    # k1's expected gradient on samples from pi is E[grad log pi] = 0: as a loss term it regularises nothing.
    logprobs = f64([[-1.0, -2.0]])
    ref = logprobs + f64([[0.5, -0.5]])
    with pytest.raises(ValueError, match=r"kl_estimator='k1' with beta>0 adds no regularisation"):
        policy_loss(
            logprobs, logprobs, f64([0.0]), torch.ones(1, 2), ref_logprobs=ref, beta=0.1, kl_estimator="k1"
        )
    _, m = policy_loss(logprobs, logprobs, f64([0.0]), torch.ones(1, 2), ref_logprobs=ref, kl_estimator="k1")
    assert m["kl"] == pytest.approx(0.0, abs=1e-15)  # k1 = log pi - log ref = [-0.5, 0.5], mean 0


def test_k3_plus_kl_term_has_k3_value_and_k2_gradient():
    # ratio 1, A = 0: loss = beta * mean k3 in value; d loss / d log pi = beta * (log pi - log ref) / 2
    logprobs = leaf([[-1.0, -2.0]])
    ref = logprobs.detach() + f64([[0.5, -0.5]])
    loss, m = policy_loss(
        logprobs,
        logprobs.detach(),
        f64([0.0]),
        torch.ones(1, 2),
        ref_logprobs=ref,
        beta=0.1,
        kl_estimator="k3+",
    )
    k3 = ((math.exp(0.5) - 1.5) + (math.exp(-0.5) - 0.5)) / 2
    assert loss.item() == pytest.approx(0.1 * k3, rel=1e-12)
    loss.backward()
    torch.testing.assert_close(logprobs.grad, f64([[-0.025, 0.025]]), rtol=1e-12, atol=1e-15)


def test_beta_zero_needs_no_reference_and_still_logs_kl_when_given():
    logprobs = f64([[-1.0, -2.0]])
    loss, m = policy_loss(logprobs, logprobs, f64([1.0]), torch.ones(1, 2), beta=0.0, ref_logprobs=None)
    assert "kl" not in m
    ref = logprobs + f64([[0.5, -0.5]])
    loss_with_ref, m = policy_loss(logprobs, logprobs, f64([1.0]), torch.ones(1, 2), ref_logprobs=ref)
    assert loss_with_ref.item() == loss.item()  # no KL in the loss at beta = 0
    assert m["kl"] == pytest.approx(((math.exp(0.5) - 1.5) + (math.exp(-0.5) - 0.5)) / 2, rel=1e-12)


def test_aggregations_by_hand():
    # row 0: one token, loss 2; row 1: three tokens, loss 1 each (a 4th padded token holds 100)
    loss_tokens = f64([[2.0, 0.0, 0.0, 0.0], [1.0, 1.0, 1.0, 100.0]])
    mask = torch.tensor([[1, 0, 0, 0], [1, 1, 1, 0]], dtype=torch.bool)
    # sequence_mean: (2/1 + 3/3) / 2 = 1.5
    assert aggregate(loss_tokens, mask, "sequence_mean").item() == pytest.approx(1.5, rel=1e-12)
    # token_mean: (2 + 3) / 4 = 1.25
    assert aggregate(loss_tokens, mask, "token_mean").item() == pytest.approx(1.25, rel=1e-12)
    # constant with max_length 5: (2 + 3) / (2 * 5) = 0.5
    assert aggregate(loss_tokens, mask, "constant", max_length=5).item() == pytest.approx(0.5, rel=1e-12)


def test_sequence_mean_skips_empty_responses():
    loss_tokens = f64([[2.0, 4.0], [7.0, 7.0]])
    mask = f64([[1, 1], [0, 0]])
    assert aggregate(loss_tokens, mask, "sequence_mean").item() == pytest.approx(3.0, rel=1e-12)


def test_gspo_sequence_ratio_by_hand():
    # log ratio = [0.2, -0.1, 0.05] -> s = exp(0.15 / 3) = exp(0.05) = 1.0512711 for every token
    # A = 1, within the clip: loss = -s
    old = f64([[-1.0, -1.0, -1.0]])
    logprobs = leaf([[-0.8, -1.1, -0.95]])
    loss, m = policy_loss(logprobs, old, f64([1.0]), torch.ones(1, 3), ratio_level="sequence")
    s = math.exp(0.05)
    assert loss.item() == pytest.approx(-s, rel=1e-12)
    assert m["ratio_min"] == pytest.approx(s, rel=1e-12) and m["ratio_max"] == pytest.approx(s, rel=1e-12)
    # d(-s)/d logp_t = -s / |y| for each token (GSPO's sequence gradient)
    loss.backward()
    torch.testing.assert_close(logprobs.grad, torch.full((1, 3), -s / 3, dtype=F64), rtol=1e-12, atol=0)


def test_gspo_clips_the_whole_sequence():
    # s = exp(mean log ratio) = exp(0.3) = 1.3498588 > 1 + 0.2 with A > 0: every token clipped, no gradient
    old = f64([[0.0, 0.0]])
    logprobs = leaf([[0.5, 0.1]])
    loss, m = policy_loss(logprobs, old, f64([1.0]), torch.ones(1, 2), ratio_level="sequence")
    assert loss.item() == pytest.approx(-1.2, rel=1e-12)
    assert m["clip_fraction_high"] == 1.0
    loss.backward()
    assert torch.equal(logprobs.grad, torch.zeros(1, 2, dtype=F64))


def test_gspo_token_gradient_with_per_token_advantages():
    # GSPO-token: every token carries the sequence ratio's value s = exp(mean log ratio) but its own
    # gradient path, so d loss / d logp_t = -sg[s] * A_t / |y| (sequence_mean, unclipped).
    # log ratio = [0.1, -0.1, 0.3] -> s = exp(0.1) = 1.1051709; A = [1, -2, 0.5]
    old = f64([[-1.0, -1.0, -1.0]])
    logprobs = leaf([[-0.9, -1.1, -0.7]])
    adv = f64([[1.0, -2.0, 0.5]])
    loss, _ = policy_loss(logprobs, old, adv, torch.ones(1, 3), ratio_level="sequence")
    s = math.exp(0.1)
    assert loss.item() == pytest.approx(-s * (1 - 2 + 0.5) / 3, rel=1e-12)
    loss.backward()
    torch.testing.assert_close(logprobs.grad, -s * adv / 3, rtol=1e-12, atol=0)


def test_importance_weights_multiply_the_surrogate_only():
    # ratio 1, A = 2, weights [0.5, 1.5]: surrogate tokens -[1, 3] -> mean -2; KL term is unweighted
    logprobs = f64([[-1.0, -1.0]])
    ref = logprobs + f64([[0.5, 0.5]])
    weights = f64([[0.5, 1.5]])
    loss, m = policy_loss(
        logprobs,
        logprobs,
        f64([2.0]),
        torch.ones(1, 2),
        importance_weights=weights,
        ref_logprobs=ref,
        beta=1.0,
    )
    k3 = math.exp(0.5) - 1.5
    assert m["policy_loss"] == pytest.approx(-2.0, rel=1e-12)
    assert loss.item() == pytest.approx(-2.0 + k3, rel=1e-12)


def test_entropy_metric_and_bonus():
    # Uniform logits over V = 4: H = log 4 = 1.3862944 per token
    logprobs = leaf([[-1.0, -1.0]])
    logits = torch.zeros(1, 2, 4, dtype=F64, requires_grad=True)
    loss, m = policy_loss(
        logprobs, logprobs.detach(), f64([0.0]), torch.ones(1, 2), logits=logits, entropy_coef=0.1
    )
    assert m["entropy"] == pytest.approx(math.log(4), rel=1e-12)
    assert loss.item() == pytest.approx(-0.1 * math.log(4), rel=1e-12)
    loss.backward()
    # Uniform logits are the entropy maximum: the gradient of the bonus is zero there.
    torch.testing.assert_close(logits.grad, torch.zeros_like(logits), rtol=0, atol=1e-15)
    peaked = f64([[[3.0, 0.0, 0.0, 0.0]] * 2]).requires_grad_(True)
    loss, _ = policy_loss(
        logprobs, logprobs.detach(), f64([0.0]), torch.ones(1, 2), logits=peaked, entropy_coef=0.1
    )
    loss.backward()
    assert (peaked.grad[..., 0] > 0).all()  # descending the loss lowers the dominant logit: entropy up


def test_entropy_without_coef_does_not_track_gradient():
    logits = torch.randn(1, 2, 5, dtype=F64, requires_grad=True)
    logprobs = leaf([[-1.0, -1.0]])
    loss, m = policy_loss(logprobs, logprobs.detach(), f64([1.0]), torch.ones(1, 2), logits=logits)
    loss.backward()
    assert logits.grad is None and "entropy" in m


def test_per_token_advantages():
    # (N, T) advantages (PPO): ratio 1, A = [[1, -3]] -> loss = -(1 - 3) / 2 = 1
    logprobs = f64([[-1.0, -1.0]])
    loss, _ = policy_loss(logprobs, logprobs, f64([[1.0, -3.0]]), torch.ones(1, 2))
    assert loss.item() == pytest.approx(1.0, rel=1e-12)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_dtype_is_kept(dtype):
    logprobs = torch.tensor([[-1.0, -0.5]], dtype=dtype, requires_grad=True)
    old = torch.tensor([[-1.1, -0.4]], dtype=dtype)
    loss, m = policy_loss(logprobs, old, torch.tensor([1.0], dtype=dtype), torch.ones(1, 2, dtype=torch.bool))
    assert loss.dtype == dtype
    loss.backward()
    assert logprobs.grad.dtype == dtype
    assert all(isinstance(v, float) for v in m.values())


def test_garbage_under_padding_is_ignored():
    # Padding log-probs of +-inf / nan must not change the loss or make the gradient NaN.
    mask = f64([[1, 1, 0]])
    clean = leaf([[-1.0, -0.5, 0.0]])
    dirty = leaf([[-1.0, -0.5, float("inf")]])
    old = f64([[-1.2, -0.4, float("-inf")]])
    ref = f64([[-1.1, -0.6, float("nan")]])
    kwargs = dict(ref_logprobs=ref, beta=0.1, aggregation="token_mean")
    loss_clean, _ = policy_loss(clean, old.nan_to_num(neginf=0.0), f64([1.0]), mask, **kwargs)
    loss_dirty, m = policy_loss(dirty, old, f64([1.0]), mask, **kwargs)
    loss_clean.backward()
    loss_dirty.backward()
    assert loss_dirty.item() == pytest.approx(loss_clean.item(), rel=1e-12)
    torch.testing.assert_close(dirty.grad, clean.grad, rtol=1e-12, atol=0)
    assert all(math.isfinite(v) for v in m.values())


# ----------------------------------------------------------------------------------------------
# Gradient properties
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("aggregation", ["sequence_mean", "token_mean", "constant"])
def test_ratio_one_gives_the_plain_policy_gradient(aggregation):
    # At pi_theta = pi_old the clipped objective's gradient is the REINFORCE one: -A * grad log pi,
    # weighted by the aggregation: sequence_mean 1/(N |o_i|), token_mean 1/sum|o|, constant 1/(N L).
    gen = torch.Generator().manual_seed(0)
    logprobs = (-torch.rand(3, 4, generator=gen, dtype=F64)).requires_grad_(True)
    mask = f64([[1, 1, 1, 1], [1, 1, 0, 0], [1, 0, 0, 0]])
    adv = f64([0.7, -1.3, 2.0])
    loss, _ = policy_loss(logprobs, logprobs.detach(), adv, mask, aggregation=aggregation, max_length=6)
    loss.backward()
    lengths = mask.sum(1, keepdim=True)
    weight = {"sequence_mean": 1 / (3 * lengths), "token_mean": 1 / lengths.sum(), "constant": 1 / (3 * 6)}[
        aggregation
    ]
    torch.testing.assert_close(logprobs.grad, -adv[:, None] * mask * weight, rtol=1e-12, atol=0)


def test_zero_advantage_gives_zero_gradient():
    gen = torch.Generator().manual_seed(1)
    logprobs = (-torch.rand(2, 3, generator=gen, dtype=F64)).requires_grad_(True)
    old = logprobs.detach() + 0.5 * torch.randn(2, 3, generator=gen, dtype=F64)
    loss, _ = policy_loss(logprobs, old, torch.zeros(2, dtype=F64), torch.ones(2, 3))
    loss.backward()
    assert loss.item() == 0.0
    assert torch.equal(logprobs.grad, torch.zeros(2, 3, dtype=F64))


@settings(max_examples=80, deadline=None)
@given(
    log_ratio=st.floats(-1.0, 1.0),
    advantage=st.floats(-3.0, 3.0).filter(lambda a: abs(a) > 1e-3),
    eps_low=st.floats(0.05, 0.4),
    eps_high=st.floats(0.05, 0.4),
)
def test_clip_stops_gradient_only_in_the_advantage_direction(log_ratio, advantage, eps_low, eps_high):
    ratio = math.exp(log_ratio)
    # Stay away from the clip boundaries, where the subgradient is a convention.
    if min(abs(ratio - (1 - eps_low)), abs(ratio - (1 + eps_high))) < 1e-6:
        return
    logprobs = leaf([[-1.0 + log_ratio]])
    loss, m = policy_loss(
        logprobs,
        f64([[-1.0]]),
        f64([advantage]),
        torch.ones(1, 1),
        epsilon_low=eps_low,
        epsilon_high=eps_high,
    )
    loss.backward()
    clipped = (advantage > 0 and ratio > 1 + eps_high) or (advantage < 0 and ratio < 1 - eps_low)
    if clipped:
        assert logprobs.grad.item() == 0.0
        assert m["clip_fraction"] == 1.0
    else:
        # d/dlogp of -r * A = -A * r
        assert logprobs.grad.item() == pytest.approx(-advantage * ratio, rel=1e-12)
        assert m["clip_fraction"] == 0.0


@settings(max_examples=40, deadline=None)
@given(
    log_ratios=st.lists(st.floats(-0.5, 0.5), min_size=1, max_size=6),
    advantages=st.lists(st.floats(-2.0, 2.0), min_size=6, max_size=6),
    aggregation=st.sampled_from(["sequence_mean", "token_mean", "constant"]),
)
def test_sequence_and_token_levels_agree_for_length_one_responses(log_ratios, advantages, aggregation):
    N = len(log_ratios)
    old = torch.full((N, 3), -1.0, dtype=F64)
    mask = torch.zeros(N, 3, dtype=F64)
    mask[:, 0] = 1  # one real token per response; the rest is padding
    values = old + torch.cat([f64(log_ratios)[:, None], torch.full((N, 2), 0.7, dtype=F64)], 1)
    results = []
    for level in ("token", "sequence"):
        logprobs = values.clone().requires_grad_(True)
        loss, m = policy_loss(
            logprobs, old, f64(advantages[:N]), mask, ratio_level=level, aggregation=aggregation, max_length=3
        )
        loss.backward()
        results.append((loss.detach(), logprobs.grad, m["clip_fraction"]))
    torch.testing.assert_close(results[0][0], results[1][0], rtol=1e-12, atol=1e-15)
    torch.testing.assert_close(results[0][1], results[1][1], rtol=1e-12, atol=1e-15)
    assert results[0][2] == results[1][2]


# ----------------------------------------------------------------------------------------------
# gradcheck (float64)
# ----------------------------------------------------------------------------------------------


def _gradcheck_inputs(seed: int):
    gen = torch.Generator().manual_seed(seed)
    N, T, V = 3, 4, 5
    old = -torch.rand(N, T, generator=gen, dtype=F64) - 0.5
    # log ratios in +-0.15, clear of the 0.2 clip boundaries by far more than gradcheck's 1e-6 step
    logprobs = old + 0.3 * torch.rand(N, T, generator=gen, dtype=F64) - 0.15
    ref = old + 0.2 * torch.randn(N, T, generator=gen, dtype=F64)
    mask = f64([[1, 1, 1, 1], [1, 1, 0, 0], [1, 1, 1, 0]])
    adv = f64([1.0, -0.5, 0.8])
    logits = torch.randn(N, T, V, generator=gen, dtype=F64)
    return old, logprobs, ref, mask, adv, logits


@pytest.mark.parametrize("ratio_level", ["token", "sequence"])
@pytest.mark.parametrize("aggregation", ["sequence_mean", "token_mean", "constant"])
@pytest.mark.parametrize("kl_estimator", ["k2", "k3"])  # k3+ is straight-through: value and gradient differ
def test_gradcheck(ratio_level, aggregation, kl_estimator):
    old, logprobs, ref, mask, adv, logits = _gradcheck_inputs(0)
    # Clipped tokens too: scale one response's log ratio out of the trust region.
    logprobs[0] = old[0] + 0.4

    def fn(lp, lg):
        loss, _ = policy_loss(
            lp, old, adv, mask, ref_logprobs=ref, beta=0.05, kl_estimator=kl_estimator, ratio_level=ratio_level,
            aggregation=aggregation, max_length=5, logits=lg, entropy_coef=0.01,
        )  # fmt: skip
        return loss

    assert torch.autograd.gradcheck(fn, (logprobs.requires_grad_(True), logits.requires_grad_(True)))


def test_gradcheck_token_level_with_importance_weights_and_token_advantages():
    old, logprobs, ref, mask, _, _ = _gradcheck_inputs(1)
    adv = torch.randn(3, 4, generator=torch.Generator().manual_seed(2), dtype=F64)
    weights = f64([[0.5, 1.0, 1.5, 2.0]] * 3)

    def fn(lp):
        return policy_loss(lp, old, adv, mask, importance_weights=weights, ref_logprobs=ref, beta=0.1)[0]

    assert torch.autograd.gradcheck(fn, (logprobs.requires_grad_(True),))


# ----------------------------------------------------------------------------------------------
# Bad input
# ----------------------------------------------------------------------------------------------


def _ok_inputs():
    return f64([[-1.0, -1.0]]), f64([[-1.0, -1.0]]), f64([1.0]), torch.ones(1, 2)


@pytest.mark.parametrize(
    "kwargs,pattern",
    [
        ({"kl_estimator": "k4"}, r"kl_estimator='k4'.*\['k1', 'k2', 'k3', 'k3\+'\]"),
        ({"aggregation": "mean"}, r"aggregation='mean'.*\['constant', 'sequence_mean', 'token_mean'\]"),
        ({"ratio_level": "seq"}, r"ratio_level='seq'.*\['sequence', 'token'\]"),
        ({"aggregation": "constant"}, r"aggregation='constant' needs max_length"),
        ({"aggregation": "constant", "max_length": 1}, r"max_length=1 is shorter than the longest response"),
        ({"beta": 0.1}, r"beta=0.1 > 0 needs ref_logprobs"),
        ({"entropy_coef": 0.1}, r"entropy_coef=0.1 > 0 needs logits"),
        ({"epsilon_low": 1.5}, r"epsilon_low must be in \[0, 1\]"),
        ({"epsilon_high": -0.1}, r"epsilon_high must be >= 0"),
        ({"beta": -1.0}, r"beta must be >= 0"),
        ({"ref_logprobs": f64([[-1.0]])}, r"ref_logprobs has shape \(1, 1\) but logprobs has shape \(1, 2\)"),
        ({"importance_weights": f64([-1.0])}, r"importance_weights must have 2 dimension"),
        ({"logits": torch.zeros(1, 3, 4, dtype=F64)}, r"logits has shape \(1, 3, 4\)"),
    ],
)
def test_bad_keyword_arguments(kwargs, pattern):
    with pytest.raises(ValueError, match=pattern):
        policy_loss(*_ok_inputs(), **kwargs)


def test_bad_shapes_and_empty_batches():
    logprobs, old, adv, mask = _ok_inputs()
    with pytest.raises(ValueError, match=r"old_logprobs has shape \(1, 3\) but logprobs has shape \(1, 2\)"):
        policy_loss(logprobs, f64([[-1.0, -1.0, -1.0]]), adv, mask)
    with pytest.raises(ValueError, match=r"advantages has shape \(2,\); expected \(N,\) = \(1,\)"):
        policy_loss(logprobs, old, f64([1.0, 2.0]), mask)
    with pytest.raises(ValueError, match=r"mask has shape \(2, 2\) but logprobs has shape \(1, 2\)"):
        policy_loss(logprobs, old, adv, torch.ones(2, 2))
    with pytest.raises(ValueError, match=r"logprobs must have 2 dimension"):
        policy_loss(f64([-1.0]), old, adv, mask)
    with pytest.raises(ValueError, match=r"mask is empty"):
        policy_loss(torch.zeros(0, 2, dtype=F64), torch.zeros(0, 2, dtype=F64), f64([]), torch.zeros(0, 2))
    with pytest.raises(ValueError, match=r"mask has no real tokens"):
        policy_loss(logprobs, old, adv, torch.zeros(1, 2))
    with pytest.raises(ValueError, match=r"logprobs must be a floating-point tensor"):
        policy_loss(torch.zeros(1, 2, dtype=torch.long), old, adv, mask)


def test_registered_names():
    assert available("aggregation") == ["constant", "sequence_mean", "token_mean"]
    assert available("ratio") == ["sequence", "token"]
