import pytest

from grpokit.data import PromptIterator

ROWS = [{"prompt": str(i)} for i in range(10)]


def ids(batch):
    return [int(row["prompt"]) for row in batch]


def test_epochs_cover_the_data_and_reshuffle():
    it = PromptIterator(ROWS, 3, seed=0)
    assert it.batches_per_epoch == 3
    epoch0 = [ids(next(it)) for _ in range(3)]
    epoch1 = [ids(next(it)) for _ in range(3)]
    assert all(len(b) == 3 for b in epoch0 + epoch1)
    seen0 = sum(epoch0, [])
    assert len(set(seen0)) == 9  # one row dropped (drop_last), none repeated
    assert seen0 != sum(epoch1, [])
    assert it.epoch == 1
    # same seed -> same stream; other seed -> other stream
    again = PromptIterator(ROWS, 3, seed=0)
    assert [ids(next(again)) for _ in range(6)] == epoch0 + epoch1
    other = PromptIterator(ROWS, 3, seed=1)
    assert [ids(next(other)) for _ in range(3)] != epoch0


def test_no_shuffle_and_keep_last():
    it = PromptIterator(ROWS, 4, shuffle=False, drop_last=False)
    assert [ids(next(it)) for _ in range(4)] == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9], [0, 1, 2, 3]]
    assert it.batches_per_epoch == 3


def test_resume_gives_exactly_the_same_next_batches():
    it = PromptIterator(ROWS, 3, seed=5)
    for _ in range(4):  # into the second epoch
        next(it)
    state = it.state_dict()
    expected = [ids(next(it)) for _ in range(5)]
    resumed = PromptIterator(ROWS, 3, seed=5)
    resumed.load_state_dict(state)
    assert [ids(next(resumed)) for _ in range(5)] == expected


def test_bad_arguments_and_state():
    with pytest.raises(ValueError, match="batch_size must be >= 1"):
        PromptIterator(ROWS, 0)
    with pytest.raises(ValueError, match="larger than the dataset"):
        PromptIterator(ROWS, 11)
    with pytest.raises(ValueError, match="empty"):
        PromptIterator([], 1)
    state = PromptIterator(ROWS, 3).state_dict()
    with pytest.raises(ValueError, match="batch_size=3 does not match"):
        PromptIterator(ROWS, 2).load_state_dict(state)
    with pytest.raises(ValueError, match="num_rows=10 does not match"):
        PromptIterator(ROWS[:5], 3).load_state_dict(state)
