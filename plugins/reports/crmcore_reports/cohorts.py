"""The ``retention-cohorts`` report: cohorts by month of first purchase, and churn by month.

A purchase is a won deal (configured outcome ``won``) closed by ``as_of``
(and by ``end``); months are UTC calendar months.

Cohort matrix (the main table): one row per month of a customer's first
purchase (cohorts whose first purchase falls within ``start``/``end``):
``customers`` in the cohort and, for each later month ``m1`` ... (``months``
columns, default 12), the share of them who purchased again in that month.
``m0`` is 100 % by definition.  A month after ``as_of`` is empty, not 0 %.

Section "Churn by month": per calendar month, the customers who purchased in
the month before (``previous``), those of them who purchased again in this
month (``retained``), ``churned`` = previous - retained and the churn rate
``churned / previous``, plus ``active`` (purchased this month) and ``new``
(first purchase this month).

All counting happens in one SQL pass with window functions over the
distinct (customer, month) pairs: MIN over a customer's months gives the
cohort, LEAD whether the next purchase came the very next month; the pairs
are then counted per (cohort, month, next-month-too), a grid of at most
months x months x 2 cells from which both tables are sums.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

import attrs
from sqlalchemy import Select, case, func, select

import crmcore
from crmcore.store import month_index, month_label, tables, unindexed, utc_literal

from .scope import ReportFilters, Scope, ratio

deals = tables.deals


@attrs.frozen
class CohortOptions(ReportFilters):
    """Options of ``retention-cohorts``: ``months`` of the matrix (2..60) plus the common filters."""

    months: int = attrs.field(default=12, validator=attrs.validators.and_(
        attrs.validators.ge(2), attrs.validators.le(60)))


class RetentionCohortsReport(crmcore.Report):
    """Customers by month of first purchase, share purchasing in each later month, churn by month."""

    name = "retention-cohorts"
    description = "cohorts by month of first purchase: share still purchasing each later month; churn"
    options_type = CohortOptions

    def run(self, ctx: crmcore.ReportContext, options: CohortOptions) -> crmcore.ReportResult:
        scope = Scope(ctx, options, self.name)
        last = _month_of(scope.end_exclusive - timedelta(microseconds=1))
        first = _month_of(scope.start) if scope.start else None
        grid = _grid(scope)
        by_month = _summed(grid, lambda c, m, kept: (c, m))
        offsets = [f"m{k}" for k in range(options.months)]
        rows = []
        for cohort in sorted({c for c, _, _ in grid}):
            if cohort > last or (first is not None and cohort < first):
                continue
            counts = {m - cohort: n for (c, m), n in by_month.items() if c == cohort}
            size = counts.get(0, 0)
            rows.append((month_label(cohort), size, *(
                ratio(counts.get(k, 0), size) if cohort + k <= last else None for k in range(options.months))))
        columns = (crmcore.Column("cohort", "str", "first purchase"), crmcore.Column("customers", "int"),
                   *(crmcore.Column(o, "percent") for o in offsets))
        return crmcore.ReportResult(
            title=f"Retention by first-purchase cohort ({scope.describe()})", columns=columns, rows=tuple(rows),
            charts=(crmcore.Chart("heatmap", "Share of each cohort purchasing, by months since first", "cohort",
                                  tuple(offsets), behind="cohorts"),),
            sections=(_churn(grid, first, last),))

    def customers_behind(self, ctx: crmcore.ReportContext, options: CohortOptions, chart: str, x: str,
                         series: str | None) -> Select[Any] | None:
        """A cohort's cell ``mK``: the customers whose first purchase was in that month and who
        purchased K months later.  A month of the churn section: ``new``, the customers whose
        first purchase was then; ``retained``, those who purchased then and the month before;
        ``churn_rate``, those who purchased the month before and not then."""
        if chart not in ("cohorts", "churn"):
            return None
        month = _month_of_label(x)
        active = _active(Scope(ctx, options, self.name))

        def purchased(m: int) -> Select[Any]:
            # Never correlated: the same pairs serve as the outer query and as its IN subquery.
            return select(active.c.customer_id).where(active.c.month == m).correlate(None)

        first = (select(active.c.customer_id).group_by(active.c.customer_id)
                 .having(func.min(active.c.month) == month).correlate(None))
        if chart == "cohorts":
            offset = (series or "").removeprefix("m")
            if not offset.isdigit() or int(offset) >= options.months:
                raise crmcore.ValidationError.single("series", f"one of m0 to m{options.months - 1}", "report")
            return purchased(month + int(offset)).where(active.c.customer_id.in_(first))
        if series == "new":
            return first
        if series == "retained":
            return purchased(month).where(active.c.customer_id.in_(purchased(month - 1)))
        if series == "churn_rate":
            return purchased(month - 1).where(active.c.customer_id.not_in(purchased(month)))
        raise crmcore.ValidationError.single("series", "one of new, retained, churn_rate", "report")


Grid = dict[tuple[int, int, int], int]


def _month_of(moment: datetime) -> int:
    return moment.year * 12 + moment.month - 1


def _summed(grid: Grid, key: Callable[[int, int, int], Any]) -> dict[Any, int]:
    """The grid's counts added up by ``key(cohort, month, kept)`` (a few hundred cells at most)."""
    found: dict[Any, int] = defaultdict(int)
    for (c, m, kept), n in grid.items():
        found[key(c, m, kept)] += n
    return found


