"""The select stage: `select_table` on frames, and `paretohqd select` end to end on small files."""

import json
import math

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from paretohqd.cli import app
from paretohqd.config import ConfigError, SelectConfig, load_config
from paretohqd.io import InputError
from paretohqd.pareto.layers import nondominated_layers
from paretohqd.pareto.preferences import simplex_grid
from paretohqd.select import COLUMNS, select_table
from paretohqd.pareto.rays import ray_distances

OBJ = ["helpful", "harmless"]


def scores_frame(n=400, m=2, seed=0):
    rng = np.random.default_rng(seed)
    x = np.round(rng.random((n, m)), 2)  # rounded: ties happen
    names = OBJ if m == 2 else [f"r{j}" for j in range(m)]
    df = pd.DataFrame(x, columns=names)
    df.insert(0, "id", [f"s{i:04d}" for i in range(n)])
    df["prompt"] = "p"  # extra columns are ignored
    return df, names


def test_select_table_rows_pool_and_layers():
    df, names = scores_frame()
    cfg = SelectConfig(preferences=11, k=7, layers="auto", pool_size=60)
    sel, info = select_table(df, names, cfg)
    assert list(sel.columns) == COLUMNS
    assert len(sel) == 11 * 7
    assert sel.groupby("preference_index").size().tolist() == [7] * 11
    layer = nondominated_layers(df[names].to_numpy())  # the oracle-tested full ranking
    counts = np.cumsum(np.bincount(layer))
    used = int(np.searchsorted(counts, 60)) + 1
    assert info["layers_used"] == used and info["pool_size"] == counts[used - 1]
    by_id = dict(zip(df["id"], layer))
    assert all(by_id[i] < used for i in sel["id"])  # selection within the pool
    assert sel["layer"].tolist() == [by_id[i] for i in sel["id"]]
    for p, group in sel.groupby("preference_index"):
        assert group["weights"].iloc[0] == pytest.approx(simplex_grid(2, 11)[p].tolist())
        assert (np.diff(group["distance"]) >= -1e-12).all()
    assert info["lower"] == df[names].min().tolist() and info["upper"] == df[names].max().tolist()
    assert info["method"] == "direction" and info["whole_pool"] is False and info["k_used"] == 7


def test_select_table_uses_given_bounds_and_scalarised_method():
    df, names = scores_frame(seed=1)
    lower, upper = [-1.0, -1.0], [2.0, 2.0]
    cfg = SelectConfig(preferences=[[0.3, 0.7]], k=5, layers=2, method="scalarised")
    sel, info = select_table(df, names, cfg, lower=lower, upper=upper)
    assert info["lower"] == lower and info["method"] == "scalarised"
    picked = df.set_index("id").loc[sel["id"], names].to_numpy()
    z = (picked - lower) / (np.array(upper) - lower)
    np.testing.assert_allclose(sel["distance"], ray_distances(z, [[0.3, 0.7]])[0])


def test_select_table_affine_invariant_and_input_untouched():
    df, names = scores_frame(seed=2)
    before = df.copy()
    cfg = SelectConfig(preferences=5, k=4, layers=3)
    sel, _ = select_table(df, names, cfg)
    pd.testing.assert_frame_equal(df, before)
    scaled = df.assign(helpful=df["helpful"] * 4.0 - 3.0, harmless=df["harmless"] * 0.5 + 10.0)
    sel2, _ = select_table(scaled, names, cfg)
    assert sel2["id"].tolist() == sel["id"].tolist()


def test_pool_smaller_than_k():
    df, names = scores_frame(n=200)
    cfg = SelectConfig(preferences=3, k=50, layers=1)
    pool = int((nondominated_layers(df[names].to_numpy()) == 0).sum())
    assert pool < 50
    msg = rf"the Pareto pool \(top 1 layer\(s\)\) holds {pool} of 200 points, fewer than k=50; use more layers"
    with pytest.raises(InputError, match=msg):
        select_table(df, names, cfg)
    with pytest.raises(InputError, match=r"pool \(layers=auto, pool_size=10\) holds"):
        select_table(df, names, SelectConfig(k=50, pool_size=10))
    sel, info = select_table(df, names, cfg.model_copy(update={"allow_small_pool": True}))
    assert info["whole_pool"] is True and info["k_used"] == pool and len(sel) == 3 * pool


