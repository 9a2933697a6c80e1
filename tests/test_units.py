"""A run as units (issue 29): `paretohqd plan` lists them with stable ids, what each needs, its
resources, estimate and done-ness; `paretohqd run CONFIG --unit ID` (or `--wave W --unit-index I`)
runs one, refused with one line while its inputs are not done. A local "scheduler" runs every unit
of a tiny run (`testing.tiny_run_overrides`) as its own command, waves in order, the two units of
each two-unit wave as two processes at once; the run ends as the same run made whole does
(`benchmarks.chaos.differences`), and a whole `paretohqd run` on it then redoes nothing."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from typer.testing import CliRunner

from benchmarks import chaos
from paretohqd.cli import app
from paretohqd.config import ConfigError, load_config
from paretohqd.plan import plan
from paretohqd.runfolder import read_manifest
from paretohqd.testing import tiny_run_overrides

REPO = Path(__file__).resolve().parents[1]
TINY_UNITS = ["prepare", "score", "select", "stage1/pref-00", "stage1/pref-01", "stage2/generate pref-01",
              "stage2/generate pref-00", "stage2/score", "stage2/select", "stage2/pref-00", "stage2/pref-01",
              "evaluate", "report"]


def _args(sets: list[str]) -> list[str]:
    return ["configs/demo.yaml", *(x for s in sets for x in ("--set", s))]


def _cli(*args: str):
    res = CliRunner().invoke(app, list(args))
    return res


def test_plan_lists_the_units_in_order_with_stable_ids(tmp_path, chaos_assets):
    sets = tiny_run_overrides(chaos_assets, tmp_path / "runs", tmp_path / "rewards", "fresh")
    first = plan(load_config("configs/demo.yaml", sets))
    assert [u["id"] for u in first["units"]] == TINY_UNITS
    assert first == plan(load_config("configs/demo.yaml", sets))  # stable across calls
    assert not any(u["done"] for u in first["units"]) and not (tmp_path / "runs").exists()  # read only
    units = {u["id"]: u for u in first["units"]}
    assert units["stage2/pref-01"]["needs"] == ["stage2/select", "stage1/pref-01"]
    assert units["stage2/generate pref-00"]["needs"] == ["stage1/pref-00"]
    assert units["evaluate"]["needs"] == ["stage2/pref-00", "stage2/pref-01"]
    assert units["stage1/pref-00"]["resources"]["executor"] == "executor.train"
    assert units["stage2/generate pref-00"]["resources"]["executor"] == "executor.generate"
    assert units["select"]["resources"]["executor"] is None and units["select"]["estimated_device_s"] == 0
    assert units["stage1/pref-00"]["estimated_device_s"] > 0
    assert first["waves"]["stage1"] == ["stage1/pref-00", "stage1/pref-01"]
    # every unit's needs lie in earlier waves
    order = list(first["waves"])
    assert all(order.index(units[n]["wave"]) < order.index(u["wave"]) for u in units.values() for n in u["needs"])
    res = _cli("plan", *_args(sets), "--json")
    assert res.exit_code == 0 and json.loads(res.stdout) == first
    # without stage 2 the method's last wave (stage 1) is what evaluation needs
    no2 = plan(load_config("configs/demo.yaml", sets + ["stage2.enabled=false"]))
    assert {u["id"]: u for u in no2["units"]}["evaluate"]["needs"] == ["stage1/pref-00", "stage1/pref-01"]


def test_plan_refuses_a_method_without_units(tmp_path, chaos_assets):
    sets = tiny_run_overrides(chaos_assets, tmp_path / "runs", tmp_path / "rewards", "ric") + ["method=ric"]
    with pytest.raises(ConfigError, match="method: 'ric' runs whole"):
        plan(load_config("configs/demo.yaml", sets))
    res = _cli("plan", *_args(sets))
    assert res.exit_code == 2 and "runs whole" in res.output and "Traceback" not in res.output


def test_a_unit_started_too_early_is_refused_with_one_line(tmp_path, chaos_assets):
    sets = tiny_run_overrides(chaos_assets, tmp_path / "runs", tmp_path / "rewards", "early")
    res = _cli("run", *_args(sets), "--unit", "stage2/pref-01")
    assert res.exit_code == 2, res.output
    line = res.stderr.strip()
    assert line.count("\n") == 0 and line.startswith("error: unit stage2/pref-01: waits for stage2/select, stage1/pref-01")
    res = _cli("run", *_args(sets), "--wave", "stage1", "--unit-index", "2")
    assert res.exit_code == 2 and "wave 'stage1' has 2 unit(s), indices 0 to 1" in res.stderr
    res = _cli("run", *_args(sets), "--unit", "stage3/pref-00")
    assert res.exit_code == 2 and "no such unit" in res.stderr
    res = _cli("run", *_args(sets), "--wave", "stage1")
    assert res.exit_code == 2 and "go together" in res.stderr
    assert not (tmp_path / "runs" / "early" / "stage2").exists()


def _subprocess(sets: list[str], wave: str, index: int) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    return subprocess.Popen([sys.executable, "-m", "paretohqd", "run", *_args(sets), "--wave", wave,
                             "--unit-index", str(index)], cwd=REPO, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)


@pytest.mark.parametrize("processes", [("stage1",), pytest.param(("stage1", "stage2-generate", "stage2"), marks=pytest.mark.slow)],
                         ids=["stage1-as-processes", "every-two-unit-wave-as-processes"])
def test_units_run_by_a_local_scheduler_equal_the_whole_run(tmp_path, chaos_assets, finished_tiny_run, processes):
    """The waves in `processes` run their two units as two processes at once; the others' units run
    in this process, one after another, through the same command (`CliRunner`), which is faster."""
    ref, _ = finished_tiny_run
    # the same name as the whole run's: the report names its method after the run
    sets = tiny_run_overrides(chaos_assets, tmp_path / "runs", tmp_path / "rewards", ref.name)
    cfg = load_config("configs/demo.yaml", sets)
    root = tmp_path / "runs" / ref.name
    for wave, ids in plan(cfg)["waves"].items():
        if wave in processes:  # two at once, each its own process (as two array tasks on shared storage)
            assert len(ids) == 2
            procs = [_subprocess(sets, wave, i) for i in range(2)]
            outs = [p.communicate(timeout=600)[0] for p in procs]
            assert [p.returncode for p in procs] == [0, 0], outs
        else:
            for i in range(len(ids)):
                res = _cli("run", *_args(sets), "--wave", wave, "--unit-index", str(i))
                assert res.exit_code == 0, res.output
        done = {u["id"]: u["done"] for u in plan(cfg)["units"]}
        assert all(done[i] for i in ids), (wave, done)
    assert not chaos.differences(ref, root, atol=1e-4)
    # each unit recorded itself in a file of its own; read together they are the whole run's steps
    steps = read_manifest(root)["steps"]
    assert not (root / "manifest.json").exists()
    assert len(list((root / "manifest.d").glob("*.json"))) == len(TINY_UNITS) - 1 == len(steps)  # (the report: none)
    assert set(steps) == set(json.loads((ref / "manifest.json").read_text())["steps"])
    for u in plan(cfg)["units"][:-1]:  # each unit's record holds its own files only
        assert all(not f.startswith("stage2/generated-") or u["id"].startswith("stage2/generate") for f in steps[u["step"]]["outputs"])
    assert set(steps["stage2/generate pref-00"]["outputs"]) == {"stage2/generated-pref-00.parquet"}
    # a whole run on the folder picks every unit up: nothing redone
    before = {p: p.stat().st_mtime_ns for p in root.rglob("*.safetensors")}
    res = _cli("run", *_args(sets))
    assert res.exit_code == 0, res.output
    assert "redo" not in res.output and {p: p.stat().st_mtime_ns for p in before} == before
    assert set(read_manifest(root)["steps"]) == set(steps)  # (the units' records: nothing ran, nothing recorded anew)


def test_a_killed_unit_resumes_from_its_checkpoint_when_the_scheduler_retries_it(tmp_path, chaos_assets,
                                                                                  finished_tiny_run):
    """An array task killed mid-training (preempted, out of time) and retried loses at most
    `train.save_every` steps, as a whole run does: the retried unit picks up its checkpoint, records
    itself done, and its adapter equals the uninterrupted run's."""
    ref, _ = finished_tiny_run
    sets = tiny_run_overrides(chaos_assets, tmp_path / "runs", tmp_path / "rewards", ref.name)
    cfg, root = load_config("configs/demo.yaml", sets), tmp_path / "runs" / ref.name
    for unit in ("prepare", "score", "select"):
        res = _cli("run", *_args(sets), "--unit", unit)
        assert res.exit_code == 0, res.output
    cmd = [sys.executable, "-m", "paretohqd", "run", *_args(sets), "--unit", "stage1/pref-00"]
    killed = chaos.Attempt(chaos.pausing(cmd, "checkpoint"))  # it stops itself after its first checkpoint
    assert killed.kill_when(lambda: any(root.glob("stage1/pref-00.ckpt/state.json"))) is not None, killed.lines[-30:]
    assert not {u["id"]: u["done"] for u in plan(cfg)["units"]}["stage1/pref-00"]
    retried = chaos.Attempt(cmd)
    assert retried.finish() == 0, "\n".join(retried.lines[-30:])
    assert any(line.startswith("  resumed from the checkpoint at step 2/4") for line in retried.lines), retried.lines
    assert {u["id"]: u["done"] for u in plan(cfg)["units"]}["stage1/pref-00"]
    rel = next((ref / "stage1" / "pref-00").rglob("*.safetensors")).relative_to(ref)
    a, b = load_file(ref / rel), load_file(root / rel)  # (atol as the local scheduler's test: other processes)
    assert a.keys() == b.keys() and all(torch.allclose(a[k], b[k], rtol=1e-5, atol=1e-4) for k in a), rel


