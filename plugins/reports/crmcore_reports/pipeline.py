"""The ``pipeline`` report: deals per stage of a pipeline, as of a moment.

One row per configured stage of the pipeline, in stage order, even when no
deal is there: the number of deals, their amount and their weighted amount
(``amount * probability / 100``), all exact Decimals aggregated in SQL.

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
from sqlalchemy import (BigInteger, Integer, String, case, cast, func, literal, null, select, type_coerce,
                        union_all)

import crmcore
from crmcore.store import UTCDateTime, days_between, money_from_scaled, tables, utc_literal

from .scope import ReportFilters, Scope, minor_unit

deals = tables.deals
history = tables.deal_stage_history


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
            empty = (0, None, None, Decimal(0).quantize(minor_unit(currency, "[reports.pipeline]")), Decimal(0))
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
            charts=(crmcore.Chart("bar", f"Amount by stage ({currency})", "stage", ("amount",)),),
            notes=tuple(notes),
        )


def _deal_filter(scope: Scope) -> list[Any]:
    """Deals of the pipeline that exist at as_of and pass the filters (any currency)."""
    return [*scope.deal_filter(currency=False), *scope.in_range(deals.c.created_at)]


def _totals_by_stage(scope: Scope, pipeline: crmcore.Pipeline,
                     currency: str) -> dict[str, tuple[int, float | None, float | None, Decimal, Decimal]]:
    """stage -> (count, avg days, max days, amount, weighted amount), in one grouped query."""
    ctx = scope.ctx
    stage, current_stage, probability, scaled, entered = _stage_as_of(scope, currency)
    configured = {s.name: s.probability for s in pipeline.stages}
    probability_then = case(
        (stage == current_stage, probability),
        else_=case(configured, value=stage, else_=probability) if configured else probability,
    )
    per_deal = select(stage.label("stage"), scaled.label("scaled"),
                      (scaled * probability_then).label("weighted"),
                      days_between(entered, utc_literal(ctx.as_of)).label("age")).subquery("per_deal")
    query = (select(per_deal.c.stage, func.count(), func.sum(per_deal.c.scaled), func.sum(per_deal.c.weighted),
                    func.avg(per_deal.c.age), func.max(per_deal.c.age))
             .group_by(per_deal.c.stage))
    # Money is stored as an integer count of 1/10,000; summing the raw integers
    # (and amount * probability as integers) keeps every total exact.
    # Amounts at the currency's minor unit (12000.50, not 12000.5); weighted
    # amounts stay exact (a probability can add digits: 0.99 * 10% = 0.099).
    minor = minor_unit(currency, "[reports.pipeline]")
    return {name: (count, _days(avg_age), _days(max_age), money_from_scaled(amount).quantize(minor),
                   money_from_scaled(weighted) / 100)
            for name, count, amount, weighted, avg_age, max_age in ctx.conn.execute(query)}


def _days(value: Any) -> float | None:
    """Days to one decimal (ages are durations, not money: float is fine)."""
    return None if value is None else round(float(value), 1)


def _stage_as_of(scope: Scope, currency: str) -> tuple[Any, Any, Any, Any, Any]:
    """Per deal counted: (stage at as_of, current stage, probability, scaled amount, entered stage at).

    Shape: (the deals UNION ALL their stage changes up to as_of), and per deal
    the ``to_stage`` of the change with the highest id (a window function);
    the deal's own row (``change_id`` 0) carries its columns.  No join between
    deals and history on purpose: PostgreSQL, with statistics stale after a
    bulk load, nested-looped such a join (quadratic: 90,000 deals took
    minutes).  Change ids grow with time, so the highest id is the latest.
    """
    ctx = scope.ctx
    scaled = type_coerce(deals.c.amount, BigInteger)
    if ctx.conn.dialect.name == "sqlite":
        return _stage_by_lookup(scope, currency, scaled)
    own = (select(deals.c.id.label("deal_id"), literal(0, Integer).label("change_id"),
                  cast(null(), String(50)).label("to_stage"), deals.c.stage.label("current_stage"),
                  deals.c.probability.label("probability"), scaled.label("scaled"),
                  deals.c.created_at.label("moment"))
           .where(*_deal_filter(scope), deals.c.currency == currency))
    changes = select(history.c.deal_id, history.c.id, history.c.to_stage, null(), null(), null(),
                     history.c.changed_at).where(history.c.changed_at <= utc_literal(ctx.as_of))
    rows = union_all(own, changes).subquery("deal_rows")
    window = {"partition_by": rows.c.deal_id, "order_by": rows.c.change_id.desc()}
    latest = func.first_value(rows.c.to_stage).over(**window)
    # The deal's own row sorts last (id 0), so with no history its created_at comes first.
    moved_at = func.first_value(rows.c.moment).over(**window)
    ranked = select(rows, latest.label("stage_then"), moved_at.label("entered")).subquery("deal_stages")
    deal = select(func.coalesce(ranked.c.stage_then, ranked.c.current_stage).label("stage"),
                  ranked.c.current_stage, ranked.c.probability, ranked.c.scaled,
                  type_coerce(ranked.c.entered, UTCDateTime).label("entered")).where(
        ranked.c.change_id == 0).subquery("deal_then")
    return deal.c.stage, deal.c.current_stage, deal.c.probability, deal.c.scaled, deal.c.entered



def _stage_by_lookup(scope: Scope, currency: str, scaled: Any) -> tuple[Any, Any, Any, Any, Any]:
    """SQLite's shape of :func:`_stage_as_of`: per deal, one seek for its latest change up to as_of.

    The ``deal_id`` index holds the row ids in order, so "highest id for this
    deal" is a seek and a step back: 5M deals in about 6 s, against about 28 s
    for sorting deals and changes together for the window.  Not used
    elsewhere: PostgreSQL, without fresh statistics, may answer ``ORDER BY id
    DESC LIMIT 1`` by walking the primary key backwards for every deal.
    """
    latest = (select(history.c.id)
              .where(history.c.deal_id == deals.c.id, history.c.changed_at <= utc_literal(scope.ctx.as_of))
              .order_by(history.c.id.desc()).limit(1).correlate(deals).scalar_subquery())
    own = (select(deals.c.stage.label("current_stage"), deals.c.probability.label("probability"),
                  scaled.label("scaled"), deals.c.created_at.label("created_at"), latest.label("change_id"))
           .where(*_deal_filter(scope), deals.c.currency == currency)).subquery("deal_latest")
    then = history.alias("stage_then")
    deal = (select(func.coalesce(then.c.to_stage, own.c.current_stage).label("stage"), own.c.current_stage,
                   own.c.probability, own.c.scaled,
                   type_coerce(func.coalesce(then.c.changed_at, own.c.created_at), UTCDateTime).label("entered"))
            .select_from(own.outerjoin(then, then.c.id == own.c.change_id))).subquery("deal_then")
    return deal.c.stage, deal.c.current_stage, deal.c.probability, deal.c.scaled, deal.c.entered
