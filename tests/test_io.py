"""Atomic writes: all or nothing, and files get the mode a plain open() would give."""

import os

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