def test_select_table_errors_name_file_and_column():
    df, names = scores_frame(n=30)
    cfg = SelectConfig(preferences=3, k=2, layers=2)
    with pytest.raises(InputError, match=r"^scores.csv: no `id` column"):
        select_table(df.drop(columns="id"), names, cfg, source="scores.csv")
    with pytest.raises(InputError, match=r"no objective column `humour` \(columns: \['id'"):
        select_table(df, ["helpful", "humour"], cfg)
    with pytest.raises(InputError, match="objective column `prompt` is not numeric"):
        select_table(df, ["helpful", "prompt"], cfg)
    with pytest.raises(InputError, match=r"objectives repeat a column"):
        select_table(df, ["helpful", "helpful"], cfg)
    with pytest.raises(InputError, match="no objectives given"):
        select_table(df, [], cfg)
    bad = df.copy()
    bad.loc[3, "harmless"] = np.nan
    with pytest.raises(InputError, match=r"`harmless` has 1 NaN/inf value\(s\), e.g. id \['s0003'\]"):
        select_table(bad, names, cfg)
    with pytest.raises(ConfigError, match="select.preferences: 1 bad preference"):
        select_table(df, names, SelectConfig(preferences=[[0.2, 0.3, 0.5]], k=2))
    with pytest.raises(InputError, match=r"'upper' is below 'lower'"):
        select_table(df, names, cfg, lower=[0, 0], upper=[-1, 1])


# --- the command ---------------------------------------------------------------------------

runner = CliRunner()


def invoke(*args):
    return runner.invoke(app, ["select", *map(str, args)])


def test_cli_end_to_end_csv(tmp_path):
    df, names = scores_frame(n=300)
    df.to_csv(tmp_path / "scores.csv", index=False)
    out = tmp_path / "sel"
    r = invoke(tmp_path / "scores.csv", "--objectives", "helpful,harmless", "--preferences", 11,
               "--k", 5, "--layers", "auto", "--out", out)
    assert r.exit_code == 0, r.output
    assert "pool:" in r.output and "layers=auto" in r.output and "selected 5 x 11 preferences" in r.output
    sel = pd.read_parquet(out / "selection.parquet")
    assert list(sel.columns) == COLUMNS and len(sel) == 55
    assert (out / "selection.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (out / "config.yaml").exists() and (out / "selection.json").exists()
    assert not list(out.glob("*.tmp"))  # atomic writes left nothing behind
    # Same call through the library gives the same rows.
    expected, _ = select_table(df, names, SelectConfig(preferences=11, k=5))
    assert sel["id"].tolist() == expected["id"].tolist()


@pytest.mark.parametrize("method, angle, hole, ends", [
    ("direction", 0.0, math.sqrt(0.45**2 + 0.55**2), "w = (0, 1) and (0.5, 0.5)"),
    ("scalarised", 15.0, math.sqrt(2), "w = (0, 1) and (0.5, 0.5)")])
def test_cli_prints_calibration_and_largest_hole(tmp_path, method, angle, hole, ends):
    """Three nondominated points (1, 0), (0, 1), (.45, .45) in the data box [0, 1]^2, k = 1, preferences
    (0, 1), (.5, .5), (1, 0). Rays pick (0, 1), (.45, .45), (1, 0): each on its ray, 0 deg, and steps
    of sqrt(.45^2 + .55^2) = 0.7106 between neighbours. The weighted sum gives (.5, .5) an end point
    ((1, 0) and (0, 1) score .5 > .45; the tie goes to the first row): 45 deg off its diagonal ray,
    mean 15, and a hole of sqrt 2 from (0, 1) to (1, 0)."""
    pd.DataFrame({"id": ["a", "b", "c"], "helpful": [1.0, 0.0, 0.45], "harmless": [0.0, 1.0, 0.45]}).to_csv(
        tmp_path / "scores.csv", index=False)
    r = invoke(tmp_path / "scores.csv", "--objectives", "helpful,harmless", "--preferences", 3, "--k", 1,
               "--layers", 1, "--method", method, "--out", tmp_path / "o")
    assert r.exit_code == 0, r.output
    assert (f"selected sets in the data box: calibration {angle:.1f} deg (mean angle at the ideal point between each "
            f"preference's ray and its set's mean); largest hole {hole:.3f} (normalised step between the sets of "
            f"{ends})") in r.output
    info = json.loads((tmp_path / "o" / "selection.json").read_text())
    assert info["calibration_deg"] == pytest.approx(angle, abs=1e-9) and info["largest_hole"] == pytest.approx(hole)
    assert info["largest_hole_between"] == [0, 1] and len(info["calibration_per_preference_deg"]) == 3


def test_cli_three_objectives_parquet_preferences_file_and_config(tmp_path):
    df, names = scores_frame(n=300, m=3)
    df.to_parquet(tmp_path / "scores.parquet")
    (tmp_path / "prefs.yaml").write_text("- [0.2, 0.3, 0.5]\n- [1, 0, 0]\n")
    (tmp_path / "cfg.yaml").write_text("select:\n  k: 9\n  layers: 2\n")
    out = tmp_path / "sel3"
    r = invoke(tmp_path / "scores.parquet", "--objectives", ",".join(names), "--preferences",
               tmp_path / "prefs.yaml", "--config", tmp_path / "cfg.yaml", "--set", "select.k=4",
               "--method", "scalarised", "--out", out)
    assert r.exit_code == 0, r.output
    assert "top 2 layer(s) (layers=2)" in r.output and "by scalarised" in r.output
    sel = pd.read_parquet(out / "selection.parquet")
    assert len(sel) == 2 * 4  # --set beats the config file
    assert sel["weights"].iloc[0].tolist() == [0.2, 0.3, 0.5]
    assert (out / "selection.png").stat().st_size > 1000


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--objectives", "helpful,nope"], "no objective column `nope`"),
        (["--objectives", "helpful,harmless", "--layers", "abc"], "select.layers"),
        (["--objectives", "helpful,harmless", "--k", "0"], "select.k"),
        (["--objectives", "helpful,harmless", "--preferences", "missing.yaml"], "--preferences: missing.yaml: cannot read"),
        (["--objectives", "helpful,harmless", "--preferences", "3", "--method", "best"], "select.method"),
        (["--objectives", "helpful,harmless,x"], "no objective column `x`"),
        (["--objectives", "helpful,harmless", "--layers", "1", "--k", "60"], "fewer than k=60"),
    ],
)
def test_cli_bad_input_exits_2_with_one_clear_error(tmp_path, extra, message):
    df, _ = scores_frame(n=200)
    df.to_csv(tmp_path / "scores.csv", index=False)
    r = invoke(tmp_path / "scores.csv", *extra, "--out", tmp_path / "o")
    assert r.exit_code == 2, r.output
    assert message in r.output and "Traceback" not in r.output
    assert not (tmp_path / "o" / "selection.parquet").exists()


