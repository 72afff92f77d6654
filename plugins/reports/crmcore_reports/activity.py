"""The ``activity`` report: interactions over time, and overdue follow-ups.

Main table: interactions that occurred within ``start``/``end`` (by
``as_of``), per UTC month and per ``by`` (``kind``, the default, ``channel``
or ``owner``): the count, and how many were inbound and outbound.

Section "Overdue follow-ups" (revisit reminders): an interaction whose
``follow_up_due`` is before ``as_of`` is done when the customer has any
later interaction (by ``as_of``); otherwise it is overdue.  One row per
customer with overdue follow-ups, the longest overdue first (``limit`` rows,
default 50; a note gives the total): how many, the earliest due date and the
days since.  ``start``/``end`` select follow-ups by due date here.
"""

from __future__ import annotations

from typing import Any

import attrs
from sqlalchemy import Select, and_, case, func, select

import crmcore
from crmcore.store import UTCDateTime, days_between, month_index, month_label, tables, unindexed, utc_literal

from .scope import ReportFilters, Scope

interactions = tables.interactions
customers = tables.customers
NONE = "(none)"


@attrs.frozen
class ActivityOptions(ReportFilters):
    """Options of ``activity``: ``by`` (kind, channel, owner), ``limit`` of the overdue list, the filters."""

    by: str = attrs.field(default="kind", validator=attrs.validators.in_(("kind", "channel", "owner")))
    limit: int = attrs.field(default=50, validator=attrs.validators.ge(1))


class ActivityReport(crmcore.Report):
    """Interactions by kind, channel or owner per month; customers with overdue follow-ups."""

    name = "activity"
    description = "interactions by kind/channel/owner per month; customers with overdue follow-ups"
    options_type = ActivityOptions

    def run(self, ctx: crmcore.ReportContext, options: ActivityOptions) -> crmcore.ReportResult:
        scope = Scope(ctx, options, self.name)
        month = month_index(interactions.c.occurred_at).label("month")
        group = interactions.c[options.by]
        query = (select(month, group, func.count(),
                        func.sum(case((interactions.c.direction == "inbound", 1), else_=0)),
                        func.sum(case((interactions.c.direction == "outbound", 1), else_=0)))
                 .where(*scope.interaction_filter()).group_by(month, group))
        found = sorted(ctx.conn.execute(query).all(), key=lambda r: (int(r[0]), r[1] is None, r[1] or ""))
        rows = tuple((month_label(m), NONE if g is None else g, int(n), int(i or 0), int(o or 0))
                     for m, g, n, i, o in found)
        overdue, total = _overdue(scope, options.limit)
        notes = (f"{total} customer(s) with overdue follow-ups" + (f"; the {options.limit} longest overdue shown."
                                                                   if total > options.limit else "."),)
        return crmcore.ReportResult(
            title=f"Activity by {options.by} ({scope.describe()})",
            columns=(crmcore.Column("month", "str"), crmcore.Column(options.by, "str"),
                     crmcore.Column("interactions", "int"), crmcore.Column("inbound", "int"),
                     crmcore.Column("outbound", "int")),
            rows=rows,
            charts=(crmcore.Chart("stacked-bar", f"Interactions per month by {options.by}", "month",
                                  ("interactions",), group=options.by, behind="months"),),
            sections=(attrs.evolve(overdue, notes=notes),))

    def customers_behind(self, ctx: crmcore.ReportContext, options: ActivityOptions, chart: str, x: str,
                         series: str | None) -> Select[Any] | None:
        """A month's bar of one kind, channel or owner (the series; ``(none)``: none): the
        customers of those interactions."""
        if chart != "months":
            return None
        year, month = crmcore.month_of_label(x)
        scope = Scope(ctx, options, self.name)
        return select(interactions.c.customer_id).where(
            *scope.interaction_filter(), month_index(interactions.c.occurred_at) == year * 12 + month - 1,
            func.coalesce(interactions.c[options.by], NONE) == (series or NONE))


def _overdue(scope: Scope, limit: int) -> tuple[crmcore.ReportResult, int]:
    as_of = utc_literal(scope.ctx.as_of)
    due = [interactions.c.follow_up_due < as_of, interactions.c.follow_up_due < utc_literal(scope.end_exclusive)]
    if scope.start is not None:
        due.append(interactions.c.follow_up_due >= utc_literal(scope.start))
    if scope.options.owner is not None:
        due.append(interactions.c.owner == scope.options.owner)
    with_due = select(interactions.c.customer_id).where(*due, *scope.customer_filter(interactions.c.customer_id))
    # Per interaction of those customers: the customer's latest contact by as_of (a window, not a join).
    last_contact = func.max(interactions.c.occurred_at).over(partition_by=unindexed(interactions.c.customer_id))
    timeline = (select(interactions.c.customer_id, interactions.c.occurred_at, interactions.c.follow_up_due,
                       case((and_(*due), 1), else_=0).label("due"), last_contact.label("last_contact"))
                .where(unindexed(interactions.c.occurred_at) <= as_of,
                       unindexed(interactions.c.customer_id).in_(with_due))
                ).subquery("timeline")
    # Overdue: due by as_of, and nothing happened with the customer after it.
    per_customer = (select(timeline.c.customer_id, func.count().label("overdue"),
                           func.min(timeline.c.follow_up_due).label("due"))
                    .where(timeline.c.due == 1, timeline.c.occurred_at >= timeline.c.last_contact)
                    .group_by(timeline.c.customer_id)).subquery("overdue")
    # COUNT(*) OVER (): the number of customers overdue comes with the first rows, in the same pass.
    query = (select(per_customer.c.customer_id, customers.c.name, customers.c.owner, per_customer.c.overdue,
                    per_customer.c.due, days_between(per_customer.c.due, as_of), func.count().over())
             .select_from(per_customer.join(customers, customers.c.id == per_customer.c.customer_id))
             .order_by(per_customer.c.due, per_customer.c.customer_id).limit(limit))
    found = scope.ctx.conn.execute(query).all()
    total = int(found[0][-1]) if found else 0
    rows = tuple((cid, name, owner, int(n), _utc(due), round(float(days), 1))
                 for cid, name, owner, n, due, days, _ in found)
    result = crmcore.ReportResult(
        title="Overdue follow-ups",
        columns=(crmcore.Column("customer_id", "int", "customer"), crmcore.Column("name", "str"),
                 crmcore.Column("owner", "str"), crmcore.Column("overdue", "int", "overdue follow-ups"),
                 crmcore.Column("due", "datetime", "earliest due"),
                 crmcore.Column("days_overdue", "float", "days overdue")),
        rows=rows)
    return result, total


def _utc(value: Any) -> Any:
    """MIN() over a datetime column comes back as text on SQLite; make it an aware datetime."""
    return UTCDateTime().process_result_value(value, None)
