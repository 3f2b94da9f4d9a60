"""The one update engine, on a toy objective: minibatches, accumulation, pi_old, normalisation, the guard."""

import math

import pytest
import torch

from grpokit.algorithms import aggregate
from grpokit.engine.update import (
    MicroLoss,
    OptimizerSlot,
    UpdateSchedule,
    budget_pieces,
    iterate_minibatches,
    run_update,
    split_to_budget,
    step_optimizers,
)


def test_minibatches_partition_rows_into_micro_batches():
    batches = list(iterate_minibatches(8, 4, 2, torch.Generator().manual_seed(0)))
    assert [[len(m) for m in mb] for mb in batches] == [[2, 2], [2, 2]]
    rows = torch.cat([torch.cat(mb) for mb in batches])
    assert sorted(rows.tolist()) == list(range(8))
    assert rows.tolist() != list(range(8))  # shuffled when there are several minibatches


def test_single_minibatch_keeps_order_and_ragged_batches_keep_every_row():
    assert [m.tolist() for m in next(iterate_minibatches(4, None, 2))] == [[0, 1], [2, 3]]
    ragged = list(iterate_minibatches(10, 4, 1, torch.Generator().manual_seed(0)))
    assert [sum(len(m) for m in mb) for mb in ragged] == [4, 4, 2]


class LinearPolicy:
    """pi_theta(a_t) = softmax(theta)[a_t] over 3 actions: (N, T) log-probs of fixed actions, as an Objective."""

    def __init__(self, actions, advantages, aggregation="token_mean", nonfinite=False):
        self.theta = torch.nn.Parameter(torch.tensor([0.1, -0.2, 0.3]))
        self.actions, self.advantages, self.aggregation = actions, advantages, aggregation
        self.pi_old_calls, self.seen_old, self.nonfinite = 0, [], nonfinite

    def logprobs(self, rows):
        return torch.log_softmax(self.theta, 0)[self.actions[rows]]  # (n, T)

    def pi_old(self):
        self.pi_old_calls += 1
        with torch.no_grad():
            return self.logprobs(torch.arange(len(self.actions)))

    def micro_loss(self, rows, pi_old):
        logprobs = self.logprobs(rows)
        old = logprobs.detach() if pi_old is None else pi_old[rows]
        self.seen_old.append(pi_old is not None)
        ratio = torch.exp(logprobs - old)
        mask = torch.ones_like(logprobs)
        loss = aggregate(
            -ratio * self.advantages[rows, None], mask, self.aggregation, max_length=logprobs.shape[1]
        )
        if self.nonfinite:
            loss = loss * math.inf
        return MicroLoss(loss, {"ratio_max": float(ratio.max())}, tokens=int(mask.sum()))


def toy(aggregation="token_mean", **kw):
    actions = torch.tensor([[0, 1, 2], [2, 2, 0], [1, 0, 0], [0, 0, 1]])
    return LinearPolicy(actions, torch.tensor([1.0, -1.0, 0.5, 2.0]), aggregation, **kw)


def update(objective, schedule, loss_mask=None, lr=0.1):
    optimizer = torch.optim.SGD([objective.theta], lr=lr)
    loss_mask = torch.ones(4, 3) if loss_mask is None else loss_mask
    return run_update(
        objective, loss_mask, aggregation=objective.aggregation,
        optimizers=[OptimizerSlot(optimizer, [objective.theta], None)], schedule=schedule,
        generator=torch.Generator().manual_seed(0),
    )  # fmt: skip


@pytest.mark.parametrize(
    ("schedule", "steps"),
    [(UpdateSchedule(), 1), (UpdateSchedule(num_iterations=2), 2), (UpdateSchedule(mini_batch_size=2), 2)],
)
def test_pi_old_is_frozen_once_exactly_when_a_batch_gets_several_steps(schedule, steps):
    objective = toy()
    stats = update(objective, schedule)
    assert stats.optimizer_steps == steps
    assert objective.pi_old_calls == (steps > 1)
    assert all(objective.seen_old) == (steps > 1)
    if steps > 1:  # the second step sees the moved policy against the frozen pi_old
        assert stats.metrics["ratio_max"] > 1.0


@pytest.mark.parametrize("aggregation", ["token_mean", "sequence_mean", "constant"])
def test_accumulation_gives_the_whole_minibatch_gradient_and_logged_loss(aggregation):
    results = []
    for accumulation in (1, 2, 4):
        objective = toy(aggregation)
        stats = update(objective, UpdateSchedule(gradient_accumulation_steps=accumulation), lr=1.0)
        results.append((objective.theta.detach().clone(), stats.metrics["loss"]))
    for theta, loss in results[1:]:
        torch.testing.assert_close(theta, results[0][0])
        assert loss == pytest.approx(results[0][1])


def test_a_minibatch_without_loss_tokens_takes_no_step():
    objective = toy()
    mask = torch.ones(4, 3)
    mask[[0, 2]] = 0  # the first minibatch of the strided partition (rows 0 and 2)
    stats = update(objective, UpdateSchedule(mini_batch_size=2, shuffle=False), loss_mask=mask)
    assert stats.optimizer_steps == 1


def test_a_non_finite_loss_skips_every_optimizer_and_is_counted():
    objective = toy(nonfinite=True)
    before = objective.theta.detach().clone()
    stats = update(objective, UpdateSchedule(num_iterations=2))
    assert stats.nonfinite_skipped == 2 and stats.optimizer_steps == 0
    assert torch.equal(objective.theta.detach(), before)


