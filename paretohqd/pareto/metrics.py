"""Front metrics for evaluation: hypervolume in normalised space, the distance to a reference front
(IGD+, additive epsilon), the Pareto subset, and how evenly a front is spread (Schott's spacing,
PGMORL's sparsity).

Convention (every objective maximised): points are min-max normalised with the given bounds,
z = (r - lower) / (upper - lower), so `lower` maps to 0 and `upper` to 1. The reference point
`ref` is given in that normalised space and defaults to the origin, i.e. the raw point `lower`
(the nadir). The hypervolume is the measure of the region z weakly dominates and that dominates
`ref`; with the default ref and points inside the bounds it lies in [0, 1], 1 being the whole
box. Points that do not strictly dominate `ref` add nothing. Fix `lower`/`upper` once per
comparison so every method is measured in the same box.
"""

from __future__ import annotations

import moocore
import numpy as np
from numpy.typing import ArrayLike

from paretohqd.pareto.layers import as_points
from paretohqd.pareto.rays import normalise


def hypervolume(
    points: ArrayLike, /, *, lower: ArrayLike, upper: ArrayLike, ref: ArrayLike | None = None
) -> float:
    """Hypervolume of maximised points after normalising with `lower`/`upper`.

    Args:
        points: (N, M) points, e.g. mean rewards of each model, every objective maximised.
        lower: (M,) raw values mapped to 0 (nadir); required, so runs can share one box.
        upper: (M,) raw values mapped to 1 (ideal); each must exceed `lower`.
        ref: (M,) reference point in normalised space; default the origin (raw `lower`).

    Returns:
        The hypervolume (0.0 for no points).

    Raises:
        ValueError: bad points, bounds, `ref` of the wrong length, or upper <= lower.

    Examples:
        Two points (0.5, 1) and (1, 0.5) in the unit box: the union of two 0.5 x 1 rectangles
        overlapping in a 0.5 x 0.5 square, 0.5 + 0.5 - 0.25 = 0.75.

        >>> hypervolume([[5, 20], [10, 15]], lower=[0, 10], upper=[10, 20])
        0.75
    """
    pts = as_points(points)  # (N, M)
    lo = np.asarray(lower, dtype=np.float64)  # (M,)
    hi = np.asarray(upper, dtype=np.float64)  # (M,)
    if lo.shape == hi.shape == (pts.shape[1],) and (hi <= lo).any():
        # A zero-width box would silently squash an objective; hypervolume needs real bounds.
        raise ValueError(f"'upper' must exceed 'lower' in every objective; got lower={lo.tolist()}, "
                         f"upper={hi.tolist()}")
    z = normalise(pts, lower=lo, upper=hi)  # (N, M)
    r = np.zeros(pts.shape[1]) if ref is None else np.asarray(ref, dtype=np.float64)  # (M,)
    if r.shape != (pts.shape[1],):
        raise ValueError(f"'ref' must have length {pts.shape[1]}, but it has shape {r.shape}")
    if len(z) == 0:
        return 0.0
    return float(moocore.hypervolume(z, ref=r, maximise=True))


def igd_plus(points: ArrayLike, reference: ArrayLike, /, *, lower: ArrayLike, upper: ArrayLike) -> float:
    """IGD+ of maximised points to a reference front, both normalised with `lower`/`upper`.

    The mean over reference points r of the distance from r to the nearest point's dominated
    region: d+(r, a) = |max(r - a, 0)| (Ishibuchi et al. 2015; `moocore.igd_plus`). 0 when the
    points weakly dominate every reference point; lower is better. Usually the reference is the
    nondominated union of every method's points, so each method is measured against the best
    front any of them reached.

    Args:
        points: (N, M) points (e.g. one method's model means), every objective maximised.
        reference: (R, M) reference front in the same raw units.
        lower: (M,) raw values mapped to 0.
        upper: (M,) raw values mapped to 1; each must exceed `lower`.

    Returns:
        IGD+ in normalised units.

    Raises:
        ValueError: bad points, no points or no reference, or bad bounds.

    Examples:
        Reference (0, 1), (1, 0) in the unit box; the single point (0.5, 0.5) falls short of each
        by 0.5 in one objective: (0.5 + 0.5) / 2 = 0.5.

        >>> igd_plus([[5, 5]], [[0, 10], [10, 0]], lower=[0, 0], upper=[10, 10])
        0.5
    """
    z, ref = _both(points, reference, lower, upper)  # (N, M), (R, M)
    return float(moocore.igd_plus(z, ref=ref, maximise=True))


def epsilon_additive(points: ArrayLike, reference: ArrayLike, /, *, lower: ArrayLike, upper: ArrayLike) -> float:
    """Additive epsilon indicator of maximised points to a reference front, both normalised.

    The smallest eps such that every reference point r is weakly dominated by some point a
    shifted by eps in every objective: max_r min_a max_k (r_k - a_k) (Zitzler et al. 2003;
    `moocore.epsilon_additive`). 0 (or below) when the points weakly dominate the reference;
    lower is better. It is the worst shortfall, where IGD+ is the average one.

    Args:
        points: (N, M) points, every objective maximised.
        reference: (R, M) reference front in the same raw units.
        lower: (M,) raw values mapped to 0.
        upper: (M,) raw values mapped to 1; each must exceed `lower`.

    Returns:
        epsilon in normalised units.

    Raises:
        ValueError: bad points, no points or no reference, or bad bounds.

    Examples:
        The point (0.5, 0.5) must move up by 0.5 to reach (0, 1) or (1, 0); (0.4, 0.6) only 0.1.

        >>> epsilon_additive([[5, 5]], [[0, 10], [10, 0], [4, 6]], lower=[0, 0], upper=[10, 10])
        0.5
        >>> round(epsilon_additive([[5, 5]], [[4, 6]], lower=[0, 0], upper=[10, 10]), 12)
        0.1
    """
    z, ref = _both(points, reference, lower, upper)  # (N, M), (R, M)
    return float(moocore.epsilon_additive(z, ref=ref, maximise=True))


