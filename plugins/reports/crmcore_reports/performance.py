"""The ``sales-performance`` report: results by owner or region against targets.

Per period (``period = "month"`` or ``"quarter"``, UTC) and per owner (``by =
"owner"``, the deal's and the interaction's owner) or region (``by =
"region"``, the customer's):

* ``won_revenue`` / ``won_deals``: won deals closed in the period (by ``as_of``).
* ``activities``: interactions that occurred in the period.
* ``target``: from the configuration; ``attainment`` = won revenue / target.

Targets live in ``crm.toml``, in the report currency, per month
(``"2026-03"``) or quarter (``"2026-Q1"``), for an owner or a region::

    [[reports.sales-performance.targets]]
    owner = "alice"
    period = "2026-Q1"
    amount = "30000.00"

With ``period = "quarter"`` monthly targets add up into their quarter; with
``period = "month"`` quarterly targets cannot be split and are left out (a
note says so).  A row exists for every period and person with revenue,
activities or a target (targets up to the ``as_of`` period).
"""

from __future__ import annotations

import re
from collections import defaultdict
from datetime import date, timedelta
from decimal import Decimal
from typing import Any

import attrs
from sqlalchemy import BigInteger, Select, func, select, type_coerce

import crmcore
from crmcore.store import month_index, month_label, tables

from .scope import ReportFilters, Scope, money, ratio

deals = tables.deals
customers = tables.customers
interactions = tables.interactions
NONE = "(none)"
PERIOD = re.compile(r"^(\d{4})-(?:(0[1-9]|1[0-2])|Q([1-4]))$")


def _period_text(instance: object, attribute: attrs.Attribute[str], value: str) -> None:
    if not PERIOD.match(value):
        raise ValueError(f"{value!r} is not a month YYYY-MM or a quarter YYYY-Qn")


@attrs.frozen
class Target:
    """A sales target: ``amount`` for ``owner`` or ``region`` in ``period`` (YYYY-MM or YYYY-Qn)."""

    period: str = attrs.field(validator=_period_text)
    amount: Decimal  # the core's converter refuses floats (TOML 30000.5): write "30000.50"
    owner: str | None = None
    region: str | None = None

    def __attrs_post_init__(self) -> None:
        if (self.owner is None) == (self.region is None):
            raise ValueError(f"target {self.period}: give exactly one of owner or region")

    def bucket(self, period: str) -> int | None:
        """The target's period index at ``period`` granularity (None: cannot be split)."""
        match = PERIOD.match(self.period)
        assert match is not None  # checked by the field's validator
        year, month, quarter = match.groups()
        if month:
            index = int(year) * 12 + int(month) - 1
            return index if period == "month" else index // 3
        return None if period == "month" else int(year) * 4 + int(quarter) - 1


@attrs.frozen
class PerformanceOptions(ReportFilters):
    """Options of ``sales-performance``: ``period``, ``by`` and ``targets`` plus the common filters."""

    period: str = attrs.field(default="month", validator=attrs.validators.in_(("month", "quarter")))
    by: str = attrs.field(default="owner", validator=attrs.validators.in_(("owner", "region")))
    targets: tuple[Target, ...] = ()


class SalesPerformanceReport(crmcore.Report):
    """Won revenue, deals and activities by owner or region per month/quarter, against targets."""

    name = "sales-performance"
    description = "won revenue, deals and activities by owner/region per month or quarter vs targets"
    options_type = PerformanceOptions

    def run(self, ctx: crmcore.ReportContext, options: PerformanceOptions) -> crmcore.ReportResult:
        scope = Scope(ctx, options, self.name)
        cur = scope.currency
        revenue, notes = _revenue(scope, options)
        activity = _activities(scope, options)
        targets, target_notes = _targets(scope, options)
        notes += target_notes
        keys = sorted(set(revenue) | set(activity) | set(targets), key=lambda k: (k[0], k[1] is None, k[1] or ""))
        rows = []
        for bucket, who in keys:
            scaled, won = revenue.get((bucket, who), (0, 0))
            target = targets.get((bucket, who))
            won_revenue = money(scaled, cur)
            rows.append((_label(bucket, options.period), NONE if who is None else who, won_revenue, won,
                         activity.get((bucket, who), 0), target,
                         None if not target else ratio(won_revenue, target)))
        columns = (crmcore.Column("period", "str"), crmcore.Column(options.by, "str"),
                   crmcore.Column("won_revenue", "decimal", "won revenue", cur),
                   crmcore.Column("won_deals", "int", "won deals"), crmcore.Column("activities", "int"),
                   crmcore.Column("target", "decimal", None, cur), crmcore.Column("attainment", "percent"))
        return crmcore.ReportResult(
            title=f"Sales performance by {options.by} and {options.period} ({scope.describe()})",
            columns=columns, rows=tuple(rows), notes=tuple(notes),
            charts=(crmcore.Chart("bar", f"Won revenue by {options.period} ({cur})", "period", ("won_revenue",),
                                  group=options.by, behind="won"),
                    crmcore.Chart("bar", "Attainment of target", "period", ("attainment",), group=options.by,
                                  behind="won")))

    def customers_behind(self, ctx: crmcore.ReportContext, options: PerformanceOptions, chart: str, x: str,
                         series: str | None) -> Select[Any] | None:
        """A period's bar for an owner or region (the series; ``(none)``: none): the customers of
        the won deals closed in that period that its revenue (and attainment) counts."""
        if chart != "won":
            return None
        scope = Scope(ctx, options, self.name)
        who, source = _who(deals, options.by)
        return (select(deals.c.customer_id).select_from(source)
                .where(*scope.deal_filter(), scope.outcome(crmcore.StageOutcome.WON),
                       deals.c.closed_at.is_not(None), *scope.in_range(deals.c.closed_at),
                       _bucket(deals.c.closed_at, options.period) == _bucket_of_label(x, options.period),
                       func.coalesce(who, NONE) == (series or NONE)))


