"""retention-cohorts, customer-value and segments against pandas (tests/reports/expected.py)."""

from __future__ import annotations

from datetime import date, datetime

import pytest

from crmcore import ConfigError
from crmcore.testing import FIXED_NOW

from . import expected
from .compare import assert_rows

AS_OFS = [datetime(2025, 8, 31, 23, 0, tzinfo=expected.UTC), FIXED_NOW]


def run(world, name, as_of=FIXED_NOW, **options):
    return world.crm.reports.run(name, as_of=as_of, options=options)


# -- retention cohorts -----------------------------------------------------------------------------

def test_retention_cohorts(world):
    for as_of in AS_OFS:
        result = run(world, "retention-cohorts", as_of)
        matrix, churn = expected.cohorts(world, as_of)
        assert_rows(result.rows, matrix, as_of)
        assert_rows(result.sections[0].rows, churn, as_of)
    assert [c.name for c in result.columns][:4] == ["cohort", "customers", "m0", "m1"]
    assert all(row[2] == 1 for row in result.rows)  # m0 is everybody
    assert result.rows[-1][3] is None  # the month after as_of is empty, not 0 %
    assert result.charts[0].kind == "heatmap"


def test_retention_cohorts_options(world):
    start, end = date(2025, 3, 1), date(2026, 2, 28)
    result = run(world, "retention-cohorts", months=4, start=start, end=end, currency="USD")
    matrix, churn = expected.cohorts(world, FIXED_NOW, months=4, start=start, end=end, currency="USD")
    assert_rows(result.rows, matrix)
    assert_rows(result.sections[0].rows, churn)
    assert len(result.columns) == 2 + 4
    before_anything = run(world, "retention-cohorts", datetime(2024, 6, 1, tzinfo=expected.UTC))
    assert before_anything.rows == () and before_anything.sections[0].rows == ()


# -- customer value ----------------------------------------------------------------------------------

@pytest.mark.parametrize("currency", ["USD", "EUR", "JPY"])
def test_customer_value(world, currency):
    for as_of in AS_OFS:
        result = run(world, "customer-value", as_of, currency=currency)
        deciles, summary, frequency = expected.customer_value(world, as_of, currency)
        assert_rows(result.rows, deciles, (as_of, currency))
        assert_rows(result.sections[0].rows, [summary], (as_of, currency))
        assert_rows(result.sections[1].rows, frequency, (as_of, currency))
    assert result.rows[-1][4] == 1  # the Pareto curve ends at 100 %
    assert result.sections[0].rows[0][5] >= expected.ratio(1, 10)  # the top 10 % hold at least 10 %


def test_customer_value_filters_and_empty_range(world):
    result = run(world, "customer-value", region="华北", owner="alice")
    deciles, summary, frequency = expected.customer_value(world, FIXED_NOW, region="华北", owner="alice")
    assert_rows(result.rows, deciles)
    assert_rows(result.sections[0].rows, [summary])
    empty = run(world, "customer-value", start=date(2030, 1, 1), end=date(2030, 12, 31))
    assert [r[1] for r in empty.rows] == [0] * 10 and all(r[3] is None for r in empty.rows)
    assert empty.sections[0].rows[0][:2] == (0, 0) and empty.sections[0].rows[0][3] is None


# -- segments ------------------------------------------------------------------------------------------

def test_segments_latest_run_and_movement(world):
    first, latest = world.runs
    result = run(world, "segments")
    rows, moves = expected.segments(world, FIXED_NOW, latest, first)
    assert_rows(result.rows, rows)
    assert_rows(result.sections[0].rows, moves)
    assert sum(r[1] for r in result.rows) == len(world.memberships[latest])
    assert any(b == "(none)" for b, _, _ in moves) and any(a == "(none)" for _, a, _ in moves)


def test_segments_explicit_runs_and_currency(world):
    first, latest = world.runs
    result = run(world, "segments", run=first, currency="EUR")
    rows, _ = expected.segments(world, FIXED_NOW, first, None, "EUR")
    assert_rows(result.rows, rows)
    assert result.sections == ()  # nothing before the first run
    result = run(world, "segments", run=first, compare=latest)
    _, moves = expected.segments(world, FIXED_NOW, first, latest)
    assert_rows(result.sections[0].rows, moves)


def test_unknown_segment_run(world):
    latest = world.runs[-1]
    with pytest.raises(ConfigError, match=rf"\[reports.segments\] run: segmentation run 999 not found "
                                          rf"\(latest runs: {latest}, "):
        run(world, "segments", run=999)
    with pytest.raises(ConfigError, match="compare: segmentation run 12345 not found"):
        run(world, "segments", compare=12345)


def test_segment_filter_on_other_reports(world):
    latest = world.runs[-1]
    members = {c for c, s in world.memberships[latest].items() if s == "A"}
    result = run(world, "customer-value", segment="A")
    deciles, summary, _ = expected.customer_value(world, FIXED_NOW, members=members)
    assert_rows(result.rows, deciles)
    first = world.runs[0]
    old = {c for c, s in world.memberships[first].items() if s == "B"}
    result = run(world, "forecast", segment=f"{first}:B")
    assert_rows(result.rows, expected.forecast(world, FIXED_NOW, members=old))
    with pytest.raises(ConfigError, match=r"\[reports.forecast\] segment: no segment 'Z' in the latest run "
                                          r"of any strategy; known: fixed:A, fixed:B, fixed:C"):
        run(world, "forecast", segment="Z")
    # STRATEGY:NAME, the core's reference, names the strategy's latest run.
    assert_rows(run(world, "customer-value", segment="fixed:A").rows, deciles)
    with pytest.raises(ConfigError, match="segmentation run 4242 not found"):
        run(world, "forecast", segment="4242:A")
