"""Front metrics on hand-computed fronts, checked against moocore's own (minimising) call; spacing
and sparsity against slow loop oracles and their invariances."""

import math

import moocore
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from paretohqd.pareto.metrics import hypervolume, pareto_subset, sparsity, spacing


def oracle_front(points):
    """O(N^2): rows that no row dominates (no worse anywhere, better somewhere; maximisation)."""
    x = np.asarray(points, dtype=float)
    dom = np.all(x[:, None, :] >= x[None, :, :], axis=2) & np.any(x[:, None, :] > x[None, :, :], axis=2)
    return ~dom.any(axis=0)

UNIT = dict(lower=[0.0, 0.0], upper=[1.0, 1.0])


def test_staircase_by_hand():
    """Front (0.2, 1), (0.6, 0.6), (1, 0.2) in the unit square, ref (0, 0). Slice by z1:
    [0, 0.2] x 1 + [0.2, 0.6] x 0.6 + [0.6, 1] x 0.2 = 0.2 + 0.24 + 0.08 = 0.52."""
    front = [[0.2, 1.0], [0.6, 0.6], [1.0, 0.2]]
    assert hypervolume(front, **UNIT) == pytest.approx(0.52)
    # The same front in raw units, z = (r - lower) / (upper - lower): the value is unit-free.
    raw = np.array(front) * [10.0, 2.0] + [100.0, -1.0]
    assert hypervolume(raw, lower=[100.0, -1.0], upper=[110.0, 1.0]) == pytest.approx(0.52)


def test_three_objectives_by_hand():
    """(0.5, 0.5, 0.5): a cube of side 0.5, 0.125. Add (1, 0.5, 0.5) and (0.5, 1, 0.5): boxes
    0.25 each that both contain the cube and overlap exactly in it, 0.25 + 0.25 - 0.125 = 0.375."""
    box = dict(lower=[0.0] * 3, upper=[1.0] * 3)
    assert hypervolume([[0.5, 0.5, 0.5]], **box) == pytest.approx(0.125)
    assert hypervolume([[1, 0.5, 0.5], [0.5, 1, 0.5], [0.5, 0.5, 0.5]], **box) == pytest.approx(0.375)


def test_dominated_duplicate_and_outside_points_add_nothing():
    base = hypervolume([[0.2, 1.0], [1.0, 0.2]], **UNIT)  # 0.2 + 0.8 * 0.2 = 0.36
    assert base == pytest.approx(0.36)
    more = [[0.2, 1.0], [1.0, 0.2], [0.1, 0.1], [1.0, 0.2], [-0.5, 2.0]]  # dominated, dup, below ref
    assert hypervolume(more, **UNIT) == pytest.approx(base)
    assert hypervolume(np.zeros((0, 2)), **UNIT) == 0.0


def test_custom_reference_point():
    """ref (0.5, 0.5) in normalised space: (1, 1) dominates a 0.5 x 0.5 square, 0.25."""
    assert hypervolume([[1.0, 1.0]], **UNIT, ref=[0.5, 0.5]) == pytest.approx(0.25)
    # Raw bounds [0, 4] x [0, 2]: the raw point (4, 2) normalises to (1, 1).
    assert hypervolume([[4.0, 2.0]], lower=[0, 0], upper=[4, 2], ref=[0.5, 0.5]) == pytest.approx(0.25)


@pytest.mark.parametrize("m", [2, 3, 4, 5])
def test_matches_moocore_minimising_the_negated_points(m):
    rng = np.random.default_rng(m)
    pts = rng.random((30, m)) * 5 + 2
    lower, upper = pts.min(axis=0) - 1, pts.max(axis=0) + 0.5
    z = (pts - lower) / (upper - lower)
    want = moocore.hypervolume(-z, ref=np.zeros(m))  # maximising z == minimising -z
    assert hypervolume(pts, lower=lower, upper=upper) == pytest.approx(want, rel=1e-12)
    assert 0 < want < 1


def test_pareto_subset_matches_the_oracle_and_keeps_duplicates():
    rng = np.random.default_rng(0)
    for m in (2, 3, 4):
        pts = rng.integers(0, 4, size=(80, m)).astype(float)
        np.testing.assert_array_equal(pareto_subset(pts), oracle_front(pts))
    assert pareto_subset([[1, 2], [1, 2], [0, 0]]).tolist() == [True, True, False]
    assert pareto_subset(np.zeros((0, 2))).shape == (0,)


def test_errors():
    with pytest.raises(ValueError, match=r"'upper' must exceed 'lower' in every objective; got lower=\[0.0, 1.0\]"):
        hypervolume([[0.5, 0.5]], lower=[0, 1], upper=[1, 1])
    with pytest.raises(ValueError, match=r"'ref' must have length 2, but it has shape \(3,\)"):
        hypervolume([[0.5, 0.5]], **UNIT, ref=[0, 0, 0])
    with pytest.raises(ValueError, match=r"'lower' must have length 2 \(one per objective\)"):
        hypervolume([[0.5, 0.5]], lower=[0], upper=[1, 1])
    with pytest.raises(ValueError, match=r"rows \(0-based\): \[0\]"):
        hypervolume([[np.nan, 0.5]], **UNIT)
    with pytest.raises(ValueError, match="must be a 2-D array"):
        pareto_subset([1.0, 2.0])


