"""Delivery settings any channel accepts next to its own options.

In ``[channels.NAME]`` of crm.toml, besides the channel's own options::

    [channels.smtp]
    host = "mail.example.com"
    rate_limit = 20                     # at most 20 messages per second
    send_group = 1                      # messages marked "sending" per commit (see docs/notify.md)
    quiet_hours = "21:00-08:00"         # in quiet_hours_timezone (default: [timezone])
    quiet_hours_for = "marketing"       # or "all"

The dispatcher reads these (:func:`split_delivery_options`); the channel never
sees them.  A rate limit holds per dispatcher process (all its worker threads
share it); two dispatcher processes each get the full rate.  Quiet hours defer
messages to the end of the window, they never drop them.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from datetime import time as clock_time
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import attrs

from ..domain.errors import ConfigError

DELIVERY_KEYS = ("rate_limit", "quiet_hours", "quiet_hours_timezone", "quiet_hours_for", "send_group")
QUIET_FOR = ("marketing", "all")
_WINDOW = re.compile(r"^\s*([01]?\d|2[0-3]):([0-5]\d)\s*-\s*([01]?\d|2[0-3]):([0-5]\d)\s*$")


@attrs.frozen
class QuietHours:
    """A daily window (may cross midnight) in a time zone."""

    start: clock_time
    end: clock_time
    zone: ZoneInfo
    applies_to: str = "marketing"

    def deferral(self, now: datetime) -> datetime | None:
        """When the window around ``now`` ends (UTC), or None if ``now`` is outside it."""
        local = now.astimezone(self.zone)
        minute = local.time().replace(second=0, microsecond=0, tzinfo=None)
        crosses_midnight = self.start > self.end
        inside = (self.start <= minute or minute < self.end) if crosses_midnight \
            else (self.start <= minute < self.end)
        if not inside:
            return None
        end_day = local.date()
        if crosses_midnight and minute >= self.start:
            end_day += timedelta(days=1)
        end = datetime.combine(end_day, self.end, tzinfo=self.zone)
        return end.astimezone(UTC)


@attrs.frozen
class DeliveryPolicy:
    """How the dispatcher paces and schedules one channel."""

    rate_limit: float | None = None
    quiet_hours: QuietHours | None = None
    send_group: int = 1


def split_delivery_options(raw: Mapping[str, Any], channel: str,
                           default_zone: str) -> tuple[DeliveryPolicy, dict[str, Any]]:
    """Separate the delivery keys of ``[channels.NAME]`` from the channel's own options."""
    where = f"[channels.{channel}]"
    own = {k: v for k, v in raw.items() if k not in DELIVERY_KEYS}
    rate = raw.get("rate_limit")
    if rate is not None and (isinstance(rate, bool) or not isinstance(rate, (int, float)) or rate <= 0):
        raise ConfigError(f"{where} rate_limit: messages per second, a positive number; got {rate!r}")
    group = raw.get("send_group", 1)
    if isinstance(group, bool) or not isinstance(group, int) or not 1 <= group <= 1000:
        raise ConfigError(f"{where} send_group: a whole number from 1 to 1000; got {group!r}")
    quiet = None
    if raw.get("quiet_hours") is not None:
        quiet = _quiet_hours(raw, where, default_zone)
    elif "quiet_hours_timezone" in raw or "quiet_hours_for" in raw:
        raise ConfigError(f"{where} quiet_hours_timezone/quiet_hours_for need quiet_hours")
    return DeliveryPolicy(float(rate) if rate is not None else None, quiet, group), own


def _quiet_hours(raw: Mapping[str, Any], where: str, default_zone: str) -> QuietHours:
    window = raw["quiet_hours"]
    match = _WINDOW.match(window) if isinstance(window, str) else None
    if not match:
        raise ConfigError(f"{where} quiet_hours: expected \"HH:MM-HH:MM\" (e.g. \"21:00-08:00\"), got {window!r}")
    h1, m1, h2, m2 = (int(g) for g in match.groups())
    if (h1, m1) == (h2, m2):
        raise ConfigError(f"{where} quiet_hours: start and end are the same ({window!r})")
    zone_name = raw.get("quiet_hours_timezone", default_zone)
    try:
        zone = ZoneInfo(zone_name)
    except (ZoneInfoNotFoundError, ValueError, TypeError):
        raise ConfigError(f"{where} quiet_hours_timezone: unknown time zone {zone_name!r}") from None
    applies = raw.get("quiet_hours_for", "marketing")
    if applies not in QUIET_FOR:
        raise ConfigError(f"{where} quiet_hours_for: one of {', '.join(QUIET_FOR)}; got {applies!r}")
    return QuietHours(clock_time(h1, m1), clock_time(h2, m2), zone, applies)


class Pacer:
    """Spaces sends at least ``1/rate`` seconds apart, across threads.

    Each caller reserves the next free slot under a lock and sleeps outside
    it, so N threads together still keep the rate.  The sleep is interruptible
    through ``wait`` (a stop event's ``wait``), so a shutdown is not held up.
    """

    def __init__(self, rate: float):
        self.interval = 1.0 / rate
        self._lock = threading.Lock()
        self._next = 0.0

    def wait_turn(self, wait: Any = time.sleep) -> None:
        with self._lock:
            now = time.monotonic()
            slot = max(now, self._next)
            self._next = slot + self.interval
        if slot > now:
            wait(slot - now)
