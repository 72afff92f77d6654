"""Issue 19: with field encryption on, a stored idempotent API response holds no readable sealed
value (email, phone, birthday, a sealed custom field), and its replay is the first response."""

from __future__ import annotations

import os
from pathlib import Path

from sqlalchemy import inspect, select, table, text

from crmcore.store.sealed import new_key

from .conftest import Api

os.environ.setdefault("PRIVFIELDS_API_KEY", new_key())  # the server process inherits it
API_TOML = """
[[custom_fields]]
entity = "customer"
name = "passport_no"

[privacy.encryption]
fields = ["email", "phone", "birthday", "custom.passport_no"]
key_env = "PRIVFIELDS_API_KEY"
"""
PLANTED = {"email": "api.sealed.plant@example.com", "phone": "+8613977778888", "birthday": "1979-04-26",
           "passport_no": "PP-API-PLANT-5521"}


def test_an_idempotent_create_stores_no_readable_sealed_value(api: Api) -> None:
    client = api.client("ann")
    body = {"name": "Api Sealed", "email": PLANTED["email"], "phone": PLANTED["phone"],
            "birthday": PLANTED["birthday"], "attributes": {"passport_no": PLANTED["passport_no"]}}
    headers = {"Idempotency-Key": "sealed-create-1"}
    first = client.post("/customers", json=body, headers=headers)
    again = client.post("/customers", json=body, headers=headers)
    assert first.status_code == again.status_code == 201, first.text
    assert first.json() == again.json() and again.headers["idempotency-replayed"] == "true"
    assert first.json()["attributes"]["passport_no"] == PLANTED["passport_no"]
    assert first.json()["birthday"] == PLANTED["birthday"]
    with api.crm.engine.connect() as conn:
        stored = "\n".join(repr(tuple(row)) for name in sorted(inspect(conn).get_table_names())
                           for row in conn.execute(select(text("*")).select_from(table(name))))
    assert "sealed-create-1" in stored  # the response is stored ...
    assert [v for v in PLANTED.values() if v in stored] == []  # ... sealed
    if api.crm.engine.dialect.name == "sqlite":
        api.crm.privacy.compact()
        database = Path(str(api.crm.engine.url.database))
        data = b"".join(p.read_bytes() for p in database.parent.glob(database.name + "*"))
        assert [v for v in PLANTED.values() if v.encode() in data] == []
