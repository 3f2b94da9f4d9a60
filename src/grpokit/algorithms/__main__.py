"""A worked example of the algorithm core: ``python -m grpokit.algorithms``.

One prompt, a group of G = 4 responses with rewards [1.0, 0.0, 0.5, 1.0], goes through every
registered advantage estimator; then the GRPO advantages feed one evaluation of the clipped policy
loss with a KL penalty. Everything is deterministic, so the printed numbers can be checked by hand.
"""

from __future__ import annotations

import torch

from grpokit.algorithms import available, group_advantages, group_reward_stats, policy_loss


def main() -> None:
    rewards = torch.tensor([1.0, 0.0, 0.5, 1.0], dtype=torch.float64)  # (N,) one group, G = 4
    group_ids = torch.zeros(4, dtype=torch.long)  # (N,)
    print(f"rewards            {_row(rewards)}")
    for name in available("advantage"):
        print(f"{name:<18} {_row(group_advantages(rewards, group_ids, name))}")
    stats = group_reward_stats(rewards, group_ids)
    print(
        f"group stats        num_groups={stats['num_groups']:g} "
        f"zero_std_group_fraction={stats['zero_std_group_fraction']:g} "
        f"reward_std_within_group_mean={stats['reward_std_within_group_mean']:.4f}"
    )

    # Three completion tokens per response; the last response has one padding token.
    old_logprobs = torch.tensor(
        [[-1.0, -0.7, -2.0], [-0.3, -1.2, -0.9], [-0.5, -0.5, -1.5], [-2.0, -0.1, 0.0]], dtype=torch.float64
    )  # (N, T)
    # The policy after a few updates: log-ratios between -0.3 and +0.3, so some tokens leave [0.8, 1.2].
    log_ratio = torch.tensor(
        [[0.1, 0.3, -0.05], [-0.3, 0.0, 0.05], [0.2, -0.1, 0.0], [0.25, -0.02, 0.0]], dtype=torch.float64
    )  # (N, T)
    logprobs = (old_logprobs + log_ratio).requires_grad_(True)  # (N, T)
    ref_logprobs = old_logprobs - 0.05  # (N, T) a reference policy slightly less sure of every token
    mask = torch.tensor([[1, 1, 1], [1, 1, 1], [1, 1, 1], [1, 1, 0]], dtype=torch.bool)  # (N, T)
    advantages = group_advantages(rewards, group_ids, "grpo")  # (N,)

    loss, metrics = policy_loss(
        logprobs, old_logprobs, advantages, mask, ref_logprobs=ref_logprobs, beta=0.04
    )
    loss.backward()
    assert logprobs.grad is not None  # logprobs is a leaf that requires grad
    print()
    print("policy_loss(ratio_level='token', aggregation='sequence_mean', epsilon=0.2, beta=0.04, kl='k3')")
    print(f"loss               {loss.item():+.6f}")
    for name, value in metrics.items():
        print(f"{name:<18} {value:+.6f}")
    print(f"grad of logprobs   {_row(logprobs.grad[0])} (response 0)")


def _row(x: torch.Tensor) -> str:
    return "[" + ", ".join(f"{v:+.4f}" for v in x.tolist()) + "]"


if __name__ == "__main__":
    main()
