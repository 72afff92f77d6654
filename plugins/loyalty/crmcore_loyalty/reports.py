"""Loyalty reports: liability, tier distribution and movements, earn/burn by month, top members.

All aggregation is SQL; months are grouped with ``EXTRACT`` (portable) and
labelled ``YYYY-MM`` in Python.
"""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal
from typing import Any

import attrs
from sqlalchemy import Join, Select, and_, case, extract, func, literal, select
from sqlalchemy.sql import ColumnElement

import crmcore
from crmcore.store import tables

from .sql import utc
from .tables import tier_changes

ledger, accounts, allocations = tables.loyalty_ledger, tables.loyalty_accounts, tables.loyalty_allocations
CREDIT_KINDS = ("earn", "bonus")


def _month(year: Any, month: Any) -> str:
    return f"{int(year):04d}-{int(month):02d}"


def _year_month(label: str) -> tuple[int, int]:
    """(year, month) of a ``YYYY-MM`` label (a chart's category)."""
    return crmcore.month_of_label(label)


def _in_month(column: Any, label: str) -> ColumnElement[bool]:
    """``column`` falls in the month ``label`` (the same EXTRACT the reports group by)."""
    year, month = _year_month(label)
    return and_(extract("year", column) == year, extract("month", column) == month)


def _remaining() -> tuple[Join, ColumnElement[int]]:
    """(join source, remaining points expression) over every batch of the ledger."""
    used = select(allocations.c.batch_id, func.sum(allocations.c.points).label("used")).group_by(
        allocations.c.batch_id).subquery("used")
    return (ledger.outerjoin(used, used.c.batch_id == ledger.c.id),
            ledger.c.points - func.coalesce(used.c.used, 0))


@attrs.frozen
class LiabilityOptions:
    """:ivar scheme: the points scheme. :ivar point_value: money per point. :ivar currency: its currency."""

    scheme: str = "points"
    point_value: Decimal = Decimal("0.01")
    currency: str | None = crmcore.currency_option()


class LiabilityReport(crmcore.Report):
    name = "loyalty-liability"
    description = "outstanding points and their money value by expiry month"
    options_type = LiabilityOptions

    def run(self, ctx: crmcore.ReportContext, options: LiabilityOptions) -> crmcore.ReportResult:
        """Outstanding points and their value by expiry month.

        A batch past its expiry at ``as_of`` whose points are still outstanding
        (the expiry job has not run since) is past due, also when it expired
        earlier in the as-of month: that month then has two rows, the part
        already past due first.
        """
        source, remaining = _remaining()
        year, month = extract("year", ledger.c.expires_at), extract("month", ledger.c.expires_at)
        past = case((ledger.c.expires_at <= utc(ctx.as_of), 1), else_=0)
        query = select(year, month, past, func.count(), func.sum(remaining)).select_from(source).where(
            ledger.c.scheme == options.scheme, ledger.c.points > 0, remaining > 0,
            ledger.c.occurred_at <= utc(ctx.as_of)).group_by(year, month, past)
        rows = []
        for y, m, overdue, batches, points in ctx.conn.execute(query):
            label = "never" if y is None else _month(y, m)
            rows.append((label, int(batches), int(points), int(points) * options.point_value, bool(overdue)))
        rows.sort(key=lambda r: (r[0] == "never", r[0], not r[4]))
        total = sum(r[2] for r in rows)
        notes = [f"{total:,} points outstanding, worth {total * options.point_value:,} "
                 f"{options.currency or ''} at {options.point_value} per point".rstrip()]
        due = sum(r[2] for r in rows if r[4])
        if due:
            notes.append(f"{due:,} points of these are past their expiry as of {ctx.as_of:%Y-%m-%d %H:%M} UTC: "
                         "run `crm loyalty expire` to expire them.")
        return crmcore.ReportResult(
            title=f"Loyalty liability ({options.scheme})",
            columns=(crmcore.Column("expires", title="expiry month"), crmcore.Column("batches", "int"),
                     crmcore.Column("points", "int"), crmcore.Column("value", "decimal"),
                     crmcore.Column("past_due", "str", "past due (run expire)")),
            rows=tuple((label, b, p, v, "yes" if overdue else "") for label, b, p, v, overdue in rows),
            charts=(crmcore.Chart("bar", "Outstanding points by expiry month", x="expires", y=("points",),
                                  behind="expiry"),),
            notes=tuple(notes))

    def customers_behind(self, ctx: crmcore.ReportContext, options: LiabilityOptions, chart: str, x: str,
                         series: str | None) -> Select[Any] | None:
        """An expiry month's bar (``never``: no expiry): the customers holding its outstanding points."""
        if chart != "expiry":
            return None
        source, remaining = _remaining()
        month = ledger.c.expires_at.is_(None) if x == "never" else _in_month(ledger.c.expires_at, x)
        return select(ledger.c.customer_id).select_from(source).where(
            ledger.c.scheme == options.scheme, ledger.c.points > 0, remaining > 0,
            ledger.c.occurred_at <= utc(ctx.as_of), month)


