"""Storage on every supported database: exact Unicode, exact money, UTC instants,
filters, uniqueness and cascades.  Runs once per database (``crm_factory``)."""

from __future__ import annotations

import random
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal

import pytest
import sqlalchemy.exc
from sqlalchemy import func, select, text

from crmcore import NotFound, ValidationError
from crmcore.store import tables
from crmcore.store.types import MONEY_SCALE

UTC = timezone.utc
CST = timezone(timedelta(hours=8))

UNICODE_NAMES = [
    "张伟",
    "歐陽娜娜",
    "🐉 Drachen GmbH",
    "Zoë Ångström-Ñúñez",
    "محمد علی",
    "家族👨‍👩‍👧‍👦",  # zero-width joiners
    "é vs é",  # precomposed vs combining: must not be normalised away
    "𠮷野家",  # outside the Basic Multilingual Plane
]


# -- Unicode --------------------------------------------------------------------------

def test_unicode_round_trips_exactly(crm_factory) -> None:
    crm = crm_factory(config={"custom_fields": [{"entity": "customer", "name": "备注", "type": "str"}]})
    stored = []
    for i, name in enumerate(UNICODE_NAMES):
        stored.append(crm.customers.add(
            name=name, city="北京", region="朝阳区", industry="餐饮🍜", owner="李雷",
            tags=["贵宾", "😀", name], external_id=f"外部-{i}-{name}",
            attributes={"备注": f"喜欢🍵 {name}", "嵌套": {"表情": ["🎉", "𠮷"]}, "数": 3},
        ))
    for original in stored:
        again = crm.customers.get(original.id)
        assert again == original
        assert again.name == original.name and again.tags == original.tags
        assert again.attributes == original.attributes
    by_name = {c.name: c for c in crm.customers.list()}
    assert sorted(by_name) == sorted(UNICODE_NAMES)

    customer = stored[0]
    contact = crm.contacts.add(customer_id=customer.id, name="王芳 🌸", title="采购经理")
    body = "客户投诉：包裹破损 📦💥\n第二行 — «quoted» \u202eRTL\u202c 𠮷"
    interaction = crm.interactions.add(
        customer_id=customer.id, contact_id=contact.id, kind="complaint", occurred_at="2026-06-30T09:00:00Z",
        subject="投诉 😡", body=body, outcome="已退款", attributes={"标签": "紧急🚨"})
    got = crm.interactions.get(interaction.id)
    assert got.body == body and got.subject == "投诉 😡" and got.attributes == {"标签": "紧急🚨"}
    assert crm.contacts.get(contact.id).name == "王芳 🌸"
    deal = crm.deals.add(customer_id=customer.id, title="年度合同 📝", amount="8888.88", currency="CNY",
                         stage="lead", lost_reason=None, attributes={"备注": "春节前"})
    assert crm.deals.get(deal.id).title == "年度合同 📝"


def test_filters_on_unicode_text_are_exact(crm_factory) -> None:
    """Equality means the same characters on every database: no case folding, no
    accent folding, no "all emoji are equal".  (Not covered: trailing spaces, which
    MariaDB/MySQL's PAD SPACE collations ignore in comparisons.)"""
    crm = crm_factory()
    names = ["😀 fan", "😁 fan", "Zhang", "zhang", "Résumé", "Resume", "张伟", "張偉", "ß", "ss"]
    ids = {n: crm.customers.add(name=n).id for n in names}
    for name in names:
        found = crm.customers.list({"name": name})
        assert [c.id for c in found] == [ids[name]], name


def test_external_ids_differing_in_case_or_emoji_are_distinct(crm_factory) -> None:
    crm = crm_factory()
    for external_id in ["A-1", "a-1", "ext-😀", "ext-😁", "ñ", "n"]:
        crm.customers.add(name=external_id, external_id=external_id)
    assert crm.customers.count() == 6
    assert crm.customers.find(external_id="ext-😁").name == "ext-😁"
    assert crm.customers.find(external_id="a-1").name == "a-1"


# -- money ----------------------------------------------------------------------------

