"""Purchases compared "as stored" (issue 21, seventh pass): on SQLite ``+closed_at`` (no numeric
affinity, so no number parse of either side per row) selects exactly the deals that the plain
column's comparison selects, at and around the bounds, on every database."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from decimal import Decimal

from sqlalchemy import select

from crmcore.segments.protocol import SegmentContext
from crmcore.store import tables, utc_literal
from crmcore_segments.purchases import purchase_conditions, won_condition

UTC = timezone.utc
AS_OF = datetime(2026, 6, 30, 18, 0, tzinfo=UTC)


def test_purchase_conditions_select_what_the_plain_comparison_selects(crm_factory):
    crm = crm_factory(plugins=["segments"])
    customer = crm.customers.add(name="Buyer")
    offsets = [timedelta(0), timedelta(microseconds=1), -timedelta(microseconds=1), timedelta(days=1),
               -timedelta(days=30), -timedelta(days=30) + timedelta(microseconds=1), -timedelta(days=400)]
    for offset in offsets:
        crm.deals.add(customer_id=customer.id, title="x", amount=Decimal("1"), stage="won", closed_at=AS_OF + offset)
    deals = tables.deals
    with crm.unit(readonly=True) as uow:
        ctx = SegmentContext(uow, AS_OF)
        for window in (None, 30):
            ours = select(deals.c.id).where(*purchase_conditions(ctx, window)).order_by(deals.c.id)
            plain = [won_condition(ctx.config.pipelines), deals.c.closed_at <= utc_literal(AS_OF)]
            if window is not None:
                plain.append(deals.c.closed_at > utc_literal(AS_OF - timedelta(days=window)))
            expected = select(deals.c.id).where(*plain).order_by(deals.c.id)
            found = list(uow.conn.execute(ours).scalars())
            assert found == list(uow.conn.execute(expected).scalars())
            assert len(found) == (5 if window is None else 3)
            compiled = str(ours.compile(dialect=uow.conn.dialect))
            assert ("(+ deals.closed_at)" in compiled) == (uow.conn.dialect.name == "sqlite")