@attrs.frozen
class TierOptions:
    """:ivar scheme: the tier scheme. :ivar days: the movements window, ending at as_of."""

    scheme: str = "tiers"
    days: int = attrs.field(default=90, validator=(attrs.validators.ge(1), attrs.validators.le(36_600)))


class TierDistributionReport(crmcore.Report):
    name = "loyalty-tiers"
    description = "members per tier now, and tier movements (up, down) over the last days"
    options_type = TierOptions

    def run(self, ctx: crmcore.ReportContext, options: TierOptions) -> crmcore.ReportResult:
        """Members per tier and the tier movements in the window."""
        members: dict[str, int] = dict(ctx.conn.execute(select(accounts.c.tier, func.count()).where(
            accounts.c.scheme == options.scheme, accounts.c.tier.is_not(None)).group_by(accounts.c.tier)).all())
        since = utc(ctx.as_of - timedelta(days=options.days))
        window = and_(tier_changes.c.scheme == options.scheme, tier_changes.c.changed_at > since,
                      tier_changes.c.changed_at <= utc(ctx.as_of))
        entered: dict[str, int] = dict(ctx.conn.execute(select(tier_changes.c.new, func.count()).where(
            window, tier_changes.c.new.is_not(None)).group_by(tier_changes.c.new)).all())
        left: dict[str, int] = dict(ctx.conn.execute(select(tier_changes.c.old, func.count()).where(
            window, tier_changes.c.old.is_not(None)).group_by(tier_changes.c.old)).all())
        order = self._levels(ctx, options.scheme)
        names = order + sorted((set(members) | set(entered) | set(left)) - set(order))
        rows = tuple((n, int(members.get(n, 0)), int(entered.get(n, 0)), int(left.get(n, 0))) for n in names)
        return crmcore.ReportResult(
            title=f"Loyalty tiers ({options.scheme})",
            columns=(crmcore.Column("tier"), crmcore.Column("members", "int"),
                     crmcore.Column("entered", "int", f"entered ({options.days} d)"),
                     crmcore.Column("left", "int", f"left ({options.days} d)")),
            rows=rows, charts=(crmcore.Chart("bar", "Members per tier", x="tier", y=("members",), behind="tiers"),))

    def customers_behind(self, ctx: crmcore.ReportContext, options: TierOptions, chart: str, x: str,
                         series: str | None) -> Select[Any] | None:
        """A tier's bar: the members in that tier now."""
        if chart != "tiers":
            return None
        return select(accounts.c.customer_id).where(accounts.c.scheme == options.scheme, accounts.c.tier == x)

    def _levels(self, ctx: crmcore.ReportContext, scheme: str) -> list[str]:
        """The scheme's level names, lowest first, when it has levels (``earn_multipliers``)."""
        registry = ctx.uow.crm.loyalty.registry
        if scheme not in registry:
            return []
        found = registry.get(scheme)
        levels = getattr(found, "earn_multipliers", None)  # a tiers-like scheme (duck-typed)
        return list(levels(ctx.uow.crm.loyalty.options(found))) if levels is not None else []


@attrs.frozen
class EarnBurnOptions:
    """:ivar scheme: the points scheme. :ivar months: calendar months back from as_of."""

    scheme: str = "points"
    months: int = 12


