"""Lifecycle segments from the customer's stage and purchase history.

Rules, first match wins (``as_of`` is the run's moment, purchases as in
:mod:`crmcore_segments.purchases`)::

    churned   stage is "former"
    lead      no purchase up to as_of (whatever the stage)
    churned   last purchase at least churned_days (365) before as_of
    at-risk   last purchase at least at_risk_days (180) before as_of
    loyal     at least loyal_orders (5) purchases
    new       first purchase less than new_days (90) before as_of
    active    everybody else

Every customer gets a membership.  ``score`` is the number of purchases;
``details`` holds ``orders``, ``first_purchase_days``, ``last_purchase_days``
(fractional days to as_of) and ``stage``.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import timedelta
from typing import Any, Unpack

import attrs
from sqlalchemy import (
    Integer,
    Select,
    String,
    Subquery,
    case,
    cast,
    func,
    literal,
    null,
    select,
    union_all,
)

import crmcore
from crmcore.store import days_between, json_object, tables, utc_literal

from .purchases import positive_days, purchase_conditions

customers = tables.customers
deals = tables.deals
SEGMENTS = ("lead", "new", "active", "loyal", "at-risk", "churned")


def _positive(instance: object, attribute: attrs.Attribute[int], value: int) -> None:
    if value <= 0:
        raise ValueError(f"{attribute.name} must be positive, got {value}")


@attrs.frozen
class LifecycleOptions:
    """Options of the ``lifecycle`` segmenter (``[segments.lifecycle]``); days are whole days."""

    new_days: int = attrs.field(default=90, validator=positive_days)
    at_risk_days: int = attrs.field(default=180, validator=positive_days)
    churned_days: int = attrs.field(default=365, validator=positive_days)
    loyal_orders: int = attrs.field(default=5, validator=_positive)

    def __attrs_post_init__(self) -> None:
        if self.at_risk_days >= self.churned_days:
            raise ValueError(f"at_risk_days ({self.at_risk_days}) must be less than churned_days "
                             f"({self.churned_days})")


class LifecycleSegmenter(crmcore.Segmenter):
    """lead / new / active / loyal / at-risk / churned."""

    name = "lifecycle"
    description = "Lifecycle stage (lead, new, active, loyal, at-risk, churned) from stage and purchases"
    options_type = LifecycleOptions

    def select(self, ctx: crmcore.SegmentContext, options: LifecycleOptions) -> Select[Unpack[tuple[Any, ...]]]:
        """customer_id, lifecycle segment, number of purchases as score, details."""
        history = purchase_history(ctx)
        as_of = ctx.as_of
        segment = case(
            (history.c.stage == "former", literal("churned", String)),
            (history.c.orders == 0, literal("lead", String)),
            (history.c.last_purchase <= utc_literal(as_of - timedelta(days=options.churned_days)),
             literal("churned", String)),
            (history.c.last_purchase <= utc_literal(as_of - timedelta(days=options.at_risk_days)),
             literal("at-risk", String)),
            (history.c.orders >= options.loyal_orders, literal("loyal", String)),
            (history.c.first_purchase > utc_literal(as_of - timedelta(days=options.new_days)),
             literal("new", String)),
            else_=literal("active", String),
        )
        details = json_object(
            ctx.dialect, orders=history.c.orders,
            first_purchase_days=days_between(history.c.first_purchase, utc_literal(as_of)),
            last_purchase_days=days_between(history.c.last_purchase, utc_literal(as_of)),
            stage=history.c.stage)
        return select(history.c.customer_id, segment.label("segment"), history.c.orders.label("score"),
                      details.label("details"))

    def explain(self, ctx: crmcore.SegmentContext, options: LifecycleOptions, membership: Mapping[str, Any]
               ) -> dict[str, Any]:
        """The stored details with the thresholds and the rule that matched."""
        details = dict(membership.get("details") or {})
        thresholds = attrs.asdict(options)
        return {**details, "thresholds": thresholds, "rule": _rule_text(membership.get("segment"), options)}


def purchase_history(ctx: crmcore.SegmentContext) -> Subquery:
    """Per customer: stage, orders, first and last purchase (join-free: UNION ALL + GROUP BY)."""
    rows = union_all(
        select(deals.c.customer_id, deals.c.closed_at, literal(1, Integer).label("bought"),
               null().label("stage")).where(*purchase_conditions(ctx)),
        select(customers.c.id, null(), literal(0, Integer), customers.c.stage),
    ).subquery("lifecycle_rows")
    return select(
        rows.c.customer_id, func.max(rows.c.stage).label("stage"),
        cast(func.sum(rows.c.bought), Integer).label("orders"),
        func.min(rows.c.closed_at).label("first_purchase"), func.max(rows.c.closed_at).label("last_purchase"),
    ).group_by(rows.c.customer_id).subquery("lifecycle_history")


def _rule_text(segment: str | None, o: LifecycleOptions) -> str:
    return {
        "churned": f"stage is former, or the last purchase is at least {o.churned_days} days old",
        "lead": "no purchase up to as_of",
        "at-risk": f"last purchase at least {o.at_risk_days} but less than {o.churned_days} days old",
        "loyal": f"at least {o.loyal_orders} purchases, last one less than {o.at_risk_days} days old",
        "new": f"first purchase less than {o.new_days} days old, fewer than {o.loyal_orders} purchases",
        "active": "a recent purchase, neither new nor loyal",
    }.get(segment or "", "not a member of this run")

