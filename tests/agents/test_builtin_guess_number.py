import collections

import pytest

from grpokit.agents.builtin import GuessNumberEnv, GuessNumberTeacher


def _play(env, guesses):
    return [env.step({"role": "assistant", "content": g}) for g in guesses]


def test_higher_and_lower_lead_to_the_number_which_earns_1():
    env = GuessNumberEnv()
    assert env.reset({"target": 11}, seed=0) == [{"role": "user", "content": "guess 1-16"}]
    steps = _play(env, ["8", "12", "11"])
    assert [s.messages for s in steps[:2]] == [
        [{"role": "user", "content": "higher"}],
        [{"role": "user", "content": "lower"}],
    ]
    assert [(s.reward, s.terminated) for s in steps] == [(0.0, False), (0.0, False), (1.0, True)]
    assert steps[-1].info == {"success": 1.0, "guesses": 3.0, "invalid_guesses": 0.0}


def test_a_fifth_wrong_guess_ends_with_0_and_text_counts_as_a_wrong_guess():
    env = GuessNumberEnv()
    env.reset({"target": 16}, seed=0)
    steps = _play(env, ["1", "two", " 3 ", "", "5"])
    assert [s.messages[0]["content"] for s in steps[:4]] == ["higher", "invalid", "higher", "invalid"]
    assert [s.terminated for s in steps] == [False] * 4 + [True]
    assert (steps[-1].reward, steps[-1].messages) == (0.0, [])
    assert steps[-1].info == {"success": 0.0, "guesses": 5.0, "invalid_guesses": 2.0}


def test_a_row_without_a_target_draws_it_from_the_seed():
    targets = set()
    for seed in range(200):
        env = GuessNumberEnv()
        env.reset({}, seed=seed)
        again = GuessNumberEnv()
        again.reset({}, seed=seed)
        assert env.target == again.target
        targets.add(env.target)
    assert targets == set(range(1, 17))
    with pytest.raises(ValueError, match="outside"):
        GuessNumberEnv().reset({"target": 17}, seed=0)


def test_test_rows_weigh_every_number_equally_and_train_rows_are_seeded():
    test = GuessNumberEnv.make_rows(160, seed=0, split="test")
    assert collections.Counter(r["target"] for r in test) == {n: 10 for n in range(1, 17)}
    train = GuessNumberEnv.make_rows(50, seed=3)
    assert train == GuessNumberEnv.make_rows(50, seed=3) != GuessNumberEnv.make_rows(50, seed=4)
    assert all(r["prompt"] == "guess 1-16" for r in train)


def test_the_teacher_scans_upwards_and_its_random_guesses_stay_consistent():
    teacher = GuessNumberTeacher()
    rows = GuessNumberEnv.make_rows(1600, seed=0, split="test")
    scans = randoms = 0
    for i, row in enumerate(rows):
        episode = teacher.episode(row, seed=i)
        low, high = 1, 16
        for message in episode.messages[1:]:
            if message["role"] == "assistant":
                guess = int(message["content"])
                assert low <= guess <= high  # never a guess the answers so far rule out
                scans += guess == low
                randoms += guess != low
            elif message["content"] == "higher":
                low = guess + 1
            else:
                high = guess - 1
        assert episode.reward == float(int(episode.messages[-1]["content"]) == row["target"])
    assert 0.2 < randoms / (scans + randoms) < 0.3  # 30% random, some of which hit the lowest number
    success = sum(teacher.episode(row, seed=i).reward for i, row in enumerate(rows)) / len(rows)
    assert 0.4 < success < 0.55


def test_a_deterministic_scan_wins_exactly_on_the_five_smallest_numbers():
    teacher = GuessNumberTeacher(random_rate=0.0)
    wins = {t for t in range(1, 17) if teacher.episode({"target": t}, seed=t).reward == 1.0}
    assert wins == {1, 2, 3, 4, 5}
