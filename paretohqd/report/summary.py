"""A run's evaluation as numbers: per-model mean rewards with intervals, hypervolume under three
normalisations (data box, z-scores, fronts box) with spacing and sparsity, collapse, compute.

Reads only files (`evaluate/*`, `manifest.json`), so several runs can be compared without
their configs. Everything here ends up in report.json.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from paretohqd.evaluate.collapse import REASONS
from paretohqd.evaluate.front import (LEVEL, ZSCORE_REF, bootstrap_hypervolume, bootstrap_mean, front_metrics,
                                      front_spread, fronts_box, percentile_interval, zscore_stats)
from paretohqd.io import InputError, read_table
from paretohqd.pareto.metrics import pareto_subset
from paretohqd.runfolder.manifest import read_manifest

_EVAL_FILES = ("meta.json", "bounds.json", "disjoint.json", "responses.parquet")


def load_run(root: str | Path) -> dict:
    """A run folder's evaluation files: meta, bounds, disjoint, responses, manifest.

    Raises:
        InputError: an evaluation file is missing (evaluate has not finished), or the
            responses lack an objective column.
    """
    root = Path(root)
    missing = [f for f in _EVAL_FILES if not (root / "evaluate" / f).exists()]
    if missing:
        raise InputError(f"{root / 'evaluate'} lacks {missing}; run `paretohqd evaluate {root}` first")
    run = {name.split(".")[0]: json.loads((root / "evaluate" / name).read_text()) for name in _EVAL_FILES[:3]}
    run["root"] = root
    run["responses"] = read_table(root / "evaluate" / "responses.parquet")
    lacking = [o for o in run["meta"]["objectives"] if o not in run["responses"].columns]
    if lacking:
        raise InputError(f"{root / 'evaluate' / 'responses.parquet'} lacks objective column(s) {lacking}")
    interpolation = root / "evaluate" / "interpolation.json"  # only after `paretohqd evaluate RUN --interpolation`
    run["interpolation"] = json.loads(interpolation.read_text()) if interpolation.exists() else None
    # only after `paretohqd judge RUN` (or evaluate.judge.enabled): one summary per reference and judge
    run["judge"] = [json.loads(p.read_text()) for p in sorted((root / "judge").glob("vs-*.json"))]
    run["manifest"] = read_manifest(root)  # with the records of steps run as units (`manifest.d/`)
    return run


def compute_hours(manifest: dict) -> dict:
    """Wall and device hours per stage and in total, from a run manifest.

    A step's stage is its name up to the first "/" or space ("stage1/pref-03 w=..." -> stage1).
    `training` sums every stage except `evaluate`: the method's own cost.

    Examples:
        >>> h = compute_hours({"steps": {"prepare": {"wall_s": 360, "device_s": 360},
        ...     "stage1/pref-00 w=[1, 0]": {"wall_s": 1800, "device_s": 3600},
        ...     "stage1/pref-01 w=[0, 1]": {"wall_s": 1800, "device_s": 3600},
        ...     "evaluate": {"wall_s": 720, "device_s": 720}}})
        >>> h["stages"]["stage1"], h["training"]["device_h"], h["total"]["wall_h"]
        ({'wall_h': 1.0, 'device_h': 2.0, 'steps': 2}, 2.1, 1.3)
    """
    stages: dict[str, dict] = {}
    for name, step in manifest.get("steps", {}).items():
        stage = name.split("/")[0].split(" ")[0]
        s = stages.setdefault(stage, {"wall_h": 0.0, "device_h": 0.0, "steps": 0})
        s["wall_h"] += step["wall_s"] / 3600
        s["device_h"] += step["device_s"] / 3600
        s["steps"] += 1

    def total(keep) -> dict:
        return {k: round(sum(s[k] for n, s in stages.items() if keep(n)), 6) for k in ("wall_h", "device_h")}

    devices = sorted({str(s.get("device")) for s in manifest.get("steps", {}).values()})
    return {"stages": {n: {**{k: round(v, 6) for k, v in s.items() if k != "steps"}, "steps": s["steps"]}
                       for n, s in stages.items()},
            "training": total(lambda n: n != "evaluate"), "total": total(lambda n: True), "devices": devices}


def model_rows(df: pd.DataFrame, names: list[str], *, n_resamples: int, seed: int) -> list[dict]:
    """Per model (in file order): mean reward per objective with its bootstrap interval, collapse.

    Args:
        df: scored responses (columns model, preference_index, weights, collapse, and `names`).
        names: objective columns.
        n_resamples: bootstrap resamples.
        seed: bootstrap seed (one for every model: the same resample indices, common random numbers).
    """
    rows = []
    for model, g in df.groupby("model", sort=False):
        mean, lo, hi = bootstrap_mean(g[names].to_numpy(), n_resamples=n_resamples, seed=seed)  # (M,) each
        reasons = g["collapse"].dropna().value_counts()
        weights = g["weights"].iloc[0]
        rows.append({
            "model": model, "preference_index": int(g["preference_index"].iloc[0]),
            "weights": None if weights is None else [float(w) for w in weights], "n": len(g),
            "mean": dict(zip(names, mean.tolist())),
            "ci95": {o: [a, b] for o, a, b in zip(names, _nan_none(lo), _nan_none(hi))},
            "collapse_rate": float(g["collapse"].notna().mean()),
            "collapse_reasons": {r: int(reasons.get(r, 0)) for r in REASONS},
        })
    return rows


def prompt_matrix(run: dict) -> tuple[list[str], np.ndarray]:
    """The preference models' rewards per held-out prompt: prompt ids (sorted) and (P, n, M) values
    (the mean over a model's answers to one prompt; models in file order).

    Raises:
        InputError: a preference model did not answer every prompt the others answered.
    """
    names = run["meta"]["objectives"]
    df = run["responses"]
    df = df[df["preference_index"] >= 0]
    models = list(dict.fromkeys(df["model"]))
    per_prompt = df.groupby(["model", "prompt_id"], sort=True)[names].mean()
    prompts = sorted(df["prompt_id"].unique())
    grid = pd.MultiIndex.from_product([models, prompts], names=["model", "prompt_id"])
    full = per_prompt.reindex(grid)
    if full.isna().any().any():
        gaps = full[full.isna().any(axis=1)].index[:3].tolist()
        raise InputError(f"{run['root'] / 'evaluate' / 'responses.parquet'}: some preference models lack answers "
                         f"to prompts the others answered, e.g. (model, prompt_id) {gaps}")
    return prompts, full.to_numpy().reshape(len(models), len(prompts), len(names))


def summarise_run(run: dict, *, lower: list[float], upper: list[float]) -> dict:
    """The report entry of one run (method) without its hypervolumes (`measure` adds them): per
    model means with intervals and collapse, `normalised_mean` in the data box `lower`/`upper`,
    the Pareto subset, collapse, compute, disjointness.

    Raises:
        InputError: the run has no preference model answers.
    """
    meta, df = run["meta"], run["responses"]
    names = meta["objectives"]
    rows = model_rows(df, names, n_resamples=meta["bootstrap"], seed=meta["seed"])
    prefs = [r for r in rows if r["preference_index"] >= 0]
    base = [r for r in rows if r["preference_index"] < 0]
    if not prefs:
        raise InputError(f"{run['root']}: evaluate/responses.parquet holds no preference model answers")
    span = np.asarray(upper) - np.asarray(lower)  # (M,)
    for r in rows:
        r["normalised_mean"] = dict(zip(names, ((np.array([r["mean"][o] for o in names]) - lower) / span).tolist()))
    for r, f in zip(prefs, pareto_subset(_points(prefs, names))):
        r["on_front"] = bool(f)
    pref_df = df[df["preference_index"] >= 0]
    return {
        "method": run["root"].name, "folder": str(run["root"]), "description": meta["description"],
        "objectives": names, "prompts": meta["prompts"],
        "pareto_models": [r["model"] for r in prefs if r["on_front"]],
        "collapse_rate": float(pref_df["collapse"].notna().mean()),
        "collapse_reasons": {r: int((pref_df["collapse"] == r).sum()) for r in REASONS},
        "models": prefs, "base": base[0] if base else None, "compute": compute_hours(run["manifest"]),
        "interpolation": run.get("interpolation"),
        "judge": run.get("judge") or [],
        "protocol": meta.get("protocol"),  # absent in runs evaluated before it was recorded
        "disjointness": run["disjoint"], "bootstrap": {"resamples": meta["bootstrap"], "seed": meta["seed"],
                                                       "level": LEVEL},
    }


def normalisations(first: dict, entries: list[dict]) -> dict[str, dict]:
    """The three normalisations every run of a report is measured in, each with its box and
    reference point (normalised and raw); see `paretohqd.evaluate.front` and the README.

    - data: the first run's `evaluate/bounds.json` box (min/max of its scored training data),
      reference at its nadir;
    - zscore: the first run's training mean/std (from bounds.json; computed from its `source` if
      an older bounds.json lacks them), reference z = `ZSCORE_REF` in every objective;
    - fronts: min/max over the mean points of every model in `entries`, the base models included
      (they are the common starting point, and a method's worst model may sit below it), reference
      at its nadir. Where every model has the same mean in an objective the box is flat: the
      entry then holds `unavailable` (the reason) and no box.

    Raises:
        InputError: an older bounds.json without mean/std whose scores file is missing or
            holds a constant objective.
    """
    bounds, root = first["bounds"], first["root"]
    names = bounds["objectives"]
    if "mean" in bounds and "std" in bounds:
        mean, std, stats_from = np.asarray(bounds["mean"]), np.asarray(bounds["std"]), root / "evaluate" / "bounds.json"
    else:  # bounds.json written before it stored them: the same statistics from the same data
        stats_from = root / bounds["source"]
        try:
            mean, std = zscore_stats(read_table(stats_from)[names].to_numpy())
        except ValueError as e:
            raise InputError(f"{stats_from}: {e}") from None
    m = len(names)
    out = {
        "data": {"what": "min-max by the scored training data; reference = its nadir (per-objective minimum)",
                 "lower": list(bounds["lower"]), "upper": list(bounds["upper"]),
                 "ref_normalised": list(bounds["ref_normalised"]), "ref_raw": list(bounds["ref_raw"]),
                 "from": str(root / bounds["source"])},
        "zscore": {"what": f"z = (r - mean) / std of the scored training data (RiC); reference z = {ZSCORE_REF:g} "
                           "in every objective (one sd below the training mean)",
                   "mean": mean.tolist(), "std": std.tolist(), "lower": mean.tolist(), "upper": (mean + std).tolist(),
                   "ref_normalised": [ZSCORE_REF] * m, "ref_raw": (mean + ZSCORE_REF * std).tolist(),
                   "from": str(stats_from)},
    }
    points = np.array([[r["mean"][o] for o in names] for e in entries
                       for r in e["models"] + ([e["base"]] if e["base"] is not None else [])])  # (N, M)
    what = ("min-max over the mean points of every model compared here (all runs, base models included); "
            "reference = their nadir")
    try:
        lo, hi = fronts_box(points)
    except ValueError as e:
        out["fronts"] = {"what": what, "unavailable": str(e), "points": len(points)}
    else:
        out["fronts"] = {"what": what, "lower": lo.tolist(), "upper": hi.tolist(), "ref_normalised": [0.0] * m,
                         "ref_raw": lo.tolist(), "points": len(points)}
    return out


def measure(entries: list[dict], runs: list[dict], norms: dict[str, dict]) -> None:
    """Add to each entry (in place) `hypervolumes`: per normalisation the hypervolume of its
    preference models' mean points, its prompt-bootstrap interval, for every run after the first
    the difference to the first run with a paired interval (`vs_first`; None where the runs
    answered other prompts or used other seeds), and the front's spacing and sparsity in that
    normalisation; None for an unavailable normalisation. The base model gets its one-point
    hypervolumes. The data normalisation's numbers also fill the primary keys `hypervolume`,
    `hypervolume_ci95`, `hypervolume_vs_first` (later runs) and the base's `hypervolume`.
    """
    names = runs[0]["meta"]["objectives"]
    draws = []  # per run: prompt ids, (B,) bootstrap hypervolumes per normalisation
    for e, run in zip(entries, runs):
        prompts, values = prompt_matrix(run)  # (P, n, M)
        meta, points = run["meta"], _points(e["models"], names)  # (P, M)
        e["hypervolumes"], boots = {}, {}
        if e["base"] is not None:
            e["base"]["hypervolumes"] = {}
        for name, nz in norms.items():
            if "lower" not in nz:
                e["hypervolumes"][name] = None
                if e["base"] is not None:
                    e["base"]["hypervolumes"][name] = None
                continue
            box = {"lower": nz["lower"], "upper": nz["upper"], "ref": nz["ref_normalised"]}
            boots[name] = bootstrap_hypervolume(values, **box, n_resamples=meta["bootstrap"], seed=meta["seed"])
            sp, sq = front_spread(points, lower=nz["lower"], upper=nz["upper"])
            e["hypervolumes"][name] = {"hypervolume": front_metrics(points, **box)[0],
                                       "ci95": percentile_interval(boots[name]), "vs_first": None,
                                       "spacing": _nan_none([sp])[0], "sparsity": _nan_none([sq])[0]}
            if e["base"] is not None:
                e["base"]["hypervolumes"][name] = front_metrics(_points([e["base"]], names), **box)[0]
        draws.append((prompts, boots))
    (ref_prompts, ref_boots), first = draws[0], entries[0]
    for e, run, (prompts, boots) in zip(entries[1:], runs[1:], draws[1:]):
        paired = prompts == ref_prompts and run["meta"]["seed"] == runs[0]["meta"]["seed"]
        for name, boot in boots.items():
            if paired and len(boot) == len(ref_boots[name]):
                e["hypervolumes"][name]["vs_first"] = {
                    "vs": first["method"],
                    "delta": e["hypervolumes"][name]["hypervolume"] - first["hypervolumes"][name]["hypervolume"],
                    "ci95": percentile_interval(boot - ref_boots[name])}
    for i, e in enumerate(entries):
        data = e["hypervolumes"]["data"]
        e["hypervolume"], e["hypervolume_ci95"] = data["hypervolume"], data["ci95"]
        if i:
            e["hypervolume_vs_first"] = data["vs_first"]
        if e["base"] is not None:
            e["base"]["hypervolume"] = e["base"]["hypervolumes"]["data"]


def summarise_runs(runs: list[dict]) -> tuple[list[dict], dict[str, dict]]:
    """The report entries of runs (methods) and the normalisations they are measured in (all in
    the first run's data box and training statistics, and in the box of all their models)."""
    bounds = runs[0]["bounds"]
    entries = [summarise_run(r, lower=bounds["lower"], upper=bounds["upper"]) for r in runs]
    norms = normalisations(runs[0], entries)
    measure(entries, runs, norms)
    return entries, norms


def _points(rows: list[dict], names: list[str]) -> np.ndarray:
    return np.array([[r["mean"][o] for o in names] for r in rows], dtype=np.float64)  # (P, M)


def _nan_none(x: np.ndarray) -> list[float | None]:
    # JSON has no NaN: an interval that was not computed (bootstrap 0) is null
    return [None if np.isnan(v) else float(v) for v in x]
