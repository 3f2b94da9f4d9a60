"""Reward functions that fail: exceptions, wrong lengths, NaN, hangs; under ``raise`` and ``fallback``."""

import logging
import math
import threading
import time

import pytest
import torch

from grpokit.config import ConfigError, GRPOConfig, RewardConfig, build_config
from grpokit.rewards import RewardPipeline, resolve_reward
from grpokit.rewards.failures import RewardFailurePolicy, RewardFunctionError, guarded_call

PROMPTS = ["p0", "p0", "p1", "p1"]
COMPLETIONS = ["aa", "ab", "ba", "bb"]
FALLBACK = RewardFailurePolicy("fallback", fallback_value=-1.0)


def ones(prompts, completions, **kw):
    return [1.0] * len(completions)


def crashes(prompts, completions, **kw):
    return 1 / 0


def too_short(prompts, completions, **kw):
    return [1.0] * (len(completions) - 1)


def nan_at_2(prompts, completions, **kw):
    return [0.5, 0.5, math.nan, 0.5]


def text_at_1(prompts, completions, **kw):
    return [0.5, "high", 0.5, 0.5]


def pipeline(fn, policy, name="bad"):
    return RewardPipeline([ones, fn], names=["ones", name], failure_policy=policy)


# ---------------------------------------------------------------------------------------------------------
# raise: the error names the function and the batch or the completion
# ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fn", "message"),
    [
        (crashes, r"reward function 'bad' raised ZeroDivisionError: division by zero at .*test_reward_failures.py:\d+ "
         r"in crashes on a batch of 4 completions \(prompts 'p0', 'p1'\)"),
        (too_short, r"reward function 'bad' returned 3 values for 4 completions on a batch of 4 completions"),
        (nan_at_2, r"reward function 'bad' returned a non-finite value nan for completion 2 \(prompt 'p1', "
         r"completion 'ba'\)"),
        (text_at_1, r"reward function 'bad' returned a non-numeric value 'high' for completion 1 \(prompt 'p0', "
         r"completion 'ab'\)"),
    ],
    ids=["exception", "wrong-length", "nan", "non-numeric"],
)  # fmt: skip
def test_raise_policy_names_function_and_input(make_batch, fn, message):
    with pytest.raises(RewardFunctionError, match=message):
        pipeline(fn, RewardFailurePolicy("raise")).score(make_batch(PROMPTS, COMPLETIONS))


def test_raised_error_chains_the_original_exception(make_batch):
    with pytest.raises(RewardFunctionError) as info:
        pipeline(crashes, RewardFailurePolicy()).score(make_batch(PROMPTS, COMPLETIONS))
    assert isinstance(info.value.__cause__, ZeroDivisionError)
    assert "reward_failure: fallback" in str(info.value)  # says how to opt into the fallback


# ---------------------------------------------------------------------------------------------------------
# fallback: the value, the count, one logged traceback
# ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fn", "expected_bad", "failures"),
    [
        (crashes, [-1.0] * 4, 4),  # a failed call: every completion of the batch falls back
        (too_short, [-1.0] * 4, 4),
        (nan_at_2, [0.5, 0.5, -1.0, 0.5], 1),  # a bad value: only that completion
        (text_at_1, [0.5, -1.0, 0.5, 0.5], 1),
    ],
    ids=["exception", "wrong-length", "nan", "non-numeric"],
)
def test_fallback_scores_with_the_value_and_counts(make_batch, fn, expected_bad, failures):
    scores = pipeline(fn, FALLBACK).score(make_batch(PROMPTS, COMPLETIONS))
    assert scores.per_function["bad"] == expected_bad
    # total = ones (1.0) + bad
    assert scores.rewards.tolist() == [1.0 + v for v in expected_bad]
    assert scores.scored.all()
    assert scores.metrics["rewards/bad/failures"] == failures
    assert scores.metrics["rewards/ones/failures"] == 0


def test_fallback_none_leaves_failed_completions_unscored(make_batch):
    policy = RewardFailurePolicy("fallback", fallback_value=None)
    scores = RewardPipeline([nan_at_2], names=["bad"], failure_policy=policy).score(
        make_batch(PROMPTS, COMPLETIONS)
    )
    assert scores.scored.tolist() == [True, True, False, True]
    assert math.isnan(scores.rewards[2])
    assert scores.metrics["rewards/bad/failures"] == 1


def test_first_failure_is_logged_once_with_its_traceback(make_batch, caplog):
    scorer = pipeline(crashes, FALLBACK)
    with caplog.at_level(logging.WARNING, logger="grpokit.rewards"):
        for _ in range(3):
            scores = scorer.score(make_batch(PROMPTS, COMPLETIONS))
    records = [r for r in caplog.records if r.name == "grpokit.rewards"]
    assert len(records) == 1
    assert records[0].exc_info is not None and records[0].exc_info[0] is ZeroDivisionError
    assert "'bad' raised ZeroDivisionError" in records[0].getMessage()
    assert "rewards/bad/failures" in records[0].getMessage()
    assert scores.metrics["rewards/bad/failures"] == 4  # still counted on every step


