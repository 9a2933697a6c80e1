"""Front numbers: hypervolume of mean points against hand-computed values, bootstrap intervals, bounds."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from paretohqd.evaluate.front import (bootstrap_hypervolume, bootstrap_mean, bootstrap_means, front_metrics,
                                      front_spread, fronts_box, percentile_interval, run_bounds, zscore_stats)


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


# Hypervolume bootstrap ---------------------------------------------------------------------------

def oracle_hv_2d(points, lower, upper):
    """Staircase area of maximised 2-D points above the normalised origin, by sorting (no moocore)."""
    z = [((x - lower[0]) / (upper[0] - lower[0]), (y - lower[1]) / (upper[1] - lower[1])) for x, y in points]
    z = sorted((p for p in z if p[0] > 0 and p[1] > 0), key=lambda p: -p[0])
    area, top = 0.0, 0.0
    for x, y in z:
        if y > top:
            area += x * (y - top)
            top = y
    return area


def oracle_bootstrap_hv(values, lower, upper, idx):
    """For each row of prompt draws `idx`, each model's mean by a plain sum, then the staircase."""
    out = []
    for draw in idx:
        means = [[sum(model[i][k] for i in draw) / len(draw) for k in range(2)] for model in values]
        out.append(oracle_hv_2d(means, lower, upper))
    return np.array(out)


@settings(max_examples=40, deadline=None)
@given(p=st.integers(1, 4), n=st.integers(1, 12), seed=st.integers(0, 2**16))
def test_bootstrap_hypervolume_matches_the_oracle(p, n, seed):
    values = np.random.default_rng(seed).uniform(-0.5, 1.5, size=(p, n, 2))  # some below the nadir
    lower, upper = [0.0, 0.0], [1.0, 2.0]
    got = bootstrap_hypervolume(values, lower=lower, upper=upper, n_resamples=30, seed=seed)
    idx = np.random.default_rng(seed).integers(0, n, size=(30, n))  # the draws the docstring promises
    np.testing.assert_allclose(got, oracle_bootstrap_hv(values.tolist(), lower, upper, idx), atol=1e-12)


def test_bootstrap_hypervolume_pairs_draws_across_runs(monkeypatch):
    """Draws depend on (prompts, seed) only: a run with 2 models and one with 5 over the same 9
    prompts get the same draws, chunked or not, so their difference is a paired bootstrap."""
    import paretohqd.evaluate.front as front

    rng = np.random.default_rng(7)
    a, b = rng.random((2, 9, 2)), rng.random((5, 9, 2))
    box = dict(lower=[0, 0], upper=[1, 1], n_resamples=50, seed=3)
    ha, hb = bootstrap_hypervolume(a, **box), bootstrap_hypervolume(b, **box)
    idx = np.random.default_rng(3).integers(0, 9, size=(50, 9))
    np.testing.assert_allclose(ha, oracle_bootstrap_hv(a.tolist(), [0, 0], [1, 1], idx), atol=1e-12)
    np.testing.assert_allclose(hb, oracle_bootstrap_hv(b.tolist(), [0, 0], [1, 1], idx), atol=1e-12)
    monkeypatch.setattr(front, "_CHUNK", 9 * 7)  # 7 resamples a chunk, whatever the number of models
    assert np.array_equal(bootstrap_hypervolume(a, **box)[:7], ha[:7])
    assert np.array_equal(bootstrap_hypervolume(b, **box)[:7], hb[:7])


@settings(max_examples=30, deadline=None)
@given(p=st.integers(1, 4), n=st.integers(1, 12), m=st.integers(1, 3), seed=st.integers(0, 2**16))
def test_bootstrap_means_are_the_promised_draws_for_every_model_at_once(p, n, m, seed):
    """Resample r of model q is the mean of values[q] over the prompts of draw r, the draws of the
    docstring; a model alone (the base model) gets the same draws as it does beside the others."""
    values = np.random.default_rng(seed).normal(size=(p, n, m))
    got = bootstrap_means(values, n_resamples=25, seed=seed)  # (25, p, m)
    idx = np.random.default_rng(seed).integers(0, n, size=(25, n))
    oracle = [[[sum(values[q, i, k] for i in draw) / n for k in range(m)] for q in range(p)] for draw in idx]
    np.testing.assert_allclose(got, oracle, atol=1e-12)
    np.testing.assert_allclose(bootstrap_means(values[-1:], n_resamples=25, seed=seed)[:, 0], got[:, -1], atol=1e-12)
    assert bootstrap_means(values, n_resamples=0, seed=seed).shape == (0, p, m)


