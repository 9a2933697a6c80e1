"""A known-front benchmark (issue 26): does the preference *direction* reach trade-offs a weighted
sum cannot? On a scored table with exact (rule) objectives, select k samples for each of P
preferences three ways: ParetoHqD's rays, the scalarised ablation (largest w . z) and k random
points of the same Pareto pool, and print for each, in the normalised data box z = (r - r_min) /
(r_max - r_min) that selection uses:

- largest hole (`paretohqd.pareto.control.largest_hole`): the largest distance between the
  selected-set means of neighbouring preferences; a selection that jumps over part of the front
  leaves a large hole;
- calibration (`paretohqd.pareto.control.calibration`): the mean angle (degrees) between each
  preference's ray, from the ideal point (1, ..., 1) toward w, and the direction from the ideal
  point to its selected set's mean;
- reach (`paretohqd.pareto.control.reach`): the largest distance between any two preferences'
  means, how far along the front the preferences move at all (a small hole with a small reach is
  no control: every preference gets the same);
- the front's hull share (`paretohqd.pareto.hull.hull_inside_share`): the share of first-layer
  points strictly inside the first layer's upper-right convex hull, which no weighted sum reaches.

With `--compare DIR` (a finished `paretohqd compare` folder, runs_dir/NAME-compare) it prints the
same three indicators for each method's trained models: the per-preference means of their scored
evaluation answers, in the same data box.

    python benchmarks/known_front.py runs/kf-paretohqd/data/scores.parquet --config configs/known-front.yaml \
        --compare runs/kf-compare --plot known-front.png
    python benchmarks/known_front.py SCORES --objectives length,diversity --preferences 11 --k 100
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from paretohqd.config import SelectConfig, load_config
from paretohqd.evaluate.front import _draws, percentile_interval
from paretohqd.io import read_table
from paretohqd.pareto.control import calibration, largest_hole, reach
from paretohqd.pareto.hull import hull_inside_share
from paretohqd.pareto.layers import nondominated_layers, pool_layers
from paretohqd.pareto.preferences import preferences_from_config
from paretohqd.select import select_table


def indicators(means: np.ndarray, prefs: np.ndarray) -> tuple[float, float, float]:
    """(largest hole, mean calibration in degrees, reach) of normalised means (P, M) for preferences
    (P, M): `paretohqd.pareto.control`'s, in the unit box the means are already in."""
    unit = {"lower": np.zeros(prefs.shape[1]), "upper": np.ones(prefs.shape[1])}
    return largest_hole(prefs, means, **unit)[0], calibration(prefs, means, **unit)[1], reach(means, **unit)


def selections(scores: pd.DataFrame, objectives: list[str], *, preferences: int | list[list[float]], k: int,
               seed: int):
    """(prefs (P, M), lo (M,), hi (M,), pool mask (N,), {name: chosen rows (P, k)}): rays and
    scalarised as `paretohqd select --layers auto` takes them, random as k draws from that pool."""
    out, info = {}, {}
    row = pd.Series(np.arange(len(scores)), index=scores["id"])
    for name, method in (("rays", "direction"), ("scalarised", "scalarised")):
        cfg = SelectConfig(preferences=preferences, k=k, layers="auto", method=method)
        sel, info = select_table(scores, objectives, cfg)
        out[name] = row[sel["id"]].to_numpy().reshape(info["n_preferences"], -1)  # (P, k)
    cfg = SelectConfig(k=k)  # the pool the selections above drew from (layers auto, 10 k points)
    pool = pool_layers(scores[objectives].to_numpy(np.float64), layers="auto", min_size=cfg.min_pool) >= 0  # (N,)
    prefs = preferences_from_config(preferences, len(objectives))  # (P, M), the order select_table used
    rng = np.random.default_rng(seed)
    out["random"] = np.stack([rng.choice(np.flatnonzero(pool), size=k, replace=False) for _ in prefs])
    return prefs, np.array(info["lower"]), np.array(info["upper"]), pool, out


