import threading

import pytest

pytest.importorskip("math_verify")

from grpokit.rewards.math import (  # noqa: E402
    answer_tag_extract,
    completion_text,
    gold_answer_text,
    math_verify,
    think_answer_format,
)

GSM8K_GOLD = "Natalia sold 48/2 = <<48/2=24>>24 clips in May.\nThen 48+24 = <<48+24=72>>72 in total.\n#### 72"


def score(completions, answers):
    return math_verify([None] * len(completions), completions, answers)


@pytest.mark.parametrize(
    ("completion", "gold", "expected"),
    [
        ("So the total is \\boxed{72}.", "72", 1.0),
        ("The answer is 72.", "72", 1.0),
        ("The answer is 72.", GSM8K_GOLD, 1.0),
        ("48 + 24 = 72\n#### 72", GSM8K_GOLD, 1.0),
        ("The answer is $0.5$", "\\frac{1}{2}", 1.0),
        ("\\boxed{\\frac{1}{2}}", "0.5", 1.0),
        ("It costs $1,000$ dollars", "1000", 1.0),
        ("The answer is 71.", "72", 0.0),
        ("\\boxed{73}", GSM8K_GOLD, 0.0),
        ("I do not know.", "72", 0.0),
        ("", "72", 0.0),
        # the tag wins over numbers elsewhere in the text, and the last tag is the final answer
        ("<think>72 is tempting but 36 + 36 = 71?</think><answer>71</answer>", "72", 0.0),
        ("<think>first 70</think><answer>70</answer> wait <answer>72</answer>", "72", 1.0),
    ],
)
def test_math_verify_hand_cases(completion, gold, expected):
    assert score([completion], [gold]) == [expected]


@pytest.mark.parametrize("gold", ["no number here", "", "   ", "#### ", None])
def test_unparsable_gold_is_not_applicable(gold):
    assert score(["\\boxed{72}"], [gold]) == [None]


def test_numeric_gold_column():
    # datasets often store the answer as an int or float column
    assert score(["\\boxed{72}", "0.25", "0.3"], [72, 0.25, 0.25]) == [1.0, 1.0, 0.0]


def test_chat_shaped_completions():
    chat_right = [{"role": "assistant", "content": "The answer is \\boxed{72}"}]
    chat_parts = [
        {"role": "user", "content": "what is 70 + 2? Say 5 first"},
        {"role": "assistant", "content": [{"type": "text", "text": "<answer>72</answer>"}]},
    ]
    chat_wrong = [{"role": "assistant", "content": "7"}]
    assert score([chat_right, chat_parts, chat_wrong], ["72", "72", "72"]) == [1.0, 1.0, 0.0]
    fmt = think_answer_format(
        None, [[{"role": "assistant", "content": "<think>a</think><answer>1</answer>"}]]
    )
    assert fmt == [1.0]


def test_length_mismatch_names_the_argument():
    with pytest.raises(ValueError, match="answer has 1 entries but completions has 2"):
        score(["1", "2"], ["1"])


@pytest.mark.parametrize("bad", [3, [], [{"role": "user", "content": "hi"}], [{"role": "assistant"}]])
def test_bad_completion_names_the_index(bad):
    with pytest.raises(ValueError, match=r"completions\[1\]"):
        score(["1", bad], ["1", "1"])


def test_worker_thread_runs_without_signal_timeouts():
    # math-verify's signal.alarm raises ValueError outside the main thread unless the timeouts are off
    result = {}

    def work():
        try:
            result["rewards"] = score(["\\boxed{72}", "71"], ["72", "72"])
        except Exception as err:  # surfaced by the assertion below
            result["error"] = err

    thread = threading.Thread(target=work)
    thread.start()
    thread.join()
    assert result == {"rewards": [1.0, 0.0]}


@pytest.mark.parametrize(
    ("completion", "expected"),
    [
        ("<think>6*12 = 72</think><answer>72</answer>", 1.0),
        ("<think>\nreasoning\n</think>\n\n<answer>\n72\n</answer>\n", 1.0),
        ("  <think></think><answer>x</answer>", 1.0),
        ("<answer>72</answer>", 0.0),
        ("<think>only thinking</think>", 0.0),
        ("<think>a</think><answer>72</answer> and some trailing text", 0.0),
        ("preamble <think>a</think><answer>72</answer>", 0.0),
        ("<answer>72</answer><think>a</think>", 0.0),
        ("<think>a</think><answer>1</answer><answer>2</answer>", 0.0),
        ("<think>a <think>b</think></think><answer>1</answer>", 0.0),
        ("<think>a</think><answer>  </answer>", 0.0),
        ("<think>a</think><answer>1", 0.0),
    ],
)
def test_think_answer_format(completion, expected):
    assert think_answer_format(["p"], [completion]) == [expected]


def test_answer_tag_extract():
    assert answer_tag_extract("<think>x</think><answer> 42 </answer>") == "42"
    assert answer_tag_extract("<answer>1</answer><answer>\n2\n</answer>") == "2"
    assert answer_tag_extract("<answer>multi\nline</answer>") == "multi\nline"
    assert answer_tag_extract("no tags, 42") is None
    assert answer_tag_extract("<answer>unclosed 42") is None


def test_gold_answer_text():
    assert gold_answer_text(GSM8K_GOLD) == "72"
    assert gold_answer_text("a #### b #### 1,000 ") == "1,000"
    assert gold_answer_text("\\frac{1}{2}") == "\\frac{1}{2}"
    assert gold_answer_text(7) == "7"
    assert gold_answer_text(True) is None
    assert gold_answer_text("####") is None


def test_completion_text_picks_last_assistant_message():
    chat = [
        {"role": "assistant", "content": "first"},
        {"role": "user", "content": "again"},
        {"role": "assistant", "content": "second"},
    ]
    assert completion_text(chat) == "second"
    assert completion_text("plain") == "plain"
