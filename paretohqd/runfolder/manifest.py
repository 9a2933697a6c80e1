"""A run folder's `manifest.json`: which steps finished, what each cost, and the size and checksum of
every file each wrote; and how the files a step wrote are told apart from the rest of the folder.

A step run alone as a unit (`paretohqd run CONFIG --unit ID`, several at once on shared storage)
records itself in a file of its own, `manifest.d/STEP.json`, so that no two processes write one
file; `read_manifest` reads them together with `manifest.json` (a unit's record wins: it is newer).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
from pathlib import Path

from rich.table import Table

from paretohqd.devices import device_name
from paretohqd.io import InputError, file_digest

# files of the run folder that no step owns: bookkeeping, and the report written after the steps
_NOT_OUTPUTS = {"manifest.json", "config.yaml", "seed.json", "report.json", "report.md", "report.html", "front.png"}
UNIT_RECORDS = "manifest.d"
"""The folder of the units' own records, beside `manifest.json`."""


def unit_record(root: Path, name: str) -> Path:
    """Where step `name` records itself when it runs as a unit: one file per step.

    Examples:
        >>> unit_record(Path("runs/demo"), "stage1/pref-03 w=[0.3, 0.7]").as_posix()
        'runs/demo/manifest.d/stage1_pref-03_w_0.3_0.7.json'
    """
    return root / UNIT_RECORDS / f"{re.sub(r'[^A-Za-z0-9.-]+', '_', name).strip('_')}.json"


def mismatch(path: Path, want: dict) -> str | None:
    """Why `path` no longer is the file recorded as `want` (size and checksum), or None."""
    if not path.is_file():
        return "is missing"
    got = file_digest(path)
    if got["bytes"] != want["bytes"]:
        return f"has changed ({got['bytes']:,} bytes, {want['bytes']:,} when written)"
    return None if got["xxh3"] == want["xxh3"] else "has changed (same size, another checksum)"


def read_manifest(root: Path) -> dict:
    """A run folder's manifest (an empty one for a new folder): `manifest.json` with the units'
    records (`manifest.d/*.json`) read into it.

    Raises:
        InputError: one of them exists but cannot be read.
    """
    manifest = _read_one(root / "manifest.json")
    for path in sorted((root / UNIT_RECORDS).glob("*.json")):
        manifest["steps"].update(_read_one(path)["steps"])
    return manifest


def _read_one(path: Path) -> dict:
    if not path.exists():
        return {"steps": {}}
    try:
        manifest = json.loads(path.read_text())
        if not isinstance(manifest, dict) or not isinstance(manifest.get("steps"), dict):
            raise ValueError("no `steps` mapping")
    except (ValueError, UnicodeDecodeError) as e:
        raise InputError(f"{path} cannot be read ({str(e)[:120]}); it records which steps finished and checksums "
                         "of their files. Restore it, or delete it: steps whose last file is there are then "
                         "recorded afresh from what is on disk, the others redone") from None
    return manifest


