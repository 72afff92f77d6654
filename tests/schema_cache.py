"""Test-suite speed: replay a migrated schema instead of running every migration again.

Nearly every test opens a CRM on an empty database, and opening migrates it:
the core's revisions, then each enabled plugin's.  On MariaDB that is a few
seconds of DDL per test (ALTER TABLE copies tables), and the suite opens about
a thousand MariaDB databases.  The result of migrating an empty database is
always the same for the same dialect and the same revision sources, so the
first migration in a test process is captured (DDL and the rows the migrations
wrote, including Alembic's version tables) and later ones on an empty database
replay it in one go.

What this does not change: a database that already has tables is migrated by
Alembic as always (upgrade tests, a plugin enabled later), and
``tests/core/test_core_migrations.py`` compares every migrated schema to the
tables' metadata, on every database, with the cache turned off for that file
(``no_schema_cache``), so the revisions themselves stay tested.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any, Callable

import attrs
from sqlalchemy import Engine, inspect

import crmcore.testing
import schema_reuse
from crmcore import migrations


@attrs.frozen
class Snapshot:
    """A migrated empty database: statements to recreate it and its rows."""

    statements: tuple[str, ...]
    rows: tuple[tuple[str, tuple[str, ...], tuple[tuple[Any, ...], ...]], ...]


_snapshots: dict[tuple[Any, ...], Snapshot | None] = {}
_enabled = [True]
_reuse = [True]  # off for a test marked empty_database (tests/conftest.py)
_drop: list[Callable[[str], None]] = []  # crmcore.testing's own reset_database: drop every table


def install() -> None:
    """Route ``crmcore.migrations.upgrade`` through the cache (once per process)."""
    if getattr(migrations.upgrade, "schema_cache", False):
        return
    original = migrations.upgrade

    def upgrade(engine: Engine, schemas: dict[str, Any]) -> None:
        cached_upgrade(original, engine, schemas)

    upgrade.schema_cache = True  # type: ignore[attr-defined]
    migrations.upgrade = upgrade  # type: ignore[assignment]
    # Server databases: a reset empties the last replay's tables instead of dropping them
    # (tests/schema_reuse.py says when and why).
    _drop.append(crmcore.testing.reset_database)

    def reset_database(url: str) -> None:
        schema_reuse.reset(url, _drop[0], _enabled[0] and _reuse[0])

    reset_database.__doc__ = _drop[0].__doc__
    crmcore.testing.reset_database = reset_database


def set_enabled(enabled: bool) -> None:
    """Turn replaying on or off (the migration tests turn it off)."""
    _enabled[0] = enabled


def reuse_schemas(reuse: bool) -> None:
    """Whether the next resets may empty a server database back to its schema (tests/schema_reuse.py)."""
    _reuse[0] = reuse


def drop_everything(url: str) -> None:
    """crmcore.testing's own reset of a server database: drop every table (no emptying)."""
    _drop[0](url)
    schema_reuse.forget(url)


def captured(dialect: str) -> bool:
    """Whether a snapshot for ``dialect`` was captured in this process."""
    return any(key[0] == dialect and snapshot is not None for key, snapshot in _snapshots.items())


def cached_upgrade(original: Callable[[Engine, dict[str, Any]], None], engine: Engine,
                   schemas: dict[str, Any]) -> None:
    """Replay the snapshot for an empty database, else migrate (and capture when it was empty)."""
    dialect = engine.dialect.name
    capture, replay = CAPTURE.get(dialect), REPLAY.get(dialect)
    fresh = schema_reuse.take_fresh(engine)
    if not _enabled[0] or capture is None or replay is None:
        original(engine, schemas)
        return
    key = _key(dialect, schemas)
    if fresh == key:
        return  # the reset emptied this very schema back to what migrating makes: nothing to do
    if fresh is not None and schema_reuse.untouched(engine, fresh):
        # Another plugin set's schema, emptied by the reset and not used since: start from nothing,
        # as a dropped database would.
        _drop[0](engine.url.render_as_string(hide_password=False))
    if inspect(engine).get_table_names():
        original(engine, schemas)
        return
    if key not in _snapshots:
        original(engine, schemas)
        _snapshots[key] = capture(engine)
        schema_reuse.remember(engine, key)
        return
    snapshot = _snapshots[key]
    if snapshot is None:  # this database could not be captured: migrate every time
        original(engine, schemas)
        return
    replay(engine, snapshot)
    schema_reuse.remember(engine, key)


def _key(dialect: str, schemas: dict[str, Any]) -> tuple[Any, ...]:
    """What decides the migrated schema: the dialect and every revision file's content."""
    digest = hashlib.sha256()
    for branch, versions, table in migrations.sources(schemas):
        digest.update(f"{branch}\0{table}\0".encode())
        for path in sorted(Path(versions).glob("*.py")):
            digest.update(path.name.encode() + b"\0" + path.read_bytes())
    return (dialect, digest.hexdigest())


