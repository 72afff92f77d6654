"""forecast, funnel, win-loss and sales-performance against pandas (tests/reports/expected.py)."""

from __future__ import annotations

from datetime import date, datetime, timedelta
from decimal import Decimal

import pytest

from crmcore.testing import FIXED_NOW

from . import expected
from .compare import assert_rows

AS_OFS = [datetime(2025, 3, 15, 0, 0, tzinfo=expected.UTC), datetime(2025, 11, 2, 7, 30, tzinfo=expected.UTC),
          FIXED_NOW]


def run(world, name, as_of=FIXED_NOW, **options):
    return world.crm.reports.run(name, as_of=as_of, options=options)


# -- forecast ----------------------------------------------------------------------------------

@pytest.mark.parametrize("currency", ["USD", "EUR", "JPY"])
def test_forecast(world, currency):
    for as_of in AS_OFS:
        result = run(world, "forecast", as_of, currency=currency)
        assert_rows(result.rows, expected.forecast(world, as_of, currency), (as_of, currency))
    rows = run(world, "forecast", currency=currency).rows
    assert rows and rows[-1][0] == "(no date)"  # deals without an expected close date are kept
    assert all(isinstance(v, Decimal) for row in rows for v in (row[1], row[3], row[4], row[5], row[6]))


def test_forecast_as_of_a_past_date_shows_the_deals_open_then(world):
    """Deals open at as_of and closed since are still in that forecast, at their stage's probability then."""
    as_of = AS_OFS[0]
    then = expected.stage_then(world, as_of)
    d = world.deals[(world.deals.created_at <= as_of) & (world.deals.currency == "USD")]
    closed_since = d[d.id.map(then).isin(expected.OPEN) & d.stage.isin(["won", "lost"])]
    assert len(closed_since) >= 2  # the generated data has such deals, so the comparison below sees them
    rows = run(world, "forecast", as_of).records()
    assert sum(r["open_deals"] for r in rows) == int(d.id.map(then).isin(expected.OPEN).sum())
    assert sum(r["open_amount"] for r in rows) == expected.money(
        int(d[d.id.map(then).isin(expected.OPEN)].scaled.sum()), "USD")


def test_forecast_filters_and_commit_threshold(world):
    result = run(world, "forecast", owner="alice", commit_probability=50)
    assert_rows(result.rows, expected.forecast(world, FIXED_NOW, commit=50, owner="alice"))
    result = run(world, "forecast", region="华东")
    assert_rows(result.rows, expected.forecast(world, FIXED_NOW, region="华东"))
    assert any("EUR" in note for note in run(world, "forecast").notes)  # other currencies are named


def test_forecast_before_any_deal_is_empty(world):
    assert run(world, "forecast", expected.T0 - timedelta(days=1) if hasattr(expected, "T0") else
               datetime(2024, 1, 1, tzinfo=expected.UTC)).rows == ()


# -- funnel ------------------------------------------------------------------------------------

def test_funnel(world):
    for as_of in AS_OFS:
        result = run(world, "funnel", as_of)
        assert_rows(result.rows, expected.funnel(world, as_of), as_of)
    rows = run(world, "funnel").rows
    assert [r[0] for r in rows] == ["lead", "qualified", "proposal", "negotiation", "won"]
    assert rows[0][1] > rows[-1][1] > 0
    assert result.charts[0].kind == "funnel"


def test_funnel_date_range_and_owner(world):
    start, end = date(2025, 3, 1), date(2025, 9, 30)
    result = run(world, "funnel", start=start, end=end, owner="bob")
    assert_rows(result.rows, expected.funnel(world, FIXED_NOW, start, end, owner="bob"))
    empty = run(world, "funnel", start=date(2030, 1, 1))
    assert [r[1] for r in empty.rows] == [0] * 5 and all(r[2] is None for r in empty.rows)


# -- win-loss ------------------------------------------------------------------------------------

@pytest.mark.parametrize("by", ["owner", "region"])
def test_win_loss(world, by):
    for as_of in AS_OFS[1:]:
        result = run(world, "win-loss", as_of, by=by)
        rows, reasons = expected.win_loss(world, as_of, by=by)
        assert_rows(result.rows, rows, (as_of, by))
        assert_rows(result.sections[0].rows, reasons, (as_of, by))
    assert result.rows[-1][0] == "(all)"
    assert any(r[0] == "王芳" for r in result.rows) or by == "region"


def test_win_loss_jpy_and_date_range(world):
    start, end = date(2025, 6, 1), date(2026, 1, 31)
    result = run(world, "win-loss", currency="jpy", start=start, end=end)
    rows, reasons = expected.win_loss(world, FIXED_NOW, "JPY", start=start, end=end)
    assert_rows(result.rows, rows)
    assert_rows(result.sections[0].rows, reasons)
    assert all(v is None or v == v.to_integral_value() for r in result.rows for v in r[4:7])  # yen have no cents


# -- sales performance -----------------------------------------------------------------------------

TARGETS = [
    {"owner": "alice", "period": "2025-03", "amount": "5000.00"},
    {"owner": "alice", "period": "2025-04", "amount": "7000.50"},
    {"owner": "bob", "period": "2025-Q2", "amount": "20000"},
    {"owner": "王芳", "period": "2026-06", "amount": "1000"},
    {"region": "华东", "period": "2025-Q3", "amount": "12345.67"},
    {"region": "West", "period": "2026-01", "amount": "800"},
]


def expected_targets(period: str) -> list[dict]:
    """The targets above as (bucket, who, amount): monthly ones add up into quarters; quarterly ones are not split."""
    found = []
    for t in TARGETS:
        year, _, rest = t["period"].partition("-")
        if rest.startswith("Q"):
            if period == "month":
                continue
            bucket = int(year) * 4 + int(rest[1]) - 1
        else:
            index = int(year) * 12 + int(rest) - 1
            bucket = index if period == "month" else index // 3
        found.append({"bucket": bucket, "owner": t.get("owner"), "region": t.get("region"), "amount": t["amount"]})
    return found


@pytest.mark.parametrize("period", ["month", "quarter"])
@pytest.mark.parametrize("by", ["owner", "region"])
def test_sales_performance(world, period, by):
    targets = [t for t in TARGETS if by in t]
    result = run(world, "sales-performance", period=period, by=by, targets=targets)
    want = expected.sales_performance(world, FIXED_NOW, period=period, by=by,
                                      targets=[t for t in expected_targets(period) if t[by] is not None])
    assert_rows(result.rows, want, (period, by))
    with_target = [r for r in result.rows if r[5] is not None]
    assert with_target and all(r[6] == expected.ratio(r[2], r[5]) for r in with_target)
    if period == "month" and by == "owner":
        assert any("quarterly target" in n for n in result.notes)


def test_sales_performance_targets_from_configuration_and_range(world):
    start, end = date(2025, 4, 1), date(2025, 9, 30)
    result = run(world, "sales-performance", period="quarter", targets=TARGETS[:3], start=start, end=end)
    want = expected.sales_performance(world, FIXED_NOW, period="quarter", start=start, end=end,
                                      targets=[t for t in expected_targets("quarter")[:3]])
    assert_rows(result.rows, want)
    assert {r[0] for r in result.rows} == {"2025-Q2", "2025-Q3"}
    bob = [r for r in result.rows if r[:2] == ("2025-Q2", "bob")]
    assert bob and bob[0][5] == Decimal("20000")
