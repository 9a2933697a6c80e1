"""The cells of trained preferences that mix to a preference (`paretohqd.pareto.simplex`)."""

import numpy as np
import pytest

from paretohqd.pareto.preferences import PRESETS
from paretohqd.pareto.simplex import barycentric, delaunay_cell, lattice_cell


def test_cells_reproduce_the_point():
    """Whatever the cell, its vertices mixed with the barycentric weights give w back."""
    rng = np.random.default_rng(0)
    for m, n in [(3, 4), (4, 3), (5, 3)]:
        for w in rng.dirichlet(np.ones(m), size=50):
            vertices, lam = lattice_cell(w, n)
            assert (lam > 0).all() and lam.sum() == pytest.approx(1)
            np.testing.assert_allclose(lam @ vertices, w, atol=1e-12)
            assert all(np.isclose(v * (n - 1), np.round(v * (n - 1))).all() for v in vertices)  # grid points
    ric3 = np.array(PRESETS["ric-3obj"])
    ric3 = ric3 / ric3.sum(axis=1, keepdims=True)
    inside = 0
    for w in rng.dirichlet(np.ones(3), size=200):
        found = delaunay_cell(ric3, w)
        if found is None:  # outside the presets' hull
            assert barycentric(ric3, w) is None
            continue
        inside += 1
        idx, lam = found
        np.testing.assert_allclose(lam @ ric3[idx], w, atol=1e-9)
    assert inside > 100
