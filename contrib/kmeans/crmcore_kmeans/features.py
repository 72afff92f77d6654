"""R, F and M per customer, computed in SQL from won deals up to ``as_of``.

R is the recency in days (``as_of`` minus the last purchase), F the number of
purchases, M their total (exact, as a scaled Money integer).  A purchase is a
deal in a stage whose outcome is ``won`` in the deal's pipeline, with
``closed_at <= as_of``, optionally in one currency.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import attrs
import numpy as np
from numpy.typing import NDArray
from sqlalchemy import (
    BigInteger,
    Integer,
    Select,
    and_,
    cast,
    false,
    func,
    literal,
    null,
    or_,
    select,
    type_coerce,
    union_all,
)
from sqlalchemy.sql import ColumnElement

import crmcore
from crmcore.store import days_between, tables, utc_literal

deals = tables.deals
customers = tables.customers


def won_condition(pipelines: Any) -> ColumnElement:
    """Deals in a won stage of their own pipeline (stage names are per pipeline)."""
    parts = [and_(deals.c.pipeline == name, deals.c.stage.in_(won))
             for name, pipeline in pipelines.items()
             if (won := pipeline.stages_with(crmcore.StageOutcome.WON))]
    return or_(*parts) if parts else false()


def rfm_query(config: Any, as_of: datetime, currency: str | None = None) -> Select:
    """One row per customer, ordered by id: ``customer_id``, ``recency_days``
    (NULL without purchases), ``frequency`` (0 without), ``monetary`` (scaled).

    (purchases UNION ALL one empty row per customer) GROUP BY customer: no
    join, so the plan stays linear on every database (see the rfm plugin).
    """
    conditions = [won_condition(config.pipelines), deals.c.closed_at <= utc_literal(as_of)]
    if currency is not None:
        conditions.append(deals.c.currency == currency)
    rows = union_all(
        select(deals.c.customer_id, deals.c.closed_at, type_coerce(deals.c.amount, BigInteger).label("amount"),
               literal(1, Integer).label("bought")).where(*conditions),
        select(customers.c.id, null(), literal(0, BigInteger), literal(0, Integer)),
    ).subquery("kmeans_rows")
    return (select(rows.c.customer_id,
                   days_between(func.max(rows.c.closed_at), utc_literal(as_of)).label("recency_days"),
                   cast(func.sum(rows.c.bought), Integer).label("frequency"),
                   cast(func.sum(rows.c.amount), BigInteger).label("monetary"))
            .group_by(rows.c.customer_id).order_by(rows.c.customer_id))


@attrs.frozen
class RFM:
    """R/F/M arrays over the customers with a purchase, plus those without."""

    customer_id: NDArray[np.int64]
    recency_days: NDArray[np.float64]
    frequency: NDArray[np.float64]
    monetary: list[int]             # scaled Money, exact
    without_purchases: list[int]

    def __len__(self) -> int:
        return len(self.customer_id)


def load_rfm(conn: Any, config: Any, as_of: datetime, currency: str | None = None) -> RFM:
    ids, recency, frequency, monetary, none = [], [], [], [], []
    for row in conn.execute(rfm_query(config, as_of, currency)):
        if not row.frequency:
            none.append(row.customer_id)
            continue
        ids.append(row.customer_id)
        recency.append(float(row.recency_days))
        frequency.append(row.frequency)
        monetary.append(int(row.monetary))
    return RFM(np.array(ids, dtype=np.int64), np.array(recency, dtype=float),
               np.array(frequency, dtype=float), monetary, none)
