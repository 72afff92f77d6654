"""Insert-if-absent, one tested branch per dialect."""

from __future__ import annotations

import functools
from typing import Any

from sqlalchemy import Column, Connection, Insert, Table, insert

from . import direct

# Each dialect's insert() is imported in the branch that uses it: importing the PostgreSQL
# dialect (with its asyncpg support) and MySQL's cost about 50 ms of every command on SQLite.


def insert_ignore(conn: Connection, table: Table, values: dict[str, Any]) -> bool:
    """Insert a row unless one with the same key exists; True if inserted.

    Safe under concurrency: the database, not a prior SELECT, decides.
    """
    name = conn.dialect.name
    stmt: Insert  # each dialect's insert() is a subclass of the generic one
    if name == "postgresql":
        from sqlalchemy.dialects import postgresql
        stmt = postgresql.insert(table).values(values).on_conflict_do_nothing()
    elif name == "sqlite":
        from sqlalchemy.dialects import sqlite
        stmt = sqlite.insert(table).values(values).on_conflict_do_nothing()
    elif name in ("mysql", "mariadb"):
        from sqlalchemy.dialects import mysql
        stmt = mysql.insert(table).values(values).prefix_with("IGNORE")
    else:  # pragma: no cover - other dialects are not supported
        stmt = insert(table).values(values)
    if name in ("postgresql", "sqlite"):
        # psycopg reports no row count (-1) for ``ON CONFLICT DO NOTHING``: the returned key says.
        return conn.execute(stmt.returning(*table.primary_key.columns)).first() is not None
    return conn.execute(stmt).rowcount == 1


def ignoring_conflicts(conn: Connection, table: Table, *conflict: Column[Any]) -> Insert:
    """An ``INSERT`` into ``table`` that skips rows clashing on the unique ``conflict``
    column(s) (``ON CONFLICT DO NOTHING``; ``INSERT IGNORE`` on MariaDB/MySQL)."""
    return _ignoring(conn.dialect.name, table, conflict)


def _ignoring(name: str, table: Table, conflict: tuple[Column[Any], ...]) -> Insert:
    if name == "postgresql":
        from sqlalchemy.dialects import postgresql
        return postgresql.insert(table).on_conflict_do_nothing(index_elements=list(conflict))
    if name == "sqlite":
        from sqlalchemy.dialects import sqlite
        return sqlite.insert(table).on_conflict_do_nothing(index_elements=list(conflict))
    if name in ("mysql", "mariadb"):
        from sqlalchemy.dialects import mysql
        return mysql.insert(table).prefix_with("IGNORE")
    return insert(table)  # pragma: no cover - other dialects are not supported


def insert_new(conn: Connection, table: Table, values: dict[str, Any], key: Column[Any]) -> int | None:
    """Insert one row unless its unique ``key`` exists: the new row's id, or None.

    Insert-or-return-existing for idempotency keys: the database decides who
    wins a race (the loser waits for the winner's commit, then inserts
    nothing); the caller then reads the winner's row (with a locking read, so
    MariaDB shows the latest committed row rather than its snapshot).
    """
    name = conn.dialect.name
    statement = _insert_new_statement(name, table, key)
    if name in ("mysql", "mariadb"):
        result = conn.execute(statement, values)
        return int(result.lastrowid) if result.rowcount == 1 else None
    new_id = direct.run(conn, statement, values).scalar()
    return None if new_id is None else int(new_id)


@functools.cache
def _insert_new_statement(dialect: str, table: Table, key: Column[Any]) -> Insert:
    """:func:`insert_new`'s statement, built once per dialect, table and key (the columns come
    from the parameters it runs with): building it per call cost more than running it."""
    statement = _ignoring(dialect, table, (key,))
    return statement if dialect in ("mysql", "mariadb") else statement.returning(table.c.id)


def upserting(dialect: str, table: Table, conflict: tuple[Column[Any], ...],
              set_: tuple[tuple[str, Any], ...], where: Any = None) -> Insert | None:
    """An ``INSERT`` into ``table`` that, on a clash on the unique ``conflict`` column(s), updates
    the existing row instead: ``set_`` is ``(column, value)`` pairs, where a value may use
    ``excluded(table)`` (the row that was to be inserted).  One statement instead of an ``UPDATE``
    and, when it found no row, an ``INSERT`` (``ON CONFLICT ... DO UPDATE``, atomic on both
    databases that have it).  ``where``: a condition on the existing row; where it does not hold,
    the clash changes nothing.  None on MariaDB/MySQL, whose callers keep their read-first paths
    (an upsert there takes next-key locks)."""
    if dialect == "postgresql":
        from sqlalchemy.dialects import postgresql
        pg = postgresql.insert(table)
        return pg.on_conflict_do_update(index_elements=list(conflict), set_=dict(_resolve(set_, pg.excluded)),
                                        where=where)
    if dialect == "sqlite":
        from sqlalchemy.dialects import sqlite
        lite = sqlite.insert(table)
        return lite.on_conflict_do_update(index_elements=list(conflict), set_=dict(_resolve(set_, lite.excluded)),
                                          where=where)
    return None


def _resolve(set_: tuple[tuple[str, Any], ...], excluded: Any) -> list[tuple[str, Any]]:
    """``set_`` with each callable value given the ``excluded`` row."""
    return [(name, value(excluded) if callable(value) else value) for name, value in set_]
