"""The BG/NBD purchase model (Fader, Hardie & Lee 2005, "Counting Your
Customers the Easy Way: An Alternative to the Pareto/NBD Model", Marketing
Science 24(2), 275-284), fitted by maximum likelihood.

Per customer: ``x`` repeat purchases, the last at ``t_x``, observed for ``T``
since the first purchase (all times in the same unit, weeks here).  While
alive a customer buys at rate lambda ~ Gamma(r, alpha); after each purchase
they drop out with probability p ~ Beta(a, b).
"""

from __future__ import annotations

import attrs
import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy.special import betaln, gammaln, hyp2f1

from .fitting import fit_log_params


@attrs.frozen
class BGNBDParams:
    """Fitted BG/NBD parameters and the maximised log-likelihood."""

    r: float
    alpha: float
    a: float
    b: float
    log_likelihood: float


def log_likelihood(r: float, alpha: float, a: float, b: float,
                   x: ArrayLike, t_x: ArrayLike, T: ArrayLike) -> NDArray[np.float64]:
    """Each customer's log-likelihood, FHL (2005) equation (6):

    L = B(a, b+x)/B(a, b) * G(r+x) a^r / (G(r) (a+T)^(r+x))
        + delta(x>0) * B(a+1, b+x-1)/B(a, b) * G(r+x) alpha^r / (G(r) (alpha+t_x)^(r+x))

    written as in the paper's appendix, ``ln L = A1 + A2 + ln(exp(A3) +
    delta(x>0) exp(A4))``, summed with logaddexp so large ``x`` cannot overflow.
    """
    x, t_x, T = (np.asarray(v, dtype=float) for v in (x, t_x, T))
    a1 = gammaln(r + x) - gammaln(r) + r * np.log(alpha)
    a2 = betaln(a, b + x) - betaln(a, b)
    a3 = -(r + x) * np.log(alpha + T)
    repeat = x > 0
    # B(a+1, b+x-1)/B(a, b+x) = a/(b+x-1); undefined (and not needed) for x = 0.
    a4 = np.full_like(x, -np.inf)
    a4[repeat] = (np.log(a) - np.log(b + x[repeat] - 1)
                  - (r + x[repeat]) * np.log(alpha + t_x[repeat]))
    return a1 + a2 + np.logaddexp(a3, a4)


def fit(x: ArrayLike, t_x: ArrayLike, T: ArrayLike) -> BGNBDParams:
    """Maximum-likelihood estimates of (r, alpha, a, b) for the customers given."""
    x, t_x, T = (np.asarray(v, dtype=float) for v in (x, t_x, T))

    def negative(params: NDArray[np.float64]) -> float:
        return -float(log_likelihood(*params, x, t_x, T).sum())

    values, maximum = fit_log_params(negative, 4, "BG/NBD")
    return BGNBDParams(*values, log_likelihood=maximum)


def probability_alive(p: BGNBDParams, x: ArrayLike, t_x: ArrayLike, T: ArrayLike) -> NDArray[np.float64]:
    """P(alive | x, t_x, T), FHL (2005) equation (12) (and their note
    "Computing P(alive) Using the BG/NBD Model"): 1 for a customer with no
    repeat purchase (the model lets drop-out happen only after a purchase),
    else ``1 / (1 + a/(b+x-1) * ((alpha+T)/(alpha+t_x))^(r+x))``."""
    x, t_x, T = (np.asarray(v, dtype=float) for v in (x, t_x, T))
    result = np.ones_like(x)
    repeat = x > 0
    xr = x[repeat]
    log_odds = (np.log(p.a) - np.log(p.b + xr - 1)
                + (p.r + xr) * (np.log(p.alpha + T[repeat]) - np.log(p.alpha + t_x[repeat])))
    result[repeat] = 1.0 / (1.0 + np.exp(log_odds))
    return result


def expected_purchases(p: BGNBDParams, t: float | ArrayLike, x: ArrayLike, t_x: ArrayLike,
                       T: ArrayLike) -> NDArray[np.float64]:
    """Expected purchases in the next ``t`` given (x, t_x, T), FHL (2005) equation (10):

    E[Y(t) | x, t_x, T] = (a+b+x-1)/(a-1)
        * [1 - ((alpha+T)/(alpha+T+t))^(r+x) 2F1(r+x, b+x; a+b+x-1; t/(alpha+T+t))]
        / [1 + delta(x>0) a/(b+x-1) ((alpha+T)/(alpha+t_x))^(r+x)]
    """
    x, t_x, T = (np.asarray(v, dtype=float) for v in (x, t_x, T))
    t = np.asarray(t, dtype=float)
    r, alpha, a, b = p.r, p.alpha, p.a, p.b
    z = t / (alpha + T + t)
    numerator = 1.0 - np.exp((r + x) * (np.log(alpha + T) - np.log(alpha + T + t))) * hyp2f1(
        r + x, b + x, a + b + x - 1, z)
    # The denominator is 1/P(alive).
    return (a + b + x - 1) / (a - 1) * numerator * probability_alive(p, x, t_x, T)


__all__ = ["BGNBDParams", "expected_purchases", "fit", "log_likelihood", "probability_alive"]
