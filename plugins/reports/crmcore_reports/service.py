"""The ``service-quality`` report: complaints and feedback against the SLA.

Complaints and feedback are interactions of kind ``complaint`` and
``feedback`` that occurred within ``start``/``end`` (and by ``as_of``).  One
row per channel (``by = "channel"``, the default), owner or region (the
customer's), then a total row ``(all)``:

* ``complaints``, ``feedback``: counts.
* First response to a complaint: the customer's first *outbound*
  interaction after it (any kind, by ``as_of``).  ``responded``,
  ``avg_response_h`` (hours) and ``response_in_sla``: the share of complaints
  answered within ``response_sla_hours`` (default 4).
* Resolution: ``resolved_at`` by ``as_of``.  ``resolved``,
  ``avg_resolution_h`` and ``resolution_in_sla``: the share of complaints
  resolved within ``resolution_sla_hours`` (default 24); ``overdue``:
  complaints unresolved at ``as_of`` and older than that SLA.
* Satisfaction (1-5) of complaints and feedback: ``rated``, the average
  (sum / count, 2 decimals) and the count of each score ``sat_1`` ... ``sat_5``.
"""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal
from typing import Any

import attrs
from sqlalchemy import Select, and_, case, func, select
from sqlalchemy.sql import ColumnElement, FromClause

import crmcore
from crmcore.store import days_between, tables, unindexed, utc_literal

from .scope import ReportFilters, Scope, ratio

interactions = tables.interactions
customers = tables.customers
ALL = "(all)"
NONE = "(none)"
KINDS = ("complaint", "feedback")


def _sla_hours(value: Any) -> float:
    """``float(value)`` as a Python function: attrs reads a converter's signature, and a
    builtin's is parsed from text by :mod:`tokenize`, whose pattern then compiles (a few ms of
    every command's start-up, this class being made when the plugin loads)."""
    return float(value)


def _positive(instance: object, attribute: attrs.Attribute[float], value: float) -> None:
    if not value > 0:
        raise ValueError(f"{attribute.name} must be more than 0 hours, got {value!r}")


@attrs.frozen
class ServiceOptions(ReportFilters):
    """Options of ``service-quality``: the SLAs in hours, ``by`` and the common filters."""

    response_sla_hours: float = attrs.field(default=4.0, converter=_sla_hours, validator=_positive)
    resolution_sla_hours: float = attrs.field(default=24.0, converter=_sla_hours, validator=_positive)
    by: str = attrs.field(default="channel", validator=attrs.validators.in_(("channel", "owner", "region")))


class ServiceQualityReport(crmcore.Report):
    """Complaint volume, response and resolution times against the SLA, satisfaction."""

    name = "service-quality"
    description = "complaints and feedback: volume, response/resolution time vs SLA, satisfaction"
    options_type = ServiceOptions

    def run(self, ctx: crmcore.ReportContext, options: ServiceOptions) -> crmcore.ReportResult:
        scope = Scope(ctx, options, self.name)
        cases = _cases(scope, options)
        group = cases.c.grp
        # Sorted here, not by ORDER BY: NULLs and collations sort differently on each database.
        by_group = sorted(ctx.conn.execute(_measures(cases, options, group, ctx.as_of).group_by(group)).all(),
                          key=lambda r: (r[0] is None, r[0] or ""))
        # The total adds up the groups' counts and sums (averages are sum / count): no second pass.
        width = 12 + 5  # group, 11 measures, 5 satisfaction scores
        total = (ALL, *(sum(_number(r[i]) for r in by_group) for i in range(1, width)))
        rows = tuple(_row(r) for r in [*by_group, total])
        columns = (
            crmcore.Column(options.by, "str"), crmcore.Column("complaints", "int"), crmcore.Column("feedback", "int"),
            crmcore.Column("responded", "int"), crmcore.Column("avg_response_h", "float", "avg response h"),
            crmcore.Column("response_in_sla", "percent", f"response within {options.response_sla_hours:g} h"),
            crmcore.Column("resolved", "int"), crmcore.Column("avg_resolution_h", "float", "avg resolution h"),
            crmcore.Column("resolution_in_sla", "percent", f"resolved within {options.resolution_sla_hours:g} h"),
            crmcore.Column("overdue", "int", "open past SLA"), crmcore.Column("rated", "int"),
            crmcore.Column("avg_satisfaction", "decimal", "avg satisfaction"),
            *(crmcore.Column(f"sat_{n}", "int", f"rated {n}") for n in range(1, 6)))
        return crmcore.ReportResult(
            title=f"Service quality by {options.by} ({scope.describe()})", columns=columns, rows=rows,
            charts=(crmcore.Chart("bar", f"Average hours to first response and resolution by {options.by}",
                                  options.by, ("avg_response_h", "avg_resolution_h"), exclude=(ALL,),
                                  behind="cases"),
                    crmcore.Chart("stacked-bar", f"Satisfaction scores by {options.by}", options.by,
                                  tuple(f"sat_{n}" for n in range(1, 6)), exclude=(ALL,), behind="cases")))

    def customers_behind(self, ctx: crmcore.ReportContext, options: ServiceOptions, chart: str, x: str,
                         series: str | None) -> Select[Any] | None:
        """A group's bar (``(none)``: no channel, owner or region): ``avg_response_h``, the
        customers of its complaints answered by as_of; ``avg_resolution_h``, of its complaints
        resolved by as_of; ``sat_N``, of its complaints and feedback rated N."""
        if chart != "cases":
            return None
        cases = _cases(Scope(ctx, options, self.name), options)
        complaint = cases.c.kind == "complaint"
        if series == "avg_response_h":
            counted = and_(complaint, cases.c.responded_at.is_not(None))
        elif series == "avg_resolution_h":
            counted = and_(complaint, cases.c.resolved_at.is_not(None), cases.c.resolved_at <= utc_literal(ctx.as_of))
        elif series in {f"sat_{n}" for n in range(1, 6)}:
            counted = cases.c.satisfaction == int(series[-1])
        else:
            raise crmcore.ValidationError.single("series", "avg_response_h, avg_resolution_h or sat_1 to sat_5",
                                                 "report")
        return select(cases.c.customer_id).where(counted, func.coalesce(cases.c.grp, NONE) == x)


