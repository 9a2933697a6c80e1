"""The select stage: a scored table in, the per-preference selection out.

`select_table` is frames in, frames out; `write_selection` is a run's selection step and
`select_file` is `paretohqd select`: both read a scores file and write selection.parquet and
selection.json (the command adds selection.png and config.yaml). Nothing else writes a selection.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from paretohqd.config import Config, ConfigError, SelectConfig, dump_config
from paretohqd.io import InputError, read_table, write_json, write_parquet, write_text
from paretohqd.pareto.control import calibration, largest_hole
from paretohqd.pareto.layers import pool_layers
from paretohqd.pareto.preferences import preferences_from_config
from paretohqd.select.preferences_file import read_preferences
from paretohqd.pareto.rays import normalisation_box, select_direction, select_scalarised

SELECTORS = {"direction": select_direction, "scalarised": select_scalarised}
COLUMNS = ["preference_index", "weights", "id", "layer", "distance"]


def select_table(
    scores: pd.DataFrame,
    objectives: list[str],
    cfg: SelectConfig,
    *,
    lower: list[float] | None = None,
    upper: list[float] | None = None,
    source: str = "scores",
) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Select k samples per preference from the Pareto pool of a scored table.

    Args:
        scores: one row per sample: an `id` column and one numeric column per objective.
        objectives: the objective columns, in weight order; every one is maximised.
        cfg: the `select` config section.
        lower: (M,) nadir for normalisation; default the table's column minima (the paper's r_min).
        upper: (M,) ideal; default the column maxima (r_max).
        source: what to call the table in error messages (its file name).

    Returns:
        The selection, P * k rows ordered by preference then distance, with columns
        preference_index, weights (list of floats), id, layer, distance; and an info dict
        (method, layers_used, pool_size, bounds, whole_pool, ...) for logs.

    Raises:
        InputError: missing or non-numeric columns, NaN/inf scores, or a pool smaller than k
            without `cfg.allow_small_pool`.
        ConfigError: preferences that do not fit the objectives.
    """
    points = _points(scores, objectives, source)  # (N, M)
    prefs, layer, chosen, dist, info = _select(points, objectives, cfg, lower, upper, source)
    return _frame(scores, prefs, layer, chosen, dist), info


def select_random(scores: pd.DataFrame, preferences: np.ndarray, n: int, *, seed: int) -> pd.DataFrame:
    """The `full-data` ablation's "selection": for each preference, `n` samples drawn uniformly
    from the whole table (seed + preference index) instead of the Pareto data.

    The SFT loop walks a seeded shuffle of its samples, `steps x batch_size` of them; training on
    the whole table is therefore the same, in distribution, as training on that many samples
    drawn without replacement, which is what the caller asks for (and it spares encoding the rest).

    Returns:
        P * min(n, N) rows with the columns of `select_table` (layer -1, distance NaN).
    """
    n = min(len(scores), n)
    parts = [pd.DataFrame({"preference_index": i, "weights": [w.tolist()] * n,
                           "id": scores["id"].sample(n=n, random_state=seed + i).to_numpy(),
                           "layer": -1, "distance": np.nan}) for i, w in enumerate(preferences)]
    return pd.concat(parts, ignore_index=True)[COLUMNS]


def write_selection(cfg: Config, scores_path: Path, out_dir: Path, *, k: int, random_n: int) -> None:
    """A run's selection step: `out_dir`/selection.parquet and selection.json from a scores file.

    `k` samples per preference from the Pareto pool (`select.method` direction or scalarised), or
    `random_n` uniform draws from the whole table (`select.method: random`, the full-data ablation).
    """
    from paretohqd.progress import console

    scores = read_table(scores_path)
    objectives = list(cfg.rewards.models)
    if cfg.select.method == "random":
        prefs = preferences_from_config(cfg.select.preferences, len(objectives))  # (P, M)
        selection = select_random(scores, prefs, random_n, seed=cfg.seed)
        info = {"method": "random", "n_points": len(scores), "per_preference": min(len(scores), random_n),
                "n_preferences": len(prefs)}
    else:
        selection, info = select_table(scores, objectives, cfg.select.model_copy(update={"k": k}),
                                       source=str(scores_path))
        console.print(f"pool: {info['pool_size']:,} of {info['n_points']:,} samples in the top "
                      f"{info['layers_used']} layer(s); {info['k_used']} selected for each of "
                      f"{info['n_preferences']} preferences")
        console.print(control_line(info, preferences_from_config(cfg.select.preferences, len(objectives))))
    write_json(info, out_dir / "selection.json")
    write_parquet(selection, out_dir / "selection.parquet")


