"""Preferences and selection: hand-worked geometry, hypothesis properties, the paper's argument."""

import re
import warnings
from math import comb

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from paretohqd.pareto.layers import nondominated_layers
from paretohqd.pareto.preferences import (
    check_preferences,
    preferences_from_config,
    simplex_grid,
)
from paretohqd.pareto.rays import (
    normalise,
    ray_distances,
    select_direction,
    select_scalarised,
)
from paretohqd.select.preferences_file import read_preferences

SELECTORS = [select_direction, select_scalarised]


# --- preferences ---------------------------------------------------------------------------


def test_simplex_grid_two_objectives_is_the_papers_eleven():
    w = simplex_grid(2, 11)
    np.testing.assert_allclose(w[:, 0], np.arange(11) / 10)
    np.testing.assert_allclose(w.sum(axis=1), 1.0)


@pytest.mark.parametrize("m, n", [(3, 11), (3, 4), (4, 5), (5, 3)])
def test_simplex_grid_is_the_full_lattice(m, n):
    w = simplex_grid(m, n)
    assert w.shape == (comb(n - 1 + m - 1, m - 1), m)
    steps = w * (n - 1)
    np.testing.assert_allclose(steps, np.round(steps), atol=1e-9)  # multiples of 1/(n-1)
    np.testing.assert_allclose(w.sum(axis=1), 1.0)
    assert len({tuple(r) for r in np.round(steps).astype(int)}) == len(w)  # no repeats
    assert (w >= 0).all()


def test_simplex_grid_errors():
    with pytest.raises(ValueError, match="n_objectives must be an int >= 2; got 1"):
        simplex_grid(1, 11)
    with pytest.raises(ValueError, match="points_per_axis must be an int >= 2; got 1"):
        simplex_grid(2, 1)


def test_check_preferences_accepts_and_copies():
    given_w = [[1 / 3, 1 / 3, 1 / 3], [0.0, 0.0, 1.0]]
    w = check_preferences(given_w, 3)
    assert w.shape == (2, 3) and w.dtype == np.float64


_ON_SIMPLEX = st.floats(0, 1).map(lambda a: [a, 1 - a])
_ANY_ROW = st.lists(st.one_of(st.floats(-0.5, 1.5), st.just(float("nan"))), min_size=2, max_size=2)


@settings(max_examples=80, deadline=None)
@given(st.lists(st.one_of(_ON_SIMPLEX, _ON_SIMPLEX, _ANY_ROW), min_size=1, max_size=6))
def test_check_preferences_array_fast_path_answers_as_the_row_check(rows):
    """An ndarray on the simplex skips the row-by-row loop (the bootstrap passes one checked array a
    thousand times); every array gets the answer (or the error) of the same rows as a list, and a copy."""
    arr = np.array(rows)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # rows rescaled onto the simplex warn on both paths alike
        try:
            expected = check_preferences(rows, 2)
        except ValueError as e:
            with pytest.raises(ValueError, match=re.escape(str(e))):
                check_preferences(arr, 2)
            return
        got = check_preferences(arr, 2)
    np.testing.assert_array_equal(got, expected)
    assert not np.shares_memory(got, arr)


def test_check_preferences_reports_every_problem_at_once():
    bad = [[0.5, 0.5], [0.2, 0.3, 0.5], [-0.1, 1.1], [0.5, 0.6], [float("nan"), 1.0], ["a", 1]]
    with pytest.raises(ValueError) as e:
        check_preferences(bad, 2)
    msg = str(e.value)
    assert msg.startswith("5 bad preference(s):")
    assert "preference 1 [0.2, 0.3, 0.5]: has 3 weights but there are 2 objectives" in msg
    assert "preference 2 [-0.1, 1.1]: negative weight; weights must be >= 0" in msg
    assert "preference 3 [0.5, 0.6]: sums to 1.1, not 1; rescale" in msg
    assert "preference 4 [nan, 1.0]: weights must be finite" in msg
    assert "preference 5 ['a', 1]: not a list of numbers" in msg
    assert "preference 0" not in msg


