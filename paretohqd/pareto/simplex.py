"""Which trained preferences mix to a preference: points of the simplex, and the cells of the
trained preferences that contain them.

A preference w on a run's grid is that grid point. Any other w on the simplex is the exact mix of
the trained preferences around it, with lambda the barycentric coordinates of w in the cell that
contains it: for two objectives the two neighbouring preferences; for a simplex grid
(`simplex_grid`) the grid's cell (the Freudenthal triangulation, which for three objectives is
the grid's triangles); for an explicit list of preferences a Delaunay triangulation of them (scipy).
"""

from __future__ import annotations

import numpy as np

from paretohqd.pareto.preferences import simplex_grid

TOL = 1e-9
"""A preference within this (max-abs) of a trained one is that one."""


def parse_weights(text: str, objectives: list[str]) -> np.ndarray:
    """`0.3,0.7` as (M,) weights, checked to be a point of the simplex with one weight per objective.

    Examples:
        >>> parse_weights("0.3, 0.7", ["helpful", "harmless"]).tolist()
        [0.3, 0.7]

    Raises:
        ValueError: not numbers, the wrong count, a negative weight, or a sum other than 1.
    """
    try:
        values = [float(x) for x in str(text).split(",")]
    except ValueError:
        raise ValueError(f"weights {text!r}: not numbers; give one weight per objective "
                         f"({', '.join(objectives)}), e.g. {_example(objectives)}") from None
    return check_weights(values, objectives)


def check_weights(weights, objectives: list[str]) -> np.ndarray:
    """`weights` as a float64 (M,) point of the simplex.

    Examples:
        >>> check_weights([0.5, 0.5], ["helpful", "harmless"]).tolist()
        [0.5, 0.5]
        >>> check_weights([0.5, 0.6], ["helpful", "harmless"])
        Traceback (most recent call last):
        ...
        ValueError: weights 0.5,0.6 sum to 1.1; give non-negative weights summing to 1, one per objective (helpful, harmless), e.g. 0.5,0.5

    Raises:
        ValueError: the wrong count, a negative or non-finite weight, or a sum off 1 by more than 1e-6.
    """
    w = np.asarray(weights, dtype=np.float64).reshape(-1)  # (M,)
    shown = ",".join(f"{x:g}" for x in w)
    fix = f"one per objective ({', '.join(objectives)}), e.g. {_example(objectives)}"
    if len(w) != len(objectives):
        raise ValueError(f"weights {shown}: {len(w)} weights for {len(objectives)} objectives; give {fix}")
    if not np.isfinite(w).all() or (w < 0).any():
        raise ValueError(f"weights {shown}: a weight is negative or not finite; give non-negative weights summing to 1, {fix}")
    if abs(w.sum() - 1) > 1e-6:
        raise ValueError(f"weights {shown} sum to {w.sum():.6g}; give non-negative weights summing to 1, {fix}")
    return w / w.sum()


def _example(objectives: list[str]) -> str:
    return ",".join(f"{x:g}" for x in np.full(len(objectives), 1 / len(objectives)).round(4))


def grid_size(prefs: np.ndarray) -> int | None:
    """n when `prefs` (P, M) is exactly `simplex_grid(M, n)` in some order, else None.

    Examples:
        >>> grid_size(simplex_grid(3, 5)[::-1])
        5
        >>> grid_size(np.array([[0.2, 0.8], [0.8, 0.2]])) is None
        True
    """
    positive = prefs[prefs > TOL]
    if len(positive) == 0:
        return None
    n = int(round(1 / positive.min())) + 1
    grid = simplex_grid(prefs.shape[1], n)
    if len(grid) != len(prefs):
        return None
    a, b = prefs[np.lexsort(prefs.T[::-1])], grid[np.lexsort(grid.T[::-1])]
    return n if np.abs(a - b).max() <= TOL else None


