"""What survives damage, on a finished tiny run (`conftest.finished_tiny_run`, real models and
reward models, both stages): each kind of output garbled or truncated in turn is noticed and its
step redone with one line why (or, for caches and checkpoints, discarded with a warning naming
the file), and the run ends with the same outputs; a full disk ends with one line naming the file,
marks no unfinished step done, and a rerun after freeing space completes."""

import errno
import json
import re
import shutil
import subprocess
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from benchmarks import chaos
from paretohqd import pipeline
from paretohqd.cli import app
from paretohqd.config import load_config
from paretohqd.progress import console
from paretohqd.runfolder import RunFolder
from paretohqd.runfolder.manifest import mismatch


def _copy(finished, tmp_path) -> tuple[Path, list[str]]:
    """A copy of the finished run (and its score cache) to damage."""
    root, sets = finished
    shutil.copytree(root, tmp_path / "runs" / "tiny")
    shutil.copytree(Path(_value(sets, "rewards.dir")), tmp_path / "rewards")
    (tmp_path / "runs" / "tiny" / "config.yaml").unlink()  # written afresh: the config names the copy's paths
    sets = [s for s in sets if not s.startswith(("runs_dir=", "rewards.dir="))]
    return tmp_path / "runs" / "tiny", sets + [f"runs_dir={tmp_path / 'runs'}", f"rewards.dir={tmp_path / 'rewards'}"]


def _value(sets: list[str], key: str) -> str:
    return next(s.split("=", 1)[1] for s in sets if s.startswith(key + "="))


def _rerun(sets: list[str], monkeypatch) -> str:
    monkeypatch.setattr(console, "width", 400)  # one printed line per message
    with console.capture() as out:
        pipeline.run(load_config("configs/demo.yaml", sets))
    return out.get()


def _same_outputs(a: Path, b: Path) -> None:
    for rel in chaos.TABLES:  # (the tiny run has every one of them)
        # (a stage-2 table's `model` column names the adapter by its path, which names the run folder)
        pd.testing.assert_frame_equal(pd.read_parquet(a / rel).drop(columns="model", errors="ignore"),
                                      pd.read_parquet(b / rel).drop(columns="model", errors="ignore"), obj=rel)
    # every model on both sides (none found is a failure, not a match), equal within float noise
    assert not (differ := chaos.model_differences(a, b)), differ


