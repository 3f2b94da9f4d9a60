"""Prompt datasets: rows (dicts) read from JSONL, JSON, CSV, Parquet, a saved ``datasets`` folder, or memory.

Every row must have a prompt: a non-empty string, or a non-empty list of chat messages
(``{"role": ..., "content": ...}``). The other columns travel with the prompt to the reward functions
(e.g. ``answer``). Errors name the file, the row (and the line for text formats) and the column, so a
bad row in a 100k-row file is found without a debugger.
"""

from __future__ import annotations

import csv
import io
import json
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

SUPPORTED_FORMATS: tuple[str, ...] = (".jsonl", ".json", ".csv", ".parquet", "a datasets.save_to_disk folder")


@dataclass
class PromptDataset(Sequence):
    """Validated prompt rows.

    Attributes:
        rows: the rows, each a dict with at least ``prompt_column``.
        prompt_column: the column holding the prompt.
        source: where the rows came from (for messages).
    """

    rows: list[dict[str, Any]]
    prompt_column: str = "prompt"
    source: str = "<memory>"
    column_names: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index):
        return self.rows[index]

    @property
    def prompts(self) -> list[Any]:
        return [row[self.prompt_column] for row in self.rows]

    def with_system_prompt(self, system_prompt: str) -> PromptDataset:
        """The same rows with chat-shaped prompts that open with ``system_prompt``.

        A string prompt becomes ``[system, user]`` messages (so the tokenizer's chat template applies); a chat
        prompt without a system message gets one prepended; one that has its own keeps it.
        """
        rows = []
        for row in self.rows:
            prompt = row[self.prompt_column]
            system = {"role": "system", "content": system_prompt}
            if isinstance(prompt, str):
                prompt = [system, {"role": "user", "content": prompt}]
            elif not prompt or prompt[0].get("role") != "system":
                prompt = [system, *prompt]
            rows.append({**row, self.prompt_column: prompt})
        return PromptDataset(rows, self.prompt_column, self.source, list(self.column_names))

    def column(self, name: str) -> list[Any]:
        """All values of column ``name``."""
        if name not in self.column_names:
            raise KeyError(f"column {name!r} not in {self.source}; available columns: {self.column_names}")
        return [row.get(name) for row in self.rows]


def _where(index: int, lines: list[int] | None) -> str:
    """``row i`` (0-based, as in the loaded list), plus the 1-based file line for text formats."""
    line = f" (line {lines[index]})" if lines is not None else ""
    return f"row {index}{line}"


def _decode_utf8(raw: bytes, path: Path) -> str:
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        line = raw[: error.start].count(b"\n") + 1
        raise ValueError(f"{path}: line {line} is not valid UTF-8 ({error.reason} at byte {error.start})") from None


def _read_jsonl(path: Path, max_rows: int | None) -> tuple[list[dict[str, Any]], list[int]]:
    rows, lines = [], []
    text = _decode_utf8(path.read_bytes(), path)
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as error:
            raise ValueError(f"{path}: line {number} is not valid JSON: {error.msg} (column {error.colno})") from None
        if not isinstance(row, dict):
            raise ValueError(f"{path}: line {number} is a JSON {type(row).__name__}, expected an object (a row)")
        rows.append(row)
        lines.append(number)
        if max_rows is not None and len(rows) >= max_rows:
            break
    return rows, lines


def _read_json(path: Path) -> list[dict[str, Any]]:
    text = _decode_utf8(path.read_bytes(), path)
    try:
        data = json.loads(text)
    except json.JSONDecodeError as error:
        raise ValueError(f"{path}: not valid JSON: {error.msg} (line {error.lineno}, column {error.colno})") from None
    if isinstance(data, dict) and data and all(isinstance(v, list) for v in data.values()):
        # Column-oriented: {"prompt": [...], "answer": [...]}
        lengths = {name: len(values) for name, values in data.items()}
        if len(set(lengths.values())) != 1:
            raise ValueError(f"{path}: columns have different lengths {lengths}")
        names = list(data)
        return [dict(zip(names, values)) for values in zip(*data.values())]
    if not isinstance(data, list):
        raise ValueError(f"{path}: expected a list of row objects or an object of equal-length columns")
    for index, row in enumerate(data):
        if not isinstance(row, dict):
            raise ValueError(f"{path}: row {index} is a JSON {type(row).__name__}, expected an object")
    return data


def _read_csv(path: Path, max_rows: int | None) -> tuple[list[dict[str, Any]], list[int]]:
    text = _decode_utf8(path.read_bytes(), path)
    reader = csv.DictReader(io.StringIO(text, newline=""))
    if not reader.fieldnames:
        raise ValueError(f"{path}: empty CSV file (no header row)")
    rows, lines = [], []
    for row in reader:
        if None in row:
            raise ValueError(f"{path}: line {reader.line_num} has more fields than the header {reader.fieldnames}")
        rows.append(dict(row))
        lines.append(reader.line_num)
        if max_rows is not None and len(rows) >= max_rows:
            break
    return rows, lines


