"""The phases of a GRPO step in isolation: advantages, masks, dynamic sampling, batch concatenation."""

import types

import pytest
import torch

from grpokit.config import GRPOAlgorithmConfig, GRPOConfig, RewardConfig, build_config
from grpokit.rewards import RewardPipeline, RewardScores
from grpokit.rollout.batch import RolloutBatch
from grpokit.tracking.timing import PhaseTimer
from grpokit.trainers.grpo import GRPOTrainer
from grpokit.trainers.phases import compute_advantages, informative_groups, score


def make_batch(prompts, G, lengths=None, truncated=None, P=2, T=4):
    """A RolloutBatch of len(prompts) groups of G, completions being the prompt text (for scripted rewards)."""
    N = len(prompts) * G
    lengths = lengths or [T] * N
    mask = torch.tensor([[1.0] * n + [0.0] * (T - n) for n in lengths])
    return RolloutBatch(
        prompt_ids=torch.ones(N, P, dtype=torch.long),
        prompt_mask=torch.ones(N, P, dtype=torch.long),
        completion_ids=torch.ones(N, T, dtype=torch.long),
        completion_mask=mask,
        group_ids=torch.arange(len(prompts)).repeat_interleave(G),
        temperatures=torch.ones(N),
        truncated=torch.tensor(truncated or [False] * N),
        prompts=[p for p in prompts for _ in range(G)],
        completions=[f"{p}#{i}" for p in prompts for i in range(G)],
    )


def scores_of(rewards, scored=None):
    rewards = torch.tensor(rewards, dtype=torch.float32)
    scored = torch.ones(len(rewards), dtype=torch.bool) if scored is None else torch.tensor(scored)
    return RewardScores(torch.where(scored, rewards, torch.nan), scored, {})


def test_advantages_leave_unscored_rows_out_of_the_baseline():
    batch = make_batch(["p", "q"], G=3)
    # group p: rows 0, 1 scored (1, 0), row 2 unscored; group q: (2, 2, 5)
    scores = scores_of([1.0, 0.0, 0.0, 2.0, 2.0, 5.0], [True, True, False, True, True, True])
    advantages, mask = compute_advantages(batch, scores, GRPOAlgorithmConfig(advantage_estimator="dr_grpo"))
    # dr_grpo: r - group mean over scored rows: p -> mean 0.5 -> +0.5, -0.5; q -> mean 3 -> -1, -1, +2
    assert advantages.tolist() == [0.5, -0.5, 0.0, -1.0, -1.0, 2.0]
    assert mask[2].sum() == 0 and mask[[0, 1, 3, 4, 5]].sum() == 5 * 4


def test_overlong_filtering_masks_truncated_completions_only():
    batch = make_batch(["p"], G=4, truncated=[False, True, False, True])
    scores = scores_of([1.0, 0.0, 0.0, 1.0])
    adv_plain, mask_plain = compute_advantages(batch, scores, GRPOAlgorithmConfig(overlong_filtering=False))
    adv, mask = compute_advantages(batch, scores, GRPOAlgorithmConfig(overlong_filtering=True))
    assert mask_plain.sum(1).tolist() == [4, 4, 4, 4]
    assert mask.sum(1).tolist() == [4, 0, 4, 0]
    assert torch.equal(adv, adv_plain)  # truncated rows stay in the group baseline


def test_process_rewards_give_per_token_advantages():
    batch = make_batch(["p"], G=2, lengths=[4, 2])
    scores = scores_of([0.0, 0.0])
    scores.step_rewards = torch.tensor([[1.0, 0.0], [0.0, 0.0]])
    scores.step_ends = torch.tensor([[1, 3], [1, -1]])
    advantages, _ = compute_advantages(batch, scores, GRPOAlgorithmConfig(advantage_eps=1e-6))
    assert advantages.shape == (2, 4)
    # steps {1, 0, 0}: mean 1/3, std sqrt(1/3) -> normalised (1.155, -0.577, -0.577); row 0 tokens 0-1 sum both
    # of its steps, tokens 2-3 only the second; row 1 tokens 0-1 get its one step; padding gets 0.
    expected = torch.tensor([[0.5774, 0.5774, -0.5774, -0.5774], [-0.5774, -0.5774, 0.0, 0.0]])
    torch.testing.assert_close(advantages, expected, rtol=0, atol=1e-4)


def test_soft_overlong_penalty_is_added_to_scored_rewards():
    batch = make_batch(["p"], G=3, lengths=[2, 3, 4])
    pipeline = RewardPipeline([lambda p, c, **k: [1.0, None, 1.0]])
    rewards = RewardConfig(overlong_buffer_length=2, overlong_penalty=1.0)
    scores = score(pipeline, batch, rewards, max_new_tokens=4)
    # buffer starts at 4 - 2 = 2 tokens: length 2 -> 0, length 4 -> -1; the unscored row stays NaN
    assert scores.rewards[0] == 1.0 and scores.rewards[2] == 0.0 and scores.rewards[1].isnan()


