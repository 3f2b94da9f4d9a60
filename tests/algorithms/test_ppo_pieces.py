"""PPO pieces: gae, kl_penalized_rewards, value_loss."""

import math

import pytest
import torch

from grpokit.algorithms import gae, kl_penalized_rewards, value_loss

F64 = torch.float64


def f64(values):
    return torch.tensor(values, dtype=F64)


# ----------------------------------------------------------------------------------------------
# GAE
# ----------------------------------------------------------------------------------------------


def test_gae_three_tokens_by_hand():
    # r = [0, 0, 1], V = [0.5, 0.6, 0.7], gamma = 0.9, lam = 0.8 (gamma * lam = 0.72), V after = 0
    # t=2: delta = 1 + 0.9*0 - 0.7 = 0.3;           A2 = 0.3
    # t=1: delta = 0 + 0.9*0.7 - 0.6 = 0.03;        A1 = 0.03 + 0.72*0.3 = 0.246
    # t=0: delta = 0 + 0.9*0.6 - 0.5 = 0.04;        A0 = 0.04 + 0.72*0.246 = 0.21712
    # returns = A + V = [0.71712, 0.846, 1.0]
    adv, ret = gae(f64([[0.0, 0.0, 1.0]]), f64([[0.5, 0.6, 0.7]]), torch.ones(1, 3), gamma=0.9, lam=0.8)
    torch.testing.assert_close(adv, f64([[0.21712, 0.246, 0.3]]), rtol=1e-12, atol=0)
    torch.testing.assert_close(ret, f64([[0.71712, 0.846, 1.0]]), rtol=1e-12, atol=0)


def test_gae_right_padding_bootstraps_zero_and_ignores_garbage():
    # Same response with a padding token holding reward 5 and value 100: nothing changes; padding -> 0.
    adv, ret = gae(
        f64([[0.0, 0.0, 1.0, 5.0]]), f64([[0.5, 0.6, 0.7, 100.0]]), f64([[1, 1, 1, 0]]), gamma=0.9, lam=0.8
    )
    torch.testing.assert_close(adv, f64([[0.21712, 0.246, 0.3, 0.0]]), rtol=1e-12, atol=0)
    torch.testing.assert_close(ret, f64([[0.71712, 0.846, 1.0, 0.0]]), rtol=1e-12, atol=0)


def test_gae_bootstrap_values():
    # V after the last token = 2: t=2 delta = 1 + 0.9*2 - 0.7 = 2.1; A1 = 0.03 + 0.72*2.1 = 1.542
    adv, _ = gae(
        f64([[0.0, 1.0]]),
        f64([[0.6, 0.7]]),
        torch.ones(1, 2),
        gamma=0.9,
        lam=0.8,
        bootstrap_values=f64([2.0]),
    )
    torch.testing.assert_close(adv, f64([[0.03 + 0.72 * 2.1, 2.1]]), rtol=1e-12, atol=0)


def test_gae_lambda_one_gamma_one_is_monte_carlo():
    # A_t = sum_{k >= t} r_k - V_t
    rewards, values = f64([[1.0, -2.0, 0.5, 3.0]]), f64([[0.1, 0.2, 0.3, 0.4]])
    adv, ret = gae(rewards, values, torch.ones(1, 4), gamma=1.0, lam=1.0)
    torch.testing.assert_close(ret, f64([[2.5, 1.5, 3.5, 3.0]]), rtol=1e-12, atol=0)
    torch.testing.assert_close(adv, ret - values, rtol=1e-12, atol=0)


def test_gae_skips_masked_tokens_in_the_middle():
    # mask [1, 0, 1]: the result on the real tokens equals GAE of the compressed 2-token sequence.
    full_adv, _ = gae(f64([[0.2, 9.0, 1.0]]), f64([[0.5, 9.0, 0.7]]), f64([[1, 0, 1]]), gamma=0.9, lam=0.8)
    short_adv, _ = gae(f64([[0.2, 1.0]]), f64([[0.5, 0.7]]), torch.ones(1, 2), gamma=0.9, lam=0.8)
    torch.testing.assert_close(full_adv[:, [0, 2]], short_adv, rtol=1e-12, atol=0)
    assert full_adv[0, 1].item() == 0.0


