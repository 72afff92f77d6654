"""The ``clv`` segmenter: BG/NBD + Gamma-Gamma fitted to the CRM's won deals.

Every run fits both models afresh on the purchases up to ``as_of`` (time in
weeks, same-day purchases merged; see :mod:`crmcore_clv.transactions`), then
scores every customer who bought:

* ``p_alive``: probability the customer is still active (BG/NBD),
* ``expected_purchases``: purchases expected in the next ``horizon_weeks``,
* ``expected_spend``: expected value per purchase (Gamma-Gamma),
* ``clv``: discounted expected value over the horizon (:mod:`crmcore_clv.value`).

Segments, in this order of precedence:

1. ``"No purchases"``: no won deal up to ``as_of`` (not scored);
2. ``"Likely churned"``: ``p_alive < churn_below`` (default 0.3);
3. ``"Top value"``: CLV among the top ``top_share`` (default 20%) of buyers:
   fewer than ``top_share * buyers`` buyers have a strictly higher CLV
   (equal values share the segment);
4. ``"Standard"``: everybody else.

The fitted models are recorded with the run (:attr:`crmcore.SegmentRun.details`,
shown by ``crm segment runs --json`` and ``crm segment explain``), so a past
run's model can be audited: see :func:`model_details`.
"""

from __future__ import annotations

from decimal import Decimal
from typing import TYPE_CHECKING, Any, Literal

import attrs

import crmcore
from crmcore.store import MONEY_SCALE

from .fitting import FitError

if TYPE_CHECKING:
    import numpy as np

    from . import bgnbd, gamma_gamma
    from .transactions import History

# numpy, scipy and the model modules that use them are imported in the
# functions that fit and score: registering the segmenter at start-up must not
# load them (see "Keep start-up fast" in docs/plugin-guide.md).

NO_PURCHASES = "No purchases"
LIKELY_CHURNED = "Likely churned"
TOP_VALUE = "Top value"
STANDARD = "Standard"
MIN_BUYERS = 5          # BG/NBD has four parameters
MIN_REPEAT_BUYERS = 4   # Gamma-Gamma has three
BATCH = 5_000
CENT = Decimal("0.01")


def _in_open_unit(instance: Any, attribute: attrs.Attribute, value: float) -> None:
    if not 0 < value < 1:
        raise ValueError(f"must be between 0 and 1 (exclusive), got {value}", attribute)


def _positive(instance: Any, attribute: attrs.Attribute, value: float) -> None:
    if not value > 0:
        raise ValueError(f"must be positive, got {value}", attribute)


def _not_negative(instance: Any, attribute: attrs.Attribute, value: float) -> None:
    if not value >= 0:
        raise ValueError(f"must be 0 or more, got {value}", attribute)


@attrs.frozen
class CLVOptions:
    """Options of the ``clv`` segmenter (``[segments.clv]`` in crm.toml).

    :ivar horizon_weeks: weeks ahead for expected purchases and CLV.
    :ivar discount_rate: the discount rate per ``discount_period``
        (0.10 = 10%); converted to a weekly rate by compounding.
    :ivar discount_period: ``"year"`` (annual rate) or ``"month"`` (monthly rate).
    :ivar top_share: share of buyers, by CLV, in ``"Top value"``.
    :ivar churn_below: P(alive) under which a buyer is ``"Likely churned"``.
    :ivar currency: only deals in this currency count (None: all, summed as they are).
    """

    horizon_weeks: int = attrs.field(default=52, validator=_positive)
    discount_rate: float = attrs.field(default=0.10, validator=_not_negative)
    discount_period: Literal["year", "month"] = "year"
    top_share: float = attrs.field(default=0.2, validator=_in_open_unit)
    churn_below: float = attrs.field(default=0.3, validator=_in_open_unit)
    currency: str | None = crmcore.currency_option()


