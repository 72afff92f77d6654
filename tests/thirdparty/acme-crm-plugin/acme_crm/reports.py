"""A won-revenue report and a Markdown renderer for any report."""

from __future__ import annotations

from sqlalchemy import func, select

from crmcore import Chart, Column, Report, ReportResult, StageOutcome
from crmcore.store import tables


class WonByOwner(Report):
    name = "acme-won-by-owner"
    description = "Won revenue per sales rep"

    def run(self, ctx, options):
        d = tables.deals
        won = [s.name for p in ctx.config.pipelines.values() for s in p.stages
               if s.outcome is StageOutcome.WON]
        rows = ctx.conn.execute(
            select(d.c.owner, d.c.currency, func.count(), func.sum(d.c.amount))
            .where(d.c.stage.in_(won), d.c.closed_at <= ctx.as_of)
            .group_by(d.c.owner, d.c.currency).order_by(d.c.owner, d.c.currency))
        return ReportResult(
            title="Won revenue by owner",
            columns=(Column("owner"), Column("currency"), Column("deals", "int"),
                     Column("revenue", "decimal")),
            rows=tuple(tuple(r) for r in rows),
            charts=(Chart("bar", "Revenue", x="owner", y=("revenue",)),),
        )


def render_markdown(result):
    head = "| " + " | ".join(c.label for c in result.columns) + " |"
    rule = "|" + "---|" * len(result.columns)
    body = ["| " + " | ".join("" if v is None else str(v) for v in row) + " |" for row in result.rows]
    return "\n".join([f"## {result.title}", "", head, rule, *body, ""])
