import math

import pytest
import torch

from grpokit.apps.evaluation import evaluate, pass_at_k
from grpokit.data import get_task
from grpokit.models import build_char_tokenizer, build_tiny_model
from grpokit.rollout import TransformersSampler


def test_pass_at_k_worked_examples():
    # n=5, c=2, k=2: 1 - C(3,2)/C(5,2) = 1 - 3/10
    assert pass_at_k(5, 2, 2) == pytest.approx(0.7, abs=1e-12)
    assert pass_at_k(5, 0, 3) == 0.0
    assert pass_at_k(5, 3, 3) == 1.0  # n - c < k: some k-subset always holds a correct sample
    assert pass_at_k(4, 1, 1) == pytest.approx(0.25, abs=1e-12)  # k=1 is the fraction correct
    for n, c, k in [(20, 7, 5), (200, 13, 100)]:
        assert pass_at_k(n, c, k) == pytest.approx(1 - math.comb(n - c, k) / math.comb(n, k), rel=1e-10)
    with pytest.raises(ValueError, match="1 <= k <= n"):
        pass_at_k(3, 1, 4)


@pytest.fixture(scope="module")
def setup():
    task = get_task("addition")
    tok = build_char_tokenizer(task.alphabet)
    model = build_tiny_model(tok, hidden_size=32, num_layers=2, num_heads=4, intermediate_size=64,
                             seed=0, initializer_range=0.3).eval()
    return task, tok, model, task.make_problems(6, seed=0, split="test")


def reference_counts(model, tok, rows, check, G, seed):
    """Per-problem correct counts the slow way: one generate call per problem."""
    sampler = TransformersSampler(model, tok, max_new_tokens=5, temperature=0.0 if G == 1 else 1.0, seed=seed)
    counts = []
    for row in rows:
        batch = sampler.generate([row["prompt"]], G)
        counts.append(sum(check(row["prompt"], c, row["answer"]) for c in batch.completions))
    return counts


def test_greedy_accuracy_and_pass_at_k_follow_the_checker(setup):
    task, tok, model, rows = setup
    # A checker that accepts completions starting with an odd digit gives a mix of right and wrong.
    check = lambda prompt, completion, answer: completion[:1] in "13579" and completion != ""  # noqa: E731
    greedy_counts = reference_counts(model, tok, rows, check, 1, 0)
    result = evaluate(model, tokenizer=tok, rows=rows, check_fn=check, max_new_tokens=5)
    assert result == {"accuracy": sum(greedy_counts) / len(rows), "num_problems": len(rows)}

    # batch_size = 8 with n = 4 samples: two problems per generate call, so the sampler's random stream
    # differs from one-problem calls; compare against the estimator applied to our own counts instead.
    out = evaluate(model, tok, rows, check, k=2, num_samples=4, max_new_tokens=5, batch_size=8, seed=1)
    assert out["num_samples"] == 4 and out["accuracy"] == result["accuracy"]
    assert 0 <= out["sample_accuracy"] <= out["pass@2"] <= 1
    same = evaluate(model, tok, rows, check, k=2, num_samples=4, max_new_tokens=5, batch_size=8, seed=1)
    assert same == out
    # with every sample right pass@k is 1, with none 0
    always = evaluate(model, tok, rows, lambda *a: True, k=3, max_new_tokens=2)
    assert always["pass@3"] == 1.0 and always["sample_accuracy"] == 1.0 and always["accuracy"] == 1.0
    never = evaluate(model, tok, rows, lambda *a: False, k=3, max_new_tokens=2)
    assert never["pass@3"] == 0.0 and never["accuracy"] == 0.0


def test_pass_at_k_uses_the_unbiased_estimator(setup):
    task, tok, model, rows = setup
    check = lambda prompt, completion, answer: completion[:1] in "13579" and completion != ""  # noqa: E731
    # batch_size = n: one problem per generate call, exactly as reference_counts samples
    counts = reference_counts(model, tok, rows, check, 4, seed=2)
    assert 0 < sum(counts) < 4 * len(rows)  # a mix, so the estimator is exercised
    out = evaluate(model, tok, rows, check, k=2, num_samples=4, max_new_tokens=5, batch_size=4, seed=2,
                   temperature=1.0)
    assert out["pass@2"] == pytest.approx(sum(pass_at_k(4, c, 2) for c in counts) / len(rows), abs=1e-12)
    assert out["sample_accuracy"] == pytest.approx(sum(counts) / (4 * len(rows)), abs=1e-12)


