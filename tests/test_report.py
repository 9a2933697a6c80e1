"""The report from evaluated run folders built by hand (no model): numbers, files, overlay, CLI, and
the hypervolume under three normalisations with spacing/sparsity, down to compare.json/.md."""

import io
import json
import math

import numpy as np
import pandas as pd
import pytest
from rich.console import Console
from typer.testing import CliRunner

from paretohqd.cli import app
from paretohqd.compare import comparison_rows, write_comparison
from paretohqd.config import Config
from paretohqd.io import InputError, write_json, write_parquet
from paretohqd.report import build_report, write_report
from paretohqd.report.evidence import delta_cell, value_cell
from paretohqd.report.plot import plot_fronts

PNG = b"\x89PNG\r\n\x1a\n"


def evaluated_run(root, *, objectives=("helpful", "harmless"), means=None, base=(0.0, 0.0), scale=1.0,
                  bootstrap=200, collapse_every=0):
    """A run folder as evaluate leaves it. Each model answers 20 prompts with rewards
    mean +- 1 (alternating), so its mean is exactly `means[i]`."""
    names = list(objectives)
    m = len(names)
    means = means if means is not None else [[1.0, 3.0], [2.0, 2.0], [3.0, 1.0]]
    rng = np.random.default_rng(0)
    cloud = rng.uniform(0, 4 * scale, size=(300, m))  # (300, M)
    cloud[0], cloud[1] = 0.0, 4.0 * scale  # bounds exactly [0, 4 * scale] in every objective
    write_parquet(pd.DataFrame(cloud, columns=names).assign(id=[f"s{i}" for i in range(300)]),
                  root / "data" / "scores.parquet")
    rows = []
    models = [("base", -1, None, base)] + [(f"pref-{i:02d}", i, [1 - i / 2, i / 2][:m] + [0.0] * (m - 2), mu)
                                           for i, mu in enumerate(means)]
    for model, idx, w, mu in models:
        for j in range(20):
            sign = 1 if j % 2 else -1
            row = {"id": f"{model}-{j}", "model": model, "preference_index": idx, "weights": w,
                   "prompt_id": f"p{j:02d}", "prompt": f"\n\nHuman: question number {j}?",
                   "response": f"An answer from {model} to question {j}, in several words.",
                   "collapse": "too_short" if collapse_every and j % collapse_every == 0 else None}
            row.update({o: (mu[k] + sign) * scale for k, o in enumerate(names)})
            rows.append(row)
    ev = root / "evaluate"
    write_parquet(pd.DataFrame(rows), ev / "responses.parquet")
    write_json({"objectives": names, "lower": [0.0] * m, "upper": [4.0 * scale] * m, "source": "data/scores.parquet",
                "n_samples": 300, "ref_normalised": [0.0] * m, "ref_raw": [0.0] * m}, ev / "bounds.json")
    write_json({"heldout_prompts": 20, "training_prompts": {"data/train.parquet": 300}, "overlap": 0,
                "hash": "sha256"}, ev / "disjoint.json")
    write_json({"method": root.name, "description": "ParetoHqD (test)", "objectives": names,
                "preferences": [w for _, i, w, _ in models if i >= 0], "seed": 0, "bootstrap": bootstrap,
                "samples": 2, "prompts": 20, "policy": "tiny", "generate": {}}, ev / "meta.json")
    write_json({"steps": {"prepare": {"wall_s": 360, "device_s": 360, "device": "cpu"},
                          "stage1/pref-00 w=[1.0, 0.0]": {"wall_s": 1800, "device_s": 3600, "device": "cpu"},
                          "evaluate": {"wall_s": 720, "device_s": 720, "device": "cpu"}}}, root / "manifest.json")
    return root


