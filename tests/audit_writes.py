"""`python tests/audit_writes.py ARGS...` is `paretohqd ARGS...` with a record of who writes what:
every rename (how each output lands, `io.atomic_path` / `io.atomic_dir`) and every open for
writing, as `event<TAB>path` lines in `$AUDIT_LOG.<RANK>` (Python's audit hooks: nothing in
paretohqd is patched). `test_processes.py` launches it under torchrun."""

import os
import sys

WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC


def main() -> None:
    log = os.open(f"{os.environ['AUDIT_LOG']}.{os.environ.get('RANK', '0')}",
                  os.O_CREAT | os.O_WRONLY | os.O_APPEND, 0o644)

    def hook(event: str, args: tuple) -> None:
        if event == "os.rename":  # os.rename, os.replace, Path.rename
            os.write(log, f"rename\t{os.fsdecode(args[1])}\n".encode())
        elif event == "open" and isinstance(args[0], (str, bytes, os.PathLike)):
            mode, flags = args[1], args[2]
            if (mode and any(c in mode for c in "wax+")) or (not mode and flags & WRITE_FLAGS):
                os.write(log, f"open\t{os.fsdecode(args[0])}\n".encode())

    sys.addaudithook(hook)
    from paretohqd.cli import app

    app(prog_name="paretohqd")


if __name__ == "__main__":
    main()