@pytest.mark.parametrize("amount,currency,expected", [
    ("0.01", "CNY", "0.01"),
    ("12345678.99", "CNY", "12345678.99"),
    ("1200", "JPY", "1200"),
    ("1.234", "KWD", "1.234"),
    ("0.100", "KWD", "0.100"),
    ("0", "USD", "0.00"),
    ("922337203685477.58", "CNY", "922337203685477.58"),  # the largest storable cents
])
def test_deal_amounts_exact(crm_factory, amount: str, currency: str, expected: str) -> None:
    crm = crm_factory()
    customer = crm.customers.add(name="张伟")
    deal = crm.deals.add(customer_id=customer.id, title="t", amount=amount, currency=currency, stage="lead")
    assert str(deal.amount) == expected
    again = crm.deals.get(deal.id)
    assert again.amount == Decimal(amount) and str(again.amount) == expected
    assert crm.deals.list({"amount": Decimal(amount)}) == [again]


def test_amount_beyond_storage_is_a_validation_error(crm_factory) -> None:
    crm = crm_factory()
    customer = crm.customers.add(name="张伟")
    with pytest.raises(ValidationError) as err:
        crm.deals.add(customer_id=customer.id, title="t", amount="1e20", currency="CNY", stage="lead")
    assert [f for f, _ in err.value.issues] == ["amount"]
    assert crm.deals.count() == 0


def test_sum_of_many_amounts_is_exact(crm_factory) -> None:
    """SUM in SQL over thousands of amounts equals the exact Decimal sum (a float
    sum of the same values drifts)."""
    crm = crm_factory()
    customer = crm.customers.add(name="张伟")
    rng = random.Random(20260630)
    currencies = {"CNY": 2, "JPY": 0, "KWD": 3}
    deals, expected = [], {c: Decimal(0) for c in currencies}
    from crmcore import Deal

    for i in range(3000):
        currency = rng.choice(list(currencies))
        digits = currencies[currency]
        amount = Decimal(rng.choice([1, 10, 7, rng.randrange(1, 10**9)])).scaleb(-digits)
        if i % 100 == 0:
            amount = Decimal("12345678.99") if currency == "CNY" else amount
        expected[currency] += amount
        deals.append(Deal(customer_id=customer.id, title=f"d{i}", amount=amount, currency=currency,
                          stage="won", probability=100))
    with crm.unit() as uow:
        uow.deals.insert_many(deals, uow.now)
    with crm.unit(readonly=True) as uow:
        t = tables.deals
        rows = uow.conn.execute(select(t.c.currency, func.sum(t.c.amount), func.count())
                                .group_by(t.c.currency)).all()
        total = uow.conn.execute(select(func.sum(t.c.amount))).scalar_one()
    got = {currency: amount for currency, amount, _ in rows}
    assert got == expected
    assert all(isinstance(v, Decimal) for v in got.values())
    assert total == sum(expected.values())
    assert sum(n for *_, n in rows) == 3000
    cny = crm.deals.list({"currency": "CNY"}, order_by="-amount", limit=1)[0]
    assert str(cny.amount) == str(max(d.amount for d in deals if d.currency == "CNY").quantize(Decimal("0.01")))


def test_money_stored_as_scaled_integer(crm_factory) -> None:
    crm = crm_factory()
    customer = crm.customers.add(name="x")
    crm.deals.add(customer_id=customer.id, title="t", amount="0.01", currency="CNY", stage="lead")
    with crm.unit(readonly=True) as uow:
        raw = uow.conn.execute(text("SELECT amount FROM deals")).scalar_one()
    assert int(raw) == Decimal("0.01") * MONEY_SCALE


# -- time -------------------------------------------------------------------------------

def test_aware_datetimes_round_trip_as_utc(crm_factory) -> None:
    crm = crm_factory()
    customer = crm.customers.add(name="张伟", birthday=date(1990, 2, 28))
    occurred = datetime(2026, 6, 30, 20, 0, 0, 123456, tzinfo=CST)
    interaction = crm.interactions.add(customer_id=customer.id, kind="call", occurred_at=occurred,
                                       follow_up_due="2026-07-01T09:30:00+08:00")
    expected = datetime(2026, 6, 30, 12, 0, 0, 123456, tzinfo=UTC)
    for got in (interaction, crm.interactions.get(interaction.id)):
        assert got.occurred_at == occurred == expected
        assert got.occurred_at.tzinfo is UTC and got.occurred_at.hour == 12
        assert got.occurred_at.microsecond == 123456
        assert got.follow_up_due == datetime(2026, 7, 1, 1, 30, tzinfo=UTC)
    assert crm.customers.get(customer.id).birthday == date(1990, 2, 28)
    with crm.unit(readonly=True) as uow:
        raw = uow.conn.execute(text("SELECT occurred_at FROM interactions")).scalar_one()
    assert str(raw).startswith("2026-06-30 12:00:00.123456")  # UTC wall time in storage
    assert crm.interactions.list({"occurred_at": expected}) == [crm.interactions.get(interaction.id)]
    assert crm.interactions.list({"occurred_at": occurred}) == [crm.interactions.get(interaction.id)]