def test_model_mode_restored_and_errors(setup):
    task, tok, model, rows = setup
    model.train()
    try:
        evaluate(model, tok, rows[:1], task.check, max_new_tokens=2)
        assert model.training
    finally:
        model.eval()
    with pytest.raises(ValueError, match="num_samples \\(2\\) must be >= k \\(3\\)"):
        evaluate(model, tok, rows, task.check, k=3, num_samples=2)
    with pytest.raises(ValueError, match="row 0 has no column 'answer'"):
        evaluate(model, tok, [{"prompt": "1+1="}], task.check)
    with pytest.raises(ValueError, match="rows is empty"):
        evaluate(model, tok, [], task.check)
    assert torch.is_grad_enabled()


def _pipeline(fn, name="score"):
    from grpokit.rewards import RewardPipeline

    return RewardPipeline([fn], names=[name])


def test_pass_fail_rewards_give_the_checkers_accuracy_and_pass_at_k(setup):
    from grpokit.apps.evaluation import evaluate_rewards

    task, tok, model, rows = setup
    check = lambda prompt, completion, answer: completion[:1] in "13579" and completion != ""  # noqa: E731

    def odd_first(prompts, completions, answer, **columns):
        return [float(check(p, c, a)) for p, c, a in zip(prompts, completions, answer)]

    options = dict(k=2, num_samples=4, max_new_tokens=5, batch_size=8, seed=1)
    expected = evaluate(model, tok, rows, check, **options)
    out = evaluate_rewards(model, tok, rows, _pipeline(odd_first), **options)
    # 0/1 rewards: solved is a reward of 1, so the numbers are the checker's
    assert out["threshold"] == 1.0
    for key in ("accuracy", "pass@2", "sample_accuracy", "num_samples", "num_problems"):
        assert out[key] == pytest.approx(expected[key], abs=1e-12), key
    assert out["mean_reward"] == pytest.approx(expected["accuracy"], abs=1e-12)
    assert out["sample_mean_reward"] == pytest.approx(expected["sample_accuracy"], abs=1e-12)
    assert out["per_function"] == {"score": out["mean_reward"]} and out["unscored_fraction"] == 0.0


def test_graded_rewards_report_means_and_solved_only_with_a_threshold(setup):
    from grpokit.apps.evaluation import evaluate_rewards

    task, tok, model, rows = setup

    def length(prompts, completions, **columns):
        return [len(c) / 10 for c in completions]

    rewards = _pipeline(length, "length")
    out = evaluate_rewards(model, tok, rows, rewards, k=2, max_new_tokens=5, seed=3)
    assert out["threshold"] is None and "accuracy" not in out and "pass@2" not in out
    assert 0 <= out["mean_reward"] <= 0.5 and 0 <= out["sample_mean_reward"] <= 0.5
    solved = evaluate_rewards(model, tok, rows, rewards, k=2, max_new_tokens=5, seed=3, threshold=0.0)
    assert solved["accuracy"] == 1.0 and solved["pass@2"] == 1.0  # every reward is >= 0
    assert solved["mean_reward"] == out["mean_reward"]
    # a function that never applies: nothing scored, nothing solved, means are null (JSON has no NaN)
    none = evaluate_rewards(model, tok, rows, _pipeline(lambda p, c, **kw: [None] * len(c)), max_new_tokens=2,
                            threshold=0.5)  # fmt: skip
    assert none["mean_reward"] is None and none["unscored_fraction"] == 1.0 and none["accuracy"] == 0.0
    with pytest.raises(ValueError, match="num_samples \\(2\\) must be >= k \\(3\\)"):
        evaluate_rewards(model, tok, rows, rewards, k=3, num_samples=2)
