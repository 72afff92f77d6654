"""FIFO redemption, expiry and reversal on the ledger, hand-worked, then a random
history checked against an independent replay of the raw ledger rows.

Runs on SQLite, PostgreSQL and MariaDB (``crm_db_url``)."""

from __future__ import annotations

import random
from datetime import datetime, timezone

import pytest

from crmcore import InsufficientPoints

from .conftest import assert_matches_model, ledger_rows, stored_remaining, won

# Batches expire 30 days after the deal closed; no tier multipliers (spend stays low anyway).
CONFIG = {"points": {"expiry_days": 30, "tier_scheme": "none"}}


def day(month: int, d: int) -> datetime:
    return datetime(2026, month, d, 10, 0, tzinfo=timezone.utc)


def test_partial_expiry_after_partial_redemption(open_loyalty, clock):
    crm = open_loyalty(CONFIG)
    cid = crm.customers.add(name="Lin").id
    clock.at(day(1, 15))
    first = won(crm, cid, "100.00")          # batch 1: 100, expires 14 Feb
    clock.at(day(1, 25))
    won(crm, cid, "50.00")                   # batch 2: 50, expires 24 Feb
    clock.at(day(2, 1))
    crm.loyalty.redeem(cid, 60, "points")    # FIFO: 60 of batch 1 -> 40 left there, 50 in batch 2
    b1, b2 = [e.id for e in crm.loyalty.history(cid) if e.kind == "earn"]
    assert stored_remaining(crm) == {b1: 40, b2: 50}

    [status] = [s for s in crm.loyalty.status(cid, as_of="2026-02-10") if s["scheme"] == "points"]
    assert (status["balance"], status["available"]) == (90, 90)
    assert status["expiring"] == {"2026-02-14": 40, "2026-02-24": 50}

    assert crm.loyalty.expire(as_of="2026-02-13") == 0       # not due yet: nothing written
    clock.at(day(2, 15))
    assert crm.loyalty.expire() == 1                         # batch 1's 40 expire, batch 2 is untouched
    assert crm.loyalty.expire() == 0                         # a rerun writes nothing
    expiry = crm.loyalty.history(cid)[-1]
    assert (expiry.kind, expiry.points, expiry.batch_id) == ("expire", -40, b1)
    assert expiry.occurred_at == first.closed_at.replace(day=14, month=2)
    assert crm.loyalty.balance(cid, "points") == 50

    crm.loyalty.redeem(cid, 30, "points")                    # from batch 2: 20 left
    clock.at(day(2, 25))
    assert crm.loyalty.expire(as_of=day(2, 25)) == 1
    assert crm.loyalty.balance(cid, "points") == 0
    assert [(e.kind, e.points) for e in crm.loyalty.history(cid)] == [
        ("earn", 100), ("earn", 50), ("redeem", -60), ("expire", -40), ("redeem", -30), ("expire", -20)]
    assert_matches_model(crm)


def test_expiry_at_the_exact_instant_and_as_of(open_loyalty, clock):
    crm = open_loyalty(CONFIG)
    cid = crm.customers.add(name="Lin").id
    clock.at(day(1, 15))
    won(crm, cid, "10")
    clock.at(day(3, 1))
    assert crm.loyalty.expire(as_of="2026-02-13") == 0       # end of 13 Feb (UTC): not yet
    assert crm.loyalty.expire(as_of=day(2, 14)) == 1         # expires_at <= as_of
    assert crm.loyalty.balance(cid, "points") == 0


def test_redemption_cannot_spend_points_past_expiry(open_loyalty, clock):
    """Expiry is applied inside the redemption even if the job has not run; refused -> nothing written."""
    crm = open_loyalty(CONFIG)
    cid = crm.customers.add(name="Lin").id
    clock.at(day(1, 15))
    won(crm, cid, "100")
    clock.at(day(1, 25))
    won(crm, cid, "50")
    clock.at(day(2, 16))                                     # batch 1 is past expiry, nobody ran expire
    before = ledger_rows(crm)
    with pytest.raises(InsufficientPoints) as info:
        crm.loyalty.redeem(cid, 60, "points")
    assert (info.value.requested, info.value.available) == (60, 50)
    assert ledger_rows(crm) == before                        # the lazy expiry rolled back with the refusal
    crm.loyalty.redeem(cid, 50, "points")
    assert [(e.kind, e.points) for e in crm.loyalty.history(cid)] == [
        ("earn", 100), ("earn", 50), ("expire", -100), ("redeem", -50)]
    assert_matches_model(crm)


