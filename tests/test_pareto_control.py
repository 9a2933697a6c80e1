"""Controllability indicators (calibration, order tau, largest hole) and the reference-front metrics
(IGD+, additive epsilon): hand-computed fronts, slow loop oracles, hypothesis properties."""

import math
from itertools import combinations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.stats import kendalltau

from paretohqd.pareto.control import calibration, kendall_tau, largest_hole, neighbour_pairs, order_tau, reach
from paretohqd.pareto.metrics import epsilon_additive, igd_plus
from paretohqd.pareto.preferences import simplex_grid

BOX = dict(lower=[0.0, 0.0], upper=[10.0, 10.0])


# --- oracles: the definitions, written as loops ---------------------------------------------------

def oracle_angles(prefs, achieved, lower, upper, origin=None):
    """acos of the cosine, per preference, in the normalised box (origin default: the ideal)."""
    out = []
    lo, hi = np.asarray(lower, float), np.asarray(upper, float)
    o = np.ones(len(lo)) if origin is None else (np.asarray(origin, float) - lo) / (hi - lo)
    for w, a in zip(prefs, achieved):
        u = [wk - ok for wk, ok in zip(w, o)]
        v = [(ak - l) / (h - l) - ok for ak, l, h, ok in zip(a, lo, hi, o)]
        dot = sum(x * y for x, y in zip(u, v))
        cos = dot / math.sqrt(sum(x * x for x in u)) / math.sqrt(sum(y * y for y in v))
        out.append(math.degrees(math.acos(max(-1.0, min(1.0, cos)))))
    return out


def oracle_tau(x, y):
    """Kendall's tau-b by counting pairs: (C - D) / sqrt((n0 - ties_x) (n0 - ties_y))."""
    c = d = tx = ty = 0
    for i, j in combinations(range(len(x)), 2):
        dx, dy = x[i] - x[j], y[i] - y[j]
        tx += dx == 0
        ty += dy == 0
        if dx * dy > 0:
            c += 1
        elif dx * dy < 0:
            d += 1
    n0 = len(x) * (len(x) - 1) / 2
    return (c - d) / math.sqrt((n0 - tx) * (n0 - ty))


def oracle_grid_edges(m, n):
    """Simplex-lattice edges: two grid points that differ by one step up in one weight and one
    step down in another, and agree elsewhere."""
    counts = np.rint(simplex_grid(m, n) * (n - 1)).astype(int)
    edges = []
    for i, j in combinations(range(len(counts)), 2):
        diff = counts[i] - counts[j]
        if sorted(diff.tolist()) == [-1] + [0] * (m - 2) + [1]:
            edges.append([i, j])
    return edges


def oracle_igd_plus(points, ref):
    return sum(min(math.sqrt(sum(max(r - a, 0.0) ** 2 for r, a in zip(rp, ap))) for ap in points)
               for rp in ref) / len(ref)


def oracle_epsilon(points, ref):
    return max(min(max(r - a for r, a in zip(rp, ap)) for ap in points) for rp in ref)


# --- calibration ----------------------------------------------------------------------------------

def test_calibration_by_hand():
    """Box [0, 10]^2, ideal (10, 10). w = (0, 1): the ray runs left, (-1, 0); the achieved (4, 10)
    is on it (0 deg). w = (0.5, 0.5): the ray is the diagonal; the achieved (10, 0) lies straight
    below the ideal, 45 deg off. w = (1, 0): the ray runs down; the achieved (0, 10) lies left of the
    ideal, 90 deg off. Mean (0 + 45 + 90) / 3 = 45."""
    angles, mean = calibration([[0, 1], [0.5, 0.5], [1, 0]], [[4, 10], [10, 0], [0, 10]], **BOX)
    assert angles == pytest.approx([0.0, 45.0, 90.0], abs=1e-9) and mean == pytest.approx(45.0)


def test_calibration_from_the_base_model():
    """Origin = base (2, 2) in the box [0, 10]^2: w = (1, 0) points from (0.2, 0.2) toward
    W = (1, 0), direction (0.8, -0.2); a model that only gained objective 1, at (6, 2), moved
    along (1, 0): atan(0.2 / 0.8) = 14.04 deg off."""
    angles, _ = calibration([[1, 0]], [[6, 2]], **BOX, origin=[2, 2])
    assert angles[0] == pytest.approx(math.degrees(math.atan(0.25)))


