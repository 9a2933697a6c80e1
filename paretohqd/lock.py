"""One writer at a time: an OS lock (`flock`) on a run folder or a shared cache.

The lock lives in a small file beside the folder (`runs/.demo.lock` for `runs/demo`), which also
says who holds it (pid, host, since when, the command, reading or writing). The operating system
drops the lock when its process ends, however it ends, so a killed run never blocks the next one;
a second writer is refused at once (`BusyError`, one line naming the holder) or, for caches, waits
its turn. Readers of a finished run (`serve`, `generate`, `export`, `paretohqd.load`) share the
lock (`shared=True`): any number read together, and no writer changes the folder while they do
(nor does a reader start while a writer holds it).

Under `torchrun` / `accelerate launch` the processes of one job share its run folder: only the main
one (RANK 0) takes that lock, for all of them. A cache's lock (one that waits) is taken by each
process, since processes of one job would otherwise fill the same cache at once.
"""

from __future__ import annotations

import datetime as dt
import errno
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

_held: dict[str, list] = {}  # lock file -> [fd, depth, shared]: one process may enter its own lock again
# never follow a link planted where the lock file belongs (it would be signed, i.e. truncated and
# written, on the holder's behalf); the close-on-exec fd is not inherited by a child process
_OPEN_FLAGS = os.O_NOFOLLOW | os.O_CLOEXEC


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


def _signature(path: str | Path) -> dict:
    try:
        fd = os.open(path, os.O_RDONLY | _OPEN_FLAGS)
    except OSError:
        return {}
    try:
        info = json.loads(os.read(fd, 4096).decode() or "{}")
    except ValueError:  # UnicodeDecodeError is a ValueError
        return {}
    finally:
        os.close(fd)
    return info if isinstance(info, dict) else {}


def holder(path: str | Path) -> str:
    """Who holds (or last held) the lock file `path`, in words."""
    info = _signature(path)
    if not info.get("pid"):
        return "another process (it has not written its name yet)"
    host = "" if info.get("host") == socket.gethostname() else f" on {info.get('host')}"
    return f"pid {info['pid']}{host}, running since {info.get('since', '?')} ({info.get('command', '?')})"


@contextmanager
def hold(folder: str | Path, *, wait: bool = False, say: Callable[[str], None] | None = None,
         shared: bool = False) -> Iterator[None]:
    """Hold the lock of `folder` for the block (re-entrant within one process).

    Args:
        folder: the run folder or cache folder this process writes (or, `shared`, reads).
        wait: wait for the holder to finish (caches, where the second writer's work would be the
            first's) instead of refusing at once (run folders).
        say: how to tell the user that it waits (one line, once).
        shared: a reader's lock: held by any number of readers at once, never with a writer's. A
            reader that cannot make the lock file (a read-only place, where no writer can either)
            reads without it.

    Raises:
        BusyError: another process holds it (a writer; for a writer, also readers) and `wait` is False.
        InputError: a symbolic link where the lock file belongs.
    """
    if fcntl is None or (not wait and not main_process()):  # a job's folders: its main process locks for all
        yield
        return
    path = lock_file(folder)
    key = str(path.parent.resolve() / path.name)
    if key in _held:
        if _held[key][2] and not shared:
            raise RuntimeError(f"{folder}: this process reads it and would now write it; take the writer's lock first")
        _held[key][1] += 1
        try:
            yield
        finally:
            _held[key][1] -= 1
        return
    fd = _open(path, folder, shared)
    if fd is None:
        yield
        return
    try:
        _acquire(fd, path, folder, wait, say, shared)
        _sign(fd, path, shared)
        _held[key] = [fd, 1, shared]
        try:
            yield
        finally:
            del _held[key]
    finally:
        os.close(fd)  # closing drops the lock


def _open(path: Path, folder: str | Path, shared: bool) -> int | None:
    """The lock file's fd (not truncated: another process may hold the lock and have signed it);
    None for a reader where the file cannot be made."""
    if not shared:
        path.parent.mkdir(parents=True, exist_ok=True)
    try:
        try:
            return os.open(path, os.O_RDWR | os.O_CREAT | _OPEN_FLAGS, 0o666)
        except OSError as e:
            if not shared or e.errno not in (errno.EACCES, errno.EPERM, errno.EROFS):
                raise
        try:
            return os.open(path, os.O_RDONLY | _OPEN_FLAGS)
        except FileNotFoundError:
            return None
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise InputError(f"{path}: a symbolic link where the lock file of {folder} belongs; delete it "
                             f"(the lock file is made afresh)") from None
        raise


def _acquire(fd: int, path: Path, folder: str | Path, wait: bool, say: Callable[[str], None] | None,
             shared: bool) -> None:
    mode = fcntl.LOCK_SH if shared else fcntl.LOCK_EX
    try:
        fcntl.flock(fd, mode | fcntl.LOCK_NB)
        return
    except BlockingIOError:
        pass
    time.sleep(0.05)  # the holder writes its name right after it locks: give it that moment
    who = holder(path)
    if not wait:
        if shared:
            raise BusyError(f"{folder} is being written by {who}; wait for it to finish (or stop it: a stopped run "
                            f"resumes where it was), then read it (or run a unit of it)")
        if _signature(path).get("mode") == "read":
            raise BusyError(f"{folder} is being read by {who}; a run folder is not written while it is read: "
                            f"stop the reader (e.g. the server, or a unit of the run: `run --unit`) first")
        raise BusyError(f"{folder} is in use by {who}; one process writes a folder at a time: wait for it to "
                        f"finish or stop it (a stopped run resumes where it was)")
    if say is not None:
        say(f"waiting for {who} to finish with {folder}")
    fcntl.flock(fd, mode)


def _live_reader(path: Path) -> bool:
    """Whether the lock file names a reader that still runs on this machine (which other readers
    leave named: the one a writer is told of must be alive)."""
    info = _signature(path)
    if info.get("mode") != "read" or info.get("host") != socket.gethostname():
        return False
    try:
        os.kill(int(info["pid"]), 0)
    except (ProcessLookupError, KeyError, TypeError, ValueError):
        return False
    except PermissionError:  # alive, another user's
        pass
    return True


def _sign(fd: int, path: Path, shared: bool) -> None:
    if shared and _live_reader(path):
        return
    since = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")
    argv = ["paretohqd" if sys.argv[0].endswith(("paretohqd", "__main__.py")) else sys.argv[0], *sys.argv[1:]]
    command = " ".join(" ".join(argv).split())  # one line, whatever the arguments hold
    command = command if len(command) <= 160 else command[:157] + "..."
    text = json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "since": since, "command": command,
                       "mode": "read" if shared else "write"})
    try:  # (after the lock is held: never over the name of a holder)
        os.ftruncate(fd, 0)
        os.pwrite(fd, text.encode() + b"\n", 0)
    except OSError as e:
        if not (shared and e.errno in (errno.EBADF, errno.EINVAL)):  # a reader's read-only fd: unsigned
            raise
