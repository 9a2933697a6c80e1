"""Durable, crash-consistent writes and table reading.

Every output goes to a temp file (or folder) beside its path, is fsynced, then renamed into place,
and the folder holding it is fsynced too: a kill or a machine crash leaves the old file or the
new one, never a half-written or empty one. A full disk ends in `DiskFullError`, naming the file.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import pandas as pd

# a file system with less than this left after a failed write is full, whatever the error says
# (torch.save reports only "file write failed")
_NEARLY_FULL = 1 << 20
_DISK_FULL_TEXT = ("no space left on device", "storagefull", "disk quota exceeded")


class InputError(ValueError):
    """Bad user input; the message names the file, the row and the field."""


class DiskFullError(InputError):
    """The disk filled while writing an output; the message names the file and the space."""


def fsync_path(path: str | Path) -> None:
    """Flush a file's (or a folder's entries') data to the disk: after it, a machine crash cannot
    lose it. Folders are fsynced so that a rename inside them survives too (POSIX)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except (IsADirectoryError, PermissionError):  # folders cannot be opened on some systems: best effort
        return
    try:
        os.fsync(fd)
    except OSError as e:  # some file systems (and Windows folders) refuse fsync on a folder
        if e.errno not in (errno.EINVAL, errno.EBADF, errno.EACCES):
            raise
    finally:
        os.close(fd)


def _make_dirs(folder: Path) -> None:
    """mkdir -p that fsyncs the parent of every folder it creates (a new entry is data too)."""
    missing = []
    while not folder.exists():
        missing.append(folder)
        folder = folder.parent
    for f in reversed(missing):
        f.mkdir(exist_ok=True)
        fsync_path(f.parent)


def _fsync_tree(root: Path) -> None:
    for folder, _, files in os.walk(root):
        for name in files:
            fsync_path(os.path.join(folder, name))
        fsync_path(folder)


def _bytes_in(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) if path.is_dir() else 0


def disk_full(error: BaseException, where: Path) -> bool:
    """Whether `error` means the file system of `where` is full (ENOSPC / EDQUOT, by errno, by
    message, or by the space left), looking through chained exceptions."""
    e: BaseException | None = error
    while e is not None:
        if getattr(e, "errno", None) in (errno.ENOSPC, errno.EDQUOT):
            return True
        if any(t in str(e).lower() for t in _DISK_FULL_TEXT):
            return True
        e = e.__cause__ or e.__context__
    if isinstance(error, (OSError, RuntimeError)):
        try:
            return shutil.disk_usage(_existing(where)).free < _NEARLY_FULL
        except OSError:
            return False
    return False


def _existing(path: Path) -> Path:
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def _size(n: int) -> str:
    """Bytes in words.

    Examples:
        >>> _size(512), _size(25_300), _size(3_400_000_000)
        ('512 bytes', '25.3 kB', '3.4 GB')
    """
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} bytes"


