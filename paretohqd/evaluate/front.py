"""The front of a method: per model mean reward with a bootstrap interval, hypervolume (with its
prompt-bootstrap interval), Pareto subset, spacing and sparsity.

Pure numpy on arrays; the run module turns tables into these arrays. Every objective is maximised.
A normalisation is an affine map per objective, z = (r - lower) / (upper - lower), and a reference
point `ref` in z. The report measures three (README, "Evaluation and report"):

- data: `run_bounds`, the per-objective min and max of the run's scored training data (stored
  once in `evaluate/bounds.json`), ref = the normalised nadir 0 (the raw per-objective minimum).
  A mean point below the nadir in some objective adds nothing; one above the maximum may push
  the volume past 1.
- zscore: RiC's z = (r - mean) / std with the training data's `zscore_stats`, i.e. lower = mean,
  upper = mean + std; ref = `ZSCORE_REF` in every objective.
- fronts: `fronts_box`, the min and max of the evaluated models' mean points, ref = its nadir 0.
"""

from __future__ import annotations

from typing import Iterator

import numpy as np
from numpy.typing import ArrayLike

from paretohqd.pareto.layers import as_points
from paretohqd.pareto.metrics import hypervolume, pareto_subset, sparsity, spacing
from paretohqd.pareto.rays import normalise

LEVEL = 0.95
"""Coverage of the bootstrap intervals."""
ZSCORE_REF = -1.0
"""Reference point of the z-scored hypervolume in every objective: one training standard deviation
below the training mean. Not the z-scored data minimum: that is the data box's reference again, so
the z-scored volume would be the data box's times the constant prod((max - min) / std), and it
would hang on the single worst training sample. A model mean more than 1 sd below the training
mean in some objective adds nothing."""
# cap on (resamples x samples) index entries held at once, so a large eval set stays in memory
_CHUNK = 4_000_000


