"""Exact decimal text of scaled Money integers, computed in SQL (for ``details``)."""

from __future__ import annotations

from sqlalchemy import BigInteger, String, cast, func, literal
from sqlalchemy.sql import ColumnElement

from crmcore.store import MONEY_SCALE

_DIGITS = len(str(MONEY_SCALE)) - 1  # decimals Money keeps (4)


def decimal_text(scaled: ColumnElement[int]) -> ColumnElement[str]:
    """Exact decimal text of a non-negative scaled Money integer: 12345000 -> '1234.5000'.

    Built from integer parts because SQLite has no exact decimal type to cast
    to.  ``//`` is SQLAlchemy's portable integer division (``DIV``-like on
    every dialect); adding 10,000 to the remainder zero-pads it to four digits.
    """
    scaled = cast(scaled, BigInteger)
    whole = cast(scaled // MONEY_SCALE, String)
    fraction = func.substr(cast(scaled % MONEY_SCALE + MONEY_SCALE, String), 2, _DIGITS)
    return whole + literal(".", String) + fraction
