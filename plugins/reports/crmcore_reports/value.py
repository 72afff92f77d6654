"""The ``customer-value`` report: revenue concentration, order value, purchase frequency.

Revenue is won deals (configured outcome ``won``) closed within
``start``/``end`` and by ``as_of``, in one currency; an "order" is one such deal.

Main table, the Pareto curve: customers with revenue ranked from the highest
(ties: lower customer id first) and cut into 10 deciles of rank: decile ``d``
holds the ranks ``r`` with ``floor((r - 1) * 10 / n) + 1 = d``, so the top
10 % is the first ``ceil(n / 10)`` customers.  Per decile: customers,
revenue, its share of all revenue and the cumulative share (the curve).

Section "Summary": customers, orders, revenue, average order value (revenue
/ orders, rounded half-up to the minor unit), orders per customer, and the
revenue share of the top 10 % and top 20 %.

Section "Purchase frequency": customers with 1, 2, 3, 4 and 5+ orders.
"""

from __future__ import annotations


import attrs
from typing import Any

from sqlalchemy import BigInteger, Select, case, func, select, type_coerce

import crmcore
from crmcore.store import tables, unindexed

from .scope import ReportFilters, Scope, average_money, money, ratio

deals = tables.deals
FREQUENCY_BINS = ("1", "2", "3", "4", "5+")


@attrs.frozen
class ValueOptions(ReportFilters):
    """Options of ``customer-value``: the common filters."""


class CustomerValueReport(crmcore.Report):
    """Revenue concentration (top 10/20 %, Pareto), average order value, purchase frequency."""

    name = "customer-value"
    description = "revenue concentration (top 10%/20%, Pareto curve), average order value, purchase frequency"
    options_type = ValueOptions

    def run(self, ctx: crmcore.ReportContext, options: ValueOptions) -> crmcore.ReportResult:
        scope = Scope(ctx, options, self.name)
        cur = scope.currency
        by_currency = _grids(scope)
        grid = by_currency.pop(cur, {})
        deciles = {d: (sum(c for (dd, _), (c, _, _) in grid.items() if dd == d),
                       sum(v for (dd, _), (_, v, _) in grid.items() if dd == d)) for d in range(1, 11)}
        total = sum(v for _, v in deciles.values())
        rows, cumulative = [], 0
        for d in range(1, 11):
            count, scaled = deciles[d]
            cumulative += scaled
            rows.append((f"{d * 10}%", count, money(scaled, cur), ratio(scaled, total), ratio(cumulative, total)))
        columns = (crmcore.Column("decile", "str", "top customers"), crmcore.Column("customers", "int"),
                   crmcore.Column("revenue", "decimal", None, cur), crmcore.Column("share", "percent"),
                   crmcore.Column("cumulative_share", "percent", "cumulative share"))
        others = {code: sum(o for _, _, o in cells.values()) for code, cells in sorted(by_currency.items())}
        listing = ", ".join(f"{n} in {code}" for code, n in others.items())
        notes = ((f"Not included: deals in other currencies ({listing}); run with currency=CODE to see them.",)
                 if others else ())
        return crmcore.ReportResult(
            title=f"Customer value ({scope.describe()})", columns=columns, rows=tuple(rows), notes=notes,
            charts=(crmcore.Chart("line", "Pareto curve: cumulative revenue share by top customers", "decile",
                                  ("cumulative_share",), behind="deciles"),),
            sections=(_summary(grid, deciles, total, cur), _frequency(grid)))

    def customers_behind(self, ctx: crmcore.ReportContext, options: ValueOptions, chart: str, x: str,
                         series: str | None) -> Select[Any] | None:
        """A point of the Pareto curve (``30%``): the customers of the top deciles up to it, whose
        revenue the cumulative share sums.  A bar of the purchase frequency (``2``, ``5+``): the
        customers with that many orders."""
        if chart not in ("deciles", "orders"):
            return None
        scope = Scope(ctx, options, self.name)
        ranked = _ranked(scope)
        mine = ranked.c.currency == scope.currency
        if chart == "orders":
            if x not in FREQUENCY_BINS:
                raise crmcore.ValidationError.single("x", f"one of {', '.join(FREQUENCY_BINS)}", "report")
            capped = case((ranked.c.orders >= 5, 5), else_=ranked.c.orders)
            return select(ranked.c.customer_id).where(mine, capped == FREQUENCY_BINS.index(x) + 1)
        deciles = [f"{d * 10}%" for d in range(1, 11)]
        if x not in deciles:
            raise crmcore.ValidationError.single("x", "one of 10% to 100%", "report")
        return select(ranked.c.customer_id).where(mine, _decile(ranked) <= deciles.index(x) + 1)


