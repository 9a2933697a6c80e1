"""`paretohqd evaluate RUN --prompts FILE --out DIR`: a finished tiny run (random 2-layer Llama,
the offline MiniLM reward heads, real HH rows) evaluated on an outside prompt file."""

import json
import shutil
import subprocess

import pandas as pd
import pytest
from typer.testing import CliRunner

from audit_writes import changes_under, tree

from paretohqd import pipeline
from paretohqd.cli import app
from paretohqd.config import load_config
from paretohqd.data.prepare import prompt_id
from paretohqd.evaluate.answer import conversation_prompts
from paretohqd.policy.prompts import hh_text


@pytest.fixture(scope="module")
def finished(tmp_path_factory, small_hh, tiny_policy):
    tmp = tmp_path_factory.mktemp("evalprompts")
    cfg = load_config("configs/demo.yaml", [
        f"runs_dir={tmp / 'runs'}", f"data.sources=[{small_hh}]", f"policy.model={tiny_policy}",
        f"rewards.dir={tmp / 'rewards'}", "rewards.epochs=3", "select.preferences=2", "select.k=4", "train.steps=1",
        "train.batch_size=2", "train.warmup_steps=0", "stage2.enabled=false", "evaluate.prompts=3",
        "evaluate.bootstrap=50", "generate.max_new_tokens=4", "generate.batch_size=4"])
    pipeline.run(cfg)
    return tmp / "runs" / "demo"


def test_outside_prompts_get_their_own_evaluation_and_report(finished, tmp_path):
    run = finished
    own = (run / "evaluate" / "responses.parquet").read_bytes()
    prompts = ["What is a good name for a cat?", "How far away is the moon?", "What is a good name for a cat?"]
    (tmp_path / "p.txt").write_text("\n".join(prompts) + "\n")
    out = tmp_path / "outside"
    res = CliRunner().invoke(app, ["evaluate", str(run), "--prompts", str(tmp_path / "p.txt"), "--out", str(out)])
    assert res.exit_code == 0, res.output
    df = pd.read_parquet(out / "evaluate" / "responses.parquet")
    assert sorted(df["model"].unique()) == ["base", "pref-00", "pref-01"]
    assert sorted(df["prompt"].unique()) == ["\n\nHuman: How far away is the moon?",
                                             "\n\nHuman: What is a good name for a cat?"]  # the duplicate once
    assert len(df) == 2 * 3 and {"helpful", "harmless", "collapse"} <= set(df.columns)
    report = json.loads((out / "report.json").read_text())
    (method,) = report["methods"]
    assert [m["model"] for m in method["models"]] == ["pref-00", "pref-01"] and method["prompts"] == 2
    disjoint = json.loads((out / "evaluate" / "disjoint.json").read_text())
    assert disjoint["overlap"] == 0 and disjoint["prompts_file"] == str(tmp_path / "p.txt")
    # the run's box, so the numbers compare with its own report; its own evaluation untouched
    bounds = json.loads((out / "evaluate" / "bounds.json").read_text())
    assert bounds["lower"] == json.loads((run / "evaluate" / "bounds.json").read_text())["lower"]
    assert f"2 prompts of {tmp_path / 'p.txt'}; checked disjoint" in (out / "report.md").read_text()
    assert (out / "front.png").exists()
    assert (run / "evaluate" / "responses.parquet").read_bytes() == own


def test_the_run_is_only_read(finished, tmp_path):
    """On a `chmod -R a-w` copy: it works, and (tests run as root, whom chmod does not stop) nothing
    in the run is written, renamed or deleted, its tree byte- and mtime-identical."""
    run = tmp_path / "runs" / "demo"
    shutil.copytree(finished, run)
    subprocess.run(["chmod", "-R", "a-w", str(run)], check=True)
    before = tree(run)
    (tmp_path / "p.txt").write_text("How far away is the moon?\n")
    try:
        with changes_under(run) as changes:
            res = CliRunner().invoke(app, ["evaluate", str(run), "--prompts", str(tmp_path / "p.txt"),
                                           "--out", str(tmp_path / "outside")])
        assert res.exit_code == 0, res.output
        assert changes == [] and tree(run) == before
    finally:
        subprocess.run(["chmod", "-R", "u+w", str(run)], check=True)


def test_a_training_prompt_in_the_file_is_refused(finished, tmp_path):
    train = pd.read_parquet(finished / "data" / "train.parquet")
    # a training prompt whose conversation writes back to the same text (the hash the check uses)
    same = [(p, list(m)) for p, m in zip(train["prompt"], train["messages"])
            if hh_text([dict(x) for x in m])[:-len("\n\nAssistant:")] == p]
    assert same
    text, messages = same[0]
    assert conversation_prompts([[dict(x) for x in messages]])["prompt_id"].tolist() == [prompt_id(text)]
    path = tmp_path / "p.jsonl"
    rows = [{"prompt": "How far away is the moon?"}, {"messages": [dict(x) for x in messages]}]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    res = CliRunner().invoke(app, ["evaluate", str(finished), "--prompts", str(path), "--out", str(tmp_path / "o")])
    assert res.exit_code == 2, res.output
    assert f"1 of the 2 prompts of {path} were also used in training" in res.output
    assert f"Remove them from {path}" in res.output and res.output.count("\n") == 1
    res = CliRunner().invoke(app, ["evaluate", str(finished), "--prompts", str(path)])
    assert res.exit_code == 2 and "--prompts FILE and --out DIR together" in res.output
    res = CliRunner().invoke(app, ["evaluate", str(finished), "--prompts", str(path), "--out", str(finished / "x")])
    assert res.exit_code == 2 and "inside the run folder" in res.output