def test_report_numbers_for_one_run(tmp_path):
    """Means (1, 3), (2, 2), (3, 1) in the box [0, 4]^2 normalise to (.25, .75), (.5, .5), (.75, .25):
    staircase .75 * .25 + .5 * .25 + .25 * .25 = 0.375. The base model (0, 0) is the nadir: 0."""
    run = evaluated_run(tmp_path / "a", collapse_every=4)
    report, _ = build_report([run])
    (m,) = report["methods"]
    assert m["hypervolume"] == pytest.approx(0.375)
    assert report["hypervolume"] == {"a": pytest.approx(0.375)}
    assert m["base"]["hypervolume"] == 0.0 and m["base"]["model"] == "base"
    assert [r["model"] for r in m["models"]] == ["pref-00", "pref-01", "pref-02"]
    assert m["models"][1]["mean"] == {"helpful": pytest.approx(2.0), "harmless": pytest.approx(2.0)}
    assert m["models"][1]["normalised_mean"]["helpful"] == pytest.approx(0.5)
    for r in m["models"]:
        for o in ("helpful", "harmless"):
            lo, hi = r["ci95"][o]
            assert lo < r["mean"][o] < hi and 0.6 < hi - lo < 1.2  # sd 1, n 20: 2 * 1.96 / sqrt(20) ~ 0.88
    assert m["pareto_models"] == ["pref-00", "pref-01", "pref-02"]
    assert m["collapse_rate"] == pytest.approx(5 / 20)  # j = 0, 4, 8, 12, 16 of every model
    assert m["collapse_reasons"]["too_short"] == 15
    assert m["compute"]["training"] == {"wall_h": pytest.approx(0.6), "device_h": pytest.approx(1.1)}
    assert m["compute"]["total"]["wall_h"] == pytest.approx(0.8)
    assert report["reference"]["raw"] == [0.0, 0.0] and report["bounds"]["upper"] == [4.0, 4.0]
    assert m["disjointness"]["overlap"] == 0


def test_report_files_and_printed_table(tmp_path, capsys):
    run = evaluated_run(tmp_path / "a", collapse_every=2)
    path = write_report([run])
    assert path == run / "report.json"
    assert json.loads(path.read_text())["methods"][0]["hypervolume"] == pytest.approx(0.375)
    assert (run / "front.png").read_bytes()[:8] == PNG
    md = (run / "report.md").read_text()
    assert "| method | what | hypervolume [95%] | vs first [95%] | collapse rate | compute (device h) |" in md
    lo, hi = json.loads(path.read_text())["methods"][0]["hypervolume_ci95"]
    assert f"| a | ParetoHqD (test) | 0.3750 [{lo:.4f}, {hi:.4f}] | - | 50.0% | 1.100 |" in md
    assert "| a | pref-01 | (0.5, 0.5) | 2.000 [" in md
    assert "reference point = normalised nadir (0, 0) = raw (0, 0)" in md
    assert "![front](front.png)" in md
    # sample responses: the first 2 prompts of each of the 4 models
    assert md.count("**Prompt**") == 8 and "An answer from pref-02 to question 1" in md
    assert "An answer from pref-02 to question 2," not in md
    assert "### a · pref-01 · weights (0.5, 0.5)" in md
    assert md.count("collapse: **too_short**") == 4 and "nan" not in md  # question 0 flagged, 1 clean
    out = capsys.readouterr().out
    assert "ParetoHqD evaluation" in out and "0.3750" in out


def test_overlay_uses_first_runs_bounds(tmp_path):
    """Run b's rewards are twice a's but b stores a box twice as large; measured in a's box
    [0, 4]^2 its means (2, 6), (4, 4), (6, 2) normalise to (.5, 1.5), (1, 1), (1.5, .5):
    1.5 * .5 + 1 * .5 + .5 * .5 = 1.5, not the 0.375 of its own box."""
    a = evaluated_run(tmp_path / "a")
    b = evaluated_run(tmp_path / "b", scale=2.0)
    path = write_report([a, b])
    assert path == tmp_path / "compare-a-b" / "report.json"
    report = json.loads(path.read_text())
    assert report["hypervolume"] == {"a": pytest.approx(0.375), "b": pytest.approx(1.5)}
    assert report["bounds_from"] == str(a / "data" / "scores.parquet")
    md = (tmp_path / "compare-a-b" / "report.md").read_text()
    assert "the first run's box, used for every run here" in md and "| b |" in md
    assert (tmp_path / "compare-a-b" / "front.png").read_bytes()[:8] == PNG


