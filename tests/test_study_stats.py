"""Study statistics against published values and independent computations."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.optimize import minimize

from evalkit.study import stats


def test_krippendorff_alpha_matches_published_example():
    # Krippendorff (2011), "Computing Krippendorff's Alpha-Reliability", nominal example: 4 coders, 12 units,
    # missing values allowed; the paper reports alpha = 0.743.
    a = [1, 2, 3, 3, 2, 1, 4, 1, 2, None, None, None]
    b = [1, 2, 3, 3, 2, 2, 4, 1, 2, 5, None, 3]
    c = [None, 3, 3, 3, 2, 3, 4, 2, 2, 5, 1, None]
    d = [1, 2, 3, 3, 2, 4, 4, 1, 2, 5, 1, None]
    units = [[x for x in col if x is not None] for col in zip(a, b, c, d, strict=True)]
    assert stats.krippendorff_alpha_nominal(units) == pytest.approx(0.743, abs=5e-4)


def test_krippendorff_alpha_hand_computed():
    # units (a,a), (a,b), (b,b): coincidences o_aa = 2, o_ab = o_ba = 1, o_bb = 2; n_a = n_b = 3, n = 6.
    # alpha = 1 - (n - 1) * (o_ab + o_ba) / (n_a n_b + n_b n_a) = 1 - 5 * 2 / 18 = 4/9
    assert stats.krippendorff_alpha_nominal([["a", "a"], ["a", "b"], ["b", "b"]]) == pytest.approx(4 / 9)
    # perfect agreement -> 1; a unit with a single rating is not pairable and changes nothing
    assert stats.krippendorff_alpha_nominal([["a", "a"], ["b", "b", "b"], ["a"]]) == pytest.approx(1.0)


def test_holm_hand_computed():
    # sorted: 0.005*4 = 0.02, 0.01*3 = 0.03, 0.03*2 = 0.06, 0.04*1 = 0.04 -> monotone 0.06
    assert stats.holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert stats.holm([0.5, 0.9]) == pytest.approx([1.0, 1.0])


def test_wilson_matches_closed_form():
    wins, n, z = 7, 10, 1.959963984540054
    p = wins / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    assert stats.wilson(wins, n) == pytest.approx((centre - half, centre + half), abs=1e-9)
    assert stats.binomial_p(10, 10) == pytest.approx(2 * 0.5**10)


def test_bradley_terry_mm_equals_direct_maximum_likelihood():
    rng = np.random.default_rng(1)
    wins = rng.integers(0, 15, size=(4, 4)).astype(float)
    np.fill_diagonal(wins, 0)
    prior = 0.1
    w = wins + prior * ((wins + wins.T) > 0)

    def nll(theta):
        # log P(i beats j) = theta_i - log(exp(theta_i) + exp(theta_j))
        return -(w * (theta[:, None] - np.logaddexp(theta[:, None], theta[None, :]))).sum()

    direct = minimize(nll, np.zeros(4), method="BFGS", options={"gtol": 1e-10}).x
    direct -= direct.mean()
    assert stats.bradley_terry(wins, prior=prior) == pytest.approx(direct, abs=1e-5)


def test_arena_rank_rule():
    lower, upper = [10, 5, 0, -3], [20, 12, 6, 1]
    # method 2's upper bound (6) is below method 0's lower bound (10) only -> rank 2; method 3 (1) below 10 and 5
    assert stats.arena_ranks(lower, upper) == [1, 1, 2, 3]