@settings(max_examples=30, deadline=None)
@given(p=st.integers(1, 4), m=st.integers(2, 4), seed=st.integers(0, 2**16))
def test_bootstrap_hypervolume_properties(p, m, seed):
    rng = np.random.default_rng(seed)
    point = rng.random((p, 1, m))
    box = dict(lower=np.zeros(m), upper=np.ones(m), n_resamples=20, seed=seed)
    # every prompt rewarded alike: every resample is the point estimate
    same = bootstrap_hypervolume(np.repeat(point, 6, axis=1), **box)
    np.testing.assert_allclose(same, front_metrics(point[:, 0], lower=box["lower"], upper=box["upper"])[0])
    # hypervolume is a function of the set of mean points: model order does not matter
    values = rng.random((p, 6, m))
    np.testing.assert_allclose(bootstrap_hypervolume(values[::-1], **box), bootstrap_hypervolume(values, **box))
    # values inside the box give volumes inside [0, 1]
    hv = bootstrap_hypervolume(values, **box)
    assert ((hv >= 0) & (hv <= 1)).all()


def test_bootstrap_hypervolume_errors_and_interval():
    with pytest.raises(ValueError, match=r"shape \(models, prompts, objectives\)"):
        bootstrap_hypervolume(np.zeros((2, 3)), lower=[0], upper=[1], n_resamples=5, seed=0)
    with pytest.raises(ValueError, match="NaN or inf"):
        bootstrap_hypervolume([[[np.nan, 1.0]]], lower=[0, 0], upper=[1, 1], n_resamples=5, seed=0)
    assert bootstrap_hypervolume([[[1.0, 1.0]]], lower=[0, 0], upper=[1, 1], n_resamples=0, seed=0).shape == (0,)
    assert percentile_interval([]) is None
    assert percentile_interval([2.0, 2.0, 2.0]) == [2.0, 2.0]


# Other normalisations and the front's spread -------------------------------------------------------

def oracle_hv_2d_ref(points, lower, upper, ref):
    """The staircase of `oracle_hv_2d` with the reference moved to `ref` (normalised): shift by it."""
    span = [upper[k] - lower[k] for k in range(2)]
    moved_lower = [lower[k] + ref[k] * span[k] for k in range(2)]
    return oracle_hv_2d(points, moved_lower, [moved_lower[k] + span[k] for k in range(2)])


@settings(max_examples=40, deadline=None)
@given(p=st.integers(1, 4), n=st.integers(1, 8), seed=st.integers(0, 2**16),
       ref=st.tuples(st.floats(-2, 0.5), st.floats(-2, 0.5)))
def test_bootstrap_hypervolume_with_a_reference_point_matches_the_oracle(p, n, seed, ref):
    values = np.random.default_rng(seed).uniform(-1.5, 1.5, size=(p, n, 2))
    lower, upper = [0.5, -1.0], [1.0, 1.0]
    got = bootstrap_hypervolume(values, lower=lower, upper=upper, n_resamples=20, seed=seed, ref=list(ref))
    idx = np.random.default_rng(seed).integers(0, n, size=(20, n))
    want = [oracle_hv_2d_ref([[sum(m[i][k] for i in d) / n for k in range(2)] for m in values.tolist()], lower, upper,
                             ref) for d in idx]
    np.testing.assert_allclose(got, want, atol=1e-12)
    means = values.mean(axis=1)  # (p, 2)
    assert front_metrics(means, lower=lower, upper=upper, ref=list(ref))[0] == pytest.approx(
        oracle_hv_2d_ref(means.tolist(), lower, upper, ref), abs=1e-12)


