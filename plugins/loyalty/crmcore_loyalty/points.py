"""The ``points`` loyalty scheme: points per unit of a won deal's amount.

A won deal earns ``amount * points_per_unit * multipliers`` points, rounded to
a whole number (``down`` by default, or ``half_up``), if its amount is at
least ``minimum_amount``; then capped per deal (``cap_per_deal``) and per
customer and calendar period (``cap_per_period`` points per ``period``,
counting what the customer already earned in that period).  Multipliers
multiply: the customer's tier benefit (``earn_multiplier`` of the tier it
holds in ``tier_scheme``), and ``[loyalty.points.multipliers]`` by
``region``, ``channel`` (the customer's source) and ``segment``
(``"strategy:segment"`` in the strategy's latest run).

Points expire ``expiry_days`` after they were earned (the deal's
``closed_at``), or never with ``expiry_days = 0``.  The amount is taken in the
deal's own currency; the scheme does not convert.

Everything is one SQL expression (:meth:`PointsScheme.earn_select`), exact
integer arithmetic on the stored amount (an integer count of 1/10,000
units): the batch earn job runs it as one ``INSERT ... SELECT``, and a single
won deal runs the same select for that deal, so both paths agree.
"""

from __future__ import annotations

import math
from datetime import datetime, timedelta
from decimal import ROUND_DOWN, ROUND_HALF_UP, Decimal
from typing import TYPE_CHECKING, Any, TypeVar, Unpack

import attrs
from sqlalchemy import BigInteger, Integer, and_, bindparam, case, func, literal, select, type_coerce
from sqlalchemy.sql import ColumnElement, FromClause, Select

import crmcore
from crmcore.store import MONEY_SCALE, UTCDateTime, direct, tables

from .sql import days_later, int_div, period_key, utc

if TYPE_CHECKING:
    # Not exported from ``crmcore`` (yet): the type of the context schemes receive.
    from crmcore.loyalty import LoyaltyContext

ROUNDING = {"down": ROUND_DOWN, "half_up": ROUND_HALF_UP}
DIMENSIONS = ("region", "channel", "segment")
# Largest amount (in currency units) whose points are computed without
# overflowing a signed 64-bit integer; configurations allowing less are refused.
MIN_SAFE_AMOUNT = 10**9
# The validator serves ``int`` and ``int | None`` fields (attrs.Attribute is invariant).
_Days = TypeVar("_Days", int, int | None)


def _not_negative(instance: object, attribute: attrs.Attribute[Decimal], value: Decimal) -> None:
    if value < 0:
        raise ValueError(f"{attribute.name} must not be negative, got {value}")


def _rounding_mode(instance: object, attribute: attrs.Attribute[str], value: str) -> None:
    if value not in ROUNDING:
        raise ValueError(f"{attribute.name} must be one of {', '.join(ROUNDING)}, got {value!r}")


def _days_or_none(instance: object, attribute: attrs.Attribute[_Days], value: _Days) -> None:
    if value is not None and value < 0:
        raise ValueError(f"{attribute.name} must be a number of days (0: never expire), got {value}")


def _cap(instance: object, attribute: attrs.Attribute[int | None], value: int | None) -> None:
    if value is not None and value <= 0:
        raise ValueError(f"{attribute.name} must be a positive number of points (leave it out for no cap), "
                         f"got {value}")


def _period(instance: object, attribute: attrs.Attribute[str], value: str) -> None:
    if value not in ("month", "year"):
        raise ValueError(f"{attribute.name} must be month or year, got {value!r}")


def _multipliers(instance: object, attribute: attrs.Attribute[dict[str, dict[str, Decimal]]],
                 value: dict[str, dict[str, Decimal]]) -> None:
    for dimension, table in value.items():
        if dimension not in DIMENSIONS:
            raise ValueError(f"{attribute.name}: unknown dimension {dimension!r} (use {', '.join(DIMENSIONS)})")
        for key, factor in table.items():
            if factor <= 0:
                raise ValueError(f"{attribute.name}.{dimension}.{key} must be positive, got {factor}")
            if dimension == "segment" and ":" not in key:
                raise ValueError(f"{attribute.name}.segment key {key!r} must be 'strategy:segment'")


