"""Preferences: weight vectors on the probability simplex, one weight per objective.

A preference w = (w_1, ..., w_M) has w_i >= 0 and sum w_i = 1. The standard sets are simplex
lattices: with `points_per_axis` = n every weight is a multiple of 1/(n-1), so M = 2, n = 11 gives
the paper's 11 preferences (0.0, 1.0), (0.1, 0.9), ..., (1.0, 0.0).
"""

from __future__ import annotations

import warnings
from itertools import combinations
from math import comb

import numpy as np
from numpy.typing import ArrayLike

# Weights may miss a sum of 1 by this much (hand-typed 1/3s, float round-off).
SUM_TOLERANCE = 1e-6
RENORMALISE_TOLERANCE = 1e-2  # rows off by at most this are rescaled (with a warning), not refused
MAX_PREFERENCES = 100_000  # grid sizes beyond this are refused (paper: 11 and 13)


PRESETS: dict[str, list[list[float]]] = {
    # the 13 three-objective preferences RiC evaluates (github.com/YangRui2015/RiC, ric/evaluation.py);
    # [0.33, 0.33, 0.33] is renormalised to 1/3 each
    "ric-3obj": [[0.0, 0.0, 1.0], [0.0, 1.0, 0.0], [0.1, 0.1, 0.8], [0.1, 0.8, 0.1], [0.2, 0.2, 0.6],
                 [0.2, 0.4, 0.4], [0.2, 0.6, 0.2], [0.33, 0.33, 0.33], [0.4, 0.4, 0.2], [0.4, 0.2, 0.4],
                 [0.6, 0.2, 0.2], [0.8, 0.1, 0.1], [1.0, 0.0, 0.0]],
}
"""Named preference lists (`select.preferences: ric-3obj`)."""