def test_zscored_hypervolume_by_hand():
    """Training mean (1, 2), sd (0.5, 2): the mean point (2, 4) has z = (2, 1); from the reference
    z = (-1, -1) it dominates a 3 x 2 rectangle, 6."""
    hv, _ = front_metrics([[2.0, 4.0]], lower=[1.0, 2.0], upper=[1.5, 4.0], ref=[-1.0, -1.0])
    assert hv == pytest.approx(6.0)


def test_zscore_stats_are_the_scores_stats_json_ones():
    import pandas as pd

    from paretohqd.rewards.score import stats

    x = np.random.default_rng(4).normal([1.0, -3.0], [2.0, 0.5], size=(200, 2))
    mean, std = zscore_stats(x)
    want = stats(pd.DataFrame(x, columns=["a", "b"]), ["a", "b"])  # what data/scores.stats.json holds
    np.testing.assert_allclose(mean, [want["a"]["mean"], want["b"]["mean"]], rtol=1e-12)
    np.testing.assert_allclose(std, [want["a"]["std"], want["b"]["std"]], rtol=1e-12)
    z = (x - mean) / std
    np.testing.assert_allclose([z.mean(axis=0), z.std(axis=0)], [[0, 0], [1, 1]], atol=1e-12)
    with pytest.raises(ValueError, match=r"column\(s\) \[1\] take one value only"):
        zscore_stats([[1.0, 2.0], [3.0, 2.0]])
    with pytest.raises(ValueError, match="scores has no rows"):
        zscore_stats(np.zeros((0, 2)))


def test_fronts_box_and_errors():
    lo, hi = fronts_box([[1, 3], [2, 2], [3, 1], [0.5, 0.5]])
    assert lo.tolist() == [0.5, 0.5] and hi.tolist() == [3, 3]
    with pytest.raises(ValueError, match=r"same mean in objective column\(s\) \[0\]"):
        fronts_box([[1, 3], [1, 2]])
    with pytest.raises(ValueError, match=r"same mean in objective column\(s\) \[0, 1\]"):
        fronts_box([[1, 3]])  # one model alone: no box
    with pytest.raises(ValueError, match="points has no rows"):
        fronts_box(np.zeros((0, 2)))


@settings(max_examples=40, deadline=None)
@given(p=st.integers(1, 6), seed=st.integers(0, 2**16))
def test_front_spread_is_spacing_and_sparsity_of_the_normalised_front(p, seed):
    """Oracle: drop dominated points by the O(P^2) definition, normalise by hand, then plain loops."""
    import math

    rng = np.random.default_rng(seed)
    pts = rng.integers(0, 5, size=(p, 2)) * [2.0, 0.5] + [1.0, -1.0]  # ties and duplicates likely
    lower, upper = [1.0, -1.0], [9.0, 1.0]
    keep = [i for i in range(p) if not any((pts[j] >= pts[i]).all() and (pts[j] > pts[i]).any() for j in range(p))]
    z = [[(pts[i][k] - lower[k]) / (upper[k] - lower[k]) for k in range(2)] for i in keep]
    sp, sq = front_spread(pts, lower=lower, upper=upper)
    if len(z) < 2:
        assert math.isnan(sp) and math.isnan(sq)
        return
    d = [min(sum(abs(a - b) for a, b in zip(z[i], z[j])) for j in range(len(z)) if j != i) for i in range(len(z))]
    want_sp = math.sqrt(sum((sum(d) / len(d) - x) ** 2 for x in d) / (len(z) - 1))
    cols = [sorted(q[k] for q in z) for k in range(2)]
    want_sq = sum((c[i + 1] - c[i]) ** 2 for c in cols for i in range(len(z) - 1)) / (len(z) - 1)
    assert sp == pytest.approx(want_sp, abs=1e-12) and sq == pytest.approx(want_sq, abs=1e-12)


def test_front_spread_errors():
    with pytest.raises(ValueError, match="'upper' must exceed 'lower'"):
        front_spread([[1.0, 1.0], [0.0, 2.0]], lower=[0, 0], upper=[0, 1])
