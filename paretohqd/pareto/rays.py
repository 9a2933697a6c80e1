"""Pick the k points of a pool that best match each preference.

ParetoHqD (arXiv 2504.16628, Sec. "Preference direction"): with ideal r_max and nadir r_min of the
whole scored dataset, preference w is the ray from r_max through the compromise point
W = r_min + w * (r_max - r_min). After min-max normalisation z = (r - r_min) / (r_max - r_min)
the ray starts at the all-ones point and heads toward w. A point's distance to the preference is
its Euclidean distance to that ray, or to the ray's origin where its projection falls behind it.

`select_direction` takes the k nearest points; `select_scalarised` (the paper's ablation) the k
largest w . z. Both share one signature and return rows into `points` plus ray distances, so a
caller can swap one for the other and compare like with like.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike

from paretohqd.pareto.layers import as_points
from paretohqd.pareto.preferences import check_preferences

# Sort keys are rounded to this many decimals so values equal up to float round-off tie, and
# ties go to the lower row index. Without it a rescaled objective could reorder exact ties.
_KEY_DECIMALS = 10


def normalise(
    points: ArrayLike, /, *, lower: ArrayLike | None = None, upper: ArrayLike | None = None
) -> np.ndarray:
    """Min-max normalise so `lower` maps to 0 and `upper` to 1 in every objective.

    Args:
        points: (N, M) scores, every objective maximised.
        lower: (M,) nadir r_min; default the column minima of `points`.
        upper: (M,) ideal r_max; default the column maxima of `points`.

    Returns:
        (N, M) float64 z. An objective with upper == lower (constant) maps to 0.

    Raises:
        ValueError: bad points, bounds of the wrong length or not finite, or upper < lower.

    Examples:
        >>> normalise([[0, 10], [5, 20], [10, 30]])
        array([[0. , 0. ],
               [0.5, 0.5],
               [1. , 1. ]])
        >>> normalise([[5, 20]], lower=[0, 10], upper=[10, 30])
        array([[0.5, 0.5]])
    """
    pts = as_points(points)  # (N, M)
    lo, hi = normalisation_box(pts, lower=lower, upper=upper)  # (M,), (M,)
    span = np.where(hi > lo, hi - lo, 1.0)  # (M,) a constant objective would divide by 0
    return (pts - lo) / span


def normalisation_box(
    points: ArrayLike, /, *, lower: ArrayLike | None = None, upper: ArrayLike | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Checked (lower, upper) bounds, each (M,), defaulting to the data's column min / max.

    Examples:
        >>> normalisation_box([[0, 3], [2, 1]])
        (array([0., 1.]), array([2., 3.]))
    """
    pts = as_points(points)  # (N, M)
    m = pts.shape[1]
    if (lower is None or upper is None) and len(pts) == 0:
        raise ValueError("cannot take default bounds of an empty set of points; pass lower and upper")
    lo = pts.min(axis=0) if lower is None else np.array(lower, dtype=np.float64)  # (M,)
    hi = pts.max(axis=0) if upper is None else np.array(upper, dtype=np.float64)  # (M,)
    for name, b in (("lower", lo), ("upper", hi)):
        if b.shape != (m,):
            raise ValueError(f"'{name}' must have length {m} (one per objective), but it has shape {b.shape}")
        if not np.isfinite(b).all():
            raise ValueError(f"'{name}' must be finite; got {b.tolist()}")
    if (hi < lo).any():
        bad = np.flatnonzero(hi < lo).tolist()
        raise ValueError(f"'upper' is below 'lower' for objective(s) {bad}: {hi.tolist()} < {lo.tolist()}")
    return lo, hi


def ray_distances(z: ArrayLike, preferences: ArrayLike, /) -> np.ndarray:
    """Distance of each normalised point to each preference ray.

    The ray of w starts at o = (1, ..., 1) with unit direction u = (w - o) / |w - o|. For
    v = z - o and t = v . u the distance is |v - t u| when t >= 0, else |v| (the origin is the
    nearest ray point).

    Args:
        z: (N, M) normalised points.
        preferences: (P, M) weights on the simplex.

    Returns:
        (P, N) float64 distances.

    Examples:
        >>> ray_distances([[0.5, 0.5], [1.0, 0.0], [2.0, 2.0]], [[0.5, 0.5]]).round(4)
        array([[0.    , 0.7071, 1.4142]])
    """
    z = np.asarray(z, dtype=np.float64)  # (N, M)
    w = np.asarray(preferences, dtype=np.float64)  # (P, M)
    v = z - 1.0  # (N, M) from the ideal point
    u = w - 1.0  # (P, M); never zero: weights sum to 1, so some w_i < 1 once M >= 2
    u /= np.linalg.norm(u, axis=1, keepdims=True)
    out = np.empty((len(w), len(z)))  # (P, N)
    for i, ui in enumerate(u):
        # Per preference, not one (P, N, M) block: the residual is computed directly rather than
        # as |v|^2 - t^2, which cancels badly for points on the ray, and memory stays O(N M).
        t = np.maximum(v @ ui, 0.0)  # (N,) behind the origin, the origin is nearest
        out[i] = np.linalg.norm(v - t[:, None] * ui, axis=1)
    return out