def select_file(scores_path: str | Path, objectives: list[str], cfg: Config, out_dir: str | Path) -> Path:
    """Read scores, select, and write DIR/selection.{parquet,png,json} and DIR/config.yaml.

    Returns:
        The path of selection.parquet.
    """
    from paretohqd.select.plot import plot_selection  # matplotlib only when a picture is made

    if cfg.select.method == "random":
        raise ConfigError("select.method random (the full-data ablation) is a run setting; "
                          "`paretohqd select` takes direction or scalarised")
    out_dir = Path(out_dir)
    scores = read_table(scores_path)
    points = _points(scores, objectives, str(scores_path))  # (N, M)
    prefs, layer, chosen, dist, info = _select(points, objectives, cfg.select, None, None, str(scores_path))
    write_text(dump_config(cfg), out_dir / "config.yaml")
    write_json({"scores": str(scores_path), **info}, out_dir / "selection.json")
    plot_selection(
        points, layer >= 0, chosen, prefs, lower=info["lower"], upper=info["upper"],
        objectives=objectives, path=out_dir / "selection.png",
        title=f"{cfg.select.method} selection: k={info['k_used']}, {info['pool_size']} points in "
              f"{info['layers_used']} layer(s)",
    )
    path = write_parquet(_frame(scores, prefs, layer, chosen, dist), out_dir / "selection.parquet")
    print(summary(info))
    print(control_line(info, prefs))
    print(f"wrote {path}, {out_dir / 'selection.png'}")
    return path


def summary(info: dict[str, Any]) -> str:
    """One line on what was chosen: layers, pool size, k, method."""
    why = (f"layers=auto: fewest top layers holding >= {info['min_pool']} points"
           if info["layers_requested"] == "auto" else f"layers={info['layers_requested']}")
    small = f" (pool < k={info['k']}: took the whole pool)" if info["whole_pool"] else ""
    return (f"pool: {info['pool_size']:,} of {info['n_points']:,} points in the top {info['layers_used']} "
            f"layer(s) ({why}); selected {info['k_used']} x {info['n_preferences']} preferences by "
            f"{info['method']}{small}")


def selection_control(prefs: np.ndarray, means: np.ndarray, lower: np.ndarray, upper: np.ndarray) -> dict[str, Any]:
    """How the selected sets' mean points follow the preferences, in the selection's box: the mean
    angle to the preference rays from its ideal point (`calibration`) and the longest step between
    neighbouring preferences' means (`largest_hole`); None where the box is flat in an objective
    or (the hole) there is one preference.

    Args:
        prefs: (P, M) weights.
        means: (P, M) mean scores of each preference's selected samples.
        lower: (M,) the selection's r_min.
        upper: (M,) its r_max.

    Examples:
        >>> c = selection_control(np.array([[1.0, 0.0], [0.0, 1.0]]), np.array([[1.0, 0.5], [0.5, 1.0]]),
        ...                       np.zeros(2), np.ones(2))
        >>> round(c["calibration_deg"], 6), round(c["largest_hole"], 4), c["largest_hole_between"]
        (0.0, 0.7071, [0, 1])
    """
    out: dict[str, Any] = {"calibration_deg": None, "calibration_per_preference_deg": None, "largest_hole": None,
                           "largest_hole_between": None}
    if (upper <= lower).any():  # a constant objective: no box to take directions in
        return out
    angles, mean = calibration(prefs, means, lower=lower, upper=upper)  # (P,), float
    out.update(calibration_deg=None if np.isnan(mean) else mean,
               calibration_per_preference_deg=[None if np.isnan(a) else float(a) for a in angles])
    if len(prefs) > 1:
        hole, pair = largest_hole(prefs, means, lower=lower, upper=upper)
        out.update(largest_hole=hole, largest_hole_between=pair.tolist())
    return out


def control_line(info: dict[str, Any], prefs: np.ndarray) -> str:
    """One line on how the selected sets follow the preferences (`selection_control`'s keys in
    `info`; `prefs` (P, M) names the hole's ends).

    Examples:
        >>> print(control_line({"calibration_deg": 3.21, "largest_hole": 0.1234, "largest_hole_between": [0, 1]},
        ...                    np.array([[0.3, 0.7], [0.4, 0.6]])))
        selected sets in the data box: calibration 3.2 deg (mean angle at the ideal point between each preference's ray and its set's mean); largest hole 0.123 (normalised step between the sets of w = (0.3, 0.7) and (0.4, 0.6))
    """
    if info["calibration_deg"] is None:
        return "selected sets: calibration not computed (an objective is constant in the data box)"
    hole = ""
    if info["largest_hole"] is not None:
        i, j = info["largest_hole_between"]
        hole = (f"; largest hole {info['largest_hole']:.3f} (normalised step between the sets of w = "
                f"({', '.join(f'{x:.3g}' for x in prefs[i])}) and ({', '.join(f'{x:.3g}' for x in prefs[j])}))")
    return (f"selected sets in the data box: calibration {info['calibration_deg']:.1f} deg (mean angle at the ideal "
            f"point between each preference's ray and its set's mean){hole}")


