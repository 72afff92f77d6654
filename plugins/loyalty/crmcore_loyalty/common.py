"""Small helpers shared by the loyalty schemes."""

from __future__ import annotations

from datetime import date
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

from sqlalchemy import and_, false, or_, select
from sqlalchemy.sql import ColumnElement

import crmcore
from crmcore.store import tables

if TYPE_CHECKING:
    # Not exported from ``crmcore`` (yet): the type of the context schemes receive.
    from crmcore.loyalty import LoyaltyContext


def won_deal(config: crmcore.Config) -> ColumnElement[bool]:
    """A condition on ``tables.deals``: the deal is in a won stage of its pipeline."""
    deals = tables.deals
    parts = [and_(deals.c.pipeline == p.name, _one_of(deals.c.stage, [s.name for s in p.stages
                                                                     if s.outcome is crmcore.StageOutcome.WON]))
             for p in config.pipelines.values()]
    return or_(*parts) if parts else false()


def _one_of(column: ColumnElement[str], names: list[str]) -> ColumnElement[bool]:
    """``column IN names``; one name as ``column = name``: a statement built once and run per won
    deal then binds a plain value, instead of expanding an IN list at every execution."""
    return column == names[0] if len(names) == 1 else column.in_(names)


def local_date(ctx: LoyaltyContext) -> date:
    """``ctx.as_of`` as a calendar date in the configured timezone (birthdays, periods)."""
    return ctx.as_of.astimezone(ZoneInfo(ctx.config.timezone)).date()


def check_wallet(ctx: LoyaltyContext, scheme: str, wallet: str) -> None:
    """A bonus scheme's ``wallet`` must be a registered scheme."""
    if wallet not in ctx.uow.crm.loyalty.registry:
        raise crmcore.ConfigError(f"[loyalty.{scheme}] wallet: no loyalty scheme {wallet!r} is registered")


def key_is_new(key: ColumnElement[str]) -> ColumnElement[bool]:
    """No ledger entry has this idempotency key yet (so a replayed job inserts nothing)."""
    taken = tables.loyalty_ledger.alias("taken")
    return ~select(taken.c.id).where(taken.c.idempotency_key == key).exists()
