"""Report --from/--to days are days of the configured timezone (issue 13, point 6: one rule
for every input of time), on every database."""

from __future__ import annotations

from datetime import datetime, timezone
from decimal import Decimal

import pytest

NOW = datetime(2026, 6, 30, 12, tzinfo=timezone.utc)
# 17:30 UTC on 1 March is 01:30 on 2 March in Shanghai (UTC+8).
CLOSED = datetime(2026, 3, 1, 17, 30, tzinfo=timezone.utc)


def won(crm, day: str) -> int:
    rows = crm.reports.run("win-loss", options={"start": day, "end": day}).rows
    return next(row[1] for row in rows if row[0] == "(all)")


@pytest.mark.parametrize("zone, day_it_closed, day_before", [
    ("Asia/Shanghai", "2026-03-02", "2026-03-01"),
    ("UTC", "2026-03-01", "2026-02-28"),
    ("America/New_York", "2026-03-01", "2026-02-28"),  # 12:30 on 1 March in New York
])
def test_report_days_are_local_days(crm_factory, zone, day_it_closed, day_before):
    crm = crm_factory(plugins=["reports"], config={"timezone": zone}, clock=lambda: NOW)
    customer = crm.customers.add(name="Lin")
    crm.deals.add(customer_id=customer.id, title="a", amount=Decimal("10"), currency="USD", stage="won",
                  closed_at=CLOSED)
    assert won(crm, day_it_closed) == 1
    assert won(crm, day_before) == 0