def _bucket(moment: Any, period: str) -> Any:
    index = month_index(moment)
    return index if period == "month" else index // 3


def _label(bucket: int, period: str) -> str:
    if period == "month":
        return month_label(bucket)
    year, quarter = divmod(bucket, 4)
    return f"{year:04d}-Q{quarter + 1}"


def _bucket_of_label(label: str, period: str) -> int:
    """The bucket of a period's label (``2026-03``, ``2026-Q1``): :func:`_label` read back."""
    found = re.fullmatch(r"(\d{4})-(\d{2})" if period == "month" else r"(\d{4})-Q([1-4])", label)
    if found is None or (period == "month" and not 1 <= int(found.group(2)) <= 12):
        raise crmcore.ValidationError.single("x", f"not a {period} of the report: {label!r}", "report")
    year, part = int(found.group(1)), int(found.group(2)) - 1
    return year * 12 + part if period == "month" else year * 4 + part


def _who(table: Any, by: str) -> tuple[Any, Any]:
    """(group column, FROM clause): the owner on the row itself, or the customer's region by a key join."""
    if by == "owner":
        return table.c.owner, table
    return customers.c.region, table.join(customers, customers.c.id == table.c.customer_id)


def _revenue(scope: Scope, options: PerformanceOptions) -> tuple[dict[tuple[int, Any], tuple[int, int]], list[str]]:
    """(bucket, who) -> (won revenue scaled, won deals) in the report currency, and the note on the others.

    Every currency is grouped in the same pass, so counting the deals left
    out costs no second scan.
    """
    who, source = _who(deals, options.by)
    bucket = _bucket(deals.c.closed_at, options.period).label("bucket")
    query = (select(deals.c.currency, bucket, who, func.sum(type_coerce(deals.c.amount, BigInteger)), func.count())
             .select_from(source)
             .where(*scope.deal_filter(currency=False), scope.outcome(crmcore.StageOutcome.WON),
                    deals.c.closed_at.is_not(None), *scope.in_range(deals.c.closed_at))
             .group_by(deals.c.currency, bucket, who))
    found: dict[tuple[int, Any], tuple[int, int]] = {}
    others: defaultdict[str, int] = defaultdict(int)
    for currency, b, w, total, n in scope.ctx.conn.execute(query):
        if currency == scope.currency:
            found[int(b), w] = (int(total or 0), int(n))
        else:
            others[currency] += int(n)
    listing = ", ".join(f"{n} in {code}" for code, n in sorted(others.items()))
    notes = [f"Not included: won deals in other currencies ({listing}); run with currency=CODE to see them."]
    return found, notes if others else []


def _activities(scope: Scope, options: PerformanceOptions) -> dict[tuple[int, Any], int]:
    who, source = _who(interactions, options.by)
    bucket = _bucket(interactions.c.occurred_at, options.period).label("bucket")
    query = (select(bucket, who, func.count()).select_from(source)
             .where(*scope.interaction_filter()).group_by(bucket, who))
    return {(int(b), w): int(n) for b, w, n in scope.ctx.conn.execute(query)}


def _targets(scope: Scope, options: PerformanceOptions) -> tuple[dict[tuple[int, Any], Decimal], list[str]]:
    """(bucket, who) -> target amount for the targets in range and by the as_of period."""
    latest = _bucket_of(scope.ctx.as_of, options.period)
    first = _bucket_of(scope.start, options.period) if scope.start else None
    last = min(latest, _bucket_of(scope.end_exclusive - timedelta(microseconds=1), options.period))
    found: dict[tuple[int, Any], Decimal] = defaultdict(Decimal)
    unsplit = 0
    for target in options.targets:
        who = target.owner if options.by == "owner" else target.region
        if who is None or (options.owner is not None and options.by == "owner" and who != options.owner):
            continue
        bucket = target.bucket(options.period)
        if bucket is None:
            unsplit += 1
        elif bucket <= last and (first is None or bucket >= first):
            found[bucket, who] += target.amount
    notes = [f"{unsplit} quarterly target(s) not shown by month; run with period=quarter."] if unsplit else []
    return dict(found), notes


def _bucket_of(moment: date, period: str) -> int:
    index = moment.year * 12 + moment.month - 1
    return index if period == "month" else index // 3
