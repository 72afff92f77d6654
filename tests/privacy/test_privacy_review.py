"""Defects found in review of issue 19 (personal data protection), each pinned by a test."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import inspect, select, table, text

from crmcore.domain.errors import ValidationError
from crmcore.store.sealed import MARK, new_key
from crmcore.store.tables import notify_outbox

SQLITE_ONLY = pytest.mark.parametrize("crm_db_url", ["sqlite"], indirect=True)
LOOKS_SEALED = MARK + "a$b$c@example.com"


def encrypted(crm_factory: Any, monkeypatch: Any, keys: list[str], plugins: list[str] | None = None,
              fields: tuple[str, ...] = ("email", "phone")) -> Any:
    monkeypatch.setenv("PRIVREV_KEYS", "\n".join(keys))
    return crm_factory(plugins=plugins or [], config={"privacy": {"encryption": {
        "fields": list(fields), "key_env": "PRIVREV_KEYS"}}})


def everything(crm: Any) -> str:
    with crm.engine.connect() as conn:
        return "\n".join(f"{name}: {tuple(row)!r}" for name in sorted(inspect(conn).get_table_names())
                         for row in conn.execute(select(text("*")).select_from(table(name))))


@SQLITE_ONLY
@pytest.mark.parametrize("keyed", [False, True])
def test_a_value_that_looks_sealed_is_rejected_or_sealed(crm_factory: Any, monkeypatch: Any, keyed: bool) -> None:
    crm = encrypted(crm_factory, monkeypatch, [new_key()], ["notify"]) if keyed else crm_factory(plugins=[])
    with pytest.raises(ValidationError, match="encrypted value"):
        crm.customers.add(name="A", email=LOOKS_SEALED)
    if keyed:  # a column written without validation still seals it: the row stays readable
        customer = crm.customers.add(name="B")
        with crm.unit() as uow:
            uow.outbox.enqueue("console", customer_id=customer.id, recipient=LOOKS_SEALED, subject="s", body="b")
        with crm.engine.connect() as conn:
            assert conn.execute(select(notify_outbox.c.recipient)).scalar_one() == LOOKS_SEALED
    assert crm.customers.list({}) is not None
