"""How non-convex a Pareto front is: which of its points no weighted sum can reach.

A linear scalarisation w . z (w >= 0) only ever prefers points on the upper-right part of the
front's convex hull; a point below that hull is top for no weight vector, whatever the grid, so a
scalarised selection skips it while a preference ray may still pass through it (the paper's
"non-convex front" argument). The share of such points measures how much a front hides from
weighted sums.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike

from paretohqd.pareto.layers import as_points, nondominated_layers

# margin (in the unit box the points are scaled to) by which a convex combination must beat a
# point in every objective for the point to count as inside: round-off of the LP, not geometry
_TOL = 1e-9


def below_hull(points: ArrayLike, /) -> np.ndarray:
    """Which points lie strictly inside the upper-right convex hull of the set (maximisation).

    Point p of the set S is *strictly inside* when some convex combination c = sum_j l_j q_j of
    points of S (l >= 0, sum l = 1) beats it in every objective: c_i > p_i for all i. Equivalently
    (separating hyperplane theorem) p maximises w . q over S for no weight vector w >= 0, w != 0:
    no weighted sum, on any weights, ranks it first. Points on the hull's upper-right faces (the
    extremes, the hull's vertices there and points on its edges between them) are not inside.

    Decided by one linear programme per point: maximise t subject to sum_j l_j q_j >= p + t and
    sum_j l_j = 1, l >= 0; p is inside when t > 0 (beyond round-off). Every objective is scaled
    to [0, 1] first, which changes nothing (the definition is invariant under positive affine
    maps of each objective) but makes the tolerance unit-free.

    Args:
        points: (N, M) scores, every objective maximised.

    Returns:
        (N,) bool, True where the point is strictly inside.

    Examples:
        >>> below_hull([[0, 1], [0.2, 0.2], [1, 0]])  # (0.2, 0.2) < (0.5, 0.5) on the chord
        array([False,  True, False])
        >>> below_hull([[0, 1], [0.8, 0.8], [1, 0]])  # a concave front: every point a weighted sum's best
        array([False, False, False])
        >>> below_hull([[0, 1], [0.5, 0.5], [1, 0]])  # on the chord: tied, not beaten
        array([False, False, False])
    """
    from scipy.optimize import linprog

    pts = as_points(points)  # (N, M)
    n, m = pts.shape
    lo, span = pts.min(axis=0), np.ptp(pts, axis=0)  # (M,), (M,)
    z = (pts - lo) / np.where(span > 0, span, 1.0)  # (N, M)
    # variables x = (l_1..l_n, t); minimise -t; constraints -(Z^T l) + t <= -p; sum l = 1
    c = np.zeros(n + 1)
    c[-1] = -1.0
    a_ub = np.hstack([-z.T, np.ones((m, 1))])  # (M, N + 1)
    a_eq = np.hstack([np.ones((1, n)), np.zeros((1, 1))])  # (1, N + 1)
    bounds = [(0, None)] * n + [(None, None)]
    out = np.zeros(n, dtype=bool)
    for i, p in enumerate(z):
        res = linprog(c, A_ub=a_ub, b_ub=-p, A_eq=a_eq, b_eq=[1.0], bounds=bounds, method="highs")
        out[i] = res.status == 0 and -res.fun > _TOL
    return out


def hull_inside_share(points: ArrayLike, /) -> float:
    """Share of the first Pareto layer's points strictly inside that layer's upper-right convex
    hull (`below_hull`): 0 for a convex (bulging-out) front, up to (n - 2) / n for two objectives
    when every point but the extremes sits below the chord. Duplicated front points count once.

    Args:
        points: (N, M) scores, every objective maximised; only the first layer is used.

    Returns:
        The share in [0, 1]; 0.0 for an empty set.

    Examples:
        >>> hull_inside_share([[0, 1], [0.2, 0.2], [1, 0], [0.1, 0.1]])  # (0.1, 0.1) is dominated
        0.3333333333333333
    """
    pts = as_points(points)  # (N, M)
    if len(pts) == 0:
        return 0.0
    front = np.unique(pts[nondominated_layers(pts) == 0], axis=0)  # (F, M)
    return float(below_hull(front).mean())