@attrs.frozen
class Fitted:
    """Both models fitted on one history, and each buyer's predictions."""

    history: History
    bgnbd: bgnbd.BGNBDParams
    spend: gamma_gamma.GammaGammaParams
    p_alive: np.ndarray
    expected_purchases: np.ndarray
    expected_spend: np.ndarray
    clv: np.ndarray
    spenders: int  # customers Gamma-Gamma was fitted on


def fit_history(history: History, options: CLVOptions) -> Fitted:
    """Fit BG/NBD (all buyers) and Gamma-Gamma (buyers with x > 0 and a positive
    mean repeat value, per FHL "RFM and CLV"), then predict for every buyer."""
    import numpy as np

    from . import bgnbd, gamma_gamma
    from .value import discounted_purchases, weekly_rate

    if len(history) < MIN_BUYERS:
        raise FitError(f"clv needs at least {MIN_BUYERS} customers with a purchase to fit BG/NBD; "
                       f"found {len(history)}")
    x, t_x, T = history.x, history.t_x_days / 7, history.T_days / 7
    params = bgnbd.fit(x, t_x, T)
    mean_repeat = np.zeros(len(history))
    repeat = x > 0
    mean_repeat[repeat] = np.array(history.repeat_total, dtype=float)[repeat] / MONEY_SCALE / x[repeat]
    spenders = repeat & (mean_repeat > 0)
    if spenders.sum() < MIN_REPEAT_BUYERS:
        raise FitError(f"clv needs at least {MIN_REPEAT_BUYERS} customers with a repeat purchase to fit "
                       f"Gamma-Gamma; found {int(spenders.sum())}")
    spend = gamma_gamma.fit(x[spenders], mean_repeat[spenders])
    p_alive = bgnbd.probability_alive(params, x, t_x, T)
    purchases = bgnbd.expected_purchases(params, options.horizon_weeks, x, t_x, T)
    expected_spend = gamma_gamma.expected_spend(spend, x, mean_repeat)
    rate = weekly_rate(options.discount_rate, options.discount_period)
    clv = expected_spend * discounted_purchases(params, options.horizon_weeks, rate, x, t_x, T)
    return Fitted(history, params, spend, p_alive, purchases, expected_spend, clv, int(spenders.sum()))


def model_details(fitted: Fitted) -> dict[str, Any]:
    """What a run records about its models: each model's fitted parameters, the
    maximised log-likelihood and the number of customers it was fitted on
    (BG/NBD: every buyer; Gamma-Gamma: buyers with a repeat purchase of
    positive value); times are in weeks.

    ``{"time_unit": "weeks", "bgnbd": {"r", "alpha", "a", "b", "log_likelihood",
    "customers"}, "gamma_gamma": {"p", "q", "gamma", "log_likelihood", "customers"}}``
    """
    b, s = fitted.bgnbd, fitted.spend
    return {
        "time_unit": "weeks",
        "bgnbd": {"r": b.r, "alpha": b.alpha, "a": b.a, "b": b.b, "log_likelihood": b.log_likelihood,
                  "customers": len(fitted.history)},
        "gamma_gamma": {"p": s.p, "q": s.q, "gamma": s.gamma, "log_likelihood": s.log_likelihood,
                        "customers": fitted.spenders},
    }


def _model_text(details: dict[str, Any]) -> str | None:
    """One line naming the run's fitted models, for ``crm segment explain``; None for a run without them."""
    b, s = details.get("bgnbd"), details.get("gamma_gamma")
    if not b or not s:
        return None
    return (f"BG/NBD r={b['r']:.4g} alpha={b['alpha']:.4g} a={b['a']:.4g} b={b['b']:.4g} "
            f"(log-likelihood {b['log_likelihood']:.1f}, {b['customers']} customers); "
            f"Gamma-Gamma p={s['p']:.4g} q={s['q']:.4g} gamma={s['gamma']:.4g} "
            f"(log-likelihood {s['log_likelihood']:.1f}, {s['customers']} customers)")


