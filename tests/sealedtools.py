"""Helpers shared by the sealed bulk-import tests (tests/privacy on SQLite, tests/io on PostgreSQL's
COPY path); imported as a module, as tests/schema_cache.py is."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from crmcore.domain.validation import normalize_email
from crmcore.io import ImportOptions, import_file
from crmcore.store.sealed import new_key

#: 30 customers: (external id, email with capitals, phone, birthday).
SEALED_ROWS = [(f"C{i}", f"Sealed.{i}@Example.com", f"+86139{i:08d}", f"19{60 + i}-0{1 + i % 9}-1{i % 10}")
               for i in range(30)]


def sealing_crm(crm_factory: Any, monkeypatch: Any) -> Any:
    """A CRM sealing email, phone and birthday under a fresh key."""
    monkeypatch.setenv("PRIVTEST_KEYS", new_key())
    return crm_factory(config={"privacy": {"encryption": {"fields": ["email", "phone", "birthday"],
                                                          "key_env": "PRIVTEST_KEYS"}}})


def import_sealed_rows(crm: Any, tmp_path: Path, workers: int) -> None:
    """Import :data:`SEALED_ROWS` in batches of 7 with ``workers`` validation workers, and check
    every value reads back as validation normalised it and every phone finds its customer."""
    path = tmp_path / "sealed.csv"
    path.write_text("external_id,name,email,phone,birthday\n" + "".join(
        f"{ext},N {ext},{email},{phone},{day}\n" for ext, email, phone, day in SEALED_ROWS), encoding="utf-8")
    report = import_file(crm, "customers", path, ImportOptions(workers=workers, batch_size=7))
    assert report.inserted == 30, report.summary()
    found = {c.external_id: (c.email, c.phone, c.birthday.isoformat()) for c in crm.customers.list()}
    assert found == {ext: (normalize_email(email), phone, day) for ext, email, phone, day in SEALED_ROWS}
    assert [crm.customers.find(phone=phone).external_id for _, _, phone, _ in SEALED_ROWS] == [
        ext for ext, *_ in SEALED_ROWS]
