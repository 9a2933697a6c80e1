"""Rows of any table-shaped source (.parquet, .jsonl[.gz], .csv, folders of them, hub datasets) and
the `Sample` every reader yields, with the field checks that name `file:line` and the field.

A row is a plain dict. `where` names it for error messages: `file.jsonl:LINE` (the physical line),
`file.parquet:row N` / `file.csv:row N` (1-based data row), or `owner/name[split]:INDEX` on the hub.
"""

from __future__ import annotations

import gzip
import json
import math
import numbers
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from paretohqd.data.transcript import to_messages
from paretohqd.io import InputError

TABLE_SUFFIXES = (".parquet", ".jsonl", ".jsonl.gz", ".json", ".csv")


@dataclass(frozen=True)
class Sample:
    """One (prompt, response) of a source, with its labels."""

    prompt: str
    """HH dialogue text (`\\n\\nHuman: ...`, no trailing `\\n\\nAssistant:`): what HH reward models read."""
    response: str
    source: str
    """Source name for the `source` column (an HH subset, a file stem, a hub id)."""
    messages: list[dict] | None = None
    """The prompt as chat messages, when the source gave them; else they are derived from `prompt`."""
    labels: dict[str, Any] = field(default_factory=dict)
    """Label columns kept with the sample (numbers, flags or text; None where missing)."""


# Reading rows ------------------------------------------------------------------------------------


def is_hub_id(source: str) -> bool:
    """`owner/name` that is not a local path (no such file, no path-like start).

    Examples:
        >>> is_hub_id("nvidia/HelpSteer2"), is_hub_id("./data/x"), is_hub_id("data.parquet")
        (True, False, False)
    """
    parts = source.split("/")
    return (len(parts) == 2 and all(parts) and not source.startswith((".", "~"))
            and not Path(source).expanduser().exists())


def table_files(path: str | Path, split: str | None = None) -> list[Path]:
    """The table files of a source: the file itself, or a folder's files (recursively, sorted),
    only those of `split` (named `SPLIT*` or under a `SPLIT/` folder) when it is given.

    Raises:
        InputError: no such path, or a folder without (matching) table files.
    """
    path = Path(path).expanduser()
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise InputError(f"{path}: no such file or folder (and not a hub id owner/name)")
    files = sorted(p for p in path.rglob("*") if p.is_file() and p.name.lower().endswith(TABLE_SUFFIXES))
    if split is not None:
        files = [p for p in files if p.name.startswith(split) or split in p.relative_to(path).parts[:-1]]
    if not files:
        what = f"{split!r} split " if split is not None else ""
        raise InputError(f"{path}: folder holds no {what}table files ({', '.join(TABLE_SUFFIXES)})")
    return files


def file_rows(path: Path) -> Iterator[tuple[str, dict]]:
    """(where, row) of every row of one table file.

    Raises:
        InputError: unreadable file, malformed JSON line, a row that is not an object, no rows.
    """
    name = path.name.lower()
    n = 0
    try:
        if name.endswith(".parquet"):
            import pyarrow.parquet as pq

            for batch in pq.ParquetFile(path).iter_batches(batch_size=1024):
                for row in batch.to_pylist():
                    n += 1
                    yield f"{path}:row {n}", row
        elif name.endswith(".csv"):
            import pandas as pd

            # empty cells are missing values (None), not NaN floats in text columns
            df = pd.read_csv(path, keep_default_na=True).astype(object)
            for row in df.where(df.notna(), None).to_dict("records"):
                n += 1
                yield f"{path}:row {n}", row
        elif name.endswith((".jsonl", ".jsonl.gz", ".json")):
            opener = gzip.open if name.endswith(".gz") else open
            with opener(path, "rt", encoding="utf-8") as f:
                for lineno, line in enumerate(f, 1):
                    if not line.strip():
                        continue
                    where = f"{path}:{lineno}"
                    try:
                        row = json.loads(line)
                    except json.JSONDecodeError as e:
                        raise InputError(f"{where}: malformed JSON ({e.msg} at column {e.colno}); write one "
                                         "JSON object a line") from None
                    if not isinstance(row, dict):
                        raise InputError(f"{where}: expected a JSON object, got {type(row).__name__}")
                    n += 1
                    yield where, row
        else:
            raise InputError(f"{path}: unknown table format; use .parquet, .jsonl(.gz) or .csv")
    except (OSError, EOFError, UnicodeDecodeError, ValueError) as e:
        if isinstance(e, InputError):
            raise
        raise InputError(f"{path}: cannot read: {str(e).splitlines()[0]}") from None
    if n == 0:
        raise InputError(f"{path}: empty file (no rows)")


