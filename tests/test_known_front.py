"""The known-front benchmark: its indicators by hand, a bent front on which the scalarised
selection leaves a hole and the rays do not, the script end to end, and the shipped configs'
budgets and objectives."""

import sys

import numpy as np
import pandas as pd
import pytest

from benchmarks import known_front as kf
from paretohqd.budget import estimate_seconds
from paretohqd.config import RewardsConfig, load_config
from paretohqd.rewards import locate



def test_indicators_by_hand():
    prefs = np.array([[0.0, 1.0], [0.5, 0.5], [1.0, 0.0]])
    # means on the compromise points W = w (normalised box): each on its own ray, calibration 0
    assert kf.indicators(prefs, prefs) == (pytest.approx(np.sqrt(0.5)), pytest.approx(0.0, abs=1e-6),
                                           pytest.approx(np.sqrt(2)))  # reach: end to end
    # the middle preference's mean at the first one's: its direction (-1, 0) is 45 degrees off (-1, -1)
    means = prefs.copy()
    means[1] = [0.0, 1.0]
    assert kf.indicators(means, prefs) == (pytest.approx(np.sqrt(2)), pytest.approx(15.0),  # (0 + 45 + 0) / 3
                                           pytest.approx(np.sqrt(2)))
    assert kf.indicators(np.full((3, 2), 0.5), prefs)[2] == 0.0  # every preference the same point: no reach


def _bent(n=600, seed=0) -> pd.DataFrame:
    """A front y = (1 - x)^3 (bending toward the origin) over a cloud of dominated points."""
    rng = np.random.default_rng(seed)
    x = rng.random(n)
    y = (1 - x) ** 3 * np.where(rng.random(n) < 0.5, 1.0, rng.random(n))
    return pd.DataFrame({"id": [f"s{i}" for i in range(n)], "a": x, "b": y})


def test_scalarised_leaves_a_hole_on_a_bent_front():
    scores = _bent()
    prefs, lo, hi, pool, chosen = kf.selections(scores, ["a", "b"], preferences=11, k=10, seed=0)
    z = (scores[["a", "b"]].to_numpy() - lo) / (hi - lo)  # (N, 2)
    hole = {name: kf.indicators(z[rows].mean(axis=1), prefs)[0] for name, rows in chosen.items()}
    assert hole["scalarised"] > 2 * hole["rays"], hole
    assert kf.indicators(z[chosen["rays"]].mean(axis=1), prefs)[1] < kf.indicators(z[chosen["random"]].mean(axis=1), prefs)[1]


def test_script_end_to_end(tmp_path, monkeypatch, capsys):
    scores = _bent(200)
    scores.to_parquet(tmp_path / "scores.parquet")
    # a finished compare's run beside NAME-compare: evaluation answers of 3 preference models
    run = tmp_path / "x-paretohqd" / "evaluate"
    run.mkdir(parents=True)
    (tmp_path / "x-compare").mkdir()
    prefs = [[0.0, 1.0], [0.5, 0.5], [1.0, 0.0]]
    pd.DataFrame({"preference_index": [-1, 0, 0, 1, 1, 2, 2], "prompt_id": ["p0", "p0", "p1", "p0", "p1", "p0", "p1"],
                  "weights": [None, prefs[0], prefs[0], prefs[1], prefs[1], prefs[2], prefs[2]],
                  "a": [0.5, 0.0, 0.0, 0.5, 0.5, 1.0, 1.0], "b": [0.5, 1.0, 1.0, 0.5, 0.5, 0.0, 0.0]}
                 ).to_parquet(run / "responses.parquet")
    argv = ["known_front.py", str(tmp_path / "scores.parquet"), "--objectives", "a,b", "--preferences", "5",
            "--k", "10", "--plot", str(tmp_path / "kf.png"), "--compare", str(tmp_path / "x-compare")]
    monkeypatch.setattr(sys, "argv", argv)
    assert kf.main() == 0
    out = capsys.readouterr().out
    assert "hull share" in out and "scalarised" in out and (tmp_path / "kf.png").stat().st_size > 0
    row = next(line for line in out.splitlines() if line.startswith("paretohqd"))
    lo, hi = scores[["a", "b"]].min().to_numpy(), scores[["a", "b"]].max().to_numpy()
    means = (np.array([[0.0, 1.0], [0.5, 0.5], [1.0, 0.0]]) - lo) / (hi - lo)
    hole, calib, far = kf.indicators(means, np.array(prefs))
    assert row.split()[1:3] == ["hole", f"{hole:.3f}"] and f"calibration {calib:.1f}" in row and f"reach {far:.3f}" in row
    assert "200 prompts" not in row and "(2 prompts)" in row  # the prompts every run answered


