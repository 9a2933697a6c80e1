"""Non-dominated layers (maximisation) and the Pareto pool of the top layers.

Layer 0 holds the points no other point dominates; layer 1 those left undominated once layer 0
is removed, and so on (non-dominated sorting, Deb et al. 2002). Duplicated points share a layer.
Every objective is maximised. The work is done by moocore's C core; this module only adds
input checks and a filter that lets the pool skip ranking the million points it will never use.
"""

from __future__ import annotations

from typing import Literal

import moocore
import numpy as np
from numpy.typing import ArrayLike

# Below this many rows the pivot prefilter costs more than it saves; rank directly
# (measured with benchmarks/select.py: at 1e5 x 3 it breaks even, at 1e6 x 3 it is 4x faster).
_FILTER_MIN_ROWS = 200_000
# Rows of the random subsample whose layers supply the pivots of `_candidates`.
_SAMPLE_ROWS = 4096
# Pivots considered (a random subset beyond this) and kept: past a few dozen each extra pivot
# removes almost nothing, and the greedy choice costs O(considered x sample).
_CONSIDERED_PIVOTS = 256
_MAX_PIVOTS = 48
# Use the filter only if its pivots dominate this share of the sample. With many objectives the
# fronts are thick, pivots dominate little (about half at 1e6 x 5) and the filter only costs.
_MIN_COVER = 0.75


def as_points(points: ArrayLike, /, *, name: str = "points") -> np.ndarray:
    """Check an (N, M) score array and return it as a new float64 array.

    Args:
        points: scores, one row per sample and one column per objective.
        name: what to call the array in error messages.

    Returns:
        A float64 copy, so callers may negate or reorder it without touching the input.

    Raises:
        ValueError: not 2-D, no columns, or a NaN/inf score (the message names the rows).

    Examples:
        >>> as_points([[1, 2], [3, 4]]).dtype
        dtype('float64')
        >>> as_points([[1, 2], [float("nan"), 4]])
        Traceback (most recent call last):
        ...
        ValueError: points has 1 row(s) with NaN or inf scores; rows (0-based): [1]
    """
    arr = np.array(points, dtype=np.float64)  # (N, M), always a copy
    if arr.ndim != 2 or arr.shape[1] == 0:
        raise ValueError(f"{name} must be a 2-D array (n_points, n_objectives); got shape {arr.shape}")
    bad = np.flatnonzero(~np.isfinite(arr).all(axis=1))  # (n_bad,)
    if bad.size:
        shown = bad[:10].tolist()
        more = f" and {bad.size - 10} more" if bad.size > 10 else ""
        raise ValueError(
            f"{name} has {bad.size} row(s) with NaN or inf scores; rows (0-based): {shown}{more}"
        )
    return arr


def nondominated_layers(points: ArrayLike, /) -> np.ndarray:
    """Layer index of every point under maximisation; 0 is the Pareto front.

    Uses `moocore.pareto_rank`: O(N log N) for two objectives, one front at a time above that.
    For the few top layers of a large set use `pool_layers`, which skips the rest.

    Args:
        points: (N, M) scores, every objective maximised.

    Returns:
        (N,) int64 layer per point. Duplicated points share a layer.

    Raises:
        ValueError: bad shape or NaN/inf scores (see `as_points`).

    Examples:
        >>> nondominated_layers([[1, 1], [0, 1], [1, 0], [2, 2], [2, 2]])
        array([1, 2, 2, 0, 0])
    """
    pts = as_points(points)  # (N, M)
    if len(pts) == 0:
        return np.zeros(0, dtype=np.int64)
    return np.asarray(moocore.pareto_rank(pts, maximise=True), dtype=np.int64)