def test_step_optimizers_skips_non_finite_gradients_without_touching_adam():
    layer, value = torch.nn.Linear(2, 1), torch.nn.Linear(2, 1)
    slots = [
        OptimizerSlot(torch.optim.AdamW(layer.parameters(), lr=0.1), list(layer.parameters()), 1.0),
        OptimizerSlot(torch.optim.AdamW(value.parameters(), lr=0.1), list(value.parameters()), 1.0, "value"),
    ]
    (layer(torch.ones(1, 2)).sum() + value(torch.ones(1, 2)).sum()).backward()
    assert step_optimizers(slots) is not None
    before = {k: v.clone() for k, v in layer.state_dict().items()}
    adam = {k: v.clone() for k, v in slots[0].optimizer.state[layer.weight].items()}
    # Only the value model's gradient is non-finite: the policy must not step either.
    (layer(torch.ones(1, 2)).sum() + value(torch.ones(1, 2)).sum() * math.inf).backward()
    assert step_optimizers(slots) is None
    assert all(torch.equal(before[k], v) for k, v in layer.state_dict().items())
    assert all(torch.equal(adam[k], v) for k, v in slots[0].optimizer.state[layer.weight].items())
    assert layer.weight.grad is None and value.weight.grad is None
    # A finite gradient but a NaN loss (e.g. from a term without gradient) is skipped too.
    (layer(torch.ones(1, 2)).sum() + value(torch.ones(1, 2)).sum()).backward()
    assert step_optimizers(slots, loss_finite=False) is None


def test_minibatch_size_is_per_process():
    schedule = UpdateSchedule(mini_batch_size=4)
    assert schedule.local_mini_batch_size(1) == 4 and schedule.local_mini_batch_size(2) == 2
    # 8 rows on one process and 4 on each of two take the same number of optimizer steps.
    assert schedule.optimizer_steps(8, 1) == schedule.optimizer_steps(4, 2) == 2
    with pytest.raises(ValueError, match="mini_batch_size"):
        UpdateSchedule(mini_batch_size=3).local_mini_batch_size(2)


def test_unshuffled_minibatches_are_strided_so_process_shards_agree():
    one = [torch.cat(mb).tolist() for mb in iterate_minibatches(8, 4, 1, shuffle=False)]
    assert one == [[0, 2, 4, 6], [1, 3, 5, 7]]
    # Two processes holding rows 0..3 and 4..7, each taking 2 rows per step: the union is the same minibatch.
    local = [torch.cat(mb).tolist() for mb in iterate_minibatches(4, 2, 1, shuffle=False)]
    assert [sorted(rows + [r + 4 for r in rows]) for rows in local] == one


def test_token_budget_splits_into_the_fewest_pieces_that_fit():
    row_tokens = torch.tensor([10, 10, 10, 10, 40, 10, 10, 10])
    rows = torch.arange(8)
    assert budget_pieces(rows, row_tokens, 1000) == 1  # 8 x 40 fits: unsplit
    for budget in (80, 100, 160, 39):
        k = budget_pieces(rows, row_tokens, budget)
        pieces = split_to_budget([rows], [k])
        assert torch.equal(torch.cat(pieces), rows) and all(len(p) >= 1 for p in pieces)
        # every piece fits (a single row over the budget is still one piece)...
        assert all(len(p) == 1 or len(p) * int(row_tokens[p].max()) <= budget for p in pieces)
        if k > 1:  # ...and one piece fewer would not
            assert any(len(p) * int(row_tokens[p].max()) > budget for p in torch.tensor_split(rows, k - 1))
    assert budget_pieces(rows, row_tokens, 39) == 8  # the 40-token row alone is over: one row per piece


@pytest.mark.parametrize("aggregation", ["token_mean", "sequence_mean", "constant"])
@pytest.mark.parametrize("accumulation", [1, 2])
def test_token_budget_splits_micro_batches_and_keeps_the_gradient(aggregation, accumulation):
    """Rows of 3 tokens and a budget of 4: every micro-batch holds one row, the update is unchanged."""
    calls = {}
    results = {}
    loss_mask = torch.ones(4, 3)  # the toy's own mask
    for budget in (None, 6, 4):
        objective = toy(aggregation)
        seen = []
        real = objective.micro_loss
        objective.micro_loss = lambda rows, pi_old, real=real, seen=seen: (
            seen.append(len(rows)),
            real(rows, pi_old),
        )[1]
        optimizer = torch.optim.SGD([objective.theta], lr=1.0)
        stats = run_update(
            objective, loss_mask, aggregation=aggregation,
            optimizers=[OptimizerSlot(optimizer, [objective.theta], None)],
            schedule=UpdateSchedule(gradient_accumulation_steps=accumulation, micro_batch_tokens=budget),
            row_tokens=torch.full((4,), 3),
        )  # fmt: skip
        calls[budget] = seen
        results[budget] = (objective.theta.detach().clone(), stats.metrics["loss"])
    assert calls[None] == [4 // accumulation] * accumulation
    assert calls[6] == [2, 2] and calls[4] == [1, 1, 1, 1]
    for budget in (6, 4):
        torch.testing.assert_close(results[budget][0], results[None][0])
        assert results[budget][1] == pytest.approx(results[None][1])


def test_token_budget_needs_row_tokens():
    """Without row_tokens (an objective that does not count tokens) the budget does not split."""
    objective = toy()
    seen = []
    real = objective.micro_loss
    objective.micro_loss = lambda rows, pi_old: (seen.append(len(rows)), real(rows, pi_old))[1]
    update(objective, UpdateSchedule(micro_batch_tokens=1))
    assert seen == [4]
