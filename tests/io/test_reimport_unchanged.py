"""Re-importing a file: rows equal to their stored record are unchanged without the per-row update path
(SQLite's bulk path compares bound values with the stored ones); the outcome is the same on every database."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from crmcore.io.importer import ImportOptions, import_file
from crmcore.store.tables import audit_log, customers

HEADER = "external_id,name,email,phone,country,tags,consent_email,birthday\n"


def _rows(count: int) -> list[str]:
    return [f"C{i:04d},Name {i},User.{i}@Example.COM,+86 138 0013 {i:04d},CN,\"vip,news\",true,1990-01-{1 + i % 28:02d}"
            for i in range(count)]


def _write(path: Path, lines: list[str]) -> Path:
    path.write_text(HEADER + "".join(line + "\n" for line in lines), encoding="utf-8")
    return path


def _audit_count(crm: Any) -> int:
    with crm.unit() as uow:
        return int(uow.conn.execute(select(func.count()).select_from(audit_log)).scalar_one())


def _stored(crm: Any) -> list[tuple[Any, ...]]:
    with crm.unit() as uow:
        return [tuple(r) for r in uow.conn.execute(select(customers).order_by(customers.c.id))]


def test_reimport_of_an_unchanged_file_writes_nothing(crm_factory: Any, tmp_path: Path) -> None:
    crm = crm_factory()
    file = _write(tmp_path / "c.csv", _rows(30))
    first = import_file(crm, "customers", file, ImportOptions(batch_size=7))
    assert (first.inserted, first.updated, first.unchanged, first.rejected) == (30, 0, 0, 0)
    before, audits = _stored(crm), _audit_count(crm)
    again = import_file(crm, "customers", file, ImportOptions(batch_size=7))
    assert (again.inserted, again.updated, again.unchanged, again.rejected) == (0, 0, 30, 0)
    assert _stored(crm) == before  # updated_at too: nothing was written
    assert _audit_count(crm) == audits


# workers=2: the cells of a batch wait pickled in the importing process while workers validate it
# (crmcore.io.importer._pack); the updated, archived and duplicate rows read them back from there.
@pytest.mark.parametrize("workers", [0, 2])
def test_reimport_with_changes_duplicates_and_archived_records(crm_factory: Any, tmp_path: Path,
                                                               workers: int) -> None:
    crm = crm_factory()
    rows = _rows(12)
    import_file(crm, "customers", _write(tmp_path / "c.csv", rows), ImportOptions(batch_size=5))
    with crm.unit() as uow:
        archived_id = uow.conn.execute(select(customers.c.id).where(customers.c.external_id == "C0003")).scalar_one()
    crm.customers.delete(archived_id)  # archives it
    changed = list(rows)
    changed[1] = changed[1].replace("Name 1,", "Name One,")  # a real change: updated
    changed[5] = changed[5].replace(",CN,", ",,")  # a blank cell keeps the stored country: unchanged
    changed.insert(8, rows[7])  # line 10 repeats line 9's external id: rejected
    report = import_file(crm, "customers", _write(tmp_path / "d.csv", changed),
                         ImportOptions(batch_size=4, on_error="skip", workers=workers))
    assert (report.inserted, report.updated, report.unchanged, report.rejected) == (0, 1, 10, 2), report.errors
    reasons = {e.line: e.reason for e in report.errors}
    assert reasons[10] == "duplicate external_id 'C0007': line 9 of this file has it too"
    assert reasons[5].startswith(f"customer {archived_id} is archived")
    with crm.unit() as uow:
        names = dict(uow.conn.execute(select(customers.c.external_id, customers.c.name)).all())
        country = uow.conn.execute(select(customers.c.country).where(customers.c.external_id == "C0005")).scalar()
    assert names["C0001"] == "Name One" and country == "CN"
    assert [e.message(report.file) for e in report.errors] == [
        f"d.csv:5: column \"external_id\": {reasons[5]}",
        "d.csv:10: column \"external_id\": duplicate external_id 'C0007': line 9 of this file has it too"]
