"""``crm db backup FILE`` and ``crm db restore FILE``: verified whole-database backups.

The commands join the ``db`` group (:mod:`crmcore.cli.db`); the engine is
:mod:`crmcore.store.backup`.
"""

from __future__ import annotations

from pathlib import Path

import click

from ..domain.errors import ValidationError
from ..store import backup as backups
from .context import Session, pass_session
from .db import _authorized, db


def _summary(manifest: dict) -> str:  # type: ignore[type-arg]
    counts = manifest["counts"]
    return f"{len(counts)} tables, {sum(counts.values())} rows"


@db.command("backup")
@click.argument("file", type=click.Path(dir_okay=False))
@pass_session
def backup_command(session: Session, file: str) -> None:
    """Write a verified backup of the whole database to FILE (a new file).

    SQLite: the online backup API (others keep working); PostgreSQL: pg_dump; MariaDB:
    mariadb-dump (found on PATH).  FILE also records row counts and ledger sums, which
    `crm db restore` checks."""
    with _authorized(session, "db.backup") as crm:
        manifest = backups.backup(crm.engine, file)
        with crm.unit() as uow:  # after the copy: the backup does not hold its own record
            uow.audit.record("db.backup", "database", changes={"file": [None, str(Path(file).resolve())]})
    session.emit_object({"file": file, **manifest}, f"backup written to {file} ({_summary(manifest)}, verified)")


@db.command("restore")
@click.argument("file", type=click.Path(dir_okay=False))
@click.option("--yes", "-y", is_flag=True, help="Confirm: the database's current content is replaced.")
@pass_session
def restore_command(session: Session, file: str, yes: bool) -> None:
    """Replace the database with the backup FILE and verify row counts and ledger sums."""
    with _authorized(session, "db.restore", create=True) as crm:  # asked before the file is even read
        manifest = backups.read_manifest(file)
        if not yes:
            raise ValidationError.single("--yes", f"nothing restored: add --yes to replace the database with "
                                         f"{file} (from {manifest['created_at']})")
        backups.restore(crm.engine, file)
        with crm.unit() as uow:  # appended to the restored chain, after the verification
            uow.audit.record("db.restore", "database", changes={"file": [None, str(Path(file).resolve())],
                                                                "backup_created_at": [None, manifest["created_at"]]})
    session.emit_object({"file": file, **manifest},
                        f"restored {file} (from {manifest['created_at']}): {_summary(manifest)}, verified")