def test_naive_input_is_taken_as_utc_and_timestamps_come_from_the_clock(crm_factory) -> None:
    now = [datetime(2026, 1, 1, 8, 0, tzinfo=UTC)]
    crm = crm_factory(clock=lambda: now[0])
    customer = crm.customers.add(name="x")
    interaction = crm.interactions.add(customer_id=customer.id, kind="note", occurred_at=datetime(2026, 1, 1, 7, 0))
    assert crm.interactions.get(interaction.id).occurred_at == datetime(2026, 1, 1, 7, 0, tzinfo=UTC)
    assert customer.created_at == customer.updated_at == now[0]
    now[0] = datetime(2026, 1, 2, 8, 0, tzinfo=UTC)
    updated = crm.customers.update(customer.id, city="上海")
    again = crm.customers.get(customer.id)
    assert again == updated
    assert (again.created_at, again.updated_at) == (datetime(2026, 1, 1, 8, 0, tzinfo=UTC), now[0])


# -- queries -----------------------------------------------------------------------------

@pytest.fixture
def populated(crm_factory):
    crm = crm_factory(config={"custom_fields": [
        {"entity": "customer", "name": "vip_level", "type": "int"},
        {"entity": "customer", "name": "newsletter", "type": "bool"},
        {"entity": "customer", "name": "credit", "type": "decimal"},
        {"entity": "customer", "name": "城市", "type": "str"},
    ]})
    people = [
        ("张伟", "CN", "customer", 3, True, "100.50", "北京"),
        ("李娜", "CN", "lead", 1, False, "0.10", "上海"),
        ("Anna", "DE", "customer", 3, False, "100.50", "Berlin"),
        ("Bob", "US", "prospect", 2, True, "7", "北京"),
        ("Émile", "FR", "customer", 1, True, "0.1", "Paris"),
    ]
    for name, country, stage, vip, news, credit, city in people:
        crm.customers.add(name=name, country=country, stage=stage,
                          attributes={"vip_level": vip, "newsletter": news, "credit": credit, "城市": city})
    return crm


def names(customers) -> list[str]:
    return [c.name for c in customers]


def test_filter_on_columns(populated) -> None:
    crm = populated
    assert names(crm.customers.list({"country": "CN"})) == ["张伟", "李娜"]
    assert names(crm.customers.list({"stage": "customer", "country": "DE"})) == ["Anna"]
    assert names(crm.customers.list({"email": None})) == names(crm.customers.list())
    assert crm.customers.count({"stage": "customer"}) == 3


def test_filter_on_custom_fields(populated) -> None:
    crm = populated
    assert names(crm.customers.list({"attributes.vip_level": 3})) == ["张伟", "Anna"]
    assert names(crm.customers.list({"attributes.newsletter": True})) == ["张伟", "Bob", "Émile"]
    assert names(crm.customers.list({"attributes.newsletter": False})) == ["李娜", "Anna"]
    assert names(crm.customers.list({"attributes.城市": "北京"})) == ["张伟", "Bob"]
    assert names(crm.customers.list({"attributes.credit": Decimal("100.50")})) == ["张伟", "Anna"]
    assert names(crm.customers.list({"attributes.credit": "0.1"})) == ["Émile"]  # stored exactly as given
    assert names(crm.customers.list({"attributes.vip_level": 3, "country": "CN"})) == ["张伟"]
    assert crm.customers.count({"attributes.vip_level": 1}) == 2
    assert crm.customers.list({"attributes.missing": "x"}) == []