def test_a_unit_records_only_its_own_files_in_its_own_record(tmp_path):
    """Without models: a unit's step runs alone (the others are passed over), records the files of
    its folder but not another unit's that appeared there meanwhile, in `manifest.d/`; the whole
    run reads that record (skips the step), and one that redoes the step replaces it."""
    from paretohqd.config import Config
    from paretohqd.runfolder import Only, RunFolder, UnitDone

    cfg, root = Config(name="r", runs_dir=str(tmp_path)), tmp_path / "r"
    ran = []

    def write(name: str, also: str | None = None):
        def fn():
            ran.append(name)
            (root / "pools").mkdir(exist_ok=True)
            (root / "pools" / f"{name}.txt").write_text(name)
            if also:  # another unit, running at the same time, writes its file into the same folder
                (root / "pools" / f"{also}.txt").write_text(also)
        return fn

    r = RunFolder(cfg, only=Only("a", others=(root / "pools" / "b.txt",)))
    r.step("b", root / "pools" / "b.txt", write("b"))  # another unit's: passed over
    with pytest.raises(UnitDone):
        r.step("a", root / "pools" / "a.txt", write("a", also="b"))
    assert ran == ["a"] and not (root / "manifest.json").exists()
    record = json.loads((root / "manifest.d" / "a.json").read_text())["steps"]["a"]
    assert set(record["outputs"]) == {"pools/a.txt"}
    assert set(read_manifest(root)["steps"]) == {"a"}
    RunFolder(cfg).step("a", root / "pools" / "a.txt", write("again"))  # the whole run: done, skipped
    assert ran == ["a"]
    (root / "pools" / "a.txt").write_text("changed")
    RunFolder(cfg).step("a", root / "pools" / "a.txt", write("a"))  # redone, recorded in manifest.json
    assert ran == ["a", "a"] and not (root / "manifest.d" / "a.json").exists()
    assert set(json.loads((root / "manifest.json").read_text())["steps"]) == {"a"}