def hub_rows(repo: str, split: str) -> Iterator[tuple[str, dict]]:
    """(where, row) of a hub dataset's split (`datasets.load_dataset`; needs internet or its cache)."""
    from datasets import load_dataset  # only when a source is a hub id

    for i, row in enumerate(load_dataset(repo, split=split)):
        yield f"{repo}[{split}]:{i}", dict(row)


def source_name(path: str | Path) -> str:
    """The `source` column's value for a file: its name without table suffixes (a split-named file
    takes its folder's name, as hub layouts do).

    Examples:
        >>> source_name("data/Alpaca-7B/train.jsonl"), source_name("mine.parquet")
        ('Alpaca-7B', 'mine')
    """
    path = Path(path)
    name = path.name
    for ext in (".gz", ".jsonl", ".json", ".parquet", ".csv"):
        name = name.removesuffix(ext)
    return path.parent.name if re.fullmatch(r"(train|test|validation)([-_.].*)?", name) and path.parent.name else name


# Fields ------------------------------------------------------------------------------------------


def missing(value: Any) -> bool:
    """None or a float NaN (what Parquet, CSV and pandas use for an empty cell)."""
    return value is None or (isinstance(value, float) and math.isnan(value))


def text(row: dict, key: str, where: str, *, hint: str = "") -> str:
    """`row[key]` as text.

    Raises:
        InputError: missing, or not text; `hint` says how to fix it.
    """
    if key not in row or missing(row[key]):
        raise InputError(f"{where}: missing field '{key}'{hint}")
    if not isinstance(row[key], str):
        raise InputError(f"{where}: field '{key}' must be text, got {type(row[key]).__name__}{hint}")
    return row[key]


def number(row: dict, key: str, where: str, *, lo: float | None = None, hi: float | None = None,
           whole: bool = False) -> float:
    """`row[key]` as a number in [lo, hi] (an integer if `whole`).

    Raises:
        InputError: missing, not a number, out of range.
    """
    value = row.get(key)
    if missing(value):
        raise InputError(f"{where}: missing field '{key}'")
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or (whole and float(value) != int(value)):
        kind = "an integer" if whole else "a number"
        raise InputError(f"{where}: field '{key}' must be {kind}, got {value!r}")
    if (lo is not None and value < lo) or (hi is not None and value > hi):
        raise InputError(f"{where}: field '{key}' must lie in [{lo}, {hi}], got {value!r}")
    return float(value)


def flag(row: dict, key: str, where: str) -> bool:
    """`row[key]` as a boolean (true/false, or 0/1).

    Raises:
        InputError: missing, or neither a boolean nor 0/1.
    """
    value = row.get(key)
    if isinstance(value, bool):
        return value
    if isinstance(value, numbers.Integral) and value in (0, 1):
        return bool(value)
    if missing(value):
        raise InputError(f"{where}: missing field '{key}'")
    raise InputError(f"{where}: field '{key}' must be true/false, got {value!r}")


def label_value(value: Any) -> Any:
    """A cell as a label: numbers, flags and text as they are, missing as None, anything nested
    (lists, dicts) as its JSON text so every label column is one Parquet type.

    Examples:
        >>> label_value(3), label_value(float("nan")), label_value({"a": 1})
        (3, None, '{"a": 1}')
    """
    if missing(value):
        return None
    if isinstance(value, (str, bool, numbers.Real)):
        return value.item() if hasattr(value, "item") else value  # numpy scalars -> Python
    return json.dumps(value, default=str, ensure_ascii=False)


