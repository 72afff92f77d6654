"""The points scheme's earn rules: multipliers (tier, region, channel, segment),
rounding, minimum, caps per deal and per period; the per-deal path, the bulk
import path and the batch earn job agree with hand-worked numbers and with an
independent pandas computation; a replayed batch job writes nothing."""

from __future__ import annotations

import random
from datetime import datetime, timezone
from decimal import ROUND_DOWN, Decimal

import pandas as pd
import pytest
from sqlalchemy import case, literal, null, select

import crmcore
from crmcore import ConfigError
from crmcore.store import tables

from .conftest import assert_matches_model, ledger_rows, won


class VipSegmenter(crmcore.Segmenter):
    """Customers in the luxury industry are in segment "vip", the others in "other" (SQL path)."""

    name = "vipseg"
    description = "vip tag"

    def select(self, ctx, options):
        c = tables.customers
        segment = case((c.c.industry == "luxury", literal("vip")), else_=literal("other"))
        return select(c.c.id.label("customer_id"), segment.label("segment"), null().label("score"),
                      null().label("details"))


class SegmentPlugin:
    __name__ = "vipseg_plugin"

    @crmcore.hookimpl
    def register_segmenters(self, register):
        register(VipSegmenter())


def earned(crm, cid):
    return [e.points for e in crm.loyalty.history(cid, "points") if e.kind == "earn"]


def test_multipliers_multiply(open_loyalty, clock):
    crm = open_loyalty({"points": {"multipliers": {"region": {"East": "2"}, "channel": {"referral": "1.5"},
                                                   "segment": {"vipseg:vip": "3"}}}},
                       extra_plugins=[SegmentPlugin()])
    star = crm.customers.add(name="Star", region="East", source="referral", industry="luxury").id
    east = crm.customers.add(name="East only", region="East").id
    plain = crm.customers.add(name="Plain", region="West", source="ads").id
    crm.segments.run("vipseg")
    won(crm, star, "1000.00")       # no tier yet: 1000 * 2 * 1.5 * 3 = 9000; then Silver (spend >= 1000)
    won(crm, star, "100.01")        # Silver 1.25: 100.01 * 2 * 1.5 * 3 * 1.25 = 1125.1125 -> 1125
    won(crm, east, "10.99")         # 21.98 -> 21
    won(crm, plain, "10.99")        # 10
    assert earned(crm, star) == [9000, 1125]
    assert earned(crm, east) == [21]
    assert earned(crm, plain) == [10]
    with crm.unit(readonly=True) as uow:
        assert uow.loyalty.tier(star, "tiers") == "Silver"


def test_half_up_with_multiplier(open_loyalty):
    crm = open_loyalty({"points": {"rounding": "half_up", "points_per_unit": "0.1",
                                   "multipliers": {"region": {"North": "1.5"}}, "tier_scheme": "none"}})
    cid = crm.customers.add(name="N", region="North").id
    won(crm, cid, "33.00")          # 33 * 0.1 * 1.5 = 4.95 -> 5
    won(crm, cid, "29.99")          # 4.4985 -> 4
    assert earned(crm, cid) == [5, 4]


def test_caps_per_deal_and_per_month(open_loyalty, clock):
    crm = open_loyalty({"points": {"cap_per_deal": 500, "cap_per_period": 1200, "tier_scheme": "none"}})
    cid = crm.customers.add(name="Capped").id
    clock.at(datetime(2026, 3, 2, tzinfo=timezone.utc))
    won(crm, cid, "1000")           # deal cap: 500
    clock.at(datetime(2026, 3, 10, tzinfo=timezone.utc))
    won(crm, cid, "450")            # 950 in March
    clock.at(datetime(2026, 3, 20, tzinfo=timezone.utc))
    won(crm, cid, "400")            # 250 left in March
    won(crm, cid, "400")            # nothing left: no entry at all
    clock.at(datetime(2026, 4, 1, tzinfo=timezone.utc))
    won(crm, cid, "300")            # April starts again
    assert earned(crm, cid) == [500, 450, 250, 300]
    assert_matches_model(crm)


def _raw_deals(crm_plain, rng, customers, n):
    """Won deals written without any loyalty scheme loaded (nothing earns)."""
    amounts = []
    for i in range(n):
        cid = rng.choice(customers)
        amount = Decimal(rng.randint(0, 200_000)) / 100
        month = rng.choice([5, 6])
        closed = datetime(2026, month, rng.randint(1, 28), rng.randint(0, 23), tzinfo=timezone.utc)
        deal = crm_plain.deals.add(customer_id=cid, title=f"d{i}", amount=amount, currency="USD", stage="won",
                                   closed_at=closed)
        amounts.append({"deal_id": deal.id, "customer_id": cid, "amount": amount, "closed_at": deal.closed_at})
    return amounts


