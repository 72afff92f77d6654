"""Point reads below SQLAlchemy (crmcore.application.point_reads, crmcore.store.pointread).

``get`` and ``find`` outside a unit of work run in a ReadUnit on a raw driver connection.  Checked
on every database: they return what an ordinary unit returns (sealed fields opened, custom fields,
visibility), run no statement through SQLAlchemy, still ask ``authorize`` and the visibility hook,
see a role changed by another CRM (another process) at the very next read, join an open unit
(its uncommitted writes), and fall back to an ordinary unit when the driver path cannot run.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import event

import crmcore
from crmcore import NotAuthorized, NotFound
from crmcore.store import tables
from crmcore.store.sealed import new_key


@pytest.fixture
def crm(crm_factory: Any, monkeypatch: Any) -> Any:
    monkeypatch.setenv("POINTREAD_KEYS", new_key())
    crm = crm_factory(plugins=["access"], config={
        "default_currency": "CNY",
        "privacy": {"encryption": {"fields": ["email", "phone"], "key_env": "POINTREAD_KEYS"}}})
    crm.users.add("boss", role="admin")
    crm.users.add("alice", role="sales-rep")
    crm.users.add("bob", role="sales-rep")
    return crm


def _customers(crm: Any) -> tuple[Any, Any]:
    mine = crm.customers.add(name="张伟", email="zhang@example.com", phone="+8613291417776", owner="alice",
                             tags=["vip", "批发"], attributes={"会员": "金", "n": 3}, external_id="EXT-1",
                             birthday="1990-02-03")
    other = crm.customers.add(name="Bob's", email="bob.customer@example.com", owner="bob", external_id="EXT-2")
    return mine, other


def _sqlalchemy_statements(crm: Any) -> list[str]:
    seen: list[str] = []
    event.listen(crm.engine, "before_cursor_execute",
                 lambda conn, cursor, statement, *rest: seen.append(statement))
    return seen


def _through_a_unit(crm: Any, actor: str, **criteria: Any) -> Any:
    with crm.acting_as(actor), crm.unit(readonly=True) as uow:
        return uow.customers.find(**criteria)


def test_reads_match_an_ordinary_unit_and_run_below_sqlalchemy(crm: Any) -> None:
    mine, other = _customers(crm)
    assert crm.point_reads.available
    with crm.acting_as("alice"):
        crm.customers.get(mine.id)  # (the access plugin inspects users.role once per CRM, through SQLAlchemy)
    seen = _sqlalchemy_statements(crm)
    with crm.acting_as("alice"):
        got = crm.customers.get(mine.id)
        by_email = crm.customers.find(email="zhang@example.com")
        by_phone = crm.customers.find(phone="+8613291417776")
        by_external = crm.customers.find(external_id="EXT-1")
        with pytest.raises(NotFound):
            crm.customers.get(other.id)  # bob's: not visible to alice, a 404
        assert crm.customers.find(email="bob.customer@example.com") is None
        assert crm.customers.find(external_id="EXT-2") is None
    assert seen == []  # none of it went through SQLAlchemy's execution
    # The same entities an ordinary unit reads: sealed email and phone opened, tags, custom fields.
    expected = _through_a_unit(crm, "alice", id=mine.id)
    assert got == by_email == by_phone == by_external == expected == mine
    assert got.email == "zhang@example.com" and got.attributes == {"会员": "金", "n": 3}
    assert got.tags == ("vip", "批发") and got.created_at.tzinfo is not None
    with crm.acting_as("boss"):
        assert crm.customers.get(other.id) == _through_a_unit(crm, "boss", id=other.id)
        assert crm.customers.find(email="Zhang@example.com") is None  # exact, as the listing's filter
        assert crm.customers.find(email="nobody@example.com") is None


def test_other_entities_and_their_conversions(crm: Any) -> None:
    mine, _ = _customers(crm)
    deal = crm.deals.add(customer_id=mine.id, title="大单", amount=Decimal("1234.5"), stage="proposal",
                         owner="alice", external_id="D-1")
    contact = crm.contacts.add(customer_id=mine.id, name="李", email="li@example.com", is_primary=True)
    with crm.acting_as("alice"):
        assert crm.deals.get(deal.id).amount == Decimal("1234.50")  # the currency's digits, as before
        assert crm.deals.find(external_id="D-1") == crm.deals.get(deal.id)
        assert crm.contacts.get(contact.id).name == "李"
    with crm.acting_as("bob"):
        with pytest.raises(NotFound):
            crm.deals.get(deal.id)  # a deal follows its customer's visibility
        with pytest.raises(NotFound):
            crm.contacts.get(contact.id)


def test_authorize_and_visibility_are_asked_on_every_point_read(crm: Any) -> None:
    mine, _ = _customers(crm)
    asked: list[tuple[str, Any]] = []

    class Spy:
        @crmcore.hookimpl
        def authorize(self, actor: str, action: str, resource: Any, crm: Any) -> bool | None:
            asked.append((actor, action))
            return False if action == "customer.read" and resource == -1 else None

    crm.plugins.pm.register(Spy(), name="spy")
    with crm.acting_as("alice"):
        crm.customers.get(mine.id)
        crm.customers.find(external_id="EXT-1")
        with pytest.raises(NotAuthorized):
            crm.customers.get(-1)
    assert asked == [("alice", "customer.read")] * 3


def test_a_role_changed_elsewhere_counts_at_the_very_next_read(crm: Any) -> None:
    """Another CRM object on the same database (as another process would) changes bob's role; the
    next point read of this one, on a connection it already holds, acts on the new role."""
    mine, other = _customers(crm)
    with crm.acting_as("bob"):
        assert crm.customers.get(other.id).id == other.id  # warm: connections and statements cached
        with pytest.raises(NotFound):
            crm.customers.get(mine.id)
    elsewhere = crmcore.CRM.open(config=crm.config)
    try:
        elsewhere.users.set_role("bob", "admin")
        with crm.acting_as("bob"):
            assert crm.customers.get(mine.id).id == mine.id
            assert crm.customers.find(email="zhang@example.com").id == mine.id
        elsewhere.users.set_role("bob", "sales-rep")
        with crm.acting_as("bob"):
            with pytest.raises(NotFound):
                crm.customers.get(mine.id)
            assert crm.customers.find(email="zhang@example.com") is None
        elsewhere.users.deactivate("bob")
        with crm.acting_as("bob"):
            with pytest.raises(NotAuthorized):
                crm.customers.get(other.id)
            with pytest.raises(NotAuthorized):
                crm.customers.find(external_id="EXT-2")
    finally:
        elsewhere.close()


def test_inside_a_unit_a_read_joins_it_and_sees_its_writes(crm: Any) -> None:
    mine, _ = _customers(crm)
    with crm.acting_as("boss"), crm.unit() as uow:
        crm.customers.update(mine.id, name="Renamed")
        assert crm.customers.get(mine.id).name == "Renamed"  # the unit's own, uncommitted write
        assert crm.customers.find(external_id="EXT-1").name == "Renamed"
        assert uow.customers.get(mine.id).name == "Renamed"
    assert crm.customers.get(mine.id).name == "Renamed"


def test_a_reader_that_cannot_run_falls_back_to_an_ordinary_unit(crm: Any) -> None:
    mine, _ = _customers(crm)
    crm.point_reads.close()  # no connection left for the driver path: every read falls back
    seen = _sqlalchemy_statements(crm)
    with crm.acting_as("alice"):
        assert crm.customers.get(mine.id).email == "zhang@example.com"
        with pytest.raises(NotFound):
            crm.customers.get(10**9)
    assert any("customers" in s for s in seen)  # read through SQLAlchemy instead


def _driver_statements(crm: Any) -> list[str]:
    """The SQL of every statement the point reader runs from now on."""
    # (first_row: every statement the reader runs, those of first() and of a repository's entity)
    reads, first_row, seen = crm.point_reads, crm.point_reads.first_row, []

    def counted(connection: Any, statement: Any, params: Any, login: Any = None) -> Any:
        seen.append(reads.shape(statement).sql)
        return first_row(connection, statement, params, login)
    reads.first_row = counted
    return seen


def test_a_remembered_user_is_confirmed_by_the_row_statement_itself(crm: Any) -> None:
    """Once the acting user's record is known, a point read is one statement (one round trip on a
    server): the row, with the user's active flag and role read beside it."""
    mine, _ = _customers(crm)
    with crm.acting_as("alice"):
        crm.customers.get(mine.id)  # first read: the record is read on its own, then remembered
    seen = _driver_statements(crm)
    with crm.acting_as("alice"):
        assert crm.customers.get(mine.id).id == mine.id
    assert len(seen) == 1 and "customers" in seen[0] and "users" in seen[0]
    with crm.acting_as("alice"):
        assert crm.customers.find(email="nobody@example.com") is None
    assert len(seen) == 3 and "customers" in seen[1] and "FROM customers" not in seen[2]  # no row: asked alone