def slow_gae(rewards, values, lengths, gamma, lam):
    out = []
    for r, v, n in zip(rewards.tolist(), values.tolist(), lengths.tolist()):
        row = [0.0] * len(r)
        for t in range(n):
            total = 0.0
            for k in range(t, n):
                next_v = v[k + 1] if k + 1 < n else 0.0
                delta = r[k] + gamma * next_v - v[k]
                total += (gamma * lam) ** (k - t) * delta
            row[t] = total
        out.append(row)
    return f64(out)


@pytest.mark.parametrize("seed,gamma,lam", [(0, 1.0, 0.95), (1, 0.99, 0.95), (2, 0.9, 0.0), (3, 0.5, 1.0)])
def test_gae_matches_slow_reference(seed, gamma, lam):
    gen = torch.Generator().manual_seed(seed)
    N, T = 6, 9
    rewards = torch.randn(N, T, generator=gen, dtype=F64)
    values = torch.randn(N, T, generator=gen, dtype=F64)
    lengths = torch.randint(1, T + 1, (N,), generator=gen)
    mask = torch.arange(T)[None] < lengths[:, None]
    adv, ret = gae(rewards, values, mask, gamma=gamma, lam=lam)
    expected = slow_gae(rewards, values, lengths, gamma, lam)
    torch.testing.assert_close(adv, expected, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(ret, (expected + values) * mask, rtol=1e-10, atol=1e-12)


def test_gae_bad_input():
    ok = (torch.zeros(1, 2), torch.zeros(1, 2), torch.ones(1, 2))
    with pytest.raises(ValueError, match=r"gamma must be in \[0, 1\]"):
        gae(*ok, gamma=1.5)
    with pytest.raises(ValueError, match=r"lam must be in \[0, 1\]"):
        gae(*ok, lam=-0.1)
    with pytest.raises(ValueError, match=r"token_rewards has shape \(1, 3\) but values has shape \(1, 2\)"):
        gae(torch.zeros(1, 3), *ok[1:])
    with pytest.raises(ValueError, match=r"bootstrap_values has 2 entries but values has 1 rows"):
        gae(*ok, bootstrap_values=torch.zeros(2))


# ----------------------------------------------------------------------------------------------
# KL-penalised rewards
# ----------------------------------------------------------------------------------------------


def test_kl_penalized_rewards_by_hand():
    # k1 = log pi - log ref = [-1 + 1.5, -2 + 2, -0.5 + 0.25] = [0.5, 0, -0.25]; beta = 0.1
    # r = -0.1 * k1 = [-0.05, 0, 0.025], plus the score 2 on the last real token (index 2): 2.025
    logprobs = f64([[-1.0, -2.0, -0.5, 7.0]])
    ref = f64([[-1.5, -2.0, -0.25, -7.0]])
    mask = f64([[1, 1, 1, 0]])
    rewards = kl_penalized_rewards(f64([2.0]), logprobs, ref, mask, beta=0.1)
    torch.testing.assert_close(rewards, f64([[-0.05, 0.0, 2.025, 0.0]]), rtol=1e-12, atol=0)


def test_kl_penalized_rewards_with_step_scores_and_k3():
    # step scores on tokens 0 and 1, k3 of [0.5, 0]: e^-0.5 + 0.5 - 1 = 0.1065307 and 0
    logprobs, ref = f64([[-1.0, -2.0]]), f64([[-1.5, -2.0]])
    rewards = kl_penalized_rewards(
        f64([[0.3, 1.0]]), logprobs, ref, torch.ones(1, 2), beta=1.0, kl_estimator="k3"
    )
    torch.testing.assert_close(rewards, f64([[0.3 - (math.exp(-0.5) - 0.5), 1.0]]), rtol=1e-12, atol=0)


def test_kl_penalized_rewards_are_detached_and_validate():
    logprobs = torch.zeros(2, 2, dtype=F64, requires_grad=True)
    rewards = kl_penalized_rewards(
        f64([1.0, 1.0]), logprobs, torch.zeros(2, 2, dtype=F64), torch.ones(2, 2), 0.1
    )
    assert not rewards.requires_grad
    with pytest.raises(ValueError, match=r"mask row 1 has no real token"):
        kl_penalized_rewards(
            f64([1.0, 1.0]), logprobs, torch.zeros(2, 2, dtype=F64), f64([[1, 1], [0, 0]]), 0.1
        )
    with pytest.raises(ValueError, match=r"scores has shape \(3,\); expected \(N,\) = \(2,\)"):
        kl_penalized_rewards(
            f64([1.0, 1.0, 1.0]), logprobs, torch.zeros(2, 2, dtype=F64), torch.ones(2, 2), 0.1
        )
    with pytest.raises(ValueError, match=r"kl_estimator='k9'"):
        kl_penalized_rewards(
            f64([1.0, 1.0]), logprobs, torch.zeros(2, 2, dtype=F64), torch.ones(2, 2), 0.1, "k9"
        )


# ----------------------------------------------------------------------------------------------
# Value loss
# ----------------------------------------------------------------------------------------------


def test_value_loss_by_hand():
    # token 0: V = 1.0, V_old = 0.5, R = 2: unclipped (1 - 2)^2 = 1;
    #          clip(V) = 0.5 + clamp(0.5, -0.2, 0.2) = 0.7 -> (0.7 - 2)^2 = 1.69; max = 1.69 (clipped used)
    # token 1: V = 2, V_old = 2, R = 1: both (2 - 1)^2 = 1 (not counted as clipped)
    # loss = 0.5 * (1.69 + 1) / 2 = 0.6725 (token mean); the padding token is ignored
    values = f64([[1.0, 2.0, 50.0]]).requires_grad_(True)
    loss, m = value_loss(values, f64([[0.5, 2.0, 0.0]]), f64([[2.0, 1.0, -50.0]]), f64([[1, 1, 0]]))
    assert loss.item() == pytest.approx(0.6725, rel=1e-12)
    assert m["value_loss"] == pytest.approx(0.6725, rel=1e-12)
    assert m["value_clip_fraction"] == 0.5
    # explained variance: R = [2, 1] var 0.25; R - V = [1, -1] var 1 -> 1 - 1 / 0.25 = -3
    assert m["explained_variance"] == pytest.approx(-3.0, rel=1e-12)
    assert m["value_mean"] == pytest.approx(1.5, rel=1e-12)
    loss.backward()
    # token 0 uses the clipped branch (its V is outside V_old +- 0.2): no gradient; token 1: 0.5 * 2 * (2 - 1) / 2
    torch.testing.assert_close(values.grad, f64([[0.0, 0.5, 0.0]]), rtol=1e-12, atol=0)


def test_value_loss_unclipped_and_perfect_prediction():
    returns = f64([[1.0, 3.0]])
    loss, m = value_loss(returns.clone(), f64([[0.0, 0.0]]), returns, torch.ones(1, 2), cliprange_value=None)
    assert loss.item() == 0.0
    assert m["explained_variance"] == 1.0 and m["value_clip_fraction"] == 0.0
    # constant returns: explained variance undefined
    _, m = value_loss(f64([[0.0, 1.0]]), f64([[0.0, 1.0]]), f64([[2.0, 2.0]]), torch.ones(1, 2))
    assert math.isnan(m["explained_variance"])


def test_value_loss_gradcheck():
    gen = torch.Generator().manual_seed(0)
    old = torch.randn(3, 4, generator=gen, dtype=F64)
    # moves of +-0.1 and +-0.5 around V_old: some inside, some outside the 0.2 clip, none near the edge
    values = old + f64([[0.1, -0.5, 0.5, -0.1]] * 3)
    returns = torch.randn(3, 4, generator=gen, dtype=F64)
    mask = f64([[1, 1, 1, 1], [1, 1, 0, 0], [1, 1, 1, 0]])
    for aggregation in ("token_mean", "sequence_mean"):
        fn = lambda v, a=aggregation: value_loss(v, old, returns, mask, aggregation=a)[0]  # noqa: E731
        assert torch.autograd.gradcheck(fn, (values.requires_grad_(True),))


def test_value_loss_bad_input():
    ok = (torch.zeros(1, 2), torch.zeros(1, 2), torch.zeros(1, 2), torch.ones(1, 2))
    with pytest.raises(ValueError, match=r"returns has shape \(1, 3\) but values has shape \(1, 2\)"):
        value_loss(ok[0], ok[1], torch.zeros(1, 3), ok[3])
    with pytest.raises(ValueError, match=r"cliprange_value must be > 0"):
        value_loss(*ok, cliprange_value=0.0)
    with pytest.raises(ValueError, match=r"aggregation='sum'.*\['constant', 'sequence_mean', 'token_mean'\]"):
        value_loss(*ok, aggregation="sum")
    with pytest.raises(ValueError, match=r"mask has no real tokens"):
        value_loss(*ok[:3], torch.zeros(1, 2))
