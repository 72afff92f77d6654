"""Portable SQL pieces the loyalty schemes need, one tested branch per dialect.

Integer division and adding days to a timestamp differ between SQLite,
PostgreSQL and MariaDB; SQLAlchemy's ``//`` renders ``FLOOR(a / b)`` on MariaDB,
a DECIMAL division rounded to four places, which is not exact.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, extract, literal
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql import ColumnElement
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.expression import FunctionElement

from crmcore.store import UTCDateTime


class int_div(FunctionElement[int]):
    """``a // b`` for non-negative integers, exact on every dialect."""

    type = BigInteger()
    inherit_cache = True
    name = "int_div"


@compiles(int_div)
def _int_div(element: int_div, compiler: SQLCompiler, **kw: Any) -> str:
    a, b = list(element.clauses)
    return f"(({compiler.process(a, **kw)}) / ({compiler.process(b, **kw)}))"


@compiles(int_div, "mysql")
@compiles(int_div, "mariadb")
def _int_div_mysql(element: int_div, compiler: SQLCompiler, **kw: Any) -> str:
    a, b = list(element.clauses)
    return f"(({compiler.process(a, **kw)}) DIV ({compiler.process(b, **kw)}))"


class add_days(FunctionElement[datetime]):
    """A UTC timestamp plus a whole number of days (``add_days(col, 365)``)."""

    type = UTCDateTime()
    inherit_cache = True
    name = "add_days"


def _days(element: add_days) -> int:
    return int(list(element.clauses)[1].value)


@compiles(add_days)
def _add_days_sqlite(element: add_days, compiler: SQLCompiler, **kw: Any) -> str:
    moment = compiler.process(list(element.clauses)[0], **kw)
    # datetime() drops the microseconds SQLAlchemy stores ("... 12:00:00.000000"): keep them.
    return f"(datetime({moment}, '+{_days(element)} days') || substr({moment}, 20))"


@compiles(add_days, "postgresql")
def _add_days_pg(element: add_days, compiler: SQLCompiler, **kw: Any) -> str:
    return f"({compiler.process(list(element.clauses)[0], **kw)} + INTERVAL '{_days(element)} days')"


@compiles(add_days, "mysql")
@compiles(add_days, "mariadb")
def _add_days_mysql(element: add_days, compiler: SQLCompiler, **kw: Any) -> str:
    return f"DATE_ADD({compiler.process(list(element.clauses)[0], **kw)}, INTERVAL {_days(element)} DAY)"


def days_later(moment: ColumnElement[datetime], days: int) -> ColumnElement[datetime]:
    """``moment + days`` in SQL (``days`` is a Python int, inlined)."""
    return add_days(moment, literal(int(days), literal_execute=True))


def period_key(moment: ColumnElement[datetime], period: str) -> ColumnElement[int]:
    """YYYYMM (``month``) or YYYY (``year``) of a UTC timestamp, as an integer."""
    year = extract("year", moment)
    return year * 100 + extract("month", moment) if period == "month" else year


def utc(moment: datetime) -> ColumnElement[datetime]:
    """A bound UTC timestamp."""
    return literal(moment, UTCDateTime)
