"""The pieces of the PPO trainer, on hand-computed cases: scores per token, KL-in-reward + GAE, whitening,
and one update of policy and value model."""

import dataclasses

import pytest
import torch

from grpokit.config import OptimConfig, PPOAlgorithmConfig
from grpokit.models.tiny import build_char_tokenizer, build_tiny_model
from grpokit.models.value import build_value_model
from grpokit.rewards import RewardScores
from grpokit.rollout.batch import RolloutBatch
from grpokit.trainers.ppo import (
    PPORollouts,
    evaluate_rollouts,
    gae_targets,
    token_scores,
    update_policy_and_value,
    whitened_advantages,
)


def scores_of(rewards, scored=None, step_rewards=None, step_ends=None):
    rewards = torch.tensor(rewards)
    scored = torch.ones(len(rewards), dtype=torch.bool) if scored is None else torch.tensor(scored)
    return RewardScores(
        rewards=rewards, scored=scored, per_function={}, step_rewards=step_rewards, step_ends=step_ends
    )


# ---------------------------------------------------------------------------------------------------------
# token_scores
# ---------------------------------------------------------------------------------------------------------


def test_outcome_scores_of_unscored_rows_are_zero():
    out = token_scores(scores_of([0.5, float("nan"), 2.0], [True, False, True]), torch.ones(3, 4))
    assert torch.equal(out, torch.tensor([0.5, 0.0, 2.0]))


def test_step_scores_land_on_each_steps_last_token():
    # Row 0: steps ending at tokens 1 and 3 score 0.2 and 0.7; row 1 has one step, padded with -1.
    step_rewards = torch.tensor([[0.2, 0.7], [1.0, 0.0]])
    step_ends = torch.tensor([[1, 3], [2, -1]])
    out = token_scores(
        scores_of([0.9, 1.0], step_rewards=step_rewards, step_ends=step_ends), torch.ones(2, 4)
    )
    assert torch.equal(out, torch.tensor([[0.0, 0.2, 0.0, 0.7], [0.0, 0.0, 1.0, 0.0]]))


def test_step_end_past_the_completion_is_refused():
    scores = scores_of([1.0], step_rewards=torch.tensor([[1.0]]), step_ends=torch.tensor([[4]]))
    with pytest.raises(ValueError, match="step_ends has an index >= T = 4"):
        token_scores(scores, torch.ones(1, 4))


# ---------------------------------------------------------------------------------------------------------
# gae_targets
# ---------------------------------------------------------------------------------------------------------


