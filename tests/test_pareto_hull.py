"""Points below a front's upper-right convex hull: an exact 2-D oracle (segments between pairs, in
rational arithmetic), and properties in any dimension (no weighted sum picks an inside point;
positive affine maps and row order change nothing)."""

from fractions import Fraction
from itertools import combinations_with_replacement

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from paretohqd.pareto.hull import below_hull, hull_inside_share


def oracle_below_2d(points) -> list[bool]:
    """p is inside iff some point c of a segment [a, b] between two points (a = b allowed) beats
    it in both objectives. In 2-D that suffices: from any c in the hull with c > p, walking
    toward (+1, +1) ends on a hull edge, itself such a segment, at a point that still beats p.
    On [a, b], c(l) = l a + (1 - l) b; each c_i(l) - p_i is linear in l, so the set where both are
    positive is an interval whose ends are among 0, 1 and the two roots: testing 0, 1 and the
    midpoints between consecutive candidates decides it exactly."""
    pts = [tuple(Fraction(int(v)) for v in p) for p in points]
    out = []
    for p in pts:
        inside = False
        for a, b in combinations_with_replacement(pts, 2):
            cands = {Fraction(0), Fraction(1)}
            for i in range(2):
                slope = a[i] - b[i]
                if slope != 0:
                    root = (p[i] - b[i]) / slope
                    if 0 < root < 1:
                        cands.add(root)
            cands = sorted(cands)
            tests = cands + [(x + y) / 2 for x, y in zip(cands, cands[1:])]
            if any(all(l * a[i] + (1 - l) * b[i] > p[i] for i in range(2)) for l in tests):
                inside = True
                break
        out.append(inside)
    return out


def test_by_hand():
    # the chord from (0, 4) to (4, 0) passes (2, 2): (1, 1) is beaten by it, (2, 2) only tied
    assert below_hull([[0, 4], [4, 0], [1, 1], [2, 2]]).tolist() == [False, False, True, False]
    # (3, 3) lifts the hull above (2, 2), which it beats outright
    assert below_hull([[0, 4], [4, 0], [1, 1], [2, 2], [3, 3]]).tolist() == [False, False, True, True, False]
    assert below_hull([[1, 2], [2, 1]]).tolist() == [False, False]
    assert hull_inside_share(np.zeros((0, 2))) == 0.0


def test_convex_and_bent_fronts():
    t = np.linspace(0, np.pi / 2, 9)
    bulging = np.c_[np.cos(t), np.sin(t)]  # (9, 2) a quarter circle: every point a weighted sum's best
    assert hull_inside_share(bulging) == 0.0
    x = np.linspace(0, 1, 9)
    bent = np.c_[x, (1 - x) ** 3]  # (9, 2) bends toward the origin: all but the two extremes inside
    assert below_hull(bent).tolist() == [False] + [True] * 7 + [False]
    assert hull_inside_share(np.r_[bent, [[0.1, 0.1]]]) == pytest.approx(7 / 9)  # dominated points left out


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 8), st.integers(0, 8)), min_size=1, max_size=10, unique=True))
def test_matches_the_exact_oracle(points):
    """Integer points make ties (points on a chord) common: the LP's tolerance must not count them."""
    assert below_hull(points).tolist() == oracle_below_2d(points)


@settings(max_examples=25, deadline=None)
@given(st.integers(3, 4), st.integers(3, 14), st.integers(0, 2**32 - 1))
def test_no_weighted_sum_picks_an_inside_point(m, n, seed):
    rng = np.random.default_rng(seed)
    pts = rng.random((n, m)) ** rng.uniform(0.3, 3.0)  # (n, m) fronts bent both ways
    inside = below_hull(pts)
    for w in rng.dirichlet(np.ones(m), size=30):  # (m,) each
        u = pts @ w  # (n,)
        best = np.flatnonzero(u >= u.max() - 1e-12)
        assert not inside[best].all()


@settings(max_examples=20, deadline=None)
@given(st.integers(0, 2**32 - 1))
def test_invariant_to_affine_maps_and_row_order(seed):
    rng = np.random.default_rng(seed)
    pts = rng.random((12, 3))  # (12, 3)
    before = pts.copy()
    inside = below_hull(pts)
    assert np.array_equal(pts, before)  # the input is not touched
    scaled = pts * rng.uniform(0.1, 100.0, 3) + rng.uniform(-50, 50, 3)
    assert np.array_equal(below_hull(scaled), inside)
    perm = rng.permutation(12)
    assert np.array_equal(below_hull(pts[perm]), inside[perm])
