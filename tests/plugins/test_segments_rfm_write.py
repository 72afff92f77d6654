"""How the ``rfm`` run writes on SQLite (issue 21, eighth pass), checked against values computed
here from the deals as created, on every database:

- the customers without a purchase are written before the buyers (so they append to the
  ``(run_id, segment)`` index and the key), each part in customer order, every customer once;
- each buyer's last purchase is found by a seek of ``ix_deals_purchases`` instead of
  ``max(closed_at)`` in the fold, with the same value: the latest won deal up to ``as_of``,
  around the bounds and with a window.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from decimal import Decimal

from sqlalchemy import event, select

from crmcore.store import tables
from crmcore_segments import NO_PURCHASES

UTC = timezone.utc
AS_OF = datetime(2026, 6, 30, 18, 0, tzinfo=UTC)
m = tables.segment_memberships


def test_customers_without_purchases_are_written_first(crm_factory):
    crm = crm_factory(plugins=["segments"])
    ids = [crm.customers.add(name=f"C{i}").id for i in range(12)]
    buyers = set(ids[1::3]) | {ids[-1]}  # interleaved with the others in id order
    for n, customer in enumerate(sorted(buyers)):
        crm.deals.add(customer_id=customer, title="x", amount=Decimal(10 + n), stage="won",
                      closed_at=AS_OF - timedelta(days=n))
    run = crm.segments.run("rfm", as_of=AS_OF)
    with crm.unit(readonly=True) as uow:
        if uow.conn.dialect.name == "sqlite":
            written = [tuple(row) for row in uow.conn.exec_driver_sql(
                "SELECT customer_id, segment FROM segment_memberships WHERE run_id = ? ORDER BY rowid", (run.id,))]
        else:  # no insertion order to read: the rows themselves
            written = [tuple(row) for row in uow.conn.execute(
                select(m.c.customer_id, m.c.segment).where(m.c.run_id == run.id).order_by(m.c.customer_id))]
    others = sorted(set(ids) - buyers)
    assert sorted(c for c, _ in written) == sorted(ids)  # every customer once
    assert {c for c, s in written if s == NO_PURCHASES} == set(others)
    if crm.engine.dialect.name == "sqlite":
        assert [c for c, _ in written] == others + sorted(buyers)


def test_last_purchase_by_seek_is_the_latest_won_deal_up_to_as_of(crm_factory):
    crm = crm_factory(plugins=["segments"])
    offsets = {  # per buyer: purchases relative to as_of (positive: after it, so not counted)
        "a": [timedelta(days=-3), timedelta(days=-1), timedelta(microseconds=1)],
        "b": [timedelta(0), timedelta(days=-400)],
        "c": [timedelta(days=-40), timedelta(days=-31), timedelta(days=2)],
        "d": [-timedelta(microseconds=1), timedelta(days=-10), timedelta(days=-5)],
    }
    customers = {}
    for name, moments in offsets.items():
        customers[name] = crm.customers.add(name=name).id
        for n, offset in enumerate(moments):
            crm.deals.add(customer_id=customers[name], title=f"{name}{n}", amount=Decimal("5"), stage="won",
                          closed_at=AS_OF + offset)
        crm.deals.add(customer_id=customers[name], title="lost", amount=Decimal("5"), stage="lost",
                      closed_at=AS_OF - timedelta(hours=1))  # later than some purchases, but lost
    statements: list[str] = []
    event.listen(crm.engine, "before_cursor_execute",
                 lambda conn, cursor, statement, *args: statements.append(statement))
    for window in (None, 30):
        statements.clear()
        run = crm.segments.run("rfm", as_of=AS_OF, options={"window_days": window})
        members = {row["customer_id"]: row for row in crm.segments.members("rfm", run_id=run.id)}
        for name, moments in offsets.items():
            counted = [o for o in moments if o <= timedelta(0) and (window is None or o > -timedelta(days=window))]
            details = members[customers[name]]["details"]
            if not counted:
                assert details is None, name
                continue
            expected_days = -max(counted) / timedelta(days=1)
            assert abs(details["recency_days"] - expected_days) < 1e-6, (name, window)
            assert details["frequency"] == len(counted), (name, window)
        fold = [s for s in statements if s.startswith("INSERT INTO crm_rfm_values")]
        assert len(fold) == 1
        assert ("max(deals.closed_at)" in fold[0]) == (crm.engine.dialect.name != "sqlite")
