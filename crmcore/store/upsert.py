"""Insert-if-absent, one tested branch per dialect."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, Insert, Table, insert
from sqlalchemy.dialects import mysql, postgresql, sqlite


def insert_ignore(conn: Connection, table: Table, values: dict[str, Any]) -> bool:
    """Insert a row unless one with the same key exists; True if inserted.

    Safe under concurrency: the database, not a prior SELECT, decides.
    """
    name = conn.dialect.name
    stmt: Insert  # each dialect's insert() is a subclass of the generic one
    if name == "postgresql":
        stmt = postgresql.insert(table).values(values).on_conflict_do_nothing()
    elif name == "sqlite":
        stmt = sqlite.insert(table).values(values).on_conflict_do_nothing()
    elif name in ("mysql", "mariadb"):
        stmt = mysql.insert(table).values(values).prefix_with("IGNORE")
    else:  # pragma: no cover - other dialects are not supported
        stmt = insert(table).values(values)
    return conn.execute(stmt).rowcount == 1
