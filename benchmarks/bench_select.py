"""Speed of the select core: Pareto pool + direction selection, against an O(N^2) numpy baseline.

    python benchmarks/bench_select.py            # the full grid, about a minute on 2 cores
    python benchmarks/bench_select.py --quick    # N <= 1e5 only

Data: N points uniform in [0, 1]^M (a hard case: on independent objectives the fronts are wide
and the top layers thin). Preferences: 11 for M = 2, the step-0.1 lattice (66) for M = 3, the
step-1/3 lattice (35) for M = 5. k = 100, or the whole pool where it holds fewer.

Columns: `L=3` is the pool of the top 3 layers (the issue's target); `auto` is the default pool,
the fewest layers holding 10 k = 1000 points. Times are the best of a few runs, in seconds, for
layers + selection together. The baseline peels the same 3 layers with an O(N^2) numpy dominance
test and is run at N <= 2e4 only. The last line is the headline against the target.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from paretohqd.pareto.layers import pool_layers
from paretohqd.pareto.preferences import simplex_grid
from paretohqd.pareto.rays import normalisation_box, select_direction

GRID_STEPS = {2: 11, 3: 11, 5: 4}  # points per axis of the preference lattice
K = 100
TARGET_S = 1.5


def select_once(points: np.ndarray, prefs: np.ndarray, **pool_kw) -> tuple[float, int, int]:
    """Layers + selection, as select_table runs them. Returns (seconds, pool size, layers used)."""
    t0 = time.perf_counter()
    layer = pool_layers(points, **pool_kw)  # (N,)
    pool = np.flatnonzero(layer >= 0)
    lo, hi = normalisation_box(points)
    select_direction(points[pool], prefs, k=min(K, len(pool)), lower=lo, upper=hi)
    return time.perf_counter() - t0, len(pool), int(layer.max()) + 1


def best_of(repeats: int, fn, *args, **kw):
    runs = [fn(*args, **kw) for _ in range(repeats)]
    return min(runs, key=lambda r: r[0])


def baseline_layers(points: np.ndarray, n_layers: int) -> np.ndarray:
    """Peel layers with a plain O(N^2) dominance test in numpy, in row chunks to bound memory."""
    layer = np.full(len(points), -1)
    rest = np.arange(len(points))
    for current in range(n_layers):
        cols = np.ascontiguousarray(points[rest].T)  # (M, r) contiguous rows compare fastest
        dominated = np.zeros(cols.shape[1], dtype=bool)
        for start in range(0, cols.shape[1], 256):
            c = cols[:, start : start + 256]  # (M, c)
            ge = cols[0][None, :] >= c[0][:, None]  # (c, r) x[j] >= c[i] in every objective
            gt = cols[0][None, :] > c[0][:, None]  # (c, r) x[j] > c[i] in some objective
            for m in range(1, len(cols)):
                ge &= cols[m][None, :] >= c[m][:, None]
                gt |= cols[m][None, :] > c[m][:, None]
            dominated[start : start + c.shape[1]] = (ge & gt).any(axis=1)
        layer[rest[~dominated]] = current
        rest = rest[dominated]
    return layer


def baseline_once(points: np.ndarray, prefs: np.ndarray) -> tuple[float, int, int]:
    t0 = time.perf_counter()
    layer = baseline_layers(points, 3)
    pool = np.flatnonzero(layer >= 0)
    select_direction(points[pool], prefs, k=min(K, len(pool)), lower=points.min(0), upper=points.max(0))
    return time.perf_counter() - t0, len(pool), 3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="skip N = 1e6")
    args = parser.parse_args()
    sizes = [10_000, 20_000, 100_000] + ([] if args.quick else [1_000_000])
    print(f"{'N':>9} {'M':>2} {'P':>3} | {'L=3 pool':>8} {'time':>7} | {'auto L':>6} {'pool':>5} {'time':>7} "
          f"| {'O(N^2)':>7} {'ratio':>6}")
    headline = None
    for m in (2, 3, 5):
        prefs = simplex_grid(m, GRID_STEPS[m])  # (P, M)
        for n in sizes:
            points = np.random.default_rng(n + m).random((n, m))  # (N, M)
            repeats = 3 if n <= 100_000 or m == 3 else 1
            t3, pool3, _ = best_of(repeats, select_once, points, prefs, layers=3)
            ta, poola, used = best_of(repeats, select_once, points, prefs, layers="auto", min_size=10 * K)
            base = ""
            if n <= 20_000:
                tb, poolb, _ = best_of(1, baseline_once, points, prefs)
                assert poolb == pool3, "baseline and moocore pools differ"
                base = f"{tb:7.3f} {tb / t3:5.0f}x"
            print(f"{n:9.0e} {m:2d} {len(prefs):3d} | {pool3:8d} {t3:7.3f} | {used:6d} {poola:5d} {ta:7.3f} | {base}",
                  flush=True)
            if n == 1_000_000 and m == 3:
                headline = t3
    if headline is not None:
        print(f"select 1e6x3: {headline:.2f} s (target <= {TARGET_S} s)")


if __name__ == "__main__":
    main()
