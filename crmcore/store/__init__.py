"""Storage: tables, column types, engines, repositories and portable SQL helpers."""

from . import tables
from .bulk import fetch_ints, fetch_rows
from .dialects import (
    as_float,
    days_between,
    json_object,
    month_index,
    month_label,
    temporary_table,
    unindexed,
    utc_literal,
)
from .engine import make_engine, normalize_url
from .sealed import birthday_month_day
from ..domain.entities import MONEY_SCALE
from .types import Money, UTCDateTime, money_from_scaled

__all__ = [
    "MONEY_SCALE", "Money", "UTCDateTime", "as_float", "birthday_month_day", "days_between", "fetch_ints", "fetch_rows", "json_object",
    "make_engine", "money_from_scaled", "month_index", "month_label", "temporary_table", "unindexed", "normalize_url", "tables", "utc_literal",
]
