import json

import pytest

from grpokit.data import PreferencePair, load_preference_pairs


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_text_chat_prompt_and_margin_columns(tmp_path):
    chat = [{"role": "user", "content": "hi"}]
    rows = [
        {"prompt": chat, "chosen": "good", "rejected": "bad", "margin": 1},
        {"prompt": chat, "chosen": [{"role": "assistant", "content": "x"}], "rejected": "y", "margin": "0.5"},
    ]
    pairs = load_preference_pairs(write_jsonl(tmp_path / "p.jsonl", rows))
    assert pairs[0] == PreferencePair("good", "bad", chat, 1.0)
    assert pairs[1].margin == 0.5 and isinstance(pairs[1].chosen, list)


def test_prompt_and_margin_are_optional_and_columns_configurable(tmp_path):
    path = tmp_path / "p.csv"
    path.write_text("better,worse\naa,b\n")
    pairs = load_preference_pairs(path, chosen_column="better", rejected_column="worse")
    assert pairs == [PreferencePair("aa", "b", None, 0.0)]


def test_parquet_and_saved_dataset(tmp_path):
    import datasets

    data = datasets.Dataset.from_list([{"chosen": "a", "rejected": "b"}])
    data.to_parquet(str(tmp_path / "p.parquet"))
    data.save_to_disk(str(tmp_path / "saved"))
    for source in (tmp_path / "p.parquet", tmp_path / "saved"):
        assert load_preference_pairs(source) == [PreferencePair("a", "b")]


@pytest.mark.parametrize(
    "bad, message",
    [
        ({"chosen": "a"}, r"row 2 \(line 3\): column 'rejected' is missing"),
        ({"chosen": "a", "rejected": "  "}, r"row 2 \(line 3\): column 'rejected' is empty"),
        ({"chosen": "", "rejected": "b"}, r"row 2 \(line 3\): column 'chosen' is empty"),
        ({"chosen": [], "rejected": "b"}, r"row 2 \(line 3\): column 'chosen' is an empty list"),
        (
            {"chosen": "a", "rejected": "b", "margin": "lots"},
            r"row 2 \(line 3\): column 'margin' must be a number",
        ),
    ],
)
def test_a_bad_row_is_named_with_its_file_and_line(tmp_path, bad, message):
    good = {"chosen": "a", "rejected": "b", "margin": 0}
    if "margin" not in bad:
        good.pop("margin")
    path = write_jsonl(tmp_path / "p.jsonl", [good, good, bad])
    with pytest.raises(ValueError, match=message) as err:
        load_preference_pairs(path)
    assert str(path) in str(err.value)


def test_text_prompt_with_chat_responses_is_refused(tmp_path):
    rows = [{"prompt": "q", "chosen": [{"role": "assistant", "content": "x"}], "rejected": "y"}]
    with pytest.raises(ValueError, match="row 0 .*'prompt' is text but the responses are chat messages"):
        load_preference_pairs(write_jsonl(tmp_path / "p.jsonl", rows))
