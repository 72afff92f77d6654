"""Parameter types shared by the commands: integers that fit the database.

Every id, count and number of points the command line takes is a bounded
range of 64-bit integers, so ``customer show 100000000000000000000`` or
``--limit -1`` is a usage error naming the parameter instead of an overflow
(SQLite) or a ``DataError`` (PostgreSQL) deep in the driver.  Plugins use them
too: ``@click.argument("id", type=crmcore.cli.params.ID)``.
"""

from __future__ import annotations

import click

from typing import Any

from ..segments.reference import SegmentRef, parse_segment_ref


class Int64(click.IntRange):
    """An integer between ``min`` and ``max`` (both within 64 bits), with a plain message:
    ``must be at least 1``, ``is beyond 9,223,372,036,854,775,807``."""

    name = "integer"

    def __init__(self, min: int, max: int) -> None:  # noqa: A002 - click's names
        super().__init__(min, max)

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        """Parse ``value`` as an integer and check its bounds (a usage error naming the parameter)."""
        number = click.INT.convert(value, param, ctx)
        assert self.min is not None and self.max is not None
        if number < self.min:
            self.fail(f"must be at least {self.min:,}, got {number}", param, ctx)
        if number > self.max:
            self.fail(f"{number} is beyond {self.max:,}, the largest this database stores", param, ctx)
        return number


#: The largest value of a 64-bit signed integer (``BIGINT``), the widest integer column.
INT64_MAX = 2**63 - 1

#: A stored row's id (0 is allowed and simply not found).
ID = Int64(0, INT64_MAX)
#: A count or offset: zero or more.
COUNT = Int64(0, INT64_MAX)
#: At least one (``--workers``, ``--max-rounds``, a dispatch ``--limit``).
POSITIVE = Int64(1, INT64_MAX)
#: A signed amount (points to adjust by).
SIGNED = Int64(-INT64_MAX, INT64_MAX)


def as_id(text: str) -> int | None:
    """``text`` as a row id when it is one (decimal digits within 64 bits), else None."""
    text = text.strip()
    if not text.isascii() or not text.isdigit():
        return None
    value = int(text)
    return value if value <= INT64_MAX else None


def one_more(limit: int) -> int:
    """``limit + 1``, still within 64 bits: fetch one row more to learn whether a listing stopped early."""
    return min(limit, INT64_MAX - 1) + 1


class SegmentRefType(click.ParamType[SegmentRef, Any]):
    """``STRATEGY:SEGMENT`` or ``SEGMENT`` (see :mod:`crmcore.segments.reference`), checked for shape;
    the command resolves it against the runs (``crm.segments.resolve``)."""

    name = "segment"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> SegmentRef:
        """``value`` as a :class:`~crmcore.segments.SegmentRef` (a usage error naming the parameter)."""
        if isinstance(value, SegmentRef):
            return value
        try:
            return parse_segment_ref(str(value))
        except ValueError as exc:
            self.fail(str(exc), param, ctx)


#: A segment reference: ``--segment rfm:"At Risk"``, ``--segment 华北``.
SEGMENT = SegmentRefType()