def _both(points, reference, lower, upper) -> tuple[np.ndarray, np.ndarray]:
    """Points and reference as (N, M), (R, M), normalised in one checked box."""
    pts, ref = as_points(points), as_points(reference, name="reference")  # (N, M), (R, M)
    if len(pts) == 0 or len(ref) == 0 or pts.shape[1] != ref.shape[1]:
        raise ValueError(f"points and reference need rows and one number of objectives; got shapes {pts.shape} "
                         f"and {ref.shape}")
    lo, hi = np.asarray(lower, dtype=np.float64), np.asarray(upper, dtype=np.float64)  # (M,), (M,)
    if lo.shape == hi.shape == (pts.shape[1],) and (hi <= lo).any():
        raise ValueError(f"'upper' must exceed 'lower' in every objective; got lower={lo.tolist()}, "
                         f"upper={hi.tolist()}")
    return normalise(pts, lower=lo, upper=hi), normalise(ref, lower=lo, upper=hi)


def pareto_subset(points: ArrayLike, /) -> np.ndarray:
    """Mask of the points no other point dominates (maximisation); duplicates are all kept.

    Args:
        points: (N, M) points, every objective maximised.

    Returns:
        (N,) bool mask.

    Raises:
        ValueError: bad shape or NaN/inf (see `as_points`).

    Examples:
        >>> pareto_subset([[1, 2], [2, 1], [1, 1], [2, 1]]).tolist()
        [True, True, False, True]
    """
    pts = as_points(points)  # (N, M)
    if len(pts) == 0:
        return np.zeros(0, dtype=bool)
    return np.asarray(moocore.is_nondominated(pts, maximise=True, keep_weakly=True), dtype=bool)


def spacing(points: ArrayLike, /) -> float:
    """Schott's spacing: how unevenly the points are spread (0 = every point equally far from its
    nearest neighbour).

    d_i = min over j != i of sum_k |z_ik - z_jk| (L1 distance to the nearest other point, as in
    Schott 1995), and spacing = sqrt(sum_i (mean(d) - d_i)^2 / (N - 1)). It is in the units of
    the points, so pass normalised points to compare fronts of several objectives. Duplicate
    points count (distance 0 to each other).

    Args:
        points: (N, M) points, usually a Pareto front in a normalised box.

    Returns:
        The spacing; NaN for fewer than 2 points (no nearest neighbour: undefined, not 0, so a
        single model is not reported as a perfectly even front).

    Raises:
        ValueError: bad shape or NaN/inf (see `as_points`).

    Examples:
        Evenly spaced points have spacing 0. Moving the middle one to (0.25, 0.75) gives nearest
        L1 distances d = (0.5, 0.5, 1.5), mean 5/6: sqrt(((1/3)^2 * 2 + (2/3)^2) / 2) = 0.5774.

        >>> spacing([[0, 1], [0.5, 0.5], [1, 0]])
        0.0
        >>> round(spacing([[0, 1], [0.25, 0.75], [1, 0]]), 4)
        0.5774
        >>> spacing([[0.3, 0.7]])
        nan
    """
    pts = as_points(points)  # (N, M)
    n = len(pts)
    if n < 2:
        return float("nan")
    dist = np.abs(pts[:, None, :] - pts[None, :, :]).sum(axis=2)  # (N, N) L1 distances
    np.fill_diagonal(dist, np.inf)  # a point is not its own neighbour
    d = dist.min(axis=1)  # (N,)
    return float(np.sqrt(((d - d.mean()) ** 2).sum() / (n - 1)))


def sparsity(points: ArrayLike, /) -> float:
    """PGMORL's sparsity: the mean squared gap between neighbours along each objective (lower is
    denser).

    With s_k the sorted values of objective k, sparsity = sum_k sum_i (s_k[i+1] - s_k[i])^2 / (N - 1)
    (Xu et al. 2020, "Prediction-Guided Multi-Objective Reinforcement Learning", eq. 5). In
    squared units of the points: pass normalised points.

    Args:
        points: (N, M) points, usually a Pareto front in a normalised box.

    Returns:
        The sparsity; NaN for fewer than 2 points (no gap to measure: undefined).

    Raises:
        ValueError: bad shape or NaN/inf (see `as_points`).

    Examples:
        Three points evenly spread over the unit square's diagonal front: gaps of 0.5 in each of
        the 2 objectives, (4 * 0.25) / 2 = 0.5. Two points at the ends: (1 + 1) / 1 = 2.

        >>> sparsity([[0, 1], [0.5, 0.5], [1, 0]])
        0.5
        >>> sparsity([[0, 1], [1, 0]])
        2.0
    """
    pts = as_points(points)  # (N, M)
    n = len(pts)
    if n < 2:
        return float("nan")
    gaps = np.diff(np.sort(pts, axis=0), axis=0)  # (N - 1, M): each objective sorted on its own
    return float((gaps**2).sum() / (n - 1))
