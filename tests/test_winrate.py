"""`paretohqd.evaluate.winrate`: combining the two orders, and the win/tie/loss rates' bootstrap
intervals against brute-force references."""

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from paretohqd.evaluate.front import percentile_interval
from paretohqd.evaluate.winrate import RATES, combine_orders, win_rates

outcome_lists = st.lists(st.sampled_from([-1, 0, 1]), min_size=1, max_size=30)


def test_orders_combine_by_the_sign_of_their_sum_every_case_by_hand():
    """All nine cases: agreement stands, a flip is a tie, a win (loss) beside a tie stands."""
    first, second = zip(*itertools.product([1, 0, -1], repeat=2))
    want = [1, 1, 0, 1, 0, -1, 0, -1, -1]
    assert combine_orders(first, second).tolist() == want


def test_orders_refuse_bad_input():
    with pytest.raises(ValueError, match="both orders"):
        combine_orders([1, 0], [1])
    with pytest.raises(ValueError, match=r"in \{-1, 0, 1\}"):
        combine_orders([2], [1])
    with pytest.raises(ValueError, match="no outcomes"):
        win_rates([], n_resamples=0, seed=0)
    with pytest.raises(ValueError, match="n_resamples"):
        win_rates([1], n_resamples=-1, seed=0)


def _loop_rates(outcomes, n_resamples, seed):
    """The obvious way: one resample at a time, counting with Python, the same seeded draws."""
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(outcomes), size=(n_resamples, len(outcomes)))
    per = {name: [] for name in RATES}
    for row in idx:
        picked = [outcomes[i] for i in row]
        win, tie, loss = (sum(x == v for x in picked) / len(picked) for v in (1, 0, -1))
        for name, value in zip(RATES, (win, tie, loss, win + tie / 2)):
            per[name].append(value)
    n = len(outcomes)
    point = {"win": outcomes.count(1) / n, "tie": outcomes.count(0) / n, "loss": outcomes.count(-1) / n}
    point["score"] = point["win"] + point["tie"] / 2
    return {name: {"rate": point[name], "ci95": percentile_interval(per[name])} for name in RATES}


@settings(max_examples=40, deadline=None)
@given(outcome_lists, st.integers(0, 2**31), st.integers(1, 300))
def test_rates_and_intervals_match_a_loop_over_resamples(outcomes, seed, n_resamples):
    got = win_rates(np.array(outcomes), n_resamples=n_resamples, seed=seed)
    want = _loop_rates(outcomes, n_resamples, seed)
    for name in RATES:
        assert got[name]["rate"] == pytest.approx(want[name]["rate"], abs=1e-12)
        assert got[name]["ci95"] == pytest.approx(want[name]["ci95"], abs=1e-12)


def test_interval_matches_the_exact_bootstrap_distribution():
    """For n = 5 every one of the 5^5 resamples is equally likely: their exact win-rate quantiles
    are what a large Monte Carlo bootstrap approaches (here exactly: P(win rate <= 0) = 0.01 and
    P(<= 0.2) = 0.087 put the 2.5% quantile at 0.2, P(<= 0.8) = 0.922 the 97.5% one at 1.0, far from
    the Monte Carlo error)."""
    outcomes = [1, 1, 0, -1, 1]
    exact = [sum(outcomes[i] == 1 for i in idx) / 5 for idx in itertools.product(range(5), repeat=5)]
    lo, hi = np.quantile(exact, [0.025, 0.975])
    got = win_rates(outcomes, n_resamples=20_000, seed=1)["win"]["ci95"]
    assert [lo, hi] == [0.2, 1.0] and got == [lo, hi]
    assert np.mean(exact) == pytest.approx(0.6)


@given(outcome_lists)
def test_rates_sum_to_one_score_is_win_plus_half_tie_and_input_is_kept(outcomes):
    x = np.array(outcomes)
    got = win_rates(x, n_resamples=20, seed=0)
    assert got["win"]["rate"] + got["tie"]["rate"] + got["loss"]["rate"] == pytest.approx(1.0)
    assert got["score"]["rate"] == pytest.approx(got["win"]["rate"] + got["tie"]["rate"] / 2)
    for name in RATES:
        lo, hi = got[name]["ci95"]
        assert 0 <= lo <= hi <= 1
    assert x.tolist() == outcomes


def test_no_resamples_no_interval():
    assert all(r["ci95"] is None for r in win_rates([1, -1], n_resamples=0, seed=0).values())
