"""The ``birthday`` scheme: a bonus once a year, in the birthday month or on the day.

The birthday is the core customer field ``birthday`` (a typed, validated
date column that imports and exports already carry), not a custom field or a
table of this plugin: a real column is indexed, filterable in SQL with
``EXTRACT`` on every database, and there is no second place for the same fact.

The job (``crm loyalty run``) credits ``bonus`` points into ``wallet`` (the
points scheme by default) for every customer whose birthday falls in the
month (``mode = "month"``) or on the day (``mode = "day"``; 29 February is
celebrated on 28 February in other years) of ``as_of`` in the configured
timezone.  The key ``birthday:<year>:<customer>`` makes it once per year
however often the job runs.  One ``INSERT ... SELECT``.
"""

from __future__ import annotations

import calendar
from datetime import date, timedelta
from typing import TYPE_CHECKING, Any

import attrs
from sqlalchemy import (
    JSON,
    Integer,
    String,
    and_,
    cast,
    literal,
    null,
    or_,
    select,
)
from sqlalchemy.sql import ColumnElement

import crmcore
from crmcore.store import UTCDateTime, birthday_month_day, tables

from .common import check_wallet, key_is_new, local_date
from .sql import utc

if TYPE_CHECKING:
    # Not exported from ``crmcore`` (yet): the type of the context schemes receive.
    from crmcore.loyalty import LoyaltyContext


def _positive(instance: object, attribute: attrs.Attribute[int], value: int) -> None:
    if value <= 0:
        raise ValueError(f"{attribute.name} must be a positive number of points, got {value}")


def _mode(instance: object, attribute: attrs.Attribute[str], value: str) -> None:
    if value not in ("month", "day"):
        raise ValueError(f"{attribute.name} must be month or day, got {value!r}")


def _days(instance: object, attribute: attrs.Attribute[int], value: int) -> None:
    if value < 0:
        raise ValueError(f"{attribute.name} must be a number of days (0: never expire), got {value}")


@attrs.frozen
class BirthdayOptions:
    """Options of the ``birthday`` scheme (``[loyalty.birthday]``).

    :ivar bonus: points per birthday.
    :ivar mode: ``"month"`` (any day of the birthday month) or ``"day"``.
    :ivar wallet: the scheme whose balance receives the bonus.
    :ivar expiry_days: days until the bonus expires (0: never).
    """

    bonus: int = attrs.field(default=100, validator=_positive)
    mode: str = attrs.field(default="month", validator=_mode)
    wallet: str = "points"
    expiry_days: int = attrs.field(default=365, validator=_days)


class BirthdayScheme(crmcore.LoyaltyScheme):
    """A yearly birthday bonus."""

    name = "birthday"
    description = "a bonus once a year in the customer's birthday month (or on the day)"
    options_type = BirthdayOptions

    def run(self, ctx: LoyaltyContext, options: BirthdayOptions) -> int:
        """Credit this year's bonus to every customer celebrating as of ``ctx.as_of``; returns the entries written."""
        check_wallet(ctx, self.name, options.wallet)
        customers = tables.customers
        today = local_date(ctx)
        key = literal(f"{self.name}:{today.year}:") + cast(customers.c.id, String)
        expires = utc(ctx.as_of + timedelta(days=options.expiry_days)) if options.expiry_days else literal(None, UTCDateTime)
        rows = select(customers.c.id.label("customer_id"), literal(options.bonus).label("points"),
                      key.label("idempotency_key"), cast(null(), Integer).label("deal_id"), expires.label("expires_at"),
                      literal(f"birthday bonus {today.year}").label("reason"), utc(ctx.as_of).label("occurred_at"),
                      literal("bonus").label("kind"), literal({"scheme": self.name}, JSON).label("details")
                      ).where(self._celebrating(today, options), key_is_new(key))
        inserted: int = ctx.uow.loyalty.insert_credits(options.wallet, rows, f"{self.name}:{today.year}:%")
        return inserted

    def _celebrating(self, today: date, options: BirthdayOptions) -> ColumnElement[bool]:
        birthday = tables.customers.c.birthday
        # Month and day from the text, plain or sealed (the month-day stays readable).
        birth_month, birth_day = birthday_month_day(birthday)
        month = birth_month == today.month
        if options.mode == "month":
            return and_(birthday.is_not(None), month)
        same_day = and_(month, birth_day == today.day)
        if today.month == 2 and today.day == 28 and not calendar.isleap(today.year):
            same_day = or_(same_day, and_(month, birth_day == 29))
        return and_(birthday.is_not(None), same_day)

