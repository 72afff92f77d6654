"""Birthday and referral bonuses, the reward catalogue, and every refused input
leaving the ledger (and the plugin's tables) unchanged."""

from __future__ import annotations

from datetime import date, datetime, timezone
from decimal import Decimal

import pytest
from crmcore_loyalty.tables import referrals, reward_codes, reward_stock
from sqlalchemy import func, select

from crmcore import CRMError, InsufficientPoints, UnknownComponent, ValidationError

from .conftest import assert_matches_model, ledger_rows, won


def at(y, m, d, h=12):
    return datetime(y, m, d, h, 0, tzinfo=timezone.utc)


def bonuses(crm, cid):
    return [(e.points, e.idempotency_key) for e in crm.loyalty.history(cid, "points") if e.kind == "bonus"]


def count(crm, table):
    with crm.unit(readonly=True) as uow:
        return uow.conn.execute(select(func.count()).select_from(table)).scalar_one()


# -- birthday ------------------------------------------------------------------------

def test_birthday_month_once_a_year(open_loyalty):
    crm = open_loyalty({"birthday": {"bonus": 88}})
    june5 = crm.customers.add(name="June 5", birthday=date(1990, 6, 5)).id
    june30 = crm.customers.add(name="June 30", birthday=date(1985, 6, 30)).id
    july = crm.customers.add(name="July", birthday=date(1990, 7, 1)).id
    crm.customers.add(name="Unknown")
    assert crm.loyalty.run(as_of=at(2026, 6, 10), scheme="birthday") == {"birthday": 2}
    assert crm.loyalty.run(as_of=at(2026, 6, 10), scheme="birthday") == {"birthday": 0}
    assert crm.loyalty.run(as_of=at(2026, 6, 29), scheme="birthday") == {"birthday": 0}  # same month, same year
    assert bonuses(crm, june5) == [(88, f"birthday:2026:{june5}")]
    assert bonuses(crm, june30) == [(88, f"birthday:2026:{june30}")]
    assert bonuses(crm, july) == []
    assert crm.loyalty.run(as_of=at(2027, 6, 1), scheme="birthday") == {"birthday": 2}  # a new year
    [entry] = [e for e in crm.loyalty.history(june5) if e.idempotency_key == f"birthday:2027:{june5}"]
    assert entry.details == {"scheme": "birthday"} and entry.expires_at == at(2028, 5, 31)
    assert_matches_model(crm)


def test_birthday_on_the_day_leap_day_and_timezone(crm_factory, clock):
    crm = crm_factory(plugins=["loyalty"], clock=clock, config={"timezone": "Asia/Shanghai",
                                                                 "loyalty": {"birthday": {"mode": "day"}}})
    leap = crm.customers.add(name="Leap", birthday=date(2000, 2, 29)).id
    first = crm.customers.add(name="July 1", birthday=date(1990, 7, 1)).id
    assert crm.loyalty.run(as_of=at(2027, 2, 27), scheme="birthday")["birthday"] == 0
    assert crm.loyalty.run(as_of=at(2027, 2, 28), scheme="birthday")["birthday"] == 1  # no 29 Feb in 2027
    assert crm.loyalty.run(as_of=at(2028, 2, 28), scheme="birthday")["birthday"] == 0  # 2028 has one
    assert crm.loyalty.run(as_of=at(2028, 2, 29), scheme="birthday")["birthday"] == 1
    assert len(bonuses(crm, leap)) == 2
    # 30 June 20:00 UTC is 1 July 04:00 in Shanghai: the July birthday.
    assert crm.loyalty.run(as_of=at(2026, 6, 30, 20), scheme="birthday")["birthday"] == 1
    assert len(bonuses(crm, first)) == 1


# -- referral -------------------------------------------------------------------------

def test_referral_bonus_for_both_on_the_first_won_deal(open_loyalty):
    crm = open_loyalty({"referral": {"referrer_bonus": 300, "referee_bonus": 100}, "points": {"tier_scheme": "none"}})
    alice, bob = crm.customers.add(name="Alice").id, crm.customers.add(name="Bob").id
    crm.loyalty.refer(bob, alice)
    deal = crm.deals.add(customer_id=bob, title="first", amount=Decimal("10"), stage="lead")
    assert bonuses(crm, alice) == bonuses(crm, bob) == []     # not won yet
    crm.deals.move(deal.id, "won")
    assert bonuses(crm, bob) == [(100, f"referral:{bob}:referee")]
    assert bonuses(crm, alice) == [(300, f"referral:{bob}:referrer")]
    won(crm, bob, "20")                                        # a second win pays nothing more
    assert crm.loyalty.run(scheme="referral") == {"referral": 0}
    assert crm.loyalty.balance(bob, "points") == 100 + 10 + 20
    assert crm.loyalty.balance(alice, "points") == 300
    assert_matches_model(crm)