# Prompts -----------------------------------------------------------------------------------------


def merge_system(messages: list[dict]) -> list[dict]:
    """Fold system messages into the next user turn: the HH transcript has no system role, and both
    prompt forms (HH text, chat messages) must say the same thing.

    Examples:
        >>> merge_system([{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}])
        [{'role': 'user', 'content': 'Be brief.\\n\\nHi'}]
    """
    out: list[dict] = []
    pending: list[str] = []  # system texts waiting for the next user turn
    for m in messages:
        if m["role"] == "system":
            pending.append(m["content"])
            continue
        content = m["content"]
        if m["role"] == "user" and pending:
            content, pending = "\n\n".join([*pending, content]), []
        if out and out[-1]["role"] == m["role"]:  # a repeated speaker: one turn, as the HH reader merges
            out[-1] = {"role": m["role"], "content": out[-1]["content"] + "\n\n" + content}
        else:
            out.append({"role": m["role"], "content": content})
    return out


def hh_prompt(messages: list[dict]) -> str:
    """Chat messages (user/assistant) as HH dialogue text, without the trailing `\\n\\nAssistant:`.

    Examples:
        >>> hh_prompt([{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"},
        ...            {"role": "user", "content": "Joke?"}])
        '\\n\\nHuman: Hi\\n\\nAssistant: Hello!\\n\\nHuman: Joke?'
    """
    return "".join(f"\n\n{'Human' if m['role'] == 'user' else 'Assistant'}: {m['content']}" for m in messages)


def prompt_of(row: dict, where: str, *, prompt_key: str = "prompt", messages_key: str = "messages") -> tuple[str, list[dict]]:
    """A row's prompt as (HH text, messages): its `messages` list, else its `prompt` text (an HH
    transcript `\\n\\nHuman: ...` keeps its turns; other text is one user turn).

    Raises:
        InputError: neither field, empty text, or messages that are not [{role, content}, ...]
            ending with a user turn.
    """
    hint = f" (name the file's column with columns: {{{prompt_key}: COLUMN}} or {{{messages_key}: COLUMN}})"
    if not missing(row.get(messages_key)) and not isinstance(row.get(prompt_key), str):
        messages = _messages(row[messages_key], where, messages_key)
    else:
        prompt = text(row, prompt_key, where, hint=hint)
        if not prompt.strip():
            raise InputError(f"{where}: field '{prompt_key}' is empty")
        stripped = prompt.rstrip()
        if stripped.startswith("\n\nHuman:"):
            # an HH transcript; it may end where the answer starts
            messages = [m for m in to_messages(stripped.removesuffix("Assistant:").rstrip()) if m["content"]]
        else:
            messages = [{"role": "user", "content": prompt.strip()}]
    return hh_prompt(messages), messages


def _messages(value: Any, where: str, key: str) -> list[dict]:
    fix = 'write a list of {"role": "user"|"assistant"|"system", "content": TEXT} ending with a user turn'
    if hasattr(value, "tolist"):  # numpy arrays from Parquet
        value = value.tolist()
    if not isinstance(value, (list, tuple)) or not value:
        raise InputError(f"{where}: field '{key}' is not a non-empty list; {fix}")
    for m in value:
        if not isinstance(m, dict) or m.get("role") not in ("user", "assistant", "system") \
                or not isinstance(m.get("content"), str):
            raise InputError(f"{where}: field '{key}' holds {str(m)[:60]!r}, not a message; {fix}")
    messages = merge_system([{"role": m["role"], "content": m["content"].strip()} for m in value])
    if not messages or messages[-1]["role"] != "user":
        raise InputError(f"{where}: field '{key}' does not end with a user turn (the response answers it); {fix}")
    return messages
