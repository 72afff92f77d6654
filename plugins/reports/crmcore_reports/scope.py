"""The typed filters every report takes, turned into SQL conditions.

``ReportFilters`` is the attrs base of each report's options: a date range
(``start``/``end``, whole UTC days, both included), ``region`` (the
customer's), ``owner``, ``pipeline``, ``segment`` (``STRATEGY:NAME``, or
``NAME`` alone when one strategy's latest run has it; ``RUN_ID:NAME`` pins a
run) and ``currency``.
:class:`Scope` checks them once (end before start, unknown segment or run)
and hands out conditions for the deals and interactions tables, so every
report filters the same way.  Customer filters are ``customer_id IN
(SELECT ...)`` semi-joins rather than joins: the planners of all three
databases turn those into hash semi-joins whatever their statistics say.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date, datetime, time, timedelta, timezone
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

import attrs
from sqlalchemy import Select, and_, false, func, or_, select
from sqlalchemy.sql import ColumnElement

import crmcore
from crmcore.store import MONEY_SCALE, tables, unindexed, utc_literal

deals = tables.deals
customers = tables.customers
interactions = tables.interactions
memberships = tables.segment_memberships
runs = tables.segment_runs


@attrs.frozen
class ReportFilters:
    """The filters shared by the reports (each report adds its own options).

    :ivar start: first day included (UTC); None: from the beginning.
    :ivar end: last day included (UTC); None: up to ``as_of``.
    :ivar region: only customers whose region is this.
    :ivar owner: only deals (or interactions) owned by this sales rep.
    :ivar pipeline: only this pipeline (reports about stages default to ``default``).
    :ivar segment: only members of a segment: ``STRATEGY:NAME`` or ``NAME`` (the latest run of its
        strategy), or ``RUN_ID:NAME`` (that run).
    :ivar currency: the currency reported; default: the configured ``default_currency``.
    """

    start: date | None = None
    end: date | None = None
    region: str | None = None
    owner: str | None = None
    pipeline: str | None = None
    segment: str | None = None
    currency: str | None = crmcore.currency_option()


class Scope:
    """The checked filters of one report run, as SQL conditions."""

    def __init__(self, ctx: crmcore.ReportContext, options: ReportFilters, report: str):
        self.ctx, self.options, self.report = ctx, options, report
        self.where = f"[reports.{report}]"
        if options.start and options.end and options.end < options.start:
            raise crmcore.ConfigError(f"{self.where} end {options.end} is before start {options.start}")
        self.currency = (options.currency or ctx.config.default_currency).upper()
        self.start = _midnight(options.start) if options.start else None
        # The end day is included: the range stops at the next midnight, and never after as_of.
        end = _midnight(options.end + timedelta(days=1)) if options.end else None
        self.end_exclusive = min(end, ctx.as_of + timedelta(microseconds=1)) if end else (
            ctx.as_of + timedelta(microseconds=1))
        self.pipelines = self._pipelines()
        self.segment_members = self._segment_members()

    # -- what the filters select --------------------------------------------------
    def in_range(self, column: ColumnElement[datetime]) -> list[ColumnElement[bool]]:
        """``start <= column < end`` (end: the day after ``end``, capped at ``as_of``)."""
        if self.start is None:
            # Everything up to as_of is most of the table: scan it rather than walk an index
            # on the column and fetch each row at random (SQLite would choose the index).
            return [unindexed(column) < utc_literal(self.end_exclusive)]
        return [column < utc_literal(self.end_exclusive), column >= utc_literal(self.start)]

    def customer_filter(self, customer_id: ColumnElement[int]) -> list[ColumnElement[bool]]:
        """Region and segment filters on a customer id column."""
        conditions: list[ColumnElement[bool]] = []
        if self.options.region is not None:
            conditions.append(customer_id.in_(select(customers.c.id).where(
                customers.c.region == self.options.region)))
        if self.segment_members is not None:
            conditions.append(customer_id.in_(self.segment_members))
        return conditions

    def deal_filter(self, currency: bool = True) -> list[ColumnElement[bool]]:
        """Deals existing at ``as_of`` in the filtered pipeline(s), owner, customers and currency."""
        conditions = [deals.c.created_at <= utc_literal(self.ctx.as_of), *self.customer_filter(deals.c.customer_id)]
        if self.options.pipeline is not None:
            conditions.append(deals.c.pipeline == self.options.pipeline)
        if self.options.owner is not None:
            conditions.append(deals.c.owner == self.options.owner)
        if currency:
            conditions.append(deals.c.currency == self.currency)
        return conditions

    def interaction_filter(self) -> list[ColumnElement[bool]]:
        """Interactions in the date range (``occurred_at``), owner and customer filters."""
        conditions = [*self.in_range(interactions.c.occurred_at),
                      *self.customer_filter(interactions.c.customer_id)]
        if self.options.owner is not None:
            conditions.append(interactions.c.owner == self.options.owner)
        return conditions

    def outcome(self, outcome: crmcore.StageOutcome, stage: ColumnElement[str] | None = None,
                pipeline: ColumnElement[str] | None = None) -> ColumnElement[bool]:
        """Deals whose stage has this configured outcome in their own pipeline.

        ``stage`` and ``pipeline``: other columns to test (e.g. the stage at
        as_of from :mod:`crmcore_reports.stage_then`); default: the deals table's.
        """
        # Outcomes cover most deals (won is often over half): a sequential scan beats walking the
        # stage index and fetching each row at random, which SQLite would otherwise choose.
        stage = unindexed(deals.c.stage) if stage is None else stage
        pipeline = deals.c.pipeline if pipeline is None else pipeline
        parts = [and_(pipeline == p.name, stage.in_(p.stages_with(outcome)))
                 for p in self.pipelines if p.stages_with(outcome)]
        return or_(*parts) if parts else false()

    def other_currencies_note(self, *conditions: ColumnElement[bool]) -> list[str]:
        """A note counting the deals left out because they are in another currency."""
        query = (select(deals.c.currency, func.count()).where(*conditions, deals.c.currency != self.currency)
                 .group_by(deals.c.currency).order_by(deals.c.currency))
        others: Mapping[str, int] = dict(self.ctx.conn.execute(query).all())
        if not others:
            return []
        listing = ", ".join(f"{n} in {code}" for code, n in others.items())
        return [f"Not included: deals in other currencies ({listing}); run with currency=CODE to see them."]

    def describe(self) -> str:
        """The filters in force, for a subtitle (``region=华东, owner=alice``)."""
        shown = {k: v for k, v in attrs.asdict(self.options).items()
                 if k in {f.name for f in attrs.fields(ReportFilters)} and v is not None}
        shown["currency"] = self.currency
        return ", ".join(f"{k}={v}" for k, v in shown.items())

    # -- checks ------------------------------------------------------------------
    def _pipelines(self) -> list[crmcore.Pipeline]:
        if self.options.pipeline is not None:
            return [self.ctx.config.pipeline(self.options.pipeline)]  # ConfigError names the known ones
        return list(self.ctx.config.pipelines.values())

    def _segment_members(self) -> Select[int] | None:
        """A select of the customer ids in the requested segment, or None.

        ``STRATEGY:NAME`` or ``NAME`` is the core's segment reference (the
        latest run of the strategy, ``crm.segments.resolve``); ``RUN_ID:NAME``
        pins a run, which only reports do (a past run against past numbers).
        """
        if self.options.segment is None:
            return None
        run_text, colon, name = self.options.segment.partition(":")
        run_id: int | None
        if colon and run_text.strip().isascii() and run_text.strip().isdigit():
            run_id, name = int(run_text), name.strip()
            if self.ctx.conn.execute(select(runs.c.id).where(runs.c.id == run_id)).first() is None:
                raise crmcore.ConfigError(f"{self.where} segment: segmentation run {run_id} not found")
        else:
            try:
                found = self.ctx.uow.crm.segments.resolve(self.options.segment)
            except crmcore.ValidationError as exc:
                raise crmcore.ConfigError(f"{self.where} segment: {exc.issues[0][1]}") from None
            run_id, name = found.run_id, found.segment
        return select(memberships.c.customer_id).where(memberships.c.run_id == run_id,
                                                       memberships.c.segment == name)


def _midnight(day: date) -> datetime:
    return datetime.combine(day, time.min, tzinfo=timezone.utc)


def minor_unit(currency: str, where: str = "[reports]") -> Decimal:
    """``Decimal("0.01")`` for USD, ``Decimal("1")`` for JPY."""
    try:
        return Decimal(1).scaleb(-crmcore.currency_digits(currency))
    except ValueError as exc:  # an unknown code is the user's to fix, not a crash
        raise crmcore.ConfigError(f"{where} currency: {exc}") from None


def money(scaled: float | Decimal | None, currency: str) -> Decimal:
    """A summed scaled-integer amount as Decimal at the currency's minor unit."""
    return (Decimal(int(scaled or 0)) / MONEY_SCALE).quantize(minor_unit(currency))


