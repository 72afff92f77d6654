"""The ``referral`` scheme: who referred whom, and a bonus for both.

``crm loyalty refer CUSTOMER --by REFERRER`` records a referral (a row in
``loyalty_referrals``).  Refused: a customer referring itself, a customer
already referred, a referee that already has a won deal (its first won deal
is what the bonus rewards), and a loop (the referrer was itself referred,
directly or through others, by the referee).

When the referee's first deal is won, the referee gets ``referee_bonus`` and
the referrer ``referrer_bonus`` points in ``wallet``, keyed
``referral:<referee>:referee`` and ``referral:<referee>:referrer``: paid once,
however often it is replayed.  It happens in the deal's transaction (the
plugin's ``on_deal_stage_changed``) and in the periodic job, which catches up
set-based for deals that were won through a bulk path.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import attrs
from sqlalchemy import (
    JSON,
    Connection,
    Integer,
    String,
    bindparam,
    cast,
    exists,
    func,
    insert,
    literal,
    null,
    select,
)

import crmcore
from crmcore.store import UTCDateTime, direct, tables

from .common import check_wallet, key_is_new, won_deal
from .sql import days_later, utc
from .tables import referrals

if TYPE_CHECKING:
    # Not exported from ``crmcore`` (yet): the type of the context schemes receive.
    from crmcore.loyalty import LoyaltyContext


def _points(instance: object, attribute: attrs.Attribute[int], value: int) -> None:
    if value <= 0:
        raise ValueError(f"{attribute.name} must be a positive number of points, got {value}")


@attrs.frozen
class ReferralOptions:
    """Options of the ``referral`` scheme (``[loyalty.referral]``).

    :ivar referrer_bonus: points for the customer who referred.
    :ivar referee_bonus: points for the customer who was referred.
    :ivar wallet: the scheme whose balances receive the bonuses.
    :ivar expiry_days: days until a bonus expires (0: never).
    """

    referrer_bonus: int = attrs.field(default=500, validator=_points)
    referee_bonus: int = attrs.field(default=200, validator=_points)
    wallet: str = "points"
    expiry_days: int = attrs.field(default=365, validator=attrs.validators.ge(0))


# Was this customer referred?  Built once: asked on every won deal, almost always "no".
_REFERRED = select(referrals.c.referee_id).where(referrals.c.referee_id == bindparam("referee", type_=Integer))


class ReferralScheme(crmcore.LoyaltyScheme):
    """Referral bonuses for both sides when the referee's first deal is won."""

    name = "referral"
    description = "records who referred whom; both get a bonus when the referee's first deal is won"
    options_type = ReferralOptions

    def refer(self, ctx: LoyaltyContext, referee_id: int, referrer_id: int, options: ReferralOptions) -> dict[str, Any]:
        """Record that ``referrer_id`` referred ``referee_id`` (refused: self, repeat, after a win, loops)."""
        conn = ctx.conn
        if referee_id == referrer_id:
            raise crmcore.ValidationError.single("referrer", f"customer {referee_id} cannot refer itself", "referral")
        earlier = conn.execute(select(referrals.c.referrer_id).where(referrals.c.referee_id == referee_id)).scalar()
        if earlier is not None:
            raise crmcore.ValidationError.single(
                "referee", f"customer {referee_id} was already referred by customer {earlier}", "referral")
        deals = tables.deals
        if conn.execute(select(exists().where(deals.c.customer_id == referee_id, won_deal(ctx.config)))).scalar():
            raise crmcore.ValidationError.single(
                "referee", f"customer {referee_id} already has a won deal; a referral must come before it",
                "referral")
        chain = self._chain(conn, referrer_id)
        if referee_id in chain:
            path = " -> ".join(map(str, [referee_id, *chain[:chain.index(referee_id) + 1]]))
            raise crmcore.ValidationError.single(
                "referrer", f"referral loop: customer {referrer_id} was referred through customer {referee_id} "
                            f"({path} by referral)", "referral")
        conn.execute(insert(referrals).values(referee_id=referee_id, referrer_id=referrer_id,
                                              recorded_at=ctx.as_of, actor=ctx.uow.actor))
        return {"referee_id": referee_id, "referrer_id": referrer_id, "recorded_at": ctx.as_of}

    def _chain(self, conn: Connection, customer_id: int) -> list[int]:
        """Who referred ``customer_id``, who referred them, ... (the referral chain upwards)."""
        chain: list[int] = []
        current: int | None = customer_id
        while current is not None and current not in chain:
            chain.append(current)
            current = conn.execute(select(referrals.c.referrer_id).where(referrals.c.referee_id == current)).scalar()
        return chain[1:] if len(chain) > 1 else []

    def pay_on_win(self, ctx: LoyaltyContext, options: ReferralOptions, customer_id: int) -> int:
        """:meth:`run` for one customer whose deal was just won: one indexed look-up, and the
        set-based run only if somebody referred this customer (replays pay nothing twice)."""
        if direct.run(ctx.conn, _REFERRED, {"referee": customer_id}).first() is None:
            return 0
        return self.run(ctx, options, referee_ids=[customer_id])

    def run(self, ctx: LoyaltyContext, options: ReferralOptions, referee_ids: list[int] | None = None) -> int:
        """Pay the bonuses due as of ``ctx.as_of`` (set-based; already paid ones are skipped)."""
        check_wallet(ctx, self.name, options.wallet)
        deals = tables.deals
        first_won = select(func.min(deals.c.closed_at)).where(
            deals.c.customer_id == referrals.c.referee_id, won_deal(ctx.config),
            deals.c.closed_at <= utc(ctx.as_of)).scalar_subquery()
        # The bonus counts from the referee's first win, and expires from then.
        expires = days_later(first_won, options.expiry_days) if options.expiry_days else literal(None, UTCDateTime)
        paid = 0
        for side, column, bonus in (("referee", referrals.c.referee_id, options.referee_bonus),
                                    ("referrer", referrals.c.referrer_id, options.referrer_bonus)):
            key = literal(f"{self.name}:") + cast(referrals.c.referee_id, String) + literal(f":{side}")
            rows = select(column.label("customer_id"), literal(bonus).label("points"), key.label("idempotency_key"),
                          cast(null(), Integer).label("deal_id"), expires.label("expires_at"),
                          (literal("referral bonus (referee ") + cast(referrals.c.referee_id, String) + literal(")"))
                          .label("reason"), first_won.label("occurred_at"), literal("bonus").label("kind"),
                          literal({"scheme": self.name, "side": side}, JSON).label("details")
                          ).where(first_won.is_not(None), key_is_new(key))
            if referee_ids is not None:
                rows = rows.where(referrals.c.referee_id.in_(referee_ids))
            paid += ctx.uow.loyalty.insert_credits(options.wallet, rows, f"{self.name}:%:{side}")
        return paid