def test_calibration_point_at_the_origin_has_no_angle():
    """An achieved point at the origin, or an origin at a preference's W, gives no direction:
    NaN for that preference, left out of the mean."""
    angles, mean = calibration([[1, 0], [0, 1]], [[10, 10], [0, 10]], **BOX)
    assert math.isnan(angles[0]) and angles[1] == pytest.approx(0.0) and mean == pytest.approx(0.0)
    assert math.isnan(calibration([[1, 0]], [[10, 10]], **BOX)[1])
    angles, mean = calibration([[1, 0], [0.5, 0.5]], [[9, 1], [6, 6]], **BOX, origin=[5, 5])
    assert angles[0] == pytest.approx(0.0, abs=1e-6) and math.isnan(angles[1]) and mean == pytest.approx(0.0, abs=1e-6)


def test_calibration_matches_the_acos_oracle():
    rng = np.random.default_rng(0)
    for m in (2, 3, 4):
        prefs = rng.dirichlet(np.ones(m), size=9)
        pts = rng.uniform(-1, 12, size=(9, m))
        box = dict(lower=[0.0] * m, upper=rng.uniform(5, 20, size=m).tolist())
        assert calibration(prefs, pts, **box)[0] == pytest.approx(oracle_angles(prefs, pts, **box), abs=1e-6)
        origin = rng.uniform(0, 5, size=m)
        assert calibration(prefs, pts, **box, origin=origin)[0] == pytest.approx(
            oracle_angles(prefs, pts, **box, origin=origin), abs=1e-6)


weights2 = st.floats(0, 1).map(lambda a: [a, 1 - a])


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(weights2, st.floats(0.01, 3)), min_size=1, max_size=8),
       st.lists(st.floats(0.1, 100), min_size=2, max_size=2), st.lists(st.floats(-50, 50), min_size=2, max_size=2))
def test_calibration_is_zero_on_the_rays_in_any_box(rows, span, lower):
    """Achieved points ideal + t (W - ideal), t > 0, lie on the rays: 0 deg in every box."""
    prefs = np.array([w for w, _ in rows])
    t = np.array([s for _, s in rows])[:, None]
    lo, sp = np.array(lower), np.array(span)
    achieved = (lo + sp) + t * (prefs - 1.0) * sp  # raw, on each ray
    angles, mean = calibration(prefs, achieved, lower=lo, upper=lo + sp)
    assert np.all(angles < 1e-4) and mean < 1e-4


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 2**32 - 1), st.lists(st.floats(0.1, 100), min_size=3, max_size=3),
       st.lists(st.floats(-50, 50), min_size=3, max_size=3))
def test_calibration_ignores_the_units_and_the_row_order(seed, scale, shift):
    """Rescaling an objective and its bounds together leaves z, hence every angle, unchanged;
    permuting the preferences permutes the angles."""
    rng = np.random.default_rng(seed)
    prefs, pts = rng.dirichlet(np.ones(3), size=6), rng.uniform(0, 1, size=(6, 3))
    box = dict(lower=[0.0] * 3, upper=[1.0] * 3)
    angles, mean = calibration(prefs, pts, **box)
    a, b = np.array(scale), np.array(shift)
    moved, _ = calibration(prefs, pts * a + b, lower=b, upper=a + b)
    assert moved == pytest.approx(angles, abs=1e-6)
    perm = rng.permutation(6)
    assert calibration(prefs[perm], pts[perm], **box)[0] == pytest.approx(angles[perm], abs=1e-9)
    assert 0 <= mean <= 180


# --- order tau ------------------------------------------------------------------------------------

def test_order_tau_matches_pair_counting_and_scipy():
    rng = np.random.default_rng(1)
    for n in (2, 3, 7, 20):
        x, y = rng.integers(0, 4, size=n).astype(float), rng.integers(0, 4, size=n).astype(float)  # many ties
        if len(set(x)) > 1 and len(set(y)) > 1:
            assert kendall_tau(x, y) == pytest.approx(oracle_tau(x, y))
            assert kendall_tau(x, y) == pytest.approx(kendalltau(x, y).statistic)
    assert math.isnan(kendall_tau([1, 2, 3], [5, 5, 5]))


def test_order_tau_on_a_front_with_a_hole():
    """The weighted sum's failure: the three middle preferences of five land on the end points.
    Objective 1 over w_1 = 0, .25, .5, .75, 1 reads 0, 0, 0, 10, 10: pairs with a tie in objective 1
    (4 of 10) drop out, the other 6 agree: tau_b = 6 / sqrt(10 * 6) = 0.7746."""
    prefs = simplex_grid(2, 5)
    taus, mean = order_tau(prefs, [[0, 10], [0, 10], [0, 10], [10, 0], [10, 0]])
    assert taus == pytest.approx([6 / math.sqrt(60)] * 2) and mean == pytest.approx(6 / math.sqrt(60))