def test_hypervolume_intervals_and_the_paired_difference(tmp_path):
    """b's models beat a's by 0.5 in some objective on every prompt (the same +-1 noise pattern), so
    b's hypervolume is higher in every paired resample (0.421875 - 0.375 = 0.046875 at the means),
    though the two unpaired intervals overlap. A copy of a differs from a by exactly 0."""
    a = evaluated_run(tmp_path / "a")
    b = evaluated_run(tmp_path / "b", means=[[1.5, 3.0], [2.0, 2.5], [3.0, 1.0]])
    copy = evaluated_run(tmp_path / "copy")
    report, _ = build_report([a, b, copy])
    ma, mb, mc = report["methods"]
    assert "hypervolume_vs_first" not in ma
    assert ma["hypervolume_ci95"][0] < 0.375 < ma["hypervolume_ci95"][1]
    assert mb["hypervolume"] == pytest.approx(0.421875)
    assert mb["hypervolume_ci95"][0] < ma["hypervolume_ci95"][1]  # unpaired: overlapping
    d = mb["hypervolume_vs_first"]
    assert d["vs"] == "a" and d["delta"] == pytest.approx(0.046875) and 0 < d["ci95"][0] <= d["ci95"][1]
    assert mc["hypervolume_vs_first"] == {"vs": "a", "delta": 0.0, "ci95": [0.0, 0.0]}
    # other held-out prompts: no pairing, no difference interval
    df = pd.read_parquet(b / "evaluate" / "responses.parquet")
    write_parquet(df.assign(prompt_id=df["prompt_id"] + "x"), b / "evaluate" / "responses.parquet")
    assert build_report([a, b])[0]["methods"][1]["hypervolume_vs_first"] is None


def test_three_objectives_give_pairwise_panels(tmp_path):
    import matplotlib.image

    run = evaluated_run(tmp_path / "a", objectives=("helpful", "harmless", "humor"),
                        means=[[1, 3, 2], [2, 2, 2], [3, 1, 2]], base=(0, 0, 0), bootstrap=0)
    report, _ = build_report([run])
    assert report["methods"][0]["models"][0]["ci95"]["humor"] == [None, None]  # no bootstrap, no interval
    write_report([run])
    img = matplotlib.image.imread(run / "front.png")
    assert 1.4 * img.shape[0] < img.shape[1] < 2 * img.shape[0]  # three panels side by side, each zoomed below


def test_plot_fronts_direct(tmp_path):
    m = {"label": "x", "points": [[1, 2], [2, 1]], "lo": [[0.5, 1.5], [1.5, 0.5]], "hi": [[1.5, 2.5], [2.5, 1.5]],
         "weights": [[0, 1], [1, 0]], "base": [0.5, 0.5]}
    path = plot_fronts([m], np.random.default_rng(0).random((50, 2)) * 3, objectives=["a", "b"],
                       lower=[0, 0], upper=[3, 3], path=tmp_path / "f.png")
    assert path.read_bytes()[:8] == PNG and not list(tmp_path.glob(".*tmp"))


def test_report_errors(tmp_path):
    with pytest.raises(InputError, match="no run folders given"):
        build_report([])
    (tmp_path / "new").mkdir()
    with pytest.raises(InputError, match=r"lacks \['meta.json', 'bounds.json', 'disjoint.json', "
                                         r"'responses.parquet'\]; run `paretohqd evaluate"):
        build_report([tmp_path / "new"])
    a = evaluated_run(tmp_path / "a")
    c = evaluated_run(tmp_path / "c", objectives=("helpful", "humor"))
    with pytest.raises(InputError, match="must share their objectives"):
        build_report([a, c])
    df = pd.read_parquet(a / "evaluate" / "responses.parquet")
    write_parquet(df.drop(columns="harmless"), a / "evaluate" / "responses.parquet")
    with pytest.raises(InputError, match=r"lacks objective column\(s\) \['harmless'\]"):
        build_report([a])
    write_parquet(df[df["model"] == "base"], a / "evaluate" / "responses.parquet")
    with pytest.raises(InputError, match="holds no preference model answers"):
        build_report([a])
    write_parquet(df[df["id"] != "pref-01-3"], a / "evaluate" / "responses.parquet")
    with pytest.raises(InputError, match=r"responses.parquet: some preference models lack answers to prompts "
                                         r"the others answered, e.g. \(model, prompt_id\) \[\('pref-01', 'p03'\)\]"):
        build_report([a])


def test_report_cli(tmp_path):
    a = evaluated_run(tmp_path / "a")
    b = evaluated_run(tmp_path / "b", scale=2.0)
    res = CliRunner().invoke(app, ["report", str(a), str(b), "--out", str(tmp_path / "cmp")])
    assert res.exit_code == 0, res.output
    assert (tmp_path / "cmp" / "report.md").exists() and "ParetoHqD evaluation" in res.output
    res = CliRunner().invoke(app, ["report", str(tmp_path / "missing")])
    assert res.exit_code == 2 and "run `paretohqd evaluate" in res.output


def test_cli_command_map_has_evaluate_and_report():
    assert {"run", "select", "evaluate", "report"} <= {c.name for c in app.registered_commands}