@attrs.frozen
class PointsOptions:
    """Options of the ``points`` scheme (``[loyalty.points]`` in crm.toml).

    Decimals are given as text in TOML (``points_per_unit = "0.5"``): the core
    refuses floats for exact values.

    :ivar points_per_unit: points per 1 unit of the deal's amount.
    :ivar rounding: ``"down"`` (default) or ``"half_up"``.
    :ivar minimum_amount: deals below this amount earn nothing.
    :ivar expiry_days: days until earned points expire; None or 0 = never.
    :ivar multipliers: ``{dimension: {value: factor}}`` for ``region``,
        ``channel`` and ``segment`` (``"rfm:champions"``).
    :ivar tier_scheme: the scheme whose tier benefits (``earn_multiplier``)
        apply; ``"none"`` for none.
    :ivar cap_per_deal: most points one deal earns (None: no cap).
    :ivar cap_per_period: most points a customer earns per ``period``.
    :ivar period: ``"month"`` or ``"year"`` (calendar, UTC) for ``cap_per_period``.
    """

    points_per_unit: Decimal = attrs.field(default=Decimal(1), validator=_not_negative)
    rounding: str = attrs.field(default="down", validator=_rounding_mode)
    minimum_amount: Decimal = attrs.field(default=Decimal(0), validator=_not_negative)
    expiry_days: int | None = attrs.field(default=365, validator=_days_or_none)
    multipliers: dict[str, dict[str, Decimal]] = attrs.field(factory=dict, validator=_multipliers)
    tier_scheme: str = "tiers"
    cap_per_deal: int | None = attrs.field(default=None, validator=_cap)
    cap_per_period: int | None = attrs.field(default=None, validator=_cap)
    period: str = attrs.field(default="month", validator=_period)