def manifest_entry(wall: float, n_devices: int, busy_devices: int) -> dict:
    """A finished step's manifest record.

    `n_devices` are held for the whole step; `busy_devices` of them work (all of them while
    training; those that had a share of the batches or chunks while generating, scoring or
    evaluating; 1 while the main process alone prepares or selects and the others wait). Device
    time is what the paper reports as GPU hours, wall x devices held: waiting devices are paid for too.

    Examples:
        >>> e = manifest_entry(10.0, n_devices=2, busy_devices=1)
        >>> e["device_s"], e["busy_device_s"]
        (20.0, 10.0)
    """
    # on CPU, the device is the machine (its cores)
    return {"wall_s": round(wall, 3), "device": device_name(), "n_devices": n_devices,
            "busy_devices": busy_devices, "device_s": round(wall * n_devices, 3),
            "busy_device_s": round(wall * busy_devices, 3),
            "finished": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")}


# What a step wrote -------------------------------------------------------------------------------


def output_files(root: Path) -> dict[str, tuple[int, int, int]]:
    """Every output file under the run folder (relative path -> size, mtime, inode): not the
    bookkeeping and report files, logs, checkpoints or hidden temp files."""
    out = {}
    for folder, dirs, files in os.walk(root):
        top = folder == str(root)
        dirs[:] = [d for d in dirs if not d.startswith(".") and not d.endswith(".ckpt")
                   and not (top and d in ("logs", UNIT_RECORDS))]
        for name in files:
            if name.startswith(".") or (top and name in _NOT_OUTPUTS):
                continue
            st = os.stat(os.path.join(folder, name))
            out[os.path.relpath(os.path.join(folder, name), root)] = (st.st_size, st.st_mtime_ns, st.st_ino)
    return out


def inside(root: Path, path: Path) -> bool:
    """Whether `path` lies in the run folder (a shared cache's files do not)."""
    return Path(os.path.abspath(path)).is_relative_to(os.path.abspath(root))


def step_outputs(root: Path, manifest: dict, name: str, before: dict, done: Path) -> dict[str, dict]:
    """Step `name`'s outputs with their digests: files it changed since `before` (`output_files`),
    `done`, and files in `done`'s own folder that no other step recorded (written by an attempt
    that was killed, then reused)."""
    after = output_files(root)
    owned = {rel for step, e in manifest["steps"].items() if step != name for rel in e.get("outputs", {})}
    mine = {rel for rel, sig in after.items() if before.get(rel) != sig}
    if inside(root, done):
        mine.add(str(done.relative_to(root)))
        if done.parent != root:
            folder = str(done.parent.relative_to(root))
            mine |= {rel for rel in after if rel not in owned and Path(rel).is_relative_to(folder)}
    return {rel: file_digest(root / rel) for rel in sorted(mine) if (root / rel).is_file()}


def unit_outputs(root: Path, before: dict, done: Path, others: tuple[Path, ...]) -> dict[str, dict]:
    """A unit's outputs with their digests: `done` and the files changed since `before` in its
    folder, but none of `others` (other units' done-markers and model folders): units that run at
    the same time write into one folder (stage 2's pools), and each records only its own."""
    rel = done.relative_to(root)
    theirs = [o.relative_to(root) for o in others if inside(root, o)]
    mine = {f for f, sig in output_files(root).items() if before.get(f) != sig
            and Path(f).is_relative_to(rel.parent) and not any(Path(f).is_relative_to(t) for t in theirs)}
    return {f: file_digest(root / f) for f in sorted(mine | {str(rel)}) if (root / f).is_file()}


def fanned_outputs(root: Path, manifest: dict, before: dict, dones: list[Path]) -> list[dict[str, dict]]:
    """The outputs of steps that ran together: each one's done-marker, and the files in the
    marker's folder where no other step of the block shares it (a model's folder). A file that
    changed elsewhere cannot be told apart: it goes to each of them (none of ours writes such)."""
    after = output_files(root)
    owned = {rel for e in manifest["steps"].values() for rel in e.get("outputs", {})}
    rels = [str(d.relative_to(root)) for d in dones]
    folders = [str(Path(rel).parent) for rel in rels]
    claims = [{rel} | {f for f in after if folder != "." and folders.count(folder) == 1 and f not in owned
                       and Path(f).is_relative_to(folder)} for rel, folder in zip(rels, folders)]
    leftover = {rel for rel, sig in after.items() if before.get(rel) != sig} - set().union(*claims)
    return [{rel: file_digest(root / rel) for rel in sorted(mine | leftover) if (root / rel).is_file()}
            for mine in claims]


def times_table(root: Path, manifest: dict) -> Table:
    """Where the time went: each step's wall and device seconds, and their totals."""
    table = Table(title=f"where the time went ({root})")
    for col in ("step", "wall s", "device s"):
        table.add_column(col, justify="left" if col == "step" else "right")
    steps = manifest["steps"]
    for name, s in steps.items():
        table.add_row(name, f"{s['wall_s']:.1f}", f"{s['device_s']:.1f}")
    table.add_row("total", f"{sum(s['wall_s'] for s in steps.values()):.1f}",
                  f"{sum(s['device_s'] for s in steps.values()):.1f}")
    return table