# Three normalisations ------------------------------------------------------------------------------

def staircase(points, lower, upper, ref):
    """Oracle, 2-D only: normalise by (lower, upper), then the area the points dominate above `ref`
    by sweeping them right to left (no moocore)."""
    z = [[(p[k] - lower[k]) / (upper[k] - lower[k]) - ref[k] for k in range(2)] for p in points]
    area, top = 0.0, 0.0
    for x, y in sorted((q for q in z if q[0] > 0 and q[1] > 0), key=lambda q: -q[0]):
        if y > top:
            area, top = area + x * (y - top), y
    return area


def _means(m):
    return [[r["mean"][o] for o in ("helpful", "harmless")] for r in m["models"]]


def test_three_hypervolumes_against_independent_recomputations(tmp_path):
    """a: means (1, 3), (2, 2), (3, 1); b: (1.5, 3), (2, 2.5), (3, 1); both bases (1.5, 1.5).
    fronts box = min/max of those 8 points, [1, 3]^2, reference its nadir (1, 1): a normalises to
    (0, 1), (.5, .5), (1, 0), volume .25; b to (.25, 1), (.5, .75), (1, 0), .5 * .75 + .25 * .25 =
    .4375; the base (.25, .25), .0625. zscore: mean/std of a's scores.parquet recomputed with
    pandas, reference z = -1. Spread in the data box [0, 4]^2: a (.25, .75), (.5, .5), (.75, .25)
    is evenly spaced (spacing 0), sparsity 2 * (2 * .25^2) / 2 = .125; b's nearest L1 distances
    .25, .25, .625 give spacing sqrt((2 * .125^2 + .25^2) / 2) = .2165, its sorted gaps (.125, .25)
    and (.375, .125) sparsity .234375 / 2 = .1171875."""
    a = evaluated_run(tmp_path / "a", base=(1.5, 1.5))
    b = evaluated_run(tmp_path / "b", means=[[1.5, 3.0], [2.0, 2.5], [3.0, 1.0]], base=(1.5, 1.5))
    report, _ = build_report([a, b])
    ma, mb = report["methods"]
    norms = report["normalisations"]
    assert list(norms) == ["data", "zscore", "fronts"]

    # data: today's number, still the primary key
    assert ma["hypervolumes"]["data"]["hypervolume"] == ma["hypervolume"] == pytest.approx(0.375)
    assert ma["hypervolumes"]["data"]["ci95"] == ma["hypervolume_ci95"]
    assert mb["hypervolumes"]["data"]["vs_first"] == mb["hypervolume_vs_first"]
    assert norms["data"]["ref_raw"] == [0.0, 0.0] and norms["data"]["lower"] == [0.0, 0.0]

    # zscore: population mean/std of the training scores, reference one sd below the mean
    scores = pd.read_parquet(a / "data" / "scores.parquet")[["helpful", "harmless"]]
    mean, std = scores.mean().to_numpy(), scores.std(ddof=0).to_numpy()
    z = norms["zscore"]
    np.testing.assert_allclose(z["mean"], mean, rtol=1e-12)
    np.testing.assert_allclose(z["std"], std, rtol=1e-12)
    assert z["ref_normalised"] == [-1.0, -1.0]
    np.testing.assert_allclose(z["ref_raw"], mean - std, rtol=1e-12)
    for m in (ma, mb):
        want = staircase(_means(m), mean, mean + std, [-1.0, -1.0])
        assert m["hypervolumes"]["zscore"]["hypervolume"] == pytest.approx(want, rel=1e-9)
        assert want > 0.5  # the cloud is uniform on [0, 4]: mean ~2, sd ~1.15, every point counts
    assert ma["base"]["hypervolumes"]["zscore"] == pytest.approx(
        staircase([[1.5, 1.5]], mean, mean + std, [-1.0, -1.0]), rel=1e-9)

    # fronts: the box of every model point compared, base models included
    f = norms["fronts"]
    assert f["lower"] == [1.0, 1.0] and f["upper"] == [3.0, 3.0] and f["ref_raw"] == [1.0, 1.0] and f["points"] == 8
    assert ma["hypervolumes"]["fronts"]["hypervolume"] == pytest.approx(0.25)
    assert mb["hypervolumes"]["fronts"]["hypervolume"] == pytest.approx(0.4375)
    assert ma["base"]["hypervolumes"]["fronts"] == pytest.approx(0.0625)
    for m in (ma, mb):
        assert m["hypervolumes"]["fronts"]["hypervolume"] == pytest.approx(
            staircase(_means(m), [1, 1], [3, 3], [0, 0]))
    assert report["hypervolumes"]["fronts"] == {"a": pytest.approx(0.25), "b": pytest.approx(0.4375)}

    # every normalisation: an interval around the value, and a paired difference to the first run
    for name in norms:
        h, ha = mb["hypervolumes"][name], ma["hypervolumes"][name]
        assert h["ci95"][0] <= h["hypervolume"] <= h["ci95"][1]
        assert ha["vs_first"] is None
        d = h["vs_first"]
        assert d["vs"] == "a" and d["delta"] == pytest.approx(h["hypervolume"] - ha["hypervolume"])
        assert d["ci95"][0] <= d["ci95"][1]

    # spread of each front in the data box (and the fronts box scales it by 4 / 2)
    assert ma["hypervolumes"]["data"]["spacing"] == pytest.approx(0.0, abs=1e-12)
    assert ma["hypervolumes"]["data"]["sparsity"] == pytest.approx(0.125)
    assert mb["hypervolumes"]["data"]["spacing"] == pytest.approx(np.sqrt(0.046875))
    assert mb["hypervolumes"]["data"]["sparsity"] == pytest.approx(0.1171875)
    assert mb["hypervolumes"]["fronts"]["spacing"] == pytest.approx(2 * np.sqrt(0.046875))
    assert mb["hypervolumes"]["fronts"]["sparsity"] == pytest.approx(4 * 0.1171875)