def flag_updates(preferences: str | None = None, k: int | None = None, layers: str | None = None,
                 method: str | None = None, allow_small_pool: bool = False) -> dict[str, Any]:
    """Command-line flags as `select.*` config updates; flags left out change nothing.

    `preferences` is a points-per-axis count ("11") or a weights file; `layers` an int or "auto".

    Examples:
        >>> flag_updates(preferences="11", layers="3", k=50)
        {'select.preferences': 11, 'select.k': 50, 'select.layers': 3}
    """
    updates: dict[str, Any] = {}
    if preferences is not None:
        if preferences.strip().isdigit():
            updates["select.preferences"] = int(preferences)
        else:
            try:
                updates["select.preferences"] = read_preferences(preferences)
            except ValueError as e:
                raise InputError(f"--preferences: {e}") from None
    if k is not None:
        updates["select.k"] = k
    if layers is not None:
        updates["select.layers"] = int(layers) if layers.strip().lstrip("-").isdigit() else layers
    if method is not None:
        updates["select.method"] = method
    if allow_small_pool:
        updates["select.allow_small_pool"] = True
    return updates


def _select(points, objectives, cfg: SelectConfig, lower, upper, source: str):
    """Pool and per-preference rows: prefs (P, M), layer (N,), chosen (P, k), dist (P, k), info."""
    try:
        prefs = preferences_from_config(cfg.preferences, len(objectives))  # (P, M)
    except ValueError as e:
        raise ConfigError(f"select.preferences: {e}") from None
    layer = pool_layers(points, layers=cfg.layers, min_size=cfg.min_pool)  # (N,)
    if lower is None and cfg.nadir == "front":
        lower = points[layer == 0].min(axis=0)  # (M,) the Pareto front's nadir, not the data's minimum
    try:
        lo, hi = normalisation_box(points, lower=lower, upper=upper)  # (M,), (M,)
    except ValueError as e:
        raise InputError(f"{source}: {e}") from None
    pool = np.flatnonzero(layer >= 0)  # (n_pool,)
    k, whole_pool = cfg.k, False
    if len(pool) < cfg.k:
        if not cfg.allow_small_pool:
            raise InputError(
                f"{source}: the Pareto pool ({_layers_text(cfg)}) holds {len(pool)} of {len(points)} "
                f"points, fewer than k={cfg.k}; use more layers (select.layers / --layers), a smaller "
                "k, or allow_small_pool (--allow-small-pool) to take the whole pool"
            )
        k, whole_pool = len(pool), True
    rows, dist = SELECTORS[cfg.method](points[pool], prefs, k=k, lower=lo, upper=hi)  # (P, k) each
    control = selection_control(prefs, points[pool[rows]].mean(axis=1), lo, hi)  # means (P, M)
    info = {
        "method": cfg.method,
        "nadir": cfg.nadir,
        "objectives": list(objectives),
        "n_points": len(points),
        "n_preferences": len(prefs),
        "layers_requested": cfg.layers,
        "layers_used": int(layer.max()) + 1 if len(pool) else 0,
        "min_pool": cfg.min_pool if cfg.layers == "auto" else None,
        "pool_size": len(pool),
        "k": cfg.k,
        "k_used": k,
        "whole_pool": whole_pool,
        "lower": lo.tolist(),
        "upper": hi.tolist(),
        **control,
    }
    return prefs, layer, pool[rows], dist, info


def _frame(scores: pd.DataFrame, prefs: np.ndarray, layer: np.ndarray, chosen: np.ndarray,
           dist: np.ndarray) -> pd.DataFrame:
    n_prefs, k = chosen.shape
    return pd.DataFrame({
        "preference_index": np.repeat(np.arange(n_prefs), k),
        "weights": [prefs[i].tolist() for i in range(n_prefs) for _ in range(k)],
        "id": scores["id"].to_numpy()[chosen.ravel()],
        "layer": layer[chosen.ravel()],
        "distance": dist.ravel(),
    }, columns=COLUMNS)


def _layers_text(cfg: SelectConfig) -> str:
    return f"layers=auto, pool_size={cfg.min_pool}" if cfg.layers == "auto" else f"top {cfg.layers} layer(s)"


def _points(scores: pd.DataFrame, objectives: list[str], source: str) -> np.ndarray:
    """The (N, M) objective columns as float64, with every column problem named at once."""
    problems = []
    if "id" not in scores.columns:
        problems.append("no `id` column (one id per sample)")
    if not objectives:
        problems.append("no objectives given; name one column per objective")
    if len(set(objectives)) != len(objectives):
        problems.append(f"objectives repeat a column: {list(objectives)}")
    for name in objectives:
        if name not in scores.columns:
            problems.append(f"no objective column `{name}` (columns: {list(scores.columns)})")
        elif not pd.api.types.is_numeric_dtype(scores[name]) or pd.api.types.is_bool_dtype(scores[name]):
            problems.append(f"objective column `{name}` is not numeric (dtype {scores[name].dtype})")
        else:
            bad = ~np.isfinite(scores[name].to_numpy(np.float64))
            if bad.any():
                ids = scores["id"][bad].tolist()[:5] if "id" in scores.columns else np.flatnonzero(bad)[:5].tolist()
                problems.append(f"objective column `{name}` has {int(bad.sum())} NaN/inf value(s), e.g. id {ids}")
    if problems:
        raise InputError(f"{source}: " + "; ".join(problems))
    return scores[objectives].to_numpy(np.float64)
