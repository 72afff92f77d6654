"""The ``forecast`` report: the open pipeline by expected close month, against won revenue.

One row per month (UTC) that has open deals expected to close in it or won
deals closed in it, in month order, then a row ``(no date)`` for open deals
without an expected close date (they are in no month, but not dropped).

* ``won``: revenue of won deals closed in that month, up to ``as_of``.
* ``open_deals`` / ``open_amount``: deals open at ``as_of`` (created by then,
  in a stage with outcome ``open`` then) with that expected close month.
* ``weighted``: sum of ``amount * probability / 100`` of those deals (exact
  in SQL, shown at the currency's minor unit: rounded half-up once).
* ``worst_case``: ``won`` plus the open deals at or above
  ``commit_probability`` (default 75 %): what closes if only the likely ones do.
* ``best_case``: ``won`` plus every open deal: what closes if all of them do.

As of ``as_of``: each deal is taken in the stage it was in then, from the
stage history (:mod:`crmcore_reports.stage_then`), so a forecast for the end
of last quarter still shows the deals that were open then and closed since.
The probability then is the deal's own while it is still in that stage,
otherwise that stage's configured one.  Amounts and expected close dates are
today's (the history does not record past values of those).

Filters: won deals count when closed within ``start``/``end``; open deals
when their expected close month overlaps the range (deals without a date are
always shown); region, owner, pipeline, segment and currency as usual.
"""

from __future__ import annotations

from decimal import Decimal
import attrs
from typing import Any

from sqlalchemy import BigInteger, Select, and_, case, false, func, or_, select, type_coerce

import crmcore
from crmcore.store import money_from_scaled, month_index, month_label, tables

from .scope import ReportFilters, Scope, minor_unit, weighted_money
from .stage_then import deals_then, probability_then

deals = tables.deals
NO_DATE = "(no date)"


@attrs.frozen
class ForecastOptions(ReportFilters):
    """Options of ``forecast``: the common filters plus ``commit_probability`` (percent)."""

    commit_probability: int = attrs.field(default=75, validator=attrs.validators.and_(
        attrs.validators.ge(0), attrs.validators.le(100)))


COLUMNS = ("month", "won", "open_deals", "open_amount", "weighted", "worst_case", "best_case")


class ForecastReport(crmcore.Report):
    """Weighted open pipeline by expected close month, with best and worst case, against won revenue."""

    name = "forecast"
    description = "weighted pipeline by expected close month, best/worst case, against won revenue"
    options_type = ForecastOptions

    def run(self, ctx: crmcore.ReportContext, options: ForecastOptions) -> crmcore.ReportResult:
        scope = Scope(ctx, options, self.name)
        cur = scope.currency
        by_currency = _by_month(scope, options.commit_probability)
        months = by_currency.pop(cur, {})
        if options.start or options.end:
            months = {m: v for m, v in months.items() if m is None or _month_in_range(m, options)}
        minor = minor_unit(cur)
        rows = []
        for month in sorted(months, key=lambda m: (m is None, m)):
            won, count, amount, weighted, committed, _ = months[month]
            rows.append((NO_DATE if month is None else month_label(month), _m(won, minor), count,
                         _m(amount, minor), weighted_money(weighted, cur), _m(won + committed, minor),
                         _m(won + amount, minor)))
        money = {"won", "open_amount", "weighted", "worst_case", "best_case"}
        columns = tuple(crmcore.Column(n, "decimal" if n in money else ("int" if n == "open_deals" else "str"),
                                       n.replace("_", " "), cur if n in money else None) for n in COLUMNS)
        notes = []
        others = {code: sum(v[5] for v in found.values()) for code, found in sorted(by_currency.items())}
        if others:
            listing = ", ".join(f"{n} in {code}" for code, n in others.items())
            notes.append(f"Not included: deals in other currencies ({listing}); run with currency=CODE to see them.")
        if any(m is None for m in months):
            notes.append(f"{NO_DATE}: open deals without an expected close date (in no month, counted in "
                         "best and worst case of that row only).")
        return crmcore.ReportResult(
            title=f"Forecast ({scope.describe()})",
            columns=columns, rows=tuple(rows), notes=tuple(notes),
            charts=(crmcore.Chart("stacked-bar", f"Won and weighted open pipeline by month ({cur})", "month",
                                  ("won", "weighted"), behind="months"),
                    crmcore.Chart("line", f"Worst and best case by month ({cur})", "month",
                                  ("worst_case", "best_case"), behind="months")))

    def customers_behind(self, ctx: crmcore.ReportContext, options: ForecastOptions, chart: str, x: str,
                         series: str | None) -> Select[Any] | None:
        """A month's bar or point: the customers of the deals it sums.  ``won``: won deals closed
        that month; ``weighted``: deals open at as_of expected to close that month (``(no date)``:
        without a date); ``worst_case``: both, the open ones at or above ``commit_probability``
        only; ``best_case``: both."""
        if chart != "months":
            return None
        if series not in ("won", "weighted", "worst_case", "best_case"):
            raise crmcore.ValidationError.single("series", "one of won, weighted, worst_case, best_case", "report")
        scope = Scope(ctx, options, self.name)
        then = deals_then(scope, [*scope.deal_filter(currency=False), deals.c.currency == scope.currency], {
            "customer_id": deals.c.customer_id, "pipeline": deals.c.pipeline, "closed_at": deals.c.closed_at,
            "expected_close": deals.c.expected_close})
        won = and_(scope.outcome(crmcore.StageOutcome.WON, then.c.stage, then.c.pipeline),
                   then.c.closed_at.is_not(None), *scope.in_range(then.c.closed_at))
        open_ = scope.outcome(crmcore.StageOutcome.OPEN, then.c.stage, then.c.pipeline)
        won_then: Any
        if x == NO_DATE:
            won_then, open_then = false(), and_(open_, then.c.expected_close.is_(None))
        else:
            month = _month_of(x)
            won_then = and_(won, month_index(then.c.closed_at) == month)
            open_then = and_(open_, month_index(then.c.expected_close) == month)
        if series == "worst_case":
            open_then = and_(open_then, probability_then(then, scope.pipelines) >= options.commit_probability)
        counted = {"won": won_then, "weighted": open_then}.get(series, or_(won_then, open_then))
        return select(then.c.customer_id).where(counted)


