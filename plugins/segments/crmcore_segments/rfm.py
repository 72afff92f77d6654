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
    1; a value shared by many customers gets the score of its first position
    (and with a single buyer, or all values equal, everybody scores 1).
    The floor is evaluated without division (``score = 1 + #{k in 1..4 :
    5 * (rank_min - 1) >= k * n}``): integer division differs between
    dialects and MariaDB's decimal division rounds.

What is stored (one membership per customer, in one ``INSERT ... SELECT``)
    Every customer in the database gets a membership, including customers
    created after ``as_of`` (they are "No purchases" unless deals closed
    before ``as_of`` were recorded for them later).
    segment: the named segment of (R, F, M), see :mod:`crmcore_segments.names`;
        ``"No purchases"`` for customers without a purchase;
    score: the RFM cell ``R * 100 + F * 10 + M`` (e.g. 545), NULL without purchases;
    details: ``{"r", "f", "m", "recency_days", "frequency", "monetary"}`` with
        ``monetary`` as decimal text (e.g. ``"1234.5000"``) so it stays exact
        in JSON, and ``recency_days`` the fractional days from the last
        purchase to ``as_of``.
"""

from __future__ import annotations

from typing import Any

import attrs
from sqlalchemy import (
    BigInteger,
    Integer,
    Select,
    String,
    case,
    cast,
    func,
    literal,
    null,
    select,
    type_coerce,
    union_all,
)
from sqlalchemy.sql import ColumnElement

import crmcore
from crmcore.store import MONEY_SCALE, days_between, json_object, tables, utc_literal

from .names import NO_PURCHASES, segment_by_key
from .purchases import positive_days, purchase_conditions

deals = tables.deals
customers = tables.customers
_DIGITS = len(str(MONEY_SCALE)) - 1  # decimals Money keeps (4)


@attrs.frozen
class RFMOptions:
    """Options of the ``rfm`` segmenter (``[segments.rfm]`` in crm.toml).

    :ivar window_days: only purchases in the last N days before ``as_of``
        count (None: all purchases up to ``as_of``).
    :ivar currency: only deals in this currency count (None: all).
    """

    window_days: int | None = attrs.field(default=None, validator=positive_days)
    currency: str | None = crmcore.currency_option()


class RFMSegmenter(crmcore.Segmenter):
    """Scores customers 1-5 on recency, frequency and monetary value."""

    name = "rfm"
    description = "RFM scores (1-5, ties share a score) and named segments from won deals"
    options_type = RFMOptions

    def select(self, ctx: crmcore.SegmentContext, options: RFMOptions) -> Select:
        scores = _scores(purchase_conditions(ctx, options.window_days, options.currency))
        bought = scores.c.frequency > 0
        segment = case(
            (bought, case({key: literal(name, String) for key, name in segment_by_key().items()},
                          value=scores.c.r * 100 + scores.c.f + scores.c.m)),
            else_=literal(NO_PURCHASES, String),
        )
        details = json_object(
            ctx.dialect,
            r=scores.c.r, f=scores.c.f, m=scores.c.m,
            recency_days=days_between(scores.c.last_purchase, utc_literal(ctx.as_of)),
            frequency=scores.c.frequency,
            monetary=_decimal_text(scores.c.monetary),
        )
        return select(scores.c.customer_id, segment.label("segment"),
                      (scores.c.r * 100 + scores.c.f * 10 + scores.c.m).label("score"), details.label("details"))


def _scores(purchases: list[ColumnElement]) -> Any:
    """Subquery over every customer: customer_id, last_purchase, frequency,
    monetary (scaled), and r, f, m (NULL for customers without purchases).

    Shape: (purchases UNION ALL one empty row per customer) GROUP BY customer,
    then window functions partitioned by "has purchases".  No join between
    customers and the aggregate: with a join (LEFT JOIN, or NOT EXISTS for the
    non-buyers) SQLite rescanned the aggregate per customer and PostgreSQL,
    with statistics stale after a bulk load, chose a nested loop; both went
    quadratic (100,000 customers: minutes).  Grouping has no such plan.
    """
    # The raw scaled integer, not the Money type: sums must stay integers for
    # the exact text formatting below.
    amount = type_coerce(deals.c.amount, BigInteger)
    rows = union_all(
        select(deals.c.customer_id, deals.c.closed_at, amount.label("amount"), literal(1, Integer).label("bought"))
        .where(*purchases),
        select(customers.c.id, null(), null(), literal(0, Integer)),
    ).subquery("rfm_rows")
    # Casts: PostgreSQL's SUM(bigint) is numeric and MariaDB's SUM is DECIMAL.
    values = (select(rows.c.customer_id,
                     func.max(rows.c.closed_at).label("last_purchase"),
                     cast(func.sum(rows.c.bought), Integer).label("frequency"),
                     cast(func.coalesce(func.sum(rows.c.amount), 0), BigInteger).label("monetary"))
              .group_by(rows.c.customer_id).subquery("rfm_values"))
    buyers = values.c.frequency > 0  # ranks and n count buyers only
    ranked = select(
        values,
        func.rank().over(partition_by=buyers, order_by=values.c.last_purchase).label("r_rank"),
        func.rank().over(partition_by=buyers, order_by=values.c.frequency).label("f_rank"),
        func.rank().over(partition_by=buyers, order_by=values.c.monetary).label("m_rank"),
        func.count().over(partition_by=buyers).label("n"),
    ).subquery("rfm_ranks")
    bought = ranked.c.frequency > 0
    return select(
        ranked.c.customer_id, ranked.c.last_purchase, ranked.c.frequency, ranked.c.monetary,
        case((bought, quintile(ranked.c.r_rank, ranked.c.n)), else_=null()).label("r"),
        case((bought, quintile(ranked.c.f_rank, ranked.c.n)), else_=null()).label("f"),
        case((bought, quintile(ranked.c.m_rank, ranked.c.n)), else_=null()).label("m"),
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
    scaled = cast(scaled, BigInteger)
    whole = cast(scaled // MONEY_SCALE, String)
    fraction = func.substr(cast(scaled % MONEY_SCALE + MONEY_SCALE, String), 2, _DIGITS)
    return whole + literal(".", String) + fraction