def test_kl_in_the_reward_then_gae_by_hand():
    # Row 0 (3 tokens), score 1, beta 0.1, k1 = log pi_old - log pi_ref = [0.5, 0, -0.5]:
    #   r = [-0.05, 0, 0.05 + 1] = [-0.05, 0, 1.05]
    # V = [0.2, 0.4, 0.6], gamma 1, lambda 0.5, V after the last token = 0:
    #   delta_2 = 1.05 - 0.6 = 0.45           A_2 = 0.45
    #   delta_1 = 0 + 0.6 - 0.4 = 0.2         A_1 = 0.2 + 0.5 * 0.45 = 0.425
    #   delta_0 = -0.05 + 0.4 - 0.2 = 0.15    A_0 = 0.15 + 0.5 * 0.425 = 0.3625
    #   R = A + V = [0.5625, 0.825, 1.05]
    # Row 1 has 2 real tokens (the third is padding), score 0, no KL, V = 0: r = [0, 0]; A = R = 0.
    old = torch.tensor([[-1.0, -1.0, -1.0], [-2.0, -2.0, 0.0]])
    ref = torch.tensor([[-1.5, -1.0, -0.5], [-2.0, -2.0, 9.0]])
    values = torch.tensor([[0.2, 0.4, 0.6], [0.0, 0.0, 5.0]])
    mask = torch.tensor([[1.0, 1.0, 1.0], [1.0, 1.0, 0.0]])
    rewards, kl, adv, returns = gae_targets(
        torch.tensor([1.0, 0.0]),
        old,
        ref,
        values,
        mask,
        beta=0.1,
        kl_estimator="k1",
        gamma=1.0,
        gae_lambda=0.5,
    )
    torch.testing.assert_close(
        rewards, torch.tensor([[-0.05, 0.0, 1.05], [0.0, 0.0, 0.0]]), rtol=1e-6, atol=1e-7
    )
    torch.testing.assert_close(kl, torch.tensor([[0.5, 0.0, -0.5], [0.0, 0.0, 0.0]]), rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(
        adv, torch.tensor([[0.3625, 0.425, 0.45], [0.0, 0.0, 0.0]]), rtol=1e-6, atol=1e-7
    )
    torch.testing.assert_close(
        returns, torch.tensor([[0.5625, 0.825, 1.05], [0.0, 0.0, 0.0]]), rtol=1e-6, atol=1e-7
    )


def test_discount_applies_per_token():
    # Score 1 on the last of 3 tokens, V = 0, gamma 0.9, lambda 1: A_t = 0.9^(2-t).
    _, kl, adv, _ = gae_targets(
        torch.tensor([1.0]), torch.zeros(1, 3), None, torch.zeros(1, 3), torch.ones(1, 3),
        beta=0.0, gamma=0.9, gae_lambda=1.0,
    )  # fmt: skip
    assert kl is None
    torch.testing.assert_close(adv, torch.tensor([[0.81, 0.9, 1.0]]), rtol=1e-6, atol=1e-7)


def test_a_kl_coefficient_without_a_reference_is_refused():
    with pytest.raises(ValueError, match=r"beta=0.1 > 0 needs ref_logprobs"):
        gae_targets(
            torch.tensor([1.0]), torch.zeros(1, 2), None, torch.zeros(1, 2), torch.ones(1, 2), beta=0.1
        )


# ---------------------------------------------------------------------------------------------------------
# whitening
# ---------------------------------------------------------------------------------------------------------


def rollouts_with(advantages, loss_mask):
    N, T = advantages.shape
    return PPORollouts(
        prompt_ids=torch.ones(N, 1, dtype=torch.long), prompt_mask=torch.ones(N, 1, dtype=torch.long),
        completion_ids=torch.ones(N, T, dtype=torch.long), completion_mask=torch.ones(N, T),
        group_ids=torch.arange(N), temperatures=torch.ones(N), truncated=torch.zeros(N, dtype=torch.bool),
        prompts=["p"] * N, completions=["c"] * N, advantages=advantages, train_mask=loss_mask,
        pi_old_logprobs=torch.zeros(N, T), values=torch.zeros(N, T), token_rewards=torch.zeros(N, T), kl=None,
        returns=torch.zeros(N, T),
    )  # fmt: skip


def test_whitening_uses_only_loss_tokens():
    advantages = torch.tensor([[1.0, 2.0, 100.0], [3.0, 4.0, -100.0]])
    mask = torch.tensor([[1.0, 1.0, 0.0], [1.0, 1.0, 0.0]])
    out = whitened_advantages(rollouts_with(advantages, mask), whiten=True)
    # Loss tokens 1, 2, 3, 4: mean 2.5, unbiased variance 5/3.
    expected = (torch.tensor([[1.0, 2.0], [3.0, 4.0]]) - 2.5) / (5 / 3 + 1e-8) ** 0.5
    torch.testing.assert_close(out[:, :2], expected, rtol=1e-6, atol=1e-7)
    assert torch.equal(out[:, 2], torch.zeros(2))


def test_no_whitening_and_single_token_batches_keep_the_advantages():
    advantages = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
    out = whitened_advantages(rollouts_with(advantages, torch.tensor([[1.0, 1.0], [1.0, 0.0]])), whiten=False)
    assert torch.equal(out, torch.tensor([[1.0, 2.0], [3.0, 0.0]]))
    one = whitened_advantages(rollouts_with(advantages, torch.tensor([[0.0, 1.0], [0.0, 0.0]])), whiten=True)
    assert torch.equal(one, torch.tensor([[0.0, 2.0], [0.0, 0.0]]))  # no variance to divide by


# ---------------------------------------------------------------------------------------------------------
# evaluate_rollouts and one update, on a tiny model
# ---------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny():
    tokenizer = build_char_tokenizer("abcdef")
    model = build_tiny_model(
        tokenizer, hidden_size=32, num_layers=2, num_heads=2, intermediate_size=64, seed=0
    )
    return model


def sampled_batch(N: int = 4, T: int = 3) -> RolloutBatch:
    generator = torch.Generator().manual_seed(0)
    completion_mask = torch.ones(N, T)
    completion_mask[1, 2] = 0  # one shorter completion
    return RolloutBatch(
        prompt_ids=torch.randint(4, 10, (N, 2), generator=generator),
        prompt_mask=torch.ones(N, 2, dtype=torch.long),
        completion_ids=torch.randint(4, 10, (N, T), generator=generator),
        completion_mask=completion_mask,
        group_ids=torch.arange(N),
        temperatures=torch.ones(N),
        truncated=torch.zeros(N, dtype=torch.bool),
        prompts=["p"] * N,
        completions=["c"] * N,
    )


def completed(tiny, algorithm, *, shared=False, rewards=(1.0, 0.0, 0.5, 0.0)):
    import copy

    policy = copy.deepcopy(tiny)
    value_model = build_value_model(policy, shared=shared)
    batch = sampled_batch()
    rollouts = evaluate_rollouts(
        batch, scores_of(list(rewards)), policy=policy, value_model=value_model, reference=None, beta=0.0,
        algorithm=algorithm, micro_batch_size=2,
    )  # fmt: skip
    return policy, value_model, rollouts


def test_evaluate_rollouts_fills_every_field(tiny):
    algorithm = PPOAlgorithmConfig(beta=0.0, gae_lambda=1.0)
    _, _, rollouts = completed(tiny, algorithm)
    for field in ("pi_old_logprobs", "values", "token_rewards", "advantages", "returns", "train_mask"):
        assert getattr(rollouts, field).shape == (4, 3), field
    assert rollouts.ref_logprobs is None and rollouts.kl is None
    # V = 0 (zero head), beta = 0, lambda = gamma = 1: every token's advantage is its row's score.
    expected = torch.tensor([[1.0] * 3, [0.0] * 3, [0.5] * 3, [0.0] * 3])
    expected[1, 2] = 0.0  # padding
    assert torch.equal(rollouts.advantages, expected)
    assert torch.equal(rollouts.train_mask, rollouts.completion_mask)


def run_update(policy, value_model, rollouts, advantages, algorithm, **optim):
    optimizer = torch.optim.AdamW(policy.parameters(), lr=1e-2, weight_decay=0.0)
    value_optimizer = torch.optim.AdamW(value_model.owned.parameters(), lr=1e-2, weight_decay=0.0)
    return update_policy_and_value(
        policy, value_model, optimizer, value_optimizer, rollouts, advantages,
        algorithm=algorithm, optim=OptimConfig(**optim), max_new_tokens=3,
    ).as_metrics()  # fmt: skip


def test_one_epoch_is_exactly_on_policy_and_the_value_loss_falls(tiny):
    from grpokit.algorithms import value_loss

    algorithm = PPOAlgorithmConfig(beta=0.0, num_iterations=1)
    policy, value_model, rollouts = completed(tiny, algorithm)
    advantages = whitened_advantages(rollouts, whiten=True)
    losses = []
    for _ in range(5):  # five updates on the same rollouts: V moves toward the returns
        metrics = run_update(policy, value_model, rollouts, advantages, algorithm)
        assert metrics["ratio_mean"] == 1.0 and metrics["ratio_min"] == 1.0 and metrics["ratio_max"] == 1.0
        losses.append(metrics["value_loss"])
    with torch.no_grad():
        inputs = {
            k: getattr(rollouts, k)
            for k in ("prompt_ids", "prompt_mask", "completion_ids", "completion_mask")
        }
        final, _ = value_loss(
            value_model(**inputs), rollouts.values, rollouts.returns, rollouts.train_mask, None
        )
    assert losses[0] > losses[-1] > float(final)
    assert metrics["optimizer_steps"] == 1.0 and metrics["faults/nonfinite_skipped"] == 0.0
    assert {
        "policy_loss",
        "value_clip_fraction",
        "value_mean",
        "entropy",
        "grad_norm",
        "value_grad_norm",
    } <= set(metrics)


def test_the_value_loss_trains_a_shared_body_but_not_a_separate_policy(tiny):
    # Zero advantages and no entropy bonus: the policy loss has no gradient, so only the value loss can move
    # the policy's weights, which it must do exactly when the body is shared. Two epochs: in the first the
    # zero-initialised head passes no gradient to the body.
    algorithm = PPOAlgorithmConfig(beta=0.0, num_iterations=2, cliprange_value=None)
    for shared in (False, True):
        policy, value_model, rollouts = completed(tiny, algorithm, shared=shared)
        before = [p.detach().clone() for p in policy.base_model.parameters()]
        run_update(policy, value_model, rollouts, torch.zeros(4, 3), algorithm)
        changed = [not torch.equal(a, b) for a, b in zip(before, policy.base_model.parameters())]
        assert any(changed) == shared, shared


@pytest.mark.parametrize("aggregation", ["token_mean", "sequence_mean"])
def test_gradient_accumulation_matches_one_big_minibatch(tiny, aggregation):
    algorithm = PPOAlgorithmConfig(
        beta=0.0, num_iterations=1, entropy_coef=0.01, loss_aggregation=aggregation
    )

    def gradient(accumulation: int) -> list[torch.Tensor]:
        policy, value_model, rollouts = completed(tiny, algorithm)
        with torch.no_grad():  # a non-zero head, so the value loss reaches the body too
            value_model.head.weight.fill_(0.1)
        rollouts.train_mask[0, 1:] = 0  # uneven token counts per micro-batch make the weighting matter
        params = [*policy.parameters(), *value_model.parameters()]
        start = [p.detach().clone() for p in params]
        update_policy_and_value(
            policy, value_model, torch.optim.SGD(policy.parameters(), lr=1.0),
            torch.optim.SGD(value_model.parameters(), lr=1.0), rollouts, whitened_advantages(rollouts, True),
            algorithm=algorithm, optim=OptimConfig(gradient_accumulation_steps=accumulation, max_grad_norm=None),
            max_new_tokens=3,
        )  # fmt: skip
        return [a - p.detach() for a, p in zip(start, params)]  # = the gradient (SGD, lr 1)

    whole, split = gradient(1), gradient(4)
    assert any(g.abs().max() > 1e-4 for g in whole)
    for a, b in zip(split, whole):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-7)


