"""Every bad prompt file the suite knows of gives an error naming the file, the row (and line) and the
column, and does so before any model or tokenizer is loaded; long prompts are truncated, skipped (counted)
or rejected as configured."""

import json

import pytest

from grpokit.config import GRPOConfig, build_config
from grpokit.data import load_prompts, screen_prompt_lengths


def jsonl(*rows):
    return "".join(json.dumps(r) + "\n" for r in rows).encode()


# (file name, bytes, data config, expected message after the file path)
BAD_FILES = [
    ("missing.jsonl", jsonl({"prompt": "a", "answer": "1"}, {"answer": "2"}), {},
     r"column 'prompt' is missing \(first row lacking it: row 1 \(line 2\)\)"),
    ("null.jsonl", jsonl({"prompt": "a"}, {"prompt": None}), {},
     r"column 'prompt' is missing \(first row lacking it: row 1 \(line 2\)\)"),
    ("required.csv", b"prompt,answer\na,1\nb,\n", {"required_columns": ["level"]},
     r"column 'level' is missing \(first row lacking it: row 0 \(line 2\)\); available columns: \['prompt', "),
    ("empty.jsonl", jsonl({"prompt": "a"}, {"prompt": " \n "}), {}, r"row 1 \(line 2\): column 'prompt' is an empty"),
    ("latin1.jsonl", b'{"prompt": "a"}\n{"prompt": "caf\xe9"}\n', {}, r"line 2 is not valid UTF-8"),
    ("latin1.csv", b"prompt\na\ncaf\xe9\n", {}, r"line 3 is not valid UTF-8"),
    ("surrogate.jsonl", b'{"prompt": "a"}\n{"prompt": "half \\ud800 pair"}\n', {},
     r"row 1 \(line 2\): column 'prompt' is not valid Unicode text \(surrogates not allowed at character 5"),
    ("chat-surrogate.jsonl", jsonl({"prompt": [{"role": "user", "content": "x\ud83d"}]}), {},
     r"row 0 \(line 1\): column 'prompt', message 0 is not valid Unicode text"),
    ("number.jsonl", jsonl({"prompt": 3}), {}, r"column 'prompt' must be a string or a list of chat messages, got int"),
    ("not-json.jsonl", b'{"prompt": "a"}\n{"prompt": "b"\n', {}, r"line 2 is not valid JSON"),
    ("no-rows.jsonl", b"\n\n", {}, r"the dataset has no rows"),
    ("duplicate.jsonl", jsonl({"id": "q1", "prompt": "a"}, {"id": "q2", "prompt": "b"}, {"id": "q1", "prompt": "c"}),
     {"id_column": "id"}, r"duplicate id 'q1' in column 'id': row 0 \(line 1\) and row 2 \(line 3\)"),
    ("missing-id.jsonl", jsonl({"id": 1, "prompt": "a"}, {"prompt": "b"}), {"id_column": "id"},
     r"column 'id' is missing \(first row lacking it: row 1 \(line 2\)\)"),
    ("list-id.jsonl", jsonl({"id": [1], "prompt": "a"}), {"id_column": "id"},
     r"row 0 \(line 1\): id column 'id' holds a list, expected a string or number"),
    ("prompts.txt", b"a\n", {}, r"unsupported file type '.txt'"),
]  # fmt: skip


@pytest.fixture
def no_model_loads(monkeypatch):
    import grpokit.models.loading

    def forbidden(*args, **kwargs):
        raise AssertionError("a model or tokenizer was loaded before the data was checked")

    monkeypatch.setattr(grpokit.models.loading, "load_model", forbidden)
    monkeypatch.setattr(grpokit.models.loading, "load_tokenizer", forbidden)


@pytest.mark.parametrize(("name", "content", "data", "message"), BAD_FILES, ids=[f[0] for f in BAD_FILES])
def test_bad_file_is_named_by_row_before_any_model_loads(
    no_model_loads, tmp_path, name, content, data, message
):
    from grpokit.trainers.grpo import GRPOTrainer

    path = tmp_path / name
    path.write_bytes(content)
    config = build_config(
        GRPOConfig,
        {
            "model": {"name_or_path": str(tmp_path / "model")},
            "data": {"path": str(path), "task": None, **data},
            "rewards": {"reward_funcs": ["length_penalty"]},
            "logging": {"output_dir": str(tmp_path / "runs")},
        },
    )
    with pytest.raises(ValueError, match=message) as info:
        GRPOTrainer(config)
    assert str(path) in str(info.value)


def test_missing_file_is_named(no_model_loads, tmp_path):
    with pytest.raises(FileNotFoundError, match="dataset file '.*nowhere.jsonl' does not exist"):
        load_prompts(tmp_path / "nowhere.jsonl")


def test_unique_ids_pass_and_ids_may_be_numbers():
    rows = [{"id": 1, "prompt": "a"}, {"id": "1", "prompt": "b"}, {"id": 2, "prompt": "c"}]
    assert len(load_prompts(rows, id_column="id")) == 3  # 1 and "1" are different ids


# ---------------------------------------------------------------------------------------------------------
# Long prompts
# ---------------------------------------------------------------------------------------------------------

ROWS = [{"prompt": p} for p in ("a", "bb", "cccc", "dd", "eeeee")]
LENGTHS = [1, 2, 4, 2, 5]


def test_left_keeps_every_row_and_counts_the_long_ones():
    kept, counts = screen_prompt_lengths(ROWS, LENGTHS, 3, "left")
    assert kept == ROWS and counts == {"truncated": 2, "skipped": 0}


def test_skip_drops_the_long_rows_and_counts_them():
    kept, counts = screen_prompt_lengths(ROWS, LENGTHS, 3, "skip")
    assert [r["prompt"] for r in kept] == ["a", "bb", "dd"] and counts == {"truncated": 0, "skipped": 2}
    kept, counts = screen_prompt_lengths(ROWS, LENGTHS, 5, "skip")  # a prompt of exactly the limit stays
    assert kept == ROWS and counts["skipped"] == 0


def test_error_names_the_first_long_row_and_how_many():
    with pytest.raises(
        ValueError, match=r"d.jsonl: row 2 has a prompt of 4 tokens, more than limit=3 \(2 rows"
    ):
        screen_prompt_lengths(ROWS, LENGTHS, 3, "error", source="d.jsonl", setting="limit")


def test_skipping_every_row_is_an_error_not_an_empty_run():
    with pytest.raises(ValueError, match="every one of the 5 prompts is longer than max_prompt_length=0"):
        screen_prompt_lengths(ROWS, LENGTHS, 0, "skip")


@pytest.mark.parametrize(
    ("lengths", "policy", "message"),
    [
        ([1, 2], "left", "got 2 prompt lengths for 5 rows"),
        (LENGTHS, "drop", "must be 'left', 'skip' or 'error'"),
    ],
)
def test_screen_rejects_bad_arguments(lengths, policy, message):
    with pytest.raises(ValueError, match=message):
        screen_prompt_lengths(ROWS, lengths, 3, policy)