def select_direction(
    points: ArrayLike,
    preferences: ArrayLike,
    /,
    *,
    k: int,
    lower: ArrayLike | None = None,
    upper: ArrayLike | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """For each preference, the k points nearest its ray (ParetoHqD's selection).

    Args:
        points: (N, M) scores of the pool, every objective maximised.
        preferences: (P, M) weights on the simplex.
        k: points per preference, 1 <= k <= N.
        lower: (M,) r_min of the whole scored dataset; default the pool's minima.
        upper: (M,) r_max of the whole scored dataset; default the pool's maxima.

    Returns:
        indices (P, k) rows of `points`, nearest first (ties: lower row first), and
        distances (P, k) their ray distances in normalised space.

    Raises:
        ValueError: bad points, preferences, bounds or k.

    Examples:
        >>> pts = [[1.0, 0.0], [0.9, 0.5], [0.5, 0.9], [0.0, 1.0]]
        >>> idx, dist = select_direction(pts, [[1.0, 0.0], [0.5, 0.5]], k=2)
        >>> idx
        array([[0, 1],
               [1, 2]])
    """
    z, w = _prepare(points, preferences, k, lower, upper)  # (N, M), (P, M)
    dist = ray_distances(z, w)  # (P, N)
    order = _stable_top_k(np.round(dist, _KEY_DECIMALS), k)  # (P, k)
    return order, np.take_along_axis(dist, order, axis=1)


def select_scalarised(
    points: ArrayLike,
    preferences: ArrayLike,
    /,
    *,
    k: int,
    lower: ArrayLike | None = None,
    upper: ArrayLike | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """For each preference, the k points with the largest w . z (linear scalarisation ablation).

    Same arguments and outputs as `select_direction`; `distances` are still ray distances, so
    the two methods' outputs mean the same thing and can be compared.

    Examples:
        >>> pts = [[1.0, 0.0], [0.9, 0.5], [0.5, 0.9], [0.0, 1.0]]
        >>> select_scalarised(pts, [[1.0, 0.0], [0.5, 0.5]], k=2)[0]
        array([[0, 1],
               [1, 2]])
    """
    z, w = _prepare(points, preferences, k, lower, upper)  # (N, M), (P, M)
    utility = w @ z.T  # (P, N)
    order = _stable_top_k(-np.round(utility, _KEY_DECIMALS), k)  # (P, k)
    return order, np.take_along_axis(ray_distances(z, w), order, axis=1)


def _prepare(points, preferences, k, lower, upper) -> tuple[np.ndarray, np.ndarray]:
    pts = as_points(points)  # (N, M)
    w = check_preferences(preferences, pts.shape[1])  # (P, M)
    if pts.shape[1] < 2:
        raise ValueError("selection needs at least 2 objectives; with one, a preference has no direction")
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 1 <= k <= len(pts):
        raise ValueError(f"k must be an int in [1, {len(pts)}] (the number of points); got {k!r}")
    return normalise(pts, lower=lower, upper=upper), w


def _stable_top_k(key: np.ndarray, k: int) -> np.ndarray:
    """(P, k) columns with the smallest keys per row; equal keys keep row order (stable)."""
    if k < key.shape[1] // 8:
        # argpartition is O(N); then sort only the candidates. Include every value equal to
        # the k-th so the stable sort, not the partition, decides ties.
        kth = np.partition(key, k - 1, axis=1)[:, k - 1 : k]  # (P, 1)
        out = np.empty((key.shape[0], k), dtype=np.int64)
        for i, row in enumerate(key):
            cand = np.flatnonzero(row <= kth[i])  # ascending indices
            out[i] = cand[np.argsort(row[cand], kind="stable")[:k]]
        return out
    return np.argsort(key, axis=1, kind="stable")[:, :k]
