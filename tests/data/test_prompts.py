import json

import pytest

from grpokit.data import PromptDataset, load_prompts

ROWS = [
    {"prompt": "1+2=", "answer": "3"},
    {"prompt": [{"role": "user", "content": "2+2?"}], "answer": "4"},
]


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def test_jsonl_json_csv_parquet_and_memory(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    jsonl = load_prompts(write_jsonl(tmp_path / "d.jsonl", ROWS), required_columns=("answer",))
    assert isinstance(jsonl, PromptDataset) and list(jsonl) == ROWS
    assert jsonl.prompts == [r["prompt"] for r in ROWS] and jsonl.column("answer") == ["3", "4"]

    (tmp_path / "rows.json").write_text(json.dumps(ROWS))
    assert list(load_prompts(tmp_path / "rows.json")) == ROWS
    (tmp_path / "cols.json").write_text(json.dumps({"prompt": ["a", "b"], "answer": ["1", "2"]}))
    assert list(load_prompts(tmp_path / "cols.json")) == [{"prompt": "a", "answer": "1"}, {"prompt": "b", "answer": "2"}]

    (tmp_path / "d.csv").write_text('prompt,answer\n"1+2=",3\n"x, y",4\n', encoding="utf-8")
    assert list(load_prompts(tmp_path / "d.csv")) == [{"prompt": "1+2=", "answer": "3"}, {"prompt": "x, y", "answer": "4"}]

    chats = [{"prompt": [{"role": "user", "content": f"{i}+{i}?"}], "answer": str(2 * i)} for i in range(3)]
    pq.write_table(pa.Table.from_pylist(chats), tmp_path / "d.parquet")
    assert list(load_prompts(tmp_path / "d.parquet")) == chats

    assert list(load_prompts(ROWS, max_rows=1)) == ROWS[:1]


def test_saved_datasets_folder_and_splits(tmp_path):
    from datasets import Dataset, DatasetDict

    Dataset.from_list(ROWS[:1]).save_to_disk(tmp_path / "single")
    assert list(load_prompts(tmp_path / "single")) == ROWS[:1]
    both = DatasetDict({"train": Dataset.from_list(ROWS[:1]), "test": Dataset.from_list([{"prompt": "t"}])})
    both.save_to_disk(tmp_path / "dict")
    assert load_prompts(tmp_path / "dict", split="test").prompts == ["t"]
    with pytest.raises(ValueError, match=r"has splits \['train', 'test'\]: pass split="):
        load_prompts(tmp_path / "dict")
    with pytest.raises(ValueError, match="no split 'valid'; available splits"):
        load_prompts(both, split="valid")
    assert load_prompts(Dataset.from_list(ROWS[:1])).prompts == ["1+2="]


def test_max_rows_stops_reading_early(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text(json.dumps(ROWS[0]) + "\n" + json.dumps(ROWS[0]) + "\n{broken\n", encoding="utf-8")
    assert len(load_prompts(path, max_rows=2)) == 2  # the broken third line is never parsed
    with pytest.raises(ValueError, match=r"d.jsonl: line 3 is not valid JSON"):
        load_prompts(path)


def test_missing_file_and_unknown_extension(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.jsonl"):
        load_prompts(tmp_path / "nope.jsonl")
    (tmp_path / "d.txt").write_text("hi")
    with pytest.raises(ValueError, match=r"unsupported file type '\.txt'; supported: \.jsonl, \.json, \.csv, \.parquet"):
        load_prompts(tmp_path / "d.txt")
    (tmp_path / "folder").mkdir()
    with pytest.raises(ValueError, match="not a datasets.save_to_disk folder"):
        load_prompts(tmp_path / "folder")


def test_missing_column_names_column_file_row_and_available(tmp_path):
    path = write_jsonl(tmp_path / "d.jsonl", [{"prompt": "a", "answer": "1"}, {"prompt": "b"}, {"prompt": "c"}])
    with pytest.raises(ValueError, match=r"d.jsonl: column 'answer' is missing \(first row lacking it: row 1 \(line 2\)\); "
                                         r"available columns: \['prompt', 'answer'\]"):
        load_prompts(path, required_columns=("answer",))
    with pytest.raises(ValueError, match="column 'question' is missing"):
        load_prompts(path, prompt_column="question")


@pytest.mark.parametrize(
    ("prompt", "message"),
    [
        ("  ", "row 1 \\(line 2\\): column 'prompt' is an empty prompt"),
        (7, "row 1 \\(line 2\\): column 'prompt' must be a string or a list of chat messages, got int"),
        ([], "empty list of chat messages"),
        ([{"role": "user"}], "message 0 must be a dict with 'role' and 'content'"),
    ],
)
def test_bad_prompts_name_the_row_and_file(tmp_path, prompt, message):
    path = write_jsonl(tmp_path / "d.jsonl", [{"prompt": "ok"}, {"prompt": prompt}])
    with pytest.raises(ValueError, match=f"d.jsonl: {message}" if "row" in message else message):
        load_prompts(path)


def test_malformed_and_non_object_json_lines(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text('{"prompt": "a"}\n\n[1, 2]\n', encoding="utf-8")
    with pytest.raises(ValueError, match="line 3 is a JSON list, expected an object"):
        load_prompts(path)


def test_non_utf8_names_file_and_line(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_bytes(b'{"prompt": "a"}\n{"prompt": "caf\xe9"}\n')
    with pytest.raises(ValueError, match=r"d.jsonl: line 2 is not valid UTF-8"):
        load_prompts(path)
    csv_path = tmp_path / "d.csv"
    csv_path.write_bytes(b"prompt\nok\n\xff\n")
    with pytest.raises(ValueError, match=r"d.csv: line 3 is not valid UTF-8"):
        load_prompts(csv_path)


def test_csv_extra_fields_and_empty_dataset(tmp_path):
    path = tmp_path / "d.csv"
    path.write_text("prompt\na\nb,c\n", encoding="utf-8")
    with pytest.raises(ValueError, match="line 3 has more fields than the header"):
        load_prompts(path)
    (tmp_path / "e.jsonl").write_text("\n")
    with pytest.raises(ValueError, match="has no rows"):
        load_prompts(tmp_path / "e.jsonl")
    with pytest.raises(ValueError, match="single file; split='test'"):
        load_prompts(path, split="test")
    with pytest.raises(ValueError, match="row 0 is a str, expected a dict"):
        load_prompts(["a"])


def test_system_prompt_turns_string_prompts_into_chat_and_keeps_existing_system_messages():
    from grpokit.data import load_prompts

    rows = [
        {"prompt": "2+2?", "answer": "4"},
        {"prompt": [{"role": "user", "content": "3+3?"}], "answer": "6"},
        {"prompt": [{"role": "system", "content": "own"}, {"role": "user", "content": "1+1?"}], "answer": "2"},
    ]
    chat = load_prompts(rows).with_system_prompt("Answer in <answer></answer>.")
    system = {"role": "system", "content": "Answer in <answer></answer>."}
    assert chat.prompts == [
        [system, {"role": "user", "content": "2+2?"}],
        [system, {"role": "user", "content": "3+3?"}],
        rows[2]["prompt"],
    ]
    assert [row["answer"] for row in chat] == ["4", "6", "2"]
    assert rows[0]["prompt"] == "2+2?"  # the source rows are not modified