def pool_layers(
    points: ArrayLike, /, *, layers: int | Literal["auto"], min_size: int | None = None
) -> np.ndarray:
    """Exact layer index for the points of the top layers, -1 for every other point.

    `layers=L` keeps layers 0..L-1. `layers="auto"` keeps the fewest top layers whose union holds
    at least `min_size` points (everything, if the data holds fewer).

    Args:
        points: (N, M) scores, every objective maximised.
        layers: how many top layers, or "auto".
        min_size: the pool size "auto" must reach; required for "auto", ignored otherwise.

    Returns:
        (N,) int64: the layer of each pool point, -1 outside the pool.

    Raises:
        ValueError: bad points, `layers` < 1, or "auto" without a `min_size` >= 1.

    Examples:
        >>> pts = [[3, 0], [0, 3], [2, 2], [1, 1], [0, 0]]
        >>> pool_layers(pts, layers=1)
        array([ 0,  0,  0, -1, -1])
        >>> pool_layers(pts, layers="auto", min_size=4)
        array([ 0,  0,  0,  1, -1])
    """
    pts = as_points(points)  # (N, M)
    if layers == "auto":
        if min_size is None or isinstance(min_size, bool) or int(min_size) < 1:
            raise ValueError(f"layers='auto' needs min_size >= 1; got min_size={min_size!r}")
        target = None
    elif isinstance(layers, (int, np.integer)) and not isinstance(layers, bool) and layers >= 1:
        target = int(layers)
    else:
        raise ValueError(f"layers must be an int >= 1 or 'auto'; got {layers!r}")
    # moocore minimises; negating once here avoids the copy `maximise=True` makes on every call.
    neg = -pts  # (N, M)
    if len(neg) < _FILTER_MIN_ROWS:
        return _rank_top(neg, n_layers=target, min_size=None if target else min_size)
    rng = np.random.default_rng(0)  # only the speed depends on the sample; results are exact
    sample = neg[rng.choice(len(neg), _SAMPLE_ROWS, replace=False)] if len(neg) > _SAMPLE_ROWS else neg
    sample_layer = _rank_top(sample, n_layers=None, min_size=None)  # (s,)
    guess = target or _first_guess(sample_layer, min_size * len(sample) / max(len(neg), 1))
    while True:
        cand = _candidates(neg, sample, sample_layer, guess)  # (C,) row indices
        full = len(cand) == len(neg)
        # Layers below `guess` are complete among the candidates; a deeper one may lack points,
        # so "auto" stops at `guess` layers unless nothing was filtered out.
        cap = target or (None if full else guess)
        cand_layer = _rank_top(neg[cand], n_layers=cap, min_size=None if target else min_size)
        taken = int((cand_layer >= 0).sum())
        if target or full or taken >= min_size:
            out = np.full(len(neg), -1, dtype=np.int64)  # (N,)
            out[cand] = cand_layer
            return out
        # Too few layers. Fronts grow with depth, so model the pool as ~ layers^2 (exact for
        # uniform 2-D data, an overestimate above) rather than linear, which overshoots 3x.
        guess = max(guess + 1, int(np.ceil(guess * np.sqrt(min_size / max(taken, 1)))) + 1)


def pareto_pool(
    points: ArrayLike, /, *, layers: int | Literal["auto"], min_size: int | None = None
) -> tuple[np.ndarray, int]:
    """Mask of the top non-dominated layers, and how many layers it holds.

    Args:
        points: (N, M) scores, every objective maximised.
        layers: how many top layers, or "auto" (fewest holding `min_size` points).
        min_size: the pool size "auto" must reach.

    Returns:
        (N,) bool mask of the pool, and the number of layers in it (fewer than `layers` when the
        data has fewer layers).

    Raises:
        ValueError: as `pool_layers`.

    Examples:
        >>> mask, used = pareto_pool([[3, 0], [0, 3], [2, 2], [1, 1], [0, 0]], layers=2)
        >>> mask.tolist(), used
        ([True, True, True, True, False], 2)
    """
    layer = pool_layers(points, layers=layers, min_size=min_size)  # (N,)
    return layer >= 0, int(layer.max()) + 1 if layer.size else 0


def _rank_top(neg: np.ndarray, *, n_layers: int | None, min_size: int | None) -> np.ndarray:
    """Layers of `neg` (minimised) until `n_layers` are taken or `min_size` points are.

    With both None, rank everything. Returns (n,) layer per row, -1 where not reached.
    """
    if len(neg) == 0:
        return np.zeros(0, dtype=np.int64)
    if neg.shape[1] == 2:
        # Two objectives: pareto_rank is O(n log n) for all layers at once, cheaper than peeling.
        layer = np.asarray(moocore.pareto_rank(neg), dtype=np.int64)  # (n,)
    else:
        # Above two, pareto_rank peels every front; peel only the ones asked for.
        layer = _peel(neg, n_layers=n_layers, min_size=min_size)
    stop = layer.max() + 1
    if n_layers is not None:
        stop = min(stop, n_layers)
    if min_size is not None:
        counts = np.cumsum(np.bincount(layer[layer >= 0]))  # (n_layers_seen,)
        stop = min(stop, int(np.searchsorted(counts, min_size)) + 1)
    layer[layer >= stop] = -1
    return layer


