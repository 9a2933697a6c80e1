"""Controllability: does each preference's model (or selected set) sit where its preference points?

Hypervolume barely tells a front whose preferences walk along it in even steps from one where
several preferences land on the same end points. These indicators do (arXiv 2504.16628's ray
geometry; issue 26):

- `calibration`: per preference, the angle between the preference's direction and the direction
  to its achieved mean point, and their mean (0 degrees: every model on its ray).
- `order_tau`: Kendall's tau-b between each objective's weight and its achieved mean over the
  preferences (1: more weight always bought more of that objective).
- `largest_hole`: the longest step between neighbouring preferences' achieved points (a gap in the
  front that no preference reaches).
- `reach`: the longest distance between any two preferences' achieved points (how much of the
  trade-off the preferences span). Read the hole beside it: models that all answer alike have no
  hole and no reach, which is no control at all.

Geometry. Points are min-max normalised, z = (r - lower) / (upper - lower), so the box is the unit
box. The preference w names the compromise point W = w (raw: lower + w * (upper - lower)). Its
direction is the one from an origin o toward W: by default o is the ideal point `upper` (z = 1),
which is ParetoHqD's ray from r_max toward W; the achieved direction is from o toward the achieved
mean. Which box matters: trained models at small budgets move over a few percent of the training
data's box, so from the data box's ideal every model looks alike (~80 degrees for every method).
Pass the box of the evaluated models' mean points (`paretohqd.evaluate.front.fronts_box`) to
measure how the models spread over the front they reach; or pass `origin` = the base model's mean
to measure the direction of each model's change from the base toward W.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike

from paretohqd.pareto.layers import as_points
from paretohqd.pareto.preferences import check_preferences
from paretohqd.pareto.rays import normalisation_box

# L1 distances within this are equal (the round-off of grid weights such as 0.1 * 3).
_SAME = 1e-9


def calibration(
    preferences: ArrayLike,
    achieved: ArrayLike,
    /,
    *,
    lower: ArrayLike,
    upper: ArrayLike,
    origin: ArrayLike | None = None,
) -> tuple[np.ndarray, float]:
    """Angle in degrees between each preference's direction and its achieved point's direction.

    In the box z = (r - lower) / (upper - lower), with o the normalised `origin`: the preference
    direction is w - o and the achieved direction z - o. The angle uses Kahan's form
    2 atan2(|a - b|, |a + b|) of the unit vectors a, b, exact near 0 and 180 degrees.

    Args:
        preferences: (P, M) weights on the simplex, one row per preference.
        achieved: (P, M) raw mean rewards reached for each preference (every objective maximised).
        lower: (M,) raw values mapped to 0.
        upper: (M,) raw values mapped to 1 (each above `lower`); also the default origin.
        origin: (M,) raw point the directions start from; default `upper` (the ideal point, as
            ParetoHqD's rays). The base model's mean gives the "change from the base" geometry.

    Returns:
        angles (P,) in [0, 180], NaN where the achieved point or the preference's W is the origin
        (no direction to compare), and their mean over the finite ones (NaN if none).

    Raises:
        ValueError: shapes that differ, preferences off the simplex, bad bounds or origin.

    Examples:
        Box [0, 10]^2, ideal (10, 10). w = (1, 0) points straight down from the ideal: the
        achieved (10, 4) lies on that ray (0 degrees). w = (0.5, 0.5) points along the diagonal
        (-1, -1); the achieved (10, 0) is straight down, 45 degrees off. Mean 22.5.

        >>> angles, mean = calibration([[1, 0], [0.5, 0.5]], [[10, 4], [10, 0]], lower=[0, 0], upper=[10, 10])
        >>> angles.round(6).tolist(), round(mean, 6)
        ([0.0, 45.0], 22.5)

        From the base model (2, 2) instead: toward W = (5, 5) is the diagonal; (6, 6) lies on it.

        >>> calibration([[0.5, 0.5]], [[6, 6]], lower=[0, 0], upper=[10, 10], origin=[2, 2])[0].round(6).tolist()
        [0.0]
    """
    w, z, lo, span = _prepare(preferences, achieved, lower, upper)  # (P, M), (P, M), (M,), (M,)
    o = np.ones(w.shape[1]) if origin is None else (_vector(origin, "origin", w.shape[1]) - lo) / span  # (M,)
    want, got = w - o, z - o  # (P, M) each
    want_norm, got_norm = np.linalg.norm(want, axis=1), np.linalg.norm(got, axis=1)  # (P,) each
    with np.errstate(invalid="ignore", divide="ignore"):
        a = want / want_norm[:, None]  # (P, M) unit; NaN where the origin is W itself
        b = got / got_norm[:, None]  # (P, M) unit; NaN where achieved == origin
        angles = np.degrees(2 * np.arctan2(np.linalg.norm(a - b, axis=1), np.linalg.norm(a + b, axis=1)))  # (P,)
    finite = angles[np.isfinite(angles)]
    return angles, float(finite.mean()) if finite.size else float("nan")


def kendall_tau(x: ArrayLike, y: ArrayLike, /) -> float:
    """Kendall's tau-b of two equally long sequences (ties in either count as neither order).

    tau_b = sum_{i<j} s_ij t_ij / sqrt(sum s_ij^2 * sum t_ij^2) with s_ij = sign(x_i - x_j),
    t_ij = sign(y_i - y_j): scipy.stats.kendalltau's default, O(n^2) here (n is a number of
    preferences).

    Args:
        x: (n,) values.
        y: (n,) values.

    Returns:
        tau in [-1, 1]; NaN when x or y takes one value only (no order to compare).

    Examples:
        >>> kendall_tau([1, 2, 3], [10, 20, 30]), kendall_tau([1, 2, 3], [3, 2, 1])
        (1.0, -1.0)
        >>> round(kendall_tau([1, 2, 3], [1, 3, 2]), 4)  # pairs (1,2), (1,3) agree, (2,3) does not
        0.3333
    """
    a, b = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)  # (n,), (n,)
    if a.ndim != 1 or a.shape != b.shape:
        raise ValueError(f"x and y must be 1-D of one length; got shapes {a.shape} and {b.shape}")
    s = np.sign(a[:, None] - a[None, :])  # (n, n); each pair twice, which cancels in the ratio
    t = np.sign(b[:, None] - b[None, :])  # (n, n)
    denom = np.sqrt((s * s).sum() * (t * t).sum())
    return float((s * t).sum() / denom) if denom > 0 else float("nan")


def order_tau(preferences: ArrayLike, achieved: ArrayLike, /) -> tuple[np.ndarray, float]:
    """Kendall's tau-b between each objective's weight and its achieved mean over the preferences.

    Per objective k: tau(w[:, k], achieved[:, k]); 1 when more weight on k always bought more of
    objective k. For 2 objectives tau_1 is the order along the front (w_1 against objective 1);
    tau_2 agrees with it on a front where objective 2 falls as objective 1 rises. Ties in the
    weights (3+ objectives: many preferences share w_k) are tau-b's ties. Order only: any
    increasing rescaling of an objective leaves it unchanged, so no box is needed.

    Args:
        preferences: (P, M) weights on the simplex.
        achieved: (P, M) mean rewards reached for each preference.

    Returns:
        per objective (M,) taus (NaN where the achieved means, or the weights, are all equal) and
        their mean over the finite ones (NaN if none).

    Raises:
        ValueError: shapes that differ, or preferences off the simplex.

    Examples:
        Three preferences along a front: objective 1 rises with w_1 and objective 2 with w_2.
        Swapping the first two models' points breaks one of three pairs: tau = (2 - 1) / 3.

        >>> order_tau([[0, 1], [0.5, 0.5], [1, 0]], [[0, 9], [5, 5], [9, 0]])
        (array([1., 1.]), 1.0)
        >>> taus, mean = order_tau([[0, 1], [0.5, 0.5], [1, 0]], [[5, 5], [0, 9], [9, 0]])
        >>> taus.round(4).tolist(), round(mean, 4)
        ([0.3333, 0.3333], 0.3333)
    """
    w, pts = _pair(preferences, achieved)  # (P, M), (P, M)
    taus = np.array([kendall_tau(w[:, k], pts[:, k]) for k in range(w.shape[1])])  # (M,)
    finite = taus[np.isfinite(taus)]
    return taus, float(finite.mean()) if finite.size else float("nan")


def neighbour_pairs(preferences: ArrayLike, /) -> np.ndarray:
    """Pairs of neighbouring preferences (row indices, i < j), the edges a front should walk.

    2 objectives: preferences sorted by w_1, each with the next (equal weights are neighbours too).
    3+ objectives: each preference with every other at its smallest L1 distance, and with its
    duplicates. On a simplex grid (`simplex_grid`) these are the grid's edges: one step of
    1 / (points_per_axis - 1) moved from one weight to another (L1 distance 2 steps). For a
    list that is not a grid (e.g. the `ric-3obj` preset) each preference keeps its nearest ones.

    Args:
        preferences: (P, M) weights on the simplex, P >= 2.

    Returns:
        (E, 2) int64 row pairs, sorted.

    Raises:
        ValueError: preferences off the simplex, or fewer than 2.

    Examples:
        >>> neighbour_pairs([[1, 0], [0, 1], [0.5, 0.5]]).tolist()
        [[0, 2], [1, 2]]
        >>> from paretohqd.pareto.preferences import simplex_grid
        >>> neighbour_pairs(simplex_grid(3, 3)).tolist()  # the triangle's 9 edges
        [[0, 1], [0, 3], [1, 2], [1, 3], [1, 4], [2, 4], [3, 4], [3, 5], [4, 5]]
    """
    first = next(iter(preferences), None) if isinstance(preferences, (list, tuple, np.ndarray)) else None
    w = check_preferences(preferences, len(first) if hasattr(first, "__len__") else 0)  # (P, M)
    if len(w) < 2:
        raise ValueError(f"neighbours need at least 2 preferences; got {len(w)}")
    if w.shape[1] == 2:
        order = np.argsort(w[:, 0], kind="stable")  # (P,)
        pairs = np.sort(np.stack([order[:-1], order[1:]], axis=1), axis=1)  # (P - 1, 2)
    else:
        dist = np.abs(w[:, None, :] - w[None, :, :]).sum(axis=2)  # (P, P) L1
        np.fill_diagonal(dist, np.inf)
        apart = np.where(dist > _SAME, dist, np.inf)  # (P, P) duplicates aside
        nearest = apart.min(axis=1, keepdims=True)  # (P, 1)
        near = (dist <= _SAME) | (np.abs(apart - nearest) <= _SAME)  # (P, P) i's neighbours
        i, j = np.nonzero(near | near.T)
        pairs = np.stack([i, j], axis=1)[i < j]  # (E, 2)
    return pairs[np.lexsort((pairs[:, 1], pairs[:, 0]))].astype(np.int64)


def largest_hole(
    preferences: ArrayLike, achieved: ArrayLike, /, *, lower: ArrayLike, upper: ArrayLike
) -> tuple[float, np.ndarray]:
    """The largest Euclidean distance, in the normalised box, between neighbouring preferences'
    achieved points (`neighbour_pairs`): a stretch of the front no preference lands in.

    Args:
        preferences: (P, M) weights on the simplex, P >= 2.
        achieved: (P, M) raw mean rewards reached for each preference.
        lower: (M,) raw values mapped to 0.
        upper: (M,) raw values mapped to 1 (each above `lower`).

    Returns:
        the largest distance, and (2,) the row pair it lies between (the first such pair).

    Raises:
        ValueError: shapes that differ, preferences off the simplex or fewer than 2, bad bounds.

    Examples:
        Five preferences in the box [0, 10]^2. Even steps: neighbours 0.25 * sqrt(2) = 0.3536
        apart (the first pair is named). If w = (0.5, 0.5) lands on its neighbour's point (2, 8)
        and w = (0.75, 0.25) at (8, 2), the front has a hole from (0.2, 0.8) to (0.8, 0.2),
        0.6 * sqrt(2) = 0.8485, between rows 2 and 3.

        >>> prefs = [[0, 1], [0.25, 0.75], [0.5, 0.5], [0.75, 0.25], [1, 0]]
        >>> hole, pair = largest_hole(prefs, [[0, 10], [2.5, 7.5], [5, 5], [7.5, 2.5], [10, 0]],
        ...                           lower=[0, 0], upper=[10, 10])
        >>> round(hole, 4), pair.tolist()
        (0.3536, [0, 1])
        >>> hole, pair = largest_hole(prefs, [[0, 10], [2, 8], [2, 8], [8, 2], [10, 0]], lower=[0, 0], upper=[10, 10])
        >>> round(hole, 4), pair.tolist()
        (0.8485, [2, 3])
    """
    w, z, _, _ = _prepare(preferences, achieved, lower, upper)  # (P, M), (P, M)
    pairs = neighbour_pairs(w)  # (E, 2)
    steps = np.linalg.norm(z[pairs[:, 0]] - z[pairs[:, 1]], axis=1)  # (E,)
    i = int(np.argmax(steps))
    return float(steps[i]), pairs[i]


def reach(achieved: ArrayLike, /, *, lower: ArrayLike, upper: ArrayLike) -> float:
    """The largest Euclidean distance, in the normalised box, between any two achieved points: how
    far along the trade-off the preferences move the model. Never below `largest_hole` (which is
    one of these distances); a small hole is control only when the reach is not small too.

    Args:
        achieved: (P, M) raw mean rewards reached for the preferences, P >= 1.
        lower: (M,) raw values mapped to 0.
        upper: (M,) raw values mapped to 1 (each above `lower`).

    Returns:
        the distance (0.0 for one point).

    Raises:
        ValueError: points that are not a (P, M) finite array, bad bounds.

    Examples:
        Five models evenly from (0, 10) to (10, 0) in the box [0, 10]^2 reach sqrt(2); five that all
        answer near (5, 5) reach little, though their largest hole is small too.

        >>> round(reach([[0, 10], [2.5, 7.5], [5, 5], [7.5, 2.5], [10, 0]], lower=[0, 0], upper=[10, 10]), 4)
        1.4142
        >>> round(reach([[5, 5], [5.2, 4.9], [5.1, 5.0]], lower=[0, 0], upper=[10, 10]), 4)
        0.0224
    """
    z, _, _ = _normalised(as_points(achieved, name="achieved"), lower, upper)  # (P, M)
    return float(np.linalg.norm(z[:, None, :] - z[None, :, :], axis=2).max())  # P is a handful of models


def _pair(preferences: ArrayLike, achieved: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """Checked (P, M) weights and (P, M) achieved points of one shape."""
    pts = as_points(achieved, name="achieved")  # (P, M)
    w = check_preferences(preferences, pts.shape[1])  # (P, M)
    if len(w) != len(pts):
        raise ValueError(f"{len(w)} preferences but {len(pts)} achieved points; give one achieved point per preference")
    return w, pts


def _prepare(preferences, achieved, lower, upper) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Weights (P, M), normalised achieved points (P, M), lower (M,) and span (M,) of a real box."""
    w, pts = _pair(preferences, achieved)
    return (w, *_normalised(pts, lower, upper))


def _normalised(pts: np.ndarray, lower, upper) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(P, M) points in the unit box, its lower (M,) and span (M,), of a real box."""
    lo, hi = normalisation_box(pts, lower=lower, upper=upper)  # (M,), (M,)
    if (hi <= lo).any():  # a flat box would squash an objective and every direction in it
        raise ValueError(f"'upper' must exceed 'lower' in every objective; got lower={lo.tolist()}, upper={hi.tolist()}")
    return (pts - lo) / (hi - lo), lo, hi - lo


def _vector(x: ArrayLike, name: str, m: int) -> np.ndarray:
    v = np.asarray(x, dtype=np.float64)  # (M,)
    if v.shape != (m,) or not np.isfinite(v).all():
        raise ValueError(f"'{name}' must be {m} finite numbers (one per objective); got {np.asarray(x).tolist()}")
    return v
