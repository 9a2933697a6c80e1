"""Atomic writes and table reading. Every output goes to a temp file, then is renamed,
so a kill never leaves a half-written file behind."""

from __future__ import annotations

import json
import os
import shutil
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import pandas as pd


class InputError(ValueError):
    """Bad user input; the message names the file, the row and the field."""


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temp path beside `path`; rename it onto `path` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # A unique name created exclusively, like mkstemp, but with mode 0666 so the umask applies as
    # for a plain open() (mkstemp's files are private, 0600)
    tmp = path.parent / f".{path.name}.{uuid.uuid4().hex}.tmp"
    os.close(os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666))
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


@contextmanager
def atomic_dir(path: str | Path) -> Iterator[Path]:
    """Yield a fresh temp folder beside `path` to fill; when the block succeeds it replaces `path`
    whole. A kill leaves the old folder (or none), never a half-written one."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)  # left by a killed run
    tmp.mkdir(parents=True)
    yield tmp
    shutil.rmtree(path, ignore_errors=True)
    tmp.rename(path)


def write_parquet(df: pd.DataFrame, path: str | Path) -> Path:
    with atomic_path(path) as tmp:
        df.to_parquet(tmp, index=False)
    return Path(path)


def write_json(obj: Any, path: str | Path) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, default=str) + "\n")
    return Path(path)


def write_text(text: str, path: str | Path) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_text(text)
    return Path(path)


def read_table(path: str | Path) -> pd.DataFrame:
    """Read a Parquet, CSV or JSONL table, with errors that name the file."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: no such file")
    suffixes = "".join(path.suffixes[-2:]).lower()
    try:
        if path.suffix.lower() == ".parquet":
            return pd.read_parquet(path)
        if path.suffix.lower() == ".csv":
            return pd.read_csv(path)
        if suffixes.endswith((".jsonl", ".jsonl.gz", ".json")):
            return pd.read_json(path, lines=suffixes != ".json")
    except (ValueError, OSError) as e:
        raise InputError(f"{path}: cannot read as a table: {e}") from None
    raise InputError(f"{path}: unknown table format; use .parquet, .csv or .jsonl")


def write_table(df: pd.DataFrame, path: str | Path) -> Path:
    """Write a table as Parquet, JSONL or CSV, by the file's suffix.

    Raises:
        InputError: another suffix.
    """
    suffix = Path(path).suffix.lower()
    if suffix == ".parquet":
        return write_parquet(df, path)
    if suffix not in (".jsonl", ".csv"):
        raise InputError(f"{path}: unknown table format; use .parquet, .jsonl or .csv")
    with atomic_path(path) as tmp:
        if suffix == ".jsonl":
            df.to_json(tmp, orient="records", lines=True, force_ascii=False)
        else:
            df.to_csv(tmp, index=False)
    return Path(path)