def plot(points: np.ndarray, front: np.ndarray, pool: np.ndarray, chosen: dict, prefs: np.ndarray,
         objectives: list[str], path: Path) -> None:
    """One panel per selection: the pool (grey), the first layer (black), each preference's points
    and mean (a cross, joined in preference order); the first two objectives."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from paretohqd.io import atomic_path

    colours = plt.get_cmap("viridis")(np.linspace(0, 0.95, len(prefs)))
    fig, axes = plt.subplots(1, len(chosen), figsize=(5 * len(chosen), 4.4), sharex=True, sharey=True)
    for ax, (name, rows) in zip(axes, chosen.items()):
        ax.scatter(points[~pool, 0], points[~pool, 1], s=2, c="0.85", lw=0, rasterized=True)
        ax.scatter(points[pool, 0], points[pool, 1], s=4, c="0.6", lw=0, label="Pareto pool")
        ax.scatter(points[front, 0], points[front, 1], s=10, c="k", lw=0, label="first layer")
        means = points[rows].mean(axis=1)  # (P, M)
        for i, r in enumerate(rows):
            ax.scatter(points[r, 0], points[r, 1], s=12, color=colours[i], lw=0, alpha=0.7,
                       label=f"w={np.round(prefs[i], 2).tolist()}" if len(prefs) <= 6 else None)
        ax.plot(means[:, 0], means[:, 1], "-", c="crimson", lw=1)
        ax.scatter(means[:, 0], means[:, 1], marker="x", s=40, c="crimson", zorder=5)
        ax.set_title(name)
        ax.set_xlabel(objectives[0])
    axes[0].set_ylabel(objectives[1])
    axes[0].legend(fontsize=6, loc="lower left")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)


def compare_rows(folder: Path, objectives: list[str], lo: np.ndarray, hi: np.ndarray, *, boot: int = 1000,
                 seed: int = 0) -> list[tuple]:
    """(method, (largest hole, calibration, reach), their 95% intervals (2, 3), and the paired
    difference to the first method (ParetoHqD's where there is one) with its 95% interval) of each
    run beside a compare folder NAME-compare, in the data box. Intervals: percentile bootstrap over
    the prompts every run answered, the same draws for every method (so the differences are paired)."""
    prefix = folder.name.removesuffix("-compare")
    per_prompt, prefs = {}, {}
    # ParetoHqD's run first (every difference is against it), the others by name
    for run in sorted(folder.parent.glob(f"{prefix}-*"), key=lambda r: (r.name != f"{prefix}-paretohqd", r.name)):
        answers = run / "evaluate" / "responses.parquet"
        if run == folder or not answers.exists():
            continue
        df = read_table(answers)
        df = df[df["preference_index"] >= 0]
        name = run.name.removeprefix(prefix + "-")
        # (prompts, P, M): each model's answer scores per prompt, normalised by the data box
        table = df.pivot_table(index="prompt_id", columns="preference_index", values=objectives)
        per_prompt[name] = table
        prefs[name] = np.array(list(df.groupby("preference_index")["weights"].first()), dtype=np.float64)  # (P, M)
    if not per_prompt:
        return []
    prompts = sorted(set.intersection(*(set(t.index) for t in per_prompt.values())))
    scale = np.where(hi > lo, hi - lo, 1.0)
    arrays = {n: (np.stack([t.loc[prompts, o].to_numpy() for o in objectives], axis=-1) - lo) / scale
              for n, t in per_prompt.items()}  # name -> (prompts, P, M)
    draws = np.concatenate(list(_draws(len(prompts), boot, seed)))  # (boot, prompts): the same for every method
    values = {n: np.array([indicators(a[d].mean(axis=0), prefs[n]) for d in draws]) for n, a in arrays.items()}  # (boot, 3)
    points = {n: np.array(indicators(a.mean(axis=0), prefs[n])) for n, a in arrays.items()}  # (3,)
    first = next(iter(values))
    rows = []
    for n in arrays:
        ci = _intervals(values[n])  # (2, 3)
        paired = None if n == first else (points[n] - points[first], _intervals(values[n] - values[first]))
        rows.append((n, points[n], ci, *(paired or (None, None)), len(prompts)))
    return rows


def _intervals(samples: np.ndarray) -> np.ndarray:
    """(B, K) bootstrap samples -> (2, K): each column's 95% percentile interval, lower row first."""
    return np.array([percentile_interval(column) for column in samples.T]).T


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("scores", type=Path, help="scored table (id and one column per objective)")
    ap.add_argument("--config", type=Path, help="take objectives (rewards.models), preferences and k from this config")
    ap.add_argument("--objectives", help="objective columns, comma-separated")
    ap.add_argument("--preferences", type=int, help="grid points per axis (default: the config's, else 11)")
    ap.add_argument("--k", type=int, help="samples per preference (default: the config's, else 100)")
    ap.add_argument("--seed", type=int, default=0, help="seed of the random selection")
    ap.add_argument("--compare", type=Path, help="a finished compare folder (runs_dir/NAME-compare)")
    ap.add_argument("--plot", type=Path, help="PNG of what each selection takes")
    args = ap.parse_args()
    cfg = load_config(args.config) if args.config else None
    if args.objectives is None and cfg is None:
        print("give --objectives a,b or --config CONFIG")
        return 2
    objectives = [o.strip() for o in args.objectives.split(",")] if args.objectives else list(cfg.rewards.models)
    preferences = args.preferences or (cfg.select.preferences if cfg else 11)
    k = args.k or (cfg.select.k if cfg else 100)
    scores = read_table(args.scores)
    missing = [o for o in objectives if o not in scores.columns]
    if missing:
        print(f"{args.scores}: no column(s) {missing}; columns are {list(scores.columns)}")
        return 2
    prefs, lo, hi, pool, chosen = selections(scores, objectives, preferences=preferences, k=k, seed=args.seed)
    points = scores[objectives].to_numpy(np.float64)  # (N, M)
    z = (points - lo) / np.where(hi > lo, hi - lo, 1.0)  # (N, M) the data box
    front = nondominated_layers(points) == 0  # (N,)
    print(f"{args.scores}: {len(points):,} samples, objectives {objectives}, pool {int(pool.sum()):,}, "
          f"first layer {int(front.sum())} points, hull share {hull_inside_share(points):.3f}")
    print(f"{'selection':<12} {'largest hole':>12} {'calibration (deg)':>18} {'reach':>6}")
    for name, rows in chosen.items():
        hole, calib, far = indicators(z[rows].mean(axis=1), prefs)  # (the selected sets' means, (P, M))
        print(f"{name:<12} {hole:>12.3f} {calib:>18.1f} {far:>6.3f}")
    if args.compare is not None:
        print(f"trained models ({args.compare}), per-preference means of the evaluation answers, data box; "
              "[95% bootstrap over the prompts all runs answered]; vs first: paired difference")
        for method, point, ci, diff, dci, n in compare_rows(args.compare, objectives, lo, hi, seed=args.seed):
            line = (f"{method:<16} hole {point[0]:.3f} [{ci[0, 0]:.3f}, {ci[1, 0]:.3f}]  "
                    f"calibration {point[1]:.1f} [{ci[0, 1]:.1f}, {ci[1, 1]:.1f}] deg  "
                    f"reach {point[2]:.3f} [{ci[0, 2]:.3f}, {ci[1, 2]:.3f}]  ({n} prompts)")
            if diff is not None:
                line += (f"  vs first: hole {diff[0]:+.3f} [{dci[0, 0]:+.3f}, {dci[1, 0]:+.3f}], "
                         f"calibration {diff[1]:+.1f} [{dci[0, 1]:+.1f}, {dci[1, 1]:+.1f}], "
                         f"reach {diff[2]:+.3f} [{dci[0, 2]:+.3f}, {dci[1, 2]:+.3f}]")
            print(line)
    if args.plot is not None:
        plot(z, front, pool, chosen, prefs, objectives, args.plot)
        print(f"wrote {args.plot}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