def _garble(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


@pytest.mark.parametrize("rel, damage, step, why", [
    ("stage2/selection.parquet", _garble, "stage2/select", "has changed (same size, another checksum)"),
    ("stage1/selection.json", _truncate, "select", "has changed"),
    ("stage2/pref-01/adapter_model.safetensors", _truncate, "stage2/pref-01 w=[1.0, 0.0]", "has changed"),
    ("evaluate/responses/pref-00.parquet", _garble, "evaluate", "has changed (same size, another checksum)"),
    ("data/scores.parquet", Path.unlink, "score", "is missing"),
])
def test_a_damaged_output_is_noticed_and_its_step_redone(finished_tiny_run, tmp_path, monkeypatch, rel, damage, step, why):
    root, sets = _copy(finished_tiny_run, tmp_path)
    damage(root / rel)
    out = _rerun(sets, monkeypatch)
    redone = [line for line in out.splitlines() if line.startswith("redo ")]
    assert redone and redone[0].startswith(f"redo {step}: {rel} {why}"), out
    _same_outputs(finished_tiny_run[0], root)


def test_a_garbled_score_cache_chunk_is_discarded_and_scored_again(finished_tiny_run, tmp_path, monkeypatch):
    root, sets = _copy(finished_tiny_run, tmp_path)
    chunk = sorted((tmp_path / "rewards" / "scores").rglob("chunk-*.parquet"))[0]
    _garble(chunk)
    (root / "data" / "scores.parquet").unlink()  # so that scoring runs (and reads the cache)
    out = _rerun(sets, monkeypatch)
    assert f"warning: discarding score cache file {chunk}, which cannot be read (" in out
    assert "its samples are scored again" in out and not chunk.exists()
    _same_outputs(finished_tiny_run[0], root)


@pytest.mark.parametrize("damage", [None, "optimizer.pt", "model/adapter_model.safetensors"])
def test_training_resumes_from_its_checkpoint_or_discards_a_damaged_one(finished_tiny_run, tmp_path, monkeypatch, damage):
    from paretohqd.policy import sft

    root, sets = _copy(finished_tiny_run, tmp_path)
    shutil.rmtree(root / "stage1" / "pref-00")

    def fail(*a, **k):
        raise RuntimeError("stopped before the end")  # as a kill after the last checkpoint leaves the files

    with monkeypatch.context() as m:
        m.setattr(sft, "save_model", fail)
        with pytest.raises(RuntimeError, match="stopped before the end"):
            _rerun(sets, monkeypatch)
    ckpt = root / "stage1" / "pref-00.ckpt"
    assert json.loads((ckpt / "state.json").read_text())["step"] == 2  # train.steps 4, train.save_every 2
    if damage:
        _garble(ckpt / damage)
    out = _rerun(sets, monkeypatch)
    if damage:
        assert f"warning: discarding checkpoint {ckpt}, which cannot be read ({damage} differs from its record); " \
               "training from step 0" in out
    else:
        assert f"resumed from the checkpoint at step 2/4 ({ckpt})" in out
    assert not ckpt.exists()
    _same_outputs(finished_tiny_run[0], root)


def test_generation_resumes_after_its_last_saved_batch(finished_tiny_run, tmp_path, monkeypatch):
    """A stopped stage-2 generation keeps its finished batches; the resumed pool equals the
    uninterrupted one (each batch is seeded by its index), and a garbled saved batch is answered again."""
    from paretohqd.policy import generate as gen

    root, sets = _copy(finished_tiny_run, tmp_path)
    pool = root / "stage2" / "generated-pref-01.parquet"
    pool.unlink()
    real, calls = gen.generate, []

    def second_fails(*a, **k):
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("stopped in the second batch")
        return real(*a, **k)

    with monkeypatch.context() as m:
        m.setattr(gen, "generate", second_fails)
        with pytest.raises(RuntimeError, match="second batch"):
            _rerun(sets, monkeypatch)
    saved = root / "stage2" / ".generated-pref-01.batches"
    assert sorted(p.name for p in saved.iterdir()) == ["batch-00000.parquet"] and not pool.exists()
    out = _rerun(sets, monkeypatch)
    assert "pref 01 answers: 6 tokens" not in out and "1 batch(es) saved before a stop reused" in out
    assert not saved.exists()
    _same_outputs(finished_tiny_run[0], root)
    pd.testing.assert_frame_equal(pd.read_parquet(pool).drop(columns="model"),
                                  pd.read_parquet(finished_tiny_run[0] / pool.relative_to(root)).drop(columns="model"))


def test_a_garbled_saved_batch_is_answered_again(finished_tiny_run, tmp_path, monkeypatch):
    from paretohqd.evaluate import answer as ev
    from paretohqd.policy import generate as gen

    root, sets = _copy(finished_tiny_run, tmp_path)
    part = root / "evaluate" / "responses" / "pref-01.parquet"
    part.unlink()
    saved = part.with_name(".pref-01.batches")
    real = gen.generate

    def once(*a, **k):
        out = real(*a, **k)
        gen.write_parquet(pd.DataFrame({"key": ["x"], "response": ["y"]}), saved / "batch-00000.parquet")
        raise RuntimeError("stopped")

    with monkeypatch.context() as m:  # a saved batch that belongs to other prompts (or is garbled)
        m.setattr(gen, "generate", once)
        with pytest.raises(RuntimeError):
            _rerun(sets, monkeypatch)
    out = _rerun(sets, monkeypatch)
    assert f"warning: discarding saved answers {saved / 'batch-00000.parquet'} (made with other prompts or " \
           "settings); answering again" in out
    assert ev is not None
    _same_outputs(finished_tiny_run[0], root)


# A full disk -------------------------------------------------------------------------------------


def test_a_full_disk_is_one_line_and_a_rerun_after_freeing_space_completes(finished_tiny_run, tmp_path, monkeypatch):
    root, sets = _copy(finished_tiny_run, tmp_path)
    shutil.rmtree(root / "stage2")
    real = pd.DataFrame.to_parquet

    def full(self, path, *a, **k):  # the disk fills while stage 2's second pool is written
        if ".generated-pref-01.parquet." in str(path):
            Path(path).write_bytes(b"\0" * 4096)
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(self, path, *a, **k)

    args = ["run", "configs/demo.yaml", *[x for s in sets for x in ("--set", s)]]
    with monkeypatch.context() as m:
        m.setattr(pd.DataFrame, "to_parquet", full)
        res = CliRunner().invoke(app, args)
    assert res.exit_code == 2 and res.exception is not None and "Traceback" not in res.output
    errors = [line for line in res.output.splitlines() if line.startswith("error:")]
    assert errors == [f"error: no space left on the device writing {root / 'stage2' / 'generated-pref-01.parquet'} "
                      f"(it needed more than the 4.1 kB written before the disk filled; "
                      + errors[0].split("disk filled; ", 1)[1]]
    assert errors[0].endswith("free there now); free some space and rerun: finished steps are kept, and this one is redone")
    _no_unfinished_step_marked_done(root, "stage2/generate pref-01")
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    _same_outputs(finished_tiny_run[0], root)


def _no_unfinished_step_marked_done(root: Path, failed: str) -> None:
    """The failed step is not recorded, left no temp file, and every recorded step's files are
    whole (a step whose files are missing, deleted before this run, is redone by the next)."""
    steps = json.loads((root / "manifest.json").read_text())["steps"]
    assert failed not in steps
    assert not [p for p in root.rglob("*.tmp")]
    for name, entry in steps.items():
        bad = {f: mismatch(root / f, want) for f, want in entry.get("outputs", {}).items()}
        assert not {f: why for f, why in bad.items() if why and why != "is missing"}, name


def _can_mount() -> bool:
    probe = Path("/tmp/.paretohqd-mount-probe")
    probe.mkdir(exist_ok=True)
    ok = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(probe)], capture_output=True).returncode == 0
    if ok:
        subprocess.run(["umount", str(probe)], check=True)
    return ok


