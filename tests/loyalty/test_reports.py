"""The loyalty reports against independent computations over the raw ledger
rows (pandas and the Python FIFO replay), plus the report contract."""

from __future__ import annotations

import random
from datetime import datetime, timezone
from decimal import Decimal

import pandas as pd
import pytest
from crmcore_loyalty.reports import (
    EarnBurnReport,
    LiabilityReport,
    TierDistributionReport,
    TopMembersReport,
)

from crmcore import InsufficientPoints
from crmcore.testing import ReportContract

from .conftest import fifo_model, ledger_rows, stored_balances, won

END = datetime(2026, 12, 31, 12, tzinfo=timezone.utc)


def seeded(open_loyalty, clock, seed=5):
    crm = open_loyalty({"points": {"expiry_days": 90, "tier_scheme": "none"}})
    rng = random.Random(seed)
    clock.at(datetime(2026, 1, 1, tzinfo=timezone.utc))
    customers = [crm.customers.add(name=f"M{i}").id for i in range(6)]
    for step in range(80):
        cid = rng.choice(customers)
        roll = rng.random()
        if roll < 0.45:
            won(crm, cid, str(rng.randint(1, 500)))
        elif roll < 0.7:
            try:
                crm.loyalty.redeem(cid, rng.randint(1, 300), "points")
            except InsufficientPoints:
                pass
        elif roll < 0.8:
            crm.loyalty.adjust(cid, rng.randint(1, 50), "points", reason="goodwill")
        elif roll < 0.9:
            crm.loyalty.expire()
        else:
            clock.advance(days=rng.randint(3, 25))
    clock.at(END)
    return crm


def test_liability_by_expiry_month(open_loyalty, clock):
    crm = seeded(open_loyalty, clock)
    as_of = datetime(2026, 5, 1, tzinfo=timezone.utc)
    result = crm.reports.run("loyalty-liability", as_of=as_of, options={"point_value": "0.02"})
    rows = [r for r in ledger_rows(crm) if r["occurred_at"] <= as_of]
    _, remaining = fifo_model(ledger_rows(crm))  # remaining now (the report reads current allocations)
    frame = pd.DataFrame([{"month": r["expires_at"].strftime("%Y-%m") if r["expires_at"] else "never",
                           "past": "yes" if r["expires_at"] and r["expires_at"] <= as_of else "",
                           "points": remaining[r["id"]]} for r in rows
                          if r["points"] > 0 and remaining[r["id"]] > 0])
    expected = frame.groupby(["month", "past"])["points"].agg(["count", "sum"]).reset_index()
    # By expiry month ("never" last), within a month the part already past its expiry first.
    ordered = sorted(expected.itertuples(index=False), key=lambda t: (t[0] == "never", t[0], t[1] != "yes"))
    got = [(r["expires"], r["batches"], r["points"], r["value"], r["past_due"]) for r in result.records()]
    assert got == [(m, int(c), int(s), int(s) * Decimal("0.02"), past) for m, past, c, s in ordered]
    assert got, "the seeded history should leave points outstanding"


def test_liability_flags_the_as_of_months_expired_batches(open_loyalty, clock):
    """A batch that expired earlier in the as-of month (the expiry job not run yet) is past due,
    like one of an earlier month; one expiring later in that month is not."""
    crm = open_loyalty({"points": {"expiry_days": 30, "tier_scheme": "none"}})
    cid = crm.customers.add(name="Due").id
    for moment, amount in ((datetime(2026, 2, 10, 9, tzinfo=timezone.utc), "100"),
                           (datetime(2026, 3, 2, 9, tzinfo=timezone.utc), "200"),
                           (datetime(2026, 3, 25, 9, tzinfo=timezone.utc), "300")):
        clock.at(moment)
        won(crm, cid, amount)
    as_of = datetime(2026, 4, 15, tzinfo=timezone.utc)
    batches = sorted((r["expires_at"], int(r["points"])) for r in ledger_rows(crm) if r["points"] > 0)
    assert [e.strftime("%Y-%m") for e, _ in batches] == ["2026-03", "2026-04", "2026-04"]
    assert batches[1][0] <= as_of < batches[2][0]
    result = crm.reports.run("loyalty-liability", as_of=as_of)
    got = [(r["expires"], r["batches"], r["points"], r["past_due"]) for r in result.records()]
    assert got == [("2026-03", 1, batches[0][1], "yes"), ("2026-04", 1, batches[1][1], "yes"),
                   ("2026-04", 1, batches[2][1], "")]
    assert any(f"{batches[0][1] + batches[1][1]:,} points" in note and "loyalty expire" in note
               for note in result.notes)


def test_earn_burn_by_month(open_loyalty, clock):
    crm = seeded(open_loyalty, clock)
    result = crm.reports.run("loyalty-earn-burn", as_of=END, options={"months": 12})
    frame = pd.DataFrame(ledger_rows(crm))
    frame["month"] = frame["occurred_at"].map(lambda d: d.strftime("%Y-%m"))
    frame["points"] = frame["points"].astype(int)
    table = frame.pivot_table(index="month", columns="kind", values="points", aggfunc="sum", fill_value=0)
    expected = [(month, int(row.get("earn", 0) + row.get("bonus", 0)), int(row.get("redeem", 0)),
                 int(row.get("expire", 0)), int(row.get("reverse", 0)), int(row.get("adjust", 0)),
                 int(row.sum())) for month, row in table.iterrows()]
    got = [tuple(r.values()) for r in result.records()]
    assert got == expected
    assert sum(r[6] for r in got) == sum(v for (c, s), v in stored_balances(crm).items() if s == "points")


def test_top_members(open_loyalty, clock):
    crm = seeded(open_loyalty, clock)
    result = crm.reports.run("loyalty-top-members", as_of=END, options={"limit": 3})
    balances = {c: v for (c, s), v in stored_balances(crm).items() if s == "points" and v > 0}
    earned: dict[int, int] = {}
    for row in ledger_rows(crm):
        if row["kind"] in ("earn", "bonus"):
            earned[row["customer_id"]] = earned.get(row["customer_id"], 0) + int(row["points"])
    top = sorted(balances, key=lambda c: (-balances[c], c))[:3]
    assert [(r["customer_id"], r["balance"], r["earned"]) for r in result.records()] == [
        (c, balances[c], earned.get(c, 0)) for c in top]


@pytest.fixture
def seeded_crm(open_loyalty, clock):
    return seeded(open_loyalty, clock, seed=9)


class LoyaltyReportContract(ReportContract):
    """The loyalty reports read the loyalty plugin's tables: its CRMs load the whole plugin."""

    @pytest.fixture
    def contract_crm(self, open_loyalty):
        return open_loyalty()


class TestLiabilityContract(LoyaltyReportContract):
    @pytest.fixture
    def component(self):
        return LiabilityReport()


class TestTiersReportContract(LoyaltyReportContract):
    shows_present_state = True  # "members per tier now": today's tiers whatever as_of says
    @pytest.fixture
    def component(self):
        return TierDistributionReport()


class TestEarnBurnContract(LoyaltyReportContract):
    @pytest.fixture
    def component(self):
        return EarnBurnReport()


class TestTopMembersContract(LoyaltyReportContract):
    shows_present_state = True  # ranks today's balances (only "earned" stops at as_of)
    @pytest.fixture
    def component(self):
        return TopMembersReport()
