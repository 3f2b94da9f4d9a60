import random

import pytest

from grpokit.agents.builtin import CalculatorEnv, CalculatorTeacher, evaluate_expression


def test_rows_are_seeded_disjoint_between_splits_and_extend_a_smaller_draw():
    train = CalculatorEnv.make_rows(3000, seed=0, split="train")
    test = CalculatorEnv.make_rows(500, seed=0, split="test")
    assert CalculatorEnv.make_rows(3000, seed=0, split="train") == train
    assert CalculatorEnv.make_rows(100, seed=0, split="train") == train[:100]
    assert CalculatorEnv.make_rows(100, seed=1, split="train") != train[:100]
    pairs = {(r["a"], r["b"]) for r in train}
    assert len(pairs) == 3000 and not pairs & {(r["a"], r["b"]) for r in test}
    for row in train[:50] + test[:50]:
        assert 100 <= row["a"] <= 999 and 10 <= row["b"] <= 99
        assert row["answer"] == str(row["a"] * row["b"]) and row["prompt"] == f"{row['a']}*{row['b']}="
    with pytest.raises(ValueError, match="split"):
        CalculatorEnv.make_rows(1, split="validation")


@pytest.mark.parametrize(
    ("text", "value"), [("347*26", 9022), ("2+3*4-5", 9), ("7", 7), (" 10 - 2 * 3 * 2 ", -2), ("5-8", -3)]
)
def test_expressions_follow_precedence(text, value):
    assert evaluate_expression(text) == value


@pytest.mark.parametrize(
    "text", ["", "2**3", "1/2", "__import__('os')", "3*", "*3", "2 3", "1+-2", "(1+2)", "9" * 65]
)
def test_expressions_outside_digits_and_plus_minus_times_are_refused(text):
    with pytest.raises(ValueError):
        evaluate_expression(text)


def test_the_tool_is_a_documented_typed_bound_method_that_counts_its_calls():
    from transformers.utils import get_json_schema

    env = CalculatorEnv()
    env.reset({"a": 347, "b": 26}, seed=0)
    assert env.tools == [env.calc]
    schema = get_json_schema(env.calc)["function"]
    assert schema["name"] == "calc"
    assert schema["parameters"]["properties"]["x"]["type"] == "string"
    assert schema["parameters"]["required"] == ["x"]
    assert env.calc(x="347*26") == "9022"
    assert env.calc("1+1") == "2"
    assert env.tool_calls == 2


def test_an_exact_answer_earns_1_and_anything_else_0_and_both_end_the_episode():
    env = CalculatorEnv()
    assert env.reset({"prompt": "347*26="}, seed=0) == [{"role": "user", "content": "347*26="}]
    assert env.reset_info["task"] == "multiply"
    env.calc("347*26")
    right = env.step({"role": "assistant", "content": " 9022\n"})
    assert (right.reward, right.terminated, right.messages) == (1.0, True, [])
    assert right.info == {"success": 1.0, "tool_calls": 1.0}
    env.reset({"a": 347, "b": 26}, seed=0)
    for text in ("9023", "09022", '[calc(x="347*26")', ""):
        wrong = env.step({"role": "assistant", "content": text})
        assert (wrong.reward, wrong.terminated, wrong.info["tool_calls"]) == (0.0, True, 0.0)


def test_the_teacher_calls_the_tool_on_30_percent_and_is_right_exactly_then():
    teacher = CalculatorTeacher()
    rows = CalculatorEnv.make_rows(2000, seed=0)
    episodes = [teacher.episode(row, seed=i) for i, row in enumerate(rows)]
    called = [e.info["tool_calls"] == 1 for e in episodes]
    assert 0.27 < sum(called) / len(called) < 0.33
    for row, episode, used in zip(rows[:200], episodes[:200], called[:200]):
        roles = [m["role"] for m in episode.messages]
        answer = episode.messages[-1]["content"]
        if used:
            assert roles == ["user", "assistant", "tool", "assistant"]
            call = episode.messages[1]
            assert call["content"] == f'[calc(x="{row["a"]}*{row["b"]}")]'
            assert call["tool_calls"][0]["function"] == {
                "name": "calc",
                "arguments": {"x": row["prompt"][:-1]},
            }
            assert episode.messages[2]["content"] == answer == row["answer"]
            assert episode.reward == 1.0
        else:  # a plausible guess: the right length and leading digits, but wrong
            assert roles == ["user", "assistant"]
            assert answer != row["answer"] and len(answer) == len(row["answer"])
            assert answer[:2] == row["answer"][:2] and episode.reward == 0.0
    assert teacher.episode(rows[0], seed=5) == teacher.episode(rows[0], seed=5)


def test_every_teacher_text_is_in_the_alphabet():
    teacher = CalculatorTeacher(tool_rate=0.5)
    rng = random.Random(0)
    for row in CalculatorEnv.make_rows(100, seed=0):
        for message in teacher.episode(row, seed=rng.randrange(10**6)).messages:
            assert set(message["content"]) <= set(CalculatorEnv.alphabet)
