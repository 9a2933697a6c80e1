"""Front numbers: hypervolume of mean points against hand-computed values, bootstrap intervals, bounds."""

import numpy as np
import pytest

from paretohqd.evaluate.front import bootstrap_mean, front_metrics, run_bounds


def test_hypervolume_of_mean_points_2d_by_hand():
    """Box helpful [0, 10] x harmless [0, 20]. Means (2, 16), (6, 10), (8, 4) normalise to
    (0.2, 0.8), (0.6, 0.5), (0.8, 0.2). Staircase from the right, reference (0, 0):
    0.8 * 0.2 + 0.6 * (0.5 - 0.2) + 0.2 * (0.8 - 0.5) = 0.16 + 0.18 + 0.06 = 0.40.
    (5, 9) -> (0.5, 0.45) is dominated by (0.6, 0.5): adds nothing and is off the front;
    (-1, 30) lies left of the nadir in helpful: adds nothing, yet nothing dominates it."""
    points = [[2, 16], [6, 10], [8, 4], [5, 9], [-1, 30]]
    hv, on_front = front_metrics(points, lower=[0, 0], upper=[10, 20])
    assert hv == pytest.approx(0.40)
    assert on_front.tolist() == [True, True, True, False, True]


def test_hypervolume_of_mean_points_3d_by_hand():
    """Unit box, points (1, .5, .5) and (.5, 1, .5): 0.25 + 0.25 - overlap 0.125 = 0.375."""
    hv, on_front = front_metrics([[1, .5, .5], [.5, 1, .5]], lower=[0, 0, 0], upper=[1, 1, 1])
    assert hv == pytest.approx(0.375)
    assert on_front.all()
    # the same points in a raw box of other units give the same volume
    hv2, _ = front_metrics([[10, 5, -5], [5, 10, -5]], lower=[0, 0, -10], upper=[10, 10, 0])
    assert hv2 == pytest.approx(0.375)


def test_point_beyond_the_box_counts_beyond_one():
    # a model beating the training maximum is not clipped: the volume may exceed the box
    hv, _ = front_metrics([[2, 1]], lower=[0, 0], upper=[1, 1])
    assert hv == pytest.approx(2.0)


def test_bootstrap_interval_contains_mean_and_shrinks_with_n():
    rng = np.random.default_rng(1)
    widths = {}
    for n in (50, 2000):
        x = rng.normal([1.0, -2.0], [1.0, 3.0], size=(n, 2))  # (n, 2)
        mean, lo, hi = bootstrap_mean(x, n_resamples=1000, seed=0)
        np.testing.assert_allclose(mean, x.mean(axis=0))
        assert (lo < mean).all() and (mean < hi).all()
        widths[n] = hi - lo
        # the normal-theory width 2 * 1.96 * sd / sqrt(n) is what a percentile bootstrap approximates
        expected = 2 * 1.96 * x.std(axis=0, ddof=1) / np.sqrt(n)
        np.testing.assert_allclose(widths[n], expected, rtol=0.2)
    assert (widths[2000] < widths[50] / 3).all()  # sqrt(40) ~ 6.3 in theory


def test_bootstrap_is_seeded_and_does_not_touch_input():
    x = np.random.default_rng(2).random((30, 3))
    before = x.copy()
    a = bootstrap_mean(x, n_resamples=300, seed=5)
    b = bootstrap_mean(x, n_resamples=300, seed=5)
    c = bootstrap_mean(x, n_resamples=300, seed=6)
    np.testing.assert_array_equal(a[1], b[1])
    assert not np.array_equal(a[1], c[1])
    np.testing.assert_array_equal(x, before)


def test_bootstrap_in_chunks_matches_memory_cap(monkeypatch):
    import paretohqd.evaluate.front as front

    x = np.random.default_rng(3).random((40, 2))
    whole = bootstrap_mean(x, n_resamples=100, seed=0)
    monkeypatch.setattr(front, "_CHUNK", 40 * 7)  # 7 resamples a chunk: 15 chunks, the last one short
    chunked = bootstrap_mean(x, n_resamples=100, seed=0)
    np.testing.assert_allclose(chunked[1], whole[1], rtol=0.05)  # same distribution, other draws
    assert np.isfinite(chunked[1]).all()


def test_bootstrap_zero_resamples_gives_nan_interval():
    mean, lo, hi = bootstrap_mean([[1.0], [3.0]], n_resamples=0, seed=0)
    assert mean.tolist() == [2.0] and np.isnan(lo).all() and np.isnan(hi).all()


@pytest.mark.parametrize("kwargs, match", [
    (dict(values=np.zeros((0, 2)), n_resamples=10), "values has no rows"),
    (dict(values=[[1.0]], n_resamples=-1), r"n_resamples must be >= 0, got -1"),
    (dict(values=[[1.0]], n_resamples=10, level=1.5), r"level must lie in \(0, 1\), got 1.5"),
    (dict(values=[[1.0], [float("nan")]], n_resamples=10), "values has 1 row"),
])
def test_bootstrap_errors(kwargs, match):
    values = kwargs.pop("values")
    with pytest.raises(ValueError, match=match):
        bootstrap_mean(values, seed=0, **kwargs)


def test_run_bounds_and_errors():
    lo, hi = run_bounds([[1, 5], [3, 2], [2, 9]])
    assert lo.tolist() == [1, 2] and hi.tolist() == [3, 9]
    with pytest.raises(ValueError, match=r"column\(s\) \[1\] take one value only"):
        run_bounds([[1, 5], [3, 5]])
    with pytest.raises(ValueError, match="scores has no rows"):
        run_bounds(np.zeros((0, 2)))