def simplex_grid(n_objectives: int, points_per_axis: int) -> np.ndarray:
    """All weight vectors whose entries are multiples of 1 / (points_per_axis - 1).

    Args:
        n_objectives: M >= 2.
        points_per_axis: n >= 2 values per weight, 0, 1/(n-1), ..., 1.

    Returns:
        (P, M) float64 weights, P = C(n - 1 + M - 1, M - 1), in lexicographic order (the first
        weight rises from 0 to 1).

    Raises:
        ValueError: M < 2 or n < 2.

    Examples:
        >>> simplex_grid(2, 11)[:3]
        array([[0. , 1. ],
               [0.1, 0.9],
               [0.2, 0.8]])
        >>> simplex_grid(3, 3)
        array([[0. , 0. , 1. ],
               [0. , 0.5, 0.5],
               [0. , 1. , 0. ],
               [0.5, 0. , 0.5],
               [0.5, 0.5, 0. ],
               [1. , 0. , 0. ]])
    """
    for name, value in (("n_objectives", n_objectives), ("points_per_axis", points_per_axis)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 2:
            raise ValueError(f"{name} must be an int >= 2; got {value!r}")
    steps = points_per_axis - 1
    size = comb(steps + n_objectives - 1, n_objectives - 1)
    if size > MAX_PREFERENCES:  # each one a model to train: a typo, not a plan (and it would never finish)
        raise ValueError(f"{points_per_axis} points per axis over {n_objectives} objectives make {size:,} preferences, "
                         f"more than {MAX_PREFERENCES:,}; use fewer points per axis")
    # Stars and bars: choosing M-1 bar positions among steps + M-1 slots enumerates every
    # composition of `steps` into M non-negative parts exactly once.
    rows = []
    for bars in combinations(range(steps + n_objectives - 1), n_objectives - 1):
        edges = (-1, *bars, steps + n_objectives - 1)
        rows.append([edges[i + 1] - edges[i] - 1 for i in range(n_objectives)])
    counts = np.array(rows, dtype=np.float64)  # (P, M) integers summing to `steps`
    return counts / steps


def check_preferences(weights: ArrayLike, n_objectives: int) -> np.ndarray:
    """Validate weight vectors and return them as a new (P, M) float64 array.

    Every problem is reported at once, one line per bad row.

    Args:
        weights: (P, M) weights, one row per preference.
        n_objectives: M, the number of objectives the weights must cover.

    Returns:
        (P, M) float64 copy of `weights`.

    Raises:
        ValueError: not a non-empty list of rows, a row with the wrong length, a negative or
            non-finite weight, or a row not summing to 1 within 1e-2. Rows off by more than 1e-6
            but within 1e-2 (rounded weights such as 0.33) are divided by their sum, with a warning.

    Examples:
        >>> check_preferences([[0.25, 0.75]], 2)
        array([[0.25, 0.75]])
        >>> check_preferences([[0.5, 0.6]], 2)
        Traceback (most recent call last):
        ...
        ValueError: 1 bad preference(s):
          - preference 0 [0.5, 0.6]: sums to 1.1, not 1; rescale it so the weights sum to 1
    """
    if isinstance(weights, np.ndarray) and weights.ndim == 2 and weights.shape[1] == n_objectives and len(weights):
        # an array already on the simplex (checked once, then passed on: the bootstrap's thousand draws)
        # needs no row-by-row report; anything else takes the loop below, which names each bad row
        w = weights.astype(np.float64)  # (P, M) copy
        if np.isfinite(w).all() and (w >= 0).all() and (np.abs(w.sum(axis=1) - 1.0) <= SUM_TOLERANCE).all():
            return w
    rows = list(weights) if isinstance(weights, (list, tuple, np.ndarray)) else None
    if not rows:
        raise ValueError(f"preferences must be a non-empty list of weight vectors; got {weights!r}")
    problems = [p for i, row in enumerate(rows) if (p := _row_problem(i, row, n_objectives))]
    if problems:
        raise ValueError(f"{len(problems)} bad preference(s):\n  - " + "\n  - ".join(problems))
    out = np.array(rows, dtype=np.float64)  # (P, M)
    sums = out.sum(axis=1)  # (P,)
    off = np.flatnonzero(np.abs(sums - 1.0) > SUM_TOLERANCE)
    if len(off):
        # rounded vectors such as RiC's [0.33, 0.33, 0.33]: scaled onto the simplex, and said so
        warnings.warn(f"preference(s) {off.tolist()} sum to {np.round(sums[off], 6).tolist()}, not 1: "
                      "renormalised to sum to 1", UserWarning, stacklevel=2)
        out = out / sums[:, None]
    return out


def _row_problem(i: int, row, n_objectives: int) -> str | None:
    """What is wrong with preference `i` (one line naming it and the fix), or None."""
    try:
        w = np.asarray(row, dtype=np.float64)
    except (TypeError, ValueError):
        return f"preference {i} {row!r}: not a list of numbers"
    shown = w.tolist() if w.ndim == 1 else row
    if w.ndim != 1 or len(w) != n_objectives:
        got = len(w) if w.ndim == 1 else f"shape {w.shape}"
        return (f"preference {i} {shown}: has {got} weights but there are "
                f"{n_objectives} objectives; give one weight per objective")
    if not np.isfinite(w).all():
        return f"preference {i} {shown}: weights must be finite"
    if (w < 0).any():
        return f"preference {i} {shown}: negative weight; weights must be >= 0"
    if abs(w.sum() - 1.0) > RENORMALISE_TOLERANCE + 1e-12:  # 0.33 * 3 lies 1e-2 + 9e-18 away
        return f"preference {i} {shown}: sums to {w.sum():.6g}, not 1; rescale it so the weights sum to 1"
    return None


def preferences_from_config(value: int | str | list[list[float]], n_objectives: int) -> np.ndarray:
    """The `select.preferences` setting as a (P, M) weight array.

    Args:
        value: points per axis of the simplex grid (11: step 0.1), a preset name (`PRESETS`), or
            explicit weight vectors.
        n_objectives: M.

    Returns:
        (P, M) float64 weights.

    Raises:
        ValueError: as `simplex_grid` or `check_preferences`.

    Examples:
        >>> preferences_from_config(3, 2)
        array([[0. , 1. ],
               [0.5, 0.5],
               [1. , 0. ]])
        >>> preferences_from_config([[0.2, 0.8]], 2)
        array([[0.2, 0.8]])
    """
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        return simplex_grid(n_objectives, int(value))
    if isinstance(value, str):
        if value not in PRESETS:
            raise ValueError(f"unknown preference preset {value!r}; presets are {sorted(PRESETS)}")
        value = PRESETS[value]
    return check_preferences(value, n_objectives)
