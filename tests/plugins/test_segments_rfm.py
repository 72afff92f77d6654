"""The ``rfm`` segmenter against an independent pandas computation.

The expected scores are computed from the Python-side generated data only
(pandas ``rank(method="min")``), never from what the plugin stored, and the
named segments from the grid written out in the plugin's documentation.
"""

from __future__ import annotations

import random
from datetime import datetime, timedelta, timezone
from decimal import Decimal

import pandas as pd
import pytest

from crmcore import ConfigError
from crmcore.testing import SegmenterContract
from crmcore_segments import NO_PURCHASES, RFMSegmenter, segment_for

UTC = timezone.utc
AS_OF = datetime(2026, 6, 30, 18, 0, tzinfo=UTC)

# The grid from crmcore_segments.names, rows R = 5..1, columns FM = (F + M) // 2 = 1..5.
GRID = {
    5: ["New", "Potential Loyalist", "Loyal", "Champions", "Champions"],
    4: ["Promising", "Potential Loyalist", "Loyal", "Champions", "Champions"],
    3: ["About to Sleep", "About to Sleep", "Need Attention", "Loyal", "Loyal"],
    2: ["Hibernating", "Hibernating", "At Risk", "At Risk", "At Risk"],
    1: ["Lost", "Lost", "At Risk", "Can't Lose", "Can't Lose"],
}