def lattice_cell(w: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """The cell of `simplex_grid(M, n)` that contains w, and w's barycentric weights in it.

    In cumulative coordinates c_k = (n - 1)(w_1 + ... + w_k), k < M, the grid points are the
    integer points with 0 <= c_1 <= ... <= c_{M-1} <= n - 1, and the hyperplanes w_i = j / (n - 1)
    cut the simplex into the cells of the Freudenthal (Kuhn) triangulation: from floor(c), step
    one unit along each coordinate in order of decreasing fractional part (for three objectives,
    the grid's triangles).

    Returns:
        (K, M) vertices (grid weights) and (K,) positive weights summing to 1; vertices of weight 0
        (w on a face of the cell) are left out.

    Examples:
        >>> v, lam = lattice_cell(np.array([0.1, 0.6, 0.3]), 3)  # grid step 0.5
        >>> v.tolist(), lam.round(12).tolist()
        ([[0.0, 0.5, 0.5], [0.0, 1.0, 0.0], [0.5, 0.5, 0.0]], [0.6, 0.2, 0.2])
        >>> lattice_cell(np.array([0.25, 0.5, 0.25]), 3)[0].tolist()  # on an edge: two vertices
        [[0.0, 0.5, 0.5], [0.5, 0.5, 0.0]]
    """
    m, steps = len(w), n - 1
    c = np.cumsum(w[:-1]) * steps  # (M-1,) non-decreasing, in [0, steps]
    base = np.clip(np.floor(c), 0, steps - 1)  # a point on the far face belongs to the cell below it
    f = np.clip(c - base, 0.0, 1.0)  # (M-1,) fractional parts
    # decreasing fraction; among ties the later coordinate first, so every vertex keeps c ordered
    order = np.lexsort((-np.arange(m - 1), -f))
    fs = np.concatenate([[1.0], f[order], [0.0]])  # (M+1,)
    lam = fs[:-1] - fs[1:]  # (M,) the vertices' barycentric weights
    vertices, v = [], base.copy()
    for j in range(m):
        if j:
            v[order[j - 1]] += 1
        vertices.append(np.diff(np.concatenate([[0.0], v, [steps]])) / steps)  # back to weights
    keep = lam > TOL
    return np.array(vertices)[keep], lam[keep] / lam[keep].sum()


def delaunay_cell(prefs: np.ndarray, w: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """The simplex of a Delaunay triangulation of `prefs` (P, M), projected to their first M - 1
    weights (an affine map of the simplex, so barycentric weights are the same), that contains w.

    Returns:
        (K,) preference indices and (K,) positive weights summing to 1, or None when w lies
        outside the hull of the preferences.

    Raises:
        ValueError: scipy missing, or preferences that span no cell (all on one line).
    """
    try:
        from scipy.spatial import Delaunay, QhullError
    except ImportError:
        raise ValueError("mixing an explicit list of 3+ objective preferences needs scipy: pip install scipy") from None
    m = prefs.shape[1]
    try:
        tri = Delaunay(prefs[:, :-1])
    except QhullError:
        raise ValueError(f"select.preferences: the {len(prefs)} trained preferences span no {m - 1}-d cell "
                          f"(they lie on a lower-dimensional face), so no other preference can be mixed from them") from None
    x = w[None, :-1]  # (1, M-1)
    s = int(tri.find_simplex(x, tol=TOL)[0])
    if s < 0:
        return None
    t = tri.transform[s]  # (M, M-1): the inverse affine map, then the offset
    b = t[:m - 1] @ (x[0] - t[m - 1])  # (M-1,)
    lam = np.concatenate([b, [1 - b.sum()]])
    lam = np.where(lam > TOL, lam, 0.0)
    keep = lam > 0
    return tri.simplices[s][keep], lam[keep] / lam[keep].sum()


def barycentric(prefs: np.ndarray, w: np.ndarray) -> list[tuple[int, float]] | None:
    """Which trained preferences mix to w, and with which weights.

    Args:
        prefs: (P, M) the trained preferences.
        w: (M,) a point of the simplex.

    Returns:
        (index, lambda) pairs with lambda > 0 summing to 1; [(i, 1.0)] when w is preference i;
        None when w lies outside every cell of the trained preferences.

    Examples:
        >>> barycentric(simplex_grid(2, 11), np.array([0.35, 0.65]))
        [(3, 0.5), (4, 0.5)]
        >>> barycentric(np.array([[0.2, 0.8], [0.8, 0.2]]), np.array([0.9, 0.1])) is None
        True
    """
    near = np.abs(prefs - w).max(axis=1)  # (P,)
    if near.min() <= TOL:
        return [(int(near.argmin()), 1.0)]
    if prefs.shape[1] == 2:  # a line: the neighbours on either side along w_1
        order = np.argsort(prefs[:, 0], kind="stable")
        xs = prefs[order, 0]
        j = int(np.searchsorted(xs, w[0]))
        if j == 0 or j == len(xs):
            return None
        t = float((w[0] - xs[j - 1]) / (xs[j] - xs[j - 1]))
        return [(int(order[j - 1]), round(1 - t, 12)), (int(order[j]), round(t, 12))]
    n = grid_size(prefs)
    if n is not None:
        vertices, lam = lattice_cell(w, n)
        idx = [int(np.abs(prefs - v).max(axis=1).argmin()) for v in vertices]
    else:
        found = delaunay_cell(prefs, w)
        if found is None:
            return None
        idx, lam = [int(i) for i in found[0]], found[1]
    return [(i, round(float(x), 12)) for i, x in zip(idx, lam)]