def test_a_change_made_with_plain_sql_elsewhere_counts_at_the_next_read(crm: Any) -> None:
    """The remembered record is only a hint: a deactivation and a reactivation written by another
    process with plain SQL (no crmcore code to tell this one) take effect at the very next read,
    refusals included (a refusal decided on a remembered record is confirmed before it is given)."""
    mine, other = _customers(crm)
    elsewhere = crmcore.CRM.open(config=crm.config)
    try:
        def set_active(value: bool) -> None:
            with elsewhere.engine.begin() as conn:
                conn.execute(tables.users.update().where(tables.users.c.login == "bob").values(active=value))
        with crm.acting_as("bob"):
            assert crm.customers.get(other.id).id == other.id  # remembered: active sales rep
        set_active(False)
        with crm.acting_as("bob"):
            with pytest.raises(NotAuthorized):
                crm.customers.get(other.id)
            with pytest.raises(NotAuthorized):  # (remembered as inactive now: refused, confirmed)
                crm.customers.find(external_id="EXT-2")
        set_active(True)
        with crm.acting_as("bob"):
            assert crm.customers.get(other.id).id == other.id
            with pytest.raises(NotFound):
                crm.customers.get(mine.id)
        with elsewhere.engine.begin() as conn:  # a role changed between two reads, also with plain SQL
            conn.execute(tables.users.update().where(tables.users.c.login == "bob").values(role="admin"))
        with crm.acting_as("bob"):
            assert crm.customers.get(mine.id).id == mine.id
        with elsewhere.engine.begin() as conn:  # and back to the rep's own customers
            conn.execute(tables.users.update().where(tables.users.c.login == "bob").values(role="sales-rep"))
        with crm.acting_as("bob"):
            with pytest.raises(NotFound):
                crm.customers.get(mine.id)
            assert crm.customers.find(email="zhang@example.com") is None
    finally:
        elsewhere.close()


