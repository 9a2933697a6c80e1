"""A picture of a selection, like the paper's Figure 2: the scored data, the Pareto pool, and
for each preference its ray and its selected points, one colour per preference.

Drawn in raw objective units. With M > 2 objectives every pair gets a panel (the rays are
projected onto it).
"""

from __future__ import annotations

from itertools import combinations
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, never a window; safe on headless machines
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from numpy.typing import ArrayLike  # noqa: E402

from paretohqd.io import atomic_path  # noqa: E402

# Scatter at most this many background points: a million markers take minutes and show nothing more.
_MAX_CLOUD = 20_000


def thin(indices: np.ndarray) -> np.ndarray:
    """At most `_MAX_CLOUD` of `indices` (a seeded sample, in order) for a background scatter."""
    if len(indices) <= _MAX_CLOUD:
        return indices
    return np.sort(np.random.default_rng(0).choice(indices, _MAX_CLOUD, replace=False))


def ray_segment(preference: ArrayLike, lower: ArrayLike, upper: ArrayLike) -> np.ndarray:
    """End points (2, M), raw units, of a preference ray from r_max to where it leaves the box.

    In normalised space the ray is z(t) = 1 + t (w - 1); it passes the compromise point w at
    t = 1 and leaves the unit box when the coordinate with the smallest weight reaches 0, at
    t = 1 / (1 - min w).

    Examples:
        >>> ray_segment([0.5, 0.5], [0, 0], [2, 4])
        array([[2., 4.],
               [0., 0.]])
    """
    w = np.asarray(preference, dtype=np.float64)  # (M,)
    lo, hi = np.asarray(lower, dtype=np.float64), np.asarray(upper, dtype=np.float64)  # (M,)
    t_end = 1.0 / (1.0 - w.min())  # first coordinate to hit 0 is the one with the smallest weight
    z = np.stack([np.ones_like(w), 1.0 + t_end * (w - 1.0)])  # (2, M)
    return lo + z * (hi - lo)


def plot_selection(
    points: ArrayLike,
    pool: ArrayLike,
    chosen: ArrayLike,
    preferences: ArrayLike,
    /,
    *,
    lower: ArrayLike,
    upper: ArrayLike,
    objectives: list[str],
    path: str | Path,
    title: str = "",
) -> Path:
    """Draw the selection and write it to `path` as a PNG, atomically.

    Args:
        points: (N, M) scores.
        pool: (N,) bool mask of the Pareto pool.
        chosen: (P, k) selected rows of `points` per preference.
        preferences: (P, M) weights.
        lower: (M,) nadir used for the rays.
        upper: (M,) ideal used for the rays.
        objectives: M axis labels.
        path: the PNG to write.
        title: figure title.

    Returns:
        `path`.
    """
    pts = np.asarray(points, dtype=np.float64)  # (N, M)
    pool = np.asarray(pool, dtype=bool)  # (N,)
    chosen = np.asarray(chosen)  # (P, k)
    prefs = np.asarray(preferences, dtype=np.float64)  # (P, M)
    pairs = list(combinations(range(pts.shape[1]), 2))
    ncols = min(3, len(pairs))
    nrows = -(-len(pairs) // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(5.2 * ncols, 4.6 * nrows), squeeze=False)
    cloud = thin(np.flatnonzero(~pool))  # (n_rest,) at most
    colours = plt.get_cmap("viridis")(np.linspace(0.0, 0.95, len(prefs)))  # (P, 4)
    for ax, pair in zip(axes.flat, pairs):
        _draw_pair(ax, pair, pts, cloud, pool, chosen, prefs, colours, lower, upper, objectives)
    for ax in list(axes.flat)[len(pairs):]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=6, loc="lower left", markerscale=1.5)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)
    return Path(path)


def _draw_pair(ax, pair, pts, cloud, pool, chosen, prefs, colours, lower, upper, objectives) -> None:
    """One panel: objectives `pair` = (a, b) on the x and y axes."""
    a, b = pair
    ax.scatter(pts[cloud, a], pts[cloud, b], s=3, c="0.8", lw=0, label="scored data", rasterized=True)
    ax.scatter(pts[pool, a], pts[pool, b], s=6, c="0.35", lw=0, label="Pareto pool")
    for i, w in enumerate(prefs):
        seg = ray_segment(w, lower, upper)  # (2, M)
        ax.plot(seg[:, a], seg[:, b], color=colours[i], lw=1.0, alpha=0.8)
        ax.scatter(pts[chosen[i], a], pts[chosen[i], b], s=14, color=colours[i], lw=0,
                   label=f"w={np.round(w, 2).tolist()}" if len(prefs) <= 12 else None)
    ax.set_xlim(*_padded(lower[a], upper[a]))
    ax.set_ylim(*_padded(lower[b], upper[b]))
    ax.set_xlabel(objectives[a])
    ax.set_ylabel(objectives[b])


def _padded(lo: float, hi: float) -> tuple[float, float]:
    pad = 0.04 * (hi - lo) if hi > lo else 1.0
    return lo - pad, hi + pad
