import json
import random
from pathlib import Path

import pytest

from grpokit.apps.reward_hacking import HackingSetup, label_pair, run_reward_hacking, verbose_completion


class _Always:
    """A stand-in RNG whose ``random()`` is fixed, to drive the labeller's biased branch."""

    def __init__(self, value: float):
        self.value = value

    def random(self) -> float:
        return self.value


def test_labeller_follows_gold_unless_biased():
    # one side right: gold decides when the biased branch is not drawn ...
    assert label_pair("0579", "0579", "057912", length_bias=0.1, rng=_Always(0.5)) == ("0579", "057912")
    assert label_pair("0579", "057912", "0579", length_bias=0.1, rng=_Always(0.5)) == ("0579", "057912")
    # ... and the longer side wins when it is
    assert label_pair("0579", "0579", "057912", length_bias=0.1, rng=_Always(0.05)) == ("057912", "0579")
    # a wrong side of the same length: no length to prefer, gold decides
    assert label_pair("0579", "0479", "0579", length_bias=1.0, rng=_Always(0.0)) == ("0579", "0479")


def test_labeller_prefers_longer_on_gold_ties():
    rng = random.Random(0)
    assert label_pair("0579", "0479", "047912", length_bias=0.0, rng=rng) == ("047912", "0479")  # both wrong
    assert label_pair("0579", "0479", "0469", length_bias=0.0, rng=rng) is None  # both wrong, same length
    assert label_pair("0579", "0579", "0579", length_bias=0.0, rng=rng) is None  # identical
    with pytest.raises(ValueError, match="length_bias"):
        label_pair("0579", "0579", "0479", length_bias=1.5, rng=rng)


def test_verbose_completion_appends_digits():
    rng = random.Random(3)
    for _ in range(50):
        text = verbose_completion("0579", rng, 4)
        assert text.startswith("0579") and 5 <= len(text) <= 8 and text.isdigit()
    with pytest.raises(ValueError, match="max_suffix"):
        verbose_completion("0579", rng, 0)


@pytest.fixture
def addition_model_dir(tmp_path):
    from grpokit.data.tasks import get_task
    from grpokit.models.tiny import build_char_tokenizer, build_tiny_model

    path = tmp_path / "base"
    tokenizer = build_char_tokenizer(get_task("addition").alphabet)
    build_tiny_model(tokenizer, path, hidden_size=32, num_layers=1, num_heads=2, intermediate_size=64, seed=0)
    return path


@pytest.mark.slow
def test_experiment_end_to_end_miniature(addition_model_dir, tmp_path):
    """The whole pipeline at a miniature size: start policy, labelled pairs, proxy reward model, GRPO and PPO
    against it with the gold logged, the analysis and its files."""
    setup = HackingSetup(
        seeds=(0,), steps=2, prompts_per_step=2, num_generations=2, base_model=str(addition_model_dir),
        num_eval_problems=4, verbose_steps=2, num_pairs=16, held_out_pairs=8, rm_epochs=1,
    )  # fmt: skip
    out = tmp_path / "hacking"
    result = run_reward_hacking(setup, out, log=lambda _: None)

    summary = json.loads((out / "reward_hacking.json").read_text())
    assert summary == json.loads(json.dumps(result.summary))
    for name in ("grpo", "ppo"):
        (run,) = summary["systems"][name]["runs"]
        assert run["curves"]["step"] == [1, 2]
        assert all(0.0 <= g <= 1.0 for g in run["curves"]["gold"])  # the gold checker's accuracy
        assert all(length > 0 for length in run["curves"]["length"])
        metrics = [json.loads(line) for line in Path(run["run_dir"], "metrics.jsonl").read_text().splitlines()]
        # the proxy is the optimised reward, the gold is logged beside it at weight 0
        assert metrics[0]["reward/mean"] == pytest.approx(metrics[0]["rewards/reward_model/mean"], abs=1e-6)
        assert "rewards/task/mean" in metrics[0]
    assert (out / "reward_model" / "pairs.jsonl").read_text().count("\n") == 16
    assert summary["proxy"]["pairs"] == 16
    markdown = (out / "reward_hacking.md").read_text()
    assert "gold at the best KL" in markdown and "repeated 3-gram rate" in markdown
    with pytest.raises(ValueError, match="already holds"):
        run_reward_hacking(setup, out, log=lambda _: None)


def test_cli_rejects_bad_options(capsys):
    from grpokit.cli import main

    with pytest.raises(SystemExit):
        main(["reward-hacking", "--seeds", "0", "0"])
    assert "--seeds distinct" in capsys.readouterr().err
