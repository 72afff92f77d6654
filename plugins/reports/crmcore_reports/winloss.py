"""The ``win-loss`` report: win rate, deal size, cycle length and lost reasons.

Closed deals are those in a stage whose configured outcome is ``won`` or
``lost`` (in their own pipeline), closed (``closed_at``) within
``start``/``end`` and by ``as_of``.  One row per owner (``by = "owner"``,
the default), region or pipeline, then a total row ``(all)``:

* ``won`` / ``lost``: counts; ``win_rate`` = won / (won + lost).
* ``won_amount``; ``avg_won`` = won amount / won deals (exact, then rounded
  half-up to the currency's minor unit); ``avg_lost`` likewise.
* ``avg_cycle_days``: average days from creation to close of the won deals
  (deals created after they closed, i.e. imported history, are left out).

Section "Lost reasons": per ``lost_reason`` (``(none)`` when empty) the lost
deals, their share of all lost deals and their amount.

Amounts in other currencies are not mixed in; a note counts them.
"""

from __future__ import annotations

from typing import Any

import attrs
from sqlalchemy import BigInteger, case, func, select, type_coerce

import crmcore
from crmcore.store import days_between, tables

from .scope import ReportFilters, Scope, average_money, money, ratio

deals = tables.deals
customers = tables.customers
NONE = "(none)"
ALL = "(all)"
GROUPS = ("owner", "region", "pipeline")


@attrs.frozen
class WinLossOptions(ReportFilters):
    """Options of ``win-loss``: the common filters and ``by`` (owner, region or pipeline)."""

    by: str = attrs.field(default="owner", validator=attrs.validators.in_(GROUPS))


class WinLossReport(crmcore.Report):
    """Win rate, average deal size, cycle length and lost reasons."""

    name = "win-loss"
    description = "win rate, average deal size and cycle length by owner/region, lost reasons"
    options_type = WinLossOptions

    def run(self, ctx: crmcore.ReportContext, options: WinLossOptions) -> crmcore.ReportResult:
        scope = Scope(ctx, options, self.name)
        cur = scope.currency
        won, lost = scope.outcome(crmcore.StageOutcome.WON), scope.outcome(crmcore.StageOutcome.LOST)
        closed = [*scope.deal_filter(), deals.c.closed_at.is_not(None), *scope.in_range(deals.c.closed_at)]
        group = _group_column(options.by)
        # Sorted here, not by ORDER BY: NULLs and collations sort differently on each database.
        found = sorted(ctx.conn.execute(_summary(group, won, lost, closed).group_by(group)).all(),
                       key=lambda r: (r[0] is None, r[0] or ""))
        rows = [_row(name, *values, cur) for name, *values in found]
        # The total adds up the groups' exact sums and counts (no second pass over the deals).
        total = [sum(_number(r[i]) for r in found) for i in range(1, 7)]
        rows.append(_row(ALL, *total, cur))
        columns = (crmcore.Column(options.by, "str"), crmcore.Column("won", "int"), crmcore.Column("lost", "int"),
                   crmcore.Column("win_rate", "percent", "win rate"),
                   crmcore.Column("won_amount", "decimal", "won amount", cur),
                   crmcore.Column("avg_won", "decimal", "avg won deal", cur),
                   crmcore.Column("avg_lost", "decimal", "avg lost deal", cur),
                   crmcore.Column("avg_cycle_days", "float", "avg days to win"))
        reasons = _lost_reasons(scope, lost, closed)
        notes = scope.other_currencies_note(*scope.deal_filter(currency=False), deals.c.closed_at.is_not(None),
                                            *scope.in_range(deals.c.closed_at))
        return crmcore.ReportResult(
            title=f"Win/loss by {options.by} ({scope.describe()})", columns=columns, rows=tuple(rows),
            notes=tuple(notes),
            charts=(crmcore.Chart("bar", f"Win rate by {options.by}", options.by, ("win_rate",), exclude=(ALL,)),
                    crmcore.Chart("stacked-bar", f"Won and lost deals by {options.by}", options.by,
                                  ("won", "lost"), exclude=(ALL,))),
            sections=(reasons,))


def _group_column(by: str) -> Any:
    if by == "region":
        # A scalar subquery per group key would be per row; the region comes
        # through a join on the customer's primary key instead.
        return customers.c.region
    return deals.c[by]


def _summary(group: Any, won: Any, lost: Any, closed: list[Any]) -> Any:
    scaled = type_coerce(deals.c.amount, BigInteger)
    timed = won & (deals.c.closed_at >= deals.c.created_at)
    query = select(
        group,
        func.sum(case((won, 1), else_=0)), func.sum(case((lost, 1), else_=0)),
        func.sum(case((won, scaled), else_=0)), func.sum(case((lost, scaled), else_=0)),
        # A deal recorded after it closed (an import of history) has no cycle to measure.
        func.sum(case((timed, days_between(deals.c.created_at, deals.c.closed_at)))),
        func.sum(case((timed, 1), else_=0)),
    ).where(*closed, (won | lost))
    if group is customers.c.region:
        query = query.select_from(deals.join(customers, customers.c.id == deals.c.customer_id))
    return query


def _number(value: Any) -> Any:
    """A SUM as a Python number (NULL: 0; PostgreSQL and MariaDB hand back Decimal)."""
    if value is None:
        return 0
    return float(value) if isinstance(value, float) or not float(value).is_integer() else int(value)


def _row(name: Any, n_won: Any, n_lost: Any, won_scaled: Any, lost_scaled: Any, cycle_days: Any, timed: Any,
         currency: str) -> tuple[Any, ...]:
    n_won, n_lost, timed = int(n_won or 0), int(n_lost or 0), int(timed or 0)
    return (NONE if name is None else name, n_won, n_lost, ratio(n_won, n_won + n_lost),
            money(won_scaled, currency), average_money(won_scaled, n_won, currency),
            average_money(lost_scaled, n_lost, currency),
            round(float(cycle_days) / timed, 1) if timed else None)


def _lost_reasons(scope: Scope, lost: Any, closed: list[Any]) -> crmcore.ReportResult:
    scaled = type_coerce(deals.c.amount, BigInteger)
    reason = func.coalesce(deals.c.lost_reason, NONE)
    found = scope.ctx.conn.execute(
        select(reason, func.count(), func.sum(scaled)).where(*closed, lost).group_by(reason)).all()
    total = sum(int(n) for _, n, _ in found)
    ordered = sorted(found, key=lambda r: (-int(r[1]), r[0]))
    cur = scope.currency
    return crmcore.ReportResult(
        title="Lost reasons",
        columns=(crmcore.Column("reason", "str"), crmcore.Column("lost", "int"),
                 crmcore.Column("share", "percent"), crmcore.Column("amount", "decimal", None, cur)),
        rows=tuple((r, int(n), ratio(n, total), money(s, cur)) for r, n, s in ordered),
        charts=(crmcore.Chart("bar", "Lost deals by reason", "reason", ("lost",)),))