def test_zscore_uses_the_stored_statistics(tmp_path):
    """A bounds.json with mean (2, 2) and sd (1, 1): a's means z-score to (-1, 1), (0, 0), (1, -1);
    from the reference (-1, -1) they dominate 0 + 1 * 1 + 0 = 1."""
    a = evaluated_run(tmp_path / "a")
    path = a / "evaluate" / "bounds.json"
    write_json({**json.loads(path.read_text()), "mean": [2.0, 2.0], "std": [1.0, 1.0]}, path)
    report, _ = build_report([a])
    z = report["normalisations"]["zscore"]
    assert z["ref_raw"] == [1.0, 1.0] and z["from"] == str(path)
    assert report["methods"][0]["hypervolumes"]["zscore"]["hypervolume"] == pytest.approx(1.0)


def test_report_md_shows_every_normalisation_with_its_reference(tmp_path):

    a = evaluated_run(tmp_path / "a", base=(1.5, 1.5))
    b = evaluated_run(tmp_path / "b", means=[[1.5, 3.0], [2.0, 2.5], [3.0, 1.0]], base=(1.5, 1.5))
    console = Console(width=250, record=True, file=io.StringIO())
    path = write_report([a, b], console=console)
    report = json.loads(path.read_text())
    md = (path.parent / "report.md").read_text()
    zref = "(" + ", ".join(f"{x:.4g}" for x in report["normalisations"]["zscore"]["ref_raw"]) + ")"
    assert "## Hypervolume under three normalisations" in md
    assert (f"| method | HV data, ref (0, 0) [95%] | data: vs first [95%] | HV zscore, ref {zref} [95%] | "
            f"zscore: vs first [95%] | HV fronts, ref (1, 1) [95%] | fronts: vs first [95%] | spacing (data box) | "
            "sparsity (data box) |") in md
    assert "reference point = normalised (0, 0) = raw (0, 0)." in md  # data
    assert f"reference point = normalised (-1, -1) = raw {zref}." in md  # zscore
    assert "helpful [1, 3], harmless [1, 3], 8 model points; reference point = normalised (0, 0) = raw (1, 1)." in md
    hb = report["methods"][1]["hypervolumes"]
    f = hb["fronts"]
    row = (f"| b | {hb['data']['hypervolume']:.4f} [{hb['data']['ci95'][0]:.4f}, {hb['data']['ci95'][1]:.4f}] | "
           f"{hb['data']['vs_first']['delta']:+.4f} [")
    assert row in md
    assert f"| 0.4375 [{f['ci95'][0]:.4f}, {f['ci95'][1]:.4f}] | +0.1875 [" in md
    assert "| 0.2165 | 0.1172 |" in md  # b's spacing and sparsity in the data box
    assert "| a: base | 0.1406 | - |" in md and "| 0.0625 | - | - | - |" in md  # (.375, .375) in [0, 4]^2
    out = console.export_text()
    assert "hypervolume under three normalisations" in out and "HV fronts, ref (1, 1) [95%]" in out
    assert "0.4375 [" in out and "reference point = normalised (-1, -1)" in out


