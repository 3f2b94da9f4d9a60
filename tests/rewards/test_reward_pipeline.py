import math

import pytest
import torch

from grpokit.config import RewardConfig
from grpokit.rewards import RewardPipeline, soft_overlong_penalty


def ones(prompts, completions, **kw):
    return [1.0] * len(completions)


def only_even(prompts, completions, **kw):
    return [float(i) if i % 2 == 0 else None for i in range(len(completions))]


def never(prompts, completions, **kw):
    return [None] * len(completions)


def test_weighted_sum_over_applicable_functions(make_batch):
    batch = make_batch(["p"] * 4, ["a", "b", "c", "d"])
    scores = RewardPipeline([ones, only_even], weights=[0.5, 2.0]).score(batch)
    # rows 0, 2: 0.5*1 + 2*index; rows 1, 3: only `ones` applies -> 0.5
    assert scores.rewards.tolist() == [0.5, 0.5, 4.5, 0.5]
    assert scores.scored.all()
    assert scores.metrics["rewards/only_even/none_fraction"] == 0.5
    assert scores.metrics["rewards/only_even/mean"] == 1.0  # mean of 0 and 2, over applicable rows only
    assert scores.metrics["rewards/unscored_fraction"] == 0.0


def test_sample_with_no_applicable_function_is_unscored_not_zero(make_batch):
    batch = make_batch(["p"] * 4, ["a", "b", "c", "d"])
    scores = RewardPipeline([only_even, never]).score(batch)
    assert scores.scored.tolist() == [True, False, True, False]
    assert scores.rewards[0] == 0.0 and math.isnan(scores.rewards[1])
    assert scores.metrics["rewards/unscored_fraction"] == 0.5
    assert math.isnan(scores.metrics["rewards/never/mean"])


@pytest.mark.parametrize(
    ("fn", "message"),
    [
        (lambda p, c, **k: [1.0], r"reward function 'bad' returned 1 values for 3 completions"),
        (
            lambda p, c, **k: ["x"] * len(c),
            r"reward function 'bad' returned a non-numeric value 'x' for completion 0",
        ),
        (lambda p, c, **k: [float("nan")] * len(c), r"'bad' returned a non-finite value nan"),
        (lambda p, c, **k: 1.0, r"'bad' returned float; expected a list of 3 floats"),
    ],
)
def test_bad_results_name_the_function(make_batch, fn, message):
    with pytest.raises(ValueError, match=message):
        RewardPipeline([fn], names=["bad"]).score(make_batch(["p"] * 3, ["a", "b", "c"]))


def test_tensor_and_numpy_results_are_accepted(make_batch):
    import numpy as np

    batch = make_batch(["p"] * 2, ["a", "b"])
    scores = RewardPipeline(
        [lambda p, c, **k: torch.tensor([1.0, 2.0]), lambda p, c, **k: [np.float32(1), True]],
        names=["t", "n"],
    ).score(batch)
    assert scores.rewards.tolist() == [2.0, 3.0]


def test_columns_reach_the_functions(make_batch):
    seen = {}

    def spy(prompts, completions, answer, **kw):
        seen.update(prompts=prompts, answer=answer, extra=kw)
        return [0.0] * len(completions)

    batch = make_batch(["p1", "p2"], ["a", "b"], columns={"answer": ["1", "2"], "id": [7, 8]})
    RewardPipeline([spy]).score(batch)
    assert seen == {"prompts": ["p1", "p2"], "answer": ["1", "2"], "extra": {"id": [7, 8]}}


def test_from_config_resolves_builtins_and_weights(make_batch):
    config = RewardConfig(
        reward_funcs=["accuracy", "length_penalty"],
        reward_weights=[1.0, 0.5],
        reward_kwargs={"length_penalty": {"max_chars": 4}},
    )
    pipeline = RewardPipeline.from_config(config)
    batch = make_batch(["p"] * 2, ["3", "4444"], columns={"answer": ["3", "3"]})
    # "3": correct, length 1 -> -0.25*0.5 ; "4444": wrong, length 4 -> -1*0.5
    assert pipeline.score(batch).rewards.tolist() == [1.0 - 0.125, -0.5]


def test_metric_names_are_short_unless_ambiguous(tmp_path, make_batch):
    (tmp_path / "r1.py").write_text(
        "def accuracy(prompts, completions, **kw):\n    return [1.0] * len(completions)\n"
    )
    (tmp_path / "r2.py").write_text(
        "def bonus(prompts, completions, **kw):\n    return [2.0] * len(completions)\n"
    )
    specs = ["accuracy", f"{tmp_path}/r1.py:accuracy", f"{tmp_path}/r2.py:bonus"]
    pipeline = RewardPipeline.from_config(RewardConfig(reward_funcs=specs))
    assert pipeline.names == specs[:2] + ["bonus"]