def test_check_preferences_tolerance_and_empty():
    check_preferences([[0.3333333, 0.6666667]], 2)  # within 1e-6
    # within 1e-2 (rounded weights): rescaled onto the simplex, and the rows are named
    with pytest.warns(UserWarning, match=r"preference\(s\) \[1\] sum to \[0.9999\], not 1: renormalised"):
        out = check_preferences([[0.2, 0.8], [0.4999, 0.5]], 2)
    np.testing.assert_allclose(out, [[0.2, 0.8], [0.4999 / 0.9999, 0.5 / 0.9999]])
    with pytest.raises(ValueError, match="sums to 0.98, not 1"):
        check_preferences([[0.48, 0.5]], 2)
    with pytest.raises(ValueError, match="preferences must be a non-empty list of weight vectors; got \\[\\]"):
        check_preferences([], 2)
    with pytest.raises(ValueError, match="has shape \\(2, 1\\) weights"):
        check_preferences([[[0.5], [0.5]]], 2)


def test_preferences_from_config():
    np.testing.assert_array_equal(preferences_from_config(11, 2), simplex_grid(2, 11))
    with pytest.warns(UserWarning, match=r"\[7\] sum to \[0.99\]"):
        ric = preferences_from_config("ric-3obj", 3)
    assert ric.shape == (13, 3) and np.allclose(ric.sum(axis=1), 1) and np.allclose(ric[7], 1 / 3)
    with pytest.raises(ValueError, match=r"unknown preference preset 'ric'; presets are \['ric-3obj'\]"):
        preferences_from_config("ric", 3)
    np.testing.assert_array_equal(preferences_from_config([[0.2, 0.8]], 2), [[0.2, 0.8]])
    with pytest.raises(ValueError, match="has 2 weights but there are 3 objectives"):
        preferences_from_config([[0.2, 0.8]], 3)
    with pytest.raises(ValueError, match="non-empty list"):
        preferences_from_config(True, 2)  # a bool is not a grid size


def test_read_preferences_formats(tmp_path):
    (tmp_path / "p.yaml").write_text("preferences:\n  - [0.3, 0.7]\n  - [1, 0]\n")
    (tmp_path / "p.json").write_text("[[0.3, 0.7], [1, 0]]")
    (tmp_path / "p.csv").write_text("helpful,harmless\n0.3,0.7\n1,0\n")
    for name in ("p.yaml", "p.json", "p.csv"):
        assert read_preferences(tmp_path / name) == [[0.3, 0.7], [1.0, 0.0]]


def test_read_preferences_errors(tmp_path):
    with pytest.raises(ValueError, match="nope.yaml: cannot read preferences file"):
        read_preferences(tmp_path / "nope.yaml")
    (tmp_path / "a.yaml").write_text("weights: 3\n")
    with pytest.raises(ValueError, match="a.yaml: expected a list of weight vectors"):
        read_preferences(tmp_path / "a.yaml")
    (tmp_path / "b.yaml").write_text("[[0.5, x]]\n")
    with pytest.raises(ValueError, match="b.yaml: every weight must be a number"):
        read_preferences(tmp_path / "b.yaml")
    (tmp_path / "c.yaml").write_text("[[0.5, 0.5]\n")
    with pytest.raises(ValueError, match="c.yaml: not valid YAML/JSON"):
        read_preferences(tmp_path / "c.yaml")
    (tmp_path / "d.csv").write_text("a,b\n0.5,0.5\n0.5,oops\n")
    with pytest.raises(ValueError, match="d.csv: row 3 '0.5,oops' is not a list of numbers"):
        read_preferences(tmp_path / "d.csv")
    (tmp_path / "e.csv").write_text("a,b\n")
    with pytest.raises(ValueError, match="e.csv: no weight vectors found"):
        read_preferences(tmp_path / "e.csv")


# --- geometry, worked by hand ---------------------------------------------------------------