def test_order_limit_offset(populated) -> None:
    crm = populated
    all_ids = [c.id for c in crm.customers.list()]
    assert all_ids == sorted(all_ids)
    assert names(crm.customers.list(order_by="-id")) == ["Émile", "Bob", "Anna", "李娜", "张伟"]
    assert names(crm.customers.list(order_by="country")) == ["张伟", "李娜", "Anna", "Émile", "Bob"]
    assert names(crm.customers.list(order_by="-country")) == ["Bob", "Émile", "Anna", "张伟", "李娜"]  # ties by id
    assert names(crm.customers.list(order_by="id", limit=2)) == ["张伟", "李娜"]
    assert names(crm.customers.list(order_by="id", limit=2, offset=2)) == ["Anna", "Bob"]
    assert names(crm.customers.list(order_by="id", offset=4)) == ["Émile"]
    assert names(crm.customers.list({"country": "CN"}, order_by="-id", limit=1)) == ["李娜"]


def test_bad_filter_and_order_name_the_field(populated) -> None:
    with pytest.raises(ValidationError) as err:
        populated.customers.list({"colour": "red"})
    assert err.value.issues[0][0] == "colour"
    with pytest.raises(ValidationError) as err:
        populated.customers.list(order_by="-colour")
    assert err.value.issues[0][0] == "order_by" and "colour" in str(err.value)


# -- uniqueness, not found, cascades -------------------------------------------------------

def test_external_id_unique(crm_factory) -> None:
    crm = crm_factory()
    first = crm.customers.add(name="张伟", external_id="erp-1")
    with pytest.raises(ValidationError) as err:
        crm.customers.add(name="张伟 2", external_id="erp-1")
    assert [f for f, _ in err.value.issues] == ["external_id"]
    assert "erp-1" in str(err.value)
    other = crm.customers.add(name="李娜", external_id="erp-2")
    with pytest.raises(ValidationError):
        crm.customers.update(other.id, external_id="erp-1")
    assert crm.customers.update(first.id, name="张伟伟").external_id == "erp-1"  # keeping its own id is fine
    assert crm.customers.count() == 2
    # The database enforces it too (also against writes that bypass the services).
    from crmcore import Customer

    with pytest.raises(sqlalchemy.exc.IntegrityError):
        with crm.unit() as uow:
            uow.customers.insert(Customer("dup", external_id="erp-2"), uow.now)
    assert crm.customers.count() == 2
    # Several customers without an external id are fine (NULLs are not equal).
    crm.customers.add(name="a")
    crm.customers.add(name="b")
    assert crm.customers.count({"external_id": None}) == 2


def test_not_found(crm_factory) -> None:
    crm = crm_factory()
    for service in (crm.customers, crm.contacts, crm.interactions, crm.deals):
        with pytest.raises(NotFound):
            service.get(424242)
        with pytest.raises(NotFound):
            service.delete(424242)
        with pytest.raises(NotFound):
            service.update(424242, name="x")


def test_deleting_a_customer_cascades(crm_factory) -> None:
    crm = crm_factory()
    keep = crm.customers.add(name="留下")
    gone = crm.customers.add(name="删除")
    for customer in (keep, gone):
        contact = crm.contacts.add(customer_id=customer.id, name="联系人", is_primary=True)
        crm.interactions.add(customer_id=customer.id, contact_id=contact.id, kind="call",
                             occurred_at="2026-06-01T10:00:00Z")
        deal = crm.deals.add(customer_id=customer.id, title="t", amount="10", currency="CNY", stage="lead")
        crm.deals.move(deal.id, "lost", lost_reason="price")  # won deals are history: see test_core_history
    crm.customers.delete(gone.id, purge=True)
    with pytest.raises(NotFound):
        crm.customers.get(gone.id)
    for service in (crm.contacts, crm.interactions, crm.deals):
        assert service.count({"customer_id": gone.id}) == 0
        assert service.count({"customer_id": keep.id}) == 1
    with crm.unit(readonly=True) as uow:
        h = tables.deal_stage_history
        assert uow.conn.execute(select(func.count()).select_from(h)).scalar_one() == 2  # keep's lead + lost
        kept_deal = crm.deals.list({"customer_id": keep.id})[0]
        assert [r["to_stage"] for r in uow.deals.stage_history(kept_deal.id)] == ["lead", "lost"]


def test_deleting_a_contact_keeps_its_interactions(crm_factory) -> None:
    crm = crm_factory()
    customer = crm.customers.add(name="张伟")
    contact = crm.contacts.add(customer_id=customer.id, name="王芳")
    interaction = crm.interactions.add(customer_id=customer.id, contact_id=contact.id, kind="visit",
                                       occurred_at="2026-06-01T10:00:00Z")
    crm.contacts.delete(contact.id)
    assert crm.interactions.get(interaction.id).contact_id is None
