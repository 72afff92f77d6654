"""The ``pipeline`` report against an independent Python computation.

Deals are created and moved at known times (a hand-moved clock), so the
expected stage of every deal at any ``as_of`` comes from the generated
timeline, not from the database.
"""

from __future__ import annotations

import csv
import io
import json
import random
from datetime import datetime, timedelta, timezone
from decimal import ROUND_HALF_UP, Decimal

import pytest

import crmcore
from crmcore import ConfigError
from crmcore.testing import ReportContract
from crmcore_reports import PipelineReport

UTC = timezone.utc
T0 = datetime(2026, 1, 1, 9, 0, tzinfo=UTC)


# -- data ----------------------------------------------------------------------------------

def generate(seed: int, count: int, pipelines: dict) -> list[dict]:
    """Deals with a creation time, an optional custom probability and a stage timeline."""
    rng = random.Random(seed)
    deals = []
    for _ in range(count):
        pipeline = "b2b" if rng.random() < 0.25 else "default"
        stages = pipelines[pipeline]["stages"]
        open_stages = [s["name"] for s in stages if s.get("outcome", "open") == "open"]
        currency = rng.choice(["USD", "USD", "USD", "USD", "EUR", "JPY"])
        if currency == "JPY":
            amount = Decimal(rng.randint(0, 5_000_000))
        else:  # few distinct cents values would be boring: anything with two decimals
            amount = Decimal(rng.randint(0, 10_000_000)) / 100
        created = T0 + timedelta(days=rng.randint(0, 150), minutes=rng.randint(0, 1439))
        events = [(created, rng.choice(open_stages))]
        for _ in range(rng.choice([0, 0, 1, 1, 2, 3])):
            moved = events[-1][0] + timedelta(days=rng.randint(1, 40), seconds=rng.randint(0, 86399))
            events.append((moved, rng.choice([s["name"] for s in stages if s["name"] != events[-1][1]])))
        custom = rng.randint(0, 100) if rng.random() < 0.3 else None
        deals.append({"pipeline": pipeline, "currency": currency, "amount": amount, "probability": custom,
                      "events": events})
    return deals


def load(crm, clock, customer_id: int, deals: list[dict], pipelines: dict) -> None:
    """Replay each deal's timeline through the public API at the recorded times."""
    outcome = {(p, s["name"]): s.get("outcome", "open") for p, t in pipelines.items() for s in t["stages"]}
    for n, deal in enumerate(deals):
        (created, first), *moves = deal["events"]
        clock.now = created
        stored = crm.deals.add(customer_id=customer_id, title=f"Deal {n}", amount=deal["amount"],
                               currency=deal["currency"], pipeline=deal["pipeline"], stage=first,
                               probability=deal["probability"])
        for moved, stage in moves:
            clock.now = moved
            lost = outcome[deal["pipeline"], stage] == "lost"
            crm.deals.move(stored.id, stage, lost_reason="price" if lost else None)


def expected_rows(deals: list[dict], pipelines: dict, pipeline: str, currency: str, as_of: datetime,
                  include_closed: bool = True) -> list[tuple]:
    """(stage, outcome, probability, count, amount, weighted) per stage, computed in Python.

    The documented rule: a deal counts in the stage it was in at as_of, with its
    own probability while it is still in that stage, else the stage's configured
    one.  A deal's own probability is the custom one until its first move (a
    move resets it to the new stage's default).
    """
    stages = pipelines[pipeline]["stages"]
    configured = {s["name"]: s["probability"] for s in stages}
    totals = {s["name"]: [0, Decimal(0), Decimal(0)] for s in stages}
    ages: dict[str, list[float]] = {s["name"]: [] for s in stages}
    for deal in deals:
        events = deal["events"]
        if deal["pipeline"] != pipeline or deal["currency"] != currency or events[0][0] > as_of:
            continue
        entered, then = [(moment, stage) for moment, stage in events if moment <= as_of][-1]
        ages[then].append((as_of - entered).total_seconds() / 86400)
        current = events[-1][1]
        own = deal["probability"] if deal["probability"] is not None and len(events) == 1 else configured[current]
        probability = own if then == current else configured[then]
        total = totals[then]
        total[0] += 1
        total[1] += deal["amount"]
        total[2] += deal["amount"] * probability / 100
    def age(values, pick):
        return round(pick(values), 1) if values else None

    # Weighted amounts are money: the exact sum, rounded half-up once to the currency's digits.
    minor = Decimal(1).scaleb(-crmcore.currency_digits(currency))
    for total in totals.values():
        total[2] = total[2].quantize(minor, rounding=ROUND_HALF_UP)

    return [(s["name"], s.get("outcome", "open"), s["probability"], totals[s["name"]][0],
             age(ages[s["name"]], lambda v: sum(v) / len(v)), age(ages[s["name"]], max), *totals[s["name"]][1:])
            for s in stages if include_closed or s.get("outcome", "open") == "open"]