Grid = dict[tuple[int, int], tuple[int, int, int]]


def _grids(scope: Scope) -> dict[str, Grid]:
    """Per currency: (decile, orders capped at 5) -> (customers, revenue scaled, orders).

    One pass over the won deals: per (currency, customer) revenue and orders;
    ranked by revenue within the currency (ties: lower id first) into
    deciles; then counted per (currency, decile, capped orders).  The deciles,
    the frequency distribution, the summary and the note on other currencies
    are all sums over these few cells.
    """
    ranked = _ranked(scope)
    decile = _decile(ranked).label("decile")
    capped = case((ranked.c.orders >= 5, 5), else_=ranked.c.orders).label("capped")
    query = (select(ranked.c.currency, decile, capped, func.count(), func.sum(ranked.c.revenue),
                    func.sum(ranked.c.orders))
             .group_by(ranked.c.currency, decile, capped))
    found: dict[str, Grid] = {}
    for currency, d, k, c, v, o in scope.ctx.conn.execute(query):
        found.setdefault(currency, {})[int(d), int(k)] = (int(c), int(v or 0), int(o or 0))
    return found


def _decile(ranked: Any) -> Any:
    """The decile of a ranked customer: ``floor((r - 1) * 10 / n) + 1``."""
    return (ranked.c.r - 1) * 10 // ranked.c.n + 1


def _ranked(scope: Scope) -> Any:
    """Per (currency, customer) revenue and orders, ranked by revenue within the currency (ties:
    lower id first), with ``n`` the currency's customers: a subquery."""
    customer = unindexed(deals.c.customer_id)  # a scan and a sort, not an index walk over most rows
    per_customer = (select(deals.c.currency, customer.label("customer_id"),
                           func.sum(type_coerce(deals.c.amount, BigInteger)).label("revenue"),
                           func.count().label("orders"))
                    .where(*scope.deal_filter(currency=False), scope.outcome(crmcore.StageOutcome.WON),
                           deals.c.closed_at.is_not(None), *scope.in_range(deals.c.closed_at))
                    # Customer first: the sort then compares integers and seldom reaches the currency text.
                    .group_by(customer, deals.c.currency)).subquery("customer_revenue")
    by = per_customer.c.currency
    rank = func.row_number().over(order_by=(per_customer.c.revenue.desc(), per_customer.c.customer_id),
                                  partition_by=by)
    return select(per_customer.c.currency, per_customer.c.customer_id, per_customer.c.revenue,
                  per_customer.c.orders, rank.label("r"),
                  func.count().over(partition_by=by).label("n")).subquery("ranked")


def _summary(grid: Grid, deciles: dict[int, tuple[int, int]], total: int, cur: str) -> crmcore.ReportResult:
    customers = sum(c for c, _, _ in grid.values())
    orders = sum(o for _, _, o in grid.values())
    top = [sum(deciles[d][1] for d in range(1, k + 1)) for k in (1, 2)]
    row = (customers, orders, money(total, cur), average_money(total, orders, cur), ratio(orders, customers),
           ratio(top[0], total), ratio(top[1], total))
    return crmcore.ReportResult(
        title=f"Summary ({cur})",
        columns=(crmcore.Column("customers", "int"), crmcore.Column("orders", "int"),
                 crmcore.Column("revenue", "decimal", None, cur),
                 crmcore.Column("average_order_value", "decimal", "average order value", cur),
                 crmcore.Column("orders_per_customer", "decimal", "orders per customer"),
                 crmcore.Column("top10_share", "percent", "top 10% share"),
                 crmcore.Column("top20_share", "percent", "top 20% share")),
        rows=(row,))


def _frequency(grid: Grid) -> crmcore.ReportResult:
    found = {k: sum(c for (_, kk), (c, _, _) in grid.items() if kk == k) for k in range(1, 6)}
    total = sum(found.values())
    return crmcore.ReportResult(
        title="Purchase frequency",
        columns=(crmcore.Column("orders", "str", "orders per customer"), crmcore.Column("customers", "int"),
                 crmcore.Column("share", "percent")),
        rows=tuple((label, found[k], ratio(found[k], total)) for k, label in enumerate(FREQUENCY_BINS, 1)),
        charts=(crmcore.Chart("bar", "Customers by number of orders", "orders", ("customers",), behind="orders"),))