@pytest.mark.skipif(not _can_mount(), reason="needs to mount a tmpfs (root)")
def test_a_real_full_disk_tmpfs(finished_tiny_run, tmp_path, monkeypatch):
    """The run folder on a small tmpfs that fills during stage 2; then the tmpfs grows and the rerun completes."""
    disk = tmp_path / "disk"
    disk.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(disk)], check=True)
    try:
        root, sets = _copy(finished_tiny_run, tmp_path)
        shutil.rmtree(root / "stage2")
        shutil.rmtree(root / "evaluate")
        shutil.copytree(root, disk / "runs" / "tiny")
        shutil.rmtree(root)
        root = disk / "runs" / "tiny"
        sets = [s for s in sets if not s.startswith("runs_dir=")] + [f"runs_dir={disk / 'runs'}"]
        used = sum(f.stat().st_size for f in root.rglob("*") if f.is_file())
        # leave ~40 kB: the first stage-2 adapter (~70 kB) cannot be written
        ballast = disk / "ballast"
        free = shutil.disk_usage(disk).free
        ballast.write_bytes(b"\0" * max(free - 40_000, 0))
        args = ["run", "configs/demo.yaml", *[x for s in sets for x in ("--set", s)]]
        res = CliRunner().invoke(app, args)
        assert res.exit_code == 2 and "Traceback" not in res.output, res.output
        errors = [line for line in res.output.splitlines() if line.startswith("error:")]
        assert len(errors) == 1 and re.match(rf"error: no space left on the device writing {root}/\S+ \(", errors[0]), errors
        print(errors[0])  # (quoted in the README)
        running = [x for x in res.output.splitlines() if re.match(r"(stage2/|evaluate$|report$)", x)][-1]
        _no_unfinished_step_marked_done(root, running)
        ballast.unlink()  # space freed
        res = CliRunner().invoke(app, args)
        assert res.exit_code == 0, res.output
        assert used > 0
        _same_outputs(finished_tiny_run[0], root)
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=False)
