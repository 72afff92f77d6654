"""Exact look-ups of customers by email and phone go through ``email_key`` / ``phone_key`` only
(revision 0023_lookup_keys dropped the indexes on ``customers.email`` and ``.phone``), sealed or
not, on SQLite, PostgreSQL and MariaDB: each is an index seek on the key column, and finds exactly
what ``email = value`` found before (the key is lower-cased; the column decides)."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import String, inspect, literal, select, type_coerce, update

from crmcore.store import tables
from crmcore.store.repositories import _by_column, _point_params
from crmcore.store.sealed import MARK, lookup_key, new_key

from .test_door_keys import Statements, plan

REGION = {"phone_region": "CN"}


def encrypted(crm_factory: Any, monkeypatch: Any) -> Any:
    monkeypatch.setenv("LOOKUP_TEST_KEYS", new_key())
    return crm_factory(config={**REGION, "privacy": {"encryption": {
        "fields": ["email", "phone"], "key_env": "LOOKUP_TEST_KEYS"}}})


def assert_seek(crm: Any, statement: str, parameters: Any, index: str) -> None:
    """The plan of ``statement`` reads ``customers`` through ``index`` (MariaDB: may, a full scan
    of a tiny table being cheaper there)."""
    if crm.engine.dialect.name == "postgresql":  # statistics, as autovacuum would have them by now
        with crm.engine.begin() as conn:
            conn.exec_driver_sql("ANALYZE customers")
    shown = plan(crm, statement, parameters)
    dialect = crm.engine.dialect.name
    if dialect == "sqlite":
        assert "SCAN customers" not in shown and index in shown, shown
    elif dialect == "postgresql":
        assert "Seq Scan on customers" not in shown and index in shown, shown
    else:
        assert index in shown, shown


def lookups(crm: Any, call: Any) -> list[tuple[str, Any]]:
    """The statements reading ``customers`` while ``call()`` runs."""
    with Statements(crm.engine) as statements:
        call()
    return statements.reading_customers()


def test_the_key_expression_is_the_generated_columns(crm_factory: Any) -> None:
    """``lookup_key`` (what a look-up compares the key column with) computes, on each database,
    what the database stores in ``email_key`` / ``phone_key``: for addresses in other capitals,
    non-ASCII ones (SQLite's lower() folds ASCII only: both sides use the database's), numbers and
    a stored form that looks sealed."""
    crm = crm_factory(config=REGION)
    emails = ["Zhang.Wei@Example.COM", "ÄRGER@Straße.de", "x@y.cn", f"{MARK}ABCdef0123456789ABCDEFgh$k$Zz"]
    phones = ["+8613291417776", f"{MARK}PQRstu0123456789ABCDEFgh$k$Zz"]
    customers = tables.customers
    ids = [crm.customers.add(name=f"k{i}").id for i in range(len(emails))]
    with crm.engine.begin() as conn:  # as stored, past validation (which refuses the $e1$ forms)
        for id_, email, phone in zip(ids, emails, phones + [None, None]):
            conn.execute(update(customers).where(customers.c.id == id_).values(email=email, phone=phone))
        stored = select(type_coerce(customers.c.email, String), type_coerce(customers.c.phone, String),
                        customers.c.email_key, customers.c.phone_key).where(customers.c.id.in_(ids))
        for email, phone, email_key, phone_key in conn.execute(stored):  # as stored, not opened
            assert conn.execute(select(lookup_key(literal(email), fold=True))).scalar_one() == email_key
            if phone is not None:
                assert conn.execute(select(lookup_key(literal(phone), fold=False))).scalar_one() == phone_key
    assert {"ix_customers_email", "ix_customers_phone"}.isdisjoint(
        ix["name"] for ix in inspect(crm.engine).get_indexes("customers"))


def test_plain_look_ups_are_exact_and_seek_the_key_index(crm_factory: Any) -> None:
    crm = crm_factory(config=REGION)
    crm.customers.add_many([{"name": f"c{i}", "email": f"Person.{i}@example.com", "phone": f"+86139{i:08d}"}
                            for i in range(200)])
    zhang = crm.customers.add(name="张伟", email="Zhang.Wei@example.com", phone="13291417776")
    other = crm.customers.add(name="Zhang Wei", email="zhang.wei@example.com", on_duplicate="add")
    # Exact, as before the key columns served it: the same key (lower-cased), another address.
    assert crm.customers.find(email="Zhang.Wei@example.com").id == zhang.id
    assert crm.customers.find(email="zhang.wei@example.com").id == other.id
    assert crm.customers.find(email="ZHANG.WEI@example.com") is None
    assert [c.id for c in crm.customers.list({"email": "Zhang.Wei@example.com"})] == [zhang.id]
    seventh = crm.customers.find(email="Person.7@example.com")
    assert [c.id for c in crm.customers.list({"email__in": "zhang.wei@example.com,Person.7@example.com"})] == \
        [seventh.id, other.id]
    assert crm.customers.count({"email__ne": "Zhang.Wei@example.com"}) == 201
    assert crm.customers.find(phone="+8613291417776").id == zhang.id
    seen = lookups(crm, lambda: crm.customers.list({"email": "Zhang.Wei@example.com"}))
    assert_seek(crm, *seen[0], "ix_customers_email_key")
    seen = lookups(crm, lambda: crm.customers.list({"phone": "+8613291417776"}))
    assert_seek(crm, *seen[0], "ix_customers_phone_key")


def test_sealed_look_ups_seek_the_key_index(crm_factory: Any, monkeypatch: Any) -> None:
    crm = encrypted(crm_factory, monkeypatch)
    crm.customers.add_many([{"name": f"c{i}", "email": f"person.{i}@example.com", "phone": f"+86139{i:08d}"}
                            for i in range(200)])
    zhang = crm.customers.add(name="张伟", email="zhang.wei@example.com", phone="13291417776")
    assert crm.customers.find(email="zhang.wei@example.com").id == zhang.id
    assert crm.customers.find(email="Zhang.Wei@example.com") is None  # the blind index is of the value
    assert crm.customers.find(phone="+8613291417776").id == zhang.id
    fifth = crm.customers.find(phone="+8613900000005")
    assert [c.id for c in crm.customers.list({"phone__in": ["+8613291417776", "+8613900000005"]})] == \
        [fifth.id, zhang.id]
    seen = lookups(crm, lambda: crm.customers.list({"email": "zhang.wei@example.com"}))
    assert "email_key" in seen[0][0] and "email >" not in seen[0][0], seen
    assert_seek(crm, *seen[0], "ix_customers_email_key")
    seen = lookups(crm, lambda: crm.customers.list({"phone": "+8613291417776"}))
    assert_seek(crm, *seen[0], "ix_customers_phone_key")


@pytest.mark.parametrize("sealed", [False, True], ids=["plain", "sealed"])
def test_point_reads_by_email_and_phone_seek_the_key_index(crm_factory: Any, monkeypatch: Any, sealed: bool) -> None:
    """``crm.customers.find(email=...)`` (a statement built once, run by the point reader)."""
    crm = encrypted(crm_factory, monkeypatch) if sealed else crm_factory(config=REGION)
    crm.customers.add_many([{"name": f"c{i}", "email": f"p{i}@example.com", "phone": f"+86139{i:08d}"}
                            for i in range(200)])
    assert crm.customers.find(email="p42@example.com").name == "c42"
    assert crm.customers.find(phone="+8613900000042").name == "c42"
    assert crm.customers.find(email="P42@example.com") is None
    for criteria, index in (({"email": "p42@example.com"}, "ix_customers_email_key"),
                            ({"phone": "+8613900000042"}, "ix_customers_phone_key")):
        # The point reader runs below SQLAlchemy: the statement is the one the repository compiles.
        [(column, value)] = criteria.items()
        compiled = _by_column(tables.customers, column, 1).compile(dialect=crm.engine.dialect)
        params = compiled.construct_params(_point_params(tables.customers, column, value))
        processed = {k: compiled._bind_processors[k](v) if compiled._bind_processors.get(k) else v
                     for k, v in params.items()}
        if compiled.positional:
            processed = tuple(processed[name] for name in compiled.positiontup)
        assert_seek(crm, compiled.string, processed, index)
