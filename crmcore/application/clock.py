"""The source of "now" and the parsing of ``as_of`` arguments.

Every computation that depends on "now" takes an ``as_of``; this module turns
what a user types (a date, an ISO datetime) into an aware UTC instant.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import date, datetime, time, timezone, tzinfo

from ..domain.convert import to_utc
from ..domain.errors import ConfigError


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def parse_as_of(value: str | date | datetime | None, default: Callable[[], datetime] = utcnow,
                zone: tzinfo = timezone.utc) -> datetime:
    """An aware UTC instant.

    A bare date means the end of that day in ``zone`` (the configured
    timezone); a naive datetime is read in ``zone`` too.
    """
    if value is None:
        return default()
    if isinstance(value, str):
        value = value.strip()
        try:
            value = date.fromisoformat(value) if len(value) == 10 else datetime.fromisoformat(value)
        except ValueError:
            raise ConfigError(f"--as-of {value!r} is not a date (YYYY-MM-DD) or ISO datetime") from None
    if isinstance(value, datetime):
        return to_utc(value, zone)
    # "As of a day" includes the whole day: its end (a date in a field is its start).
    return to_utc(datetime.combine(value, time.max), zone)
