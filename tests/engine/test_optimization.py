import pytest
import torch

from grpokit.config import OptimConfig
from grpokit.engine.optimization import build_optimizer, build_scheduler


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
