"""lifecycle, value-tier and geo against independent computations (pandas or
hand-worked examples), on every database the fixtures provide."""

from __future__ import annotations

import random
from datetime import datetime, timedelta, timezone
from decimal import Decimal

import pandas as pd
import pytest

from crmcore import ConfigError
from crmcore.testing import SegmenterContract
from crmcore_segments.geo import GeoSegmenter
from crmcore_segments.lifecycle import LifecycleSegmenter
from crmcore_segments.value_tier import NO_REVENUE, ValueTierSegmenter

UTC = timezone.utc
AS_OF = datetime(2026, 6, 30, 12, 0, tzinfo=UTC)


def members(crm, strategy, run_id=None):
    return {m["customer_id"]: m for m in crm.segments.members(strategy, run_id=run_id)}


# -- lifecycle -------------------------------------------------------------------------

def lifecycle_expected(stage: str, purchase_days: list[int], o: dict) -> str:
    """The documented rule table, written out again in plain Python."""
    if stage == "former":
        return "churned"
    if not purchase_days:
        return "lead"
    last, first = min(purchase_days), max(purchase_days)
    if last >= o["churned_days"]:
        return "churned"
    if last >= o["at_risk_days"]:
        return "at-risk"
    if len(purchase_days) >= o["loyal_orders"]:
        return "loyal"
    if first < o["new_days"]:
        return "new"
    return "active"


def test_lifecycle_matches_rule_table(crm_factory):
    crm = crm_factory(plugins=["segments"])
    rng = random.Random(11)
    people = []
    with crm.unit():
        for i in range(120):
            stage = rng.choice(["lead", "prospect", "customer", "customer", "former"])
            days = [rng.choice([0, 10, 89, 90, 91, 179, 180, 181, 364, 365, 366, 500])
                    for _ in range(rng.choice([0, 1, 2, 5, 6]))]
            c = crm.customers.add(name=f"C{i}", stage=stage)
            for d in days:
                crm.deals.add(customer_id=c.id, title="w", amount=Decimal("10"), stage="won",
                              closed_at=AS_OF - timedelta(days=d))
            crm.deals.add(customer_id=c.id, title="future", amount=Decimal("1"), stage="won",
                          closed_at=AS_OF + timedelta(days=1))  # after as_of: never counts
            people.append((c.id, stage, days))
    for options in ({}, {"new_days": 30, "at_risk_days": 90, "churned_days": 180, "loyal_orders": 2}):
        o = {"new_days": 90, "at_risk_days": 180, "churned_days": 365, "loyal_orders": 5} | options
        run = crm.segments.run("lifecycle", as_of=AS_OF, options=options)
        got = members(crm, "lifecycle", run.id)
        expected = {cid: lifecycle_expected(stage, days, o) for cid, stage, days in people}
        assert {cid: m["segment"] for cid, m in got.items()} == expected
        assert set(expected.values()) == {"lead", "new", "active", "loyal", "at-risk", "churned"}
        for cid, _, days in people:
            assert got[cid]["score"] == len(days)
            assert got[cid]["details"]["orders"] == len(days)
            if days:
                assert got[cid]["details"]["last_purchase_days"] == pytest.approx(min(days))


def test_lifecycle_bad_options(crm_factory):
    crm = crm_factory(plugins=["segments"])
    with pytest.raises(ConfigError, match=r"\[segments.lifecycle\]"):
        crm.segments.run("lifecycle", options={"at_risk_days": 400})
    with pytest.raises(ConfigError, match=r"loyal_orders"):
        crm.segments.run("lifecycle", options={"loyal_orders": 0})


# -- value tier --------------------------------------------------------------------------

def tier_expected(revenue: dict[int, Decimal], a: int, b: int) -> dict[int, str]:
    """pandas: sort by revenue desc, id asc; revenue ahead of each customer vs. the shares."""
    frame = pd.DataFrame({"id": list(revenue), "rev": [int(v * 10_000) for v in revenue.values()]})
    buyers = frame[frame.rev > 0].sort_values(["rev", "id"], ascending=[False, True])
    total = buyers.rev.sum()
    buyers["before"] = buyers.rev.cumsum() - buyers.rev
    buyers["tier"] = ["A" if x * 100 < a * total else "B" if x * 100 < (a + b) * total else "C"
                      for x in buyers.before]
    out = {cid: NO_REVENUE for cid in revenue}
    out.update(dict(zip(buyers.id, buyers.tier)))
    return out


def test_value_tier_matches_pandas(crm_factory):
    crm = crm_factory(plugins=["segments"])
    rng = random.Random(5)
    revenue: dict[int, Decimal] = {}
    windowed: dict[int, Decimal] = {}
    with crm.unit():
        for i in range(150):
            c = crm.customers.add(name=f"C{i}")
            revenue[c.id] = windowed[c.id] = Decimal(0)
            for _ in range(rng.choice([0, 1, 1, 2, 4])):
                amount = Decimal(rng.choice(["10", "99.99", "500", "500", "2500", "10000"]))  # ties on purpose
                days = rng.choice([1, 100, 400])
                crm.deals.add(customer_id=c.id, title="w", amount=amount, stage="won",
                              closed_at=AS_OF - timedelta(days=days))
                revenue[c.id] += amount
                if days < 365:
                    windowed[c.id] += amount
            crm.deals.add(customer_id=c.id, title="lost", amount=Decimal("99999"), stage="lost", closed_at=AS_OF)
    for options, rev, (a, b) in (({}, revenue, (80, 15)),
                                 ({"a_share": 50, "b_share": 30, "c_share": 20, "window_days": 365}, windowed,
                                  (50, 30))):
        run = crm.segments.run("value-tier", as_of=AS_OF, options=options)
        got = members(crm, "value-tier", run.id)
        expected = tier_expected(rev, a, b)
        assert {cid: m["segment"] for cid, m in got.items()} == expected
        assert {"A", "B", "C", NO_REVENUE} <= set(expected.values())
        for cid, m in got.items():
            assert Decimal(m["details"]["revenue"]) == rev[cid]


