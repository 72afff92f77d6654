"""Backup and restore round trips on SQLite, PostgreSQL and MariaDB (issue 19, point 6)."""

from __future__ import annotations

import os
import zipfile
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from crmcore.store import backup as backups
from crmcore.store.tables import customers, deals, loyalty_ledger


def _figures(crm: Any) -> tuple[int, int, Any, Any]:
    with crm.engine.connect() as conn:
        return (conn.execute(select(func.count()).select_from(customers)).scalar_one(),
                conn.execute(select(func.count()).select_from(deals)).scalar_one(),
                conn.execute(select(func.sum(deals.c.amount))).scalar_one(),
                conn.execute(select(func.coalesce(func.sum(loyalty_ledger.c.points), 0))).scalar_one())


def test_backup_and_restore_round_trip(crm_factory: Any, tmp_path: Path) -> None:
    crm = crm_factory(plugins=["loyalty"])
    for i in range(3):
        customer = crm.customers.add(name=f"Backup person {i}", email=f"b{i}@example.com")
        crm.deals.add(customer_id=customer.id, title=f"deal {i}", amount=f"{100 + i}.25", currency="CNY",
                      stage="won", closed_at="2026-03-01")
    before = _figures(crm)
    target = tmp_path / "crm.backup"
    manifest = backups.backup(crm.engine, target)
    assert manifest["counts"]["customers"] == 3 and manifest["sums"]["loyalty_ledger.points"] != "0"
    with zipfile.ZipFile(target) as archive:
        assert set(archive.namelist()) == {backups.MANIFEST, backups.PAYLOAD[manifest["dialect"]]}
    # Change the database after the backup; the restore brings back the backed-up state.
    crm.customers.add(name="After the backup")
    crm.deals.delete(1, purge=False)
    backups.restore(crm.engine, target)
    assert _figures(crm) == before
    assert crm.customers.count() == 3
    with pytest.raises(backups.BackupError, match="exists"):
        backups.backup(crm.engine, target)


def test_restore_refuses_what_is_not_a_backup_and_a_changed_one(crm_factory: Any,
                                                                tmp_path: Path) -> None:
    crm = crm_factory()
    crm.customers.add(name="Someone")
    bogus = tmp_path / "bogus.zip"
    bogus.write_bytes(b"not a zip")
    with pytest.raises(backups.BackupError, match="not a crm backup file"):
        backups.restore(crm.engine, bogus)
    good = tmp_path / "good.backup"
    manifest = backups.backup(crm.engine, good)
    tampered = tmp_path / "tampered.backup"
    manifest["counts"]["customers"] += 1
    with zipfile.ZipFile(good) as src, zipfile.ZipFile(tampered, "w") as dst:
        dst.writestr(backups.MANIFEST, __import__("json").dumps(manifest))
        dst.writestr(backups.PAYLOAD[manifest["dialect"]], src.read(backups.PAYLOAD[manifest["dialect"]]))
    crm.customers.add(name="Added after the backup")
    with pytest.raises(backups.BackupError, match="customers.*(backup 2, restored 1|expected 2 rows)"):
        backups.restore(crm.engine, tampered)
    # Checked before anything changed: the live database is as it was.
    crm.engine.dispose()
    assert sorted(c.name for c in crm.customers.list({})) == ["Added after the backup", "Someone"]


@pytest.mark.parametrize("crm_db_url", ["postgresql", "mariadb"], indirect=True)
def test_missing_dump_tool_is_a_clear_error(crm_factory: Any, tmp_path: Path, monkeypatch: Any) -> None:
    crm = crm_factory()
    monkeypatch.setenv("PATH", str(tmp_path))  # no tools there
    tool = "pg_dump" if crm.engine.dialect.name == "postgresql" else "mariadb-dump or mysqldump"
    with pytest.raises(backups.BackupError, match=f"{tool} not found on PATH: install"):
        backups.backup(crm.engine, tmp_path / "x.backup")
    assert not os.path.exists(tmp_path / "x.backup")
