"""The ``points`` scheme end to end through the core's loyalty engine.

Expected balances come from a plain Python model of the documented rules,
and every balance is also checked against an independent sum of the ledger.
"""

from __future__ import annotations

import random
from datetime import timedelta
from decimal import Decimal

import pytest

import crmcore
from crmcore import ConfigError, HookError, InsufficientPoints
from crmcore.testing import LoyaltySchemeContract
from crmcore_loyalty import PointsOptions, PointsScheme, points_for_amount


@pytest.fixture
def crm(crm_factory):
    return crm_factory(plugins=["loyalty"])


def new_deal(crm, customer_id: int, amount: str, stage: str = "negotiation", title: str = "Deal"):
    return crm.deals.add(customer_id=customer_id, title=title, amount=Decimal(amount), currency="USD",
                         stage=stage)


def ledger_sum(crm, customer_id: int) -> int:
    return sum(entry.points for entry in crm.loyalty.history(customer_id, "points"))


# -- earning ---------------------------------------------------------------------------

def test_won_deal_earns(crm):
    customer = crm.customers.add(name="Li Na")
    deal = new_deal(crm, customer.id, "1234.56")
    assert crm.loyalty.balance(customer.id, "points") == 0
    won = crm.deals.move(deal.id, "won")
    assert crm.loyalty.balance(customer.id, "points") == 1234
    [entry] = crm.loyalty.history(customer.id, "points")
    assert (entry.kind, entry.points, entry.deal_id) == ("earn", 1234, deal.id)
    assert entry.occurred_at == won.closed_at
    assert entry.expires_at == won.closed_at + timedelta(days=365)
    assert entry.idempotency_key.startswith(f"points:deal:{deal.id}:earn:")


def test_deal_created_won_earns(crm):
    customer = crm.customers.add(name="Direct")
    new_deal(crm, customer.id, "10.00", stage="won")
    assert crm.loyalty.balance(customer.id, "points") == 10


def test_earning_is_part_of_the_deal_transaction(crm):
    customer = crm.customers.add(name="Rollback")
    deal = new_deal(crm, customer.id, "500")
    with pytest.raises(RuntimeError, match="abort"):
        with crm.unit() as uow:
            crm.deals.move(deal.id, "won")
            assert uow.loyalty.balance(customer.id, "points") == 500  # earned inside...
            raise RuntimeError("abort")
    assert crm.loyalty.balance(customer.id, "points") == 0  # ...and gone with the rollback
    assert crm.loyalty.history(customer.id) == []
    assert crm.deals.get(deal.id).stage == "negotiation"


class FailOnTitle:
    """An event handler that refuses a deal titled "boom" (a later step of the same unit)."""

    @crmcore.hookimpl
    def on_deal_updated(self, uow, deal, previous):
        if deal.title == "boom":
            raise RuntimeError("refused by a later handler")


def test_later_handler_failure_rolls_back_points(crm_factory):
    crm = crm_factory(plugins=["loyalty"], extra_plugins=[FailOnTitle()])
    customer = crm.customers.add(name="Chain")
    first, second = new_deal(crm, customer.id, "100"), new_deal(crm, customer.id, "200")
    with pytest.raises(HookError, match="refused by a later handler"):
        with crm.unit():
            crm.deals.move(first.id, "won")  # earns 100 ...
            crm.deals.update(second.id, title="boom")  # ... then a handler raises
    assert crm.loyalty.balance(customer.id, "points") == 0
    assert crm.loyalty.history(customer.id) == []


class FailOnWon:
    """Raises in on_deal_stage_changed when a deal is won.

    The core fires on_deal_stage_changed *before* the loyalty engine earns, so
    this failure stops the move before any points are credited; the test above
    covers a failure after the credit.
    """

    @crmcore.hookimpl
    def on_deal_stage_changed(self, uow, deal, old, new, transition_id):
        if new is not None and new.outcome is crmcore.StageOutcome.WON:
            raise RuntimeError("no wins today")


def test_raising_stage_handler_blocks_the_move_and_the_points(crm_factory):
    crm = crm_factory(plugins=["loyalty"], extra_plugins=[FailOnWon()])
    customer = crm.customers.add(name="Blocked")
    deal = new_deal(crm, customer.id, "300")
    with pytest.raises(HookError, match="no wins today"):
        crm.deals.move(deal.id, "won")
    assert crm.deals.get(deal.id).stage == "negotiation"
    assert crm.loyalty.balance(customer.id, "points") == 0
    assert crm.loyalty.history(customer.id) == []