def grid_segment(r: int, f: int, m: int) -> str:
    return GRID[r][(f + m) // 2 - 1]


# -- data ------------------------------------------------------------------------

# Few distinct values, so ties in last purchase, count and total are common.
AMOUNTS = [Decimal("0.00"), Decimal("99.00"), Decimal("250.00"), Decimal("250.50"), Decimal("1000.00"),
           Decimal("1234.56")]
DAYS_BEFORE = list(range(-30, 720, 15))  # negative: closed after as_of
STAGES = {  # pipeline -> stages to draw from, won ones listed twice (more revenue)
    "default": ["won", "won", "won", "lost", "negotiation", "lead"],
    "b2b": ["signed", "signed", "won", "dropped", "intro"],  # b2b "won" is an OPEN stage
}


def won_stages(pipelines: dict) -> set[tuple[str, str]]:
    return {(p, s["name"]) for p, table in pipelines.items() for s in table["stages"]
            if s.get("outcome") == "won"}


def generate(seed: int, customers: int) -> list[dict]:
    """Deals for customers 0..customers-1 (as indexes), plain Python values."""
    rng = random.Random(seed)
    deals = []
    for index in range(customers):
        kind = rng.random()
        if kind < 0.12:
            continue  # no deals at all
        count = rng.randint(1, 6)
        for _ in range(count):
            pipeline = "b2b" if rng.random() < 0.2 else "default"
            stage = rng.choice(STAGES[pipeline])
            if kind < 0.2:  # some customers have only deals that are not won
                stage = {"default": "lost", "b2b": "won"}[pipeline]
            closed = stage not in ("negotiation", "lead", "intro") and not (pipeline == "b2b" and stage == "won")
            when = AS_OF.replace(hour=9) - timedelta(days=rng.choice(DAYS_BEFORE))
            deals.append({
                "customer": index, "pipeline": pipeline, "stage": stage,
                "amount": rng.choice(AMOUNTS), "currency": "USD" if rng.random() < 0.85 else "CNY",
                "closed_at": when if closed else None,
            })
    return deals


def load(crm, customers: int, deals: list[dict]) -> list[int]:
    """Store the generated data through the public API; returns customer ids by index."""
    with crm.unit():
        ids = [crm.customers.add(name=f"Customer {i}").id for i in range(customers)]
        for n, deal in enumerate(deals):
            crm.deals.add(customer_id=ids[deal["customer"]], title=f"Deal {n}", amount=deal["amount"],
                          currency=deal["currency"], pipeline=deal["pipeline"], stage=deal["stage"],
                          closed_at=deal["closed_at"])
    return ids


def expected_rfm(deals: list[dict], ids: list[int], pipelines: dict, as_of: datetime,
                 window_days: int | None = None, currency: str | None = None) -> pd.DataFrame:
    """Independent RFM: one row per customer with a purchase, indexed by customer id."""
    frame = pd.DataFrame(deals, columns=["customer", "pipeline", "stage", "amount", "currency", "closed_at"])
    won = won_stages(pipelines)
    mask = frame.apply(lambda d: (d["pipeline"], d["stage"]) in won and d["closed_at"] is not None
                       and d["closed_at"] <= as_of, axis=1) if len(frame) else pd.Series(dtype=bool)
    if window_days is not None and len(frame):
        start = as_of - timedelta(days=window_days)
        mask &= frame["closed_at"].map(lambda t: t is not None and t > start)
    if currency is not None and len(frame):
        mask &= frame["currency"] == currency
    bought = frame[mask].copy() if len(frame) else frame
    bought["customer_id"] = [ids[i] for i in bought["customer"]]
    bought["cents"] = [int(a * 10_000) for a in bought["amount"]]  # exact integers, not floats
    bought["closed_at"] = pd.to_datetime(list(bought["closed_at"]), utc=True)
    result = bought.groupby("customer_id").agg(last=("closed_at", "max"), frequency=("cents", "size"),
                                                scaled=("cents", "sum"))
    n = len(result)
    for column, score in (("last", "r"), ("frequency", "f"), ("scaled", "m")):
        rank = result[column].rank(method="min", ascending=True).astype(int)
        result[score] = 1 + (5 * (rank - 1)) // n
        result[f"{score}_rank"] = rank
    result["segment"] = [grid_segment(r, f, m) for r, f, m in zip(result.r, result.f, result.m)]
    return result


def check_run(crm, run, expected: pd.DataFrame, ids: list[int], as_of: datetime) -> None:
    members = {m["customer_id"]: m for m in crm.segments.members("rfm", run_id=run.id)}
    assert sorted(members) == sorted(ids), "every customer gets exactly one membership"
    assert run.members == len(ids)
    for customer_id in ids:
        member = members[customer_id]
        details = member["details"]
        if customer_id not in expected.index:
            assert member["segment"] == NO_PURCHASES
            assert member["score"] is None
            assert details is None
            continue
        row = expected.loc[customer_id]
        r, f, m = int(row.r), int(row.f), int(row.m)
        assert (details["r"], details["f"], details["m"]) == (r, f, m), f"customer {customer_id}"
        assert member["segment"] == row.segment
        assert member["score"] == r * 100 + f * 10 + m
        assert details["frequency"] == row.frequency
        assert details["monetary"] == f"{Decimal(int(row.scaled)) / 10_000:.4f}"  # exact text
        recency = (as_of - row["last"].to_pydatetime()).total_seconds() / 86400
        assert details["recency_days"] == pytest.approx(recency, abs=1e-6)


# -- the main check ----------------------------------------------------------------

@pytest.fixture
def rfm_crm(crm_factory, pipelines):
    return crm_factory(plugins=["segments"], config={"pipelines": pipelines})


def test_scores_and_segments_match_pandas(rfm_crm, pipelines):
    customers = 300
    deals = generate(seed=20260630, customers=customers)
    ids = load(rfm_crm, customers, deals)
    variants = [{}, {"window_days": 180}, {"currency": "usd"}, {"window_days": 365, "currency": "CNY"}]
    for options in variants:
        model_options = {k: v.upper() if k == "currency" else v for k, v in options.items()}
        expected = expected_rfm(deals, ids, pipelines, AS_OF, **model_options)
        # The data must exercise what the test is about.
        assert 20 < len(expected) < customers, options
        for score in ("r", "f", "m"):
            assert expected[f"{score}_rank"].duplicated().any(), f"no ties in {score} with {options}"
        run = rfm_crm.segments.run("rfm", as_of=AS_OF, options=options)
        check_run(rfm_crm, run, expected, ids, AS_OF)
    # The trap in the data: b2b deals in its open stage named "won" are not purchases.
    assert any(d["pipeline"] == "b2b" and d["stage"] == "won" for d in deals)
    assert any(d["closed_at"] and d["closed_at"] > AS_OF and d["stage"] in ("won", "signed") for d in deals)


def test_earlier_as_of_sees_fewer_purchases(rfm_crm, pipelines):
    deals = generate(seed=7, customers=120)
    ids = load(rfm_crm, 120, deals)
    as_of = AS_OF - timedelta(days=200)
    run = rfm_crm.segments.run("rfm", as_of=as_of)
    check_run(rfm_crm, run, expected_rfm(deals, ids, pipelines, as_of), ids, as_of)


# -- edge cases --------------------------------------------------------------------

def test_empty_database(crm_factory):
    crm = crm_factory(plugins=["segments"])
    run = crm.segments.run("rfm", as_of=AS_OF)
    assert run.members == 0
    assert crm.segments.members("rfm", run_id=run.id) == []


def test_customers_without_purchases(crm_factory):
    crm = crm_factory(plugins=["segments"])
    a = crm.customers.add(name="Only lost")
    crm.customers.add(name="Nothing")
    crm.deals.add(customer_id=a.id, title="x", amount=Decimal("10"), stage="lost", closed_at=AS_OF)
    crm.deals.add(customer_id=a.id, title="y", amount=Decimal("10"), stage="won",
                  closed_at=AS_OF + timedelta(seconds=1))  # after as_of
    run = crm.segments.run("rfm", as_of=AS_OF)
    assert run.counts == {NO_PURCHASES: 2}
    assert all(m["score"] is None for m in crm.segments.members("rfm"))


def test_single_customer(crm_factory):
    """n = 1: rank 1 scores 1 on every axis (the formula, applied literally)."""
    crm = crm_factory(plugins=["segments"])
    customer = crm.customers.add(name="Solo")
    crm.deals.add(customer_id=customer.id, title="x", amount=Decimal("99.99"), stage="won",
                  closed_at=AS_OF - timedelta(days=3))
    crm.segments.run("rfm", as_of=AS_OF)
    [member] = crm.segments.members("rfm")
    assert member["score"] == 111
    assert member["segment"] == grid_segment(1, 1, 1) == "Lost"
    assert member["details"]["monetary"] == "99.9900"
    assert member["details"]["recency_days"] == pytest.approx(3.0)


def test_all_values_tied(crm_factory):
    crm = crm_factory(plugins=["segments"])
    when = AS_OF - timedelta(days=10)
    with crm.unit():
        for i in range(12):
            customer = crm.customers.add(name=f"Twin {i}")
            for _ in range(2):
                crm.deals.add(customer_id=customer.id, title="x", amount=Decimal("50.00"), stage="won",
                              closed_at=when)
    run = crm.segments.run("rfm", as_of=AS_OF)
    members = crm.segments.members("rfm", run_id=run.id)
    assert {(m["score"], m["segment"]) for m in members} == {(111, "Lost")}
    assert all(m["details"]["frequency"] == 2 and m["details"]["monetary"] == "100.0000" for m in members)


def test_window_boundary(crm_factory):
    """A purchase exactly ``window_days`` before as_of is outside the window."""
    crm = crm_factory(plugins=["segments"])
    inside, edge = crm.customers.add(name="Inside"), crm.customers.add(name="Edge")
    crm.deals.add(customer_id=inside.id, title="x", amount=Decimal("1"), stage="won",
                  closed_at=AS_OF - timedelta(days=30) + timedelta(microseconds=1))
    crm.deals.add(customer_id=edge.id, title="x", amount=Decimal("1"), stage="won",
                  closed_at=AS_OF - timedelta(days=30))
    crm.segments.run("rfm", as_of=AS_OF, options={"window_days": 30})
    segments = {m["customer_id"]: m["segment"] for m in crm.segments.members("rfm")}
    assert segments[edge.id] == NO_PURCHASES
    assert segments[inside.id] != NO_PURCHASES
    crm.segments.run("rfm", as_of=AS_OF)  # no window: both count
    assert NO_PURCHASES not in {m["segment"] for m in crm.segments.members("rfm")}


def test_quintile_boundaries(crm_factory):
    """Ten customers with distinct totals: scores 1,1,2,2,3,3,4,4,5,5 (rank 3 -> 1 + 10//10 = 2)."""
    crm = crm_factory(plugins=["segments"])
    with crm.unit():
        ids = []
        for i in range(10):
            customer = crm.customers.add(name=f"C{i}")
            ids.append(customer.id)
            crm.deals.add(customer_id=customer.id, title="x", amount=Decimal(i + 1), stage="won",
                          closed_at=AS_OF - timedelta(days=1))
    crm.segments.run("rfm", as_of=AS_OF)
    m_scores = {m["customer_id"]: m["details"]["m"] for m in crm.segments.members("rfm")}
    assert [m_scores[i] for i in ids] == [1, 1, 2, 2, 3, 3, 4, 4, 5, 5]


@pytest.mark.parametrize("totals", [[1, 2], [1, 2, 3], [3, 1, 1, 2], [5, 4, 3, 2, 1], [1, 1, 2, 2, 3, 3, 9]])
def test_few_buyers_quintiles(crm_factory, totals):
    """Fewer buyers than quintiles, and a few more with ties: several cut positions fall on the
    same row (n < 5) and the scores still follow ``1 + 5 * (rank_min - 1) // n``."""
    crm = crm_factory(plugins=["segments"])
    with crm.unit():
        ids = []
        for i, total in enumerate(totals):
            customer = crm.customers.add(name=f"C{i}")
            ids.append(customer.id)
            crm.deals.add(customer_id=customer.id, title="x", amount=Decimal(total), stage="won",
                          closed_at=AS_OF - timedelta(days=1 + i))
    crm.segments.run("rfm", as_of=AS_OF)
    details = {m["customer_id"]: m["details"] for m in crm.segments.members("rfm")}
    n = len(totals)
    expected_m = [1 + 5 * sum(other < total for other in totals) // n for total in totals]
    # recency: customer i bought i + 1 days before as_of, so later customers are older (lower rank)
    expected_r = [1 + 5 * (n - 1 - i) // n for i in range(n)]
    assert [details[i]["m"] for i in ids] == expected_m
    assert [details[i]["r"] for i in ids] == expected_r
    assert {details[i]["f"] for i in ids} == {1}


@pytest.mark.parametrize("options", [{"window_days": 0}, {"window_days": -5}, {"currency": "dollars"},
                                     {"bins": 4}, {"grid": "x"}])
def test_bad_options(crm_factory, options):
    crm = crm_factory(plugins=["segments"])
    with pytest.raises(ConfigError, match=r"\[segments.rfm\]"):
        crm.segments.run("rfm", as_of=AS_OF, options=options)


def test_options_from_configuration(crm_factory):
    crm = crm_factory(plugins=["segments"], config={"segments": {"rfm": {"window_days": 7}}})
    customer = crm.customers.add(name="Old buyer")
    crm.deals.add(customer_id=customer.id, title="x", amount=Decimal("5"), stage="won",
                  closed_at=AS_OF - timedelta(days=8))
    run = crm.segments.run("rfm", as_of=AS_OF)
    assert run.options["window_days"] == 7
    assert run.counts == {NO_PURCHASES: 1}


def test_segment_map_matches_documented_grid():
    for r in range(1, 6):
        for f in range(1, 6):
            for m in range(1, 6):
                assert segment_for(r, f, m) == grid_segment(r, f, m), (r, f, m)


# -- the contract every segmenter obeys ----------------------------------------------

class TestRFMContract(SegmenterContract):
    @pytest.fixture
    def component(self):
        return RFMSegmenter()

    @pytest.fixture
    def seeded_crm(self, crm_factory):
        crm = crm_factory(plugins=["segments"])
        deals = generate(seed=3, customers=25)
        load(crm, 25, [d for d in deals if d["pipeline"] == "default"])
        return crm


def test_registered_by_the_segments_plugin(crm_factory):
    crm = crm_factory(plugins=["segments"])
    info = {p.name: p for p in crm.plugin_info()}["segments"]
    assert info.distribution == "crmcore-segments"
    assert info.components == {"segmenters": ["geo", "lifecycle", "rfm", "rules", "value-tier"]}


# -- configuration: grid, no_purchases name, bin edges ---------------------------------

def test_configured_grid_and_no_purchases_name(crm_factory):
    grid = {str(r): [f"R{r}FM{fm}" for fm in range(1, 6)] for r in range(1, 6)}
    crm = crm_factory(plugins=["segments"], config={"segments": {"rfm": {"grid": grid,
                                                                           "no_purchases": "Prospects"}}})
    deals = generate(seed=21, customers=60)
    ids = load(crm, 60, [d for d in deals if d["pipeline"] == "default"])
    crm.segments.run("rfm", as_of=AS_OF)
    for member in crm.segments.members("rfm"):
        details = member["details"]
        if details is None:
            assert member["segment"] == "Prospects"
        else:
            fm = (details["f"] + details["m"]) // 2
            assert member["segment"] == f"R{details['r']}FM{fm}"
    assert len(crm.segments.members("rfm")) == len(ids)


@pytest.mark.parametrize("grid", [{"1": ["a"] * 5}, {str(r): ["a"] * 4 for r in range(1, 6)},
                                  {str(r): ["a", "b", "c", "d", ""] for r in range(1, 6)}])
def test_bad_grid(crm_factory, grid):
    crm = crm_factory(plugins=["segments"])
    with pytest.raises(ConfigError, match=r"\[segments.rfm\] grid"):
        crm.segments.run("rfm", as_of=AS_OF, options={"grid": grid})


def edge_score(value, edges, higher_is_better=True) -> int:
    """Hand-written: 1 + how many edges the value reaches."""
    if higher_is_better:
        return 1 + sum(value >= e for e in edges)
    return 1 + sum(value < e for e in edges)  # recency: fewer days is better


def test_bin_edges(crm_factory):
    """Scores from configured edges, checked by hand per customer (R from days, F, M)."""
    crm = crm_factory(plugins=["segments"])
    plan = {  # name: list of (days before as_of, amount)
        "fresh-big": [(1, "6000")], "edge-30": [(30, "100"), (400, "100")],
        "mid": [(100, "499.99"), (120, "0.01"), (130, "1")], "old-many": [(400, "1000")] * 10,
        "just-under-90": [(89, "5000")],
    }
    edges = {"recency_edges": [30, 90, 180, 365], "frequency_edges": "2, 3, 5, 10",
             "monetary_edges": ["100", "500", "1000", "5000"]}
    ids = {}
    with crm.unit():
        for name, purchases in plan.items():
            c = crm.customers.add(name=name)
            ids[name] = c.id
            for days, amount in purchases:
                crm.deals.add(customer_id=c.id, title="x", amount=Decimal(amount), stage="won",
                              closed_at=AS_OF - timedelta(days=days))
    run = crm.segments.run("rfm", as_of=AS_OF, options=edges)
    assert run.options["frequency_edges"] == [2, 3, 5, 10]
    got = {m["customer_id"]: m["details"] for m in crm.segments.members("rfm")}
    for name, purchases in plan.items():
        recency = min(days for days, _ in purchases)
        total = sum(Decimal(a) for _, a in purchases)
        expected = (edge_score(recency, [30, 90, 180, 365], higher_is_better=False),
                    edge_score(len(purchases), [2, 3, 5, 10]),
                    edge_score(total, [Decimal(x) for x in ("100", "500", "1000", "5000")]))
        d = got[ids[name]]
        assert (d["r"], d["f"], d["m"]) == expected, name
    assert (got[ids["edge-30"]]["r"], got[ids["just-under-90"]]["r"]) == (4, 4)
    # An axis without edges keeps quintiles (5 buyers: ranks 1..5 -> scores 1..5 for distinct values).
    crm.segments.run("rfm", as_of=AS_OF, options={"frequency_edges": [2, 3, 5, 10]})
    m_scores = sorted(m["details"]["m"] for m in crm.segments.members("rfm"))
    assert m_scores == [1, 2, 3, 4, 5]


@pytest.mark.parametrize("options", [{"recency_edges": [30, 20, 40, 50]}, {"frequency_edges": [1, 2, 3]},
                                     {"monetary_edges": "a b c d"}, {"monetary_edges": [-1, 2, 3, 4]}])
def test_bad_edges(crm_factory, options):
    crm = crm_factory(plugins=["segments"])
    with pytest.raises(ConfigError, match=r"\[segments.rfm\]"):
        crm.segments.run("rfm", as_of=AS_OF, options=options)


def test_explain_rfm(crm_factory):
    crm = crm_factory(plugins=["segments"])
    buyer, idle = crm.customers.add(name="Buyer"), crm.customers.add(name="Idle")
    crm.deals.add(customer_id=buyer.id, title="x", amount=Decimal("12.5"), stage="won",
                  closed_at=AS_OF - timedelta(days=2))
    crm.segments.run("rfm", as_of=AS_OF)
    found = crm.segments.explain("rfm", buyer.id)
    assert found["segment"] == "Lost"
    e = found["explanation"]
    assert (e["r"], e["f"], e["m"], e["monetary"], e["frequency"]) == (1, 1, 1, "12.5000", 1)
    assert e["recency_days"] == pytest.approx(2.0)
    assert "grid[1][1] = 'Lost'" in e["rule"]
    assert "no purchase" in crm.segments.explain("rfm", idle.id)["explanation"]["rule"]
