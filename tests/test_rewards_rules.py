"""Rule objectives (`rule:...` in rewards.models): oracle values of the built-ins, user functions
from files and modules, one-line errors, cache invalidation, the CLI and a whole tiny run."""

import os
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import pytest

from paretohqd.config import ConfigError, RewardsConfig
from paretohqd.rewards import load_reward_models, locate
from paretohqd.rewards.rules import RuleRewardModel
from paretohqd.rewards.score import score_frame

PROMPTS = ["\n\nHuman: hi\n\nAssistant: Hello!\n\nHuman: How do I bake sourdough bread?", "\n\nHuman: ok"]
ANSWERS = ["To bake bread, bake it hot: bake slowly.", "I hate this. It is awful!"]


@pytest.mark.parametrize("name, expected", [
    # "To bake bread, bake it hot: bake slowly." -> 8 whitespace words; "I hate this. It is awful!" -> 6
    ("rule:length_words", [8.0, 6.0]),
    # word runs and punctuation marks: 8 words + , : . = 11; 6 words + . ! = 8
    ("rule:length_tokens", [11.0, 8.0]),
    # -|8 - 5| / 5, -|6 - 5| / 5
    ("rule:target_length:5", [-0.6, -0.2]),
    # distinct/total: {to, bake, bread, it, hot, slowly} = 6 of 8 words (bake x3); 6 of 6
    ("rule:diversity", [6 / 8, 1.0]),
    # content words of the last human turn {bake, sourdough, bread}: bake, bread mentioned -> 2/3;
    # "ok" is too short to count, so the second prompt has none -> 0
    ("rule:overlap", [2 / 3, 0.0]),
])
def test_builtins_oracle(name, expected):
    np.testing.assert_allclose(RuleRewardModel(name).score(PROMPTS, ANSWERS), expected)


def test_vader_signs_and_range():
    s = RuleRewardModel("rule:vader").score(PROMPTS, ["I love it, wonderful and great!", "I hate this. It is awful!"])
    assert s[0] > 0.5 and s[1] < -0.5 and np.all(np.abs(s) <= 1)


def test_vader_missing_is_one_line(monkeypatch):
    monkeypatch.setitem(sys.modules, "vaderSentiment.vaderSentiment", None)  # import fails as if not installed
    with pytest.raises(ConfigError, match=r"rule:vader needs the vaderSentiment package .*: pip install vaderSentiment"):
        locate("rule:vader", RewardsConfig())


def _write(path, body):
    path.write_text(body)
    # a rewrite within the same second must still be read again (the source text is the key, not mtime)
    os.utime(path, ns=(time.time_ns(), time.time_ns()))
    return path


def test_user_function_from_file_and_module(tmp_path, monkeypatch):
    f = _write(tmp_path / "my_rules.py", "def brevity(prompts, completions, **kw):\n"
                                          "    return [-len(c) for c in completions]\n")
    np.testing.assert_array_equal(RuleRewardModel(f"rule:{f}:brevity").score(["p", "p"], ["ab", "abcd"]), [-2, -4])
    monkeypatch.syspath_prepend(str(tmp_path))
    np.testing.assert_array_equal(RuleRewardModel("rule:my_rules:brevity").score(["p"], ["abc"]), [-3])
    assert locate(f"rule:{f}:brevity", RewardsConfig()) == ("rule", None)


def test_cache_invalidates_when_the_source_changes(tmp_path):
    f = _write(tmp_path / "r.py", "def n(prompts, completions, **kw):\n    return [1.0 for _ in completions]\n")
    df = pd.DataFrame({"id": ["a", "b"], "prompt": ["p", "q"], "response": ["x", "yy"]})
    models = lambda: {"n": RuleRewardModel(f"rule:{f}:n")}  # noqa: E731
    first = score_frame(df, models(), cache_dir=tmp_path / "cache", progress=False)["n"]
    assert first.tolist() == [1.0, 1.0]
    assert score_frame(df, models(), cache_dir=tmp_path / "cache", progress=False)["n"].tolist() == [1.0, 1.0]
    _write(f, "def n(prompts, completions, **kw):\n    return [float(len(c)) for c in completions]\n")
    assert score_frame(df, models(), cache_dir=tmp_path / "cache", progress=False)["n"].tolist() == [1.0, 2.0]
    # and a built-in's key does not move between loads
    assert RuleRewardModel("rule:vader").fingerprint == RuleRewardModel("rule:vader").fingerprint
    assert RuleRewardModel("rule:target_length:5").fingerprint != RuleRewardModel("rule:target_length:6").fingerprint