def test_cli_allow_small_pool_and_missing_file(tmp_path):
    df, _ = scores_frame(n=200)
    df.to_csv(tmp_path / "scores.csv", index=False)
    r = invoke(tmp_path / "scores.csv", "--objectives", "helpful,harmless", "--layers", 1, "--k", 60,
               "--preferences", 2, "--allow-small-pool", "--out", tmp_path / "o")
    assert r.exit_code == 0, r.output
    assert "took the whole pool" in r.output
    r = invoke(tmp_path / "none.csv", "--objectives", "a,b", "--out", tmp_path / "o")
    assert r.exit_code == 2 and "none.csv: no such file" in r.output


def test_cli_help_lists_select():
    assert "select" in runner.invoke(app, ["--help"]).output
    assert "--allow-small-pool" in runner.invoke(app, ["select", "--help"]).output


def test_full_data_draws_what_the_budget_reaches_from_everything(tmp_path):
    """The `full-data` ablation: per preference, steps x batch_size ids drawn without replacement
    from the whole table (seeded per preference), or the whole table when it is smaller."""
    from paretohqd.io import write_parquet
    from paretohqd.select import write_selection

    ids = [f"s{i:03d}" for i in range(100)]
    scores = pd.DataFrame({"id": ids, "helpful": np.linspace(0, 1, 100), "harmless": np.linspace(1, 0, 100)})
    write_parquet(scores, tmp_path / "scores.parquet")
    cfg = load_config(None, ["select.method=random", "select.preferences=3"])
    write_selection(cfg, tmp_path / "scores.parquet", tmp_path / "a", k=1, random_n=5 * 4)
    sel = pd.read_parquet(tmp_path / "a" / "selection.parquet")
    assert sel.groupby("preference_index")["id"].nunique().tolist() == [20, 20, 20]
    assert set(sel["id"]) <= set(ids) and (sel["layer"] == -1).all()
    firsts = [set(g["id"]) for _, g in sel.groupby("preference_index")]
    assert firsts[0] != firsts[1]  # each preference its own draw
    write_selection(cfg, tmp_path / "scores.parquet", tmp_path / "b", k=1, random_n=50 * 4)  # 200 > 100 rows
    assert pd.read_parquet(tmp_path / "b" / "selection.parquet").groupby("preference_index").size().eq(100).all()


def test_nadir_front_draws_the_rays_from_the_fronts_nadir():
    """`select.nadir: front` puts r_min at the first layer's nadir: the selection is then exactly
    the one `select_table` makes when given that point as `lower`, and it moves the rays."""
    rng = np.random.default_rng(4)
    pts = rng.normal(size=(400, 2)) * [1.0, 3.0]
    scores = pd.DataFrame({"id": [f"s{i}" for i in range(400)], "a": pts[:, 0], "b": pts[:, 1]})
    front = pts[nondominated_layers(pts) == 0]
    cfg = SelectConfig(preferences=5, k=10, layers=3)
    data_sel, data_info = select_table(scores, ["a", "b"], cfg)
    sel, info = select_table(scores, ["a", "b"], cfg.model_copy(update={"nadir": "front"}))
    assert info["nadir"] == "front" and info["lower"] == front.min(axis=0).tolist()
    assert data_info["lower"] == pts.min(axis=0).tolist()
    explicit, _ = select_table(scores, ["a", "b"], cfg, lower=front.min(axis=0))
    pd.testing.assert_frame_equal(sel, explicit)
    assert not sel["id"].equals(data_sel["id"])  # the nadir moves the rays, so the choice