def process_scores(step_rewards, step_ends, scored=None):
    """Process-supervised scores: (N, S) step rewards ending at token indices (N, S), -1 = no step."""
    step_rewards = torch.tensor(step_rewards, dtype=torch.float32)
    scored = torch.ones(len(step_rewards), dtype=torch.bool) if scored is None else torch.tensor(scored)
    return RewardScores(
        torch.zeros(len(step_rewards)), scored, {},
        step_rewards=step_rewards, step_ends=torch.tensor(step_ends),
    )  # fmt: skip


def test_soft_overlong_penalty_reaches_process_rewards_on_the_last_step():
    """With process rewards the advantages come from the step rewards: the penalty must land there (it used
    to be added to the outcome rewards only, which process advantages never read)."""
    batch = make_batch(["p"], G=2, lengths=[2, 4])
    steps = process_scores([[1.0, 0.5], [1.0, -1.0]], [[0, 1], [1, 3]])
    pipeline = types.SimpleNamespace(score=lambda batch: steps)
    scores = score(pipeline, batch, RewardConfig(overlong_buffer_length=2, overlong_penalty=1.0), 4)
    # length 2: no penalty; length 4: -1 on its last step (ending at token 3)
    assert scores.step_rewards.tolist() == [[1.0, 0.5], [1.0, -2.0]]
    advantages, _ = compute_advantages(batch, scores, GRPOAlgorithmConfig())
    unpenalised, _ = compute_advantages(
        batch, process_scores([[1.0, 0.5], [1.0, -1.0]], [[0, 1], [1, 3]]), GRPOAlgorithmConfig()
    )
    assert not torch.equal(advantages, unpenalised)


def test_informative_groups_follow_step_rewards_with_process_supervision():
    """Equal final outcomes but different steps still teach (non-zero process advantages); equal steps do
    not, whatever the outcome column says."""
    batch = make_batch(["p", "q"], G=2)
    scores = process_scores(
        [[1.0, 0.0], [1.0, 1.0], [0.5, 0.5], [0.5, 0.5]], [[0, 1], [0, 1], [0, 1], [0, 1]]
    )
    scores.rewards = torch.tensor([1.0, 1.0, 0.0, 1.0])  # outcome: p constant, q differs
    assert informative_groups(scores, batch.group_ids).tolist() == [True, True, False, False]


def test_informative_groups_ignore_unscored_rows():
    batch = make_batch(["p", "q", "r"], G=3)
    scores = scores_of([1, 1, 0, 2, 2, 2, 3, 4, 0], [True, True, False, True, True, True, True, False, False])
    # p: scored (1, 1) -> constant; q: constant; r: a single scored row -> no baseline
    assert informative_groups(scores, batch.group_ids).tolist() == [False] * 9
    scores = scores_of([1, 0, 0, 2, 2, 2, 3, 4, 0])
    assert informative_groups(scores, batch.group_ids).tolist() == [True] * 3 + [False] * 3 + [True] * 3


def test_concat_batches_repads_and_renumbers_groups():
    a = make_batch(["p"], G=2, P=2, T=3)
    b = make_batch(["q", "r"], G=2, P=4, T=5, lengths=[5, 1, 2, 3])
    out = RolloutBatch.concat([a, b], pad_id=0)
    assert out.prompt_ids.shape == (6, 4) and out.completion_ids.shape == (6, 5)
    assert out.prompt_mask[0].tolist() == [0, 0, 1, 1]  # left padding kept on the left
    assert out.completion_mask[0].tolist() == [1, 1, 1, 0, 0]  # right padding on the right
    assert out.group_ids.tolist() == [0, 0, 1, 1, 2, 2]
    assert out.prompts == ["p", "p", "q", "q", "r", "r"]


class ScriptedSampler:
    """Completions are the prompt text; rewards below are scripted by prompt."""

    def __init__(self):
        self.calls = 0

    def generate(self, prompts, num_generations, columns):
        self.calls += 1
        return make_batch(prompts, num_generations)


def scripted_reward(prompts, completions, **columns):
    # "easy" prompts: every completion right (zero variance); "mixed": half right.
    return [
        1.0 if p.startswith("easy") else float(int(c.rsplit("#", 1)[1]) % 2)
        for p, c in zip(prompts, completions)
    ]


def bare_trainer(prompt_batches, **algorithm) -> GRPOTrainer:
    config = build_config(
        GRPOConfig,
        {
            "data": {"prompts_per_step": 2},
            "algorithm": {"num_generations": 4, "dynamic_sampling": True, **algorithm},
        },
    )
    trainer = GRPOTrainer.__new__(GRPOTrainer)
    trainer.config = config
    trainer.prompt_iter = iter([[{"prompt": p} for p in batch] for batch in prompt_batches])
    trainer.sampler = ScriptedSampler()
    trainer.rewards = RewardPipeline([scripted_reward])
    trainer.tokenizer = types.SimpleNamespace(pad_token_id=0)
    return trainer