@pytest.mark.parametrize("path, objectives", [("configs/known-front.yaml", ["length", "diversity"]),
                                              ("configs/known-front-3obj.yaml", ["length", "diversity", "sentiment"])])
def test_known_front_configs(path, objectives):
    cfg = load_config(path)
    assert list(cfg.rewards.models) == objectives
    assert all(locate(name, RewardsConfig())[0] == "rule" for name in cfg.rewards.models.values())
    assert sorted(cfg.compare.methods) == sorted(["paretohqd", "scalarised", "stage1-only", "full-data", "ric",
                                                  "rewarded-soups"])
    # sized for 2 CPU cores: the control question (ParetoHqD against the weighted sum) within ~2.5 h
    # by the cost model (it measured 1 h 40 min for both at 200 prompts, docs/results/known-front-*)
    est = estimate_seconds(cfg)
    assert est["paretohqd"] + est["scalarised"] <= 150 * 60


def test_hh_control_config():
    """The HH control run (docs/results/hh-control-*): the demo's judges and grid, both selections,
    at the known-front training budget, sized for 2 CPU cores (it measured 78 min for both)."""
    cfg, kf_cfg, demo = (load_config(f"configs/{n}.yaml") for n in ("hh-control", "known-front", "demo"))
    assert cfg.rewards.models == demo.rewards.models and cfg.select.preferences == demo.select.preferences
    assert cfg.compare.methods == ["paretohqd", "scalarised"] and cfg.evaluate.prompts >= 200
    assert (cfg.train.steps, cfg.train.lr, cfg.select.k) == (kf_cfg.train.steps, kf_cfg.train.lr, kf_cfg.select.k)
    est = estimate_seconds(cfg)
    assert est["paretohqd"] + est["scalarised"] <= 120 * 60


def test_compare_rows_pair_the_prompt_draws(tmp_path):
    """Two runs with the same answers differ by exactly 0 in every paired draw (unpaired draws would
    not), and a run whose models all answer alike has a larger hole than one stepping along."""
    prefs = [[0.0, 1.0], [0.5, 0.5], [1.0, 0.0]]
    rng = np.random.default_rng(0)

    def answers(means):  # 20 prompts, noise around each preference's mean point
        rows = [{"preference_index": i, "prompt_id": f"p{j}", "weights": prefs[i],
                 "a": means[i][0] + rng.normal(0, 0.05), "b": means[i][1] + rng.normal(0, 0.05)}
                for i in range(3) for j in range(20)]
        return pd.DataFrame(rows)

    stepping = answers([[0.0, 1.0], [0.5, 0.5], [1.0, 0.0]])
    for name, df in (("paretohqd", stepping), ("b", stepping), ("c", answers([[0.0, 1.0]] * 2 + [[1.0, 0.0]]))):
        (tmp_path / f"x-{name}" / "evaluate").mkdir(parents=True)
        df.to_parquet(tmp_path / f"x-{name}" / "evaluate" / "responses.parquet")
    rows = {r[0]: r for r in kf.compare_rows(tmp_path / "x-compare", ["a", "b"], np.zeros(2), np.ones(2), boot=200)}
    assert list(rows) == ["paretohqd", "b", "c"]  # ParetoHqD first, whatever its name's place: the differences' base
    _, point_b, _, diff_b, dci_b, n = rows["b"]
    assert n == 20 and np.allclose(diff_b, 0) and np.allclose(dci_b, 0)
    _, point_c, _, diff_c, dci_c, _ = rows["c"]
    assert np.allclose(diff_c, point_c - rows["paretohqd"][1]) and diff_c[0] > 0.5 and dci_c[0, 0] > 0  # the hole, with evidence
