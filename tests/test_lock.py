"""One writer per folder (`paretohqd.lock`): a second process is refused at once with the holder's
pid and start time, a killed holder never blocks, caches wait their turn, and under a launcher only
the main process locks the run folder."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from paretohqd.lock import BusyError, hold, lock_file

REPO = Path(__file__).resolve().parents[1]
HOLDER = """
import sys, time
from paretohqd.lock import hold
with hold(sys.argv[1], wait=sys.argv[2] == "wait"):
    print("held", flush=True)
    time.sleep(float(sys.argv[3]))
"""


def _holder(folder: Path, seconds: float = 60, wait: bool = False) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(folder), "wait" if wait else "no", str(seconds)],
                            cwd=REPO, stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_a_second_process_is_refused_at_once_naming_the_holder(tmp_path):
    folder = tmp_path / "runs" / "demo"
    proc = _holder(folder)
    try:
        t0 = time.monotonic()
        with pytest.raises(BusyError, match=rf"{folder} is in use by pid {proc.pid}, running since "
                                            r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ \(.*\); one process writes a folder at a "
                                            r"time: wait for it to finish or stop it \(a stopped run resumes where it was\)"):
            with hold(folder):
                pass
        assert time.monotonic() - t0 < 1.0
    finally:
        proc.kill()
        proc.wait()


def test_a_killed_holder_never_blocks(tmp_path):
    folder = tmp_path / "demo"
    proc = _holder(folder)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert json.loads(lock_file(folder).read_text())["pid"] == proc.pid  # its name is still written there
    with hold(folder):  # but the operating system dropped its lock with it
        assert json.loads(lock_file(folder).read_text())["pid"] == os.getpid()


def test_the_lock_is_reentrant_in_one_process_and_lives_beside_the_folder(tmp_path):
    folder = tmp_path / "demo"
    with hold(folder), hold(folder):  # `compare` holds a run folder that `pipeline.run` takes again
        assert lock_file(folder) == tmp_path / ".demo.lock" and not folder.exists()
    with hold(folder):  # released when the outer block ended
        pass


def test_a_cache_lock_waits_for_its_holder(tmp_path):
    folder = tmp_path / "rewards"
    proc = _holder(folder, seconds=1.0, wait=True)
    said = []
    t0 = time.monotonic()
    with hold(folder, wait=True, say=said.append):
        waited = time.monotonic() - t0
    proc.wait()
    assert waited > 0.3 and said and said[0].startswith(f"waiting for pid {proc.pid}")


def test_under_a_launcher_only_the_main_process_locks_the_run_folder(tmp_path, monkeypatch):
    folder = tmp_path / "demo"
    proc = _holder(folder)
    try:
        monkeypatch.setenv("RANK", "1")  # a launched worker: its job's main process holds the lock
        with hold(folder):
            pass
        monkeypatch.setenv("RANK", "0")
        with pytest.raises(BusyError):
            with hold(folder):
                pass
    finally:
        proc.kill()
        proc.wait()


def test_paretohqd_run_on_a_busy_folder_is_one_line_exit_2(tmp_path):
    folder = tmp_path / "runs" / "busy"
    (tmp_path / "c.yaml").write_text("{}\n")
    proc = _holder(folder)
    try:
        res = subprocess.run([sys.executable, "-m", "paretohqd", "run", str(tmp_path / "c.yaml"), "--set",
                              f"runs_dir={tmp_path / 'runs'}", "--set", "name=busy"], cwd=REPO, capture_output=True,
                             text=True, timeout=120, env={**os.environ, "PYTHONPATH": str(REPO)})
    finally:
        proc.kill()
        proc.wait()
    assert res.returncode == 2 and "Traceback" not in res.stderr
    (line,) = res.stderr.strip().splitlines()
    assert line.startswith(f"error: {folder} is in use by pid {proc.pid}, running since ")
    assert line.endswith(f"(-c {folder} no 60); one process writes a folder at a time: wait for it "
                         "to finish or stop it (a stopped run resumes where it was)")