class PointsScheme(crmcore.LoyaltyScheme):
    """Points proportional to the amount of won deals."""

    name = "points"
    description = "points per unit of won deal amount: rounding, minimum, multipliers, caps, expiry"
    options_type = PointsOptions

    def __init__(self) -> None:
        super().__init__()
        # The one-deal select per options object (built once per CRM, like this scheme):
        # (the options, the tier benefits it was built with, the statement).
        self._one: dict[int, tuple[PointsOptions, dict[str, Decimal], Select[Unpack[tuple[Any, ...]]]]] = {}

    def points_for_deal(self, uow: crmcore.UnitOfWork, deal: crmcore.Deal, options: PointsOptions) -> int:
        """Points ``deal`` earns, by the same select as the batch path (:meth:`earn_select`).

        Without segment multipliers (whose latest run is part of the join) the select is built
        once with the deal and ``as_of`` bound, so a single won deal pays one execution.
        """
        ctx = uow.crm.loyalty.context(uow)
        if options.multipliers.get("segment"):
            row = uow.conn.execute(self.earn_select(ctx, options, [tables.deals.c.id == deal.id])).first()
        else:
            row = direct.run(uow.conn, self._one_deal(ctx, options), {"earn_deal": deal.id,
                                                                       "earn_as_of": ctx.as_of}).first()
        return int(row.points) if row is not None else 0

    def _one_deal(self, ctx: LoyaltyContext, options: PointsOptions) -> Select[Unpack[tuple[Any, ...]]]:
        """:meth:`earn_select` for the deal ``:earn_deal`` as of ``:earn_as_of``, built once.

        The tier join is always made (for one deal it costs nothing, and a customer without a
        tier gets the factor 1, as without the join); rebuilt if the tier benefits changed.
        """
        tiers = self._tier_multipliers(ctx, options)
        cached = self._one.get(id(options))
        if cached is not None and cached[0] is options and cached[1] == tiers:
            return cached[2]
        statement = self._select(ctx, options, [tables.deals.c.id == bindparam("earn_deal", type_=Integer)],
                                 bindparam("earn_as_of", type_=UTCDateTime), join_tiers=True)
        self._one[id(options)] = (options, tiers, statement)
        return statement

    def expires_at(self, uow: crmcore.UnitOfWork, earned_at: datetime, options: PointsOptions) -> datetime | None:
        """``earned_at`` plus ``expiry_days``, or None when points never expire."""
        if not options.expiry_days:  # None or 0: never
            return None
        return earned_at + timedelta(days=options.expiry_days)

    def earn_select(self, ctx: LoyaltyContext, options: PointsOptions, where: list[ColumnElement[bool]]
                   ) -> Select[Unpack[tuple[Any, ...]]]:
        """deal_id, customer_id, points, occurred_at, expires_at for the deals matching ``where``."""
        return self._select(ctx, options, where, utc(ctx.as_of))

    def _select(self, ctx: LoyaltyContext, options: PointsOptions, where: list[ColumnElement[bool]],
                as_of: ColumnElement[datetime], join_tiers: bool | None = None) -> Select[Unpack[tuple[Any, ...]]]:
        """:meth:`earn_select` with ``as_of`` as an expression (a bound parameter for a statement
        built once); ``join_tiers``: join the tier always (True) or when somebody holds one (None)."""
        deals = tables.deals
        source, factors = self._factors(ctx, options, join_tiers)
        numerator, denominator = _ratio(options.points_per_unit)
        for _, scale, _ in factors:
            denominator *= scale
        _check_range(numerator, factors)
        amount = type_coerce(deals.c.amount, BigInteger)  # the stored integer: 1/10,000 units
        product = amount * literal(numerator, BigInteger)
        for expr, _, _ in factors:
            product = product * expr
        divisor = MONEY_SCALE * denominator
        points: ColumnElement[int] = (int_div(product, literal(divisor, BigInteger)) if options.rounding == "down"
                  else int_div(product * 2 + divisor, literal(2 * divisor, BigInteger)))
        minimum = math.ceil(options.minimum_amount * MONEY_SCALE)
        points = case((amount < minimum, literal(0, BigInteger)), else_=points)
        if options.cap_per_deal:
            points = case((points > options.cap_per_deal, literal(options.cap_per_deal, BigInteger)), else_=points)
        occurred = func.coalesce(deals.c.closed_at, as_of)
        expires = days_later(occurred, options.expiry_days) if options.expiry_days else literal(None, UTCDateTime)
        query = select(deals.c.id.label("deal_id"), deals.c.customer_id, points.label("points"),
                       occurred.label("occurred_at"), expires.label("expires_at")).select_from(source).where(*where)
        return self._period_cap(query, options) if options.cap_per_period else query

    # -- pieces of the select ------------------------------------------------------
    def _factors(self, ctx: LoyaltyContext, options: PointsOptions, join_tiers: bool | None = None
                 ) -> tuple[FromClause, list[tuple[ColumnElement[int], int, int]]]:
        """Joins and integer multiplier factors: (CASE numerator, common denominator) per dimension."""
        deals, customers = tables.deals, tables.customers
        source: FromClause = deals
        factors: list[tuple[ColumnElement[int], int, int]] = []
        by_column = {"region": customers.c.region, "channel": customers.c.source}
        if any(options.multipliers.get(d) for d in by_column):
            source = source.join(customers, customers.c.id == deals.c.customer_id)
        for dimension, column in by_column.items():
            if options.multipliers.get(dimension):
                factors.append(_case_factor(column, options.multipliers[dimension]))
        tiers = self._tier_multipliers(ctx, options)
        # Join the tier only when somebody holds a tier with a benefit: same result, cheaper
        # (a statement built once for one deal always joins: its result must not go stale).
        if tiers and (join_tiers or join_tiers is None and self._tier_held(ctx, options, tiers)):
            account = tables.loyalty_accounts.alias("tier_account")
            source = source.outerjoin(account, and_(account.c.customer_id == deals.c.customer_id,
                                                    account.c.scheme == options.tier_scheme))
            factors.append(_case_factor(account.c.tier, tiers))
        by_strategy: dict[str, dict[str, Decimal]] = {}
        for key, factor in options.multipliers.get("segment", {}).items():
            strategy, _, segment = key.partition(":")
            by_strategy.setdefault(strategy, {})[segment] = factor
        for strategy, table in sorted(by_strategy.items()):
            run_id = ctx.conn.execute(select(func.max(tables.segment_runs.c.id)).where(
                tables.segment_runs.c.strategy == strategy)).scalar()
            if run_id is None:  # never run: nobody is in its segments
                continue
            member = tables.segment_memberships.alias(f"seg_{len(factors)}")
            source = source.outerjoin(member, and_(member.c.run_id == run_id,
                                                   member.c.customer_id == deals.c.customer_id))
            factors.append(_case_factor(member.c.segment, table))
        return source, factors

    def _tier_held(self, ctx: LoyaltyContext, options: PointsOptions, tiers: dict[str, Decimal]) -> bool:
        accounts = tables.loyalty_accounts
        return ctx.conn.execute(select(accounts.c.customer_id).where(
            accounts.c.scheme == options.tier_scheme, accounts.c.tier.in_(list(tiers))).limit(1)).first() is not None

    def _tier_multipliers(self, ctx: LoyaltyContext, options: PointsOptions) -> dict[str, Decimal]:
        registry = ctx.uow.crm.loyalty.registry
        if options.tier_scheme in ("", "none") or options.tier_scheme not in registry:
            return {}
        tiers = registry.get(options.tier_scheme)
        benefits = getattr(tiers, "earn_multipliers", None)
        if benefits is None:
            return {}
        return {k: v for k, v in benefits(ctx.uow.crm.loyalty.options(tiers)).items() if v != 1}

    def _period_cap(self, query: Select[Unpack[tuple[Any, ...]]], options: PointsOptions
                   ) -> Select[Unpack[tuple[Any, ...]]]:
        """At most ``cap_per_period`` points per customer and period, earliest deals first.

        Before the cap is reached the running total of uncapped points equals
        the running total of capped ones, so one window sum decides each deal:
        ``max(0, min(points, cap - already - earlier))``.
        """
        s = query.subquery("uncapped")
        period = period_key(s.c.occurred_at, options.period)
        earlier = func.sum(s.c.points).over(partition_by=(s.c.customer_id, period),
                                            order_by=(s.c.occurred_at, s.c.deal_id),
                                            rows=(None, 0)) - s.c.points
        ledger = tables.loyalty_ledger.alias("earned")
        already = select(func.coalesce(func.sum(ledger.c.points), 0)).where(
            ledger.c.customer_id == s.c.customer_id, ledger.c.scheme == self.name,
            ledger.c.kind.in_(("earn", "reverse")),
            period_key(ledger.c.occurred_at, options.period) == period).scalar_subquery()
        room = options.cap_per_period - already - earlier
        capped = case((room <= 0, literal(0, BigInteger)), (room < s.c.points, room), else_=s.c.points)
        return select(s.c.deal_id, s.c.customer_id, type_coerce(capped, BigInteger).label("points"),
                      s.c.occurred_at, s.c.expires_at)