Totals = dict[str, dict[int | None, tuple[int, int, int, int, int, int]]]


def _by_month(scope: Scope, commit: int) -> Totals:
    """currency -> month (None: no date) -> (won, open count, open amount, weighted, committed, deals).

    Amounts are scaled integers.  One pass over the deals with their stage
    at as_of: a won deal counts in its close month, an open one in its
    expected close month; every currency is grouped, so the note about the
    others costs no second scan.
    """
    then = deals_then(scope, scope.deal_filter(currency=False), {
        "scaled": type_coerce(deals.c.amount, BigInteger), "pipeline": deals.c.pipeline,
        "currency": deals.c.currency, "closed_at": deals.c.closed_at, "expected_close": deals.c.expected_close})
    won = and_(scope.outcome(crmcore.StageOutcome.WON, then.c.stage, then.c.pipeline),
               then.c.closed_at.is_not(None), *scope.in_range(then.c.closed_at))
    open_ = scope.outcome(crmcore.StageOutcome.OPEN, then.c.stage, then.c.pipeline)
    probability = probability_then(then, scope.pipelines)
    scaled = then.c.scaled
    month = case((won, month_index(then.c.closed_at)), else_=month_index(then.c.expected_close)).label("month")
    query = (select(then.c.currency, month,
                    func.sum(case((won, scaled), else_=0)), func.sum(case((open_, 1), else_=0)),
                    func.sum(case((open_, scaled), else_=0)), func.sum(case((open_, scaled * probability), else_=0)),
                    func.sum(case((and_(open_, probability >= commit), scaled), else_=0)), func.count())
             .where(or_(won, open_))
             .group_by(then.c.currency, month))
    found: Totals = {}
    for currency, m, *values in scope.ctx.conn.execute(query):
        won_, n_open, open_amount, weighted, committed, n = (int(v or 0) for v in values)  # the six sums above
        found.setdefault(currency, {})[None if m is None else int(m)] = (won_, n_open, open_amount, weighted,
                                                                         committed, n)
    return found


def _month_in_range(month: int, options: ForecastOptions) -> bool:
    year, zero_based = divmod(month, 12)
    first = (year, zero_based + 1)
    if options.end and first > (options.end.year, options.end.month):
        return False
    return not (options.start and first < (options.start.year, options.start.month))


def _month_of(label: str) -> int:
    """The month index of a ``YYYY-MM`` label (a chart's category)."""
    year, month = crmcore.month_of_label(label)
    return year * 12 + month - 1


def _m(scaled: int, minor: Decimal) -> Decimal:
    return money_from_scaled(scaled).quantize(minor)