def test_a_role_set_to_none_or_respelled_with_plain_sql_counts_at_the_next_read(crm: Any) -> None:
    """The confirming column compares the remembered role exactly: a role cleared (the policy's
    default role, read-only: every customer) or given back, and a role spelled in another case
    (no role by that name: nothing allowed), each count at the very next read, on every database
    (a MariaDB collation calls ``Admin`` and ``admin`` equal: the role is compared in Python)."""
    mine, other = _customers(crm)
    elsewhere = crmcore.CRM.open(config=crm.config)
    try:
        def set_role(value: str | None) -> None:
            with elsewhere.engine.begin() as conn:
                conn.execute(tables.users.update().where(tables.users.c.login == "bob").values(role=value))
        with crm.acting_as("bob"):
            with pytest.raises(NotFound):
                crm.customers.get(mine.id)  # remembered: a sales rep, alice's customer hidden
        set_role(None)
        with crm.acting_as("bob"):
            assert crm.customers.get(mine.id).id == mine.id  # the default role reads everything
            assert crm.customers.get(other.id).id == other.id  # (remembered with no role, confirmed)
        set_role("sales-rep")
        with crm.acting_as("bob"):
            with pytest.raises(NotFound):
                crm.customers.get(mine.id)
        set_role("admin")
        with crm.acting_as("bob"):
            assert crm.customers.get(mine.id).id == mine.id
        set_role("Admin")  # no such role: the user may do nothing
        with crm.acting_as("bob"):
            with pytest.raises(NotAuthorized):
                crm.customers.get(mine.id)
    finally:
        elsewhere.close()


def test_a_read_unit_has_every_attribute_an_ordinary_unit_sets(crm: Any) -> None:
    """ReadUnit sets its per-unit state itself (without UnitOfWork.__init__): whatever an
    ordinary unit has, a point-read unit has too."""
    with crm.acting_as("alice"):
        with crm.unit(readonly=True) as uow:
            ordinary = set(vars(uow))
        point = crm.point_unit()
        assert point is not None
        with point:
            missing = {name for name in ordinary if not hasattr(point, name)}
            assert missing == set()
            assert point.readonly and point.memo == {} and point.earn_points and point.actor == "alice"
            assert point.acting_user is not None and point.acting_user.role == "sales-rep"


def test_point_statements_read_the_entity_columns_only(crm: Any) -> None:
    """The keys the database derives (``email_key``, ``phone_key``) are no entity field: a point
    read does not carry them (each column read costs its conversion)."""
    mine, _ = _customers(crm)
    with crm.acting_as("alice"):
        crm.customers.get(mine.id)
    seen = _driver_statements(crm)
    with crm.acting_as("alice"):
        assert crm.customers.get(mine.id) == mine
        assert crm.customers.find(email="zhang@example.com") == mine
    assert len(seen) == 2
    for sql in seen:  # (alice's statements read her visible customers: a rewritten FROM)
        selected = sql.split("crm_user_same")[0]  # the columns read, up to the confirming one
        assert "email_key" not in selected and "phone_key" not in selected, sql
        assert "customers.email," in selected and "customers.archived_at," in selected, sql
