"""Bulk deal moves (``crm.deals.move_many``) against the same moves made one by one.

Two CRMs on one database get the same customers and deals; one moves them with
``crm.deals.move`` (the clock set to each move's time), the other with one
``move_many`` call.  Deals, stage history, ledger entries, balances and
customer stages must come out the same (ids aside), on SQLite, PostgreSQL and
MariaDB; with the first-party points scheme (set-based earning) and a scheme
earning in Python.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import select

import crmcore
from crmcore import ValidationError
from crmcore.store import tables

from .conftest import Components

START = datetime(2026, 3, 2, 9, 0, tzinfo=timezone.utc)


class StarsScheme(crmcore.LoyaltyScheme):
    """A point per whole currency unit of a won deal, computed in Python (no earn_select)."""

    name = "stars"
    description = "stars for won deals"

    def points_for_deal(self, uow: Any, deal: crmcore.Deal, options: Any) -> int:
        return int(deal.amount)


class Clock:
    def __init__(self) -> None:
        self.now = START

    def __call__(self) -> datetime:
        return self.now


# (deal number, stage, days after START); deal 4 goes won -> lost (a reversal), deal 5 lost -> won.
MOVES = [(0, "qualified", 1), (1, "qualified", 1), (2, "proposal", 2), (0, "proposal", 3), (0, "won", 9),
         (1, "lost", 4), (2, "negotiation", 5), (3, "won", 6), (4, "won", 2), (4, "lost", 7),
         (5, "lost", 3), (5, "won", 8), (2, "won", 11)]


def _setup(crm: crmcore.CRM, tag: str) -> list[int]:
    customers = [crm.customers.add(name=f"{tag} {n}", stage=stage).id
                 for n, stage in enumerate(["lead", "prospect", "former", "customer"])]
    return [crm.deals.add(customer_id=customers[n % 4], title=f"{tag} deal {n}", amount=Decimal(f"{100 + n}.50"),
                          currency="USD", stage="lead").id for n in range(6)]


def _snapshot(crm: crmcore.CRM, deal_ids: list[int]) -> dict[str, Any]:
    """Everything a move writes, with each deal named by its position (ids differ between the runs)."""
    pos = {d: n for n, d in enumerate(deal_ids)}
    deals, history, ledger = tables.deals, tables.deal_stage_history, tables.loyalty_ledger
    with crm.unit(readonly=True) as uow:
        rows = uow.conn.execute(select(deals).where(deals.c.id.in_(deal_ids))).all()
        customer_of = {r.id: r.customer_id for r in rows}
        owners = sorted(set(customer_of.values()))
        steps = uow.conn.execute(select(history).where(history.c.deal_id.in_(deal_ids)).order_by(history.c.id))
        entries = uow.conn.execute(select(ledger).where(ledger.c.deal_id.in_(deal_ids)).order_by(ledger.c.id))
        stages = dict(uow.conn.execute(select(tables.customers.c.id, tables.customers.c.stage).where(
            tables.customers.c.id.in_(owners))).all())
        return {
            "deals": sorted(((pos[r.id], r.stage, r.probability, r.closed_at, r.lost_reason, r.updated_at,
                             r.amount) for r in rows), key=str),
            "history": sorted(((pos[h.deal_id], h.from_stage, h.to_stage, h.changed_at) for h in steps), key=str),
            "ledger": sorted(((pos[e.deal_id], e.scheme, e.kind, int(e.points), e.occurred_at, e.expires_at,
                              e.idempotency_key.split(":earn:")[0].split(":reverse:")[0].replace(
                                  f":deal:{e.deal_id}", ":deal:#")) for e in entries), key=str),
            "customer stages": [stages[c] for c in owners],
            "balances": {s: sorted(crm.loyalty.balance(c, s) for c in owners) for s in ("points", "stars")},
        }


def test_move_many_writes_what_single_moves_write(crm_factory):
    clock = Clock()
    config = {"loyalty": {"points": {"tier_scheme": "none", "expiry_days": 365}}}
    crm = crm_factory(plugins=["loyalty"], extra_plugins=[Components("stars", schemes=(StarsScheme(),))],
                      config=config, clock=clock)
    one_by_one, bulk = _setup(crm, "single"), _setup(crm, "bulk")
    for n, stage, days in MOVES:
        clock.now = START + timedelta(days=days)
        crm.deals.move(one_by_one[n], stage, lost_reason="price" if stage == "lost" else None)
    clock.now = START + timedelta(days=30)
    moved = crm.deals.move_many([{"deal_id": bulk[n], "stage": stage, "at": START + timedelta(days=days),
                                  **({"lost_reason": "price"} if stage == "lost" else {})}
                                 for n, stage, days in MOVES])
    assert moved == len(MOVES)
    single, many = _snapshot(crm, one_by_one), _snapshot(crm, bulk)
    assert many == single
    # The test means something: stages moved, deals closed, points earned and reversed.
    assert [d[1] for d in many["deals"]] == ["won", "lost", "won", "won", "lost", "won"]
    assert {(kind, scheme) for _, scheme, kind, *_ in many["ledger"]} == {
        ("earn", "points"), ("earn", "stars"), ("reverse", "points"), ("reverse", "stars")}
    assert many["customer stages"] == ["customer", "customer", "former", "customer"]
    assert crm.loyalty.drift() == []


def test_move_many_keys_earnings_by_transition(crm_factory):
    """A bulk earn and a single move's earn share the key format, so neither earns twice."""
    crm = crm_factory(plugins=["loyalty"], config={"loyalty": {"points": {"tier_scheme": "none"}}})
    cid = crm.customers.add(name="Buyer").id
    deal = crm.deals.add(customer_id=cid, title="d", amount=Decimal("50"), currency="USD", stage="lead")
    crm.deals.move_many([{"deal_id": deal.id, "stage": "won"}])
    with crm.unit(readonly=True) as uow:
        history = uow.deals.stage_history(deal.id)
        keys = [e.idempotency_key for e in crm.loyalty.history(cid)]
    assert keys == [f"points:deal:{deal.id}:earn:{history[-1]['id']}"]
    assert crm.loyalty.earn_won_deals()["points"] == 0


def test_move_many_is_all_or_nothing(crm_factory):
    crm = crm_factory()
    cid = crm.customers.add(name="Buyer").id
    deal = crm.deals.add(customer_id=cid, title="d", amount=Decimal("50"), currency="USD", stage="lead")
    with pytest.raises(ValidationError) as err:
        crm.deals.move_many([{"deal_id": deal.id, "stage": "won"}, {"deal_id": deal.id + 99, "stage": "won"}])
    assert f"move 1: deal_id: deal {deal.id + 99} does not exist" in str(err.value)
    with pytest.raises(ValidationError) as err:
        crm.deals.move_many([{"deal_id": deal.id, "stage": "nope"}])
    assert "move 0: stage" in str(err.value)
    assert crm.deals.get(deal.id).stage == "lead"
    with crm.unit(readonly=True) as uow:
        assert len(uow.deals.stage_history(deal.id)) == 1