@settings(max_examples=60, deadline=None)
@given(st.integers(2, 12), st.integers(0, 2**32 - 1))
def test_order_tau_is_one_on_a_monotone_front_under_any_increasing_rescale(n, seed):
    rng = np.random.default_rng(seed)
    prefs = simplex_grid(2, n)
    x = np.sort(rng.uniform(0, 1, size=n))  # objective 1 rises with w_1 ...
    while len(np.unique(x)) < n:
        x = np.sort(rng.uniform(0, 1, size=n))
    front = np.stack([x, 1 - x**2], axis=1)  # ... and objective 2 falls: a concave front
    taus, mean = order_tau(prefs, front)
    assert taus.tolist() == [1.0, 1.0] and mean == 1.0
    assert order_tau(prefs, np.exp(front * 3) - 7)[0].tolist() == [1.0, 1.0]
    assert order_tau(prefs, front[::-1])[1] == -1.0


def test_order_tau_three_objectives_is_per_objective():
    """On the 3-objective grid of 6 points, objective k equal to w_k gives tau 1 in each."""
    prefs = simplex_grid(3, 3)
    taus, mean = order_tau(prefs, prefs * [1.0, 2.0, 3.0])
    assert taus.tolist() == [1.0, 1.0, 1.0] and mean == 1.0


# --- neighbours and the largest hole ----------------------------------------------------------------

@pytest.mark.parametrize("m,n", [(3, 2), (3, 3), (3, 5), (4, 3), (4, 4), (5, 3)])
def test_neighbours_are_the_simplex_lattice_edges(m, n):
    assert neighbour_pairs(simplex_grid(m, n)).tolist() == oracle_grid_edges(m, n)


def test_neighbours_two_objectives_follow_w1_whatever_the_row_order():
    prefs = [[0.5, 0.5], [1, 0], [0, 1], [0.9, 0.1]]
    assert neighbour_pairs(prefs).tolist() == [[0, 2], [0, 3], [1, 3]]


def test_largest_hole_by_hand_and_against_a_loop():
    """Five preferences, the middle three on the end points (the weighted-sum failure): the step
    from (0, 1) to (1, 0) is sqrt(2), between rows 2 and 3; evenly spread it is 0.25 sqrt(2)."""
    prefs = simplex_grid(2, 5)
    hole, pair = largest_hole(prefs, [[0, 10], [0, 10], [0, 10], [10, 0], [10, 0]], **BOX)
    assert hole == pytest.approx(math.sqrt(2)) and pair.tolist() == [2, 3]
    even = [[10 * a, 10 * (1 - a)] for a in np.linspace(0, 1, 5)]
    assert largest_hole(prefs, even, **BOX)[0] == pytest.approx(0.25 * math.sqrt(2))
    rng = np.random.default_rng(2)
    grid = simplex_grid(3, 4)
    pts = rng.uniform(0, 10, size=(len(grid), 3))
    z = pts / 10
    loop = max(math.dist(z[i], z[j]) for i, j in oracle_grid_edges(3, 4))
    assert largest_hole(grid, pts, lower=[0] * 3, upper=[10] * 3)[0] == pytest.approx(loop)


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 2**32 - 1))
def test_largest_hole_does_not_depend_on_the_row_order(seed):
    rng = np.random.default_rng(seed)
    prefs, pts = simplex_grid(2, 6), rng.uniform(0, 10, size=(6, 2))
    perm = rng.permutation(6)
    assert largest_hole(prefs[perm], pts[perm], **BOX)[0] == pytest.approx(largest_hole(prefs, pts, **BOX)[0])


def test_reach_against_a_loop_over_every_pair():
    """The longest normalised distance between any two points (an obvious double loop), in any box."""
    rng = np.random.default_rng(5)
    for m in (2, 3):
        pts = rng.uniform(0, 10, size=(6, m))
        lo, hi = np.full(m, -2.0), np.full(m, 12.0)
        z = (pts - lo) / (hi - lo)
        loop = max(math.dist(z[i], z[j]) for i, j in combinations(range(len(z)), 2))
        assert reach(pts, lower=lo, upper=hi) == pytest.approx(loop)
    assert reach([[3, 4]], **BOX) == 0.0


