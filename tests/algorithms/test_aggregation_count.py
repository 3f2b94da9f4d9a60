"""aggregation_count: each aggregation's normaliser, so micro-batch losses sum to the mini-batch loss."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from grpokit.algorithms import aggregate, aggregation_count, register
from grpokit.algorithms.registry import _AGGREGATION_COUNTS, _REGISTRIES

F64 = torch.float64


def test_counts_by_hand():
    # 3 rows: 2 tokens, 0 tokens, 3 tokens.
    mask = torch.tensor([[1, 1, 0], [0, 0, 0], [1, 1, 1]], dtype=torch.bool)
    assert aggregation_count("token_mean", mask) == 5.0
    assert aggregation_count("sequence_mean", mask) == 2.0
    assert aggregation_count("constant", mask) == 3.0


def test_micro_batches_by_hand():
    # Rows: [1, 2] (2 tokens), [3] (1 token), [6, 0, 0] (3 tokens); micro-batches {0}, {1, 2}.
    loss = torch.tensor([[1.0, 2.0, 9.0], [3.0, 9.0, 9.0], [6.0, 0.0, 0.0]], dtype=F64)
    mask = torch.tensor([[1, 1, 0], [1, 0, 0], [1, 1, 1]], dtype=F64)
    # token_mean: (1 + 2 + 3 + 6) / 6 = 2; micro: 1.5 * 2/6 + (9/4) * 4/6 = 0.5 + 1.5 = 2.
    # sequence_mean: (1.5 + 3 + 2) / 3 = 13/6; micro: 1.5 * 1/3 + 2.5 * 2/3 = 0.5 + 5/3 = 13/6.
    for name, full in (("token_mean", 2.0), ("sequence_mean", 13 / 6)):
        assert aggregate(loss, mask, name).item() == pytest.approx(full, rel=1e-12)
        total = sum(
            aggregate(loss[rows], mask[rows], name)
            * aggregation_count(name, mask[rows])
            / aggregation_count(name, mask)
            for rows in (slice(0, 1), slice(1, 3))
        )
        assert total.item() == pytest.approx(full, rel=1e-12)


@st.composite
def batches(draw):
    n = draw(st.integers(1, 8))
    t = draw(st.integers(1, 5))
    lengths = draw(st.lists(st.integers(0, t), min_size=n, max_size=n).filter(lambda ls: sum(ls) > 0))
    values = draw(st.lists(st.floats(-10, 10), min_size=n * t, max_size=n * t))
    cuts = sorted(set(draw(st.lists(st.integers(1, max(n - 1, 1)), max_size=n)))) if n > 1 else []
    return n, t, lengths, values, cuts


@pytest.mark.parametrize("name", ["token_mean", "sequence_mean", "constant"])
@settings(max_examples=60, deadline=None)
@given(batch=batches())
def test_weighted_micro_losses_sum_to_the_full_loss(name, batch):
    n, t, lengths, values, cuts = batch
    loss = torch.tensor(values, dtype=F64).reshape(n, t)
    mask = (torch.arange(t).expand(n, t) < torch.tensor(lengths).unsqueeze(1)).to(F64)
    full = aggregate(loss, mask, name, max_length=t)
    denominator = aggregation_count(name, mask)
    bounds = [0, *cuts, n]
    total = torch.zeros((), dtype=F64)
    for lo, hi in zip(bounds[:-1], bounds[1:]):
        if hi <= lo:
            continue
        micro = aggregate(loss[lo:hi], mask[lo:hi], name, max_length=t)
        total = total + micro * aggregation_count(name, mask[lo:hi]) / denominator
    torch.testing.assert_close(total, full, rtol=1e-10, atol=1e-10)


def test_custom_aggregation_declares_its_count():
    try:

        @register("aggregation", "row_sum_mean", count=lambda mask: float(mask.shape[0]))
        def row_sum_mean(loss_tokens, mask, max_length):
            return (loss_tokens * mask).sum() / loss_tokens.shape[0]

        @register("aggregation", "no_count")
        def no_count(loss_tokens, mask, max_length):
            return (loss_tokens * mask).sum()

        assert aggregation_count("row_sum_mean", torch.ones(3, 2)) == 3.0
        assert aggregate(torch.ones(2, 2), torch.ones(2, 2), "no_count").item() == 4.0  # still an aggregation
        with pytest.raises(ValueError, match=r"aggregation='no_count' was registered without a count"):
            aggregation_count("no_count", torch.ones(2, 2))
    finally:
        for name in ("row_sum_mean", "no_count"):
            _REGISTRIES["aggregation"].pop(name, None)
            _AGGREGATION_COUNTS.pop(name, None)


def test_bad_input():
    with pytest.raises(ValueError, match=r"aggregation='mean' is not a known aggregation name"):
        aggregation_count("mean", torch.ones(1, 1))
    with pytest.raises(ValueError, match=r"mask must have 2 dimension"):
        aggregation_count("token_mean", torch.ones(3))
    with pytest.raises(ValueError, match=r"count is declared by aggregations only, not by kind='kl'"):
        register("kl", "k9", count=lambda mask: 1.0)
