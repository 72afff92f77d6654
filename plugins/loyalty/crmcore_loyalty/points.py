"""The ``points`` loyalty scheme: points per unit of a won deal's amount.

A won deal earns ``amount * points_per_unit`` points, rounded to a whole
number (``down`` by default, or ``half_up``), if its amount is at least
``minimum_amount``.  Points expire ``expiry_days`` after they were earned
(the deal's ``closed_at``), or never with ``expiry_days`` None or 0 (TOML has
no null, so ``expiry_days = 0`` is how crm.toml says "never").

The amount is taken in the deal's own currency; the scheme does not convert.

Earning and reversing are the core's job (:class:`crmcore.loyalty
.LoyaltyEngine`): it asks this scheme how many points a deal is worth when
the deal enters a won stage, credits them in the same transaction under the
key ``points:deal:<id>:earn:<transition>``, and debits what the deal earned
when it leaves won (taking what is left if some was redeemed, recording the
shortfall; a balance never goes negative).
"""

from __future__ import annotations

from datetime import datetime, timedelta
from decimal import ROUND_DOWN, ROUND_HALF_UP, Decimal
from typing import Any

import attrs

import crmcore

ROUNDING = {"down": ROUND_DOWN, "half_up": ROUND_HALF_UP}


def _not_negative(instance: Any, attribute: attrs.Attribute, value: Decimal) -> None:
    if value < 0:
        raise ValueError(f"{attribute.name} must not be negative, got {value}")


def _rounding_mode(instance: Any, attribute: attrs.Attribute, value: str) -> None:
    if value not in ROUNDING:
        raise ValueError(f"{attribute.name} must be one of {', '.join(ROUNDING)}, got {value!r}")


def _days_or_none(instance: Any, attribute: attrs.Attribute, value: int | None) -> None:
    if value is not None and value < 0:
        raise ValueError(f"{attribute.name} must be a number of days (0: never expire), got {value}")


@attrs.frozen
class PointsOptions:
    """Options of the ``points`` scheme (``[loyalty.points]`` in crm.toml).

    Decimals are given as text in TOML (``points_per_unit = "0.5"``): the core
    refuses floats for exact values.

    :ivar points_per_unit: points per 1 unit of the deal's amount.
    :ivar rounding: ``"down"`` (default) or ``"half_up"``.
    :ivar minimum_amount: deals below this amount earn nothing.
    :ivar expiry_days: days until earned points expire; None or 0 = never.
    """

    points_per_unit: Decimal = attrs.field(default=Decimal(1), validator=_not_negative)
    rounding: str = attrs.field(default="down", validator=_rounding_mode)
    minimum_amount: Decimal = attrs.field(default=Decimal(0), validator=_not_negative)
    expiry_days: int | None = attrs.field(default=365, validator=_days_or_none)


class PointsScheme(crmcore.LoyaltyScheme):
    """Points proportional to the amount of won deals."""

    name = "points"
    description = "points per unit of won deal amount, rounded, with optional minimum and expiry"
    options_type = PointsOptions

    def points_for_deal(self, uow: Any, deal: crmcore.Deal, options: PointsOptions) -> int:
        return points_for_amount(deal.amount, options)

    def expires_at(self, uow: Any, earned_at: datetime, options: PointsOptions) -> datetime | None:
        if not options.expiry_days:  # None or 0: never
            return None
        return earned_at + timedelta(days=options.expiry_days)


def points_for_amount(amount: Decimal, options: PointsOptions) -> int:
    """Whole points for ``amount`` under ``options`` (exact Decimal arithmetic)."""
    if amount < options.minimum_amount:
        return 0
    return int((amount * options.points_per_unit).quantize(Decimal(1), rounding=ROUNDING[options.rounding]))