def test_replaying_a_transition_changes_nothing(crm):
    customer = crm.customers.add(name="Replay")
    deal = new_deal(crm, customer.id, "250")
    crm.deals.move(deal.id, "won")
    with crm.unit() as uow:
        deal = uow.deals.get(deal.id)
        transition = uow.deals.stage_history(deal.id)[-1]
        pipeline = crm.config.pipeline("default")
        for _ in range(3):  # e.g. a job re-delivering the same event
            crm.loyalty.deal_stage_changed(uow, deal, pipeline.stage(transition["from_stage"]),
                                           pipeline.stage("won"), transition["id"])
    assert crm.loyalty.balance(customer.id, "points") == 250
    assert len(crm.loyalty.history(customer.id)) == 1


# -- reversing -------------------------------------------------------------------------

def test_reopening_reverses_and_winning_again_earns_again(crm):
    customer = crm.customers.add(name="Reopen")
    deal = new_deal(crm, customer.id, "80")
    crm.deals.move(deal.id, "won")
    crm.deals.move(deal.id, "negotiation")
    assert crm.loyalty.balance(customer.id, "points") == 0
    assert [(e.kind, e.points) for e in crm.loyalty.history(customer.id)] == [("earn", 80), ("reverse", -80)]
    crm.deals.move(deal.id, "won")
    assert crm.loyalty.balance(customer.id, "points") == 80
    crm.deals.move(deal.id, "lost", lost_reason="cancelled")
    assert crm.loyalty.balance(customer.id, "points") == 0
    assert [e.points for e in crm.loyalty.history(customer.id)] == [80, -80, 80, -80]
    assert crm.loyalty.drift("points") == []


def test_moving_between_open_stages_does_nothing(crm):
    customer = crm.customers.add(name="Open")
    deal = new_deal(crm, customer.id, "80", stage="lead")
    crm.deals.move(deal.id, "proposal")
    crm.deals.move(deal.id, "lost", lost_reason="price")
    assert crm.loyalty.history(customer.id) == []


def test_reversal_after_partial_redemption_records_shortfall(crm):
    customer = crm.customers.add(name="Spender")
    deal = new_deal(crm, customer.id, "100")
    crm.deals.move(deal.id, "won")
    crm.loyalty.redeem(customer.id, 70, "points", reason="voucher")
    crm.deals.move(deal.id, "negotiation")
    assert crm.loyalty.balance(customer.id, "points") == 0  # never negative
    reverse = crm.loyalty.history(customer.id)[-1]
    assert (reverse.kind, reverse.points) == ("reverse", -30)
    assert reverse.details == {"requested": 100, "shortfall": 70}
    assert ledger_sum(crm, customer.id) == 0
    with pytest.raises(InsufficientPoints):
        crm.loyalty.redeem(customer.id, 1, "points")


# -- options ---------------------------------------------------------------------------

@pytest.mark.parametrize("options, amount, points", [
    ({}, "10.99", 10),
    ({"rounding": "half_up"}, "10.49", 10),
    ({"rounding": "half_up"}, "10.50", 11),
    ({"points_per_unit": "0.1"}, "19.99", 1),
    ({"points_per_unit": "0.1", "rounding": "half_up"}, "15.00", 2),
    ({"points_per_unit": "2.5"}, "3.30", 8),
    ({"minimum_amount": "100"}, "99.99", 0),
    ({"minimum_amount": "100"}, "100.00", 100),
    ({}, "0.99", 0),
])
def test_rounding_and_minimum(crm_factory, options, amount, points):
    crm = crm_factory(plugins=["loyalty"], config={"loyalty": {"points": options}})
    customer = crm.customers.add(name="Options")
    new_deal(crm, customer.id, amount, stage="won")
    assert crm.loyalty.balance(customer.id, "points") == points
    assert len(crm.loyalty.history(customer.id)) == (1 if points else 0)  # no zero entries


def test_points_for_amount_is_exact():
    # 0.1 * 3 in binary floating point is 0.30000000000000004; in Decimal it is 0.3.
    assert points_for_amount(Decimal("30"), PointsOptions(points_per_unit=Decimal("0.1"))) == 3
    assert points_for_amount(Decimal("2.5"), PointsOptions(rounding="half_up")) == 3
    assert points_for_amount(Decimal("1e6"), PointsOptions(points_per_unit=Decimal("0.001"))) == 1000


@pytest.mark.parametrize("days, expected", [(30, timedelta(days=30)), (0, None)])
def test_expiry(crm_factory, days, expected):
    crm = crm_factory(plugins=["loyalty"], config={"loyalty": {"points": {"expiry_days": days}}})
    customer = crm.customers.add(name="Expiry")
    deal = new_deal(crm, customer.id, "5", stage="won")
    [entry] = crm.loyalty.history(customer.id)
    assert entry.expires_at == (None if expected is None else deal.closed_at + expected)
    assert PointsScheme().expires_at(None, deal.closed_at, PointsOptions(expiry_days=None)) is None


