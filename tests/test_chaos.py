"""The kill -9 campaign (issue 16). Here, in `make test`: a tiny real run (`testing.tiny_run_overrides`)
in a subprocess, SIGKILLed right after its first stage-1 checkpoint and right after its first saved
stage-2 batch (it stops itself there, `chaos.pausing`: no race with the disk), resumed after each; a
second `paretohqd run` on the folder meanwhile is refused; the finished run equals the uninterrupted
one. The full campaign (24 seeded kills spread over every step) is `benchmarks/chaos.py`, run by the
slow test below."""

import json
import sys
import time
from pathlib import Path

import pytest

from benchmarks import chaos, same_result
from paretohqd.testing import tiny_run_overrides


def test_kill_9_twice_then_resume_equals_the_uninterrupted_run(tmp_path, finished_tiny_run, chaos_assets):
    from test_reliability import _same_outputs

    ref, _ = finished_tiny_run  # uninterrupted, made in this process
    root = tmp_path / "runs" / "tiny"
    cmd = chaos.command(tiny_run_overrides(chaos_assets, tmp_path / "runs", tmp_path / "rewards", "tiny"),
                        tmp_path / "run.yaml")

    first = chaos.Attempt(chaos.pausing(cmd, "checkpoint"))  # it stops itself after its first checkpoint
    while not any(line.startswith("run folder:") for line in first.lines):  # it holds the folder's lock now
        assert first.proc.poll() is None, "\n".join(first.lines)
        time.sleep(0.01)
    second = chaos.Attempt(cmd)  # a second run on the same folder, at the same time
    assert second.finish() == 2 and not any("Traceback" in line for line in second.lines)
    print(*[line for line in second.lines if line.startswith("error:")])  # (quoted in the README)
    assert [line for line in second.lines if line.startswith("error:")] == [
        f"error: {root} is in use by pid {first.proc.pid}, running since "
        + second.lines[-1].split("running since ", 1)[1]]
    # (None: the run ended before a checkpoint was seen; its last lines say why)
    assert first.kill_when(lambda: any(root.glob("stage1/pref-*.ckpt/state.json"))) is not None, first.lines[-30:]

    resumed = chaos.Attempt(chaos.pausing(cmd, "batch"))  # the killed holder's lock died with it
    assert resumed.kill_when(lambda: any(root.glob("stage2/.generated-pref-*.batches/batch-*.parquet"))) is not None, \
        resumed.lines[-30:]
    assert any(line.startswith("  resumed from the checkpoint at step 2/4") for line in resumed.lines), resumed.lines

    last = chaos.Attempt(cmd)
    assert last.finish() == 0, "\n".join(last.lines[-30:])
    assert any("batch(es) saved before a stop reused" in line for line in last.lines), last.lines
    _same_outputs(ref, root)
    assert not chaos.differences(ref, root)


def _finished_by_hand(root: Path, methods: list[str], adapters: list[str]) -> Path:
    """What `differences` reads of a finished run: a table, models' weights, report.json."""
    import pandas as pd
    import torch
    from safetensors.torch import save_file

    (root / "data").mkdir(parents=True)
    pd.DataFrame({"id": [1, 2], "helpful": [0.5, 1.5]}).to_parquet(root / "data" / "scores.parquet")
    for rel in adapters:
        (root / rel).parent.mkdir(parents=True)
        save_file({"w": torch.ones(2)}, root / rel)
    models = [{"model": "pref-00", "mean": {"helpful": 1.0}}]
    (root / "report.json").write_text(json.dumps({"methods": [{"method": m, "hypervolume": 0.5, "models": models}
                                                              for m in methods]}))
    return root


def test_what_one_side_lacks_is_a_difference(tmp_path, monkeypatch):
    adapter = "stage1/pref-00/adapter_model.safetensors"
    ref = _finished_by_hand(tmp_path / "ref", ["paretohqd", "soups"], [adapter])
    assert chaos.differences(ref, _finished_by_hand(tmp_path / "same", ["paretohqd", "soups"], [adapter])) == []
    cases = {
        "no-adapter": ([["paretohqd", "soups"], []], [f"{adapter} only in {ref}"]),
        "no-method": ([["paretohqd"], [adapter]], [f"report.json method soups only in {ref}"]),
        "more-methods": ([["paretohqd", "soups", "ric"], [adapter]],
                         [f"report.json method ric only in {tmp_path / 'more-methods'}"]),
    }
    for name, (args, want) in cases.items():
        assert chaos.differences(ref, _finished_by_hand(tmp_path / name, *args)) == want, name
    (tmp_path / "no-adapter" / "data" / "scores.parquet").unlink()
    assert f"data/scores.parquet only in {ref}" in chaos.differences(ref, tmp_path / "no-adapter")
    # no models on either side is no match: the comparison found nothing to compare
    a, b = (_finished_by_hand(tmp_path / n, ["paretohqd"], []) for n in ("a", "b"))
    assert chaos.differences(a, b) == [f"no model weights (*.safetensors) in {a} or {b}"]
    monkeypatch.setattr(sys, "argv", ["same_result.py", str(a), str(b)])
    assert same_result.main() == 1


@pytest.mark.slow
def test_the_full_campaign(tmp_path):
    """24 seeded kills over every step (and before the first, and in the report), in 3 run
    folders, each resumed to the end: 0 mismatches."""
    res = chaos.campaign(tmp_path, kills=24, seed=0)
    assert res["kills"] >= 20 and res["targets_hit"] == res["targets"], res
    assert res["mismatches"] == 0, res["mismatched"]
