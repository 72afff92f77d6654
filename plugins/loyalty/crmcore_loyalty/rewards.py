"""The ``rewards`` scheme: a catalogue of rewards bought with points.

The catalogue is configuration (``[[loyalty.rewards.catalogue]]`` in crm.toml:
``name``, ``cost`` in points, ``stock`` or none for unlimited, ``valid_until``
for the offer, ``code_valid_days`` for the issued code); what has been issued
is state, in ``loyalty_reward_stock`` and ``loyalty_reward_codes``.

``crm loyalty redeem CUSTOMER REWARD`` takes one unit of stock with a
conditional ``UPDATE ... WHERE issued < stock`` and debits the cost from
``wallet`` (FIFO, never below zero) in the same transaction: if either fails
nothing is written, and two concurrent redemptions cannot both take the last
unit or the same points.  A code is issued for the reward.
"""

from __future__ import annotations

import secrets
from datetime import date, timedelta
from typing import TYPE_CHECKING, Any

import attrs
from sqlalchemy import func, insert, select, update

import crmcore
from crmcore.store.upsert import insert_ignore

from .common import check_wallet, local_date
from .tables import reward_codes, reward_stock

if TYPE_CHECKING:
    # Not exported from ``crmcore`` (yet): the type of the context schemes receive.
    from crmcore.loyalty import LoyaltyContext

CODE_ALPHABET = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789"  # no 0/O, 1/I: codes are read aloud and typed


@attrs.frozen
class Reward:
    """A catalogue entry."""

    name: str
    cost: int = attrs.field(validator=attrs.validators.gt(0))
    stock: int | None = attrs.field(default=None, validator=attrs.validators.optional(attrs.validators.ge(0)))
    valid_until: date | None = None
    code_valid_days: int = attrs.field(default=90, validator=attrs.validators.ge(0))
    description: str = ""


def _unique(instance: object, attribute: attrs.Attribute[tuple[Reward, ...]], value: tuple[Reward, ...]) -> None:
    names = [r.name for r in value]
    if len(set(names)) != len(names):
        raise ValueError(f"{attribute.name}: reward names must be unique, got {names}")


@attrs.frozen
class RewardsOptions:
    """Options of the ``rewards`` scheme (``[loyalty.rewards]``).

    :ivar catalogue: the rewards on offer.
    :ivar wallet: the scheme whose points pay for them.
    """

    catalogue: tuple[Reward, ...] = attrs.field(default=(), validator=_unique)
    wallet: str = "points"


class RewardsScheme(crmcore.LoyaltyScheme):
    """Rewards bought with points: balance and stock checked atomically, a code issued."""

    name = "rewards"
    description = "a reward catalogue (cost, stock, validity); redeeming issues a reward code"
    options_type = RewardsOptions

    def rewards(self, ctx: LoyaltyContext, options: RewardsOptions) -> list[dict[str, Any]]:
        """The catalogue with the stock left and whether each reward is offered today."""
        issued = dict(ctx.conn.execute(select(reward_stock.c.reward, reward_stock.c.issued)).all())
        today = local_date(ctx)
        return [{"name": r.name, "cost": r.cost, "stock": r.stock,
                 "left": None if r.stock is None else max(r.stock - int(issued.get(r.name, 0)), 0),
                 "valid_until": r.valid_until, "offered": r.valid_until is None or today <= r.valid_until,
                 "description": r.description} for r in options.catalogue]

    def redeem_reward(self, ctx: LoyaltyContext, customer_id: int, reward: str, options: RewardsOptions
                     ) -> dict[str, Any]:
        """Take one unit of stock, debit the cost and issue a code; returns what was issued."""
        check_wallet(ctx, self.name, options.wallet)
        item = next(r for r in options.catalogue if r.name == reward)
        if item.valid_until is not None and local_date(ctx) > item.valid_until:
            raise crmcore.CRMError(f"reward {reward!r} was offered until {item.valid_until}")
        self._take_stock(ctx, item)
        code = self._new_code()
        entry = ctx.uow.loyalty.debit(customer_id, options.wallet, item.cost, key=f"{self.name}:{code}",
                                      kind="redeem", reason=f"reward {reward}",
                                      details={"scheme": self.name, "reward": reward, "code": code})
        valid_until = ctx.as_of + timedelta(days=item.code_valid_days) if item.code_valid_days else None
        ctx.conn.execute(insert(reward_codes).values(code=code, reward=reward, customer_id=customer_id,
                                                     entry_id=entry.id, points=item.cost, issued_at=ctx.as_of,
                                                     valid_until=valid_until))
        return {"reward": reward, "code": code, "points": item.cost, "valid_until": valid_until,
                "entry_id": entry.id}

    def _take_stock(self, ctx: LoyaltyContext, item: Reward) -> None:
        if ctx.conn.execute(select(reward_stock.c.issued).where(reward_stock.c.reward == item.name)).first() is None:
            insert_ignore(ctx.conn, reward_stock, {"reward": item.name, "issued": 0})
        taken = update(reward_stock).where(reward_stock.c.reward == item.name).values(
            issued=reward_stock.c.issued + 1)
        if item.stock is not None:
            taken = taken.where(reward_stock.c.issued < item.stock)
        if ctx.conn.execute(taken).rowcount != 1:
            raise crmcore.CRMError(f"reward {item.name!r} is out of stock ({item.stock} issued)")

    def _new_code(self) -> str:
        raw = "".join(secrets.choice(CODE_ALPHABET) for _ in range(12))
        return f"{raw[:4]}-{raw[4:8]}-{raw[8:]}"

    def issued(self, ctx: LoyaltyContext) -> int:
        """How many reward codes have been issued."""
        return int(ctx.conn.execute(select(func.count()).select_from(reward_codes)).scalar_one())