@pytest.mark.parametrize("options", [{"rounding": "up"}, {"points_per_unit": "-1"}, {"points_per_unit": 1.5},
                                     {"minimum_amount": "-0.01"}, {"expiry_days": -1}, {"per_unit": 1}])
def test_bad_options(crm_factory, options):
    with pytest.raises(ConfigError, match=r"\[loyalty.points\]"):
        crm_factory(plugins=["loyalty"], config={"loyalty": {"points": options}})


# -- a random history against a model ----------------------------------------------------

def test_random_history_matches_model_and_ledger(crm_factory):
    """Seeded random wins, reopenings, losses, redemptions and adjustments.

    The model follows the documented rules: a win earns floor(amount) points;
    leaving won takes back what the deal still holds (earned less reversed),
    or what the balance has if less; redemptions beyond the balance fail.
    """
    # No tier benefits: the model is the points rule alone (tiers have their own tests).
    crm = crm_factory(plugins=["loyalty"], config={"loyalty": {"points": {"tier_scheme": "none"}}})
    rng = random.Random(42)
    customers = [crm.customers.add(name=f"Member {i}").id for i in range(6)]
    balance = {c: 0 for c in customers}
    held: dict[int, int] = {}  # deal id -> points the deal still holds (net of reversals)
    deals: dict[int, tuple[int, Decimal, str]] = {}  # deal id -> customer, amount, stage
    for step in range(160):
        action = rng.random()
        if action < 0.2 or not deals:
            customer = rng.choice(customers)
            amount = Decimal(rng.randint(0, 50_000)) / 100
            deal = new_deal(crm, customer, str(amount), stage=rng.choice(["lead", "negotiation"]),
                            title=f"step {step}")
            deals[deal.id] = (customer, amount, deal.stage)
        elif action < 0.7:
            deal_id = rng.choice(sorted(deals))
            customer, amount, stage = deals[deal_id]
            target = rng.choice(["won", "won", "negotiation", "lost"])
            if target == stage:
                continue
            crm.deals.move(deal_id, target, lost_reason="gone" if target == "lost" else None)
            if target == "won":
                earned = int(amount)  # points_per_unit 1, rounding down: the whole units
                balance[customer] += earned
                held[deal_id] = held.get(deal_id, 0) + earned
            elif stage == "won" and held.get(deal_id, 0) > 0:
                taken = min(held[deal_id], balance[customer])
                balance[customer] -= taken
                held[deal_id] -= taken
            deals[deal_id] = (customer, amount, target)
        elif action < 0.9:
            customer = rng.choice(customers)
            want = rng.randint(1, 800)
            if want <= balance[customer]:
                crm.loyalty.redeem(customer, want, "points")
                balance[customer] -= want
            else:
                with pytest.raises(InsufficientPoints):
                    crm.loyalty.redeem(customer, want, "points")
        else:
            customer = rng.choice(customers)
            change = rng.choice([-1, 1]) * rng.randint(1, 300)
            if balance[customer] + change >= 0:
                crm.loyalty.adjust(customer, change, "points", reason="goodwill")
                balance[customer] += change
            else:
                with pytest.raises(InsufficientPoints):
                    crm.loyalty.adjust(customer, change, "points", reason="correction")
        assert min(balance.values()) >= 0
    stored = crm.loyalty.balances("points")
    assert {c: stored.get(c, 0) for c in customers} == balance
    assert {c: ledger_sum(crm, c) for c in customers} == balance
    assert crm.loyalty.drift("points") == []
    kinds = {e.kind for c in customers for e in crm.loyalty.history(c)}
    assert {"earn", "reverse", "redeem", "adjust"} <= kinds


# -- contract --------------------------------------------------------------------------

class TestPointsContract(LoyaltySchemeContract):
    @pytest.fixture
    def component(self):
        return PointsScheme()


def test_registered_by_the_loyalty_plugin(crm):
    info = {p.name: p for p in crm.plugin_info()}["loyalty"]
    assert info.distribution == "crmcore-loyalty"
    assert info.components["loyalty_schemes"] == ["birthday", "points", "referral", "rewards", "tiers"]
    assert info.components["reports"] == ["loyalty-earn-burn", "loyalty-liability", "loyalty-tiers",
                                          "loyalty-top-members"]
    assert set(info.components["tables"]) == {"loyalty_tier_status", "loyalty_tier_changes", "loyalty_referrals",
                                              "loyalty_reward_stock", "loyalty_reward_codes"}