def test_referral_catch_up_after_a_bulk_import(open_loyalty):
    crm = open_loyalty()
    alice, bob = crm.customers.add(name="Alice").id, crm.customers.add(name="Bob").id
    crm.loyalty.refer(bob, alice)
    crm.deals.add_many([{"customer_id": bob, "title": "imported", "amount": Decimal("5"), "stage": "won"}])
    assert bonuses(crm, alice) == []                           # bulk paths fire no per-deal event
    assert crm.loyalty.run(scheme="referral") == {"referral": 2}
    assert crm.loyalty.run(scheme="referral") == {"referral": 0}
    assert [p for p, _ in bonuses(crm, alice)] == [500]


def test_refused_referrals_change_nothing(open_loyalty):
    crm = open_loyalty()
    a, b, c, d = (crm.customers.add(name=n).id for n in "ABCD")
    crm.loyalty.refer(b, a)                                    # A referred B
    crm.loyalty.refer(c, b)                                    # B referred C
    won(crm, d, "5")
    before = (ledger_rows(crm), count(crm, referrals))
    cases = [((a, a), "cannot refer itself"), ((a, c), "referral loop"), ((a, b), "referral loop"),
             ((b, d), "already referred by customer"), ((d, a), "already has a won deal")]
    for (referee, referrer), message in cases:
        with pytest.raises(ValidationError, match=message):
            crm.loyalty.refer(referee, referrer)
    with pytest.raises(Exception, match="not found"):
        crm.loyalty.refer(a, 999)
    assert (ledger_rows(crm), count(crm, referrals)) == before


# -- rewards --------------------------------------------------------------------------

CATALOGUE = {"rewards": {"catalogue": [
    {"name": "mug", "cost": 100, "stock": 2, "code_valid_days": 30},
    {"name": "poster", "cost": 50, "valid_until": "2026-01-31"},
    {"name": "voucher", "cost": 500}]}, "points": {"tier_scheme": "none"}}


def test_redeem_a_reward_issues_a_code(open_loyalty, clock):
    crm = open_loyalty(CATALOGUE)
    cid = crm.customers.add(name="Fan").id
    crm.loyalty.adjust(cid, 250, "points", reason="start")
    issued = crm.loyalty.redeem_reward(cid, "mug")
    assert issued["reward"] == "mug" and issued["points"] == 100 and len(issued["code"]) == 14
    assert issued["valid_until"] == clock.now.replace(month=2, day=14)
    assert crm.loyalty.balance(cid, "points") == 150
    entry = crm.loyalty.history(cid)[-1]
    assert (entry.kind, entry.points, entry.details["code"]) == ("redeem", -100, issued["code"])
    left = {r["name"]: r["left"] for r in crm.loyalty.rewards()}
    assert left == {"mug": 1, "poster": None, "voucher": None}
    assert_matches_model(crm)


def test_refused_redemptions_change_nothing(open_loyalty, clock):
    clock.at(at(2026, 2, 2))  # the poster was offered until 31 January
    crm = open_loyalty(CATALOGUE)
    rich, poor = crm.customers.add(name="Rich").id, crm.customers.add(name="Poor").id
    crm.loyalty.adjust(rich, 1000, "points", reason="start")
    crm.loyalty.adjust(poor, 30, "points", reason="start")
    crm.loyalty.redeem_reward(rich, "mug")
    crm.loyalty.redeem_reward(rich, "mug")
    before = (ledger_rows(crm), count(crm, reward_codes), count(crm, reward_stock))

    with pytest.raises(CRMError, match="'mug' is out of stock"):
        crm.loyalty.redeem_reward(rich, "mug")
    with pytest.raises(UnknownComponent, match=r"unknown reward 'cup' \(known: mug, poster, voucher\)"):
        crm.loyalty.redeem_reward(rich, "cup")
    with pytest.raises(CRMError, match="offered until 2026-01-31"):
        crm.loyalty.redeem_reward(rich, "poster")
    with pytest.raises(InsufficientPoints, match="has 30 points points; cannot redeem 500"):
        crm.loyalty.redeem_reward(poor, "voucher")
    with pytest.raises(InsufficientPoints):
        crm.loyalty.redeem(poor, 31, "points")
    for points in (1.5, 0, True):
        with pytest.raises(ValidationError, match="points"):
            crm.loyalty.adjust(poor, points, "points", reason="bad")
    for points in (-5, 0):
        with pytest.raises(ValidationError, match="points"):
            crm.loyalty.redeem(poor, points, "points")
    with pytest.raises(InsufficientPoints):
        crm.loyalty.adjust(poor, -31, "points", reason="too much")
    assert (ledger_rows(crm), count(crm, reward_codes), count(crm, reward_stock)) == before
    assert {r["name"]: r["left"] for r in crm.loyalty.rewards()}["mug"] == 0
