"""Backups and restores of the whole database, verified by row counts and sums.

A backup is one zip file holding the database and ``manifest.json``: the dialect, the time, and
a *fingerprint* of the database at the instant the backup stands for (the row count of every
table and the sums of the ledger points, the balances and the deal amounts per currency).
A restore loads the database and compares the restored fingerprint with the manifest's; any
difference is an error that names the tables.

- SQLite: the online backup API (``sqlite3.Connection.backup``) copies a consistent snapshot
  while others keep working; the fingerprint is read in the same read transaction.
- PostgreSQL: ``pg_dump`` with the snapshot exported by the transaction that reads the
  fingerprint (``--snapshot``), so both see the same instant; restored with ``psql``.
- MariaDB/MySQL: ``mariadb-dump --single-transaction`` (or ``mysqldump``); the fingerprint is
  read before and after the dump and the backup is refused when a write came in between (the
  dump's snapshot cannot be shared); restored with ``mariadb`` (or ``mysql``).

The tools are looked up on PATH; a missing one is a clear error saying which and how to get it.
Passwords go to the tools through their environment variables (``PGPASSWORD``, ``MYSQL_PWD``),
never on the command line, where other users of the machine could read them.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import tempfile
import zipfile
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, func, inspect, select, table, text
from sqlalchemy.engine import URL

from ..domain.errors import CRMError
from .maintenance import drop_all_tables

#: The manifest's name inside a backup file.
MANIFEST = "manifest.json"
#: The database's name inside a backup file, per dialect.
PAYLOAD = {"sqlite": "database.sqlite", "postgresql": "dump.sql", "mysql": "dump.sql"}
FORMAT = 1
#: The function of the import digest trigger on PostgreSQL (revision 0029_import_digest_trigger;
#: crmcore.io.fingerprint.TRIGGER): a restore drops it with the tables, the dump creates it again.
IMPORT_DIGEST_FUNCTION = "customers_forget_import_digest"


class BackupError(CRMError):
    """A backup or restore that cannot be done or did not verify."""


# -- fingerprints ---------------------------------------------------------------------

def fingerprint(conn: Connection) -> dict[str, Any]:
    """Row counts of every table and the sums that must survive: ledger points, balances, deal
    amounts per currency (as text: exact integers)."""
    names = sorted(inspect(conn).get_table_names())
    counts = {name: int(conn.execute(select(func.count()).select_from(table(name))).scalar_one())
              for name in names}
    sums: dict[str, str] = {}
    if "loyalty_ledger" in names:
        sums["loyalty_ledger.points"] = str(conn.execute(text("SELECT COALESCE(SUM(points), 0) FROM loyalty_ledger"))
                                            .scalar_one())
    if "loyalty_accounts" in names:
        sums["loyalty_accounts.balance"] = str(conn.execute(
            text("SELECT COALESCE(SUM(balance), 0) FROM loyalty_accounts")).scalar_one())
    if "deals" in names:
        for currency, total in conn.execute(text("SELECT currency, SUM(amount) FROM deals GROUP BY currency "
                                                 "ORDER BY currency")):
            sums[f"deals.amount.{currency}"] = str(total)
    return {"counts": counts, "sums": sums}


def differences(expected: Mapping[str, Any], found: Mapping[str, Any]) -> list[str]:
    """What differs between two fingerprints, one line per table or sum."""
    problems = []
    for part in ("counts", "sums"):
        want, have = expected.get(part, {}), found.get(part, {})
        for key in sorted(set(want) | set(have)):
            if want.get(key) != have.get(key):
                problems.append(f"{key}: backup {want.get(key, 'missing')}, restored {have.get(key, 'missing')}")
    return problems


# -- backup -----------------------------------------------------------------------------

def backup(engine: Engine, target: str | Path) -> dict[str, Any]:
    """Write a verified backup of ``engine``'s database to ``target``; returns its manifest."""
    path = Path(target)
    if path.exists():
        raise BackupError(f"{path} exists: give a new file name (a backup never overwrites one)")
    dialect = _dialect(engine)
    with tempfile.TemporaryDirectory(dir=path.parent if path.parent.exists() else None) as work:
        payload = Path(work) / PAYLOAD[dialect]
        if dialect == "sqlite":
            prints = _backup_sqlite(engine, payload)
        elif dialect == "postgresql":
            prints = _backup_postgresql(engine, payload)
        else:
            prints = _backup_mariadb(engine, payload)
        manifest = {"format": FORMAT, "dialect": dialect, "created_at": datetime.now(timezone.utc).isoformat(),
                    **prints}
        partial = path.with_name(path.name + ".partial")
        try:
            # Readable by the owner only: the backup holds every person's data.
            handle = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            os.fchmod(handle, 0o600)
            with os.fdopen(handle, "wb") as raw, zipfile.ZipFile(raw, "w", compression=zipfile.ZIP_DEFLATED) as archive:
                archive.writestr(MANIFEST, json.dumps(manifest, indent=2, sort_keys=True))
                archive.write(payload, PAYLOAD[dialect])
            os.replace(partial, path)
        except OSError as exc:
            partial.unlink(missing_ok=True)
            raise BackupError(f"cannot write {path}: {exc.strerror or exc}") from None
    return manifest