def test_inputs_are_not_mutated():
    pts = np.random.default_rng(1).random((20, 3))
    lower, upper, ref = np.zeros(3), np.ones(3), np.full(3, 0.1)
    arrays = (pts, lower, upper, ref)
    before = [a.copy() for a in arrays]
    for a in arrays:
        a.flags.writeable = False
    hypervolume(pts, lower=lower, upper=upper, ref=ref)
    pareto_subset(pts)
    for a, b in zip(arrays, before):
        np.testing.assert_array_equal(a, b)


# Spacing and sparsity ----------------------------------------------------------------------------

def oracle_spacing(points):
    """Schott's spacing by plain loops: L1 distance to the nearest other point, then the sample sd."""
    n = len(points)
    if n < 2:
        return math.nan
    d = [min(sum(abs(a - b) for a, b in zip(points[i], points[j])) for j in range(n) if j != i) for i in range(n)]
    mean = sum(d) / n
    return math.sqrt(sum((mean - x) ** 2 for x in d) / (n - 1))


def oracle_sparsity(points):
    """PGMORL's sparsity by plain loops: sort each objective, sum squared neighbour gaps, / (N - 1)."""
    n = len(points)
    if n < 2:
        return math.nan
    total = 0.0
    for k in range(len(points[0])):
        col = sorted(p[k] for p in points)
        total += sum((col[i + 1] - col[i]) ** 2 for i in range(n - 1))
    return total / (n - 1)


def test_spacing_and_sparsity_by_hand():
    """Front (0, 1), (0.2, 0.8), (1, 0): nearest L1 distances 0.4, 0.4, 1.6 (mean 0.8), spacing
    sqrt((0.16 + 0.16 + 0.64) / 2) = sqrt(0.48). Sorted gaps per objective 0.2 and 0.8:
    sparsity 2 * (0.04 + 0.64) / 2 = 0.68."""
    front = [[0.0, 1.0], [0.2, 0.8], [1.0, 0.0]]
    assert spacing(front) == pytest.approx(math.sqrt(0.48))
    assert sparsity(front) == pytest.approx(0.68)
    # evenly spread: spacing 0, and more points on the same front are denser
    assert spacing([[0, 1], [0.5, 0.5], [1, 0]]) == 0.0
    assert sparsity([[0, 1], [0.25, 0.75], [0.5, 0.5], [0.75, 0.25], [1, 0]]) < sparsity([[0, 1], [0.5, 0.5], [1, 0]])


def test_spacing_and_sparsity_of_fewer_than_two_points_are_undefined():
    for f in (spacing, sparsity):
        assert math.isnan(f([[0.3, 0.7]])) and math.isnan(f(np.zeros((0, 2))))
    # two points: each is the other's nearest neighbour, so spacing is 0 whatever their distance
    assert spacing([[0, 1], [1, 0]]) == 0.0 and sparsity([[0, 1], [1, 0]]) == 2.0
    with pytest.raises(ValueError, match="must be a 2-D array"):
        spacing([1.0, 2.0])
    with pytest.raises(ValueError, match="NaN or inf"):
        sparsity([[np.inf, 1.0], [0.0, 0.0]])


fronts = st.integers(1, 4).flatmap(lambda m: arrays(
    np.float64, st.tuples(st.integers(1, 9), st.just(m)), elements=st.floats(-10, 10, allow_nan=False)))


@settings(max_examples=80, deadline=None)
@given(pts=fronts)
def test_spacing_and_sparsity_match_the_oracles(pts):
    for fast, slow in ((spacing, oracle_spacing), (sparsity, oracle_sparsity)):
        want = slow(pts.tolist())
        got = fast(pts)
        assert (math.isnan(got) and math.isnan(want)) or got == pytest.approx(want, rel=1e-9, abs=1e-9)


@settings(max_examples=60, deadline=None)
@given(pts=fronts, shift=st.floats(-5, 5), scale=st.floats(0.1, 10), seed=st.integers(0, 2**16))
def test_spacing_and_sparsity_invariances(pts, shift, scale, seed):
    if len(pts) < 2:
        return  # undefined: covered above
    sp, sq = spacing(pts), sparsity(pts)
    assert sp >= 0 and sq >= 0
    perm = np.random.default_rng(seed).permutation(len(pts))
    # a set function: the order of the models does not matter
    assert spacing(pts[perm]) == pytest.approx(sp, abs=1e-9) and sparsity(pts[perm]) == pytest.approx(sq, abs=1e-9)
    # distances only: a shift changes nothing; a scale c multiplies spacing by c and sparsity by c^2
    assert spacing(pts + shift) == pytest.approx(sp, rel=1e-6, abs=1e-9)
    assert sparsity(pts + shift) == pytest.approx(sq, rel=1e-6, abs=1e-9)
    assert spacing(pts * scale) == pytest.approx(sp * scale, rel=1e-6, abs=1e-9)
    assert sparsity(pts * scale) == pytest.approx(sq * scale**2, rel=1e-6, abs=1e-9)


@settings(max_examples=40, deadline=None)
@given(n=st.integers(2, 12), m=st.integers(1, 4), step=st.floats(0.01, 3))
def test_evenly_spaced_points_have_spacing_zero(n, m, step):
    """Points k * step * (1, -1, 1, ...) on a line: every nearest neighbour is step * m away (L1)."""
    direction = np.where(np.arange(m) % 2 == 0, 1.0, -1.0)  # (M,)
    pts = np.arange(n)[:, None] * step * direction  # (n, M)
    assert spacing(pts) == pytest.approx(0.0, abs=1e-9)
    assert sparsity(pts) == pytest.approx(m * step**2)
