"""Hostile rules (issue 14 point 2): constants beyond 64 bits and NUL bytes are rule errors with a column."""

from __future__ import annotations

from datetime import datetime, timezone
from decimal import Decimal

import pytest

from crmcore import CRMError

AS_OF = datetime(2026, 6, 30, tzinfo=timezone.utc)


@pytest.mark.parametrize("text", [
    "orders > 12345678901234567890123", "total_spend > 12345678901234567890123",
    "total_spend > 100000000000000000000000000000000000000000000000000000000.5",
    "orders in (1, 99999999999999999999999)", "total_spend in (1, 99999999999999999999999)",
    "avg_order_value > 12345678901234567890123", "orders < -12345678901234567890123",
    'name == "a\x00"', 'name == "\ud800"', "orders > 1\x00",
])
def test_hostile_rule_is_a_rule_error(crm_factory, text: str) -> None:
    crm = crm_factory(plugins=["segments"])
    customer = crm.customers.add(name="a")
    crm.deals.add(customer_id=customer.id, title="x", amount=Decimal("5"), stage="won", closed_at=AS_OF)
    with pytest.raises(CRMError) as err:
        crm.segments.run("rules", as_of=AS_OF, options={"rules": {"R": text}})
    assert "column" in str(err.value)
    assert crm.segments.runs() == []
