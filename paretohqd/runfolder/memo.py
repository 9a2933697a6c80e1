"""The step memo: whether a recorded step is finished, finished but unrecorded, never ran, or must
be redone because a file it wrote is missing or changed (those files are deleted first, so that the
step cannot reuse them).
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from paretohqd.runfolder.manifest import inside, mismatch

FINISHED, UNRECORDED = "finished", "unrecorded"


def finished(root: Path, manifest: dict, name: str, done: Path) -> bool:
    """Whether step `name` is finished (recorded or not), as `verdict` would find it, but deleting
    nothing: what `paretohqd plan` shows, and what a unit asks of its inputs."""
    entry = manifest["steps"].get(name)
    if entry is None or not inside(root, done):
        return done.exists()
    return done.exists() and not any(mismatch(root / f, want) for f, want in entry.get("outputs", {}).items())


def verdict(root: Path, manifest: dict, name: str, done: Path, forget: Callable[[str], None]) -> str | None:
    """`FINISHED`, `UNRECORDED`, None (never ran: run it) or why step `name` must be redone; in the
    last case its bad files and `done` are deleted and its record dropped (`forget(name)`)."""
    entry = manifest["steps"].get(name)
    if not inside(root, done):  # a shared cache's marker (offline reward heads): its own checks
        return FINISHED if done.exists() else None
    rel = str(done.relative_to(root))
    if entry is None:
        # every step writes its done-marker last, after its other files were fsynced and renamed
        # into place: a marker without a record means the run stopped between the two
        return UNRECORDED if done.exists() else None
    bad = [(f, why) for f, want in entry.get("outputs", {}).items() if (why := mismatch(root / f, want))]
    if done.exists() and not bad:
        return FINISHED
    if not done.exists() and not any(f == rel for f, _ in bad):
        bad.insert(0, (rel, "is missing"))
    for f, _ in bad:
        (root / f).unlink(missing_ok=True)
    done.unlink(missing_ok=True)
    forget(name)
    more = f" (and {len(bad) - 1} more file(s))" if len(bad) > 1 else ""
    return f"{bad[0][0]} {bad[0][1]}{more}; doing it again"
