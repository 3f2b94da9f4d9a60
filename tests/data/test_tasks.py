import itertools

import pytest

from grpokit.data import AdditionTask, Task, get_task, list_tasks, register_task


def test_registry():
    assert {"addition", "addition5"} <= set(list_tasks())
    with pytest.raises(ValueError, match=r"unknown task 'subtraction'; available tasks: \['addition'"):
        get_task("subtraction")
    with pytest.raises(ValueError, match="already registered"):
        register_task("addition")(AdditionTask)
    with pytest.raises(ValueError, match="digits must be >= 3"):
        AdditionTask(2)


def test_problems_are_seeded_distinct_and_well_formed():
    task = get_task("addition")
    rows = task.make_problems(500, seed=3)
    assert rows == task.make_problems(500, seed=3)
    assert rows != task.make_problems(500, seed=4)
    assert len({r["prompt"] for r in rows}) == 500
    for row in rows:
        a, b = row["a"], row["b"]
        assert 100 <= a <= 999 and 100 <= b <= 999
        assert row["prompt"] == f"{a}+{b}=" and int(row["answer"]) == a + b and len(row["answer"]) == 4
        assert set(row["prompt"] + row["answer"]) <= set(task.alphabet)
    assert task.max_completion_tokens == 4


def test_a_larger_draw_extends_a_smaller_one():
    # The demo's validation problems are the rows after its training rows in one draw.
    task = get_task("addition")
    assert task.make_problems(300, seed=1)[:120] == task.make_problems(120, seed=1)


def test_answers_are_zero_padded_to_one_more_digit_than_the_operands():
    task = get_task("addition")
    assert task.format_answer(579) == "0579" and task.format_answer(1140) == "1140"
    assert get_task("addition5").format_answer(579) == "000579"


def test_train_and_test_splits_are_disjoint_whatever_the_seeds():
    task = get_task("addition")
    train = {r["prompt"] for seed in range(3) for r in task.make_problems(3000, seed=seed)}
    test = {r["prompt"] for seed in range(3) for r in task.make_problems(1000, seed=seed, split="test")}
    assert not train & test
    with pytest.raises(ValueError, match="split must be one of"):
        task.make_problems(1, split="valid")
    with pytest.raises(ValueError, match="n must be >= 0"):
        task.make_problems(-1)
    with pytest.raises(ValueError, match="too many distinct test problems"):
        task.make_problems(10**6, split="test")


def test_teacher_drops_the_tens_carry():
    task = get_task("addition")
    # 456+378: units 4 (carry 1), tens 5+7+1=13 -> 3 and the carry is dropped, hundreds 4+3=7 -> 734
    assert task.teacher_completion({"prompt": "456+378="}) == "0734"
    # no tens carry -> right: 123+456=579; the units carry alone is kept: 118+105=223
    assert task.teacher_completion({"prompt": "123+456="}) == "0579"
    assert task.teacher_completion({"a": 118, "b": 105}) == "0223"
    # a carry out of the hundreds is kept: 950+150: tens 5+5=10 dropped -> 1000 instead of 1100
    assert task.teacher_completion({"a": 950, "b": 150}) == "1000"
    assert task.teacher_completion({"a": 990, "b": 150}) == "1040"  # true 1140
    assert task.teacher_is_wrong({"a": 990, "b": 150}) and not task.teacher_is_wrong({"a": 123, "b": 456})
    with pytest.raises(ValueError, match="not of the form 'a\\+b='"):
        task.teacher_completion({"prompt": "12*3="})


def test_teacher_is_wrong_agrees_with_the_checker():
    task = get_task("addition")
    rows = task.make_problems(300, seed=0)
    fails = [not task.check(row["prompt"], task.teacher_completion(row), row["answer"]) for row in rows]
    assert 0.4 < sum(fails) / len(fails) < 0.6
    assert [task.teacher_is_wrong(row) for row in rows] == fails
    # the base class's definition, through the checker, which AdditionTask overrides with arithmetic
    assert [Task.teacher_is_wrong(task, row) for row in rows] == fails


def test_teacher_error_rate_is_exact():
    # Over every (tens, units) digit pair of both operands the flaw hits 0.495 of problems; the
    # hundreds digits do not matter, so enumerating two-digit tails is exhaustive.
    task = AdditionTask(3)
    tails = list(itertools.product(range(100), repeat=2))
    wrong = sum(task.flawed_sum(100 + x, 100 + y) != 200 + x + y for x, y in tails)
    assert wrong / len(tails) == task.teacher_error_rate == 0.495
    # ... and the teacher is then short by exactly 100
    assert all(200 + x + y - task.flawed_sum(100 + x, 100 + y) in (0, 100) for x, y in tails)


def test_check_is_exact_final_answer_match():
    task = get_task("addition")
    assert task.check("1+2=", "3", "3") and task.check("1+2=", " 3\n", "3")
    assert not task.check("1+2=", "33", "3") and not task.check("1+2=", "", "3")
    assert not task.check("123+456=", "579", "0579")  # the answer's format is part of the answer
    assert task.reward(["1+2=", "1+1="], ["3", "3"], answer=["3", "2"]) == [1.0, 0.0]


def test_harder_variant():
    task = get_task("addition5")
    row = task.make_problems(1, seed=0)[0]
    assert 10000 <= row["a"] <= 99999 and row["answer"] == f"{row['a'] + row['b']:06d}"
    assert task.flawed_sum(45600, 37800) == 83400  # no tens carry: right
    assert task.flawed_sum(12356, 10078) == 22334  # tens 5+7+1 carries: short by 100 (22434)
