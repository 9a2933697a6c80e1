"""Pairwise judge verdicts as win/tie/loss rates with bootstrap intervals over prompts.

Pure numpy; `paretohqd.evaluate.judge` asks the judge and turns its replies into these arrays. An
outcome is in the judged model's terms: 1 win, 0 tie, -1 loss. Each prompt is asked in both
orders (the judged model's answer shown first, then second) so that a judge's taste for one
position cancels: the prompt's outcome is the sign of the two verdicts' sum, so a verdict that
flips with the order is a tie, and a win in one order with a tie in the other is a win.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike

from paretohqd.evaluate.front import LEVEL, _draws, percentile_interval

RATES = ("win", "tie", "loss", "score")
"""What `win_rates` measures, in its order; `score` = win + tie / 2 (a tie is half a win)."""


def _outcomes(values: ArrayLike, name: str) -> np.ndarray:
    x = np.asarray(values)
    if x.ndim != 1 or not np.isin(x, (-1, 0, 1)).all():
        raise ValueError(f"{name} must be a 1-d array of outcomes in {{-1, 0, 1}}; got shape {x.shape}")
    return x.astype(np.int8)


def combine_orders(first: ArrayLike, second: ArrayLike, /) -> np.ndarray:
    """Each prompt's outcome from its two orders' verdicts: the sign of their sum.

    Args:
        first: (n,) outcomes with the judged model's answer shown first (1 win, 0 tie, -1 loss).
        second: (n,) outcomes with it shown second, same prompts in the same order.

    Returns:
        (n,) int8 outcomes: a win in both orders, or in one with a tie in the other, is a win;
        a verdict that flips with the order is a tie.

    Raises:
        ValueError: not two 1-d arrays of the same length with values in {-1, 0, 1}.

    Examples:
        >>> combine_orders([1, 1, 1, 0, -1], [1, 0, -1, 0, -1]).tolist()
        [1, 1, 0, 0, -1]
    """
    a, b = _outcomes(first, "first"), _outcomes(second, "second")
    if a.shape != b.shape:
        raise ValueError(f"first has {a.size} outcomes but second has {b.size}; give both orders of every prompt")
    return np.sign(a + b).astype(np.int8)


def _rates(outcomes: np.ndarray) -> np.ndarray:
    """(..., n) outcomes -> (..., 4) win, tie, loss, score."""
    win, tie, loss = ((outcomes == v).mean(axis=-1) for v in (1, 0, -1))
    return np.stack([win, tie, loss, win + tie / 2], axis=-1)


def win_rates(outcomes: ArrayLike, /, *, n_resamples: int, seed: int,
              level: float = LEVEL) -> dict[str, dict[str, float | list[float] | None]]:
    """Win, tie and loss rates (and score = win + tie / 2) with percentile bootstrap intervals,
    prompts resampled with a seeded generator (the draws `front.bootstrap_mean` makes for the same
    n, n_resamples and seed).

    Args:
        outcomes: (n,) per-prompt outcomes (1 win, 0 tie, -1 loss), n >= 1.
        n_resamples: bootstrap resamples; 0 gives no intervals (None).
        seed: seed of the resampling.
        level: interval coverage, e.g. 0.95.

    Returns:
        {rate: {"rate": value, "ci95": [lower, upper] or None}} for each of `RATES`.

    Raises:
        ValueError: no outcomes, a value outside {-1, 0, 1}, or a negative `n_resamples`.

    Examples:
        >>> r = win_rates([1, 1, 0, -1], n_resamples=0, seed=0)
        >>> r["win"], r["score"]
        ({'rate': 0.5, 'ci95': None}, {'rate': 0.625, 'ci95': None})
    """
    x = _outcomes(outcomes, "outcomes")  # (n,)
    if x.size == 0:
        raise ValueError("no outcomes: judge at least one prompt")
    if n_resamples < 0:
        raise ValueError(f"n_resamples must be >= 0; got {n_resamples}")
    point = _rates(x)  # (4,)
    boot = np.concatenate([_rates(x[idx]) for idx in _draws(x.size, n_resamples, seed)]) if n_resamples \
        else np.empty((0, len(RATES)))  # (B, 4)
    return {name: {"rate": float(point[j]), "ci95": percentile_interval(boot[:, j], level=level)}
            for j, name in enumerate(RATES)}