def _draws(n: int, n_resamples: int, seed: int) -> Iterator[np.ndarray]:
    """Seeded bootstrap draws of n indices, (B, n) chunks of at most `_CHUNK` entries, n_resamples
    rows in all. They depend on (n, n_resamples, seed) only, so runs over the same n share them."""
    rng = np.random.default_rng(seed)
    per_chunk = max(1, _CHUNK // n)
    for start in range(0, n_resamples, per_chunk):
        yield rng.integers(0, n, size=(min(per_chunk, n_resamples - start), n))


def bootstrap_mean(
    values: ArrayLike, /, *, n_resamples: int, seed: int, level: float = LEVEL
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean per objective with a percentile bootstrap interval.

    Rows are resampled together (one response's rewards stay paired), with a seeded generator,
    so the interval is reproducible.

    Args:
        values: (n, M) rewards of one model's n responses.
        n_resamples: bootstrap resamples; 0 gives NaN intervals.
        seed: seed of the resampling.
        level: interval coverage, e.g. 0.95.

    Returns:
        mean (M,), lower (M,), upper (M,).

    Raises:
        ValueError: no rows, NaN/inf values, negative `n_resamples`, or `level` outside (0, 1).

    Examples:
        >>> mean, lo, hi = bootstrap_mean([[1.0, 0.0], [2.0, 0.0], [3.0, 0.0]], n_resamples=500, seed=0)
        >>> mean.tolist(), bool(lo[0] < 2.0 < hi[0]), bool(lo[1] == hi[1] == 0.0)
        ([2.0, 0.0], True, True)
    """
    x = as_points(values, name="values")  # (n, M)
    if len(x) == 0:
        raise ValueError("values has no rows; a model needs at least one scored response")
    if n_resamples < 0:
        raise ValueError(f"n_resamples must be >= 0, got {n_resamples}")
    if not 0 < level < 1:
        raise ValueError(f"level must lie in (0, 1), got {level}")
    mean = x.mean(axis=0)  # (M,)
    if n_resamples == 0:
        nan = np.full_like(mean, np.nan)
        return mean, nan, nan.copy()
    boot = np.concatenate([x[idx].mean(axis=1) for idx in _draws(len(x), n_resamples, seed)])  # (n_resamples, M)
    tail = (1 - level) / 2
    lo, hi = np.quantile(boot, [tail, 1 - tail], axis=0)  # (M,), (M,)
    return mean, lo, hi


def bootstrap_means(values: ArrayLike, /, *, n_resamples: int, seed: int) -> np.ndarray:
    """Every model's mean point over bootstrap resamples of the prompts.

    Prompts, not single answers, are resampled, and one draw serves every model: the models
    answered the same prompts, and a hard prompt lowers them all. The draws depend only on
    (n, n_resamples, seed), so two calls over the same prompts in the same order (two runs, or a
    run's preference models and its base model) get the same draws, and the difference of their
    resampled statistics is a paired bootstrap of the difference.

    Args:
        values: (P, n, M) rewards; values[p, i] is model p's (mean) answer reward on prompt i,
            prompts in the same order for every model.
        n_resamples: bootstrap resamples (0 gives an empty (0, P, M) array).
        seed: seed of the resampling.

    Returns:
        (n_resamples, P, M) mean points.

    Raises:
        ValueError: not (P, n, M) with P, n >= 1, NaN/inf values, or negative `n_resamples`.

    Examples:
        >>> means = bootstrap_means([[[1.0, 0.0], [0.0, 1.0]]], n_resamples=200, seed=0)
        >>> means.shape, sorted(set(means[:, 0, 0].tolist()))  # each resample: 2 of the 2 prompts
        ((200, 1, 2), [0.0, 0.5, 1.0])
    """
    x = np.asarray(values, dtype=np.float64)
    if x.ndim != 3 or 0 in x.shape:
        raise ValueError(f"values must have shape (models, prompts, objectives), each >= 1; got {x.shape}")
    if not np.isfinite(x).all():
        raise ValueError("values holds NaN or inf; every answer needs a finite reward")
    if n_resamples < 0:
        raise ValueError(f"n_resamples must be >= 0, got {n_resamples}")
    chunks = [x[:, idx].mean(axis=2).transpose(1, 0, 2) for idx in _draws(x.shape[1], n_resamples, seed)]  # (B, P, M)
    return np.concatenate(chunks) if chunks else np.zeros((0, *x.shape[::2]))


def bootstrap_hypervolume(
    values: ArrayLike, /, *, lower: ArrayLike, upper: ArrayLike, n_resamples: int, seed: int,
    ref: ArrayLike | None = None,
) -> np.ndarray:
    """Hypervolume of the models' mean points over bootstrap resamples of the prompts
    (`bootstrap_means`, whose draws make two runs' volumes paired).

    Args:
        values: (P, n, M) rewards; values[p, i] is model p's (mean) answer reward on prompt i,
            prompts in the same order for every model.
        lower: (M,) run bounds, mapped to 0 (also the reference point unless `ref` is given).
        upper: (M,) run bounds, mapped to 1.
        n_resamples: bootstrap resamples (0 gives an empty array).
        seed: seed of the resampling.
        ref: (M,) reference point in normalised space; default the origin.

    Returns:
        (n_resamples,) hypervolumes.

    Raises:
        ValueError: not (P, n, M) with P, n >= 1, NaN/inf values, or negative `n_resamples`.

    Examples:
        >>> hv = bootstrap_hypervolume([[[1.0, 0.0], [0.0, 1.0]]], lower=[0, 0], upper=[1, 1],
        ...                            n_resamples=200, seed=0)
        >>> hv.shape, sorted(set(hv.round(2).tolist()))  # resampled mean (a, 1 - a): a(1 - a)
        ((200,), [0.0, 0.25])
    """
    means = bootstrap_means(values, n_resamples=n_resamples, seed=seed)  # (B, P, M)
    return np.array([hypervolume(m, lower=lower, upper=upper, ref=ref) for m in means], dtype=np.float64)


def percentile_interval(samples: ArrayLike, /, level: float = LEVEL) -> list[float] | None:
    """[lower, upper] percentile interval of bootstrap samples; None for no samples.

    Examples:
        >>> percentile_interval([0.0, 1.0, 2.0, 3.0, 4.0], level=0.5)
        [1.0, 3.0]
    """
    x = np.asarray(samples, dtype=np.float64)
    if x.size == 0:
        return None
    tail = (1 - level) / 2
    return [float(v) for v in np.quantile(x, [tail, 1 - tail])]


def run_bounds(scores: ArrayLike, /) -> tuple[np.ndarray, np.ndarray]:
    """Per-objective min and max of a run's scored training data: its hypervolume box.

    Args:
        scores: (N, M) rewards of the training samples.

    Returns:
        lower (M,), upper (M,).

    Raises:
        ValueError: bad scores, or an objective with one value only (no box to normalise in).

    Examples:
        >>> lo, hi = run_bounds([[0.0, 5.0], [2.0, -1.0], [1.0, 3.0]])
        >>> lo.tolist(), hi.tolist()
        ([0.0, -1.0], [2.0, 5.0])
    """
    return _box(as_points(scores, name="scores"), empty="scores has no rows; bounds need the run's scored training data",
                flat="objective(s) at column(s) {cols} take one value only ({values}) in the scored training data; "
                     "a constant reward cannot bound a hypervolume")


def front_metrics(
    points: ArrayLike, /, *, lower: ArrayLike, upper: ArrayLike, ref: ArrayLike | None = None
) -> tuple[float, np.ndarray]:
    """Hypervolume (reference by default at the normalised nadir 0) and Pareto mask of mean points.

    Args:
        points: (P, M) mean rewards, one row per model.
        lower: (M,) run bounds, mapped to 0 (also the reference point unless `ref` is given).
        upper: (M,) run bounds, mapped to 1.
        ref: (M,) reference point in normalised space; default the origin.

    Returns:
        hypervolume, and (P,) bool mask of the models on the Pareto front.

    Examples:
        Normalised points (0.5, 1), (1, 0.5) and the dominated (0.25, 0.25): two 0.5 x 1
        rectangles overlapping in a 0.5 x 0.5 square, 0.5 + 0.5 - 0.25 = 0.75.

        >>> hv, on_front = front_metrics([[5, 20], [10, 15], [2.5, 12.5]], lower=[0, 10], upper=[10, 20])
        >>> hv, on_front.tolist()
        (0.75, [True, True, False])
    """
    pts = as_points(points)  # (P, M)
    hv = hypervolume(pts, lower=lower, upper=upper, ref=ref)  # ref None: the normalised origin
    return hv, pareto_subset(pts)


def front_spread(points: ArrayLike, /, *, lower: ArrayLike, upper: ArrayLike) -> tuple[float, float]:
    """Schott's spacing and PGMORL's sparsity of the Pareto-optimal mean points, normalised.

    Both are distances, so they need one scale for all objectives: the points are normalised by
    `lower`/`upper` first (the reference point plays no part). Dominated models are left out:
    they are not part of the front whose spread is measured.

    Args:
        points: (P, M) mean rewards, one row per model.
        lower: (M,) mapped to 0.
        upper: (M,) mapped to 1; each must exceed `lower`.

    Returns:
        spacing, sparsity; both NaN when fewer than 2 models are on the front (undefined).

    Examples:
        (5, 20), (10, 15) and the dominated (2.5, 12.5) in the box [0, 10] x [10, 20]: the front
        is (0.5, 1), (1, 0.5); two points are each other's nearest neighbour (spacing 0), and their
        gaps of 0.5 in both objectives give sparsity 0.25 + 0.25 = 0.5.

        >>> front_spread([[5, 20], [10, 15], [2.5, 12.5]], lower=[0, 10], upper=[10, 20])
        (0.0, 0.5)
    """
    pts = as_points(points)  # (P, M)
    lo, hi = np.asarray(lower, dtype=np.float64), np.asarray(upper, dtype=np.float64)  # (M,), (M,)
    if lo.shape == hi.shape == (pts.shape[1],) and (hi <= lo).any():
        raise ValueError(f"'upper' must exceed 'lower' in every objective; got lower={lo.tolist()}, "
                         f"upper={hi.tolist()}")
    z = normalise(pts[pareto_subset(pts)], lower=lo, upper=hi)  # (F, M)
    return spacing(z), sparsity(z)


def zscore_stats(scores: ArrayLike, /) -> tuple[np.ndarray, np.ndarray]:
    """Per-objective mean and (population) standard deviation of the scored training data: RiC's
    normalisation z = (r - mean) / std, the same statistics as `data/scores.stats.json`.

    Args:
        scores: (N, M) rewards of the training samples.

    Returns:
        mean (M,), std (M,).

    Raises:
        ValueError: bad scores, no rows, or a constant objective (std 0: nothing to scale by).

    Examples:
        >>> mean, std = zscore_stats([[0.0, 1.0], [2.0, 1.0], [4.0, 7.0]])
        >>> mean.tolist(), std.tolist()
        ([2.0, 3.0], [1.632993161855452, 2.8284271247461903])
    """
    pts = as_points(scores, name="scores")  # (N, M)
    if len(pts) == 0:
        raise ValueError("scores has no rows; z-scores need the run's scored training data")
    mean, std = pts.mean(axis=0), pts.std(axis=0)  # (M,), (M,); ddof 0 as in scores.stats.json
    flat = np.flatnonzero(std <= 0)
    if flat.size:
        raise ValueError(f"objective(s) at column(s) {flat.tolist()} take one value only in the scored training "
                         "data; a constant reward has no standard deviation to z-score by")
    return mean, std


def fronts_box(points: ArrayLike, /) -> tuple[np.ndarray, np.ndarray]:
    """Per-objective min and max of the evaluated models' mean points: the box in which fronts are
    usually compared in multi-objective papers (nadir and ideal of all the points compared).

    Args:
        points: (N, M) mean rewards of every model compared (all methods, base models included).

    Returns:
        lower (M,), upper (M,).

    Raises:
        ValueError: bad points, no rows, or an objective where every model has the same mean
            (a flat box has no volume).

    Examples:
        >>> lo, hi = fronts_box([[1.0, 3.0], [2.0, 2.0], [0.5, 2.5]])
        >>> lo.tolist(), hi.tolist()
        ([0.5, 2.0], [2.0, 3.0])
    """
    return _box(as_points(points), empty="points has no rows; the fronts box needs at least one evaluated model",
                flat="every model has the same mean in objective column(s) {cols}; the fronts box is flat there "
                     "and holds no volume")


def _box(pts: np.ndarray, *, empty: str, flat: str) -> tuple[np.ndarray, np.ndarray]:
    """Per-objective (min, max) of (N, M) points; `empty` / `flat` (with {cols}, {values}) name the failures."""
    if len(pts) == 0:
        raise ValueError(empty)
    lo, hi = pts.min(axis=0), pts.max(axis=0)  # (M,), (M,)
    cols = np.flatnonzero(hi <= lo)
    if cols.size:
        raise ValueError(flat.format(cols=cols.tolist(), values=lo[cols].tolist()))
    return lo, hi