def test_one_model_gives_no_spread_and_a_flat_fronts_box(tmp_path):
    """One preference model whose mean equals the base's: the fronts box is flat in both objectives
    (no volume to measure: not computed, shown as '-'), and one point has no spacing or sparsity."""
    a = evaluated_run(tmp_path / "a", means=[[2.0, 2.0]], base=(2.0, 2.0))
    path = write_report([a])
    report = json.loads(path.read_text())
    (m,) = report["methods"]
    assert "same mean in objective column(s) [0, 1]" in report["normalisations"]["fronts"]["unavailable"]
    assert m["hypervolumes"]["fronts"] is None and m["base"]["hypervolumes"]["fronts"] is None
    assert report["hypervolumes"]["fronts"] == {"a": None}
    assert m["hypervolumes"]["data"]["hypervolume"] == pytest.approx(0.25)  # (.5, .5) in [0, 4]^2
    assert m["hypervolumes"]["data"]["spacing"] is None and m["hypervolumes"]["data"]["sparsity"] is None
    md = (a / "report.md").read_text()
    assert "Not computed: every model has the same mean" in md and "HV fronts, ref n/a [95%]" in md
    assert "| a | 0.2500 [" in md and "| - | - | - | - |" in md


def test_compare_carries_the_three_hypervolumes(tmp_path):
    a = evaluated_run(tmp_path / "x-paretohqd", base=(1.5, 1.5))
    b = evaluated_run(tmp_path / "x-ric", means=[[1.5, 3.0], [2.0, 2.5], [3.0, 1.0]], base=(1.5, 1.5))
    path = write_comparison(Config(name="x", runs_dir=str(tmp_path)), {"paretohqd": a, "ric": b})
    out = path.parent
    report = json.loads((out / "report.json").read_text())
    saved = json.loads(path.read_text())
    assert saved["normalisations"] == report["normalisations"]
    rows = saved["methods"]
    assert rows == json.loads(json.dumps(comparison_rows(["paretohqd", "ric"], report)))
    for r, m in zip(rows, report["methods"]):
        assert r["hypervolumes"] == m["hypervolumes"]
    assert rows[1]["hypervolumes"]["fronts"]["hypervolume"] == pytest.approx(0.4375)
    md = (out / "compare.md").read_text()
    zref = "(" + ", ".join(f"{x:.4g}" for x in report["normalisations"]["zscore"]["ref_raw"]) + ")"
    assert (f"| method | what | HV data, ref (0, 0) [95%] | HV - first [95%] | collapse rate | compute (device h) | "
            f"compute vs ParetoHqD | HV zscore, ref {zref} [95%] | HV fronts, ref (1, 1) [95%] | spacing (data box) | "
            "sparsity (data box) |") in md
    f = rows[1]["hypervolumes"]["fronts"]
    assert f"| 1.00x | " in md and f"| 0.4375 [{f['ci95'][0]:.4f}, {f['ci95'][1]:.4f}] | 0.2165 | 0.1172 |" in md
    assert "reference point = normalised (-1, -1)" in md
    # controllability: in compare.json, two columns of the main table, and compare.md's table with the
    # paired differences to the first method. Fronts box [1, 3]^2; neighbours by w_1: ric's means
    # (.25, 1), (.5, .75), (1, 0) step .3536 then sqrt(.25 + .5625) = .9014; paretohqd's .7071 twice
    assert [r["control"] for r in rows] == [m["control"] for m in report["methods"]]
    assert [r["change_vs_base"] for r in rows] == [m["change_vs_base"] for m in report["methods"]]
    hole = rows[1]["control"]["largest_hole"]
    assert hole["value"] == pytest.approx(math.sqrt(0.8125))
    assert hole["vs_first"]["delta"] == pytest.approx(math.sqrt(0.8125) - math.sqrt(0.5))
    assert "| sparsity (data box) | calibration, deg (fronts box) [95%] | largest hole (fronts box) [95%] |" in md
    assert f"| {value_cell(hole, 3)} |" in md and "## Controllability and distance to the best front" in md
    assert f"| {delta_cell(hole['vs_first'], 3)} |" in md and "## Change from the base model" in md


