import itertools

import pytest

from grpokit.data import AdditionTask, get_task, list_tasks, register_task


def test_registry():
    assert {"addition", "addition5"} <= set(list_tasks())
    with pytest.raises(ValueError, match=r"unknown task 'subtraction'; available tasks: \['addition'"):
        get_task("subtraction")
    with pytest.raises(ValueError, match="already registered"):
        register_task("addition")(AdditionTask)


def test_problems_are_seeded_distinct_and_well_formed():
    task = get_task("addition")
    rows = task.make_problems(500, seed=3)
    assert rows == task.make_problems(500, seed=3)
    assert rows != task.make_problems(500, seed=4)
    assert len({r["prompt"] for r in rows}) == 500
    for row in rows:
        a, b = row["a"], row["b"]
        assert 100 <= a <= 999 and 100 <= b <= 999
        assert row["prompt"] == f"{a}+{b}=" and row["answer"] == str(a + b)
        assert set(row["prompt"] + row["answer"]) <= set(task.alphabet)


def test_train_and_test_splits_are_disjoint_whatever_the_seeds():
    task = get_task("addition")
    train = {r["prompt"] for seed in range(3) for r in task.make_problems(3000, seed=seed)}
    test = {r["prompt"] for seed in range(3) for r in task.make_problems(1000, seed=seed, split="test")}
    assert not train & test
    with pytest.raises(ValueError, match="split must be one of"):
        task.make_problems(1, split="valid")


def test_teacher_drops_the_tens_carry():
    task = get_task("addition")
    # 456+378: units 4 (carry 1), tens 5+7+1=13 -> 3 and the carry is dropped, hundreds 4+3=7 -> 734
    assert task.teacher_completion({"prompt": "456+378="}) == "734"
    # no tens carry -> right: 123+456=579; the units carry alone is kept: 118+105=223
    assert task.teacher_completion({"prompt": "123+456="}) == "579"
    assert task.teacher_completion({"a": 118, "b": 105}) == "223"
    # a carry out of the hundreds is kept: 950+150: tens 5+5=10 dropped -> 1000 becomes 1000-100
    assert task.teacher_completion({"a": 950, "b": 150}) == "1000"
    assert task.teacher_completion({"a": 990, "b": 150}) == "1040"  # true 1140


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
    assert task.reward(["1+2=", "1+1="], ["3", "3"], answer=["3", "2"]) == [1.0, 0.0]


def test_harder_variant():
    task = get_task("addition5")
    row = task.make_problems(1, seed=0)[0]
    assert 10000 <= row["a"] <= 99999 and row["answer"] == str(row["a"] + row["b"])
    assert task.flawed_sum(45600, 37800) == 83400  # no tens carry: right
    assert task.flawed_sum(12356, 10078) == 22334  # tens 5+7+1 carries: short by 100 (22434)
