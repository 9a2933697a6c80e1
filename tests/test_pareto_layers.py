"""Non-dominated layers against a slow, obvious O(N^2) oracle, on data full of ties and duplicates."""

import numpy as np
import pytest

from paretohqd.pareto import layers as layers_module
from paretohqd.pareto.layers import nondominated_layers, pareto_pool, pool_layers


def oracle_layers(points: np.ndarray) -> np.ndarray:
    """Textbook non-dominated sorting: repeatedly strip the points nothing remaining dominates."""
    x = np.asarray(points, dtype=float)
    # dom[i, j]: i dominates j (maximisation): no worse anywhere, strictly better somewhere.
    dom = np.all(x[:, None, :] >= x[None, :, :], axis=2) & np.any(x[:, None, :] > x[None, :, :], axis=2)
    layer = np.full(len(x), -1)
    remaining = np.ones(len(x), dtype=bool)
    current = 0
    while remaining.any():
        front = remaining & ~dom[remaining].any(axis=0)
        layer[front] = current
        remaining &= ~front
        current += 1
    return layer


def tied_data(rng, n, m, levels=4):
    """Integer scores in a few levels (many ties), plus exact duplicate rows, shuffled."""
    x = rng.integers(0, levels, size=(n, m)).astype(float)
    x = np.vstack([x, x[rng.choice(n, n // 5)]])
    return x[rng.permutation(len(x))]


@pytest.mark.parametrize("m", [2, 3, 4, 5, 8])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_layers_match_oracle(m, seed):
    rng = np.random.default_rng(seed)
    for x in (tied_data(rng, 150, m), rng.normal(size=(120, m))):
        expected = oracle_layers(x)
        np.testing.assert_array_equal(nondominated_layers(x), expected)
        for n_layers in (1, 2, 3):
            cut = np.where(expected < n_layers, expected, -1)
            np.testing.assert_array_equal(pool_layers(x, layers=n_layers), cut)


@pytest.mark.parametrize("m", [2, 3, 4])
def test_pool_with_the_pivot_filter(m, monkeypatch):
    """Filter on at small N and N above the sample, so the prefilter and "auto" retries really run."""
    monkeypatch.setattr(layers_module, "_FILTER_MIN_ROWS", 0)
    monkeypatch.setattr(layers_module, "_SAMPLE_ROWS", 1000)
    monkeypatch.setattr(layers_module, "_MIN_COVER", 0.0)
    kept, real = [], layers_module._candidates

    def spy(neg, *args):
        rows = real(neg, *args)
        kept.append(len(rows) / len(neg))
        return rows

    monkeypatch.setattr(layers_module, "_candidates", spy)
    rng = np.random.default_rng(m)
    x = np.vstack([rng.integers(0, 60, size=(2000, m)), rng.random((1000, m)) * 60])
    x = np.vstack([x, x[:300]])  # duplicates of early rows
    full = nondominated_layers(x)
    for n_layers in (1, 3, 6):
        np.testing.assert_array_equal(pool_layers(x, layers=n_layers), np.where(full < n_layers, full, -1))
    counts = np.cumsum(np.bincount(full))
    for min_size in (1, 200, 600):
        used = int(np.searchsorted(counts, min_size)) + 1  # fewest layers holding min_size
        np.testing.assert_array_equal(pool_layers(x, layers="auto", min_size=min_size),
                                      np.where(full < used, full, -1))
    assert min(kept) < 0.5, "the prefilter never removed anything, so this test proved nothing"
    # A first guess of 2 layers is too few here, so "auto" must retry with more.
    monkeypatch.setattr(layers_module, "_first_guess", lambda *args: 2)
    passes = len(kept)
    np.testing.assert_array_equal(pool_layers(x, layers="auto", min_size=600), np.where(full < used, full, -1))
    assert len(kept) - passes > 1, "'auto' never needed a second pass"


def test_duplicates_share_a_layer_and_ties_do_not_dominate():
    x = [[1, 1], [1, 1], [2, 0], [2, 0], [0, 0]]
    # (1,1) and (2,0) are mutually non-dominated; duplicates tie; (0,0) is dominated by both.
    np.testing.assert_array_equal(nondominated_layers(x), [0, 0, 0, 0, 1])
    # Weakly better in one objective and equal in the other is still domination.
    np.testing.assert_array_equal(nondominated_layers([[1, 1], [1, 0]]), [0, 1])


def test_auto_takes_the_fewest_layers_reaching_min_size():
    x = [[3, 0], [0, 3], [2, 2], [1, 1], [1, 1], [0, 0]]  # layer sizes 3, 2, 1
    for min_size, used in ((1, 1), (3, 1), (4, 2), (5, 2), (6, 3), (99, 3)):
        mask, n = pareto_pool(x, layers="auto", min_size=min_size)
        assert n == used
        assert mask.sum() == [3, 5, 6][used - 1]


def test_int_layers_beyond_the_data_take_everything():
    mask, used = pareto_pool([[1, 2], [2, 1], [0, 0]], layers=10)
    assert mask.all() and used == 2


def test_empty_input():
    assert nondominated_layers(np.zeros((0, 3))).shape == (0,)
    mask, used = pareto_pool(np.zeros((0, 2)), layers="auto", min_size=5)
    assert mask.shape == (0,) and used == 0


def test_nan_and_inf_rows_are_named():
    x = np.array([[0.0, 1.0], [np.nan, 1.0], [1.0, 0.0], [1.0, np.inf]])
    with pytest.raises(ValueError, match=r"2 row\(s\) with NaN or inf scores; rows \(0-based\): \[1, 3\]"):
        nondominated_layers(x)
    with pytest.raises(ValueError, match=r"rows \(0-based\): \[1, 3\]"):
        pareto_pool(x, layers=1)
    many = np.full((15, 2), np.nan)
    with pytest.raises(ValueError, match=r"\[0, 1, 2, 3, 4, 5, 6, 7, 8, 9\] and 5 more"):
        nondominated_layers(many)


def test_bad_arguments():
    with pytest.raises(ValueError, match=r"must be a 2-D array \(n_points, n_objectives\); got shape \(3,\)"):
        nondominated_layers([1, 2, 3])
    with pytest.raises(ValueError, match="layers must be an int >= 1 or 'auto'; got 0"):
        pareto_pool([[1, 2]], layers=0)
    with pytest.raises(ValueError, match="layers must be an int >= 1 or 'auto'; got 'all'"):
        pareto_pool([[1, 2]], layers="all")
    with pytest.raises(ValueError, match=r"layers='auto' needs min_size >= 1; got min_size=None"):
        pareto_pool([[1, 2]], layers="auto")


def test_inputs_are_not_mutated(monkeypatch):
    monkeypatch.setattr(layers_module, "_FILTER_MIN_ROWS", 0)  # every code path
    monkeypatch.setattr(layers_module, "_SAMPLE_ROWS", 1000)
    x = np.random.default_rng(0).random((3000, 3))
    x.flags.writeable = False  # any in-place write would raise
    before = x.copy()
    nondominated_layers(x)
    pool_layers(x, layers="auto", min_size=300)
    pool_layers(x, layers=2)
    np.testing.assert_array_equal(x, before)