def _peel(neg: np.ndarray, *, n_layers: int | None, min_size: int | None) -> np.ndarray:
    """Peel fronts with moocore.is_nondominated; (n,) layer per row, -1 where not reached."""
    layer = np.full(len(neg), -1, dtype=np.int64)
    rest = np.arange(len(neg))  # (r,) rows not yet in a layer
    current, taken = 0, 0
    while rest.size and (n_layers is None or current < n_layers) and (min_size is None or taken < min_size):
        # keep_weakly: duplicates of a front point belong to that front, as in pareto_rank.
        front = moocore.is_nondominated(neg[rest], keep_weakly=True)  # (r,) bool
        layer[rest[front]] = current
        taken += int(front.sum())
        rest = rest[~front]
        current += 1
    return layer


def _first_guess(sample_layer: np.ndarray, share: float) -> int:
    """First guess at the layers "auto" needs: twice the sample layers holding `share` points.

    Fronts thicken as N grows, so the sample's count underestimates the full data's; doubling
    usually saves a second pass, and a wrong guess only costs time.
    """
    counts = np.cumsum(np.bincount(sample_layer))  # (n_sample_layers,)
    return max(2, 2 * (int(np.searchsorted(counts, share)) + 1))


def _candidates(neg: np.ndarray, sample: np.ndarray, sample_layer: np.ndarray, n_layers: int) -> np.ndarray:
    """Rows of `neg` that may lie in layers 0..n_layers-1: all but those a pivot strictly dominates.

    Why this is exact: a point's layer within a subset is at most its layer in the whole set, so
    a sample point of sample layer >= n_layers-1 (a pivot) has true layer >= n_layers-1, and any
    point it dominates has layer >= n_layers. The kept set is also closed under "dominates" (a
    dominator of a kept point is never dominated by a pivot, by transitivity), so peeling the
    kept rows yields every kept point's true layer.
    """
    if n_layers < 2:  # the front itself needs no filter: one moocore call on everything
        return np.arange(len(neg))
    pivots = sample[sample_layer == n_layers - 1]  # (p, M)
    if len(pivots) == 0:  # the sample has fewer layers: nothing is known to lie deeper
        return np.arange(len(neg))
    if len(pivots) > _CONSIDERED_PIVOTS:
        pivots = pivots[np.random.default_rng(0).choice(len(pivots), _CONSIDERED_PIVOTS, replace=False)]
    # Greedy cover of the sample: take the pivot dominating most not-yet-covered sample points.
    covers = _dominated_by_each(sample, pivots)  # (p, s) bool
    order, covered = [], np.zeros(len(sample), dtype=bool)
    while len(order) < _MAX_PIVOTS:
        gain = (covers & ~covered).sum(axis=1)  # (p,)
        best = int(gain.argmax())
        if gain[best] == 0:
            break
        order.append(best)
        covered |= covers[best]
    if covered.mean() < _MIN_COVER:
        return np.arange(len(neg))
    return _not_dominated(neg, pivots[order])


def _not_dominated(neg: np.ndarray, pivots: np.ndarray) -> np.ndarray:
    """Rows of `neg` no pivot strictly dominates (minimisation), pivots tried in the given order.

    Column by column on contiguous (n,) arrays: numpy reduces over a 3-wide axis slowly, and
    compacting only after big drops avoids copying the columns once per pivot.
    """
    cols = np.ascontiguousarray(neg.T)  # (M, C)
    keep = np.arange(len(neg))  # (C,)
    alive = np.ones(len(keep), dtype=bool)  # (C,)
    for p in pivots:
        ge = cols[0] >= p[0]  # (C,) weakly worse than p in every objective so far
        for j in range(1, len(p)):
            ge &= cols[j] >= p[j]
        hit = np.flatnonzero(ge & alive)  # (h,)
        # A duplicate of the pivot shares its layer, so only strict domination removes a row.
        same = np.all(cols[:, hit] == p[:, None], axis=0)  # (h,)
        alive[hit[~same]] = False
        if alive.sum() < 0.5 * len(alive):
            keep, cols, alive = keep[alive], cols[:, alive], alive[alive]
    return keep[alive]


def _dominated_by_each(points: np.ndarray, pivots: np.ndarray) -> np.ndarray:
    """(p, n) bool: pivot i strictly dominates point j (minimisation)."""
    ge = np.all(points[None, :, :] >= pivots[:, None, :], axis=2)  # (p, n)
    gt = np.any(points[None, :, :] > pivots[:, None, :], axis=2)  # (p, n)
    return ge & gt
