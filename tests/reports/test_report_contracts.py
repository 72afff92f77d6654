"""Every first-party report passes the ReportContract a third-party author's report must pass."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest

from crmcore.testing import FIXED_NOW, ReportContract
from crmcore_reports import plugin


class TestFirstPartyReports(ReportContract):
    @pytest.fixture(params=plugin.REPORTS, ids=lambda cls: cls.name)
    def component(self, request):
        return request.param()

    @pytest.fixture
    def seeded_crm(self, crm_factory):
        crm = crm_factory(plugins=["reports"])
        customer = crm.customers.add(name="上海客户", region="华东", owner="alice")
        crm.deals.add(customer_id=customer.id, title="won", amount=Decimal("10.00"), stage="won", owner="alice",
                      closed_at=FIXED_NOW - timedelta(days=40))
        crm.deals.add(customer_id=customer.id, title="open", amount=Decimal("20.00"), stage="proposal")
        crm.interactions.add(customer_id=customer.id, kind="complaint", direction="inbound",
                             occurred_at=FIXED_NOW - timedelta(days=3), satisfaction=2)
        crm.interactions.add(customer_id=customer.id, kind="call", occurred_at=FIXED_NOW - timedelta(days=10),
                             follow_up_due=FIXED_NOW - timedelta(days=5))
        return crm