def naive_ray_distance(z, w):
    """Distance from z to the ray {1 + t (w - 1): t >= 0}, by the projection formula, one point."""
    o = np.ones_like(w)
    d = (w - o) / np.linalg.norm(w - o)
    t = max(float(np.dot(z - o, d)), 0.0)
    return float(np.linalg.norm(z - (o + t * d)))


def test_ray_distances_by_hand():
    """w = (0.5, 0.5): the ray is the diagonal from (1, 1) down through (0.5, 0.5).

    (0, 1) projects onto the diagonal at (0.5, 0.5): distance sqrt(0.5). (1.5, 1.5) lies behind
    the origin (1, 1): its distance is to (1, 1), sqrt(0.5). (1, 0) is symmetric to (0, 1).
    """
    d = ray_distances([[0.0, 1.0], [1.5, 1.5], [1.0, 0.0], [0.2, 0.2]], [[0.5, 0.5]])
    np.testing.assert_allclose(d, [[np.sqrt(0.5), np.sqrt(0.5), np.sqrt(0.5), 0.0]], atol=1e-12)
    # w = (1, 0): the ray runs straight down the z1 = 1 edge, so distance is 1 - z1 below the top.
    d = ray_distances([[0.25, 0.4], [1.0, 0.1]], [[1.0, 0.0]])
    np.testing.assert_allclose(d, [[0.75, 0.0]], atol=1e-12)


def test_ray_distances_match_the_naive_formula():
    rng = np.random.default_rng(0)
    z = rng.normal(0.5, 0.6, size=(50, 3))  # some points beyond the ideal, behind the origin
    w = simplex_grid(3, 4)
    got = ray_distances(z, w)
    want = [[naive_ray_distance(p, wi) for p in z] for wi in w]
    np.testing.assert_allclose(got, want, atol=1e-12)


def test_normalise_constant_objective_and_explicit_bounds():
    np.testing.assert_array_equal(normalise([[1, 5], [3, 5]]), [[0, 0], [1, 0]])
    np.testing.assert_array_equal(normalise([[2, 6]], lower=[0, 4], upper=[4, 8]), [[0.5, 0.5]])


def test_direction_prefers_the_balanced_point_scalarised_cannot_tell():
    """On the line z1 + z2 = 1 every point has w . z = 0.5 for w = (0.5, 0.5): scalarisation sees
    a tie (stable: first row wins), while the ray through (0.5, 0.5) picks the middle point."""
    pts = [[0.0, 1.0], [0.2, 0.8], [0.5, 0.5], [0.8, 0.2], [1.0, 0.0]]
    w = [[0.5, 0.5]]
    assert select_direction(pts, w, k=1)[0].tolist() == [[2]]
    assert select_scalarised(pts, w, k=1)[0].tolist() == [[0]]


def test_non_convex_front_scalarisation_misses_the_middle():
    """The paper's argument. Front z2 = (1 - sqrt(z1))^2 bulges toward the nadir (non-convex for
    maximisation): for any w, w . z is convex along it, so its maximum is an end point. Linear
    scalarisation can only ever pick (1, 0) or (0, 1); rays through w reach the middle."""
    t = np.linspace(0, 1, 201)
    front = np.column_stack([t, (1 - np.sqrt(t)) ** 2])  # (201, 2)
    inside = np.random.default_rng(0).random((300, 2)) * front[:, None].min()  # dominated filler
    pts = np.vstack([front, inside * 0.1])
    pool = np.flatnonzero(nondominated_layers(pts) == 0)
    assert set(pool) == set(range(201))
    w = simplex_grid(2, 11)
    scal = select_scalarised(pts[pool], w, k=1, lower=[0, 0], upper=[1, 1])[0].ravel()
    direc = select_direction(pts[pool], w, k=1, lower=[0, 0], upper=[1, 1])[0].ravel()
    assert set(scal) <= {0, 200}  # only the two ends
    assert len(set(direc)) == 11  # one distinct point per preference
    middle = pts[pool][direc[5]]  # w = (0.5, 0.5): the front point on the diagonal, (0.25, 0.25)
    np.testing.assert_allclose(middle, [0.25, 0.25], atol=0.01)


