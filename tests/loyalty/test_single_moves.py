"""A single won deal's loyalty work (issue 21, single writes): a handful of statements built once.

The one-customer tier evaluation, the referral check, the one-deal points select and the one-statement
credit stand in for general paths; each is checked against that general path (the set-based tier
evaluation finds nothing left to do, the earn select gives the same points), on every database.
"""

from __future__ import annotations

import random
from decimal import Decimal
from typing import Any

from sqlalchemy import event, select

from crmcore.store import tables

from .conftest import ledger_rows, stored_balances, won

LEVELS = [{"name": "Silver", "threshold": "1000", "earn_multiplier": "1.25"},
          {"name": "Gold", "threshold": "3000", "earn_multiplier": "1.5"}]


def _statements(crm: Any) -> list[str]:
    seen: list[str] = []

    def record(conn: Any, cursor: Any, statement: str, parameters: Any, context: Any, executemany: bool) -> None:
        seen.append(statement)
    event.listen(crm.engine, "before_cursor_execute", record)
    return seen


def _tiers(crm: Any) -> Any:
    return crm.loyalty.registry.get("tiers")


def _left_to_do(crm: Any, customer_id: int) -> int:
    """What the general evaluation (the few-customers path of ``evaluate``) would still change."""
    scheme = _tiers(crm)
    with crm.unit() as uow:
        return scheme.evaluate(crm.loyalty.context(uow), crm.loyalty.options(scheme), [customer_id])


def test_a_won_move_runs_a_handful_of_statements(open_loyalty):
    crm = open_loyalty({"tiers": {"levels": LEVELS}})
    cid = crm.customers.add(name="One", stage="lead").id
    first, second = (crm.deals.add(customer_id=cid, title=t, amount=Decimal(a), currency="USD", stage="proposal").id
                     for t, a in (("a", "1200"), ("b", "300")))
    seen = _statements(crm)
    crm.deals.move(first, "won")       # earns, promotes the buyer, and reaches Silver
    upgrade = [s for s in seen if not s.startswith(("BEGIN", "COMMIT", "SAVEPOINT", "RELEASE"))]
    seen.clear()
    crm.deals.move(second, "won")      # earns; 1500 is still Silver: nothing else
    plain = [s for s in seen if not s.startswith(("BEGIN", "COMMIT", "SAVEPOINT", "RELEASE"))]
    # SQLite and PostgreSQL: a credit's balance and a new tier account are one upsert each, a kept
    # owner is not looked up again (MariaDB keeps its read-first account paths: no next-key locks).
    upserts = crm.engine.dialect.name in ("sqlite", "postgresql")
    assert len(upgrade) <= (16 if upserts else 19), upgrade
    assert len(plain) <= (13 if upserts else 14), plain
    assert not any("users.email" in s for s in upgrade + plain)   # the stored owner is a login
    if upserts:
        writes = [[s for s in moved if s.startswith(("INSERT INTO loyalty_accounts", "UPDATE loyalty_accounts"))]
                  for moved in (upgrade, plain)]
        assert [len(w) for w in writes] == [2, 1] and all("ON CONFLICT" in s for w in writes for s in w)
    for moved in (upgrade, plain):
        assert sum("loyalty_referrals" in s for s in moved) == 1   # "was this customer referred?" only
        assert sum("sum(deals.amount)" in s for s in moved) == 1   # the tier metric, once
        assert not any("segment_runs" in s or "tmp_loyalty" in s for s in moved)
    assert not any("loyalty_tier_changes" in s for s in plain)
    assert crm.customers.get(cid).stage.value == "customer"
    assert crm.loyalty.balance(cid, "points") == 1200 + 375   # the second at Silver's 1.25
    with crm.unit(readonly=True) as uow:
        assert uow.loyalty.tier(cid, "tiers") == "Silver"


def test_one_customer_evaluation_leaves_nothing_for_the_general_one(open_loyalty, clock):
    """Random wins, losses and re-wins over two years, by spend and by points, with and without
    grace: after every move the general evaluation of that customer finds nothing to change."""
    rng = random.Random(21)
    for tiers in ({"levels": LEVELS, "grace_days": 30}, {"levels": LEVELS, "grace_days": 0},
                  {"levels": LEVELS, "basis": "points", "grace_days": 10}):
        crm = open_loyalty({"tiers": tiers})
        customers = [crm.customers.add(name=f"T{i}").id for i in range(3)]
        deals: list[int] = []
        for _ in range(24):
            clock.advance(days=rng.randint(5, 60))
            cid = rng.choice(customers)
            if deals and rng.random() < 0.4:
                deal = rng.choice(deals)
                stage = crm.deals.get(deal).stage
                crm.deals.move(deal, "lost" if stage == "won" else "won")
                cid = crm.deals.get(deal).customer_id
            else:
                deals.append(won(crm, cid, str(rng.randint(100, 2500))).id)
            assert _left_to_do(crm, cid) == 0, (tiers, cid)


def test_the_one_deal_select_earns_what_the_earn_select_does(open_loyalty):
    """The statement built once for one deal against the general select, with rounding, a minimum,
    caps, a region multiplier and tier benefits (the tier join made always vs when somebody holds a
    tier), before and after customers hold tiers."""
    crm = open_loyalty({"tiers": {"levels": LEVELS, "grace_days": 0},
                        "points": {"rounding": "half_up", "minimum_amount": "50", "cap_per_deal": 2000,
                                   "cap_per_period": 2500, "points_per_unit": "1.5",
                                   "multipliers": {"region": {"East": "1.2"}}}})
    customers = [crm.customers.add(name=f"P{i}", region=r).id for i, r in enumerate(("East", "West", None))]
    amounts = ["49.99", "50", "333.33", "1999.5", "2400", "10.01"]
    points = crm.loyalty.registry.get("points")
    options = crm.loyalty.options(points)
    for round_ in range(2):  # round 1: some customers hold Silver or Gold now
        for n, amount in enumerate(amounts):
            deal = crm.deals.add(customer_id=customers[n % 3], title=f"{round_}-{n}", amount=Decimal(amount),
                                 currency="USD", stage="won")
            with crm.unit() as uow:
                ctx = crm.loyalty.context(uow)
                general = uow.conn.execute(points.earn_select(ctx, options, [tables.deals.c.id == deal.id])).first()
                assert points.points_for_deal(uow, deal, options) == int(general.points), (round_, amount)
    with crm.unit(readonly=True) as uow:
        assert uow.conn.execute(select(tables.loyalty_accounts.c.tier).where(
            tables.loyalty_accounts.c.tier.is_not(None))).first() is not None


def test_credits_create_the_account_once_and_balances_follow_the_ledger(open_loyalty, clock):
    """The one-statement credit: an account that is not there is created holding the points,
    an existing one is raised; a replayed key changes nothing."""
    crm = open_loyalty()
    cid = crm.customers.add(name="New").id
    crm.loyalty.adjust(cid, 7, "points", reason="welcome", key="welcome:1")
    crm.loyalty.adjust(cid, 7, "points", reason="welcome", key="welcome:1")   # a replay
    won(crm, cid, "120")
    clock.advance(days=1)
    crm.loyalty.adjust(cid, 5, "points", reason="goodwill")
    assert crm.loyalty.balance(cid, "points") == 7 + 120 + 5
    totals: dict[tuple[int, str], int] = {}
    for row in ledger_rows(crm):
        key = (row["customer_id"], row["scheme"])
        totals[key] = totals.get(key, 0) + int(row["points"])
    assert {k: v for k, v in stored_balances(crm).items() if k[1] == "points"} == totals