def test_reversal_takes_its_own_batch_first(open_loyalty, clock):
    crm = open_loyalty(CONFIG)
    cid = crm.customers.add(name="Wang").id
    a = won(crm, cid, "100")
    clock.advance(days=1)
    b = won(crm, cid, "80")
    clock.advance(days=1)
    crm.loyalty.redeem(cid, 50, "points")                    # FIFO: 50 of A's batch
    crm.deals.move(b.id, "negotiation")                      # B's 80 come back off B's own batch
    batch_a, batch_b = [e.id for e in crm.loyalty.history(cid) if e.kind == "earn"]
    assert stored_remaining(crm) == {batch_a: 50, batch_b: 0}
    assert crm.loyalty.balance(cid, "points") == 50
    crm.deals.move(a.id, "lost", lost_reason="refund")       # A earned 100, 50 are left: shortfall 50
    reverse = crm.loyalty.history(cid)[-1]
    assert (reverse.kind, reverse.points, reverse.details) == ("reverse", -50, {"requested": 100, "shortfall": 50})
    assert crm.loyalty.balance(cid, "points") == 0
    assert_matches_model(crm)


def test_reversal_with_shortfall_takes_other_batches_never_below_zero(open_loyalty, clock):
    crm = open_loyalty(CONFIG)
    cid = crm.customers.add(name="Wang").id
    a = won(crm, cid, "100")
    clock.advance(days=1)
    won(crm, cid, "80")
    clock.advance(days=1)
    crm.loyalty.redeem(cid, 150, "points")                   # A's 100 and 50 of B's: 30 left (in B)
    crm.deals.move(a.id, "negotiation")
    reverse = crm.loyalty.history(cid)[-1]
    assert (reverse.points, reverse.details) == (-30, {"requested": 100, "shortfall": 70})
    assert crm.loyalty.balance(cid, "points") == 0
    assert_matches_model(crm)


@pytest.mark.parametrize("seed", [3, 7])
def test_random_history_matches_an_independent_replay(open_loyalty, clock, seed):
    """Wins, reversals, redemptions, adjustments, expiry runs and time passing, for several customers."""
    crm = open_loyalty(CONFIG)
    rng = random.Random(seed)
    clock.at(day(1, 1))
    customers = [crm.customers.add(name=f"M{i}").id for i in range(4)]
    deals: list[tuple[int, int]] = []
    for step in range(70):
        action = rng.random()
        cid = rng.choice(customers)
        if action < 0.3:
            deal = won(crm, cid, str(rng.randint(1, 400)), title=f"d{step}")
            deals.append((deal.id, cid))
        elif action < 0.45 and deals:
            deal_id, _ = rng.choice(deals)
            stage = crm.deals.get(deal_id).stage
            crm.deals.move(deal_id, "negotiation" if stage == "won" else "won")
        elif action < 0.7:
            want = rng.randint(1, 300)
            try:
                crm.loyalty.redeem(cid, want, "points")
            except InsufficientPoints:
                pass
        elif action < 0.8:
            change = rng.choice([-1, 1]) * rng.randint(1, 100)
            try:
                crm.loyalty.adjust(cid, change, "points", reason="random")
            except InsufficientPoints:
                pass
        elif action < 0.9:
            crm.loyalty.expire()
        else:
            clock.advance(days=rng.randint(5, 40))
    won(crm, customers[0], "5")  # something left to expire at the end
    clock.advance(days=31)
    crm.loyalty.expire()
    balances = assert_matches_model(crm)
    kinds = {row["kind"] for row in ledger_rows(crm)}
    assert {"earn", "redeem", "expire"} <= kinds, kinds
    assert all(v >= 0 for v in balances.values())