def test_controllability_and_change_from_base_by_hand(tmp_path):
    """Weights (1, 0), (.5, .5), (0, 1). Run a spreads evenly, (3, 1), (2, 2), (1, 3); run b leaves a
    hole: its middle preference lands on the first one's point (3, 1). Run c is a with its base at
    (2, 2). Fronts box: [1, 3]^2 (the points and the bases (1.5, 1.5), (2, 2)), ideal (1, 1) normalised.

    calibration: a's points (1, 0), (.5, .5), (0, 1) lie on their rays, 0 deg; b's middle point (1, 0)
    sits 45 deg off the diagonal: mean 15. From the base (.25, .25): b's middle change (.75, -.25)
    against the direction (.25, .25) to W = (.5, .5), acos(2 / sqrt(20)) = 63.43 deg, mean 21.14.
    tau: a 1; b's objective 1 reads 3, 3, 1 over w_1 1, .5, 0: one tie, two agreeing pairs,
    2 / sqrt(3 * 2) = 0.8165 (objective 2 the same). Largest hole: a's steps 0.7071; b's from
    (1, 0) to (0, 1), sqrt 2, between pref-01 and pref-02. Reach: both span (1, 0) to (0, 1), sqrt 2
    (b's hole is its whole reach). Reference front: the 3 distinct points
    of a; b misses (.5, .5) by .5 in one objective: IGD+ .5 / 3, epsilon+ .5.
    Change from base: a's means average (2, 2), its base (1.5, 1.5): +0.5 each; b's (7/3, 5/3):
    +0.833, +0.167. Rewards are mean +- 1 with the same sign for every model on a prompt, so each
    resample moves models and base alike and the intervals shrink to the point: up. c's change is
    0 with the interval [0, 0]: no evidence, and so are its differences to a."""
    even, hole = [[3.0, 1.0], [2.0, 2.0], [1.0, 3.0]], [[3.0, 1.0], [3.0, 1.0], [1.0, 3.0]]
    a = evaluated_run(tmp_path / "a", means=even, base=(1.5, 1.5))
    b = evaluated_run(tmp_path / "b", means=hole, base=(1.5, 1.5))
    c = evaluated_run(tmp_path / "c", means=even, base=(2.0, 2.0))
    console = Console(width=250, record=True, file=io.StringIO())
    path = write_report([a, b, c], console=console, html=False)
    report = json.loads(path.read_text())
    ca, cb, cc = (m["control"] for m in report["methods"])
    assert ca["box"] == "fronts" and report["normalisations"]["fronts"]["lower"] == [1.0, 1.0]
    assert ca["calibration_deg"]["value"] == pytest.approx(0.0, abs=1e-9)
    assert cb["calibration_deg"]["value"] == pytest.approx(15.0)
    assert cb["angles_deg"] == {"pref-00": pytest.approx(0.0, abs=1e-9), "pref-01": pytest.approx(45.0),
                                "pref-02": pytest.approx(0.0, abs=1e-9)}
    assert cb["calibration_from_base_deg"]["value"] == pytest.approx(math.degrees(math.acos(2 / math.sqrt(20))) / 3)
    assert ca["order_tau"]["value"] == 1.0 and cb["order_tau"]["value"] == pytest.approx(2 / math.sqrt(6))
    assert cb["order_tau_per_objective"] == {"helpful": pytest.approx(2 / math.sqrt(6)),
                                             "harmless": pytest.approx(2 / math.sqrt(6))}
    assert ca["largest_hole"]["value"] == pytest.approx(math.sqrt(0.5))
    assert cb["largest_hole"]["value"] == pytest.approx(math.sqrt(2)) and cb["largest_hole_between"] == ["pref-01", "pref-02"]
    assert ca["reach"]["value"] == pytest.approx(math.sqrt(2)) == cb["reach"]["value"]
    assert ca["igd_plus"]["value"] == 0.0 and cb["igd_plus"]["value"] == pytest.approx(0.5 / 3)
    assert ca["epsilon_additive"]["value"] == 0.0 and cb["epsilon_additive"]["value"] == pytest.approx(0.5)
    d = cb["largest_hole"]["vs_first"]
    assert d["vs"] == "a" and d["delta"] == pytest.approx(math.sqrt(2) - math.sqrt(0.5)) and d["ci95"][0] > 0
    assert ca["calibration_deg"]["vs_first"] is None and cc["igd_plus"]["vs_first"]["ci95"] == [0.0, 0.0]
    lo, hi = cb["calibration_deg"]["ci95"]
    assert lo <= 15.0 <= hi
    ch = [m["change_vs_base"] for m in report["methods"]]
    assert ch[0] == {"helpful": {"delta": pytest.approx(0.5), "ci95": [pytest.approx(0.5), pytest.approx(0.5)]},
                     "harmless": {"delta": pytest.approx(0.5), "ci95": [pytest.approx(0.5), pytest.approx(0.5)]}}
    assert ch[1]["helpful"]["delta"] == pytest.approx(5 / 6) and ch[1]["harmless"]["delta"] == pytest.approx(1 / 6)
    assert ch[2]["helpful"]["delta"] == pytest.approx(0.0, abs=1e-12)
    md = (path.parent / "report.md").read_text()
    assert "## Controllability and distance to the best front" in md and "Measured in the fronts box: helpful [1, 3]" in md
    assert "| b | 15.0 [" in md and "| +15.0 [+" in md
    assert "| a | up +0.500 [+0.500, +0.500] | up +0.500 [+0.500, +0.500] |" in md
    assert "| c | +0.000 [+0.000, +0.000] no evidence | +0.000 [+0.000, +0.000] no evidence |" in md
    assert "| c | 0.0 [0.0, 12.3] | +0.0 [+0.0, +0.0] no evidence | 0.0 [" in md  # its base is W of (.5, .5): left out
    out = console.export_text()
    assert "controllability in the fronts box" in out
    assert ("b vs its base model (mean over its preference models): helpful up +0.833 [+0.833, +0.833]; "
            "harmless up +0.167 [+0.167, +0.167]") in out
    assert "c vs its base model (mean over its preference models): helpful +0.000 [+0.000, +0.000] no evidence" in out