def _backup_sqlite(engine: Engine, payload: Path) -> dict[str, Any]:
    # One read transaction (a deferred BEGIN: no lock) for the fingerprint and the copy.
    with engine.connect().execution_options(crm_readonly=True) as conn, conn.begin():
        prints = fingerprint(conn)
        source = conn.connection.dbapi_connection
        assert source is not None, "an open connection has its DBAPI connection"
        copy = sqlite3.connect(payload)
        try:
            source.backup(copy)
        finally:
            copy.close()
    # The copy checked against the snapshot it was taken from.
    check = _sqlite_fingerprint(payload)
    problems = differences(prints, check)
    if problems:
        raise BackupError("the backup copy does not match the database: " + "; ".join(problems))
    return prints


def _sqlite_fingerprint(path: Path) -> dict[str, Any]:
    from .engine import make_engine

    engine = make_engine(f"sqlite:///{path}", create=False)
    try:
        with engine.connect() as conn:
            return fingerprint(conn)
    finally:
        engine.dispose()


def _backup_postgresql(engine: Engine, payload: Path) -> dict[str, Any]:
    tool = _tool("pg_dump", hint="install the PostgreSQL client tools (e.g. apt install postgresql-client)")
    url = engine.url
    with engine.connect().execution_options(isolation_level="REPEATABLE READ") as conn:
        with conn.begin():
            snapshot = conn.execute(text("SELECT pg_export_snapshot()")).scalar_one()
            prints = fingerprint(conn)
            _run([tool, "--no-owner", "--no-privileges", "--format=plain", f"--snapshot={snapshot}",
                  "--file", str(payload), *_pg_target(url)], _pg_env(url), "pg_dump")
    return prints


def _backup_mariadb(engine: Engine, payload: Path) -> dict[str, Any]:
    tool = _tool("mariadb-dump", "mysqldump",
                 hint="install the MariaDB client tools (e.g. apt install mariadb-client)")
    url = engine.url
    with engine.connect() as conn:
        before = fingerprint(conn)
        conn.rollback()
    _run([tool, "--single-transaction", "--skip-lock-tables", "--no-tablespaces", "--hex-blob",
          f"--result-file={payload}", *_my_target(url)], _my_env(url), tool)
    with engine.connect() as conn:
        after = fingerprint(conn)
    if before != after:
        raise BackupError("the database changed while it was being dumped (MariaDB's dump snapshot cannot be "
                          "checked against the counts): run the backup again at a quiet moment")
    return before


# -- restore ----------------------------------------------------------------------------

def read_manifest(source: str | Path) -> dict[str, Any]:
    """The manifest of the backup file ``source`` (a clear error when it is not one)."""
    path = Path(source)
    if not path.is_file():
        raise BackupError(f"{path}: no such backup file")
    try:
        with zipfile.ZipFile(path) as archive:
            manifest: dict[str, Any] = json.loads(archive.read(MANIFEST))
    except (zipfile.BadZipFile, KeyError, ValueError):
        raise BackupError(f"{path}: not a crm backup file (written by crm db backup)") from None
    if manifest.get("format") != FORMAT or manifest.get("dialect") not in PAYLOAD:
        raise BackupError(f"{path}: a backup format this version does not read ({manifest.get('format')!r})")
    return manifest