def _cases(scope: Scope, options: ServiceOptions) -> Any:
    """Complaints and feedback in scope, each with the time of the customer's next outbound interaction."""
    in_scope = [*scope.interaction_filter(), interactions.c.kind.in_(KINDS)]
    customers_with_cases = select(interactions.c.customer_id).where(*in_scope)
    outbound_time = case((interactions.c.direction == "outbound", interactions.c.occurred_at))
    # Partitioned by an unindexed customer id: SQLite would walk the customer index to skip the
    # sort and then fetch every row at random, which is slower than scanning and sorting.
    next_outbound = func.min(outbound_time).over(partition_by=unindexed(interactions.c.customer_id),
                                                 order_by=(interactions.c.occurred_at, interactions.c.id),
                                                 rows=(1, None))
    in_range = and_(*in_scope)
    timeline = (select(interactions.c.customer_id, interactions.c.kind, interactions.c.channel,
                       interactions.c.owner, interactions.c.occurred_at, interactions.c.resolved_at,
                       interactions.c.satisfaction, next_outbound.label("responded_at"),
                       case((in_range, 1), else_=0).label("in_scope"))
                # A scan with a hash lookup, not an index search per customer (most have cases).
                .where(unindexed(interactions.c.customer_id).in_(customers_with_cases),
                       unindexed(interactions.c.occurred_at) <= utc_literal(scope.ctx.as_of))).subquery("timeline")
    group: ColumnElement[Any]
    source: FromClause
    if options.by == "region":
        group, source = customers.c.region, timeline.join(customers, customers.c.id == timeline.c.customer_id)
    else:
        group, source = timeline.c[options.by], timeline
    return (select(timeline, group.label("grp")).select_from(source)
            .where(timeline.c.in_scope == 1, timeline.c.kind.in_(KINDS))).subquery("cases")


def _measures(cases: Any, options: ServiceOptions, group: Any, moment: Any) -> Any:
    as_of = utc_literal(moment)
    complaint = cases.c.kind == "complaint"
    response_h = days_between(cases.c.occurred_at, cases.c.responded_at) * 24
    resolved = and_(complaint, cases.c.resolved_at.is_not(None), cases.c.resolved_at <= as_of)
    resolution_h = days_between(cases.c.occurred_at, cases.c.resolved_at) * 24
    responded = and_(complaint, cases.c.responded_at.is_not(None))
    age_h = days_between(cases.c.occurred_at, as_of) * 24

    def count(condition: Any) -> Any:
        return func.sum(case((condition, 1), else_=0))

    return select(
        group,
        count(complaint), count(cases.c.kind == "feedback"),
        count(responded), func.sum(case((responded, response_h))),
        count(and_(responded, response_h <= options.response_sla_hours)),
        count(resolved), func.sum(case((resolved, resolution_h))),
        count(and_(resolved, resolution_h <= options.resolution_sla_hours)),
        count(and_(complaint, ~resolved, age_h > options.resolution_sla_hours)),
        count(cases.c.satisfaction.is_not(None)), func.sum(cases.c.satisfaction),
        *(count(cases.c.satisfaction == n) for n in range(1, 6)),
    )


def _number(value: Any) -> Any:
    """A SUM as a Python number (NULL: 0; PostgreSQL and MariaDB hand back Decimal)."""
    if value is None:
        return 0
    return value if isinstance(value, (int, float)) else float(value)


def _row(values: Any) -> tuple[Any, ...]:
    (name, complaints, feedback, responded, response_sum, response_ok, resolved, resolution_sum, resolution_ok,
     overdue, rated, satisfaction_sum, *scores) = values
    complaints, rated, responded, resolved = int(complaints or 0), int(rated or 0), int(responded or 0), int(resolved or 0)
    avg_response = _number(response_sum) / responded if responded else None
    avg_resolution = _number(resolution_sum) / resolved if resolved else None
    average = (Decimal(int(satisfaction_sum)) / rated).quantize(Decimal("0.01"), ROUND_HALF_UP) if rated else None
    return (NONE if name is None else name, complaints, int(feedback or 0), responded,
            _hours(avg_response), ratio(int(response_ok or 0), complaints), resolved,
            _hours(avg_resolution), ratio(int(resolution_ok or 0), complaints), int(overdue or 0), rated, average,
            *(int(s or 0) for s in scores))


def _hours(value: Any) -> float | None:
    return None if value is None else round(float(value), 1)
