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

All counting happens in SQL with window functions over the distinct
(customer, month) pairs: MIN over a customer's months gives the cohort, LEAD
gives whether the next purchase came the very next month.
"""

from __future__ import annotations

from typing import Any

import attrs
from sqlalchemy import case, func, select

import crmcore
from crmcore.store import month_index, month_label, tables, utc_literal

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
        active = _active_months(scope)
        last_month = _month_of(scope.end_exclusive, -1)
        first_month = _month_of(scope.start) if scope.start else None
        matrix = _cohort_counts(scope, active, options.months, first_month, last_month)
        offsets = [f"m{k}" for k in range(options.months)]
        rows = []
        for cohort in sorted(matrix):
            counts = matrix[cohort]
            size = counts.get(0, 0)
            rows.append((month_label(cohort), size, *(
                ratio(counts.get(k, 0), size) if cohort + k <= last_month else None
                for k in range(options.months))))
        columns = (crmcore.Column("cohort", "str", "first purchase"), crmcore.Column("customers", "int"),
                   *(crmcore.Column(o, "percent") for o in offsets))
        return crmcore.ReportResult(
            title=f"Retention by first-purchase cohort ({scope.describe()})", columns=columns, rows=tuple(rows),
            charts=(crmcore.Chart("heatmap", "Share of each cohort purchasing, by months since first", "cohort",
                                  tuple(offsets)),),
            sections=(_churn(scope, active, first_month, last_month),))


def _month_of(moment: Any, shift_us: int = 0) -> int:
    from datetime import timedelta

    moment = moment + timedelta(microseconds=shift_us)
    return moment.year * 12 + moment.month - 1


def _active_months(scope: Scope) -> Any:
    """Distinct (customer_id, month) of purchases, as a CTE."""
    month = month_index(deals.c.closed_at).label("month")
    currency_given = scope.options.currency is not None
    return (select(deals.c.customer_id, month)
            .where(*scope.deal_filter(currency=currency_given), scope.outcome(crmcore.StageOutcome.WON),
                   deals.c.closed_at.is_not(None), deals.c.closed_at < utc_literal(scope.end_exclusive))
            .group_by(deals.c.customer_id, month)).cte("active_months")


def _cohort_counts(scope: Scope, active: Any, months: int, first: int | None,
                   last: int) -> dict[int, dict[int, int]]:
    cohort = func.min(active.c.month).over(partition_by=active.c.customer_id).label("cohort")
    per_month = select(active.c.month, cohort).subquery("with_cohort")
    offset = (per_month.c.month - per_month.c.cohort).label("offset")
    query = (select(per_month.c.cohort, offset, func.count())
             .where(per_month.c.month - per_month.c.cohort < months, per_month.c.cohort <= last)
             .group_by(per_month.c.cohort, offset))
    if first is not None:
        query = query.where(per_month.c.cohort >= first)
    matrix: dict[int, dict[int, int]] = {}
    for c, k, n in scope.ctx.conn.execute(query):
        matrix.setdefault(int(c), {})[int(k)] = int(n)
    return matrix


def _churn(scope: Scope, active: Any, first: int | None, last: int) -> crmcore.ReportResult:
    following = func.lead(active.c.month).over(partition_by=active.c.customer_id, order_by=active.c.month)
    cohort = func.min(active.c.month).over(partition_by=active.c.customer_id)
    marked = select(active.c.month, following.label("next_month"), cohort.label("cohort")).subquery("marked")
    # From each purchase month: one "previous" for the month after, retained when the next purchase is then.
    month_after = (marked.c.month + 1).label("m")
    carried = (select(month_after, func.count().label("previous"),
                      func.sum(case((marked.c.next_month == marked.c.month + 1, 1), else_=0)).label("retained"))
               .group_by(month_after))
    here = (select(marked.c.month, func.count().label("active"),
                   func.sum(case((marked.c.cohort == marked.c.month, 1), else_=0)).label("new"))
            .group_by(marked.c.month))
    previous = {int(m): (int(p), int(r or 0)) for m, p, r in scope.ctx.conn.execute(carried)}
    current = {int(m): (int(a), int(n or 0)) for m, a, n in scope.ctx.conn.execute(here)}
    rows = []
    for month in sorted(set(previous) | set(current)):
        if month > last or (first is not None and month < first):
            continue
        prev, retained = previous.get(month, (0, 0))
        act, new = current.get(month, (0, 0))
        rows.append((month_label(month), act, new, prev, retained, prev - retained, ratio(prev - retained, prev)))
    return crmcore.ReportResult(
        title="Churn by month",
        columns=(crmcore.Column("month", "str"), crmcore.Column("active", "int"), crmcore.Column("new", "int"),
                 crmcore.Column("previous", "int", "active the month before"), crmcore.Column("retained", "int"),
                 crmcore.Column("churned", "int"), crmcore.Column("churn_rate", "percent", "churn rate")),
        rows=tuple(rows),
        charts=(crmcore.Chart("line", "Churn rate by month", "month", ("churn_rate",)),
                crmcore.Chart("stacked-bar", "Active customers: new and returning", "month", ("new", "retained"))))