def restore(engine: Engine, source: str | Path) -> dict[str, Any]:
    """Replace ``engine``'s database with the backup ``source`` and verify it; returns the manifest."""
    manifest = read_manifest(source)
    dialect = _dialect(engine)
    if manifest["dialect"] != dialect:
        raise BackupError(f"{source} is a {manifest['dialect']} backup; the database is {dialect} "
                          f"(restore it into a {manifest['dialect']} database)")
    # The payload is checked against the manifest before the live database changes: a damaged
    # or tampered backup leaves it as it was.
    with tempfile.TemporaryDirectory() as work:
        with zipfile.ZipFile(source) as archive:
            payload = Path(archive.extract(PAYLOAD[dialect], work))
        if dialect == "sqlite":
            _check(manifest, _sqlite_fingerprint(payload), source)
            _restore_sqlite(engine, payload)
        elif dialect == "postgresql":
            _restore_postgresql(engine, payload, manifest)
        else:
            _restore_mariadb(engine, payload, manifest, source)
    engine.dispose()  # pooled connections may have seen the old schema
    with engine.connect() as conn:
        problems = differences(manifest, fingerprint(conn))
    if problems:
        raise BackupError(f"the restored database does not match the backup {source}: " + "; ".join(problems))
    return manifest


def _restore_sqlite(engine: Engine, payload: Path) -> None:
    source = sqlite3.connect(payload)
    try:
        with engine.connect() as conn:
            target = conn.connection.dbapi_connection
            assert isinstance(target, sqlite3.Connection), "the SQLite driver's connection"
            source.backup(target)  # page by page into the live file, under SQLite's own locks
    finally:
        source.close()


def _check(manifest: Mapping[str, Any], found: Mapping[str, Any], source: str | Path) -> None:
    problems = differences(manifest, found)
    if problems:
        raise BackupError(f"the backup {source} does not match its manifest (damaged or changed; the database "
                          f"was not touched): " + "; ".join(problems))


def _restore_postgresql(engine: Engine, payload: Path, manifest: Mapping[str, Any]) -> None:
    """One psql transaction: drop the tables, load the dump, check every table's row count
    against the manifest; any error or difference rolls all of it back."""
    with engine.connect() as conn:
        schema = conn.execute(text("SELECT current_schema()")).scalar_one()
        names = inspect(conn).get_table_names()
        types = conn.execute(text("SELECT t.typname FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace "
                                  "WHERE t.typtype = 'e' AND n.nspname = current_schema()")).scalars().all()
        conn.rollback()
    script = payload.with_name("restore.sql")
    with script.open("w", encoding="utf-8") as out:
        for name in names:
            out.write(f'DROP TABLE IF EXISTS {_pg_name(schema)}.{_pg_name(name)} CASCADE;\n')
        for name in types:
            out.write(f'DROP TYPE IF EXISTS {_pg_name(schema)}.{_pg_name(name)} CASCADE;\n')
        # crmcore's own function (the import digest trigger's, revision 0029_import_digest_trigger):
        # the dump creates it again.  Only that one: other functions of the schema are the
        # company's own (a procedure, an aggregate, what a report view uses) and stay.
        out.write(f"DROP FUNCTION IF EXISTS {_pg_name(schema)}.{IMPORT_DIGEST_FUNCTION}() CASCADE;\n")
        with payload.open(encoding="utf-8") as dump:
            shutil.copyfileobj(dump, out)
        out.write("\n")
        for name, count in sorted(manifest.get("counts", {}).items()):
            qualified = f"{_pg_name(schema)}.{_pg_name(name)}"
            out.write(f"DO $$ BEGIN IF (SELECT count(*) FROM {qualified}) <> {int(count)} THEN RAISE EXCEPTION "
                      f"'the backup does not match its manifest: table {name} (expected {int(count)} rows); "
                      f"the database was not changed'; END IF; END $$;\n")
    with script.open("rb") as stream:
        _run([*_pg_restore_command(engine.url), "--single-transaction"], _pg_env(engine.url), "psql", stdin=stream)


