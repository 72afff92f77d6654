"""Bulk use cases (add_many) and the bulk loyalty credit: batch events, set-based
reference checks, idempotent replays, balances equal to the ledger."""

from __future__ import annotations

from decimal import Decimal

import pytest

from crmcore import LoyaltyScheme, ValidationError, hookimpl


class AmountScheme(LoyaltyScheme):
    name = "amount"
    description = "one point per whole unit of a won deal"

    def points_for_deal(self, uow, deal, options):
        return int(deal.amount)


class Recorder:
    """Registers the scheme and records every batch event it sees."""

    def __init__(self):
        self.batches: list[tuple[str, list]] = []

    @hookimpl
    def register_loyalty_schemes(self, register):
        register(AmountScheme())

    @hookimpl
    def on_customers_imported(self, uow, customers):
        self.batches.append(("customers", customers))

    @hookimpl
    def on_contacts_imported(self, uow, contacts):
        self.batches.append(("contacts", contacts))

    @hookimpl
    def on_interactions_imported(self, uow, interactions):
        self.batches.append(("interactions", interactions))

    @hookimpl
    def on_deals_imported(self, uow, deals):
        self.batches.append(("deals", deals))

    @hookimpl
    def on_deal_created(self, uow, deal):
        raise AssertionError("bulk paths fire batch events, not per-entity ones")


@pytest.fixture
def setup(crm_factory):
    recorder = Recorder()
    crm = crm_factory(extra_plugins=[recorder])
    return crm, recorder


def test_add_many_every_entity_fires_one_batch_event(setup):
    crm, recorder = setup
    assert crm.customers.add_many([{"name": "张伟"}, {"name": "Ann 😀", "email": "Ann@Example.com"}]) == 2
    ids = [c.id for c in crm.customers.list()]
    assert crm.contacts.add_many([{"customer_id": ids[0], "name": "李娜"}]) == 1
    assert crm.interactions.add_many([{"customer_id": ids[1], "kind": "call", "occurred_at": "2026-01-02T03:04:05Z",
                                       "subject": "跟进"}]) == 1
    assert crm.deals.add_many([{"customer_id": ids[0], "title": "t", "amount": "10.50", "currency": "CNY",
                                "stage": "won", "closed_at": "2026-01-05"},
                               {"customer_id": ids[1], "title": "u", "amount": "99", "currency": "CNY",
                                "stage": "lead"}]) == 2
    kinds = [kind for kind, _ in recorder.batches]
    assert kinds == ["customers", "contacts", "interactions", "deals"]
    customers = recorder.batches[0][1]
    assert [c.id for c in customers] == ids and customers[1].email == "Ann@example.com"
    deals = recorder.batches[3][1]
    assert all(d.id is not None for d in deals)
    # The won deal earned through the bulk path; the open one did not.
    assert crm.loyalty.balances("amount") == {ids[0]: 10}
    history = crm.loyalty.history(ids[0], "amount")
    assert [(e.kind, e.points, e.deal_id) for e in history] == [("earn", 10, deals[0].id)]
    # Bulk deals get their first stage-history row, as single ones do.
    with crm.unit(readonly=True) as uow:
        assert [h["to_stage"] for h in uow.deals.stage_history(deals[0].id)] == ["won"]


def test_add_many_is_all_or_nothing(setup):
    crm, _ = setup
    with pytest.raises(ValidationError) as err:
        crm.customers.add_many([{"name": "ok"}, {"name": "bad", "email": "not-an-email"}])
    assert "row 1: email" in str(err.value)
    assert crm.customers.count() == 0
    crm.customers.add_many([{"name": "ok"}])
    with pytest.raises(ValidationError) as err:
        crm.deals.add_many([{"customer_id": 1, "title": "t", "amount": "1", "currency": "CNY", "stage": "won"},
                            {"customer_id": 999, "title": "t", "amount": "1", "currency": "CNY", "stage": "won"}])
    assert "row 1: customer_id" in str(err.value) and "999" in str(err.value)
    assert crm.deals.count() == 0 and crm.loyalty.balances("amount") == {}


def test_credit_many_replay_changes_nothing(setup):
    crm, _ = setup
    crm.customers.add_many([{"name": f"c{i}"} for i in range(3)])
    credits = [{"customer_id": 1, "points": 5, "key": "k1"}, {"customer_id": 1, "points": 7, "key": "k2"},
               {"customer_id": 3, "points": 2, "key": "k3"}, {"customer_id": 3, "points": 2, "key": "k3"}]
    with crm.unit() as uow:
        assert uow.loyalty.credit_many("amount", credits) == 3  # the duplicate key in the batch counts once
    with crm.unit() as uow:
        assert uow.loyalty.credit_many("amount", credits) == 0
    assert crm.loyalty.balances("amount") == {1: 12, 3: 2}
    assert crm.loyalty.drift() == []
    ledger_sum = sum(e.points for cid in (1, 2, 3) for e in crm.loyalty.history(cid, "amount"))
    assert ledger_sum == 14


def test_credit_many_refuses_bad_points(setup):
    crm, _ = setup
    crm.customers.add_many([{"name": "x"}])
    with crm.unit() as uow, pytest.raises(ValidationError):
        uow.loyalty.credit_many("amount", [{"customer_id": 1, "points": 0, "key": "z"}])
    assert crm.loyalty.balances("amount") == {}


def test_bulk_money_sums_exactly(setup):
    crm, _ = setup
    crm.customers.add_many([{"name": "x"}])
    amounts = [Decimal("0.01")] * 1000 + [Decimal("12345678.99")]
    crm.deals.add_many([{"customer_id": 1, "title": "t", "amount": a, "currency": "CNY", "stage": "lead"}
                        for a in amounts])
    from sqlalchemy import func, select

    from crmcore.store import tables
    with crm.unit(readonly=True) as uow:
        total = uow.conn.execute(select(func.sum(tables.deals.c.amount))).scalar_one()
    assert total == sum(amounts) == Decimal("12345688.99")


def test_as_of_dates_are_read_in_the_configured_timezone(crm_factory):
    from datetime import datetime, timezone

    crm = crm_factory(config={"timezone": "Asia/Shanghai"})
    end_of_day = crm.as_of("2026-06-30")
    assert end_of_day.tzinfo == timezone.utc
    assert (end_of_day.year, end_of_day.month, end_of_day.day, end_of_day.hour) == (2026, 6, 30, 15)
    assert crm.as_of("2026-06-30T08:00") == datetime(2026, 6, 30, 0, 0, tzinfo=timezone.utc)
    assert crm.as_of("2026-06-30T08:00+00:00") == datetime(2026, 6, 30, 8, 0, tzinfo=timezone.utc)


def test_fetch_ints_reads_one_integer_column_in_order(crm_factory):
    """fetch_ints (a JSON array on SQLite, the rows elsewhere) gives what the rows give: the ints in
    the query's order, none for no row, large and negative values exact."""
    from sqlalchemy import literal, select, union_all

    from crmcore.store import fetch_ints, tables

    crm = crm_factory()
    assert crm.customers.add_many([{"name": f"f{i}"} for i in range(150)]) == 150
    customers = tables.customers
    with crm.unit(readonly=True) as uow:
        query = select(customers.c.id).order_by(customers.c.id.desc())
        assert fetch_ints(uow.conn, query) == list(uow.conn.execute(query).scalars())
        assert fetch_ints(uow.conn, query.where(customers.c.id < 0)) == []
        values = [2**62, -7, 0]
        odd = union_all(*(select(literal(v).label("v")) for v in values)).subquery()
        assert sorted(fetch_ints(uow.conn, select(odd.c.v))) == sorted(values)