def test_value_tier_hand_worked_example(crm_factory):
    """Revenues 50, 30, 10, 5, 5 (total 100): ahead 0, 50, 80, 90, 95 -> A, A, B, B, C."""
    crm = crm_factory(plugins=["segments"])
    ids = []
    for amount in ("5", "50", "5", "30", "10"):
        c = crm.customers.add(name=f"R{amount}")
        ids.append(c.id)
        crm.deals.add(customer_id=c.id, title="w", amount=Decimal(amount), stage="won", closed_at=AS_OF)
    crm.customers.add(name="Nothing")
    crm.segments.run("value-tier", as_of=AS_OF)
    got = {m["customer_id"]: m["segment"] for m in crm.segments.members("value-tier")}
    # The 5s tie: the lower id (ids[0]) comes first, ahead 90 -> B; ids[2] ahead 95 -> C.
    assert [got[i] for i in ids] == ["B", "A", "C", "A", "B"]
    assert sorted(got.values()).count(NO_REVENUE) == 1


def test_value_tier_single_customer(crm_factory):
    single = crm_factory(plugins=["segments"])
    only = single.customers.add(name="Only")
    single.deals.add(customer_id=only.id, title="w", amount=Decimal("1"), stage="won", closed_at=AS_OF)
    single.segments.run("value-tier", as_of=AS_OF)
    assert single.segments.members("value-tier")[0]["segment"] == "A"


@pytest.mark.parametrize("options", [{"a_share": 70}, {"a_share": 0}, {"c_share": 100}])
def test_value_tier_bad_shares(crm_factory, options):
    crm = crm_factory(plugins=["segments"])
    with pytest.raises(ConfigError, match=r"\[segments.value-tier\]"):
        crm.segments.run("value-tier", options=options)


# -- geo ---------------------------------------------------------------------------------

def test_geo_levels_and_territories(crm_factory):
    crm = crm_factory(plugins=["segments"], config={"segments": {"geo": {"territories": {
        "华东": {"territory": "East", "owner": "li.wei"}, "华北": {"territory": "North"}}}}})
    places = [("CN", "华东", "上海"), ("CN", "华东", "杭州"), ("CN", "华北", "北京"), ("CN", "华南", "广州"),
              ("US", None, None), (None, "", "")]
    ids = [crm.customers.add(name=f"G{i}", country=c, region=r, city=t).id for i, (c, r, t) in enumerate(places)]
    crm.segments.run("geo", as_of=AS_OF)
    got = members(crm, "geo")
    assert [got[i]["segment"] for i in ids] == ["East", "East", "North", "Unassigned", "Unassigned", "Unassigned"]
    assert got[ids[0]]["details"] == {"country": "CN", "region": "华东", "city": "上海", "territory": "East",
                                      "owner": "li.wei"}
    assert got[ids[2]]["details"]["owner"] is None
    for level, expected in (("country", ["CN", "CN", "CN", "CN", "US", "Unknown"]),
                            ("city", ["上海", "杭州", "北京", "广州", "Unknown", "Unknown"])):
        run = crm.segments.run("geo", as_of=AS_OF, options={"level": level, "territories": {}})
        assert [members(crm, "geo", run.id)[i]["segment"] for i in ids] == expected
    explained = crm.segments.explain("geo", ids[3], run_id=run.id - 1)
    assert explained["segment"] == "CN" and "country" in explained["explanation"]["rule"]


def test_geo_bad_level(crm_factory):
    crm = crm_factory(plugins=["segments"])
    with pytest.raises(ConfigError, match="level"):
        crm.segments.run("geo", options={"level": "planet"})


# -- contracts -----------------------------------------------------------------------------

def seeded(crm_factory):
    crm = crm_factory(plugins=["segments"])
    for i in range(6):
        c = crm.customers.add(name=f"S{i}", region=["华东", "华北"][i % 2])
        if i % 3:
            crm.deals.add(customer_id=c.id, title="w", amount=Decimal(10 * i), stage="won",
                          closed_at=AS_OF - timedelta(days=30 * i))
    return crm


class TestLifecycleContract(SegmenterContract):
    @pytest.fixture
    def component(self):
        return LifecycleSegmenter()

    @pytest.fixture
    def seeded_crm(self, crm_factory):
        return seeded(crm_factory)


class TestValueTierContract(SegmenterContract):
    @pytest.fixture
    def component(self):
        return ValueTierSegmenter()

    @pytest.fixture
    def seeded_crm(self, crm_factory):
        return seeded(crm_factory)


class TestGeoContract(SegmenterContract):
    @pytest.fixture
    def component(self):
        return GeoSegmenter()

    @pytest.fixture
    def seeded_crm(self, crm_factory):
        return seeded(crm_factory)