def _ratio(value: Decimal) -> tuple[int, int]:
    numerator, denominator = value.as_integer_ratio()
    return numerator, denominator


def _case_factor(column: ColumnElement[str], table: dict[str, Decimal]) -> tuple[ColumnElement[int], int, int]:
    """CASE column WHEN value THEN n ... ELSE scale END, every factor as n / scale.

    Returns the expression, the scale and the largest numerator.
    """
    scale = math.lcm(*(_ratio(f)[1] for f in table.values()))
    numerators = {key: int(factor * scale) for key, factor in table.items()}
    whens = [(column == key, literal(n, BigInteger)) for key, n in sorted(numerators.items())]
    return case(*whens, else_=literal(scale, BigInteger)), scale, max(numerators.values())


def _check_range(numerator: int, factors: list[tuple[ColumnElement[int], int, int]]) -> None:
    largest = 2 * numerator  # half_up doubles the product
    for _, scale, top in factors:
        largest *= max(scale, top)
    if largest * MONEY_SCALE * MIN_SAFE_AMOUNT >= 2**63:
        raise crmcore.ConfigError(
            "[loyalty.points] points_per_unit and multipliers are too fine-grained: "
            f"deals up to {MIN_SAFE_AMOUNT:,} units would overflow exact integer arithmetic")


def points_for_amount(amount: Decimal, options: PointsOptions) -> int:
    """Whole points for ``amount`` under ``options`` without multipliers or caps (exact Decimal)."""
    if amount < options.minimum_amount:
        return 0
    return int((amount * options.points_per_unit).quantize(Decimal(1), rounding=ROUNDING[options.rounding]))
