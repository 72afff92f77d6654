"""Portable SQL helpers with a tested branch per dialect.

Plugins use these instead of writing dialect-specific SQL themselves.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Float, Integer, Table, cast, func, literal
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql import ColumnElement
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.expression import FunctionElement

from .types import UTCDateTime


class days_between(FunctionElement[float]):
    """Fractional days from ``start`` to ``end`` (both UTC datetime expressions).

    ``days_between(deals.c.closed_at, literal(as_of, UTCDateTime))``
    """

    type = Float()
    inherit_cache = True
    name = "days_between"


@compiles(days_between)
def _days_default(element: Any, compiler: SQLCompiler, **kw: Any) -> str:
    start, end = list(element.clauses)
    return f"(julianday({compiler.process(end, **kw)}) - julianday({compiler.process(start, **kw)}))"


@compiles(days_between, "postgresql")
def _days_pg(element: Any, compiler: SQLCompiler, **kw: Any) -> str:
    start, end = list(element.clauses)
    return (f"(EXTRACT(EPOCH FROM ({compiler.process(end, **kw)} - {compiler.process(start, **kw)}))"
            " / 86400.0)")


@compiles(days_between, "mysql")
@compiles(days_between, "mariadb")
def _days_mysql(element: Any, compiler: SQLCompiler, **kw: Any) -> str:
    start, end = list(element.clauses)
    # A DOUBLE divisor (e0): with a DECIMAL one MariaDB keeps only 4 decimals
    # of a day, so anything under ~9 seconds became 0.
    return (f"(TIMESTAMPDIFF(MICROSECOND, {compiler.process(start, **kw)}, "
            f"{compiler.process(end, **kw)}) / 86400000000e0)")


def utc_literal(moment: datetime) -> ColumnElement[datetime]:
    """A bound UTC timestamp usable in SQL arithmetic on every dialect."""
    return literal(moment, UTCDateTime)


def json_object(dialect_name: str, **values: ColumnElement[Any]) -> ColumnElement[Any]:
    """A JSON object built in SQL from named expressions (for ``details`` columns)."""
    args: list[Any] = []
    for key, value in values.items():
        args.extend([literal(key), value])
    if dialect_name == "postgresql":
        return func.json_build_object(*args)
    return func.json_object(*args)


def as_float(expr: ColumnElement[Any]) -> ColumnElement[float]:
    """Cast to float for ratios (integer division differs between dialects)."""
    return cast(expr, Float)


class month_index(FunctionElement[int]):
    """The calendar month of a UTC datetime as one integer: ``year * 12 + month - 1``.

    Consecutive months differ by one, so cohort offsets are a subtraction and
    ``divmod(index, 12)`` gives the year and month back (month 0-based).
    """

    type = Integer()
    inherit_cache = True
    name = "month_index"


@compiles(month_index)
def _month_default(element: Any, compiler: SQLCompiler, **kw: Any) -> str:
    value = compiler.process(list(element.clauses)[0], **kw)
    # SQLite keeps dates and datetimes as ISO text ("2026-03-05 ..."): the year and month are
    # fixed positions, and substr is several times cheaper than strftime over millions of rows.
    return (f"(CAST(substr({value}, 1, 4) AS INTEGER) * 12 + CAST(substr({value}, 6, 2) AS INTEGER) - 1)")


@compiles(month_index, "postgresql")
def _month_pg(element: Any, compiler: SQLCompiler, **kw: Any) -> str:
    value = compiler.process(list(element.clauses)[0], **kw)
    return f"(CAST(EXTRACT(YEAR FROM {value}) AS INTEGER) * 12 + CAST(EXTRACT(MONTH FROM {value}) AS INTEGER) - 1)"


@compiles(month_index, "mysql")
@compiles(month_index, "mariadb")
def _month_mysql(element: Any, compiler: SQLCompiler, **kw: Any) -> str:
    value = compiler.process(list(element.clauses)[0], **kw)
    return f"(YEAR({value}) * 12 + MONTH({value}) - 1)"


def month_label(index: int) -> str:
    """``"2026-03"`` for a :class:`month_index` value."""
    year, month = divmod(int(index), 12)
    return f"{year:04d}-{month + 1:02d}"


class unindexed(FunctionElement[Any]):
    """``column`` where no index should serve it: SQLite's unary ``+``, the bare column elsewhere.

    A GROUP BY over most rows of a big table (revenue per customer) is a
    sequential scan and a sort; SQLite otherwise walks the index on that
    column and fetches every row at random (measured 3x slower on 5M deals).

    It also drops the column's type affinity: a time column (numeric affinity on SQLite) compared
    with a bound time stamp makes SQLite try to read the text as a number at every row; the bare
    value compares as the text it is (a sixth less time for an aggregate over 500,000 deals that
    checks a window per row).  Use it where an index cannot serve the comparison anyway.
    """

    inherit_cache = True
    name = "unindexed"

    def __init__(self, column: ColumnElement[Any]) -> None:
        super().__init__(column)
        self.type = column.type


@compiles(unindexed)
def _unindexed_default(element: Any, compiler: SQLCompiler, **kw: Any) -> str:
    return compiler.process(list(element.clauses)[0], **kw)


@compiles(unindexed, "sqlite")
def _unindexed_sqlite(element: Any, compiler: SQLCompiler, **kw: Any) -> str:
    return f"+{compiler.process(list(element.clauses)[0], **kw)}"


@contextmanager
def temporary_table(conn: Connection, table: Table) -> Iterator[None]:
    """Create ``table`` (declared with ``prefixes=["TEMPORARY"]``: this connection's own) for the
    block, then drop it; for set-based jobs that stage rows in SQL.

    A leftover of a failed job is dropped first: MariaDB keeps temporary tables
    across a rollback (SQLite's and PostgreSQL's DDL roll back with the transaction),
    and there only ``DROP TEMPORARY TABLE`` leaves the transaction open.
    """
    mariadb = conn.dialect.name in ("mysql", "mariadb")
    if mariadb:
        conn.exec_driver_sql(f"DROP TEMPORARY TABLE IF EXISTS {table.name}")
    table.create(conn)
    yield
    if mariadb:  # a plain DROP TABLE would commit the transaction there
        conn.exec_driver_sql(f"DROP TEMPORARY TABLE {table.name}")
    else:
        table.drop(conn)
