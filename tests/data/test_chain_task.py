"""The ``chain`` task: two written steps (partial sum, total), a teacher that slips in the first step, and
per-step scores for process supervision."""

import pytest

from grpokit.data import get_task


@pytest.fixture
def task():
    return get_task("chain")


def test_problems_are_seeded_distinct_well_formed_and_split(task):
    rows = task.make_problems(400, seed=2)
    assert rows == task.make_problems(400, seed=2) and rows != task.make_problems(400, seed=3)
    assert task.make_problems(100, seed=2) == rows[:100]
    assert len({r["prompt"] for r in rows}) == 400
    for row in rows:
        a, b, c = row["a"], row["b"], row["c"]
        assert all(10 <= x <= 99 for x in (a, b, c))
        assert row["prompt"] == f"{a}+{b}+{c}=" and row["answer"] == f"{a + b + c:03d}"
        assert set(row["prompt"] + task.teacher_completion(row)) <= set(task.alphabet)
    test = {r["prompt"] for r in task.make_problems(400, seed=2, split="test")}
    assert not test & {r["prompt"] for r in rows}
    with pytest.raises(ValueError, match="split must be one of"):
        task.make_problems(1, split="valid")


def test_teacher_drops_the_units_carry_of_the_partial_sum_then_adds_correctly(task):
    # 47+38: units 7+8=15 -> 5, carry dropped, tens 4+3=7 -> 75 (not 85); then 75+56 = 131 (not 141)
    row = {"prompt": "47+38+56="}
    assert task.teacher_completion(row) == "075,131"
    assert task.teacher_is_wrong(row) and not task.check(row["prompt"], "075,131", "141")
    assert task.teacher_completion({"prompt": "41+38+56="}) == "079,135"  # no units carry: right
    assert not task.teacher_is_wrong({"prompt": "41+38+56="})
    rows = task.make_problems(4000, seed=0)
    assert sum(task.teacher_is_wrong(r) for r in rows) / len(rows) == pytest.approx(task.teacher_error_rate, abs=0.03)
    # every teacher completion is wrong exactly when its first step is
    for row in rows[:200]:
        first_ok = task.step_scores(row["prompt"], task.teacher_completion(row))[0][1] == 1.0
        assert first_ok == task.check(row["prompt"], task.teacher_completion(row), row["answer"])


@pytest.mark.parametrize(
    ("completion", "steps", "right"),
    [
        ("085,141", [(3, 1.0), (6, 1.0)], True),
        ("075,131", [(3, 0.0), (6, 1.0)], False),  # the teacher's slip: step 2 is valid given step 1
        ("085,131", [(3, 1.0), (6, 0.0)], False),
        ("085,14", [(3, 1.0), (5, 0.0)], False),  # 2 digits: malformed
        ("085,", [(3, 0.0)], False),  # unfinished chain: its last step scores 0
        ("085", [(2, 0.0)], False),
        ("085,141,3", [(3, 1.0), (7, 1.0), (8, 0.0)], False),  # a step after the second scores 0
        (",141", [(0, 0.0), (3, 0.0)], False),
        ("", None, False),
    ],
)
def test_step_scores_and_outcome_check(task, completion, steps, right):
    assert task.step_scores("47+38+56=", completion) == steps
    assert task.check("47+38+56=", completion, "141") is right


def test_task_steps_reward_scores_each_step_and_refuses_a_task_without_steps():
    from grpokit.rewards import resolve_reward

    reward = resolve_reward("task_steps", None, {"task": "chain"})
    assert reward(["47+38+56=", "47+38+56="], ["085,141", "075,131"], answer=["141", "141"]) == [
        [(3, 1.0), (6, 1.0)],
        [(3, 0.0), (6, 1.0)],
    ]
    with pytest.raises(ValueError, match="task 'addition' has no checkable steps"):
        resolve_reward("task_steps", None, {"task": "addition"})
    with pytest.raises(ValueError, match="needs data.task"):
        resolve_reward("task_steps", None, {})
