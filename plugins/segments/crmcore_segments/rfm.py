"""RFM segmentation: recency, frequency and monetary value of won deals.

What counts
    A *purchase* is a deal in a stage whose outcome is ``won`` in the deal's
    pipeline (from the configured pipelines, so a pipeline may call its won
    stage anything) with ``closed_at <= as_of``.  With ``window_days`` only
    purchases with ``closed_at > as_of - window_days`` count; with
    ``currency`` only deals in that currency (amounts of different currencies
    are otherwise summed as they are: set ``currency`` on a multi-currency
    book).  Won deals without ``closed_at`` do not count (the core stamps it
    when a deal is won).

Values per customer with at least one purchase
    R: the time of the last purchase (more recent is better),
    F: the number of purchases,
    M: the sum of their amounts (exact: Money is an integer in storage).

Scores 1-5 and the tie rule
    Equal values get equal scores.  With ``n`` the number of customers with at
    least one purchase and ``rank_min`` the SQL ``RANK()`` of the value in
    ascending order (ties share the lowest rank, like pandas
    ``rank(method="min")``)::

        score = 1 + floor(5 * (rank_min - 1) / n)

    So the oldest last purchase, the fewest deals and the smallest total score
    1; a value shared by many customers gets the score of its first position.
    The floor is evaluated without division (``score = 1 + #{k in 1..4 :
    5 * (rank_min - 1) >= k * n}``): integer division differs between
    dialects and MariaDB's decimal division rounds.

What is stored (one membership per customer, in one ``INSERT ... SELECT``)
    segment: the named segment of (R, F, M), see :mod:`crmcore_segments.names`;
        ``"No purchases"`` for customers without a purchase;
    score: the RFM cell ``R * 100 + F * 10 + M`` (e.g. 545), NULL without purchases;
    details: ``{"r", "f", "m", "recency_days", "frequency", "monetary"}`` with
        ``monetary`` as decimal text (e.g. ``"1234.5000"``) so it stays exact
        in JSON, and ``recency_days`` the fractional days from the last
        purchase to ``as_of``.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import attrs
from sqlalchemy import BigInteger, Select, String, and_, case, cast, false, func, literal, or_, select, type_coerce
from sqlalchemy.sql import ColumnElement

import crmcore
from crmcore.store import MONEY_SCALE, days_between, json_object, tables, utc_literal

from .names import NO_PURCHASES, segment_by_key

deals = tables.deals
customers = tables.customers


def _positive_or_none(instance: Any, attribute: attrs.Attribute, value: int | None) -> None:
    if value is not None and value <= 0:
        raise ValueError(f"{attribute.name} must be a positive number of days, got {value}")


def _currency_code(instance: Any, attribute: attrs.Attribute, value: str | None) -> None:
    if value is not None and not (len(value) == 3 and value.isalpha() and value.isupper()):
        raise ValueError(f"{attribute.name} must be an ISO 4217 code such as USD, got {value!r}")


@attrs.frozen
class RFMOptions:
    """Options of the ``rfm`` segmenter (``[segments.rfm]`` in crm.toml).

    :ivar window_days: only purchases in the last N days before ``as_of``
        count (None: all purchases up to ``as_of``).
    :ivar currency: only deals in this currency count (None: all).
    """

    window_days: int | None = attrs.field(default=None, validator=_positive_or_none)
    currency: str | None = attrs.field(default=None, validator=_currency_code)


class RFMSegmenter(crmcore.Segmenter):
    """Scores customers 1-5 on recency, frequency and monetary value."""

    name = "rfm"
    description = "RFM scores (1-5, ties share a score) and named segments from won deals"
    options_type = RFMOptions

    def select(self, ctx: crmcore.SegmentContext, options: RFMOptions) -> Select:
        scores = _scores(ctx, options)
        cell = scores.c.r * 100 + scores.c.f * 10 + scores.c.m
        # Every customer gets a row; the outer join leaves r/f/m NULL without purchases.
        segment = case(
            (scores.c.customer_id.is_(None), literal(NO_PURCHASES, String)),
            else_=case({key: literal(name, String) for key, name in segment_by_key().items()},
                       value=scores.c.r * 100 + scores.c.f + scores.c.m),
        )
        details = json_object(
            ctx.dialect,
            r=scores.c.r, f=scores.c.f, m=scores.c.m,
            recency_days=days_between(scores.c.last_purchase, utc_literal(ctx.as_of)),
            frequency=func.coalesce(scores.c.frequency, 0),
            monetary=_decimal_text(func.coalesce(scores.c.monetary, 0)),
        )
        return (select(customers.c.id.label("customer_id"), segment.label("segment"),
                       cell.label("score"), details.label("details"))
                .select_from(customers.outerjoin(scores, scores.c.customer_id == customers.c.id)))


def won_condition(pipelines: Any) -> ColumnElement:
    """Deals in a won stage of their own pipeline (stage names are per pipeline)."""
    parts = []
    for name, pipeline in pipelines.items():
        won = pipeline.stages_with(crmcore.StageOutcome.WON)
        if won:
            parts.append(and_(deals.c.pipeline == name, deals.c.stage.in_(won)))
    return or_(*parts) if parts else false()


def _scores(ctx: crmcore.SegmentContext, options: RFMOptions) -> Any:
    """Subquery: customer_id, last_purchase, frequency, monetary (scaled), r, f, m."""
    conditions = [won_condition(ctx.config.pipelines), deals.c.closed_at <= utc_literal(ctx.as_of)]
    if options.window_days is not None:
        start = ctx.as_of - timedelta(days=options.window_days)
        conditions.append(deals.c.closed_at > utc_literal(start))
    if options.currency is not None:
        conditions.append(deals.c.currency == options.currency)
    # The raw scaled integer, not the Money type: the sum must stay an integer
    # for the exact text formatting below.  PostgreSQL's SUM(bigint) is numeric,
    # hence the cast back.
    amount = type_coerce(deals.c.amount, BigInteger)
    values = (select(deals.c.customer_id,
                     func.max(deals.c.closed_at).label("last_purchase"),
                     func.count().label("frequency"),
                     cast(func.sum(amount), BigInteger).label("monetary"))
              .where(*conditions).group_by(deals.c.customer_id).subquery("rfm_values"))
    ranked = select(
        values,
        func.rank().over(order_by=values.c.last_purchase).label("r_rank"),
        func.rank().over(order_by=values.c.frequency).label("f_rank"),
        func.rank().over(order_by=values.c.monetary).label("m_rank"),
        func.count().over().label("n"),
    ).subquery("rfm_ranks")
    return select(
        ranked.c.customer_id, ranked.c.last_purchase, ranked.c.frequency, ranked.c.monetary,
        quintile(ranked.c.r_rank, ranked.c.n).label("r"),
        quintile(ranked.c.f_rank, ranked.c.n).label("f"),
        quintile(ranked.c.m_rank, ranked.c.n).label("m"),
    ).subquery("rfm_scores")


def quintile(rank: ColumnElement, n: ColumnElement) -> ColumnElement:
    """``1 + floor(5 * (rank - 1) / n)`` for 1 <= rank <= n, without division."""
    position = 5 * (rank - 1)
    return case((position >= 4 * n, 5), (position >= 3 * n, 4), (position >= 2 * n, 3),
                (position >= n, 2), else_=1)


def _decimal_text(scaled: ColumnElement) -> ColumnElement:
    """Exact decimal text of a non-negative scaled Money integer: 12345000 -> '1234.5000'.

    Built from integer parts because SQLite has no exact decimal type to cast
    to.  ``//`` is SQLAlchemy's portable integer division (``DIV``-like on
    every dialect); adding 10,000 to the remainder zero-pads it to four digits.
    """
    digits = len(str(MONEY_SCALE)) - 1
    scaled = cast(scaled, BigInteger)
    whole = cast(scaled // MONEY_SCALE, String)
    fraction = func.substr(cast(scaled % MONEY_SCALE + MONEY_SCALE, String), 2, digits)
    return whole + literal(".", String) + fraction