def test_dynamic_sampling_fills_the_batch_with_informative_groups():
    trainer = bare_trainer([["easy1", "mixed1"], ["easy2", "easy3"], ["mixed2", "mixed3"]])
    batch, scores, generated = trainer.collect_rollouts(PhaseTimer())
    assert trainer.sampler.calls == 3
    assert batch.num_responses == 8 and sorted(set(batch.prompts)) == ["mixed1", "mixed2"]
    assert generated.batch.num_responses == 24  # reward statistics see everything generated
    assert generated.rounds == 3 and generated.kept_groups == 2


def test_dynamic_sampling_respects_the_round_bound():
    trainer = bare_trainer(
        [["easy1", "easy2"], ["easy3", "mixed1"], ["mixed2", "mixed3"]], max_dynamic_sampling_rounds=1
    )
    batch, scores, generated = trainer.collect_rollouts(PhaseTimer())
    assert trainer.sampler.calls == 2  # the first round plus one extra
    assert batch.prompts == ["mixed1"] * 4  # trains on the one informative group it found
    assert scores.rewards.tolist() == [0.0, 1.0, 0.0, 1.0]


def test_dynamic_sampling_without_any_signal_falls_back_to_the_first_round():
    trainer = bare_trainer([["easy1", "easy2"], ["easy3", "easy4"]], max_dynamic_sampling_rounds=1)
    batch, _, _ = trainer.collect_rollouts(PhaseTimer())
    assert batch.prompts == ["easy1"] * 4 + ["easy2"] * 4


def test_without_dynamic_sampling_one_round_is_used():
    trainer = bare_trainer([["easy1", "easy2"], ["mixed1", "mixed2"]], dynamic_sampling=False)
    batch, _, _ = trainer.collect_rollouts(PhaseTimer())
    assert trainer.sampler.calls == 1 and batch.num_responses == 8


@pytest.mark.parametrize("estimator", ["grpo", "grpo_batch_norm", "dr_grpo", "rank", "rloo"])
def test_every_estimator_runs_through_compute_advantages(estimator):
    batch = make_batch(["p", "q"], G=3)
    scores = scores_of([1.0, 0.0, 2.0, 3.0, 3.0, 3.0])
    advantages, _ = compute_advantages(batch, scores, GRPOAlgorithmConfig(advantage_estimator=estimator))
    assert advantages[3:].tolist() == [0.0, 0.0, 0.0]  # constant group
    assert advantages[2] > advantages[0] > advantages[1]


def test_gdpo_normalises_each_reward_function_in_its_group_before_summing():
    """algorithm.multi_objective_aggregation: GRPO normalises the weighted sum of the reward functions in the
    group; GDPO (arXiv 2601.05242) normalises each function's rewards first, then sums with the weights."""
    from grpokit.algorithms import group_advantages, multi_reward_advantages

    batch = make_batch(["p"], G=4)
    correct, short = [1.0, 1.0, 0.0, 0.0], [0.0, 1.0, 1.0, 0.0]
    scores = RewardScores(
        torch.tensor([a + 2 * b for a, b in zip(correct, short)]), torch.ones(4, dtype=torch.bool),
        {"correct": correct, "short": short},
    )  # fmt: skip
    summed, _ = compute_advantages(batch, scores, GRPOAlgorithmConfig(), reward_weights=[1.0, 2.0])
    gdpo, _ = compute_advantages(
        batch, scores, GRPOAlgorithmConfig(multi_objective_aggregation="normalize_then_sum"),
        reward_weights=[1.0, 2.0],
    )  # fmt: skip
    rewards = torch.tensor([correct, short]).T
    torch.testing.assert_close(summed, group_advantages(scores.rewards, batch.group_ids, "grpo", 1e-4))
    torch.testing.assert_close(
        gdpo, multi_reward_advantages(rewards, batch.group_ids, torch.tensor([1.0, 2.0]), "grpo", 1e-4)
    )
    assert not torch.allclose(gdpo, summed)


def test_rloo_gives_a_group_left_with_one_scored_completion_advantage_zero():
    """The docs promise 0 for a lone response (no leave-one-out baseline); rloo used to raise, naming an
    internal id, when a reward function scored only one completion of a group."""
    batch = make_batch(["p", "q"], G=3)
    scores = scores_of([1.0, 0.0, 0.0, 2.0, 0.0, 1.0], [True, False, False, True, True, True])
    advantages, mask = compute_advantages(batch, scores, GRPOAlgorithmConfig(advantage_estimator="rloo"))
    # group p: only row 0 is scored -> 0; group q: 2 - (0 + 1)/2, 0 - (2 + 1)/2, 1 - (2 + 0)/2
    assert advantages.tolist() == [0.0, 0.0, 0.0, 1.5, -1.5, 0.0]
    assert mask[0].sum() == 4 and mask[1:3].sum() == 0
