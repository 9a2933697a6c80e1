"""The generic formats: `table` (one sample a row) and `pairs` (prompt, chosen, rejected).

Both read rows from `paretohqd.data.rows` and yield, per row, the list of its samples. A source's
`columns` maps our names to the file's columns (`{prompt: question, response: answer}`); every
column the reader does not consume is kept as a label, so `rewards.models` can name it
(`helpfulness: column:helpfulness`). A file column named like one `prepare` writes (`id`,
`source`) is kept as `file_id` / `file_source`.
"""

from __future__ import annotations

from typing import Iterable, Iterator

from paretohqd.data.rows import Sample, label_value, prompt_of, text

RESERVED = ("id", "prompt", "messages", "response", "source")
"""Columns of the prepared table; a label may not take these names."""


def rename(row: dict, columns: dict[str, str]) -> dict:
    """The row under our names: each `columns` entry (ours -> the file's) renamed, the rest as is.

    Examples:
        >>> rename({"question": "Hi?", "answer": "Yes.", "score": 3}, {"prompt": "question", "response": "answer"})
        {'score': 3, 'prompt': 'Hi?', 'response': 'Yes.'}
    """
    consumed = set(columns.values())
    out = {k: v for k, v in row.items() if k not in consumed}
    out.update({ours: row.get(theirs) for ours, theirs in columns.items()})
    return out


def labels_of(row: dict, used: Iterable[str]) -> dict:
    """Every field of `row` not in `used`, as labels (reserved names get a `file_` prefix).

    Examples:
        >>> labels_of({"prompt": "Hi?", "id": 7, "score": 3.5}, ["prompt"])
        {'file_id': 7, 'score': 3.5}
    """
    used = set(used) | {"prompt", "messages"}  # the prompt's other form is not a label either
    return {(f"file_{k}" if k in RESERVED else str(k)): label_value(v) for k, v in row.items() if k not in used}


def _hint(field: str, columns: dict[str, str]) -> str:
    if field in columns:
        return f" (the file's column {columns[field]!r}, mapped by columns)"
    return f"; name the file's column with columns: {{{field}: COLUMN}}"


def read_table(rows: Iterable[tuple[str, dict]], name: str, columns: dict[str, str]) -> Iterator[list[Sample]]:
    """`table`: each row one sample, `prompt` (text) or `messages`, and `response`; the rest labels.

    Raises:
        InputError: a row without a prompt or a text response, named `file:line` and field.
    """
    for where, raw in rows:
        row = rename(raw, columns)
        prompt, messages = prompt_of(row, where)
        response = text(row, "response", where, hint=_hint("response", columns)).strip()
        yield [Sample(prompt, response, name, messages, labels_of(row, ["response"]))]


def read_pairs(rows: Iterable[tuple[str, dict]], name: str, columns: dict[str, str]) -> Iterator[list[Sample]]:
    """`pairs`: each row a prompt with a `chosen` and a `rejected` answer; both become samples.

    Labels added to each sample: `pair_id` (the row), `response_id` (0 chosen, 1 rejected),
    `chosen` (1.0 for the chosen answer, 0.0 for the other: a per-sample score) and `chosen_id`
    (0: the preferred response_id, what `reward train --from-pairs chosen_id` reads); the row's
    other columns are copied to both.

    Raises:
        InputError: a row without a prompt, or a chosen / rejected answer that is not text.
    """
    for where, raw in rows:
        row = rename(raw, columns)
        prompt, messages = prompt_of(row, where)
        answers = [text(row, key, where, hint=_hint(key, columns)).strip() for key in ("chosen", "rejected")]
        shared = labels_of(row, ["chosen", "rejected"])
        yield [Sample(prompt, answer, name, messages,
                      {**shared, "pair_id": where, "response_id": i, "chosen": float(i == 0), "chosen_id": 0})
               for i, answer in enumerate(answers)]