class EarnBurnReport(crmcore.Report):
    name = "loyalty-earn-burn"
    description = "points earned, redeemed, expired, reversed and adjusted per month"
    options_type = EarnBurnOptions

    def run(self, ctx: crmcore.ReportContext, options: EarnBurnOptions) -> crmcore.ReportResult:
        """Points earned, redeemed, expired, reversed and adjusted per month."""
        first = ctx.as_of.year * 12 + ctx.as_of.month - 1 - (options.months - 1)
        start = ctx.as_of.replace(year=first // 12, month=first % 12 + 1, day=1, hour=0, minute=0, second=0,
                                  microsecond=0)
        year, month = extract("year", ledger.c.occurred_at), extract("month", ledger.c.occurred_at)

        def total(condition: ColumnElement[bool]) -> ColumnElement[int]:
            return func.sum(case((condition, ledger.c.points), else_=0))

        query = select(year, month, total(ledger.c.kind.in_(CREDIT_KINDS)),
                       total(ledger.c.kind == "redeem"), total(ledger.c.kind == "expire"),
                       total(ledger.c.kind == "reverse"), total(ledger.c.kind == "adjust"),
                       func.sum(ledger.c.points)).where(
            ledger.c.scheme == options.scheme, ledger.c.occurred_at >= utc(start),
            ledger.c.occurred_at <= utc(ctx.as_of)).group_by(year, month).order_by(year, month)
        rows = tuple((_month(y, m), *(int(v) for v in values)) for y, m, *values in ctx.conn.execute(query))
        return crmcore.ReportResult(
            title=f"Points earned and burned by month ({options.scheme})",
            columns=(crmcore.Column("month"), crmcore.Column("earned", "int"), crmcore.Column("redeemed", "int"),
                     crmcore.Column("expired", "int"), crmcore.Column("reversed", "int"),
                     crmcore.Column("adjusted", "int"), crmcore.Column("net", "int")),
            rows=rows,
            charts=(crmcore.Chart("line", "Earn and burn", x="month", y=("earned", "redeemed", "expired"),
                                  behind="months"),))

    def customers_behind(self, ctx: crmcore.ReportContext, options: EarnBurnOptions, chart: str, x: str,
                         series: str | None) -> Select[Any] | None:
        """A month's point: the customers with ledger entries of that series (``earned``: earn and
        bonus; ``redeemed``; ``expired``) in that month, by as_of."""
        if chart != "months":
            return None
        kinds = {"earned": CREDIT_KINDS, "redeemed": ("redeem",), "expired": ("expire",)}.get(series or "")
        if kinds is None:
            raise crmcore.ValidationError.single("series", "one of earned, redeemed, expired", "report")
        return select(ledger.c.customer_id).where(ledger.c.scheme == options.scheme, ledger.c.kind.in_(kinds),
                                                  _in_month(ledger.c.occurred_at, x),
                                                  ledger.c.occurred_at <= utc(ctx.as_of))


@attrs.frozen
class TopOptions:
    """:ivar scheme: the points scheme. :ivar limit: members shown. :ivar tier_scheme: whose tier to show."""

    scheme: str = "points"
    limit: int = 20
    tier_scheme: str = "tiers"


class TopMembersReport(crmcore.Report):
    name = "loyalty-top-members"
    description = "members with the most points (balance, earned in total, tier)"
    options_type = TopOptions

    def run(self, ctx: crmcore.ReportContext, options: TopOptions) -> crmcore.ReportResult:
        """The members with the highest balances."""
        rows = tuple((int(i), n, int(b), int(e), t) for i, n, b, e, t in ctx.conn.execute(_top(ctx, options)))
        return crmcore.ReportResult(
            title=f"Top members ({options.scheme})",
            columns=(crmcore.Column("customer_id", "int"), crmcore.Column("name"), crmcore.Column("balance", "int"),
                     crmcore.Column("earned", "int", "earned (all time)"), crmcore.Column("tier")),
            rows=rows, charts=(crmcore.Chart("bar", "Top balances", x="name", y=("balance",), behind="top"),))

    def customers_behind(self, ctx: crmcore.ReportContext, options: TopOptions, chart: str, x: str,
                         series: str | None) -> Select[Any] | None:
        """A member's bar: the top member(s) of that name (two members may share one)."""
        if chart != "top":
            return None
        top = _top(ctx, options).subquery("top")
        return select(top.c.id).where(top.c.name == x)


def _top(ctx: crmcore.ReportContext, options: TopOptions) -> Select[Any]:
    """The members with the highest balances: id, name, balance, earned, tier."""
    customers = tables.customers
    tier = accounts.alias("tier")
    earned = select(ledger.c.customer_id, func.sum(ledger.c.points).label("earned")).where(
        ledger.c.scheme == options.scheme, ledger.c.kind.in_(CREDIT_KINDS),
        ledger.c.occurred_at <= utc(ctx.as_of)).group_by(ledger.c.customer_id).subquery()
    query = select(customers.c.id, customers.c.name, accounts.c.balance, func.coalesce(earned.c.earned, 0),
                   tier.c.tier).select_from(
        accounts.join(customers, customers.c.id == accounts.c.customer_id)
        .outerjoin(earned, earned.c.customer_id == accounts.c.customer_id)
        .outerjoin(tier, and_(tier.c.customer_id == accounts.c.customer_id,
                              tier.c.scheme == literal(options.tier_scheme)))).where(
        accounts.c.scheme == options.scheme, accounts.c.balance > 0).order_by(
        accounts.c.balance.desc(), customers.c.id).limit(options.limit)
    return query


REPORTS = (LiabilityReport, TierDistributionReport, EarnBurnReport, TopMembersReport)
