"""Controllability and reference-front indicators of each run in a report, and each run's change
from its base model, all with prompt-bootstrap intervals (issue 26).

Geometry (`paretohqd.pareto.control`): every indicator but tau is measured in the report's fronts
box, the min/max over the mean points of every model in the report (all runs, base models
included), where the models actually spread; in the training data's box small-budget models
look alike. Calibration is the angle at the box's ideal point between each preference's ray
(toward W = lower + w (upper - lower)) and the model's mean; `calibration_from_base_deg` the
same with the base model's mean as the origin. IGD+ and additive epsilon are measured against
the nondominated union of every model in the report (the best front any of them reached).

Intervals come from `bootstrap_means`: one set of prompt draws per run (the draws of the
hypervolume intervals), the base model resampled with the same draws, and for runs after the
first the difference to the first run with the same draws (a paired interval).
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from paretohqd.evaluate.front import bootstrap_means, percentile_interval
from paretohqd.pareto.control import calibration, largest_hole, order_tau, reach
from paretohqd.pareto.metrics import epsilon_additive, igd_plus, pareto_subset
from paretohqd.pareto.preferences import check_preferences
from paretohqd.report.summary import prompt_matrix

INDICATORS = ("calibration_deg", "calibration_from_base_deg", "order_tau", "largest_hole", "reach", "igd_plus",
              "epsilon_additive")
"""The keys of an entry's `control`, each {value, ci95, vs_first}; lower is better except tau and reach."""


def measure_control(entries: list[dict], runs: list[dict], norms: dict[str, dict]) -> None:
    """Add `control` (the `INDICATORS` in the fronts box, with intervals and paired differences to
    the first run) and `change_vs_base` (per objective, the method's mean over its preference
    models minus the base model's mean, with a paired interval) to each entry, in place.

    `control` is None where the fronts box is flat or a run's models carry no weights;
    `change_vs_base` is None for a run without a base model or one that skipped some prompts.
    """
    names = runs[0]["meta"]["objectives"]
    box = norms.get("fronts", {})
    union = np.array([[r["mean"][o] for o in names] for e in entries
                      for r in e["models"] + ([e["base"]] if e["base"] is not None else [])])  # (N, M)
    reference = np.unique(union[pareto_subset(union)], axis=0)  # (R, M); a set: duplicates would weigh IGD+
    draws = []  # per run: prompt ids, {indicator: (B,) draws}
    for e, run in zip(entries, runs):
        prompts, values = prompt_matrix(run)  # (P, n, M)
        boot = bootstrap_means(values, n_resamples=run["meta"]["bootstrap"], seed=run["meta"]["seed"])  # (B, P, M)
        base = _base_values(run, prompts, names)  # (n, M) or None
        e["change_vs_base"] = None if base is None else _change(values, base, boot, run["meta"], names)
        weights = [r["weights"] for r in e["models"]]
        if "lower" not in box or any(w is None for w in weights):
            e["control"], boots = None, {}
        else:
            origin = None if e["base"] is None else [e["base"]["mean"][o] for o in names]  # (M,)
            # checked once here: each draw's indicators take the checked array's fast path
            stat = _statistic(check_preferences(weights, len(names)), box, reference, origin)
            point, parts = stat(np.array([[r["mean"][o] for o in names] for r in e["models"]]))
            per_draw = [stat(means)[0] for means in boot]
            boots = {k: np.array([d[k] for d in per_draw]) for k in INDICATORS}
            e["control"] = {k: {"value": _finite(point[k]), "ci95": _interval(boots[k]), "vs_first": None}
                            for k in INDICATORS}
            e["control"].update(_details(e["models"], parts, names))
        draws.append((prompts, boots))
    _paired(entries, runs, draws)


