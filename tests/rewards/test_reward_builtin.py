import pytest

from grpokit.rewards import available_rewards, resolve_reward
from grpokit.rewards.builtin import answers_match, extract_final_answer, normalize_answer


def test_builtins_are_registered():
    assert {"accuracy", "format", "length_penalty", "task", "math_verify", "think_answer_format"} <= set(
        available_rewards()
    )


def test_math_rewards_are_reachable_by_name():
    check = resolve_reward("math_verify", context={"answer_column": "solution"})
    assert check(["p"] * 3, ["\\boxed{0.5}", "1/3", "x"], solution=["\\frac{1}{2}", "0.5", None]) == [
        1.0,
        0.0,
        None,
    ]
    fmt = resolve_reward("think_answer_format")
    assert fmt(["p"] * 2, ["<think>a</think><answer>1</answer>", "1"]) == [1.0, 0.0]


@pytest.mark.parametrize(
    ("completion", "answer", "expected"),
    [
        ("so the sum is 12", "12", True),
        ("so the sum is 12", 12, True),
        ("first 3, then 12.0", "12", True),  # numbers compare by value
        ("first 12, then 13", "12", False),  # the *final* number counts
        ("\\boxed{\\frac{1}{2}} and 7", "\\frac{1}{2}", True),  # balanced braces
        ("#### 1,234", "1234", True),  # GSM8K marker, thousands separator
        ("<answer> Paris. </answer>", "paris", True),
        ("The answer is: Paris", "Paris", True),
        ("Paris is the capital", "Paris", False),  # no marker, non-numeric: whole text must match
        ("no number here", "3", False),
    ],
)
def test_answers_match(completion, answer, expected):
    assert answers_match(completion, answer) is expected


def test_extract_and_normalize():
    assert extract_final_answer("x \\boxed{a} y \\boxed{b}") == "b"
    assert normalize_answer("  $\\text{Yes}$. ") == "yes"


def test_accuracy_reward_returns_none_without_reference():
    fn = resolve_reward("accuracy")
    assert fn(["p"] * 3, ["7", "8", "7"], answer=["7", "7", None]) == [1.0, 0.0, None]


def test_accuracy_reward_names_the_missing_column():
    fn = resolve_reward("accuracy", context={"answer_column": "solution"})
    with pytest.raises(ValueError, match="needs a column 'solution'; the dataset has \\['answer'\\]"):
        fn(["p"], ["7"], answer=["7"])


def test_format_reward_pattern_is_configurable():
    fn = resolve_reward("format")
    assert fn(["p"] * 2, ["<think>a</think>\n<answer>3</answer>", "3"]) == [1.0, 0.0]
    digits = resolve_reward("format", {"pattern": r"-?\d+"})
    assert digits(["p"] * 3, [" 42 ", "4a", "-1"]) == [1.0, 0.0, 1.0]
    anywhere = resolve_reward("format", {"pattern": r"\d", "mode": "search"})
    assert anywhere(["p"] * 2, ["a1", "ab"]) == [1.0, 0.0]
    with pytest.raises(ValueError, match="invalid pattern"):
        resolve_reward("format", {"pattern": "("})


def test_length_penalty_is_linear_between_target_and_max():
    fn = resolve_reward("length_penalty", {"target_chars": 2, "max_chars": 6})
    # lengths 1, 2, 4, 6, 9 -> over target by 0, 0, 2, 4, 7 -> /4 clipped at 1
    assert fn(["p"] * 5, ["a", "ab", "abcd", "abcdef", "abcdefghi"]) == [-0.0, -0.0, -0.5, -1.0, -1.0]


def test_unknown_builtin_option_is_named():
    with pytest.raises(ValueError, match="reward 'format' has no option 'patern'"):
        resolve_reward("format", {"patern": "x"})


def test_task_reward_needs_a_task():
    with pytest.raises(ValueError, match="needs data.task"):
        resolve_reward("task")
