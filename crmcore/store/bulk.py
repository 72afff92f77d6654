"""Bulk inserts that hand back the new ids, fast on every dialect.

``INSERT ... RETURNING`` with ``executemany`` is not fast everywhere:
SQLAlchemy cannot order RETURNING rows of an executemany on SQLite and falls
back to one INSERT per row (~25x slower), and psycopg re-parses a multi-row
INSERT ... RETURNING of thousands of rows each time.  So:

* SQLite: a plain executemany inside our write transaction (BEGIN IMMEDIATE),
  where new rows are numbered max(rowid)+1, +2, ...; checked afterwards.
* PostgreSQL: ids drawn from the column's sequence first (as its default
  would), then ``COPY ... FROM STDIN`` (:func:`copy_rows`; several times
  faster than psycopg's pipelined executemany).
* MariaDB: INSERT ... RETURNING, ordered by SQLAlchemy.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import (
    ARRAY,
    ColumnElement,
    Connection,
    CursorResult,
    Table,
    any_,
    func,
    insert,
    literal,
    literal_column,
    select,
    text,
)
from sqlalchemy.exc import DBAPIError


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
        rows = [{**row, "id": new_id} for row, new_id in zip(rows, ids)]
        if not copy_rows(conn, table, rows):
            conn.execute(insert(table), rows)
        return ids
    stmt = insert(table).returning(table.c.id, sort_by_parameter_order=True)
    return list(conn.execute(stmt, list(rows)).scalars().all())


def copy_rows(conn: Connection, table: Table, rows: Sequence[Mapping[str, Any]]) -> bool:
    """Write ``rows`` with PostgreSQL's ``COPY ... FROM STDIN`` (psycopg); False (nothing written) when
    the connection is not psycopg's or the rows do not all have the same columns.

    Values go through the columns' own bind processors first (JSON, UTC time stamps, booleans), so
    COPY stores what an executemany of ``insert(table)`` would.  A refused row raises
    :class:`sqlalchemy.exc.DBAPIError` (IntegrityError, DataError, ...), as the executemany does, and
    leaves the transaction to the caller (a savepoint around it rolls it back).
    """
    if not rows or conn.dialect.name != "postgresql" or conn.dialect.driver != "psycopg":
        return False
    names = list(rows[0])
    if any(row.keys() != rows[0].keys() for row in rows):
        return False
    dialect = conn.dialect
    plan = [(name, table.c[name].type.dialect_impl(dialect).bind_processor(dialect)) for name in names]
    quote = dialect.identifier_preparer
    sql = (f"COPY {quote.format_table(table)} ({', '.join(quote.quote(n) for n in names)}) FROM STDIN")
    driver = conn.connection.driver_connection
    import psycopg  # the psycopg dialect is in use, so the driver is there

    try:
        with driver.cursor() as cursor, cursor.copy(sql) as copy:  # type: ignore[union-attr]
            write = copy.write_row
            for row in rows:
                write([row[name] if process is None else process(row[name]) for name, process in plan])
    except psycopg.Error as exc:
        raise DBAPIError.instance(sql, None, exc, psycopg.Error) from exc
    return True


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


def ids_in(column: Any, ids: Sequence[int], dialect: str) -> ColumnElement[bool]:
    """``column IN ids`` for a few thousand integer ids (a bulk path's chunk).

    SQLAlchemy renders an ``IN`` list at each execution, a few microseconds per
    value (about what the statement's work per row costs); SQLite gets the ids
    as one JSON array read with ``json_each`` instead, and searches the column's
    index for each the same way.  Other databases get the plain ``IN``.
    """
    if dialect == "sqlite":
        each: Any = select(literal_column("value")).select_from(func.json_each(literal(json.dumps(list(ids)))))
        return column.in_(each.scalar_subquery())  # type: ignore[no-any-return]
    if dialect == "postgresql":  # one array parameter
        return column == any_(literal(list(ids), ARRAY(column.type)))  # type: ignore[no-any-return]
    return column.in_(list(ids))  # type: ignore[no-any-return]
