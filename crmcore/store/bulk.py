"""Bulk inserts that hand back the new ids, fast on every dialect.

``INSERT ... RETURNING`` with ``executemany`` is not fast everywhere:
SQLAlchemy cannot order RETURNING rows of an executemany on SQLite and falls
back to one INSERT per row (~25x slower), and psycopg re-parses a multi-row
INSERT ... RETURNING of thousands of rows each time.  So:

* SQLite: a plain executemany inside our write transaction (BEGIN IMMEDIATE),
  where new rows are numbered max(rowid)+1, +2, ...; checked afterwards.
* PostgreSQL: ids drawn from the column's sequence first (as its default
  would), then a plain executemany (psycopg pipelines it).
* MariaDB: INSERT ... RETURNING, ordered by SQLAlchemy.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import Connection, CursorResult, Table, func, insert, select, text


def insert_returning_ids(conn: Connection, table: Table, rows: Sequence[Mapping[str, Any]]) -> list[int]:
    """Insert ``rows`` (without ``id``) and return their new ids in row order."""
    if not rows:
        return []
    if conn.dialect.name == "sqlite" and len(rows) > 1:
        conn.execute(insert(table), list(rows))
        return sqlite_new_ids(conn, table, len(rows))
    if conn.dialect.name == "postgresql" and len(rows) > 1:
        sequence = conn.execute(text("SELECT pg_get_serial_sequence(:table, 'id')"),
                                {"table": table.name}).scalar_one()
        ids = list(conn.execute(text("SELECT nextval(:sequence) FROM generate_series(1, :count)"),
                                {"sequence": sequence, "count": len(rows)}).scalars())
        conn.execute(insert(table), [{**row, "id": new_id} for row, new_id in zip(rows, ids)])
        return ids
    stmt = insert(table).returning(table.c.id, sort_by_parameter_order=True)
    return list(conn.execute(stmt, list(rows)).scalars().all())


def sqlite_new_ids(conn: Connection, table: Table, count: int) -> list[int]:
    """Ids of the ``count`` rows one executemany just inserted on SQLite (verified)."""
    last = conn.execute(text("SELECT last_insert_rowid()")).scalar_one()
    first = last - count + 1
    found, highest = conn.execute(select(func.count(), func.max(table.c.id)).where(table.c.id >= first)).one()
    if found != count or highest != last:  # pragma: no cover - only near rowid 2**63
        raise RuntimeError(f"SQLite did not number {count} new {table.name} rows consecutively "
                           f"(rowids {first}..{last})")
    return list(range(first, last + 1))


def inserted_id(result: CursorResult[Any]) -> int:
    """The primary key of the row a single-row ``INSERT`` just wrote."""
    key = result.inserted_primary_key
    if key is None:  # pragma: no cover - only for an executemany or a non-INSERT
        raise RuntimeError("the statement inserted no single row")
    return int(key[0])


def fetch_rows(conn: Connection, query: Any) -> Sequence[tuple[Any, ...]]:
    """All rows of ``query`` as the driver's plain tuples (a list or tuple of them, by driver).

    For reading many rows into arrays: no SQLAlchemy ``Row`` per row and no
    result processing, so values come as the driver returns them (e.g. a
    SQLite ``DATE()`` as text, a PostgreSQL ``SUM`` as ``Decimal``); convert
    per column.
    """
    result = conn.execute(query)
    try:
        return result.cursor.fetchall()
    finally:
        result.close()
