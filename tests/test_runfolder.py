"""The manifest trusts nothing on disk blindly: each step records the size and checksum of every
file it wrote, and a rerun redoes (saying why) a step whose files are missing or changed."""

import json

import pytest

from paretohqd.config import Config, ConfigError
from paretohqd.io import InputError, write_json, write_parquet
from paretohqd.progress import console
from paretohqd.runfolder import RunFolder


@pytest.fixture
def run(tmp_path, monkeypatch):
    monkeypatch.setattr(console, "width", 300)  # one printed line per message
    return RunFolder(Config(name="r", runs_dir=str(tmp_path)))


def _writer(calls: list, r: RunFolder):
    def fn() -> None:
        import pandas as pd

        calls.append(1)
        write_json({"n": len(calls)}, r.path("stage1", "selection.json"))
        write_parquet(pd.DataFrame({"id": ["a", "b"]}), r.path("stage1", "selection.parquet"))

    return fn


def _step(r: RunFolder, calls: list) -> str:
    with console.capture() as out:
        RunFolder(r.cfg).step("select", r.path("stage1", "selection.parquet"), _writer(calls, r))
    return out.get()


def test_a_step_records_its_files_and_is_skipped_while_they_match(run):
    calls = []
    _step(run, calls)
    entry = json.loads(run.path("manifest.json").read_text())["steps"]["select"]
    assert sorted(entry["outputs"]) == ["stage1/selection.json", "stage1/selection.parquet"]
    assert entry["outputs"]["stage1/selection.json"]["bytes"] == run.path("stage1", "selection.json").stat().st_size
    assert len(entry["outputs"]["stage1/selection.json"]["xxh3"]) == 16
    assert "skip select (done)" in _step(run, calls) and len(calls) == 1


@pytest.mark.parametrize("damage, why", [
    (lambda p: p.write_text(p.read_text()[:-3]), r"stage1/selection.json has changed \(\d+ bytes, \d+ when written\)"),
    (lambda p: p.write_text(p.read_text().replace("1", "7")), "stage1/selection.json has changed \\(same size, another "
                                                                "checksum\\)"),
    (lambda p: p.unlink(), "stage1/selection.json is missing"),
])
def test_a_step_whose_files_changed_is_redone_with_one_line_why(run, damage, why):
    calls = []
    _step(run, calls)
    damage(run.path("stage1", "selection.json"))
    out = _step(run, calls)
    assert len(calls) == 2
    (line,) = [x for x in out.splitlines() if x.startswith("redo")]
    assert line.startswith("redo select: ") and line.endswith("; doing it again")
    import re

    assert re.search(why, line), line
    assert json.loads(run.path("stage1", "selection.json").read_text()) == {"n": 2}


def test_a_done_marker_without_a_record_is_recorded_not_redone(run):
    """Every step writes its done-marker last, after its other files are fsynced and in place: a
    marker without a record is a run stopped between the two, and the step is recorded then."""
    calls = []
    _step(run, calls)
    manifest = json.loads(run.path("manifest.json").read_text())
    write_json({"steps": {}}, run.path("manifest.json"))  # as if killed between the marker and its record
    out = _step(run, calls)
    assert len(calls) == 1 and "skip select (done; recorded now, the run stopped before recording it)" in out
    entry = json.loads(run.path("manifest.json").read_text())["steps"]["select"]
    assert entry["outputs"] == manifest["steps"]["select"]["outputs"] and entry["recorded_late"]
    run.path("stage1", "selection.json").write_text("{}")
    assert "redo select: stage1/selection.json has changed" in _step(run, calls) and len(calls) == 2


def test_a_record_from_before_checksums_is_trusted_as_before(run):
    calls = []
    _step(run, calls)
    manifest = json.loads(run.path("manifest.json").read_text())
    del manifest["steps"]["select"]["outputs"]
    write_json(manifest, run.path("manifest.json"))
    assert "skip select (done)" in _step(run, calls) and len(calls) == 1


def test_an_unreadable_manifest_or_config_says_what_to_delete(run):
    run.path("manifest.json").write_text('{"steps": {"prep')
    with pytest.raises(InputError, match=r"manifest.json cannot be read \(.*\); it records which steps finished and "
                                         r"checksums of their files. Restore it, or delete it: steps whose last file "
                                         r"is there are then recorded afresh from what is on disk, the others redone"):
        RunFolder(run.cfg)
    run.path("manifest.json").unlink()
    run.path("config.yaml").write_bytes(b"\xff\xfe garbage")
    with pytest.raises(ConfigError, match=r"config.yaml cannot be read \(.*\); it is the config this run was made "
                                          r"with: restore it, or delete it to take the config you gave"):
        RunFolder(run.cfg)


def test_only_the_sections_a_method_reads_bind_its_run_folder(tmp_path):
    from paretohqd.methods import unread_sections

    def changed(cfg, section, **values):
        return cfg.model_copy(update={section: getattr(cfg, section).model_copy(update=values)})

    paretohqd = Config(runs_dir=str(tmp_path), name="p")
    RunFolder(paretohqd, free=unread_sections(paretohqd))
    RunFolder(changed(paretohqd, "compare", methods=["paretohqd", "ric"]), free=unread_sections(paretohqd))
    RunFolder(changed(paretohqd, "morlhf", steps=3), free=unread_sections(paretohqd))  # ParetoHqD reads no morlhf
    with pytest.raises(ConfigError, match=r"differs in: select.k"):
        RunFolder(changed(paretohqd, "select", k=7), free=unread_sections(paretohqd))
    morlhf = Config(runs_dir=str(tmp_path), name="m", method="morlhf")
    RunFolder(morlhf, free=unread_sections(morlhf))
    RunFolder(changed(morlhf, "ric", online_rounds=2), free=unread_sections(morlhf))
    with pytest.raises(ConfigError, match=r"differs in: morlhf.steps"):
        RunFolder(changed(morlhf, "morlhf", steps=3), free=unread_sections(morlhf))
