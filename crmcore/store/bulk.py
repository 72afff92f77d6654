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
from collections import deque
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import orjson

from sqlalchemy import (
    ARRAY,
    Column,
    ColumnElement,
    Connection,
    CursorResult,
    FromClause,
    Integer,
    String,
    Table,
    any_,
    cast,
    func,
    insert,
    literal,
    literal_column,
    select,
    text,
    true,
)
from sqlalchemy.exc import DBAPIError
from sqlalchemy.sql.elements import Label
from sqlalchemy.types import NullType, TypeDecorator

from .intlist import IntList


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
    copy_in(conn, table, names, ([row[name] if process is None else process(row[name]) for name, process in plan]
                                 for row in rows))
    return True


def copy_in(conn: Connection, table: Table, names: Sequence[str], values: Iterable[Sequence[Any]],
            binary: Sequence[str] | None = None) -> None:
    """``COPY table (names) FROM STDIN`` of ``values`` (driver values, one sequence per row) through
    psycopg's C ``write_row``.  A refused row raises :class:`sqlalchemy.exc.DBAPIError`, as an
    executemany does, and leaves the transaction to the caller.

    ``binary``: psycopg's type name for each column, to send them in COPY's binary format (no
    text to escape and parse: time stamps, integers and booleans cost a fraction on both
    sides).  Each value must be what that type's binary dumper takes (``int`` for ``int4``,
    ``str`` for ``text``, a naive ``datetime`` for ``timestamp``...): see
    :func:`crmcore.io.pgcopy.binary_types`.
    """
    quote = conn.dialect.identifier_preparer
    sql = (f"COPY {quote.format_table(table)} ({', '.join(quote.quote(n) for n in names)}) FROM STDIN"
           + (" (FORMAT BINARY)" if binary is not None else ""))
    import psycopg  # the psycopg dialect is in use, so the driver is there

    driver = conn.connection.driver_connection
    try:
        with driver.cursor() as cursor, cursor.copy(sql) as copy:  # type: ignore[union-attr]
            if binary is not None:
                copy.set_types(list(binary))
            deque(map(copy.write_row, values), maxlen=0)  # each row written from C, no Python loop
    except psycopg.Error as exc:
        raise DBAPIError.instance(sql, None, exc, psycopg.Error) from exc


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


def fetch_ints(conn: Connection, query: Any) -> IntList:
    """The one integer column of ``query``'s rows (in its order) as a list of ints.

    On SQLite the column comes as one JSON array (``json_group_array`` over the query, read
    with orjson): the driver's cost per row (about 0.19 us for a one-column tuple) is most of
    reading 100,000 ids, and one array costs about a third of it.  Other databases: the rows.
    An :class:`~crmcore.store.intlist.IntList`: JSON writers (an audit record's ids) trust it.
    """
    if conn.dialect.name == "sqlite":
        # SQLite aggregates a FROM subquery's rows in its ORDER BY order (it drops such an order
        # only for count, min and max); tests/bulk checks the order.
        rows = query.subquery("ints")
        text = conn.execute(select(func.json_group_array(rows.c[0])).select_from(rows)).scalar_one()
        return IntList(orjson.loads(text))
    return IntList(int(value) for (value,) in fetch_rows(conn, query))


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
    if dialect == "postgresql":  # one array parameter, sent as its text (see any_of)
        return any_of(column, ids)
    return column.in_(list(ids))  # type: ignore[no-any-return]


def any_of(column: Any, values: Sequence[Any]) -> ColumnElement[bool]:
    """PostgreSQL's ``column = ANY(CAST(:text AS type[]))`` for a few thousand ``values``.

    psycopg binds a Python list element by element in Python (about 0.9 us a
    string, 0.5 us an integer: 4.3 ms for a batch's 5,000 addresses); the
    same array as one text parameter in PostgreSQL's array syntax costs a
    tenth of that, and the server reads it into the same typed array.  For
    plain text and integer columns with string and integer values only
    (others: the list, bound as before, through the type's processors).
    """
    # Only where the list's elements would be bound as they are (no type's bind processor to run).
    plain = isinstance(column.type, (String, Integer)) and not isinstance(column.type, TypeDecorator)
    text_form = pg_array_text(values) if plain else None
    if text_form is None:
        return column == any_(literal(list(values), ARRAY(column.type)))  # type: ignore[no-any-return]
    # The parameter untyped (psycopg sends a str as "unknown"): PostgreSQL then reads it as the
    # array itself, a constant the planner sees (with a typed text parameter the cast would run
    # per row, and the index would not be used).  Text without a length: a cast to VARCHAR(n)[]
    # would cut a longer value down to one that matches.
    element = String() if isinstance(column.type, String) else column.type
    return column == any_(cast(literal(text_form, NullType()), ARRAY(element)))  # type: ignore[no-any-return]


