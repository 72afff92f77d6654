"""The ``funnel`` report: stage-to-stage conversion and time between stages.

Read from the deal stage history (``deal_stage_history``: every move with
its timestamp, including the first stage at creation) up to ``as_of``.

The funnel of a pipeline is its open stages then its won stage(s), in the
configured order; lost stages are where deals fall out, not a step.

* ``reached``: deals that entered this stage or any later step (a deal
  created in ``proposal`` skipped ``lead`` and ``qualified`` but passed them).
* ``conversion``: ``reached`` / ``reached`` of the previous step.
* ``overall``: ``reached`` / ``reached`` of the first step.
* ``avg_days``: average days from first entering the previous step to first
  entering this one, over the deals that entered both in that order
  (``timed`` of them).

Filters: deals created within ``start``/``end``; pipeline (default
``default``), region, owner, segment; ``currency`` only when given (counts
do not mix amounts).
"""

from __future__ import annotations

from typing import Any

import attrs
from sqlalchemy import Select, and_, case, func, select
from sqlalchemy.sql import ColumnElement

import crmcore
from crmcore.store import days_between, tables, utc_literal

from .scope import ReportFilters, Scope, ratio

deals = tables.deals
history = tables.deal_stage_history


@attrs.frozen
class FunnelOptions(ReportFilters):
    """Options of ``funnel``: the common filters; ``pipeline`` defaults to ``default``."""

    pipeline: str = "default"


COLUMNS = (
    crmcore.Column("stage", "str"),
    crmcore.Column("reached", "int"),
    crmcore.Column("conversion", "percent", "conversion from previous"),
    crmcore.Column("overall", "percent", "conversion from first"),
    crmcore.Column("avg_days", "float", "avg days from previous"),
    crmcore.Column("timed", "int", "deals timed"),
)


class FunnelReport(crmcore.Report):
    """Stage-to-stage conversion and average days between stages, from the stage history."""

    name = "funnel"
    description = "stage-to-stage conversion and average time between stages (stage history)"
    options_type = FunnelOptions

    def run(self, ctx: crmcore.ReportContext, options: FunnelOptions) -> crmcore.ReportResult:
        scope = Scope(ctx, options, self.name)
        pipeline = scope.pipelines[0]
        steps = [s.name for s in sorted(pipeline.stages, key=lambda s: s.order)
                 if s.outcome is not crmcore.StageOutcome.LOST]
        reached, timing = _funnel_counts(scope, steps)
        rows = []
        for i, stage in enumerate(steps):
            previous = reached[i - 1] if i else None
            avg_days, timed = timing[i] if i else (None, None)
            rows.append((stage, reached[i], ratio(reached[i], previous) if i else None,
                         ratio(reached[i], reached[0]), None if avg_days is None else round(float(avg_days), 1),
                         timed))
        return crmcore.ReportResult(
            title=f"Funnel {pipeline.name!r} ({scope.describe()})", columns=COLUMNS, rows=tuple(rows),
            charts=(crmcore.Chart("funnel", f"Deals reaching each stage ({pipeline.name})", "stage",
                                  ("reached",), behind="steps"),))

    def customers_behind(self, ctx: crmcore.ReportContext, options: FunnelOptions, chart: str, x: str,
                         series: str | None) -> Select[Any] | None:
        """A step's band: the customers of the deals that reached it (entered it or a later step
        by as_of)."""
        if chart != "steps":
            return None
        scope = Scope(ctx, options, self.name)
        steps = [s.name for s in sorted(scope.pipelines[0].stages, key=lambda s: s.order)
                 if s.outcome is not crmcore.StageOutcome.LOST]
        if x not in steps:
            raise crmcore.ValidationError.single("x", f"not a step of the funnel ({', '.join(steps)})", "report")
        reached = select(history.c.deal_id).where(history.c.changed_at <= utc_literal(ctx.as_of),
                                                  history.c.to_stage.in_(steps[steps.index(x):]))
        return select(deals.c.customer_id).where(*_chosen(scope), deals.c.id.in_(reached))


def _chosen(scope: Scope) -> list[Any]:
    """The deals the funnel follows: the filters, created within the range."""
    return [*scope.deal_filter(currency=scope.options.currency is not None), *scope.in_range(deals.c.created_at)]


def _funnel_counts(scope: Scope, steps: list[str]) -> tuple[list[int], list[tuple[Any, int | None]]]:
    """Per step: deals reached; per step after the first: (avg days from previous, deals timed).

    One pass over the history: per deal the first entry time into each step
    (conditional MIN), then one row of sums and averages over the deals.
    """
    chosen = select(deals.c.id).where(*_chosen(scope))
    first_entry = [func.min(case((history.c.to_stage == step, history.c.changed_at))).label(f"t{i}")
                   for i, step in enumerate(steps)]
    per_deal = (select(history.c.deal_id, *first_entry)
                .where(history.c.changed_at <= utc_literal(scope.ctx.as_of), history.c.deal_id.in_(chosen))
                .group_by(history.c.deal_id)).subquery("entries")
    t = [per_deal.c[f"t{i}"] for i in range(len(steps))]
    measures: list[ColumnElement[Any]] = []
    for i in range(len(steps)):
        # Reached step i: entered it or any later step.
        measures.append(func.sum(case((func.coalesce(*t[i:]).is_not(None) if len(t[i:]) > 1
                                       else t[i].is_not(None), 1), else_=0)))
    for i in range(1, len(steps)):
        ordered = and_(t[i - 1].is_not(None), t[i].is_not(None), t[i] >= t[i - 1])
        measures.append(func.avg(case((ordered, days_between(t[i - 1], t[i])))))
        measures.append(func.sum(case((ordered, 1), else_=0)))
    row = scope.ctx.conn.execute(select(*measures)).one()
    reached = [int(v or 0) for v in row[:len(steps)]]
    rest = row[len(steps):]
    timing: list[tuple[Any, int | None]] = [(None, None)] + [(rest[2 * k], int(rest[2 * k + 1] or 0))
                                                            for k in range(len(steps) - 1)]
    return reached, timing
