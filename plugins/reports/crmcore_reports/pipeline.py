"""The ``pipeline`` report: deals per stage of a pipeline, as of a moment.

One row per configured stage of the pipeline, in stage order, even when no
deal is there: the number of deals, their amount and their weighted amount
(``amount * probability / 100``), aggregated exactly in SQL and shown, like
every amount, at the currency's minor unit (the weighted sum rounded half-up
once, not per deal).

As of ``as_of``
    Only deals created at or before ``as_of`` count, each in the stage it was
    in at ``as_of``: the latest stage-history entry with ``changed_at <=
    as_of`` (a deal without history counts in its current stage).  So a report
    for last month does not change when deals move today.  The probability is
    the deal's own while it is still in that stage, otherwise the stage's
    configured probability (the history does not record past probabilities).
    Amounts are today's (the history does not record past amounts either).

Ageing
    ``avg_days`` and ``max_days``: how long the deals counted in a stage had
    been there at ``as_of`` (since their latest move up to ``as_of``, or since
    creation for a deal never moved), in days.

Filters
    ``start``/``end`` select deals by creation day; ``region``, ``segment``
    and ``owner`` as in :mod:`crmcore_reports.scope`.

Currencies
    Amounts in different currencies are never summed: the report covers one
    currency, the ``currency`` option, by default the configured
    ``default_currency``.  Deals in other currencies are left out and a note
    says how many, per currency, so nothing disappears silently.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import attrs
from sqlalchemy import BigInteger, Select, func, select, type_coerce

import crmcore
from crmcore.store import days_between, money_from_scaled, tables, utc_literal

from .scope import ReportFilters, Scope, minor_unit, weighted_money
from .stage_then import deals_then, probability_then

deals = tables.deals


@attrs.frozen
class PipelineOptions(ReportFilters):
    """Options of the ``pipeline`` report (``[reports.pipeline]``), plus the common filters.

    :ivar pipeline: which configured pipeline (default ``"default"``).
    :ivar include_closed: also show won and lost stages (default True).
    :ivar currency: the currency reported; default: the configured
        ``default_currency``.
    """

    pipeline: str = "default"
    include_closed: bool = True


COLUMNS = (
    crmcore.Column("stage", "str"),
    crmcore.Column("outcome", "str"),
    crmcore.Column("probability", "int", "probability %"),
    crmcore.Column("count", "int", "deals"),
    crmcore.Column("avg_days", "float", "avg days in stage"),
    crmcore.Column("max_days", "float", "max days in stage"),
    crmcore.Column("amount", "decimal"),
    crmcore.Column("weighted_amount", "decimal", "weighted amount"),
)


class PipelineReport(crmcore.Report):
    """Deals, amount and weighted amount per pipeline stage."""

    name = "pipeline"
    description = "deals, amount and weighted amount per stage of a pipeline, as of a date"
    options_type = PipelineOptions

    def run(self, ctx: crmcore.ReportContext, options: PipelineOptions) -> crmcore.ReportResult:
        scope = Scope(ctx, options, self.name)
        pipeline = scope.pipelines[0]
        currency = scope.currency
        stages = [s for s in sorted(pipeline.stages, key=lambda s: s.order)
                  if options.include_closed or s.outcome is crmcore.StageOutcome.OPEN]
        totals = _totals_by_stage(scope, pipeline, currency)
        rows = []
        for stage in stages:
            zero = Decimal(0).quantize(minor_unit(currency, "[reports.pipeline]"))
            empty = (0, None, None, zero, zero)
            count, avg_days, max_days, amount, weighted = totals.pop(stage.name, empty)
            rows.append((stage.name, stage.outcome.value, stage.probability, count, avg_days, max_days,
                         amount, weighted))
        notes = scope.other_currencies_note(*_deal_filter(scope))
        hidden = {name: count for name, (count, *_) in totals.items()
                  if pipeline.stage(name) is None}
        if hidden:  # stages no longer configured; closed stages left out on purpose are not news
            notes.append("Not shown: " + ", ".join(f"{n} deal(s) in unknown stage {s!r}"
                                                   for s, n in sorted(hidden.items())) + ".")
        return crmcore.ReportResult(
            title=f"Pipeline {pipeline.name!r} ({scope.describe()})",
            columns=COLUMNS,
            rows=tuple(rows),
            charts=(crmcore.Chart("bar", f"Amount by stage ({currency})", "stage", ("amount",), behind="stages"),),
            notes=tuple(notes),
        )

    def customers_behind(self, ctx: crmcore.ReportContext, options: PipelineOptions, chart: str, x: str,
                         series: str | None) -> Select[Any] | None:
        """A stage's bar: the customers of the deals counted in that stage at as_of."""
        if chart != "stages":
            return None
        scope = Scope(ctx, options, self.name)
        then = deals_then(scope, [*_deal_filter(scope), deals.c.currency == scope.currency],
                          {"customer_id": deals.c.customer_id})
        return select(then.c.customer_id).where(then.c.stage == x)


def _deal_filter(scope: Scope) -> list[Any]:
    """Deals of the pipeline that exist at as_of and pass the filters (any currency)."""
    return [*scope.deal_filter(currency=False), *scope.in_range(deals.c.created_at)]


def _totals_by_stage(scope: Scope, pipeline: crmcore.Pipeline,
                     currency: str) -> dict[str, tuple[int, float | None, float | None, Decimal, Decimal]]:
    """stage -> (count, avg days, max days, amount, weighted amount), in one grouped query."""
    ctx = scope.ctx
    then = deals_then(scope, [*_deal_filter(scope), deals.c.currency == currency],
                      {"scaled": type_coerce(deals.c.amount, BigInteger), "pipeline": deals.c.pipeline})
    per_deal = select(then.c.stage.label("stage"), then.c.scaled.label("scaled"),
                      (then.c.scaled * probability_then(then, [pipeline])).label("weighted"),
                      days_between(then.c.entered, utc_literal(ctx.as_of)).label("age")).subquery("per_deal")
    query = (select(per_deal.c.stage, func.count(), func.sum(per_deal.c.scaled), func.sum(per_deal.c.weighted),
                    func.avg(per_deal.c.age), func.max(per_deal.c.age))
             .group_by(per_deal.c.stage))
    # Money is stored as an integer count of 1/10,000; summing the raw integers
    # (and amount * probability as integers) keeps every total exact.
    # Amounts at the currency's minor unit (12000.50, not 12000.5); a weighted
    # sum is rounded once at the end (a probability adds digits: 0.99 * 10% = 0.099).
    minor = minor_unit(currency, "[reports.pipeline]")
    return {name: (count, _days(avg_age), _days(max_age), money_from_scaled(amount).quantize(minor),
                   weighted_money(weighted, currency, "[reports.pipeline]"))
            for name, count, amount, weighted, avg_age, max_age in ctx.conn.execute(query)}


def _days(value: Any) -> float | None:
    """Days to one decimal (ages are durations, not money: float is fine)."""
    return None if value is None else round(float(value), 1)
