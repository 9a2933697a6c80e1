"""A run's evaluation as numbers: per-model mean rewards with intervals, hypervolume, collapse, compute.

Reads only files (`evaluate/*`, `manifest.json`), so several runs can be compared without
their configs. Everything here ends up in report.json.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from paretohqd.evaluate.collapse import REASONS
from paretohqd.evaluate.front import LEVEL, bootstrap_hypervolume, bootstrap_mean, front_metrics, percentile_interval
from paretohqd.io import InputError, read_table

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
    manifest = root / "manifest.json"
    run["manifest"] = json.loads(manifest.read_text()) if manifest.exists() else {"steps": {}}
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


def hypervolume_resamples(run: dict, *, lower: list[float], upper: list[float]) -> tuple[list[str], np.ndarray]:
    """Prompt ids and (B,) bootstrap hypervolumes of a run (B = the run's `evaluate.bootstrap`)."""
    prompts, values = prompt_matrix(run)
    meta = run["meta"]
    return prompts, bootstrap_hypervolume(values, lower=lower, upper=upper, n_resamples=meta["bootstrap"],
                                          seed=meta["seed"])


def summarise_run(run: dict, *, lower: list[float], upper: list[float]) -> tuple[dict, list[str], np.ndarray]:
    """The report entry of one run (method) in the box `lower`/`upper`, and the run's held-out
    prompt ids and (B,) bootstrap hypervolumes (for paired differences between runs).

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
    points = np.array([[r["mean"][o] for o in names] for r in prefs])  # (P, M)
    hv, on_front = front_metrics(points, lower=lower, upper=upper)
    for r, f in zip(prefs, on_front):
        r["on_front"] = bool(f)
    pref_df = df[df["preference_index"] >= 0]
    prompts, hv_boot = hypervolume_resamples(run, lower=lower, upper=upper)
    out = {
        "method": run["root"].name, "folder": str(run["root"]), "description": meta["description"],
        "objectives": names, "prompts": meta["prompts"], "hypervolume": hv,
        "hypervolume_ci95": percentile_interval(hv_boot),
        "pareto_models": [r["model"] for r in prefs if r["on_front"]],
        "collapse_rate": float(pref_df["collapse"].notna().mean()),
        "collapse_reasons": {r: int((pref_df["collapse"] == r).sum()) for r in REASONS},
        "models": prefs, "base": None, "compute": compute_hours(run["manifest"]),
        "disjointness": run["disjoint"], "bootstrap": {"resamples": meta["bootstrap"], "seed": meta["seed"],
                                                       "level": LEVEL},
    }
    if base:
        b = base[0]
        b["hypervolume"] = front_metrics([[b["mean"][o] for o in names]], lower=lower, upper=upper)[0]
        out["base"] = b
    return out, prompts, hv_boot


def summarise_runs(runs: list[dict], *, lower: list[float], upper: list[float]) -> list[dict]:
    """The report entries of runs (methods) in one box. Every run after the first also gets
    `hypervolume_vs_first`: its hypervolume minus the first run's, with a paired bootstrap interval
    (the same prompt draws for both), or None where the two runs answered different prompts."""
    (first, ref_prompts, ref), *rest = [summarise_run(r, lower=lower, upper=upper) for r in runs]
    for (m, prompts, boot), r in zip(rest, runs[1:]):
        paired = prompts == ref_prompts and len(boot) == len(ref) and r["meta"]["seed"] == runs[0]["meta"]["seed"]
        m["hypervolume_vs_first"] = None if not paired else {
            "vs": first["method"], "delta": m["hypervolume"] - first["hypervolume"],
            "ci95": percentile_interval(boot - ref)}
    return [first] + [m for m, _, _ in rest]


def _nan_none(x: np.ndarray) -> list[float | None]:
    # JSON has no NaN: an interval that was not computed (bootstrap 0) is null
    return [None if np.isnan(v) else float(v) for v in x]
