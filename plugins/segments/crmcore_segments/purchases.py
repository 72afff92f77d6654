"""What counts as a purchase: a won deal, closed up to ``as_of``.

Shared by every strategy that reads revenue (rfm, lifecycle, value-tier,
rules), so they all agree on the definition.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import timedelta
from typing import TypeVar

import attrs
from sqlalchemy import and_, false, or_
from sqlalchemy.sql import ColumnElement

import crmcore
from crmcore.store import tables, utc_literal

deals = tables.deals

# The validator serves ``int`` and ``int | None`` fields (attrs.Attribute is invariant).
_Days = TypeVar("_Days", int, int | None)


def won_condition(pipelines: Mapping[str, crmcore.Pipeline]) -> ColumnElement[bool]:
    """Deals in a won stage of their own pipeline (stage names are per pipeline)."""
    parts: list[ColumnElement[bool]] = []
    for name, pipeline in pipelines.items():
        won = pipeline.stages_with(crmcore.StageOutcome.WON)
        if won:
            parts.append(and_(deals.c.pipeline == name, deals.c.stage.in_(won)))
    return or_(*parts) if parts else false()


def purchase_conditions(ctx: crmcore.SegmentContext, window_days: int | None = None,
                        currency: str | None = None) -> list[ColumnElement[bool]]:
    """WHERE conditions on ``deals`` selecting the purchases that count.

    A purchase is a won deal with ``closed_at <= as_of``; with ``window_days``
    also ``closed_at > as_of - window_days``; with ``currency`` only deals in
    that currency.  Won deals without ``closed_at`` do not count.
    """
    conditions = [won_condition(ctx.config.pipelines), deals.c.closed_at <= utc_literal(ctx.as_of)]
    if window_days is not None:
        conditions.append(deals.c.closed_at > utc_literal(ctx.as_of - timedelta(days=window_days)))
    if currency is not None:
        conditions.append(deals.c.currency == currency)
    return conditions


def positive_days(instance: object, attribute: attrs.Attribute[_Days], value: _Days) -> None:
    """attrs validator: None or a positive number of days."""
    if value is not None and value <= 0:
        raise ValueError(f"{attribute.name} must be a positive number of days, got {value}")