def weighted_money(scaled_percent: float | Decimal | None, currency: str, where: str = "[reports]") -> Decimal:
    """A sum of ``amount * probability`` (scaled amounts times whole percents) as money.

    The sum is exact (integers in SQL); it is divided out and rounded half-up
    once, to the currency's minor unit, like every other amount in a report
    (``0.10 * 33%`` three times is 0.099, shown as 0.10).
    """
    value = Decimal(int(scaled_percent or 0)) / MONEY_SCALE / 100
    return value.quantize(minor_unit(currency, where), rounding=ROUND_HALF_UP)


def average_money(scaled_sum: float | Decimal | None, count: int | None, currency: str) -> Decimal | None:
    """``sum / count`` of scaled amounts, exact then rounded half-up to the minor unit.

    Not ``AVG()`` in SQL: on the scaled integers it is a float (or a scaled
    Decimal), and the exact sum and count are what make the cents right.
    """
    if not count:
        return None
    value = Decimal(int(scaled_sum or 0)) / MONEY_SCALE / int(count)
    return value.quantize(minor_unit(currency), rounding=ROUND_HALF_UP)


def ratio(part: int | Decimal, whole: int | Decimal | None) -> Decimal | None:
    """``part / whole`` rounded half-up to 4 places (a percentage to 2 decimals); None when whole is 0."""
    if not whole:
        return None
    return (Decimal(part) / Decimal(whole)).quantize(Decimal("0.0001"), rounding=ROUND_HALF_UP)

