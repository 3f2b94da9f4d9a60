"""The name registries: lookup, custom entries, duplicate guard, errors."""

import pytest
import torch

from grpokit.algorithms import available, group_advantages, policy_loss, register
from grpokit.algorithms.registry import _REGISTRIES


def test_every_kind_lists_its_builtins():
    assert available("advantage") == ["dr_grpo", "grpo", "grpo_batch_norm", "rank", "rloo"]
    assert available("kl") == ["k1", "k2", "k3", "k3+"]
    assert available("aggregation") == ["constant", "sequence_mean", "token_mean"]
    assert available("ratio") == ["sequence", "token"]
    assert available("loss") == ["cispo", "grpo", "gspo", "ppo", "sapo"]


def test_unknown_kind_lists_the_kinds():
    kinds = r"\['advantage', 'kl', 'aggregation', 'ratio', 'loss'\]"
    with pytest.raises(ValueError, match=rf"kind='optimizer'.*{kinds}"):
        available("optimizer")
    with pytest.raises(ValueError, match=r"kind='optimizer'"):
        register("optimizer", "x")


def test_custom_entries_work_everywhere_a_builtin_does():
    try:

        @register("advantage", "max_baseline")
        def max_baseline(rewards, groups, eps):
            best = rewards.new_full((groups.num_groups,), float("-inf")).scatter_reduce(
                0, groups.inverse, rewards, "amax"
            )
            return rewards - best[groups.inverse]

        @register("aggregation", "sum")
        def total(loss_tokens, mask, max_length):
            return (loss_tokens * mask).sum()

        assert "max_baseline" in available("advantage")
        # group [1, 3, 2]: baseline 3 -> [-2, 0, -1]
        adv = group_advantages(torch.tensor([1.0, 3.0, 2.0]), torch.tensor([0, 0, 0]), "max_baseline")
        torch.testing.assert_close(adv, torch.tensor([-2.0, 0.0, -1.0]), rtol=0, atol=0)
        # ratio 1, A = 1 on 2 tokens, summed: -2
        loss, _ = policy_loss(
            torch.zeros(1, 2), torch.zeros(1, 2), torch.ones(1), torch.ones(1, 2), aggregation="sum"
        )
        assert loss.item() == -2.0
    finally:
        _REGISTRIES["advantage"].pop("max_baseline", None)
        _REGISTRIES["aggregation"].pop("sum", None)


def test_duplicate_name_is_rejected():
    with pytest.raises(ValueError, match=r"advantage name 'grpo' is already registered"):
        register("advantage", "grpo")(lambda rewards, groups, eps: rewards)
    assert available("advantage") == ["dr_grpo", "grpo", "grpo_batch_norm", "rank", "rloo"]
