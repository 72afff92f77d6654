"""Drill-down: the customers behind a chart's bar or point, listed through the user's visibility.

A dashboard bar carries a key naming the deals it counts (``won:START:END:CURRENCY``,
``stage:NAME``): the customers with such a live deal are found by one set-based query,
scoped like every read, and listed through ``crm.customers.list``.  A report chart that
declares ``Chart.drill`` carries ``where:FIELD=VALUE``, a customers filter in the
``--where`` language, which the customer list applies as it applies its own filters.  One
that declares ``Chart.behind`` carries ``report:KEY`` (the report, as-of day, chart, category
and series): the report itself says which customers its number counts
(``crm.reports.customers_behind``).
"""

from __future__ import annotations

from datetime import date, datetime, time, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import and_, false, or_, select

import crmcore
from crmcore.store import tables
from crmcore.store.filters import parse_expression

from .views import PAGE_SIZE, WHERE, decode_cursor, encode_cursor, read_report_drill

if TYPE_CHECKING:
    from crmcore import CRM


def where_filters(drill: str) -> tuple[dict[str, Any], dict[str, str]]:
    """The customers filter of a ``where:FIELD=VALUE`` drill key and what it means."""
    expression = drill.removeprefix(WHERE)
    key, value = parse_expression(expression)
    return {key: value}, {"kind": "where", "expression": expression}


def _drill_condition(crm: "CRM", drill: str) -> tuple[Any, dict[str, str]]:
    """The deals condition of a drill key and what it means (for the page's heading)."""
    kind, _, rest = drill.partition(":")
    d = tables.deals
    stages = [(p, s) for p, pipe in crm.config.pipelines.items() for s in pipe.stages]
    try:
        if kind == "won":
            first, last, currency = rest.split(":")
            start, end = date.fromisoformat(first), date.fromisoformat(last)
            if start > end or not currency:
                raise ValueError("the range is empty")
            zone = crm.as_of().tzinfo
            won = [(p, s.name) for p, s in stages if s.outcome.value == "won"]
            condition = and_(or_(*[and_(d.c.pipeline == p, d.c.stage == s) for p, s in won]) if won else false(),
                             d.c.currency == currency,
                             d.c.closed_at >= datetime.combine(start, time.min, tzinfo=zone),
                             d.c.closed_at < datetime.combine(end + timedelta(days=1), time.min, tzinfo=zone))
            return condition, {"kind": "won", "start": start.isoformat(), "end": end.isoformat(),
                               "currency": currency}
        if kind == "stage" and rest:
            open_ = [(p, s.name) for p, s in stages if s.outcome.value == "open" and s.name == rest]
            if not open_:
                raise ValueError(f"{rest!r} is not an open stage")
            return or_(*[and_(d.c.pipeline == p, d.c.stage == s) for p, s in open_]), {"kind": "stage", "stage": rest}
    except ValueError as exc:
        raise crmcore.ValidationError.single("drill", f"not a chart's drill-down ({exc})", "customer") from None
    raise crmcore.ValidationError.single("drill", "not a chart's drill-down (won:START:END:CURRENCY or stage:NAME)",
                                         "customer")


def drilled_customers(crm: "CRM", drill: str, cursor: str | None) -> dict[str, Any]:
    """One page (newest first) of the customers behind a chart's bar: those with a live deal the
    bar counts.  One set-based query for the page's ids (scoped to the user's visible customers
    and deals like every read), then the customers through ``crm.customers.list`` (authorize,
    visibility, sealed fields opened)."""
    condition, meaning = _drill_condition(crm, drill)
    after = decode_cursor(cursor)[1] if cursor else None
    c, d = tables.customers, tables.deals
    behind = select(d.c.customer_id).where(condition, d.c.archived_at.is_(None))
    query = select(c.c.id).where(c.c.archived_at.is_(None), c.c.id.in_(behind))
    if after is not None:
        query = query.where(c.c.id < after)
    crm.authorize("customer.list", None)
    crm.authorize("deal.list", None)
    with crm.unit(readonly=True) as uow:
        ids = list(uow.conn.execute(query.order_by(c.c.id.desc()).limit(PAGE_SIZE + 1)).scalars())
    following = encode_cursor(ids[PAGE_SIZE - 1], ids[PAGE_SIZE - 1]) if len(ids) > PAGE_SIZE else None
    ids = ids[:PAGE_SIZE]
    rows = crm.customers.list({"id__in": ids}, "-id", limit=len(ids)) if ids else []
    return {"rows": rows, "next": following, "drill": drill, "meaning": meaning}


def report_customers(crm: "CRM", drill: str, cursor: str | None) -> dict[str, Any]:
    """One page (newest first) of the customers behind a report chart's element: the report's
    own set-based query (``crm.reports.customers_behind``: ``report.run``, ``customer.list``,
    the user's visibility), as of the end of the day the chart was drawn for, then the rows
    through ``crm.customers.list``."""
    report, day, chart, x, series = read_report_drill(drill)
    zone = crm.as_of().tzinfo
    moment = datetime.combine(day + timedelta(days=1), time.min, tzinfo=zone)
    before = decode_cursor(cursor)[1] if cursor else None
    ids = crm.reports.customers_behind(report, chart, x, series, as_of=moment, before=before, limit=PAGE_SIZE + 1)
    following = encode_cursor(ids[PAGE_SIZE - 1], ids[PAGE_SIZE - 1]) if len(ids) > PAGE_SIZE else None
    ids = ids[:PAGE_SIZE]
    rows = crm.customers.list({"id__in": ids}, "-id", limit=len(ids)) if ids else []
    meaning = {"kind": "report", "report": report, "as_of": day.isoformat(), "x": x, "series": series}
    return {"rows": rows, "next": following, "drill": drill, "meaning": meaning}
