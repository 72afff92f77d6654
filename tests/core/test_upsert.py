"""crmcore.store.upsert on SQLite, PostgreSQL and MariaDB: insert-if-absent says truly whether it
inserted (psycopg gives no row count for ``ON CONFLICT DO NOTHING``: the helper once answered
False for every insert on PostgreSQL)."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from sqlalchemy import func, select

from crmcore.store.tables import customer_consents
from crmcore.store.upsert import insert_ignore


def test_insert_ignore_says_whether_it_inserted(crm_factory: Any) -> None:
    crm = crm_factory(plugins=[])
    customer = crm.customers.add(name="Upsert")
    row = {"customer_id": customer.id, "channel": "email", "purpose": "marketing", "granted": True,
           "source": "test", "recorded_at": datetime(2026, 12, 6, tzinfo=timezone.utc), "actor": None}
    with crm.engine.begin() as conn:
        assert insert_ignore(conn, customer_consents, row) is True
        assert insert_ignore(conn, customer_consents, {**row, "granted": False}) is False
        assert insert_ignore(conn, customer_consents, {**row, "channel": "sms"}) is True
    with crm.engine.connect() as conn:
        stored = conn.execute(select(customer_consents.c.channel, customer_consents.c.granted).where(
            customer_consents.c.customer_id == customer.id).order_by(customer_consents.c.channel)).all()
        assert [tuple(r) for r in stored] == [("email", True), ("sms", True)]
        assert conn.execute(select(func.count()).select_from(customer_consents)).scalar_one() == 2