def test_reach_tells_models_that_answer_alike_from_a_walk_along_the_front():
    """The case the hole alone misreads: five models on one point have no hole and no reach."""
    prefs = simplex_grid(2, 5)
    alike = [[5, 5]] * 5
    walk = [[10 * a, 10 * (1 - a)] for a in np.linspace(0, 1, 5)]
    assert largest_hole(prefs, alike, **BOX)[0] == 0.0 == reach(alike, **BOX)
    assert reach(walk, **BOX) == pytest.approx(math.sqrt(2))


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 2**32 - 1), st.integers(2, 7))
def test_reach_is_never_below_the_largest_hole_and_ignores_the_row_order(seed, p):
    rng = np.random.default_rng(seed)
    prefs, pts = simplex_grid(2, p), rng.uniform(0, 10, size=(p, 2))
    r = reach(pts, **BOX)
    assert r >= largest_hole(prefs, pts, **BOX)[0] - 1e-12
    assert reach(pts[rng.permutation(p)], **BOX) == pytest.approx(r)


def test_reach_bad_bounds_say_what_to_fix():
    with pytest.raises(ValueError, match="'upper' must exceed 'lower'"):
        reach([[1, 1], [2, 2]], lower=[0, 5], upper=[10, 5])


# --- IGD+ and additive epsilon ------------------------------------------------------------------------

def test_igd_plus_and_epsilon_by_hand():
    """Reference front (0, 1), (0.5, 0.5), (1, 0) in the unit box. The points (0.5, 0.5), (1, 0):
    d+ to (0, 1) is 0.5 (short in objective 2 only, from (0.5, 0.5)), 0 to the others: IGD+ 0.5 / 3;
    epsilon: (0, 1) needs +0.5. The reference itself scores 0 on both."""
    ref = [[0, 10], [5, 5], [10, 0]]
    pts = [[5, 5], [10, 0]]
    assert igd_plus(pts, ref, **BOX) == pytest.approx(0.5 / 3)
    assert epsilon_additive(pts, ref, **BOX) == pytest.approx(0.5)
    assert igd_plus(ref, ref, **BOX) == 0.0 and epsilon_additive(ref, ref, **BOX) == 0.0


def test_igd_plus_and_epsilon_match_loops():
    rng = np.random.default_rng(3)
    for m in (2, 3):
        pts, ref = rng.uniform(0, 10, size=(5, m)), rng.uniform(0, 10, size=(7, m))
        box = dict(lower=[0.0] * m, upper=[10.0] * m)
        assert igd_plus(pts, ref, **box) == pytest.approx(oracle_igd_plus(pts / 10, ref / 10))
        assert epsilon_additive(pts, ref, **box) == pytest.approx(oracle_epsilon(pts / 10, ref / 10))


# --- inputs and errors --------------------------------------------------------------------------------

def test_inputs_are_not_changed():
    prefs = simplex_grid(2, 4)
    pts = np.array([[0.0, 9.0], [3.0, 7.0], [6.0, 4.0], [9.0, 0.0]])
    lo, hi, origin = np.zeros(2), np.full(2, 10.0), np.array([1.0, 1.0])
    copies = [a.copy() for a in (prefs, pts, lo, hi, origin)]
    calibration(prefs, pts, lower=lo, upper=hi, origin=origin)
    order_tau(prefs, pts)
    largest_hole(prefs, pts, lower=lo, upper=hi)
    igd_plus(pts, pts, lower=lo, upper=hi)
    epsilon_additive(pts, pts, lower=lo, upper=hi)
    for a, b in zip((prefs, pts, lo, hi, origin), copies):
        np.testing.assert_array_equal(a, b)


def test_bad_inputs_say_what_to_fix():
    with pytest.raises(ValueError, match="2 preferences but 3 achieved points"):
        calibration([[1, 0], [0, 1]], [[1, 1], [2, 2], [3, 3]], **BOX)
    with pytest.raises(ValueError, match="'upper' must exceed 'lower'"):
        calibration([[1, 0]], [[1, 1]], lower=[0, 0], upper=[10, 0])
    with pytest.raises(ValueError, match="'origin' must be 2 finite numbers"):
        calibration([[1, 0]], [[1, 1]], **BOX, origin=[1, 2, 3])
    with pytest.raises(ValueError, match="sums to"):
        order_tau([[0.5, 0.6]], [[1, 1]])
    with pytest.raises(ValueError, match="neighbours need at least 2 preferences"):
        largest_hole([[1, 0]], [[1, 1]], **BOX)
    with pytest.raises(ValueError, match="x and y must be 1-D of one length"):
        kendall_tau([1, 2], [1, 2, 3])
    with pytest.raises(ValueError, match="points and reference need rows"):
        igd_plus([[1, 1]], [[1, 1, 1]], **BOX)
