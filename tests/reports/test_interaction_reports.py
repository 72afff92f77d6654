"""service-quality and activity against pandas (tests/reports/expected.py)."""

from __future__ import annotations

from datetime import date, datetime

import pytest

from crmcore import ConfigError
from crmcore.testing import FIXED_NOW

from . import expected
from .compare import assert_rows

AS_OFS = [datetime(2025, 6, 1, 12, 0, tzinfo=expected.UTC), FIXED_NOW]


def run(world, name, as_of=FIXED_NOW, **options):
    return world.crm.reports.run(name, as_of=as_of, options=options)


@pytest.mark.parametrize("by", ["channel", "owner", "region"])
def test_service_quality(world, by):
    for as_of in AS_OFS:
        result = run(world, "service-quality", as_of, by=by)
        assert_rows(result.rows, expected.service_quality(world, as_of, by=by), (as_of, by))
    total = result.rows[-1]
    assert total[0] == "(all)" and total[1] > 20 and total[3] > 0 and total[6] > 0 and total[10] > 0


def test_service_quality_sla_and_range(world):
    start, end = date(2025, 2, 1), date(2025, 12, 31)
    result = run(world, "service-quality", response_sla_hours=48, resolution_sla_hours="8", start=start, end=end)
    want = expected.service_quality(world, FIXED_NOW, response_sla=48, resolution_sla=8, start=start, end=end)
    assert_rows(result.rows, want)
    assert "within 48 h" in result.columns[5].label and "within 8 h" in result.columns[8].label
    with pytest.raises(ConfigError, match="resolution_sla_hours must be more than 0"):
        run(world, "service-quality", resolution_sla_hours=0)


@pytest.mark.parametrize("by", ["kind", "channel", "owner"])
def test_activity(world, by):
    for as_of in AS_OFS:
        result = run(world, "activity", as_of, by=by)
        assert_rows(result.rows, expected.activity(world, as_of, by=by), (as_of, by))
    assert result.charts[0].group == by


def test_overdue_follow_ups(world):
    for as_of in AS_OFS:
        result = run(world, "activity", as_of, limit=1000)
        want = expected.overdue_follow_ups(world, as_of)
        got = [(r[0], r[3], r[4], r[5]) for r in result.sections[0].rows]
        assert_rows(got, want, as_of)
        assert f"{len(want)} customer(s) with overdue follow-ups" in result.sections[0].notes[0]
    assert want, "the generated data has overdue follow-ups"
    limited = run(world, "activity", limit=1).sections[0]
    assert len(limited.rows) == 1 and "the 1 longest overdue shown" in limited.notes[0]


def test_activity_range_empty(world):
    result = run(world, "activity", start=date(2031, 1, 1))
    assert result.rows == ()
    assert_rows(run(world, "activity", start=date(2025, 5, 1), end=date(2025, 5, 31)).rows,
                expected.activity(world, FIXED_NOW, start=date(2025, 5, 1), end=date(2025, 5, 31)))