def _rows(conn: Any, tables: list[str], quote: Callable[[str], str]) -> tuple[Any, ...]:
    return schema_reuse.rows(conn, tables, quote)


def _insert(conn: Any, snapshot: Snapshot, quote: Callable[[str], str], marker: str) -> None:
    schema_reuse.insert(conn, snapshot.rows, quote, marker)


# --- SQLite: sqlite_master holds every CREATE statement, in creation order ----------------------

def _sqlite_quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _capture_sqlite(engine: Engine) -> Snapshot:
    with engine.connect() as conn:
        master = conn.exec_driver_sql(
            "SELECT type, name, sql FROM sqlite_master WHERE sql IS NOT NULL "
            "AND name NOT LIKE 'sqlite_%' ORDER BY rowid").all()
        tables = [name for kind, name, _ in master if kind == "table"]
        has_sequence = conn.exec_driver_sql(
            "SELECT 1 FROM sqlite_master WHERE name = 'sqlite_sequence'").first() is not None
        rows = _rows(conn, tables + (["sqlite_sequence"] if has_sequence else []), _sqlite_quote)
    return Snapshot(tuple(sql for _, _, sql in master), rows)


def _replay_sqlite(engine: Engine, snapshot: Snapshot) -> None:
    with engine.begin() as conn:
        for statement in snapshot.statements:
            conn.exec_driver_sql(statement)
        _insert(conn, snapshot, _sqlite_quote, "?")


# --- MariaDB / MySQL: SHOW CREATE TABLE / TRIGGER --------------------------------------------

def _mysql_quote(name: str) -> str:
    return "`" + name.replace("`", "``") + "`"


def _capture_mysql(engine: Engine) -> Snapshot | None:
    with engine.connect() as conn:
        kinds = conn.exec_driver_sql("SHOW FULL TABLES").all()
        tables = [name for name, kind in kinds if kind == "BASE TABLE"]
        if len(tables) != len(kinds):
            return None  # views: not worth replaying, migrate instead
        statements = [conn.exec_driver_sql(f"SHOW CREATE TABLE {_mysql_quote(t)}").one()[1] for t in tables]
        for trigger in conn.exec_driver_sql("SHOW TRIGGERS").all():
            statements.append(conn.exec_driver_sql(f"SHOW CREATE TRIGGER {_mysql_quote(trigger[0])}").one()[2])
        rows = _rows(conn, tables, _mysql_quote)
    return Snapshot(tuple(statements), rows)


def _replay_mysql(engine: Engine, snapshot: Snapshot) -> None:
    with engine.begin() as conn:
        conn.exec_driver_sql("SET FOREIGN_KEY_CHECKS = 0")
        try:
            for statement in snapshot.statements:
                conn.exec_driver_sql(statement.replace("%", "%%"))
            _insert(conn, snapshot, _mysql_quote, "%s")
        finally:
            conn.exec_driver_sql("SET FOREIGN_KEY_CHECKS = 1")


# --- PostgreSQL: pg_dump, when it is on PATH --------------------------------------------------

def _capture_postgresql(engine: Engine) -> Snapshot | None:
    pg_dump = shutil.which("pg_dump")
    if pg_dump is None:
        return None
    url = engine.url.set(drivername="postgresql").render_as_string(hide_password=False)
    dump = subprocess.run([pg_dump, "--no-owner", "--no-privileges", "--inserts", "--dbname", url],
                          capture_output=True, text=True, env={**os.environ, "PGCONNECT_TIMEOUT": "10"})
    if dump.returncode != 0:
        return None
    # psql meta-commands (\restrict in newer pg_dump) are not SQL.
    script = "\n".join(line for line in dump.stdout.splitlines() if not line.startswith("\\"))
    return Snapshot((script,), ())


def _replay_postgresql(engine: Engine, snapshot: Snapshot) -> None:
    with engine.connect() as conn:
        raw = conn.connection.driver_connection
        assert raw is not None
        with raw.cursor() as cursor:
            cursor.execute(snapshot.statements[0])
        raw.commit()
        # The dump empties search_path for its session: never hand this connection out again.
        conn.invalidate()


CAPTURE: dict[str, Callable[[Engine], Snapshot | None]] = {
    "sqlite": _capture_sqlite, "mysql": _capture_mysql, "mariadb": _capture_mysql,
    "postgresql": _capture_postgresql}
REPLAY: dict[str, Callable[[Engine, Snapshot], None]] = {
    "sqlite": _replay_sqlite, "mysql": _replay_mysql, "mariadb": _replay_mysql,
    "postgresql": _replay_postgresql}