def _statistic(weights: np.ndarray, box: dict, reference: np.ndarray,
               base: list[float] | None) -> Callable[[np.ndarray], tuple[dict[str, float], dict]]:
    """The `INDICATORS` of one (P, M) set of mean points, in the fronts box, and the parts they
    summarise (per-preference angles, per-objective taus, the hole's row pair) for `_details`;
    `base` (M,) is the origin of `calibration_from_base_deg` (NaN without one)."""
    lo, hi = box["lower"], box["upper"]

    def stat(points: np.ndarray) -> tuple[dict[str, float], dict]:
        angles, mean_angle = calibration(weights, points, lower=lo, upper=hi)  # (P,), float
        taus, tau = order_tau(weights, points)  # (M,), float
        hole, pair = largest_hole(weights, points, lower=lo, upper=hi) if len(points) > 1 else (float("nan"), None)
        values = {"calibration_deg": mean_angle,
                  "calibration_from_base_deg": (float("nan") if base is None
                                                else calibration(weights, points, lower=lo, upper=hi, origin=base)[1]),
                  "order_tau": tau, "largest_hole": hole, "reach": reach(points, lower=lo, upper=hi),
                  "igd_plus": igd_plus(points, reference, lower=lo, upper=hi),
                  "epsilon_additive": epsilon_additive(points, reference, lower=lo, upper=hi)}
        return values, {"angles": angles, "taus": taus, "hole_pair": pair}

    return stat


def _details(models: list[dict], parts: dict, names: list[str]) -> dict:
    """Point estimates that have no interval (the point's `parts` from `_statistic`): per-preference
    angles and taus, the hole's ends."""
    pair = parts["hole_pair"]
    between = None if pair is None else [models[int(i)]["model"] for i in pair]
    return {"box": "fronts", "angles_deg": dict(zip((r["model"] for r in models), _finite_list(parts["angles"]))),
            "order_tau_per_objective": dict(zip(names, _finite_list(parts["taus"]))), "largest_hole_between": between}


def _base_values(run: dict, prompts: list[str], names: list[str]) -> np.ndarray | None:
    """The base model's (n, M) rewards per prompt, in `prompts` order; None without a base model
    or when it lacks one of the preference models' prompts (no pairing)."""
    df = run["responses"]
    base = df[df["preference_index"] < 0]
    if base.empty:
        return None
    per_prompt = base.groupby("prompt_id")[names].mean().reindex(prompts)  # (n, M)
    return None if per_prompt.isna().any().any() else per_prompt.to_numpy()


def _change(values: np.ndarray, base: np.ndarray, boot: np.ndarray, meta: dict, names: list[str]) -> dict:
    """Per objective: the preference models' mean minus the base's over the same prompts, with
    the base resampled by the same draws as `boot` (B, P, M)."""
    base_boot = bootstrap_means(base[None], n_resamples=meta["bootstrap"], seed=meta["seed"])  # (B, 1, M)
    delta = values.mean(axis=(0, 1)) - base.mean(axis=0)  # (M,)
    diff = boot.mean(axis=1) - base_boot[:, 0]  # (B, M)
    return {o: {"delta": float(delta[k]), "ci95": _interval(diff[:, k])} for k, o in enumerate(names)}


def _paired(entries: list[dict], runs: list[dict], draws: list) -> None:
    """`vs_first` of every indicator of the runs after the first: difference and paired interval,
    where both runs answered the same prompts with the same bootstrap seed and count."""
    (ref_prompts, ref_boots), first = draws[0], entries[0]
    for e, run, (prompts, boots) in zip(entries[1:], runs[1:], draws[1:]):
        if e["control"] is None or first["control"] is None:
            continue
        paired = prompts == ref_prompts and run["meta"]["seed"] == runs[0]["meta"]["seed"]
        for k in INDICATORS:
            a, b = e["control"][k]["value"], first["control"][k]["value"]
            if a is None or b is None:
                continue
            ci = _interval(boots[k] - ref_boots[k]) if paired and len(boots[k]) == len(ref_boots[k]) else None
            e["control"][k]["vs_first"] = {"vs": first["method"], "delta": a - b, "ci95": ci}


def _interval(draws: np.ndarray) -> list[float] | None:
    """Percentile interval of the finite draws (a draw with every model at the ideal has no angle)."""
    return percentile_interval(draws[np.isfinite(draws)])


def _finite(x: float) -> float | None:
    return float(x) if np.isfinite(x) else None  # JSON has no NaN


def _finite_list(xs: np.ndarray) -> list[float | None]:
    return [_finite(x) for x in xs]
