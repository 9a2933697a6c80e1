"""Ridge regression for scorers trained on label columns (ArmoRM's recipe: a linear map from frozen
embeddings to a rating, its penalty chosen on a validation split). Numpy only.

One eigendecomposition of the centred Gram matrix serves every penalty: with
X^T X = V diag(s) V^T, the ridge weights are w(alpha) = V diag(1 / (s + alpha)) V^T X^T y.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike


def ridge_path(x: ArrayLike, y: ArrayLike, /, alphas: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """Ridge fits with an unpenalised intercept, argmin_w,b |y - x w - b|^2 + alpha |w|^2, for each
    penalty.

    Args:
        x: (n, d) features.
        y: (n,) targets.
        alphas: (a,) penalties, > 0, in absolute units.

    Returns:
        Weights (a, d) and intercepts (a,).

    Examples:
        >>> x = np.array([[0.0], [1.0], [2.0], [3.0]])
        >>> w, b = ridge_path(x, 2 * x[:, 0] + 1, alphas=[1e-9, 5.0])
        >>> np.round(w[:, 0], 3).tolist(), np.round(b, 3).tolist()  # the penalty shrinks w toward 0
        ([2.0, 1.0], [1.0, 2.5])
    """
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    x_mean, y_mean = x.mean(axis=0), y.mean()  # (d,), ()
    xc = x - x_mean  # (n, d)
    s, v = np.linalg.eigh(xc.T @ xc)  # (d,), (d, d)
    s = np.clip(s, 0.0, None)  # round-off can leave tiny negative eigenvalues
    z = v.T @ (xc.T @ (y - y_mean))  # (d,)
    alphas = np.asarray(alphas, dtype=np.float64)  # (a,)
    w = (z / (s[None, :] + alphas[:, None])) @ v.T  # (a, d)
    return w, y_mean - w @ x_mean


def gram_scale(x: ArrayLike, /) -> float:
    """Mean eigenvalue of the centred Gram matrix X^T X (its trace / d): the unit `rewards.ridge_alphas`
    are given in, so the same setting means the same shrinkage at any data size.

    Examples:
        >>> gram_scale([[1.0, 0.0], [-1.0, 0.0]])
        1.0
    """
    x = np.asarray(x, dtype=np.float64)
    xc = x - x.mean(axis=0)
    return float((xc**2).sum() / x.shape[1])


def pearson(a: ArrayLike, b: ArrayLike, /) -> float:
    """Pearson correlation; NaN when either side is constant.

    Examples:
        >>> pearson([1, 2, 3], [2, 4, 7])
        0.9933992677987828
    """
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    a, b = a - a.mean(), b - b.mean()
    denom = np.sqrt((a**2).sum() * (b**2).sum())
    return float((a * b).sum() / denom) if denom > 0 else float("nan")


def fit_ridge(x_fit: ArrayLike, y_fit: ArrayLike, x_val: ArrayLike, y_val: ArrayLike, /, *,
              alphas: ArrayLike) -> tuple[np.ndarray, float, dict]:
    """Choose the penalty with the lowest validation mean squared error, then refit on fit and
    validation rows together.

    Args:
        x_fit, y_fit: (n, d) and (n,) rows to fit.
        x_val, y_val: (m, d) and (m,) rows that choose the penalty.
        alphas: (a,) relative penalties, in units of `gram_scale` of the fit rows.

    Returns:
        Weights (d,), intercept, and the choice: relative alpha and validation MSE per alpha.

    Examples:
        >>> rng = np.random.default_rng(0)
        >>> x = rng.normal(size=(60, 3)); y = x @ np.array([1.0, -2.0, 0.5]) + 0.1 * rng.normal(size=60)
        >>> w, b, choice = fit_ridge(x[:40], y[:40], x[40:], y[40:], alphas=[1e-4, 1.0, 100.0])
        >>> np.round(w, 1).tolist(), choice["alpha"]
        ([1.0, -2.0, 0.5], 0.0001)
    """
    relative = np.asarray(alphas, dtype=np.float64)  # (a,)
    scale = gram_scale(x_fit)
    w, b = ridge_path(x_fit, y_fit, relative * scale)  # (a, d), (a,)
    errors = ((np.asarray(x_val) @ w.T + b - np.asarray(y_val)[:, None]) ** 2).mean(axis=0)  # (a,)
    best = int(np.argmin(errors))
    x_all, y_all = np.concatenate([x_fit, x_val]), np.concatenate([y_fit, y_val])
    w_all, b_all = ridge_path(x_all, y_all, [relative[best] * gram_scale(x_all)])
    return w_all[0], float(b_all[0]), {"alpha": float(relative[best]),
                                       "validation_mse": dict(zip(map(float, relative), map(float, errors)))}
