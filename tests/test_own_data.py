"""Bring your own data: the README's "Your own data" example, a Parquet table of a few hundred rows
with two label columns, run end to end with column objectives and label-trained scorers (the tiny
random Llama instead of SmolLM2 and a tiny budget, so it takes well under a minute)."""

import json
import shlex

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from paretohqd.cli import app

CONFIG = """\
name: mine
data:
  sources: [{path: mine.parquet, format: table}]
rewards:
  models: {detail: "column:detail", warmth: "column:warmth"}
select: {preferences: 3, k: 8}
train: {steps: 4, batch_size: 2}
stage2: {prompts: 8, steps: 2}
evaluate: {prompts: 8}
"""


def _table(hh_dir, out):
    """The README's table, lines as written there (with the shared data's path)."""
    from paretohqd.data.hh_rlhf import read_pairs

    rows = [(p, r) for pair in read_pairs([str(hh_dir)]) for p, r in pair.samples() if r][:300]
    pd.DataFrame({"prompt": [p for p, _ in rows], "response": [r for _, r in rows],
                  "detail": [min(len(r.split()) / 25, 4) for _, r in rows],
                  "warmth": [sum(r.lower().count(w) for w in ("glad", "happy", "sorry", "thank")) for _, r in rows],
                  }).to_parquet(out)


@pytest.mark.parametrize("encoder", ["bag-of-words", pytest.param("minilm", marks=pytest.mark.slow)])
def test_own_parquet_with_label_columns_runs_end_to_end(tmp_path, hh_dir, tiny_policy, monkeypatch, encoder, request):
    """With the bag-of-words stand-in for MiniLM (fast), and with MiniLM itself (slow)."""
    if encoder == "bag-of-words":
        request.getfixturevalue("bag_of_words")
    rewards_dir = tmp_path / "rewards" if encoder == "bag-of-words" else request.getfixturevalue("minilm_rewards_dir")
    monkeypatch.chdir(tmp_path)
    _table(hh_dir, "mine.parquet")
    (tmp_path / "mine.yaml").write_text(CONFIG)
    sets = [f"runs_dir={tmp_path / 'runs'}", f"rewards.dir={rewards_dir}", f"policy.model={tiny_policy}",
            "select.k=4", "train.steps=2", "train.warmup_steps=0", "stage2.prompts=4", "stage2.steps=1",
            "evaluate.prompts=3", "evaluate.html=false", "generate.max_new_tokens=8", "generate.batch_size=4"]
    set_args = [x for s in sets for x in ("--set", s)]
    runner = CliRunner()

    # no scorers yet: --check stops with one line per objective and the exact command that trains it
    check = runner.invoke(app, ["run", "mine.yaml", "--check", *set_args])
    assert check.exit_code == 2 and "Traceback" not in check.output
    said = " ".join(check.output.split())  # rich wraps long lines
    config_args = " ".join(shlex.quote(a) for a in ["--config", "mine.yaml", *set_args])
    for objective in ("detail", "warmth"):
        command = f"paretohqd reward train {config_args} --objective {objective} --from-column {objective}"
        assert f"rewards.models.{objective}: column objective '{objective}' has no scorer" in said
        assert command in said
        res = runner.invoke(app, shlex.split(command)[1:])
        assert res.exit_code == 0, res.output
        assert "held_out_correlation" in res.output

    res = runner.invoke(app, ["run", "mine.yaml", "--check", *set_args])
    assert res.exit_code == 0 and "ready to run" in res.output, res.output
    res = runner.invoke(app, ["run", "mine.yaml", *set_args])
    assert res.exit_code == 0, res.output

    root = tmp_path / "runs" / "mine"
    table = pd.read_parquet("mine.parquet")
    scores = pd.read_parquet(root / "data" / "scores.parquet")
    # selection's scores are the labels themselves (`detail` depends on the answer alone)
    assert len(scores) > 100 and np.allclose(scores["detail"], scores["response"].map(dict(zip(table["response"], table["detail"]))))
    record = json.loads((root / "data" / "scores.stats.json").read_text())
    assert record["fingerprints"] == {"detail": "column:detail", "warmth": "column:warmth"}
    # stage 2 and evaluation scored generated answers with the trained scorers
    for path in (root / "stage2" / "scores.parquet", root / "evaluate" / "responses.parquet"):
        answers = pd.read_parquet(path)
        assert len(answers) and np.isfinite(answers[["detail", "warmth"]].to_numpy()).all()
        fingerprints = json.loads(path.with_suffix(".stats.json").read_text())["fingerprints"]
        assert not any(f.startswith("column:") for f in fingerprints.values())
    assert (root / "report.json").exists() and (root / "report.md").exists()


def test_check_names_a_missing_table(tmp_path, tiny_policy):
    from paretohqd.config import ConfigError, load_config
    from paretohqd.preflight import preflight

    cfg = load_config(None, [f"data.sources=[{{path: {tmp_path / 'nope.parquet'}, format: table}}]",
                             f"policy.model={tiny_policy}", f"runs_dir={tmp_path}", f"rewards.dir={tmp_path}"])
    with pytest.raises(ConfigError, match=r"data.sources: .*nope\.parquet: no such file or folder \(and not a hub "
                                          r"dataset id owner/name\)"):
        preflight(cfg)