# --- properties ------------------------------------------------------------------------------


@st.composite
def problems(draw):
    m = draw(st.integers(2, 3))
    n = draw(st.integers(3, 40))
    # Few integer levels: ties and duplicates are common, as in real reward scores.
    levels = draw(st.sampled_from([3, 6, 1000]))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    pts = rng.integers(0, levels, size=(n, m)).astype(float)
    prefs = simplex_grid(m, draw(st.integers(2, 6)))
    k = draw(st.integers(1, n))
    return pts, prefs, k, rng


SETTINGS = settings(max_examples=40, deadline=None, derandomize=True)


@SETTINGS
@given(problems())
def test_k_distinct_rows_per_preference_and_optimality(problem):
    pts, prefs, k, _ = problem
    for select in SELECTORS:
        idx, dist = select(pts, prefs, k=k)
        assert idx.shape == dist.shape == (len(prefs), k)
        assert all(len(set(row)) == k for row in idx)
    idx, dist = select_direction(pts, prefs, k=k)
    all_d = ray_distances(normalise(pts), prefs)  # (P, N)
    for i in range(len(prefs)):
        np.testing.assert_allclose(dist[i], all_d[i, idx[i]])
        assert (np.diff(dist[i]) >= -1e-9).all()  # nearest first
        others = np.setdiff1d(np.arange(len(pts)), idx[i])
        if len(others):  # no unselected point is nearer than a selected one
            assert all_d[i, others].min() >= dist[i].max() - 1e-9


@SETTINGS
@given(problems())
def test_scalarised_takes_the_largest_utilities(problem):
    pts, prefs, k, _ = problem
    idx, _ = select_scalarised(pts, prefs, k=k)
    u = prefs @ normalise(pts).T  # (P, N)
    for i in range(len(prefs)):
        kth = np.sort(u[i])[::-1][k - 1]
        assert (u[i, idx[i]] >= kth - 1e-9).all()


def _keys(select, pts, prefs):
    """(P, N) what each method sorts on (smaller is better), from the original points."""
    z = normalise(pts)
    return ray_distances(z, prefs) if select is select_direction else -(prefs @ z.T)


def assert_same_selection(select, pts, prefs, k, idx, idx_other):
    """Same keys picked; and the same rows, unless the k-th and (k+1)-th keys are tied (within
    round-off), where either tied row is a correct pick."""
    key = _keys(select, pts, prefs)  # (P, N)
    for i in range(len(prefs)):
        np.testing.assert_allclose(np.sort(key[i, idx_other[i]]), np.sort(key[i, idx[i]]), atol=1e-9)
        s = np.sort(key[i])
        if k == len(s) or s[k] - s[k - 1] > 1e-9:
            assert set(idx_other[i]) == set(idx[i])


@SETTINGS
@given(problems())
def test_permutation_invariance(problem):
    pts, prefs, k, rng = problem
    perm = rng.permutation(len(pts))
    for select in SELECTORS:
        idx, _ = select(pts, prefs, k=k)
        idx_p, _ = select(pts[perm], prefs, k=k)
        assert_same_selection(select, pts, prefs, k, idx, perm[idx_p])  # back to original rows


@SETTINGS
@given(problems(), st.data())
def test_positive_affine_invariance(problem, data):
    """Rescale each objective by a > 0 and shift it by b. With a a power of two and b an integer
    the float arithmetic is exact, so the picks are identical, ties and all; with arbitrary
    floats they agree up to round-off (near-ties may break either way)."""
    pts, prefs, k, _ = problem
    m = pts.shape[1]
    exact_a = 2.0 ** np.array(data.draw(st.lists(st.integers(-8, 8), min_size=m, max_size=m)))
    exact_b = np.array(data.draw(st.lists(st.integers(-1000, 1000), min_size=m, max_size=m)), float)
    any_a = np.array(data.draw(st.lists(st.floats(1e-2, 1e2), min_size=m, max_size=m)))
    any_b = np.array(data.draw(st.lists(st.floats(-1e3, 1e3), min_size=m, max_size=m)))
    for select in SELECTORS:
        idx, dist = select(pts, prefs, k=k)
        idx_e, dist_e = select(pts * exact_a + exact_b, prefs, k=k)
        np.testing.assert_array_equal(idx_e, idx)
        np.testing.assert_allclose(dist_e, dist, atol=1e-12)
        idx_f, _ = select(pts * any_a + any_b, prefs, k=k)
        assert_same_selection(select, pts, prefs, k, idx, idx_f)