def same_rows(actual, expected) -> bool:
    """Rows equal, the ages (columns 4 and 5, rounded floats) within a rounding step."""
    if len(actual) != len(expected):
        return False
    for got, want in zip(actual, expected):
        got, want = tuple(got), tuple(want)
        if got[:4] + got[6:] != want[:4] + want[6:]:
            return False
        for a, b in zip(got[4:6], want[4:6]):
            if (a is None) != (b is None) or (a is not None and abs(a - b) > 0.051):
                return False
    return True


@pytest.fixture
def report_crm(crm_factory, clock, pipelines):
    return crm_factory(plugins=["reports"], clock=clock, config={"pipelines": pipelines})


@pytest.fixture
def seeded(report_crm, clock, pipelines):
    deals = generate(seed=2026, count=150, pipelines=pipelines)
    customer = report_crm.customers.add(name="Buyer")
    load(report_crm, clock, customer.id, deals, pipelines)
    return report_crm, deals


# -- numbers ---------------------------------------------------------------------------------

def test_matches_independent_computation(seeded, pipelines):
    crm, deals = seeded
    moments = sorted(moment for deal in deals for moment, _ in deal["events"])
    as_ofs = [T0 - timedelta(days=1), moments[len(moments) // 4], moments[len(moments) // 2],
              moments[len(moments) // 2] - timedelta(microseconds=1), T0 + timedelta(days=120),
              T0 + timedelta(days=400)]
    compared = 0
    for as_of in as_ofs:
        for pipeline in ("default", "b2b"):
            for currency in ("USD", "EUR", "JPY"):
                result = crm.reports.run("pipeline", as_of=as_of,
                                         options={"pipeline": pipeline, "currency": currency})
                expected = expected_rows(deals, pipelines, pipeline, currency, as_of)
                assert same_rows(result.rows, expected), (as_of, pipeline, currency, result.rows, expected)
                assert all(isinstance(row[6], Decimal) and isinstance(row[7], Decimal) for row in result.rows)
                compared += sum(row[3] for row in expected)
    assert compared > 300  # the comparison saw real data
    # Some deals moved after some of these moments: "as of" must not mean "now".
    assert any(len(d["events"]) > 1 for d in deals)

    # Open stages only.
    as_of = T0 + timedelta(days=90)
    result = crm.reports.run("pipeline", as_of=as_of, options={"include_closed": False})
    assert same_rows(result.rows, expected_rows(deals, pipelines, "default", "USD", as_of, include_closed=False))
    assert [r[0] for r in result.rows] == ["lead", "qualified", "proposal", "negotiation"]


def test_currency_defaults_to_configuration_and_others_are_noted(crm_factory, clock, pipelines):
    crm = crm_factory(plugins=["reports"], clock=clock,
                      config={"pipelines": pipelines, "default_currency": "EUR"})
    customer = crm.customers.add(name="Buyer")
    crm.deals.add(customer_id=customer.id, title="eur", amount=Decimal("100.00"), currency="EUR", stage="lead")
    crm.deals.add(customer_id=customer.id, title="usd", amount=Decimal("999.00"), currency="USD", stage="lead")
    crm.deals.add(customer_id=customer.id, title="jpy", amount=Decimal("5000"), currency="JPY", stage="lead")
    crm.deals.add(customer_id=customer.id, title="jpy2", amount=Decimal("7000"), currency="JPY", stage="won")
    result = crm.reports.run("pipeline")
    assert "EUR" in result.title
    lead = result.records()[0]
    assert (lead["stage"], lead["count"], lead["amount"], lead["weighted_amount"]) == (
        "lead", 1, Decimal("100"), Decimal("10"))
    assert any("2 in JPY" in note and "1 in USD" in note for note in result.notes)
    jpy = crm.reports.run("pipeline", options={"currency": "JPY"}).records()
    assert [(r["stage"], r["count"], str(r["amount"])) for r in jpy if r["count"]] == [
        ("lead", 1, "5000"), ("won", 1, "7000")]


def test_every_stage_has_a_row_even_when_empty(crm_factory, pipelines):
    crm = crm_factory(plugins=["reports"], config={"pipelines": pipelines})
    result = crm.reports.run("pipeline", options={"pipeline": "b2b"})
    assert [tuple(r) for r in result.rows] == [
        ("intro", "open", 5, 0, None, None, Decimal(0), Decimal(0)),
        ("won", "open", 60, 0, None, None, Decimal(0), Decimal(0)),
        ("signed", "won", 100, 0, None, None, Decimal(0), Decimal(0)),
        ("dropped", "lost", 0, 0, None, None, Decimal(0), Decimal(0)),
    ]
    assert result.notes == ()


def test_weighted_amount_is_exact(crm_factory):
    crm = crm_factory(plugins=["reports"])
    customer = crm.customers.add(name="Exact")
    for _ in range(3):  # 0.10 * 33% three times: floats would give 0.09900000000000001
        crm.deals.add(customer_id=customer.id, title="d", amount=Decimal("0.10"), currency="USD",
                      stage="proposal", probability=33)
    records = crm.reports.run("pipeline").records()
    proposal = [r for r in records if r["stage"] == "proposal"][0]
    assert str(proposal["amount"]) == "0.30"  # at the currency's minor unit
    # Money like amount: the exact 0.099 rounded once (per deal, 0.033 would give 0.09).
    assert str(proposal["weighted_amount"]) == "0.10"
    assert str(records[0]["amount"]) == "0.00" and str(records[0]["weighted_amount"]) == "0.00"  # empty stages too
    for _ in range(2):  # 0.30 * 35% = 0.105 exactly: half-up, not to even
        crm.deals.add(customer_id=customer.id, title="d", amount=Decimal("0.15"), currency="USD",
                      stage="negotiation", probability=35)
    crm.deals.add(customer_id=customer.id, title="yen", amount=Decimal("999"), currency="JPY",
                  stage="proposal", probability=33)
    negotiation = [r for r in crm.reports.run("pipeline").records() if r["stage"] == "negotiation"][0]
    assert str(negotiation["weighted_amount"]) == "0.11"
    jpy = crm.reports.run("pipeline", options={"currency": "JPY"}).records()
    assert [str(r["weighted_amount"]) for r in jpy if r["stage"] == "proposal"] == ["330"]  # 329.67, no decimals


def test_unknown_pipeline(crm_factory):
    crm = crm_factory(plugins=["reports"])
    with pytest.raises(ConfigError, match="unknown pipeline 'nope'"):
        crm.reports.run("pipeline", options={"pipeline": "nope"})


def test_bad_options(crm_factory):
    with pytest.raises(ConfigError, match=r"\[reports.pipeline\]"):
        crm_factory(plugins=["reports"], config={"reports": {"pipeline": {"currency": "dollars"}}})
    crm = crm_factory(plugins=["reports"])
    with pytest.raises(ConfigError, match="'XYZ' is not an ISO 4217 currency code"):
        crm.reports.run("pipeline", options={"currency": "xyz"})


# -- output ------------------------------------------------------------------------------------

def test_columns_chart_and_renderers(seeded):
    crm, _ = seeded
    as_of = T0 + timedelta(days=60)
    result = crm.reports.run("pipeline", as_of=as_of)
    assert [c.name for c in result.columns] == ["stage", "outcome", "probability", "count", "avg_days",
                                                "max_days", "amount", "weighted_amount"]
    [chart] = result.charts
    assert (chart.kind, chart.x, chart.y) == ("bar", "stage", ("amount",))

    table = crm.reports.render("pipeline", format="table", as_of=as_of)
    for row in result.rows:
        assert row[0] in table
    assert "weighted amount" in table

    rows = list(csv.reader(io.StringIO(crm.reports.render("pipeline", format="csv", as_of=as_of))))
    assert rows[0] == [c.name for c in result.columns]
    assert rows[1:] == [["" if v is None else str(v) for v in row] for row in result.rows]

    document = json.loads(crm.reports.render("pipeline", format="json", as_of=as_of))
    assert document["as_of"] == as_of.isoformat()
    assert [Decimal(r["weighted_amount"]) for r in document["rows"]] == [row[7] for row in result.rows]
    assert [r["amount"] for r in document["rows"]] == [str(row[6]) for row in result.rows]  # exact text
    assert document["charts"][0]["kind"] == "bar"


# -- contract ------------------------------------------------------------------------------------

class TestPipelineReportContract(ReportContract):
    @pytest.fixture
    def component(self):
        return PipelineReport()

    @pytest.fixture
    def seeded_crm(self, crm_factory, clock, pipelines):
        crm = crm_factory(plugins=["reports"], clock=clock, config={"pipelines": pipelines})
        customer = crm.customers.add(name="Buyer")
        load(crm, clock, customer.id, generate(seed=5, count=20, pipelines=pipelines), pipelines)
        return crm


def test_registered_by_the_reports_plugin(crm_factory):
    crm = crm_factory(plugins=["reports"])
    info = {p.name: p for p in crm.plugin_info()}["reports"]
    assert info.distribution == "crmcore-reports"
    assert info.components == {
        "reports": ["activity", "customer-value", "forecast", "funnel", "pipeline", "retention-cohorts",
                    "sales-performance", "segments", "service-quality", "win-loss"],
        "renderers": ["html", "markdown", "xlsx"]}


def test_deal_without_history_counts_in_its_current_stage(crm_factory, clock):
    """Deals loaded before stage history was recorded: current stage, aged since creation."""
    from crmcore.store import tables

    crm = crm_factory(plugins=["reports"], clock=clock)
    customer = crm.customers.add(name="Old data")
    clock.now = T0
    tracked = crm.deals.add(customer_id=customer.id, title="tracked", amount=Decimal("100.00"), currency="USD",
                            stage="lead")
    bare = crm.deals.add(customer_id=customer.id, title="bare", amount=Decimal("50.00"), currency="USD",
                         stage="lead")
    clock.now = T0 + timedelta(days=10)
    crm.deals.move(tracked.id, "proposal")
    crm.deals.move(bare.id, "proposal")
    history = tables.deal_stage_history
    with crm.unit() as uow:
        uow.conn.execute(history.delete().where(history.c.deal_id == bare.id))

    def stages(days: int) -> dict:
        records = crm.reports.run("pipeline", as_of=T0 + timedelta(days=days)).records()
        return {r["stage"]: (r["count"], str(r["amount"]), r["avg_days"], r["max_days"]) for r in records
                if r["count"]}

    # Before the move: the tracked deal was a lead; the bare one can only be shown where it is now.
    assert stages(5) == {"lead": (1, "100.00", 5.0, 5.0), "proposal": (1, "50.00", 5.0, 5.0)}
    # After it: both in proposal, the tracked one since its move, the bare one since creation.
    assert stages(20) == {"proposal": (2, "150.00", 15.0, 20.0)}