def _expected_with_pandas(deals, regions, rate, factors, cap_deal, cap_period):
    """Points per deal, computed independently: exact Decimal per row, caps by pandas running sums."""
    frame = pd.DataFrame(deals)
    frame["factor"] = [factors.get(regions[c], Decimal(1)) for c in frame["customer_id"]]
    frame["raw"] = [int((a * rate * f).quantize(Decimal(1), rounding=ROUND_DOWN))
                    for a, f in zip(frame["amount"], frame["factor"])]
    frame["raw"] = frame["raw"].clip(upper=cap_deal)
    frame["month"] = [d.strftime("%Y-%m") for d in frame["closed_at"]]
    frame = frame.sort_values(["customer_id", "month", "closed_at", "deal_id"])
    frame["before"] = frame.groupby(["customer_id", "month"])["raw"].cumsum() - frame["raw"]
    frame["points"] = (cap_period - frame["before"]).clip(lower=0).combine(frame["raw"], min)
    return {int(r.deal_id): int(r.points) for r in frame.itertuples() if r.points > 0}


def test_batch_earn_job_matches_pandas_and_replays_to_nothing(crm_factory, clock):
    rng = random.Random(11)
    plain = crm_factory(plugins=[], clock=clock)
    regions = {}
    customers = []
    for i in range(12):
        region = rng.choice(["East", "West", "South"])
        c = plain.customers.add(name=f"C{i}", region=region).id
        regions[c] = region
        customers.append(c)
    deals = _raw_deals(plain, rng, customers, 150)
    config = {"points": {"points_per_unit": "0.5", "multipliers": {"region": {"East": "2", "South": "1.25"}},
                         "cap_per_deal": 700, "cap_per_period": 1500, "tier_scheme": "none"}}
    crm = crm_factory(plugins=["loyalty"], config={"loyalty": config}, clock=clock)
    clock.at(datetime(2026, 7, 1, tzinfo=timezone.utc))

    written = crm.loyalty.earn_won_deals(scheme="points")
    expected = _expected_with_pandas(deals, regions, Decimal("0.5"), {"East": Decimal(2), "South": Decimal("1.25")},
                                     700, 1500)
    rows = [r for r in ledger_rows(crm) if r["kind"] == "earn"]
    assert {r["deal_id"]: int(r["points"]) for r in rows} == expected
    assert written == {"points": len(expected)}
    assert all(r["idempotency_key"] == f"points:deal:{r['deal_id']}:earn:batch" for r in rows)
    assert all(r["expires_at"] == r["occurred_at"].replace(year=2027) for r in rows)  # 365 days, no leap day
    assert crm.loyalty.earn_won_deals(scheme="points") == {"points": 0}
    assert len(ledger_rows(crm)) == len(rows)
    assert_matches_model(crm)


def test_bulk_import_earns_like_single_deals(open_loyalty, clock):
    config = {"points": {"multipliers": {"region": {"East": "1.5"}}, "cap_per_deal": 1000, "tier_scheme": "none"}}
    crm = open_loyalty(config)
    east = crm.customers.add(name="E", region="East").id
    west = crm.customers.add(name="W", region="West").id
    crm.deals.add_many([{"customer_id": east, "title": "a", "amount": Decimal("99.99"), "stage": "won"},
                        {"customer_id": west, "title": "b", "amount": Decimal("5000"), "stage": "won"},
                        {"customer_id": west, "title": "c", "amount": Decimal("5"), "stage": "lead"}])
    assert earned(crm, east) == [149]      # 149.985 down
    assert earned(crm, west) == [1000]     # capped
    assert {e.idempotency_key.rsplit(":", 1)[1] for c in (east, west) for e in crm.loyalty.history(c)} == {"import"}
    assert crm.loyalty.earn_won_deals() == {s: 0 for s in crm.loyalty.registry.names()}  # nothing left to catch up


def test_batch_job_skips_deals_that_earned_by_a_stage_change(open_loyalty):
    crm = open_loyalty({"points": {"tier_scheme": "none"}})
    cid = crm.customers.add(name="Once").id
    won(crm, cid, "100")
    assert crm.loyalty.earn_won_deals()["points"] == 0
    assert earned(crm, cid) == [100]


@pytest.mark.parametrize("options, message", [
    ({"multipliers": {"country": {"CN": "2"}}}, "unknown dimension 'country'"),
    ({"multipliers": {"region": {"East": "0"}}}, "must be positive"),
    ({"multipliers": {"segment": {"vip": "2"}}}, "'strategy:segment'"),
    ({"cap_per_deal": 0}, "cap_per_deal"),
    ({"period": "week"}, "period"),
])
def test_bad_rule_options(open_loyalty, options, message):
    with pytest.raises(ConfigError, match=r"\[loyalty.points\].*" + message.replace("(", r"\(")):
        open_loyalty({"points": options})