@SETTINGS
@given(problems())
def test_all_weight_on_objective_one_picks_its_best(problem):
    """w = (1, 0): the ray runs down the z1 = 1 edge, distance 1 - z1, so the picks are the k
    best in objective 1 (the edge of the front where objective 1 is at its best)."""
    pts, _, k, _ = problem
    pts = pts[:, :2]  # in 3-D the w = (1, 0, 0) ray is a face diagonal, not an edge
    w = np.array([[1.0, 0.0]])
    idx, dist = select_direction(pts, w, k=k)
    np.testing.assert_array_equal(np.sort(pts[idx[0], 0]), np.sort(pts[:, 0])[-k:])
    np.testing.assert_allclose(dist[0], 1 - normalise(pts)[idx[0], 0], atol=1e-12)


def test_selection_errors():
    pts = [[0.0, 1.0], [1.0, 0.0]]
    w = [[0.5, 0.5]]
    with pytest.raises(ValueError, match=r"k must be an int in \[1, 2\] \(the number of points\); got 3"):
        select_direction(pts, w, k=3)
    with pytest.raises(ValueError, match=r"k must be an int in \[1, 2\] \(the number of points\); got 0"):
        select_scalarised(pts, w, k=0)
    with pytest.raises(ValueError, match="has 3 weights but there are 2 objectives"):
        select_direction(pts, [[0.2, 0.3, 0.5]], k=1)
    with pytest.raises(ValueError, match="selection needs at least 2 objectives"):
        select_direction([[1.0], [2.0]], [[1.0]], k=1)
    with pytest.raises(ValueError, match=r"'lower' must have length 2 \(one per objective\), but it has shape \(3,\)"):
        select_direction(pts, w, k=1, lower=[0, 0, 0])
    with pytest.raises(ValueError, match=r"'upper' is below 'lower' for objective\(s\) \[1\]"):
        select_direction(pts, w, k=1, lower=[0, 2], upper=[1, 1])
    with pytest.raises(ValueError, match="'upper' must be finite"):
        select_direction(pts, w, k=1, upper=[1, np.inf])
    with pytest.raises(ValueError, match="cannot take default bounds of an empty set of points"):
        normalise(np.zeros((0, 2)))
    with pytest.raises(ValueError, match=r"rows \(0-based\): \[1\]"):
        select_direction([[0.0, 1.0], [np.nan, 0.0]], w, k=1)


def test_inputs_are_not_mutated():
    rng = np.random.default_rng(0)
    pts = rng.random((60, 3))
    prefs = simplex_grid(3, 4)
    lower, upper = np.zeros(3), np.ones(3)
    arrays = (pts, prefs, lower, upper)
    before = [a.copy() for a in arrays]
    for a in arrays:
        a.flags.writeable = False  # any in-place write would raise
    for select in SELECTORS:
        select(pts, prefs, k=5, lower=lower, upper=upper)
        select(pts, prefs, k=5)
    normalise(pts, lower=lower, upper=upper)
    ray_distances(pts, prefs)
    for a, b in zip(arrays, before):
        np.testing.assert_array_equal(a, b)


def test_top_k_partition_path_breaks_ties_like_a_stable_sort():
    from paretohqd.pareto.rays import _stable_top_k

    key = np.random.default_rng(0).integers(0, 5, size=(7, 400)).astype(float)  # many ties
    for k in (1, 3, 20, 49, 400):  # k < N/8 takes the argpartition path
        np.testing.assert_array_equal(_stable_top_k(key, k), np.argsort(key, axis=1, kind="stable")[:, :k])
