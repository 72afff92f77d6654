"""ABC (Pareto) value tiers by cumulative share of revenue.

Buyers (customers with revenue in the window) are ordered by revenue,
largest first, ties by customer id (ascending), so the order is total and the
result deterministic.  With ``before`` the revenue of everybody ahead of a
customer and ``total`` all buyers' revenue::

    A   before < a_share% of total        (the customers making the first 80%)
    B   before < (a_share + b_share)% of total
    C   everybody else with revenue

The customer who crosses a boundary belongs to the tier they start in (the
first customer is always A).  Customers without revenue in the window are
``"No revenue"``.  Shares are percentages (default 80/15/5) and must add up
to 100.  Amounts are compared as exact scaled integers.

``score`` is ``before / total`` (0 for the first customer); ``details`` has
``revenue`` (exact decimal text), ``rank`` and ``share_before`` (percent).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Unpack

import attrs
from sqlalchemy import (
    BigInteger,
    Float,
    Integer,
    Select,
    String,
    Subquery,
    case,
    cast,
    func,
    literal,
    select,
    type_coerce,
    union_all,
)

import crmcore
from crmcore.store import json_object, tables

from .money_text import decimal_text
from .purchases import positive_days, purchase_conditions

customers = tables.customers
deals = tables.deals
NO_REVENUE = "No revenue"


def _share(instance: object, attribute: attrs.Attribute[int], value: int) -> None:
    if not 0 < value < 100:
        raise ValueError(f"{attribute.name} is a percentage between 0 and 100, got {value}")


@attrs.frozen
class ValueTierOptions:
    """Options of ``value-tier`` (``[segments.value-tier]``).

    :ivar window_days: revenue of the last N days before as_of (None: all up to as_of).
    :ivar a_share: percent of revenue tier A covers; ``b_share`` and ``c_share`` likewise.
    :ivar currency: only deals in this currency (None: all).
    """

    window_days: int | None = attrs.field(default=None, validator=positive_days)
    a_share: int = attrs.field(default=80, validator=_share)
    b_share: int = attrs.field(default=15, validator=_share)
    c_share: int = attrs.field(default=5, validator=_share)
    currency: str | None = crmcore.currency_option()

    def __attrs_post_init__(self) -> None:
        if self.a_share + self.b_share + self.c_share != 100:
            raise ValueError(f"a_share + b_share + c_share must be 100, got "
                             f"{self.a_share} + {self.b_share} + {self.c_share}")


class ValueTierSegmenter(crmcore.Segmenter):
    """A / B / C by cumulative share of revenue."""

    name = "value-tier"
    description = "ABC (Pareto) tiers by cumulative share of revenue (default 80/15/5)"
    options_type = ValueTierOptions

    def select(self, ctx: crmcore.SegmentContext, options: ValueTierOptions) -> Select[Unpack[tuple[Any, ...]]]:
        """customer_id, tier A/B/C (or no revenue), share of revenue ahead as score, details."""
        ranked = _ranked(ctx, options)
        buyer = ranked.c.revenue > 0
        before = ranked.c.running - ranked.c.revenue
        tier = case(
            (~buyer, literal(NO_REVENUE, String)),
            (before * 100 < options.a_share * ranked.c.total, literal("A", String)),
            (before * 100 < (options.a_share + options.b_share) * ranked.c.total, literal("B", String)),
            else_=literal("C", String),
        )
        share = case((buyer, cast(before, Float) / cast(ranked.c.total, Float)), else_=None)
        details = json_object(ctx.dialect, revenue=decimal_text(ranked.c.revenue),
                              rank=case((buyer, ranked.c.position), else_=None), share_before=share * 100)
        return select(ranked.c.customer_id, tier.label("segment"), share.label("score"), details.label("details"))

    def explain(self, ctx: crmcore.SegmentContext, options: ValueTierOptions, membership: Mapping[str, Any]
               ) -> dict[str, Any]:
        """The stored details with the shares and the rule."""
        details = dict(membership.get("details") or {})
        return {**details, "shares": f"A {options.a_share}% / B {options.b_share}% / C {options.c_share}%",
                "window_days": options.window_days,
                "rule": "A while the revenue ahead is under A's share of the total, then B under A+B, then C"}


def _ranked(ctx: crmcore.SegmentContext, options: ValueTierOptions) -> Subquery:
    """Per customer: revenue, position among buyers, running total (incl. self) and the buyers' total."""
    amount = type_coerce(deals.c.amount, BigInteger)
    rows = union_all(
        select(deals.c.customer_id, amount.label("amount")).where(
            *purchase_conditions(ctx, options.window_days, options.currency)),
        select(customers.c.id, literal(0, BigInteger)),
    ).subquery("tier_rows")
    revenue = select(rows.c.customer_id, cast(func.sum(rows.c.amount), BigInteger).label("revenue")).group_by(
        rows.c.customer_id).subquery("tier_revenue")
    buyer = revenue.c.revenue > 0
    order = [revenue.c.revenue.desc(), revenue.c.customer_id]
    return select(
        revenue.c.customer_id, revenue.c.revenue,
        cast(func.row_number().over(partition_by=buyer, order_by=order), Integer).label("position"),
        cast(func.sum(revenue.c.revenue).over(partition_by=buyer, order_by=order, rows=(None, 0)),
             BigInteger).label("running"),
        cast(func.sum(revenue.c.revenue).over(partition_by=buyer), BigInteger).label("total"),
    ).subquery("tier_ranked")