def test_a_non_finite_loss_skips_both_optimizers(tiny):
    algorithm = PPOAlgorithmConfig(beta=0.0, num_iterations=1)
    policy, value_model, rollouts = completed(tiny, algorithm)
    rollouts = dataclasses.replace(rollouts, returns=torch.full((4, 3), float("nan")))
    before = [p.detach().clone() for p in (*policy.parameters(), *value_model.parameters())]
    metrics = run_update(policy, value_model, rollouts, whitened_advantages(rollouts, True), algorithm)
    assert metrics["faults/nonfinite_skipped"] == 1.0 and metrics["optimizer_steps"] == 0.0
    after = [p.detach() for p in (*policy.parameters(), *value_model.parameters())]
    assert all(torch.equal(a, b) for a, b in zip(before, after))


def test_ppo_weights_the_surrogate_against_a_separate_samplers_logprobs(tiny):
    """With a rollout engine (vLLM) PPO gets the same truncated importance weights as GRPO:
    w = min(pi_old / pi_sampler, C), here exactly 1/2 on every token."""
    import math

    algorithm = PPOAlgorithmConfig(beta=0.0, num_iterations=1)
    policy, value_model, rollouts = completed(tiny, algorithm)
    rollouts = dataclasses.replace(
        rollouts, sampler_logprobs=rollouts.pi_old_logprobs + math.log(2.0) * rollouts.completion_mask
    )
    metrics = update_policy_and_value(
        policy, value_model, torch.optim.SGD(policy.parameters(), lr=0.0),
        torch.optim.SGD(value_model.parameters(), lr=0.0), rollouts, whitened_advantages(rollouts, True),
        algorithm=algorithm, optim=OptimConfig(), max_new_tokens=3, rollout_importance="token",
    ).as_metrics()  # fmt: skip
    assert metrics["rollout_is/weight_mean"] == pytest.approx(0.5, abs=1e-5)
    assert metrics["rollout_is/logprob_abs_diff"] == pytest.approx(math.log(2.0), abs=1e-5)
