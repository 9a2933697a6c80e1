"""The front picture: each method's mean-reward points over the training data cloud.

Raw objective units on the axes (the hypervolume box drawn as a dashed rectangle, its reference
corner marked). One panel per pair of objectives, so M = 3 gives three panels, each drawn twice:
the whole box over the training cloud, and below it zoomed onto the models. Each point is a
preference model with its 95% interval as error bars, labelled by its weights; the untuned base
model is a star (drawn once when every method shares it).
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
from paretohqd.select.plot import thin  # noqa: E402

_MARKERS = "osD^vP"


def plot_fronts(
    methods: list[dict],
    cloud: ArrayLike,
    /,
    *,
    objectives: list[str],
    lower: ArrayLike,
    upper: ArrayLike,
    path: str | Path,
    title: str = "",
) -> Path:
    """Draw every method's front over the training cloud; write a PNG to `path` atomically.

    Args:
        methods: one dict per method: `label`, `points` (P, M) mean rewards, `lo`/`hi` (P, M)
            interval ends (NaN for none), `weights` (P, M) preferences, `base` (M,) or None.
        cloud: (N, M) rewards of the training data, drawn grey behind.
        objectives: M axis names.
        lower: (M,) box lower corner (the reference point).
        upper: (M,) box upper corner.
        path: PNG to write.
        title: figure title.

    Longer than ~60 lines on purpose: one matplotlib figure drawn layer by layer (cloud, fronts,
    intervals, base points, labels), each a few straight lines.

    Returns:
        `path`.
    """
    cloud = np.asarray(cloud, dtype=np.float64)  # (N, M)
    cloud = cloud[thin(np.arange(len(cloud)))]
    lo_box, hi_box = np.asarray(lower, dtype=np.float64), np.asarray(upper, dtype=np.float64)  # (M,)
    pairs = list(combinations(range(len(objectives)), 2))
    ncols = min(3, len(pairs))
    nrows = -(-len(pairs) // ncols)
    # each block of panels twice: the whole box over the cloud, then zoomed onto the models, where
    # fronts a few hundredths apart become readable
    fig, axes = plt.subplots(2 * nrows, ncols, figsize=(5.6 * ncols, 4.6 * 2 * nrows), squeeze=False)
    full = [axes[2 * (i // ncols), i % ncols] for i in range(len(pairs))]
    zoom = [axes[2 * (i // ncols) + 1, i % ncols] for i in range(len(pairs))]
    colours = plt.get_cmap("tab10")(np.arange(len(methods)) % 10)  # (n_methods, 4)
    bases = {tuple(m["base"]) for m in methods if m.get("base") is not None}
    for ax_full, ax_zoom, (a, b) in zip(full, zoom, pairs):
        ax_full.scatter(cloud[:, a], cloud[:, b], s=3, c="0.82", lw=0, label="training data", rasterized=True)
        ax_full.add_patch(plt.Rectangle((lo_box[a], lo_box[b]), hi_box[a] - lo_box[a], hi_box[b] - lo_box[b],
                                        fill=False, ls="--", lw=0.8, ec="0.4"))
        ax_full.plot(lo_box[a], lo_box[b], marker="x", c="0.2", ms=7, ls="", label="HV reference (nadir)")
        for ax in (ax_full, ax_zoom):
            for k, m in enumerate(methods):
                _draw_method(ax, a, b, m, colours[k], _MARKERS[k % len(_MARKERS)], base=len(bases) > 1,
                             label_points=len(methods) <= 3)
            if len(bases) == 1:  # one base model shared by every method: drawn once, in black
                (base,) = bases
                ax.scatter([base[a]], [base[b]], s=90, marker="*", color="0.15", edgecolor="k", lw=0.5, zorder=4,
                           label="base (untuned)")
            ax.set_xlabel(objectives[a])
            ax.set_ylabel(objectives[b])
        ax_zoom.set_title("zoomed onto the models", fontsize=8)
    for ax in list(axes.flat):
        if ax not in full and ax not in zoom:
            ax.axis("off")
    handles, labels = full[0].get_legend_handles_labels()
    fig.legend(handles, labels, fontsize=7, loc="lower center", ncol=min(4, len(labels)), markerscale=1.2)
    if title:
        fig.suptitle(title, fontsize=10)
    rows_of_legend = -(-len(labels) // min(4, len(labels)))
    fig.tight_layout(rect=(0, 0.025 * rows_of_legend / nrows + 0.01, 1, 1))
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)
    return Path(path)


def _draw_method(ax, a: int, b: int, m: dict, colour, marker: str, *, base: bool, label_points: bool) -> None:
    """One method on the panel of objectives (a, b): points in preference order, joined by a line."""
    pts, lo, hi = (np.asarray(m[k], dtype=np.float64) for k in ("points", "lo", "hi"))  # (P, M) each
    order = np.lexsort((pts[:, b], pts[:, a]))  # along the x axis, so the line reads as a front
    ax.plot(pts[order, a], pts[order, b], color=colour, lw=0.8, alpha=0.6)
    # error bars only where an interval exists (bootstrap 0 leaves NaN)
    if np.isfinite(lo).all() and np.isfinite(hi).all():
        ax.errorbar(pts[:, a], pts[:, b], xerr=[pts[:, a] - lo[:, a], hi[:, a] - pts[:, a]],
                    yerr=[pts[:, b] - lo[:, b], hi[:, b] - pts[:, b]], fmt="none", ecolor=colour, lw=0.7,
                    alpha=0.7)
    ax.scatter(pts[:, a], pts[:, b], s=30, color=colour, marker=marker, edgecolor="k", lw=0.4, zorder=3,
               label=m["label"])
    if label_points:
        for p, w in zip(pts, m["weights"]):
            ax.annotate("(" + ", ".join(f"{x:.2g}" for x in w) + ")", (p[a], p[b]), fontsize=6,
                        xytext=(3, 3), textcoords="offset points", color=colour)
    if base and m.get("base") is not None:
        point = np.asarray(m["base"], dtype=np.float64)  # (M,)
        ax.scatter([point[a]], [point[b]], s=90, marker="*", color=colour, edgecolor="k", lw=0.5, zorder=4,
                   label=f"{m['label']}: base (untuned)")
