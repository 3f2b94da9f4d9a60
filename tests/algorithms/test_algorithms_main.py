"""``python -m grpokit.algorithms`` prints the worked example."""

import runpy


def test_worked_example_prints_every_estimator_and_the_loss(capsys):
    runpy.run_module("grpokit.algorithms", run_name="__main__")
    out = capsys.readouterr().out
    # rewards [1, 0, 0.5, 1]: mean 0.625 -> dr_grpo [+0.375, -0.625, -0.125, +0.375]
    assert "dr_grpo            [+0.3750, -0.6250, -0.1250, +0.3750]" in out
    # rloo: 1 - (0 + 0.5 + 1) / 3 = 0.5; 0 - 2.5 / 3 = -0.8333
    assert "rloo               [+0.5000, -0.8333, -0.1667, +0.5000]" in out
    for name in ("grpo ", "grpo_batch_norm", "rank", "clip_fraction", "ratio_max", "kl "):
        assert name in out