def _read_parquet(path: Path) -> list[dict[str, Any]]:
    try:
        import pyarrow.parquet as pq
    except ImportError as error:  # pragma: no cover - pyarrow ships with the "data" extra
        raise ImportError("reading .parquet needs pyarrow: pip install 'grpokit[data]'") from error
    return pq.read_table(path).to_pylist()


def _select_split(data: Any, split: str | None, source: str) -> Any:
    """A ``datasets.Dataset`` from a Dataset or DatasetDict."""
    if isinstance(getattr(data, "column_names", None), dict):  # a DatasetDict: one column list per split
        splits = list(data.keys())
        if split is None:
            if len(splits) != 1:
                raise ValueError(f"{source} has splits {splits}: pass split= to choose one")
            split = splits[0]
        if split not in splits:
            raise ValueError(f"{source} has no split {split!r}; available splits: {splits}")
        return data[split]
    if split not in (None, "train"):
        raise ValueError(f"{source} is a single dataset; split={split!r} cannot be selected")
    return data


def _load_rows(
    source: Any, split: str | None, max_rows: int | None
) -> tuple[list[dict[str, Any]], list[int] | None, str]:
    """(rows, line numbers or None, source name)."""
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        name = str(path)
        if not path.exists():
            raise FileNotFoundError(f"dataset file {name!r} does not exist")
        if path.is_dir():
            try:
                from datasets import load_from_disk
            except ImportError as error:  # pragma: no cover
                raise ImportError("reading a saved dataset folder needs `pip install 'grpokit[data]'`") from error
            try:
                data = load_from_disk(str(path))
            except FileNotFoundError as error:
                raise ValueError(
                    f"{name} is a folder but not a datasets.save_to_disk folder ({error}); supported: "
                    f"{', '.join(SUPPORTED_FORMATS)}"
                ) from None
            return _select_split(data, split, name).to_list(), None, name
        if split not in (None, "train"):
            raise ValueError(f"{name} is a single file; split={split!r} cannot be selected")
        suffix = path.suffix.lower()
        if suffix == ".jsonl":
            rows, lines = _read_jsonl(path, max_rows)
            return rows, lines, name
        if suffix == ".json":
            return _read_json(path), None, name
        if suffix == ".csv":
            rows, lines = _read_csv(path, max_rows)
            return rows, lines, name
        if suffix == ".parquet":
            return _read_parquet(path), None, name
        raise ValueError(f"{name}: unsupported file type {suffix!r}; supported: {', '.join(SUPPORTED_FORMATS)}")
    if type(source).__module__.startswith("datasets"):  # datasets.Dataset / DatasetDict
        return _select_split(source, split, "<dataset>").to_list(), None, f"<{type(source).__name__}>"
    if isinstance(source, Iterable) and not isinstance(source, (dict, bytes)):
        rows = list(source)
        for index, row in enumerate(rows):
            if not isinstance(row, dict):
                raise ValueError(f"<list>: row {index} is a {type(row).__name__}, expected a dict")
        return rows, None, "<list>"
    raise ValueError(f"source must be a path, a datasets.Dataset or a list of dicts, got {type(source).__name__}")