def test_process_rewards_become_step_tensors(make_batch):
    def steps(prompts, completions, **kw):
        return [[(1, 1.0), (3, 0.0)], None, [(0, 0.5)]]

    ids = torch.ones(3, 4, dtype=torch.long)
    mask = torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0], [1, 0, 0, 0]], dtype=torch.float)
    batch = make_batch(["p"] * 3, ["a", "b", "c"], completion_ids=ids, completion_mask=mask)
    scores = RewardPipeline([], process_function=steps).score(batch)
    assert scores.step_ends.tolist() == [[1, 3], [-1, -1], [0, -1]]
    assert scores.step_rewards.tolist() == [[1.0, 0.0], [0.0, 0.0], [0.5, 0.0]]
    assert scores.scored.tolist() == [True, False, True]
    assert scores.rewards[0] == 0.5 and scores.rewards[2] == 0.5


def test_process_step_outside_completion_is_named(make_batch):
    mask = torch.tensor([[1, 1, 0, 0]], dtype=torch.float)
    batch = make_batch(["p"], ["ab"], completion_ids=torch.ones(1, 4, dtype=torch.long), completion_mask=mask)
    with pytest.raises(ValueError, match="completion 0 has a step ending at token 2, outside its 2 tokens"):
        RewardPipeline([], process_function=lambda p, c, **k: [[(2, 1.0)]]).score(batch)


def test_process_char_offsets_map_to_tokens(make_batch):
    class TwoCharTokens:  # token t decodes to two characters
        def decode(self, ids, skip_special_tokens=True):
            return "xy" * len(ids)

    ids = torch.ones(1, 3, dtype=torch.long)
    batch = make_batch(["p"], ["xyxyxy"], completion_ids=ids, completion_mask=torch.ones(1, 3))
    pipeline = RewardPipeline(
        [],
        process_function=lambda p, c, **k: [[(1, 1.0), (4, 2.0)]],
        process_unit="char",
        tokenizer=TwoCharTokens(),
    )
    assert pipeline.score(batch).step_ends.tolist() == [[0, 2]]  # chars 0-1 -> token 0, chars 4-5 -> token 2


def test_soft_overlong_penalty_matches_dapo():
    # L_max = 10, L_cache = 4: no penalty up to 6 tokens, then -(len - 6)/4
    lengths = torch.tensor([3, 6, 7, 8, 10])
    assert soft_overlong_penalty(lengths, 10, 4, penalty=1.0).tolist() == [-0.0, -0.0, -0.25, -0.5, -1.0]
    assert soft_overlong_penalty(lengths, 10, 4, penalty=2.0)[-1] == -2.0


def test_reward_scores_concat_pads_steps_and_keeps_rows_in_order():
    import torch

    from grpokit.rewards import RewardScores

    a = RewardScores(
        rewards=torch.tensor([1.0]), scored=torch.tensor([True]), per_function={"f": [1.0]},
        metrics={"m": 1.0}, step_rewards=torch.tensor([[0.5]]), step_ends=torch.tensor([[3]]),
    )  # fmt: skip
    b = RewardScores(
        rewards=torch.tensor([float("nan"), 0.0]), scored=torch.tensor([False, True]), per_function={"f": [None, 0.0]},
        metrics={"m": 2.0}, step_rewards=torch.tensor([[1.0, 2.0], [3.0, 4.0]]),
        step_ends=torch.tensor([[1, 4], [2, 5]]),
    )  # fmt: skip
    both = RewardScores.concat([a, b])
    assert both.scored.tolist() == [True, False, True]
    assert both.per_function == {"f": [1.0, None, 0.0]}
    assert both.step_rewards.tolist() == [[0.5, 0.0], [1.0, 2.0], [3.0, 4.0]]
    assert both.step_ends.tolist() == [[3, -1], [1, 4], [2, 5]]  # -1 marks a padding step
    assert both.metrics == {"m": 1.0}
    assert RewardScores.concat([a, b], metrics={"m": 9.0}).metrics == {"m": 9.0}


def test_reward_scores_concat_refuses_parts_with_and_without_steps():
    from grpokit.rewards import RewardScores

    with_steps = RewardScores(
        rewards=torch.tensor([1.0]), scored=torch.tensor([True]), per_function={"f": [1.0]},
        step_rewards=torch.tensor([[0.5]]), step_ends=torch.tensor([[3]]),
    )  # fmt: skip
    without = RewardScores(
        rewards=torch.tensor([0.0]), scored=torch.tensor([True]), per_function={"f": [0.0]}
    )
    for parts in ([with_steps, without], [without, with_steps]):
        with pytest.raises(ValueError, match="with and without process-reward steps"):
            RewardScores.concat(parts)
