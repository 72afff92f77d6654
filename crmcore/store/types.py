"""Column types that make storage exact and portable.

* :class:`UTCDateTime` stores naive UTC and hands back aware UTC datetimes, so
  the three dialects behave alike.
* :class:`Money` stores a Decimal as an integer count of 1/10,000 units.  SQLite
  has no exact decimal: its NUMERIC is a float and ``SUM`` over millions of deals
  drifts by cents.  Integers sum exactly everywhere, and ``func.sum(money_col)``
  keeps this type, so aggregates come back as Decimal.
"""

from __future__ import annotations

from datetime import datetime, timezone
from decimal import Decimal
from typing import Any

from sqlalchemy import BigInteger, DateTime
from sqlalchemy.types import TypeDecorator

from ..domain.entities import MONEY_SCALE


class UTCDateTime(TypeDecorator[datetime]):
    """An aware UTC datetime, stored without zone information."""

    impl = DateTime
    cache_ok = True

    def load_dialect_impl(self, dialect: Any) -> Any:
        if dialect.name in ("mysql", "mariadb"):
            from sqlalchemy.dialects import mysql  # imported here: only MariaDB/MySQL engines need it

            return dialect.type_descriptor(mysql.DATETIME(fsp=6))
        return dialect.type_descriptor(DateTime())

    def process_bind_param(self, value: Any, dialect: Any) -> Any:
        if value is None:
            return None
        if not isinstance(value, datetime):
            raise TypeError(f"expected a datetime, got {value!r}")
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value!r}: crmcore stores timezone-aware UTC only")
        return value.astimezone(timezone.utc).replace(tzinfo=None)

    def result_processor(self, dialect: Any, coltype: Any) -> Any:
        if dialect.name != "sqlite":
            return super().result_processor(dialect, coltype)
        # SQLite keeps "YYYY-MM-DD HH:MM:SS.ffffff" text: datetime.fromisoformat reads it several
        # times faster than SQLAlchemy's regular expression (three times per row of every read).
        fallback = super().result_processor(dialect, coltype)

        def process(value: Any) -> Any:
            if value.__class__ is str:
                try:
                    # Stored naive, so UTC: read with that offset appended, which gives the
                    # timezone.utc singleton (``replace(tzinfo=...)`` cost 2 us a value, its keyword
                    # parsed on every call; a customer has two or three times).  Only a result in
                    # UTC is one (a bare date takes the "+" for the date-time separator).
                    parsed = datetime.fromisoformat(value + "+00:00")
                except ValueError:
                    pass  # (text with an offset of its own, or not ISO: read as before)
                else:
                    if parsed.tzinfo is timezone.utc:
                        return parsed
                try:
                    parsed = datetime.fromisoformat(value)
                except ValueError:
                    pass
                else:
                    return parsed.replace(tzinfo=timezone.utc) if parsed.tzinfo is None \
                        else parsed.astimezone(timezone.utc)
            return fallback(value) if fallback is not None else self.process_result_value(value, dialect)

        # A point read's row function parses the common case itself (a call fewer per value);
        # anything else, a value with an offset or not text, still goes through process.
        process.crm_inline = ([  # type: ignore[attr-defined]
            "if {v}.__class__ is str:",
            "    try: t_ = from_iso({v} + '+00:00')",
            "    except ValueError: t_ = None",
            "    {v} = t_ if t_ is not None and t_.tzinfo is UTC_ else {p}({v})",
            "else: {v} = {p}({v})"], {"from_iso": datetime.fromisoformat, "UTC_": timezone.utc})
        return process

    def process_result_value(self, value: Any, dialect: Any) -> Any:
        if value is None:
            return None
        if isinstance(value, str):  # SQLite expressions (MAX, MIN) return text
            value = datetime.fromisoformat(value)
        return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value.astimezone(timezone.utc)


class Money(TypeDecorator[Decimal]):
    """A Decimal amount kept as a scaled integer (4 decimal places)."""

    impl = BigInteger
    cache_ok = True

    def process_bind_param(self, value: Any, dialect: Any) -> Any:
        if value is None:
            return None
        scaled = Decimal(value) * MONEY_SCALE
        if scaled != scaled.to_integral_value():
            raise ValueError(f"{value} has more than 4 decimal places")
        return int(scaled)

    def process_result_value(self, value: Any, dialect: Any) -> Decimal | None:
        if value is None:
            return None
        return Decimal(int(value)) / MONEY_SCALE

    @property
    def python_type(self) -> type[Decimal]:
        return Decimal


def money_from_scaled(value: Any) -> Decimal:
    """Decimal of a raw scaled integer (e.g. an expression SQLAlchemy cannot type)."""
    return Decimal(int(value or 0)) / MONEY_SCALE