def test_units_lock_only_themselves_and_keep_the_whole_run_out(tmp_path, chaos_assets):
    """Another process holds unit select's own lock: the same unit is refused; another holds the run
    folder's lock as a unit does (shared): a whole run is refused. (`flock`, util-linux, holds them.)"""
    sets = tiny_run_overrides(chaos_assets, tmp_path / "runs", tmp_path / "rewards", "locks")
    root = tmp_path / "runs" / "locks"
    assert _cli("run", *_args(sets), "--unit", "prepare").exit_code == 0
    assert _cli("run", *_args(sets), "--unit", "score").exit_code == 0
    for lock, args, says in ((root / ".units" / ".select.lock", ["--unit", "select"], "is in use by"),
                             (tmp_path / "runs" / ".locks.lock", [], "is being read by")):
        # its own process group: `sleep` inherits the locked file, so both are stopped at the end
        holder = subprocess.Popen(["flock", "-s" if not args else "-x", str(lock), "sleep", "60"], start_new_session=True)
        try:
            for _ in range(200):  # until flock holds it
                if subprocess.run(["flock", "-n", "-x", str(lock), "true"]).returncode:
                    break
                time.sleep(0.05)
            res = _cli("run", *_args(sets), *args)
            assert res.exit_code == 2 and says in res.stderr, res.output
        finally:
            os.killpg(holder.pid, signal.SIGKILL)
            holder.wait()
    assert _cli("run", *_args(sets), "--unit", "select").exit_code == 0
