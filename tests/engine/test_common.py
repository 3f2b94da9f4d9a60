import pytest
import torch

from grpokit.config import GRPOConfig, OptimConfig
from grpokit.engine.common import (
    ReferencePolicy,
    build_optimizer,
    build_scheduler,
    iterate_minibatches,
    micro_weight,
    prepare_run_dir,
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


def test_micro_weights_follow_the_aggregation():
    mini = torch.tensor([[1, 1, 1], [1, 0, 0], [0, 0, 0], [1, 1, 0]], dtype=torch.float)
    micro = mini[:2]
    assert micro_weight("token_mean", micro, mini) == pytest.approx(4 / 6)
    assert micro_weight("sequence_mean", micro, mini) == pytest.approx(2 / 3)  # non-empty rows
    assert micro_weight("constant", micro, mini) == pytest.approx(2 / 4)


@pytest.mark.parametrize(
    ("name", "expected"), [("constant", [0.5, 1.0, 1.0, 1.0]), ("linear", [0.5, 1.0, 2 / 3, 1 / 3])]
)
def test_schedule_warms_up_then_decays_per_training_step(name, expected):
    model = torch.nn.Linear(2, 2)
    optim = OptimConfig(learning_rate=1.0, warmup_steps=2, lr_scheduler=name)
    optimizer = build_optimizer(model, optim)
    scheduler = build_scheduler(optimizer, optim, total_steps=5)
    lrs = []
    for _ in range(4):
        optimizer.step()
        scheduler.step()
        lrs.append(scheduler.get_last_lr()[0])
    assert lrs == pytest.approx(expected)


def test_warmup_ratio_is_a_fraction_of_max_steps():
    optim = OptimConfig(learning_rate=1.0, warmup_ratio=0.5)
    scheduler = build_scheduler(build_optimizer(torch.nn.Linear(2, 2), optim), optim, total_steps=4)
    assert scheduler.get_last_lr()[0] == 0.0  # step 0 of a 2-step warmup


def test_optimizer_skips_frozen_parameters():
    model = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.Linear(2, 2))
    model[0].requires_grad_(False)
    optimizer = build_optimizer(model, OptimConfig())
    assert sum(len(g["params"]) for g in optimizer.param_groups) == 2
    with pytest.raises(ValueError, match="no trainable parameters"):
        build_optimizer(model.requires_grad_(False), OptimConfig())


def test_reference_is_a_frozen_copy_synced_on_schedule():
    policy = torch.nn.Linear(2, 2)
    reference = ReferencePolicy(policy, sync_steps=2)
    assert reference.model is not policy and not any(p.requires_grad for p in reference.model.parameters())
    with torch.no_grad():
        policy.weight.add_(1.0)
    assert not reference.maybe_sync(policy, 1) and not torch.equal(reference.model.weight, policy.weight)
    assert reference.maybe_sync(policy, 2) and torch.equal(reference.model.weight, policy.weight)


def test_run_dir_is_never_reused_by_a_fresh_run(tmp_path):
    config = GRPOConfig(logging={"output_dir": str(tmp_path), "run_name": "r"})
    run = prepare_run_dir(config, "grpo")
    assert (run / "config.yaml").is_file()
    (run / "metrics.jsonl").write_text("")
    with pytest.raises(ValueError, match="already holds a run; .* --resume"):
        prepare_run_dir(config, "grpo")