def test_a_real_run_reports_controllability_and_change_from_base(finished_tiny_run):
    """The finished tiny run (real models): every indicator present, the change from the base
    recomputed from the answers, and report.md and the printed summary saying it."""
    root, _ = finished_tiny_run
    report = json.loads((root / "report.json").read_text())
    (m,) = report["methods"]
    names = report["bounds"]["objectives"]
    assert set(m["control"]) >= {"calibration_deg", "calibration_from_base_deg", "order_tau", "largest_hole",
                                 "igd_plus", "epsilon_additive", "angles_deg", "largest_hole_between"}
    assert m["control"]["box"] == "fronts" and 0 <= m["control"]["calibration_deg"]["value"] <= 180
    assert m["control"]["igd_plus"]["value"] >= 0 and len(m["control"]["angles_deg"]) == len(m["models"])
    df = pd.read_parquet(root / "evaluate" / "responses.parquet")
    tuned, base = df[df["preference_index"] >= 0], df[df["preference_index"] < 0]
    for o in names:
        expected = tuned.groupby("model")[o].mean().mean() - base[o].mean()  # every model answers every prompt
        assert m["change_vs_base"][o]["delta"] == pytest.approx(expected)
        lo, hi = m["change_vs_base"][o]["ci95"]
        assert lo <= hi
    md = (root / "report.md").read_text()
    assert "## Controllability and distance to the best front" in md and "## Change from the base model" in md


def test_report_md_shows_answers_and_prompts_as_text_never_as_markup():
    """A model's answer (or a prompt) holding HTML or markdown is shown as written: rendered by a
    CommonMark renderer (raw HTML on, as GitHub's), none of it becomes a tag."""
    from markdown_it import MarkdownIt

    from paretohqd.report.render import samples_md

    answer = "<script>alert(1)</script>\n# Title\n```\n<img src=x onerror=alert(1)> **bold** [link](http://x)"
    prompt = "\n\nHuman: <b>hi</b> # not a heading *x* [a](http://y)\n\nAssistant:"
    df = pd.DataFrame({"model": ["pref-00"], "weights": [[0.5, 0.5]], "prompt_id": ["p1"], "prompt": [prompt],
                       "response": [answer], "helpful": [1.0], "harmless": [0.0], "collapse": [None]})
    md = "\n".join(samples_md({"bounds": {"objectives": ["helpful", "harmless"]}, "methods": [{"method": "a"}]},
                              {"a": df}))
    html = MarkdownIt("commonmark").render(md)
    for markup in ("<script", "<img", "<b>", "<strong>bold", "<em>x", "<a href", "<h1"):
        assert markup not in html, (markup, html)
    assert "&lt;script&gt;alert(1)&lt;/script&gt;\n# Title\n```\n&lt;img" in html  # the answer, as written
    assert "&lt;b&gt;hi&lt;/b&gt; # not a heading *x* [a](http://y)" in html