def _pg_name(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _restore_mariadb(engine: Engine, payload: Path, manifest: Mapping[str, Any], source: str | Path) -> None:
    """MariaDB's DDL commits, so no transaction can hold the drops: the dump is first loaded
    into a scratch database and checked there, and the live tables are dropped only if it matches."""
    live = engine.url.database or ""
    scratch = f"{live[:48]}_crm_restore_check"
    command, env = _my_restore_command(engine.url), _my_env(engine.url)
    with engine.connect() as conn:
        conn.exec_driver_sql(f"DROP DATABASE IF EXISTS `{scratch}`")
        conn.exec_driver_sql(f"CREATE DATABASE `{scratch}`")
    try:
        with payload.open("rb") as stream:
            _run([*command[:-1], scratch], env, command[0], stdin=stream)
        from .engine import make_engine

        check = make_engine(engine.url.set(database=scratch).render_as_string(hide_password=False), create=False)
        try:
            with check.connect() as conn:
                _check(manifest, fingerprint(conn), source)
        finally:
            check.dispose()
    finally:
        with engine.connect() as conn:
            conn.exec_driver_sql(f"DROP DATABASE IF EXISTS `{scratch}`")
    drop_all_tables(engine.url.render_as_string(hide_password=False))
    with payload.open("rb") as stream:
        _run(command, env, command[0], stdin=stream)


# -- tools ------------------------------------------------------------------------------

def _dialect(engine: Engine) -> str:
    name = engine.dialect.name
    name = "mysql" if name in ("mysql", "mariadb") else name
    if name not in PAYLOAD:
        raise BackupError(f"backups of {name} databases are not supported (SQLite, PostgreSQL, MariaDB/MySQL)")
    return name


def _tool(*names: str, hint: str) -> str:
    for name in names:
        found = shutil.which(name)
        if found:
            return found
    raise BackupError(f"{' or '.join(names)} not found on PATH: {hint}")


def _run(command: Sequence[str], env: Mapping[str, str], name: str, stdin: Any = None) -> None:
    try:
        done = subprocess.run(list(command), env={**os.environ, **env}, stdin=stdin, capture_output=True,
                              check=False)
    except OSError as exc:
        raise BackupError(f"cannot run {name}: {exc.strerror or exc}") from None
    if done.returncode != 0:
        message = done.stderr.decode("utf-8", "replace").strip().splitlines()
        message = [line for line in message if "ERROR" in line][:1] or message  # psql adds CONTEXT lines
        raise BackupError(f"{Path(name).name} failed (exit {done.returncode}): "
                          f"{message[-1] if message else 'no message'}")


def _pg_target(url: URL) -> list[str]:
    return ["--host", url.host or "localhost", "--port", str(url.port or 5432), "--username", url.username or "",
            "--dbname", url.database or ""]


def _pg_env(url: URL) -> dict[str, str]:
    return {"PGPASSWORD": url.password} if url.password else {}


def _pg_restore_command(url: URL) -> list[str]:
    tool = _tool("psql", hint="install the PostgreSQL client tools (e.g. apt install postgresql-client)")
    return [tool, "--quiet", "--no-psqlrc", "--set", "ON_ERROR_STOP=1", *_pg_target(url)]


def _my_target(url: URL) -> list[str]:
    return [f"--host={url.host or 'localhost'}", f"--port={url.port or 3306}", f"--user={url.username or ''}",
            url.database or ""]


def _my_env(url: URL) -> dict[str, str]:
    return {"MYSQL_PWD": url.password} if url.password else {}


def _my_restore_command(url: URL) -> list[str]:
    tool = _tool("mariadb", "mysql", hint="install the MariaDB client tools (e.g. apt install mariadb-client)")
    return [tool, "--batch", *_my_target(url)]
