"""The Gamma-Gamma spend model (Fader, Hardie & Lee 2005, "RFM and CLV: Using
Iso-Value Curves for Customer Base Analysis", Journal of Marketing Research
42(4), 415-430; the model as in Colombo & Jiang 1999 and Hardie's note "The
Gamma-Gamma Model of Monetary Value", 2013).

A customer's transaction values are Gamma(p, nu) around their mean spend,
with nu ~ Gamma(q, gamma) across customers.  Fitted on customers with at least
one repeat purchase, from ``x`` (repeat purchases) and ``m`` (the mean value of
those repeat purchases).
"""

from __future__ import annotations

import attrs
import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy.special import gammaln

from .fitting import FitError, fit_log_params


@attrs.frozen
class GammaGammaParams:
    """Fitted Gamma-Gamma parameters and the maximised log-likelihood."""

    p: float
    q: float
    gamma: float
    log_likelihood: float

    @property
    def population_mean(self) -> float:
        """E(M) = p gamma / (q - 1), the mean spend of a customer we know nothing about."""
        return self.p * self.gamma / (self.q - 1)


def log_likelihood(p: float, q: float, gamma: float, x: ArrayLike, m: ArrayLike) -> NDArray[np.float64]:
    """Each customer's log-likelihood of their mean spend ``m`` over ``x``
    transactions (FHL 2005 "RFM and CLV", equation (3) and footnote; Hardie's
    note, equation (4)):

    f(m | p, q, gamma, x) = G(px+q) / (G(px) G(q)) * gamma^q m^(px-1) x^(px)
                            / (gamma + m x)^(px+q)
    """
    x, m = np.asarray(x, dtype=float), np.asarray(m, dtype=float)
    px = p * x
    return (gammaln(px + q) - gammaln(px) - gammaln(q) + q * np.log(gamma)
            + (px - 1) * np.log(m) + px * np.log(x) - (px + q) * np.log(gamma + m * x))


def fit(x: ArrayLike, m: ArrayLike) -> GammaGammaParams:
    """Maximum-likelihood (p, q, gamma) from customers with x > 0 and m > 0."""
    x, m = np.asarray(x, dtype=float), np.asarray(m, dtype=float)
    if len(x) == 0:
        raise FitError("Gamma-Gamma: no customer has a repeat purchase with a positive value to fit on")

    def negative(params: NDArray[np.float64]) -> float:
        return -float(log_likelihood(*params, x, m).sum())

    (p, q, gamma), maximum = fit_log_params(negative, 3, "Gamma-Gamma")
    return GammaGammaParams(p, q, gamma, maximum)


def expected_spend(params: GammaGammaParams, x: ArrayLike, m: ArrayLike) -> NDArray[np.float64]:
    """E(M | p, q, gamma, m, x), FHL (2005) "RFM and CLV" equation (5):

    (q - 1)/(px + q - 1) * p gamma/(q - 1) + px/(px + q - 1) * m

    a weighted mean of the population mean and the customer's own mean; for
    x = 0 it is the population mean.  Needs q > 1 (else the mean is infinite).
    """
    x, m = np.asarray(x, dtype=float), np.asarray(m, dtype=float)
    if params.q <= 1:
        raise FitError(f"Gamma-Gamma: q = {params.q:.3g} <= 1, so expected spend is infinite for these data")
    px = params.p * x
    weight = px / (px + params.q - 1)
    own = np.where(x > 0, m, 0.0)
    return (1 - weight) * params.population_mean + weight * own