def _month_of_label(label: str) -> int:
    """The month index of a ``YYYY-MM`` label (a chart's category)."""
    year, month = crmcore.month_of_label(label)
    return year * 12 + month - 1


def _active(scope: Scope) -> Any:
    """The distinct (customer, month) pairs of purchases up to the end of the range, a subquery."""
    month = month_index(deals.c.closed_at).label("month")
    currency_given = scope.options.currency is not None
    customer = unindexed(deals.c.customer_id)  # a scan and a sort, not an index walk over most rows
    # DISTINCT, not GROUP BY: SQLite keeps the distinct pairs in a temporary B-tree, which stays
    # as small as the pairs (about a tenth of the deals), where GROUP BY sorts every won deal first.
    active = (select(customer.label("customer_id"), month).distinct()
              .where(*scope.deal_filter(currency=currency_given), scope.outcome(crmcore.StageOutcome.WON),
                     deals.c.closed_at.is_not(None), deals.c.closed_at < utc_literal(scope.end_exclusive))
              ).subquery("active_months")
    return active


def _grid(scope: Scope) -> Grid:
    """(cohort, month, purchased the next month too) -> customers, in one pass over the won deals."""
    active = _active(scope)
    cohort = func.min(active.c.month).over(partition_by=active.c.customer_id)
    following = func.lead(active.c.month).over(partition_by=active.c.customer_id, order_by=active.c.month)
    marked = select(active.c.month, cohort.label("cohort"),
                    case((following == active.c.month + 1, 1), else_=0).label("kept")).subquery("marked")
    query = (select(marked.c.cohort, marked.c.month, marked.c.kept, func.count())
             .group_by(marked.c.cohort, marked.c.month, marked.c.kept))
    return {(int(c), int(m), int(k)): int(n) for c, m, k, n in scope.ctx.conn.execute(query)}


def _churn(grid: Grid, first: int | None, last: int) -> crmcore.ReportResult:
    active = _summed(grid, lambda c, m, k: m)
    new = _summed(grid, lambda c, m, k: m if c == m else None)
    previous = _summed(grid, lambda c, m, k: m + 1)
    retained = _summed(grid, lambda c, m, k: m + 1 if k else None)
    rows = []
    for month in sorted(set(active) | set(previous)):
        if month > last or (first is not None and month < first):
            continue
        prev, kept = previous.get(month, 0), retained.get(month, 0)
        rows.append((month_label(month), active.get(month, 0), new.get(month, 0), prev, kept, prev - kept,
                     ratio(prev - kept, prev)))
    return crmcore.ReportResult(
        title="Churn by month",
        columns=(crmcore.Column("month", "str"), crmcore.Column("active", "int"), crmcore.Column("new", "int"),
                 crmcore.Column("previous", "int", "active the month before"), crmcore.Column("retained", "int"),
                 crmcore.Column("churned", "int"), crmcore.Column("churn_rate", "percent", "churn rate")),
        rows=tuple(rows),
        charts=(crmcore.Chart("line", "Churn rate by month", "month", ("churn_rate",), behind="churn"),
                crmcore.Chart("stacked-bar", "Active customers: new and retained", "month", ("new", "retained"),
                              behind="churn")))
