"""Atomic writes: all or nothing, and files get the mode a plain open() would give."""

import os
from pathlib import Path

import pytest

from paretohqd.io import atomic_path, write_json


def test_written_files_follow_the_umask_not_mkstemps_0600(tmp_path):
    old = os.umask(0o022)
    try:
        path = write_json({"a": 1}, tmp_path / "x.json")
    finally:
        os.umask(old)
    assert path.stat().st_mode & 0o777 == 0o644


def test_a_failed_write_leaves_neither_file_nor_temp(tmp_path):
    with pytest.raises(RuntimeError), atomic_path(tmp_path / "y.json") as tmp:
        tmp.write_text("half")
        raise RuntimeError("killed mid-write")
    assert list(tmp_path.iterdir()) == []


# Folder swaps: a kill at any instant leaves the old folder or the new one ------------------------

SWAP = r"""
import os, sys
from pathlib import Path
from paretohqd import io

target, die_at = Path(sys.argv[1]), sys.argv[2]
real_rename, real_rmtree = Path.rename, io.shutil.rmtree
renames = []

def rename(self, dst):
    renames.append(dst)
    if die_at == "after-aside" and len(renames) == 2:  # the old one aside, the new one not in yet
        os._exit(9)
    out = real_rename(self, dst)
    if die_at == "after-in" and len(renames) == 2:  # the new one in, the old one not deleted yet
        os._exit(9)
    return out

def rmtree(path, *a, **k):
    if die_at == "deleting-old" and str(path).endswith(".old"):
        (Path(path) / "old.txt").unlink()  # half deleted
        os._exit(9)
    return real_rmtree(path, *a, **k)

Path.rename, io.shutil.rmtree = rename, rmtree
with io.atomic_dir(target) as tmp:
    (tmp / "new.txt").write_text("new")
    if die_at == "filling":
        os._exit(9)
"""


@pytest.mark.parametrize("die_at", ["filling", "after-aside", "after-in", "deleting-old"])
def test_a_kill_during_a_folder_swap_leaves_the_old_or_the_new_folder(tmp_path, die_at):
    import subprocess
    import sys

    from paretohqd.io import recover_dir

    target = tmp_path / "model"
    target.mkdir()
    (target / "old.txt").write_text("old")
    res = subprocess.run([sys.executable, "-c", SWAP, str(target), die_at], capture_output=True, text=True)
    assert res.returncode == 9, res.stderr
    recover_dir(target)  # what the next start does (RunFolder: `recover_dirs`)
    names = sorted(p.name for p in target.iterdir())
    assert names == (["old.txt"] if die_at == "filling" else ["new.txt"])
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".model.old")]


def test_the_old_folder_is_restored_when_only_it_is_left(tmp_path):
    from paretohqd.io import recover_dirs

    (tmp_path / "stage1" / ".pref-00.old").mkdir(parents=True)
    (tmp_path / "stage1" / ".pref-00.old" / "adapter.safetensors").write_text("old")
    assert recover_dirs(tmp_path) == [tmp_path / "stage1" / "pref-00"]
    assert (tmp_path / "stage1" / "pref-00" / "adapter.safetensors").read_text() == "old"


def test_every_write_is_fsynced_before_it_is_renamed_into_place(tmp_path, monkeypatch):
    from paretohqd import io

    events = []
    monkeypatch.setattr(io.os, "fsync", lambda fd: events.append(("fsync", os.readlink(f"/proc/self/fd/{fd}"))))
    real_replace = io.os.replace
    monkeypatch.setattr(io.os, "replace", lambda a, b: (events.append(("rename", str(b))), real_replace(a, b)))
    io.write_json({"a": 1}, tmp_path / "sub" / "x.json")
    kinds = [k for k, _ in events]
    rename = kinds.index("rename")
    assert "fsync" in kinds[:rename]  # the temp file's data, before the rename
    assert events[rename + 1] == ("fsync", str(tmp_path / "sub"))  # then the folder holding the new name
    assert ("fsync", str(tmp_path)) in events[:rename]  # the new folder `sub` is an entry of its parent


# A full disk --------------------------------------------------------------------------------------


def test_a_full_disk_names_the_file_and_leaves_nothing_behind(tmp_path, monkeypatch):
    import errno

    import pandas as pd

    from paretohqd.io import DiskFullError, write_parquet

    def full(self, path, **kw):
        Path(path).write_bytes(b"x" * 1000)  # some of it got written
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(pd.DataFrame, "to_parquet", full)
    with pytest.raises(DiskFullError, match=r"no space left on the device writing .*scores.parquet \(it needed more "
                                            r"than the 1.0 kB written before the disk filled; .* free there now\)"):
        write_parquet(pd.DataFrame({"a": [1]}), tmp_path / "scores.parquet")
    assert list(tmp_path.iterdir()) == []


def test_table_that_is_not_what_its_extension_says_is_one_line(tmp_path):
    from paretohqd.io import InputError, read_table

    (tmp_path / "scores.parquet").write_text("id,prompt\n1,hi\n")
    with pytest.raises(InputError, match=r"scores.parquet: cannot read as a parquet table \(.*\); is it the format "
                                         r"its extension says\?"):
        read_table(tmp_path / "scores.parquet")


def test_garbled_parquet_pages_are_noticed(tmp_path):
    import pandas as pd

    from paretohqd.io import InputError, read_table, write_parquet

    path = write_parquet(pd.DataFrame({"id": [f"s{i}" for i in range(200)], "score": range(200)}), tmp_path / "t.parquet")
    data = bytearray(path.read_bytes())
    data[len(data) // 3] ^= 0xFF  # one flipped byte inside the data pages; the footer still parses
    path.write_bytes(bytes(data))
    with pytest.raises(InputError, match="t.parquet: cannot read"):
        read_table(path)
