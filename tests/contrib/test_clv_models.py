"""The BG/NBD and Gamma-Gamma functions against hand-worked values, the
published example and data simulated from the models themselves."""

from __future__ import annotations

import math

import numpy as np
import pytest
from contribtools import simulate_bgnbd
from crmcore_clv import bgnbd, gamma_gamma
from crmcore_clv.fitting import FitError
from crmcore_clv.value import discounted_purchases, weekly_rate

from crmcore import CRMError

PUBLISHED = bgnbd.BGNBDParams(r=0.243, alpha=4.414, a=0.793, b=2.426, log_likelihood=float("nan"))


def beta(x: float, y: float) -> float:
    return math.exp(math.lgamma(x) + math.lgamma(y) - math.lgamma(x + y))


def bgnbd_likelihood_by_hand(r, alpha, a, b, x, t_x, T) -> float:
    """FHL (2005) equation (6), term by term, in plain floats."""
    common = math.gamma(r + x) * alpha ** r / math.gamma(r)
    first = beta(a, b + x) / beta(a, b) * common / (alpha + T) ** (r + x)
    second = beta(a + 1, b + x - 1) / beta(a, b) * common / (alpha + t_x) ** (r + x) if x > 0 else 0.0
    return first + second


@pytest.mark.parametrize("x, t_x, T", [(0, 0.0, 38.86), (2, 30.43, 38.86), (1, 1.0, 2.0), (14, 35.0, 36.5)])
def test_bgnbd_likelihood_by_hand(x, t_x, T):
    expected = math.log(bgnbd_likelihood_by_hand(0.243, 4.414, 0.793, 2.426, x, t_x, T))
    assert bgnbd.log_likelihood(0.243, 4.414, 0.793, 2.426, [x], [t_x], [T])[0] == pytest.approx(expected, rel=1e-12)


def test_bgnbd_no_overflow_for_heavy_buyers():
    assert np.isfinite(bgnbd.log_likelihood(0.243, 4.414, 0.793, 2.426, [400], [51.0], [52.0])).all()


def test_published_conditional_expectation():
    """FHL (2005), section 4: with the CDNOW estimates, a customer with x = 2,
    t_x = 30.43, T = 38.86 is expected to make 1.226 purchases in the next 39 weeks."""
    assert bgnbd.expected_purchases(PUBLISHED, 39, [2], [30.43], [38.86])[0] == pytest.approx(1.226, abs=5e-4)


def test_probability_alive_by_hand():
    r, alpha, a, b = 0.243, 4.414, 0.793, 2.426
    x, t_x, T = 2, 30.43, 38.86
    by_hand = 1 / (1 + a / (b + x - 1) * ((alpha + T) / (alpha + t_x)) ** (r + x))
    got = bgnbd.probability_alive(PUBLISHED, [x, 0], [t_x, 0.0], [T, 10.0])
    assert got[0] == pytest.approx(by_hand, rel=1e-12)
    assert got[1] == 1.0  # no repeat purchase: the model has not let them drop out


def test_expected_purchases_of_a_new_customer_match_the_unconditional_mean():
    """x = t_x = T = 0 reduces equation (10) to the unconditional E[X(t)],
    equation (9): (a+b-1)/(a-1) [1 - (alpha/(alpha+t))^r 2F1(r, b; a+b-1; t/(alpha+t))],
    checked here against a series evaluation of 2F1 in plain Python."""
    r, alpha, a, b, t = 0.243, 4.414, 0.793, 2.426, 52.0
    z = t / (alpha + t)
    term, series = 1.0, 0.0
    for j in range(5000):  # Gauss' series, z < 1
        series += term
        term *= (r + j) * (b + j) / ((a + b - 1 + j) * (j + 1)) * z
    expected = (a + b - 1) / (a - 1) * (1 - (alpha / (alpha + t)) ** r * series)
    assert bgnbd.expected_purchases(PUBLISHED, t, [0], [0.0], [0.0])[0] == pytest.approx(expected, rel=1e-9)


