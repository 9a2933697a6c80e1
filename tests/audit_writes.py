"""`python tests/audit_writes.py ARGS...` is `paretohqd ARGS...` with a record of who writes what:
every rename (how each output lands, `io.atomic_path` / `io.atomic_dir`) and every open for
writing, as `event<TAB>path` lines in `$AUDIT_LOG.<RANK>` (Python's audit hooks: nothing in
paretohqd is patched). `test_processes.py` launches it under torchrun.

In a test, `with changes_under(folder) as events:` records the same in this process, and every
other change (remove, mkdir, rmtree, chmod, utime, truncate, link): the readers' tests assert that
it stays empty, since tests run as root, whom a `chmod a-w` folder does not stop."""

import os
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC
# audit events that change a path (their first argument; a rename's second too)
CHANGES = {"os.rename", "os.remove", "os.rmdir", "os.mkdir", "shutil.rmtree", "os.truncate", "os.chmod",
           "os.chown", "os.utime", "os.symlink", "os.link"}
_watches: list[tuple[str, list[str]]] = []  # (folder, its events) while `changes_under` runs
_hooked = []


def _change(event: str, args: tuple) -> list:
    """The paths an audit event changes (none for reads)."""
    if event == "open" and isinstance(args[0], (str, bytes, os.PathLike)):
        mode, flags = args[1], args[2]
        return [args[0]] if (mode and any(c in mode for c in "wax+")) or (not mode and flags & WRITE_FLAGS) else []
    if event in CHANGES and args and isinstance(args[0], (str, bytes, os.PathLike)):
        return [a for a in args[:2 if event == "os.rename" else 1] if isinstance(a, (str, bytes, os.PathLike))]
    return []


def _watch(event: str, args: tuple) -> None:
    if not _watches:
        return
    for path in _change(event, args):
        full = os.path.abspath(os.fsdecode(path))
        for folder, events in _watches:
            if full == folder or full.startswith(folder + os.sep):
                events.append(f"{event}\t{full}")


@contextmanager
def changes_under(folder: str | Path) -> Iterator[list[str]]:
    """Record (as `event<TAB>path`) every change this process makes under `folder` in the block."""
    if not _hooked:  # an audit hook cannot be removed: one for the session, idle between blocks
        sys.addaudithook(_watch)
        _hooked.append(True)
    entry = (os.path.abspath(folder), [])
    _watches.append(entry)
    try:
        yield entry[1]
    finally:
        _watches.remove(entry)


def tree(folder: str | Path) -> dict[str, tuple]:
    """Every entry under `folder` (itself included): relative path -> (mode, size, mtime_ns, inode,
    bytes of a file, target of a link)."""
    out = {}
    for here, dirs, files in os.walk(folder):
        for name in [".", *dirs, *files]:
            path = os.path.join(here, name)
            st = os.lstat(path)
            content = Path(path).read_bytes() if os.path.isfile(path) and not os.path.islink(path) else None
            link = os.readlink(path) if os.path.islink(path) else None
            out[os.path.relpath(path, folder)] = (st.st_mode, st.st_size, st.st_mtime_ns, st.st_ino, content, link)
    return out


def main() -> None:
    log = os.open(f"{os.environ['AUDIT_LOG']}.{os.environ.get('RANK', '0')}",
                  os.O_CREAT | os.O_WRONLY | os.O_APPEND, 0o644)

    def hook(event: str, args: tuple) -> None:
        if event == "os.rename":  # os.rename, os.replace, Path.rename
            os.write(log, f"rename\t{os.fsdecode(args[1])}\n".encode())
        elif event == "open" and _change(event, args):
            os.write(log, f"open\t{os.fsdecode(args[0])}\n".encode())

    sys.addaudithook(hook)
    from paretohqd.cli import app

    app(prog_name="paretohqd")


if __name__ == "__main__":
    main()