def segments_for(fitted: Fitted, options: CLVOptions) -> np.ndarray:
    """The segment of each buyer (see the module docstring for the rules)."""
    import numpy as np

    clv = fitted.clv
    # Buyers with a strictly higher CLV: position of the value in the ascending order.
    higher = len(clv) - np.searchsorted(np.sort(clv), clv, side="right")
    segment = np.where(higher < options.top_share * len(clv), TOP_VALUE, STANDARD).astype(object)
    segment[fitted.p_alive < options.churn_below] = LIKELY_CHURNED
    return segment


def _money(value: float) -> str:
    return str(Decimal(repr(float(value))).quantize(CENT))


class CLVSegmenter(crmcore.Segmenter):
    """Predicted value (BG/NBD + Gamma-Gamma) and likely churn."""

    name = "clv"
    description = "Predicted CLV and P(alive) (BG/NBD + Gamma-Gamma on won deals): top value, likely churned"
    options_type = CLVOptions

    def fit(self, ctx: crmcore.SegmentContext, options: CLVOptions) -> Fitted:
        """Load the purchase history as of ``ctx.as_of`` and fit both models."""
        from .transactions import load_history

        return fit_history(load_history(ctx.conn, ctx.config, ctx.as_of, options.currency), options)

    def assign(self, ctx: crmcore.SegmentContext, options: CLVOptions) -> Any:
        from .transactions import load_history

        history = load_history(ctx.conn, ctx.config, ctx.as_of, options.currency, without_purchases=False)
        if len(history):  # nobody bought: nothing to fit, everybody is "No purchases"
            fitted = fit_history(history, options)
            ctx.record_run_details(model_details(fitted))
            yield from _scored(fitted, options)
        # Everybody else has no purchase: assigned in SQL, not listed through Python.
        yield crmcore.EveryoneElse(NO_PURCHASES)

    def explain(self, ctx: crmcore.SegmentContext, options: CLVOptions, membership: Any) -> dict[str, Any]:
        """The customer's x, t_x, T (weeks), P(alive), expected purchases and CLV
        from the run, the rule that placed them, and (``model``) the models the
        run fitted, from the run's record."""
        details = dict(membership.get("details") or {})
        segment = membership.get("segment")
        model = _model_text(ctx.run_details)
        fitted = {} if model is None else {"model": model}
        if segment is None:
            return {"segment": None, "why": "not a member of this run (the customer was added after it)", **fitted}
        if segment == NO_PURCHASES or not details:
            return {"segment": segment, "why": "no won deal up to as_of, so not scored", **fitted}
        why = {LIKELY_CHURNED: f"P(alive) {details['p_alive']:.3f} < churn_below {options.churn_below}",
               TOP_VALUE: f"CLV {details['clv']} is in the top {options.top_share:.0%} of buyers",
               STANDARD: f"P(alive) >= {options.churn_below} and CLV below the top {options.top_share:.0%}"}
        return {"segment": segment, **details, "why": why.get(segment, ""), **fitted}


def _scored(fitted: Fitted, options: CLVOptions) -> Any:
    """Batches (columns) of assignments of the customers who bought."""
    h = fitted.history
    segments = segments_for(fitted, options)
    horizon = options.horizon_weeks
    for start in range(0, len(h), BATCH):
        rows = slice(start, start + BATCH)
        # Plain Python numbers per column once (tolist), not a numpy scalar per field.
        details = [{
            "x": int(x), "t_x": t_x, "T": T, "p_alive": p_alive, "expected_purchases": purchases,
            "expected_spend": _money(spend), "clv": _money(clv), "horizon_weeks": horizon,
        } for x, t_x, T, p_alive, purchases, spend, clv in zip(
            h.x[rows].tolist(), (h.t_x_days[rows] / 7).tolist(), (h.T_days[rows] / 7).tolist(),
            fitted.p_alive[rows].tolist(), fitted.expected_purchases[rows].tolist(),
            fitted.expected_spend[rows].tolist(), fitted.clv[rows].tolist())]
        yield crmcore.Assignments(h.customer_id[rows], segments[rows], fitted.clv[rows], details)