def _check_text(text: str, where: str) -> None:
    """Reject strings that cannot be written as UTF-8 (lone surrogates, e.g. from a bad decode upstream):
    they fail later inside the tokenizer, far from the row that holds them."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as error:
        raise ValueError(
            f"{where} is not valid Unicode text ({error.reason} at character {error.start}: "
            f"{text[max(0, error.start - 10) : error.start + 10]!r})"
        ) from None


def _check_prompt(value: Any, where: str, column: str) -> None:
    if isinstance(value, str):
        if not value.strip():
            raise ValueError(f"{where}: column {column!r} is an empty prompt")
        _check_text(value, f"{where}: column {column!r}")
        return
    if isinstance(value, list):
        if not value:
            raise ValueError(f"{where}: column {column!r} is an empty list of chat messages")
        for j, message in enumerate(value):
            if not isinstance(message, dict) or not {"role", "content"} <= set(message):
                raise ValueError(
                    f"{where}: column {column!r}, message {j} must be a dict with 'role' and 'content', "
                    f"got {message!r}"
                )
            if isinstance(message["content"], str):
                _check_text(message["content"], f"{where}: column {column!r}, message {j}")
        return
    raise ValueError(
        f"{where}: column {column!r} must be a string or a list of chat messages, got {type(value).__name__}"
    )


def load_prompts(
    source: str | os.PathLike | Any,
    *,
    prompt_column: str = "prompt",
    required_columns: Sequence[str] = (),
    split: str | None = None,
    max_rows: int | None = None,
    id_column: str | None = None,
) -> PromptDataset:
    """Read and validate a prompt dataset.

    Args:
        source: a ``.jsonl`` / ``.json`` / ``.csv`` / ``.parquet`` file, a folder written by
            ``datasets.Dataset.save_to_disk``, a ``datasets.Dataset`` / ``DatasetDict``, or a list of dicts.
        prompt_column: the column holding each prompt (text or chat messages).
        required_columns: further columns every row must have (e.g. ``("answer",)`` for a checker).
        split: the split of a ``DatasetDict`` (optional when it has one split); single files are one split.
        max_rows: keep only the first ``max_rows`` rows.
        id_column: a column of unique row ids; a missing or repeated id is an error naming the rows.

    Returns:
        A :class:`PromptDataset`.
    """
    if max_rows is not None and max_rows < 1:
        raise ValueError(f"max_rows must be >= 1 or None, got {max_rows}")
    rows, lines, name = _load_rows(source, split, max_rows)
    if max_rows is not None:
        rows = rows[:max_rows]
    if not rows:
        raise ValueError(f"{name}: the dataset has no rows")
    column_names = list(dict.fromkeys(key for row in rows for key in row))
    for column in dict.fromkeys([prompt_column, *required_columns, *([id_column] if id_column else [])]):
        for index, row in enumerate(rows):
            if column not in row or row[column] is None:
                raise ValueError(
                    f"{name}: column {column!r} is missing (first row lacking it: {_where(index, lines)}); "
                    f"available columns: {column_names}"
                )
    for index, row in enumerate(rows):
        _check_prompt(row[prompt_column], f"{name}: {_where(index, lines)}", prompt_column)
    if id_column is not None:
        _check_unique_ids(rows, id_column, name, lines)
    return PromptDataset(rows=rows, prompt_column=prompt_column, source=name, column_names=column_names)


def _check_unique_ids(rows: list[dict[str, Any]], id_column: str, name: str, lines: list[int] | None) -> None:
    first: dict[Any, int] = {}
    for index, row in enumerate(rows):
        key = row[id_column]
        try:
            seen = first.setdefault(key, index)
        except TypeError:  # unhashable (a list or dict): ids must be scalars
            raise ValueError(
                f"{name}: {_where(index, lines)}: id column {id_column!r} holds a {type(key).__name__}, "
                "expected a string or number"
            ) from None
        if seen != index:
            raise ValueError(
                f"{name}: duplicate id {key!r} in column {id_column!r}: {_where(seen, lines)} and "
                f"{_where(index, lines)}"
            )


def screen_prompt_lengths(
    rows: Sequence[dict[str, Any]],
    lengths: Sequence[int],
    max_length: int,
    policy: str,
    *,
    source: str = "<dataset>",
    setting: str = "max_prompt_length",
) -> tuple[list[dict[str, Any]], dict[str, int]]:
    """Apply the long-prompt policy to every row at once, before training starts.

    Args:
        rows: the prompt rows.
        lengths: the token length of each row's prompt (as the sampler will encode it).
        max_length: the longest prompt allowed, in tokens.
        policy: ``"left"`` keeps every row (the sampler keeps the end of a long prompt), ``"skip"`` drops
            the long rows, ``"error"`` raises naming the first long row.
        setting: the config field named in messages.
    Returns:
        ``(rows kept, counts)``: counts ``truncated`` (long rows kept for left truncation) and ``skipped``.
    """
    if len(lengths) != len(rows):
        raise ValueError(f"got {len(lengths)} prompt lengths for {len(rows)} rows")
    if policy not in ("left", "skip", "error"):
        raise ValueError(f"prompt truncation policy must be 'left', 'skip' or 'error', got {policy!r}")
    long_rows = [i for i, n in enumerate(lengths) if n > max_length]
    if long_rows and policy == "error":
        i = long_rows[0]
        raise ValueError(
            f"{source}: row {i} has a prompt of {lengths[i]} tokens, more than {setting}={max_length} "
            f"({len(long_rows)} rows are longer; prompt_truncation 'left' or 'skip' accepts them)"
        )
    if policy != "skip":
        return list(rows), {"truncated": len(long_rows), "skipped": 0}
    drop = set(long_rows)
    kept = [row for i, row in enumerate(rows) if i not in drop]
    if not kept:
        raise ValueError(f"{source}: every one of the {len(rows)} prompts is longer than {setting}={max_length}")
    return kept, {"truncated": 0, "skipped": len(long_rows)}
