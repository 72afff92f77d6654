"""Read routing: reports and segment listings on a read replica, every write on the primary.

``database_read_url`` names a replica of ``database_url`` (a PostgreSQL streaming standby made
with ``pg_basebackup -R``).  The CRM then has two engines: :attr:`CRM.engine` (the primary, where
every unit of work goes) and :attr:`CRM.read_engine`, which only units opened with
``crm.unit(readonly=True, replica=True)`` use: report runs and segment listings (runs, members,
diffs, explanations), which read much and may be a moment behind.  A unit already open is joined as
always, so a read inside a write (a segment run reading its previous run) stays on the primary.

Every connection of the read engine is read-only at the session level (PostgreSQL and MariaDB
``SET SESSION ... READ ONLY``, SQLite ``PRAGMA query_only``), so a write routed there by mistake
fails at once, even when the URL names a writable server rather than a standby.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sqlalchemy import Engine, event

from ..domain.errors import ConfigError
from .engine import make_engine, mask_url

#: The statement that makes a session read-only, per dialect.
READ_ONLY_SESSION = {
    "postgresql": "SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY",
    "mysql": "SET SESSION TRANSACTION READ ONLY",
    "mariadb": "SET SESSION TRANSACTION READ ONLY",
    "sqlite": "PRAGMA query_only = ON",
}


def read_engine(primary: Engine, url: str | None, prepare: Callable[[Engine], None]) -> Engine:
    """The engine for replica reads: ``primary`` itself when ``url`` is None, else a read-only
    engine on ``url`` that ``prepare`` configured as the primary was (visibility, sealed columns).

    A replica of another kind of database than the primary is a :class:`ConfigError`.
    """
    if url is None:
        return primary
    engine = make_engine(url, create=False)
    if engine.dialect.name != primary.dialect.name:
        engine.dispose()
        raise ConfigError(f"database_read_url {mask_url(url)} is a {engine.dialect.name} database but "
                          f"database_url is {primary.dialect.name}: a read replica is a copy of the primary")
    _read_only_sessions(engine)
    prepare(engine)
    # Every transaction there reads: SQLite opens it deferred (no write lock to wait for).
    return engine.execution_options(crm_readonly=True)


def _read_only_sessions(engine: Engine) -> None:
    statement = READ_ONLY_SESSION.get(engine.dialect.name)
    if statement is None:
        return

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        cursor = dbapi_conn.cursor()
        cursor.execute(statement)
        cursor.close()
        if engine.dialect.name == "postgresql":
            dbapi_conn.commit()  # psycopg opened a transaction for the SET; end it so it sticks