def test_out_of_memory_is_not_a_reward_failure(make_batch):
    def oom(prompts, completions, **kw):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    with pytest.raises(torch.OutOfMemoryError):
        pipeline(oom, FALLBACK).score(make_batch(PROMPTS, COMPLETIONS))


# ---------------------------------------------------------------------------------------------------------
# Timeouts
# ---------------------------------------------------------------------------------------------------------


def test_hung_function_times_out_under_both_policies(make_batch):
    release = threading.Event()

    def hangs(prompts, completions, **kw):
        release.wait(10)
        return [0.0] * len(completions)

    try:
        start = time.perf_counter()
        with pytest.raises(
            RewardFunctionError, match=r"'hangs' did not return within reward_timeout_s=0.2 s"
        ):
            pipeline(hangs, RewardFailurePolicy("raise", timeout_s=0.2), "hangs").score(
                make_batch(PROMPTS, COMPLETIONS)
            )
        scores = pipeline(hangs, RewardFailurePolicy("fallback", 0.0, 0.2), "hangs").score(
            make_batch(PROMPTS, COMPLETIONS)
        )
        elapsed = time.perf_counter() - start
    finally:
        release.set()  # let the abandoned worker threads finish
    assert scores.per_function["hangs"] == [0.0] * 4
    assert scores.metrics["rewards/hangs/failures"] == 4
    assert elapsed < 2.0  # two 0.2 s deadlines, not the 10 s the function would take


def test_timeout_keeps_result_and_exceptions_of_a_function_within_the_deadline(make_batch):
    policy = RewardFailurePolicy("raise", timeout_s=5.0)
    assert guarded_call(ones, "ones", PROMPTS, COMPLETIONS, {}, policy) == ([1.0] * 4, 0)
    with pytest.raises(RewardFunctionError, match="raised ZeroDivisionError"):
        guarded_call(crashes, "crashes", PROMPTS, COMPLETIONS, {}, policy)


# ---------------------------------------------------------------------------------------------------------
# Process rewards and configuration
# ---------------------------------------------------------------------------------------------------------


def test_failed_process_reward_call_leaves_completions_unscored_under_fallback(make_batch):
    def prm(prompts, completions, **kw):
        raise RuntimeError("grader offline")

    batch = make_batch(PROMPTS, COMPLETIONS)
    with pytest.raises(RewardFunctionError, match="process reward 'prm' raised RuntimeError: grader offline"):
        RewardPipeline([], process_function=prm).score(batch)
    scores = RewardPipeline([], process_function=prm, failure_policy=FALLBACK).score(batch)
    assert not scores.scored.any()
    assert scores.metrics["rewards/process/failures"] == 4


def test_config_fields_build_the_policy():
    config = RewardConfig(
        reward_funcs=["length_penalty"],
        reward_failure="fallback",
        reward_fallback_value=None,
        reward_timeout_s=3,
    )
    policy = RewardPipeline.from_config(config, max_new_tokens=8).failure_policy
    assert policy == RewardFailurePolicy("fallback", None, 3.0)


@pytest.mark.parametrize(
    ("rewards", "message"),
    [
        ({"reward_failure": "ignore"}, r"rewards.reward_failure: Input should be 'raise' or 'fallback'"),
        ({"reward_timeout_s": 0}, r"rewards.reward_timeout_s: Input should be greater than 0"),
        ({"reward_fallback_value": "nan"}, r"rewards.reward_fallback_value: Input should be a finite number"),
    ],
)
def test_bad_failure_settings_are_rejected(rewards, message):
    with pytest.raises(ConfigError, match=message):
        build_config(GRPOConfig, {"rewards": rewards})


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"mode": "skip"}, "reward_failure must be 'raise' or 'fallback'"),
        ({"fallback_value": math.inf}, "reward_fallback_value must be finite or None"),
        ({"timeout_s": -1.0}, "reward_timeout_s must be > 0 or None"),
    ],
)
def test_policy_rejects_bad_values(kwargs, message):
    with pytest.raises(ValueError, match=message):
        RewardFailurePolicy(**kwargs)


def test_arrays_are_results_but_a_2d_array_is_named():
    import numpy as np

    policy = RewardFailurePolicy()
    assert guarded_call(lambda p, c: np.array([0.5] * 4), "np", PROMPTS, COMPLETIONS, {}, policy) == (
        [0.5] * 4,
        0,
    )
    assert guarded_call(lambda p, c: torch.ones(4), "t", PROMPTS, COMPLETIONS, {}, policy) == ([1.0] * 4, 0)
    with pytest.raises(RewardFunctionError, match="'t2' returned Tensor; expected a list of 4 floats"):
        guarded_call(lambda p, c: torch.ones(4, 1), "t2", PROMPTS, COMPLETIONS, {}, policy)


def test_code_tests_reward_is_registered_by_name():
    reward = resolve_reward("code_tests", {"wall_time_s": 2.0, "tests_column": "checks"})
    assert reward.limits.wall_time_s == 2.0 and reward.tests_column == "checks"
