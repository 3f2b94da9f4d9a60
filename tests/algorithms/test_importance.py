"""truncated_importance_weights (TIS between a rollout engine and the trainer)."""

import math

import pytest
import torch

from grpokit.algorithms import truncated_importance_weights

F64 = torch.float64


def f64(values):
    return torch.tensor(values, dtype=F64)


def test_token_level_by_hand():
    # trainer - rollout = [0.1, 1.0, -0.5] (+ a padding token); cap 2:
    # w = [e^0.1, min(e^1 = 2.718, 2), e^-0.5] = [1.1051709, 2, 0.6065307], padding 0
    rollout = f64([[-1.0, -2.0, -0.5, 3.0]])
    trainer = rollout + f64([[0.1, 1.0, -0.5, 40.0]])
    w, m = truncated_importance_weights(trainer, rollout, f64([[1, 1, 1, 0]]), cap=2.0)
    torch.testing.assert_close(w, f64([[math.exp(0.1), 2.0, math.exp(-0.5), 0.0]]), rtol=1e-12, atol=0)
    assert m["is_capped_fraction"] == pytest.approx(1 / 3, rel=1e-12)
    assert m["rollout_logprob_abs_diff"] == pytest.approx((0.1 + 1.0 + 0.5) / 3, rel=1e-12)
    assert m["is_weight_mean"] == pytest.approx((math.exp(0.1) + 2 + math.exp(-0.5)) / 3, rel=1e-12)
    # the spread over real tokens only: the padding's weight 0 is not the minimum
    assert m["is_weight_min"] == pytest.approx(math.exp(-0.5), rel=1e-12) and m["is_weight_max"] == 2.0


def test_sequence_level_by_hand_without_overflow():
    # row 0: sum of log ratios 0.4 + 0.2 = 0.6 -> e^0.6 = 1.8221188 < 2 on both tokens
    # row 1: sum = 500 + 500 = 1000 (e^1000 overflows) -> capped at 2
    rollout = torch.zeros(2, 2, dtype=F64)
    trainer = f64([[0.4, 0.2], [500.0, 500.0]])
    w, m = truncated_importance_weights(trainer, rollout, torch.ones(2, 2), level="sequence", cap=2.0)
    torch.testing.assert_close(w, f64([[math.exp(0.6)] * 2, [2.0, 2.0]]), rtol=1e-12, atol=0)
    assert m["is_capped_fraction"] == 0.5


def test_weights_are_detached_and_keep_dtype():
    trainer = torch.zeros(1, 2, requires_grad=True)
    w, _ = truncated_importance_weights(trainer, torch.zeros(1, 2), torch.ones(1, 2))
    assert not w.requires_grad and w.dtype == torch.float32


def test_bad_input():
    ok = (torch.zeros(1, 2), torch.zeros(1, 2), torch.ones(1, 2))
    with pytest.raises(ValueError, match=r"level='tok'.*\['token', 'sequence'\]"):
        truncated_importance_weights(*ok, level="tok")
    with pytest.raises(ValueError, match=r"cap must be > 0"):
        truncated_importance_weights(*ok, cap=0.0)
    with pytest.raises(ValueError, match=r"rollout_logprobs has shape \(1, 3\)"):
        truncated_importance_weights(ok[0], torch.zeros(1, 3), ok[2])
    with pytest.raises(ValueError, match=r"mask has no real tokens"):
        truncated_importance_weights(*ok[:2], torch.zeros(1, 2))
