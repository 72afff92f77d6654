"""What a loyalty scheme is: the protocol plugins implement.

A :class:`LoyaltyScheme` decides what a won deal earns, when points expire,
which tier a balance reaches, and may run periodic jobs, rewards and
referrals; the engine writes the results to the ledger.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy.sql import ColumnElement, Select

from ..application.components import Component, EngineContext
from ..domain.entities import Deal
from ..domain.errors import (
    CRMError,
)

if TYPE_CHECKING:
    from ..application.uow import UnitOfWork


class LoyaltyContext(EngineContext):
    """What a scheme's SQL paths and jobs see: the unit of work and ``as_of``."""


class LoyaltyScheme(Component):
    """Base class of loyalty schemes; override what the scheme decides.

    The first three methods are the per-deal rules the engine asks when a deal
    is won.  The others are optional capabilities the engine and ``crm
    loyalty`` use when a scheme provides them (the defaults do nothing).
    """

    def points_for_deal(self, uow: "UnitOfWork", deal: Deal, options: Any) -> int:
        """Points a deal earns when it is won (0 for none)."""
        return 0

    def expires_at(self, uow: "UnitOfWork", earned_at: datetime, options: Any) -> datetime | None:
        """When points earned at ``earned_at`` expire (None: never)."""
        return None

    def tier_for(self, uow: "UnitOfWork", customer_id: int, balance: int, options: Any) -> str | None:
        """The tier the customer belongs in now, or None if the scheme has no tiers."""
        return None

    def earn_select(self, ctx: LoyaltyContext, options: Any, where: list[ColumnElement[bool]]) -> Select[*tuple[Any, ...]] | None:
        """The set-based earn path: a SELECT over ``tables.deals`` filtered by ``where``.

        Columns (labelled): ``deal_id``, ``customer_id``, ``points`` (int),
        ``occurred_at`` and ``expires_at``.  The engine inserts its rows with
        positive points in one ``INSERT ... SELECT`` (batch earn job, bulk
        imports).  None (the default): the engine asks ``points_for_deal`` per deal.
        """
        return None

    def run(self, ctx: LoyaltyContext, options: Any) -> int:
        """The scheme's periodic job as of ``ctx.as_of`` (bonuses, tier evaluation).

        Must be idempotent: every entry it writes has a deterministic key, so a
        second run changes nothing.  Returns the number of changes made.
        """
        return 0

    def status(self, ctx: LoyaltyContext, customer_id: int, options: Any) -> dict[str, Any]:
        """Extra member status for ``crm loyalty balance`` (e.g. tier progress)."""
        return {}

    def rewards(self, ctx: LoyaltyContext, options: Any) -> list[dict[str, Any]]:
        """The scheme's reward catalogue: dicts with at least ``name`` and ``cost``."""
        return []

    def redeem_reward(self, ctx: LoyaltyContext, customer_id: int, reward: str, options: Any) -> dict[str, Any]:
        """Exchange points for ``reward`` inside ``ctx.uow``; returns what was issued."""
        raise CRMError(f"loyalty scheme {self.name!r} has no rewards")

    def refer(self, ctx: LoyaltyContext, referee_id: int, referrer_id: int, options: Any) -> dict[str, Any]:
        """Record that ``referrer_id`` referred ``referee_id``."""
        raise CRMError(f"loyalty scheme {self.name!r} does not record referrals")