def probe_each(columns: Sequence[Any], column: Any, values: Any, *where: Any) -> Any:
    """PostgreSQL: a query for the rows (``columns``) whose ``column`` equals one of ``values``,
    with one search of ``column``'s index per value: ``unnest(values)`` joined ``LATERAL`` to a
    subquery that compares ``column`` with one value.

    ``values``: an array parameter or constant (:func:`pg_array_text`'s text, untyped, or a
    ``bindparam`` of it), read as ``column``'s type (``text`` for a string column).  Rows come
    once per value that finds them: give each value once.  ``where``: more conditions on the
    subquery's rows.

    ``column = ANY(array)`` lets the planner choose, and with the default costs (a random page
    read counted as four sequential ones) it takes a scan of the whole table for a few thousand
    values up to about a million rows: an import's look-ups by 5,000 keys then read every
    stored customer per batch, so their cost grows with the table (100,000 customers: 55 ms a
    look-up against 15 ms by the index).  The subquery's ``OFFSET 0`` keeps the planner from
    merging it into the join (where it could choose a hash join over the same scan), so each
    value is one index search, whatever the table's size or statistics.  (Not ``LIMIT 1``: with
    it the planner expects a scan to find a row early, and scans the table once per value.)

    Only for a ``column`` that leads an index.  Run it :func:`without_jit` unless ``column``
    is unique (the planner then counts one row a search): in a table without statistics yet
    (an import's) the planner counts about 30 rows a search, the statement's cost passes
    ``jit_above_cost``, and each execution pays JIT compilation (150-250 ms for 5,000 values,
    against 20 ms of work).
    """
    element = String() if isinstance(column.type, String) else column.type
    array = values if isinstance(values, ColumnElement) else literal(values, NullType())
    given = func.unnest(cast(array, ARRAY(element))).table_valued("value").render_derived("given")
    # A table stands for its columns.  Each column under its own name (rows are read by it), an
    # expression (or a second column of a name) under a made-up one no column has.
    flat = [c for entry in columns for c in (entry.c if isinstance(entry, FromClause) else (entry,))]
    taken = {c.name for c in flat if isinstance(c, (Column, Label))}
    named, used = [], set()
    for index, c in enumerate(flat):
        name = c.name if isinstance(c, (Column, Label)) and c.name not in used else f"_probe_c{index}"
        while name in used or (name != getattr(c, "name", None) and name in taken):
            name = "_" + name
        used.add(name)
        named.append(c.label(name))
    found = select(*named).where(column == given.c.value, *where).offset(0).lateral("found")
    return select(*found.c).select_from(given.join(found, true()))


@contextmanager
def without_jit(conn: Connection) -> Iterator[None]:
    """PostgreSQL: the statements inside run with ``jit`` off; the setting the transaction had
    is back after them (two round trips).  For :func:`probe_each` over a column that is not
    unique: its estimated cost can pass ``jit_above_cost`` where the work is a few milliseconds."""
    if conn.dialect.name != "postgresql":
        yield
        return
    before = conn.execute(text("SELECT current_setting('jit'), set_config('jit', 'off', true)")).scalar_one()
    restore = text("SELECT set_config('jit', :before, true)")
    try:
        yield
    except BaseException:
        # The block failed: the setting goes back if the transaction still takes a statement, and
        # the block's own error is what the caller sees (not "current transaction is aborted").
        if conn.in_transaction() and not conn.invalidated:
            try:
                with conn.begin_nested():
                    conn.execute(restore, {"before": before})
            except DBAPIError:
                pass
        raise
    if conn.in_transaction() and not conn.invalidated:
        conn.execute(restore, {"before": before})


def probes_pay(conn: Connection, table: Table, count: int) -> bool:
    """PostgreSQL: whether ``count`` values are found in ``table`` faster by :func:`probe_each`
    (one index search a value) than by one scan of the table (one round trip to read its size).

    A scan reads every page; a search costs about what a quarter of a page's scan does (both
    from memory: 100,000 customers in 3,529 pages, 5,000 values: a scan 55-80 ms, the searches
    15-27 ms), so searches pay from a page per four values on.  Below that, ``= ANY`` is left
    to the planner, which scans.  The size is the table's now (``pg_relation_size``), not its
    statistics: an import grows the table between its look-ups, before any ``ANALYZE``.
    """
    if count < 100:  # a few values: the planner searches the index for them itself (no round trip)
        return False
    name = conn.dialect.identifier_preparer.format_table(table)
    pages: int = conn.execute(text(  # no such table on the search path: no pages
        "SELECT coalesce(pg_relation_size(to_regclass(:name)), 0) / current_setting('block_size')::int"),
        {"name": name}).scalar_one()
    return pages * 4 > count


def pg_array_text(values: Sequence[Any]) -> str | None:
    """``values`` (all ``str`` or all ``int``) in PostgreSQL's array syntax, ``{"a","b\\"c"}``;
    None for any other kind of value.

    Every string is double-quoted, with its backslashes and double quotes
    escaped: so no element is read as NULL, and commas, braces and blanks stay
    part of it.  (A NUL cannot be sent in any form: PostgreSQL refuses it in text.)
    """
    kinds = set(map(type, values))  # in C: an import asks this for every batch's 5,000 keys
    if kinds == {int}:
        return "{" + ",".join(map(str, values)) + "}"
    if kinds != {str}:
        return None
    plain = "".join(values)
    if '"' not in plain and "\\" not in plain:  # nothing to escape in any element: quoted as they are
        return '{"' + '","'.join(values) + '"}'
    return "{" + ",".join(
        f'"{v}"' if '"' not in v and "\\" not in v else '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
        for v in values) + "}"