def disk_full_error(path: Path, written: int | None = None) -> DiskFullError:
    """The one line for a full disk while writing `path` (`written`: bytes it got before)."""
    try:
        free = f"{_size(shutil.disk_usage(_existing(path)).free)} free there now"
    except OSError:
        free = "free space unknown"
    need = f"it needed more than the {_size(written)} written before the disk filled; " if written else ""
    return DiskFullError(f"no space left on the device writing {path} ({need}{free}); free some space and "
                         "rerun: finished steps are kept, and this one is redone")


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temp path beside `path`; when the block succeeds, fsync it, rename it onto `path`
    and fsync the folder. On failure the temp file is removed and `path` is left as it was.

    Raises:
        DiskFullError: the disk filled while the block wrote (or while flushing).
    """
    path = Path(path)
    _make_dirs(path.parent)
    # A unique name created exclusively, like mkstemp, but with mode 0666 so the umask applies as
    # for a plain open() (mkstemp's files are private, 0600)
    tmp = path.parent / f".{path.name}.{uuid.uuid4().hex}.tmp"
    os.close(os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666))
    try:
        try:
            yield tmp
            fsync_path(tmp)  # the data first: a rename that outlives a crash must point at it
        except Exception as e:
            if disk_full(e, path):
                raise disk_full_error(path, _bytes_in(tmp)) from None
            raise
        os.replace(tmp, path)
        fsync_path(path.parent)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _aside(path: Path) -> Path:
    return path.with_name(f".{path.name}.old")


def _filling(path: Path) -> Path:
    return path.with_name(f".{path.name}.tmp")


def recover_dir(path: str | Path) -> bool:
    """Finish or undo a folder swap that `atomic_dir` left when it was killed; returns whether
    there was one. The new folder is complete once the old one is set aside (it was fsynced
    first), so a kill between the two renames is finished forward; a kill while the old one was
    being deleted leaves only that deletion to do."""
    path = Path(path)
    old, new = _aside(path), _filling(path)
    if not old.exists():
        return False
    if not path.exists():
        (new if new.exists() else old).rename(path)
        fsync_path(path.parent)
    shutil.rmtree(old, ignore_errors=True)
    return True


def interrupted_dirs(root: str | Path) -> list[Path]:
    """The folders under `root` whose replacement (`atomic_dir`) has not finished: a writer is at it,
    or was killed (`recover_dir` finishes it). Reads only."""
    return [p.with_name(p.name[1:-len(".old")]) for p in Path(root).rglob(".*.old") if p.is_dir()]


def recover_dirs(root: str | Path) -> list[Path]:
    """`recover_dir` for every folder under `root` an `atomic_dir` left set aside; returns them."""
    return [p for p in interrupted_dirs(root) if recover_dir(p)]


@contextmanager
def atomic_dir(path: str | Path) -> Iterator[Path]:
    """Yield a fresh temp folder beside `path` to fill; when the block succeeds it replaces `path`
    whole: the folder is fsynced, the old one renamed aside, the new one renamed in, then the old
    one deleted. A kill at any instant leaves the old folder or the new one (`recover_dir` puts a
    set-aside one back); one writer per path (the run folder's lock) is assumed.

    Raises:
        DiskFullError: the disk filled while the block wrote.
    """
    path = Path(path)
    recover_dir(path)
    tmp, old = _filling(path), _aside(path)
    shutil.rmtree(tmp, ignore_errors=True)  # left by a killed run
    _make_dirs(tmp.parent)
    tmp.mkdir()
    try:
        yield tmp
        _fsync_tree(tmp)
    except Exception as e:
        full = disk_full(e, path)
        written = _bytes_in(tmp) if full else 0
        shutil.rmtree(tmp, ignore_errors=True)
        if full:
            raise disk_full_error(path, written) from None
        raise
    if path.exists():
        path.rename(old)
    tmp.rename(path)
    fsync_path(path.parent)
    shutil.rmtree(old, ignore_errors=True)


def write_parquet(df: pd.DataFrame, path: str | Path) -> Path:
    """Write `df` atomically, each page with a CRC so that `read_table` notices garbled bytes."""
    with atomic_path(path) as tmp:
        df.to_parquet(tmp, index=False, write_page_checksum=True)
    return Path(path)


def write_json(obj: Any, path: str | Path) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, default=str) + "\n")
    return Path(path)


def write_text(text: str, path: str | Path) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_text(text)
    return Path(path)


def unreadable(error: BaseException) -> bool:
    """Whether `error` is what loading a damaged, missing or foreign file raises (OSError, ValueError,
    EOFError, torch's RuntimeError, safetensors' own error type), as opposed to a bug."""
    return isinstance(error, (OSError, ValueError, EOFError, RuntimeError)) or type(error).__name__ == "SafetensorError"


def file_digest(path: str | Path) -> dict[str, int | str]:
    """Size and xxh3-64 checksum of a file (fast: disk-bound), what the manifest records of every
    output so that a changed or truncated file is noticed before it is used."""
    import xxhash

    h = xxhash.xxh3_64()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            h.update(block)
    return {"bytes": Path(path).stat().st_size, "xxh3": h.hexdigest()}


def read_table(path: str | Path) -> pd.DataFrame:
    """Read a Parquet, CSV or JSONL table, with errors that name the file."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: no such file")
    suffixes = "".join(path.suffixes[-2:]).lower()
    try:
        if path.suffix.lower() == ".parquet":
            return pd.read_parquet(path, page_checksum_verification=True)
        if path.suffix.lower() == ".csv":
            return pd.read_csv(path)
        if suffixes.endswith((".jsonl", ".jsonl.gz", ".json")):
            return pd.read_json(path, lines=suffixes != ".json")
    except (ValueError, OSError, EOFError) as e:
        first = str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__
        raise InputError(f"{path}: cannot read as a {path.suffix.lstrip('.')} table ({first}); "
                         "is it the format its extension says?") from None
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
