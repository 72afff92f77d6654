"""Expected customer lifetime value over a horizon, discounted.

CLV = E(M) * sum_{i=1..H} (E[Y(i)] - E[Y(i-1)]) / (1 + d)^i

with E[Y(i)] the BG/NBD expected purchases in the next ``i`` weeks (FHL 2005
equation (10)), E(M) the Gamma-Gamma expected spend per purchase ("RFM and
CLV" equation (5)) and ``d`` the weekly discount rate: the same
discrete-period sum as the usual implementations, in weekly steps.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from . import bgnbd

DAYS_PER_YEAR = 365.25
WEEKS_PER = {"year": DAYS_PER_YEAR / 7, "month": DAYS_PER_YEAR / 12 / 7}
CHUNK = 20_000  # customers per step: bounds the (customers x horizon) matrix


def weekly_rate(rate: float, period: str) -> float:
    """The weekly rate compounding to ``rate`` per ``period`` ("year" or "month").

    An annual 10% is (1.10)^(7/365.25) - 1 = 0.18% a week; a monthly 1% is
    (1.01)^(12*7/365.25) - 1 = 0.23% a week.
    """
    return (1 + rate) ** (1 / WEEKS_PER[period]) - 1


def discounted_purchases(params: bgnbd.BGNBDParams, horizon_weeks: int, rate_per_week: float,
                         x: NDArray[np.float64], t_x: NDArray[np.float64],
                         T: NDArray[np.float64]) -> NDArray[np.float64]:
    """sum_{i=1..H} (E[Y(i)] - E[Y(i-1)]) / (1 + d)^i per customer."""
    steps = np.arange(horizon_weeks + 1, dtype=float)
    discount = (1 + rate_per_week) ** -steps[1:]
    out = np.empty(len(x))
    for start in range(0, len(x), CHUNK):
        part = slice(start, start + CHUNK)
        cumulative = bgnbd.expected_purchases(params, steps[None, :], x[part, None], t_x[part, None],
                                              T[part, None])
        out[part] = (np.diff(cumulative, axis=1) * discount).sum(axis=1)
    return out