@pytest.mark.parametrize("spec, match", [
    ("rule:nope", r"not a built-in rule \(length_words, .*\) nor rule:module:function"),
    ("rule:{d}/missing.py:f", r"cannot load the file '.*missing.py' \(FileNotFoundError"),
    ("rule:{d}/ok.py:absent", r"has no function 'absent' \(it has \['ok'\]\)"),
    ("rule:{d}/broken.py:f", r"cannot load the file .* \(SyntaxError"),
    ("rule:no_such_module_xyz:f", r"cannot load the module .* \(ModuleNotFoundError"),
    ("rule:target_length", r"rule:target_length needs a whole number of words > 0, e.g. rule:target_length:60"),
    ("rule:target_length:-3", r"needs a whole number"),
    ("rule:vader:2", r"rule:vader takes no argument"),
])
def test_bad_names_are_one_line(tmp_path, spec, match):
    (tmp_path / "ok.py").write_text("def ok(prompts, completions, **kw):\n    return [0.0] * len(completions)\n")
    (tmp_path / "broken.py").write_text("def f(:\n")
    with pytest.raises(ConfigError, match=match) as e:
        locate(spec.format(d=tmp_path), RewardsConfig())
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("body, match", [
    ("raise RuntimeError('boom')", r"rewards.models.x: .* raised RuntimeError: boom; fix the function"),
    ("return [1.0]", r"rewards.models.x: .* returned 1 scores for 2 completions; return one float per completion"),
    ("return ['a', 'b']", r"rewards.models.x: .* returned list .*, not a list of numbers"),
    ("return 3.0", r"rewards.models.x: .* returned float .*, not a list of numbers"),
    ("return [1.0, float('nan')]", r"rewards.models.x: .* scored completion 1 as nan \(1 not finite\)"),
])
def test_bad_outputs_are_one_line(tmp_path, body, match):
    f = _write(tmp_path / "bad.py", f"def f(prompts, completions, **kw):\n    {body}\n")
    models = load_reward_models(RewardsConfig(models={"x": f"rule:{f}:f"}, dir=str(tmp_path / "rw")))
    with pytest.raises(ConfigError, match=match) as e:
        models["x"].score(["p", "q"], ["a", "b"])
    assert "\n" not in str(e.value)


def _cli(*args, cwd):
    return subprocess.run([sys.executable, "-m", "paretohqd", *map(str, args)], cwd=cwd, capture_output=True,
                          text=True, timeout=300, env={**os.environ, "PYTHONPATH": os.getcwd()})


def test_score_and_select_through_the_cli(tmp_path):
    rng = np.random.default_rng(0)
    words = "alpha beta gamma delta bread bake good bad happy sad".split()
    n = 40
    df = pd.DataFrame({"id": [f"s{i}" for i in range(n)], "prompt": ["\n\nHuman: how to bake bread"] * n,
                       "response": [" ".join(rng.choice(words, rng.integers(1, 30))) for _ in range(n)]})
    df.to_parquet(tmp_path / "data.parquet")
    (tmp_path / "mine.py").write_text("def brevity(prompts, completions, **kw):\n"
                                      "    return [-len(c.split()) for c in completions]\n")
    models = f"length=rule:length_words,div=rule:diversity,short=rule:{tmp_path}/mine.py:brevity"
    res = _cli("score", tmp_path / "data.parquet", "-r", models, "-o", tmp_path / "scores.parquet",
               "--set", f"rewards.dir={tmp_path / 'rw'}", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    scores = pd.read_parquet(tmp_path / "scores.parquet")
    assert (scores["length"] == -scores["short"]).all()
    assert scores["length"].tolist() == [float(len(r.split())) for r in df["response"]]
    res = _cli("select", tmp_path / "scores.parquet", "--objectives", "length,div", "--preferences", "3", "--k", "4",
               "--out", tmp_path / "sel", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert len(pd.read_parquet(tmp_path / "sel" / "selection.parquet")) > 0

    res = _cli("score", tmp_path / "data.parquet", "-r", f"x=rule:{tmp_path}/mine.py:nope", "-o", tmp_path / "s2.parquet",
               "--set", f"rewards.dir={tmp_path / 'rw'}", cwd=tmp_path)
    assert res.returncode == 2 and res.stderr.count("\n") == 1, res.stderr
    assert "has no function 'nope' (it has ['brevity'])" in res.stderr
    assert not (tmp_path / "s2.parquet").exists()


def test_tiny_run_with_rule_objectives(tmp_path, chaos_assets):
    """The whole pipeline (score, select, both stages, evaluate, report) on rule objectives alone:
    no reward model is loaded or trained."""
    from paretohqd.testing import tiny_run_overrides

    from paretohqd import pipeline
    from paretohqd.config import load_config

    sets = tiny_run_overrides(chaos_assets, tmp_path / "runs", tmp_path / "rewards", "rules")
    sets = [s for s in sets if not s.startswith("rewards.models=")]
    sets.append("rewards.models={length: 'rule:length_words', sentiment: 'rule:vader'}")
    root = pipeline.run(load_config("configs/demo.yaml", sets))
    scores = pd.read_parquet(root / "data" / "scores.parquet")
    assert scores["length"].tolist() == [float(len(r.split())) for r in scores["response"]]
    assert (root / "report.json").exists()
    assert not (tmp_path / "rewards" / "minilm-helpful").exists()