def test_bgnbd_recovers_simulated_parameters():
    rng = np.random.default_rng(20050101)
    truth = {"r": 0.5, "alpha": 5.0, "a": 0.8, "b": 2.5}
    histories = simulate_bgnbd(rng, 6000, **truth, weeks=52)
    T = rng.uniform(20, 52, len(histories))  # staggered first purchases
    x, t_x = [], []
    for history, horizon in zip(histories, T):
        seen = [t for t, _ in history if t <= horizon]
        x.append(len(seen) - 1)
        t_x.append(seen[-1])
    fitted = bgnbd.fit(x, t_x, T)
    for name, value in truth.items():
        assert getattr(fitted, name) == pytest.approx(value, rel=0.1), name  # observed: within 3%


def gg_likelihood_by_hand(p, q, v, x, m) -> float:
    """Hardie's note "The Gamma-Gamma Model of Monetary Value", equation (4), in plain floats."""
    return (math.gamma(p * x + q) / (math.gamma(p * x) * math.gamma(q)) * v ** q * m ** (p * x - 1)
            * x ** (p * x) / (v + m * x) ** (p * x + q))


@pytest.mark.parametrize("x, m", [(1, 29.73), (3, 18.2), (12, 55.0)])
def test_gamma_gamma_likelihood_by_hand(x, m):
    expected = math.log(gg_likelihood_by_hand(6.25, 3.74, 15.44, x, m))
    assert gamma_gamma.log_likelihood(6.25, 3.74, 15.44, [x], [m])[0] == pytest.approx(expected, rel=1e-12)


def test_gamma_gamma_expected_spend_by_hand():
    params = gamma_gamma.GammaGammaParams(6.25, 3.74, 15.44, float("nan"))
    population = 6.25 * 15.44 / (3.74 - 1)
    x, m = 2, 29.73
    by_hand = (3.74 - 1) / (6.25 * x + 3.74 - 1) * population + 6.25 * x / (6.25 * x + 3.74 - 1) * m
    got = gamma_gamma.expected_spend(params, [x, 0], [m, 0.0])
    assert got[0] == pytest.approx(by_hand, rel=1e-12)
    assert got[1] == pytest.approx(population, rel=1e-12)


def test_gamma_gamma_recovers_simulated_parameters():
    rng = np.random.default_rng(42)
    p, q, v = 6.0, 4.0, 15.0
    nu = rng.gamma(q, 1 / v, 4000)
    x = rng.integers(1, 8, 4000)
    m = np.array([rng.gamma(p, 1 / n, k).mean() for n, k in zip(nu, x)])
    fitted = gamma_gamma.fit(x, m)
    assert (fitted.p, fitted.q, fitted.gamma) == pytest.approx((p, q, v), rel=0.15)


def test_gamma_gamma_needs_data():
    with pytest.raises(FitError, match="no customer has a repeat purchase"):
        gamma_gamma.fit([], [])
    assert issubclass(FitError, CRMError)


def test_weekly_rates():
    assert (1 + weekly_rate(0.10, "year")) ** (365.25 / 7) == pytest.approx(1.10, rel=1e-12)
    assert (1 + weekly_rate(0.01, "month")) ** (365.25 / 12 / 7) == pytest.approx(1.01, rel=1e-12)
    assert weekly_rate(0.0, "year") == 0.0


def test_discounting():
    x, t_x, T = np.array([2.0, 0.0, 7.0]), np.array([30.43, 0.0, 20.0]), np.array([38.86, 12.0, 30.0])
    # Undiscounted, the weekly increments add up to the expected purchases over the horizon.
    assert discounted_purchases(PUBLISHED, 52, 0.0, x, t_x, T) == pytest.approx(
        bgnbd.expected_purchases(PUBLISHED, 52, x, t_x, T), rel=1e-12)
    # Discounted: each week's expected purchases weighed by 1/(1+d)^week, summed by hand.
    d = weekly_rate(0.10, "year")
    for i in range(3):
        weeks = [float(bgnbd.expected_purchases(PUBLISHED, w, x[i:i + 1], t_x[i:i + 1], T[i:i + 1])[0])
                 for w in range(53)]
        by_hand = sum((weeks[w] - weeks[w - 1]) / (1 + d) ** w for w in range(1, 53))
        assert discounted_purchases(PUBLISHED, 52, d, x, t_x, T)[i] == pytest.approx(by_hand, rel=1e-12)
