"""One writer at a time: an OS lock (`flock`) on a run folder or a shared cache.

The lock lives in a small file beside the folder (`runs/.demo.lock` for `runs/demo`), which also
says who holds it (pid, host, since when, the command). The operating system drops the lock when
its process ends, however it ends, so a killed run never blocks the next one; a second writer is
refused at once (`BusyError`, one line naming the holder) or, for caches, waits its turn.

Under `torchrun` / `accelerate launch` the processes of one job share its run folder: only the main
one (RANK 0) takes that lock, for all of them. A cache's lock (one that waits) is taken by each
process, since processes of one job would otherwise fill the same cache at once.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import socket
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

from paretohqd.io import InputError

try:
    import fcntl
except ImportError:  # Windows: no flock; the lock is then advisory text only
    fcntl = None

_held: dict[str, list] = {}  # lock file -> [fd, depth]: one process may enter its own lock again


class BusyError(InputError):
    """Another process holds the lock of a folder this one would write."""


def lock_file(folder: str | Path) -> Path:
    """Where the lock of `folder` lives: a hidden file beside it, so the folder itself holds
    outputs only (and a copy of it carries no stale lock).

    Examples:
        >>> lock_file("runs/demo").as_posix()
        'runs/.demo.lock'
    """
    folder = Path(folder)
    return folder.with_name(f".{folder.name}.lock")


def main_process() -> bool:
    """Whether this process is its job's main one (RANK 0, or no launcher)."""
    return os.environ.get("RANK", "0") == "0"


def holder(path: str | Path) -> str:
    """Who holds (or last held) the lock file `path`, in words."""
    try:
        info = json.loads(Path(path).read_text() or "{}")
    except (OSError, ValueError):
        info = {}
    if not info.get("pid"):
        return "another process (it has not written its name yet)"
    host = "" if info.get("host") == socket.gethostname() else f" on {info.get('host')}"
    return f"pid {info['pid']}{host}, running since {info.get('since', '?')} ({info.get('command', '?')})"


@contextmanager
def hold(folder: str | Path, *, wait: bool = False, say: Callable[[str], None] | None = None) -> Iterator[None]:
    """Hold the lock of `folder` for the block (re-entrant within one process).

    Args:
        folder: the run folder or cache folder this process writes.
        wait: wait for the holder to finish (caches, where the second writer's work would be the
            first's) instead of refusing at once (run folders).
        say: how to tell the user that it waits (one line, once).

    Raises:
        BusyError: another process holds it and `wait` is False.
    """
    if fcntl is None or (not wait and not main_process()):  # a job's folders: its main process locks for all
        yield
        return
    path = lock_file(folder)
    key = str(path.resolve())
    if key in _held:
        _held[key][1] += 1
        try:
            yield
        finally:
            _held[key][1] -= 1
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        _acquire(fd, path, folder, wait, say)
        _sign(fd)
        _held[key] = [fd, 1]
        try:
            yield
        finally:
            del _held[key]
    finally:
        os.close(fd)  # closing drops the lock


def _acquire(fd: int, path: Path, folder: str | Path, wait: bool, say: Callable[[str], None] | None) -> None:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return
    except BlockingIOError:
        pass
    time.sleep(0.05)  # the holder writes its name right after it locks: give it that moment
    who = holder(path)
    if not wait:
        raise BusyError(f"{folder} is in use by {who}; one process writes a folder at a time: wait for it to "
                        f"finish or stop it (a stopped run resumes where it was)")
    if say is not None:
        say(f"waiting for {who} to finish with {folder}")
    fcntl.flock(fd, fcntl.LOCK_EX)


def _sign(fd: int) -> None:
    since = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")
    argv = ["paretohqd" if sys.argv[0].endswith(("paretohqd", "__main__.py")) else sys.argv[0], *sys.argv[1:]]
    command = " ".join(" ".join(argv).split())  # one line, whatever the arguments hold
    command = command if len(command) <= 160 else command[:157] + "..."
    text = json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "since": since, "command": command})
    os.ftruncate(fd, 0)
    os.pwrite(fd, text.encode() + b"\n", 0)
