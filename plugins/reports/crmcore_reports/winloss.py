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

from collections.abc import Callable
from typing import Any

import attrs
from sqlalchemy import BigInteger, Select, case, func, select, type_coerce
from sqlalchemy.sql import ColumnElement

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
        cells = _cells(scope, options.by)
        mine = {key[1:]: values for key, values in cells.items() if key[0] == cur}
        groups = _add_up(mine, lambda group, reason: group)
        # Sorted here, not by ORDER BY: NULLs and collations sort differently on each database.
        rows = [_row(cur, name, *groups[name]) for name in sorted(groups, key=lambda g: (g is None, g or ""))]
        rows.append(_row(cur, ALL, *_add_up(mine, lambda group, reason: ALL).get(ALL, (0,) * 6)))
        columns = (crmcore.Column(options.by, "str"), crmcore.Column("won", "int"), crmcore.Column("lost", "int"),
                   crmcore.Column("win_rate", "percent", "win rate"),
                   crmcore.Column("won_amount", "decimal", "won amount", cur),
                   crmcore.Column("avg_won", "decimal", "avg won deal", cur),
                   crmcore.Column("avg_lost", "decimal", "avg lost deal", cur),
                   crmcore.Column("avg_cycle_days", "float", "avg days to win"))
        others = _add_up({k: v for k, v in cells.items() if k[0] != cur}, lambda currency, group, reason: currency)
        listing = ", ".join(f"{v[0] + v[1]} in {code}" for code, v in sorted(others.items()))
        notes = ([f"Not included: deals in other currencies ({listing}); run with currency=CODE to see them."]
                 if others else [])
        return crmcore.ReportResult(
            title=f"Win/loss by {options.by} ({scope.describe()})", columns=columns, rows=tuple(rows),
            notes=tuple(notes),
            charts=(crmcore.Chart("bar", f"Win rate by {options.by}", options.by, ("win_rate",), exclude=(ALL,),
                                  behind="groups"),
                    crmcore.Chart("stacked-bar", f"Won and lost deals by {options.by}", options.by,
                                  ("won", "lost"), exclude=(ALL,), behind="groups")),
            sections=(_lost_reasons(_add_up(mine, lambda group, reason: reason), cur),))

    def customers_behind(self, ctx: crmcore.ReportContext, options: WinLossOptions, chart: str, x: str,
                         series: str | None) -> Select[Any] | None:
        """A group's bar (``(none)``: no owner or region): the customers of its closed deals
        (``won`` or ``lost`` only for those series; the win rate: both).  A lost reason's bar:
        the customers of the deals lost for that reason."""
        if chart not in ("groups", "reasons"):
            return None
        scope = Scope(ctx, options, self.name)
        won, lost = scope.outcome(crmcore.StageOutcome.WON), scope.outcome(crmcore.StageOutcome.LOST)
        closed = [*scope.deal_filter(), deals.c.closed_at.is_not(None), *scope.in_range(deals.c.closed_at)]
        if chart == "reasons":
            return select(deals.c.customer_id).where(*closed, lost, func.coalesce(deals.c.lost_reason, NONE) == x)
        outcome = {"won": won, "lost": lost}.get(series or "", won | lost)
        query = select(deals.c.customer_id).where(*closed, outcome,
                                                  func.coalesce(_group_column(options.by), NONE) == x)
        if options.by == "region":
            query = query.select_from(deals.join(customers, customers.c.id == deals.c.customer_id))
        return query


Cells = dict[tuple[Any, ...], tuple[Any, ...]]


def _cells(scope: Scope, by: str) -> Cells:
    """(currency, group, lost reason) -> (won, lost, won scaled, lost scaled, cycle days, deals timed).

    One pass over the closed deals; the groups, the total, the lost reasons
    and the note on other currencies are all sums over these few cells.
    """
    won, lost = scope.outcome(crmcore.StageOutcome.WON), scope.outcome(crmcore.StageOutcome.LOST)
    scaled = type_coerce(deals.c.amount, BigInteger)
    timed = won & (deals.c.closed_at >= deals.c.created_at)
    group = _group_column(by)
    reason = case((lost, func.coalesce(deals.c.lost_reason, NONE))).label("reason")
    query = select(
        deals.c.currency, group, reason,
        func.sum(case((won, 1), else_=0)), func.sum(case((lost, 1), else_=0)),
        func.sum(case((won, scaled), else_=0)), func.sum(case((lost, scaled), else_=0)),
        # A deal recorded after it closed (an import of history) has no cycle to measure.
        func.sum(case((timed, days_between(deals.c.created_at, deals.c.closed_at)))),
        func.sum(case((timed, 1), else_=0)),
    ).where(*scope.deal_filter(currency=False), deals.c.closed_at.is_not(None), *scope.in_range(deals.c.closed_at),
            won | lost).group_by(deals.c.currency, group, reason)
    if by == "region":
        # The region comes through a join on the customer's primary key.
        query = query.select_from(deals.join(customers, customers.c.id == deals.c.customer_id))
    return {(currency, g, r): tuple(_number(v) for v in values)
            for currency, g, r, *values in scope.ctx.conn.execute(query)}


def _add_up(cells: Cells, key: Callable[..., Any]) -> dict[Any, tuple[Any, ...]]:
    """The cells' measures summed per ``key(*cell key)``."""
    found: dict[Any, list[Any]] = {}
    for cell, values in cells.items():
        total = found.setdefault(key(*cell), [0] * len(values))
        for i, value in enumerate(values):
            total[i] += value
    return {k: tuple(v) for k, v in found.items()}


def _group_column(by: str) -> ColumnElement[Any]:
    column: ColumnElement[Any] = customers.c.region if by == "region" else deals.c[by]
    return column


def _number(value: Any) -> int | float:
    """A SUM as a Python number (NULL: 0; PostgreSQL and MariaDB hand back Decimal)."""
    if value is None:
        return 0
    return float(value) if isinstance(value, float) or not float(value).is_integer() else int(value)


def _row(currency: str, name: Any, n_won: float, n_lost: float, won_scaled: float, lost_scaled: float,
         cycle_days: float, timed: float) -> tuple[Any, ...]:
    n_won, n_lost, timed = int(n_won or 0), int(n_lost or 0), int(timed or 0)
    return (NONE if name is None else name, n_won, n_lost, ratio(n_won, n_won + n_lost),
            money(won_scaled, currency), average_money(won_scaled, n_won, currency),
            average_money(lost_scaled, n_lost, currency),
            round(float(cycle_days) / timed, 1) if timed else None)


def _lost_reasons(by_reason: dict[Any, tuple[Any, ...]], cur: str) -> crmcore.ReportResult:
    lost = {reason: values for reason, values in by_reason.items() if reason is not None}
    total = sum(v[1] for v in lost.values())
    ordered = sorted(lost.items(), key=lambda kv: (-kv[1][1], kv[0]))
    return crmcore.ReportResult(
        title="Lost reasons",
        columns=(crmcore.Column("reason", "str"), crmcore.Column("lost", "int"),
                 crmcore.Column("share", "percent"), crmcore.Column("amount", "decimal", None, cur)),
        rows=tuple((reason, int(v[1]), ratio(v[1], total), money(v[3], cur)) for reason, v in ordered),
        charts=(crmcore.Chart("bar", "Lost deals by reason", "reason", ("lost",), behind="reasons"),))
