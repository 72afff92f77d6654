"""The door check on SQLite, PostgreSQL and MariaDB (issue 18's open points): every exact-key
look-up is an index seek (``customers.email_key``, ``phone``, ``external_id``), sealed addresses and
numbers are found by their blind index (at the door and by ``crm customer duplicates``), a bulk add
is checked set-based, and a customer the acting user cannot see is matched but not named."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Self

import pytest
from sqlalchemy import event, select

from crmcore import Customer
from crmcore.domain.errors import DuplicateCustomer
from crmcore.io.importer import ImportOptions, import_file
from crmcore.store import tables
from crmcore.store.sealed import MARK, new_key

REGION = {"phone_region": "CN"}


class Statements:
    """The SQL statements an engine runs (with their parameters) while the block runs."""

    def __init__(self, engine: Any):
        self.engine, self.seen = engine, []

    def __enter__(self) -> Self:
        event.listen(self.engine, "before_cursor_execute", self._record)
        return self

    def __exit__(self, *exc: object) -> None:
        event.remove(self.engine, "before_cursor_execute", self._record)

    def _record(self, conn: Any, cursor: Any, statement: str, parameters: Any, context: Any, many: bool) -> None:
        self.seen.append((statement, parameters))

    def reading_customers(self) -> list[tuple[str, Any]]:
        return [(s, p) for s, p in self.seen if s.lstrip().upper().startswith("SELECT") and "customers" in s]


def plan(crm: Any, statement: str, parameters: Any) -> str:
    """The database's plan of ``statement``, as text (PostgreSQL: sequential scans priced out, so a
    plan that still reads the whole table has no index to use)."""
    dialect = crm.engine.dialect.name
    with crm.engine.connect() as conn:
        if dialect == "sqlite":
            rows = conn.exec_driver_sql("EXPLAIN QUERY PLAN " + statement, parameters).all()
            return "\n".join(str(r[-1]) for r in rows)
        if dialect == "postgresql":
            conn.exec_driver_sql("SET enable_seqscan = off")
            rows = conn.exec_driver_sql("EXPLAIN " + statement, parameters).all()
            conn.rollback()
            return "\n".join(r[0] for r in rows)
        rows = conn.exec_driver_sql("EXPLAIN " + statement, parameters).mappings().all()
        return "\n".join(f"{r['table']} type={r['type']} possible_keys={r['possible_keys']} key={r['key']}"
                         for r in rows)


def assert_index_seek(crm: Any, statement: str, parameters: Any) -> None:
    shown = plan(crm, statement, parameters)
    dialect = crm.engine.dialect.name
    if dialect == "sqlite":
        assert "SCAN customers" not in shown and "ix_customers_email_key" in shown, shown
    elif dialect == "postgresql":
        assert "Seq Scan on customers" not in shown and "ix_customers_email_key" in shown, shown
    else:  # MariaDB picks a plan by cost (a full scan of a small table is cheapest): the index must be usable
        assert "ix_customers_email_key" in shown, shown


def test_door_check_is_an_index_seek(crm_factory: Any) -> None:
    crm = crm_factory(config=REGION)
    crm.customers.add_many([{"name": f"c{i}", "email": f"Person.{i}@example.com"} for i in range(300)])
    zhang = crm.customers.add(name="张伟", email="Zhang.Wei@example.com", phone="13291417776", external_id="z1")
    with Statements(crm.engine) as statements, pytest.raises(DuplicateCustomer) as caught:
        crm.customers.add(name="Zhang Wei", email="ZHANG.WEI@EXAMPLE.COM")
    assert [(m.customer_id, m.fields) for m in caught.value.matches] == [(zhang.id, ("email",))]
    door = [(s, p) for s, p in statements.reading_customers() if "email_key" in s]
    assert len(door) == 1, statements.seen
    assert_index_seek(crm, *door[0])
    with crm.engine.connect() as conn:  # the database keeps the key on every write path
        assert conn.execute(select(tables.customers.c.email_key).where(
            tables.customers.c.id == zhang.id)).scalar_one() == "zhang.wei@example.com"
    crm.customers.update(zhang.id, email="Wei.Zhang@Example.com")
    crm.customers.add(name="New Zhang", email="zhang.wei@example.com")  # the old address is free again
    with pytest.raises(DuplicateCustomer, match=f"customer {zhang.id} "):
        crm.customers.add(name="Z", email="wei.zhang@example.COM")


def encrypted(crm_factory: Any, monkeypatch: Any, plugins: list[str] | None = None) -> Any:
    monkeypatch.setenv("DUPTEST_KEYS", new_key())
    return crm_factory(plugins=plugins or [], config={**REGION, "privacy": {"encryption": {
        "fields": ["email", "phone"], "key_env": "DUPTEST_KEYS"}}})


def test_sealed_duplicates_are_found_and_stopped_at_the_door(crm_factory: Any, monkeypatch: Any,
                                                             tmp_path: Path) -> None:
    crm = encrypted(crm_factory, monkeypatch)
    first = crm.customers.add(name="张伟", email="zhang.wei@example.com", phone="13291417776", city="Shanghai")
    other = crm.customers.add(name="李娜", email="li.na@example.com", phone="13911112222", city="Beijing")
    with crm.engine.connect() as conn:  # sealed: no readable address, the key is the blind index
        stored = conn.execute(select(tables.customers.c.email_key).where(tables.customers.c.id == first.id))
        key = stored.scalar_one()
        assert key.startswith(MARK) and len(key) == 26 and "zhang" not in key
    with Statements(crm.engine) as statements, pytest.raises(DuplicateCustomer) as caught:
        crm.customers.add(name="Zhang Wei", email="ZHANG.WEI@example.com", phone="+86 132-9141-7776")
    assert [(m.customer_id, m.fields) for m in caught.value.matches] == [(first.id, ("email", "phone"))]
    door = [(s, p) for s, p in statements.reading_customers() if "email_key" in s]
    assert_index_seek(crm, *door[0])
    with pytest.raises(DuplicateCustomer, match=f"customer {other.id} .*same phone"):
        crm.customers.add(name="Li Na", phone="139 1111 2222")
    # Planted past the door: crm customer duplicates groups them by blind index.
    same_email = crm.customers.add(name="Zhang Wei", email="zhang.wei@example.com", city="Shanghai",
                                   on_duplicate="add")
    same_phone = crm.customers.add(name="Li Na", phone="+8613911112222", city="Beijing", on_duplicate="add")
    found = {c.ids: c.pairs[0].fields for c in crm.duplicates.find(min_score=0.5)}
    assert found[(first.id, same_email.id)]["email"] == "same"
    assert found[(other.id, same_phone.id)]["phone"] == "same"
    # And a bulk add stops at the door too.
    with pytest.raises(DuplicateCustomer, match="row 1: looks like customer"):
        crm.customers.add_many([{"name": "A", "email": "a@example.com"}, {"name": "B", "phone": "13911112222"}])
    batch = [{"name": "C", "phone": "13900000001"}, {"name": "D", "phone": "+86 139 0000 0001"}]
    with pytest.raises(DuplicateCustomer, match="row 1: looks like row 0 of this batch"):
        crm.customers.add_many(batch)
    # And an import (its bulk path binds sealed values: the door compares the values).
    path = tmp_path / "c.csv"
    path.write_text("name,email,phone\nZhang Wei,ZHANG.WEI@example.com,\nLi,li@example.com,132 9141 7776\n"
                    "New,new@example.com,13700000001\nNew again,NEW@example.com,\n", encoding="utf-8")
    report = import_file(crm, "customers", path, ImportOptions(on_duplicate="skip"))
    assert (report.inserted, report.skipped) == (1, 3), report.duplicates
    assert [(d["line"], d["customers"]) for d in report.duplicates] == [
        (2, [first.id, same_email.id]), (3, [first.id]), (5, [])]


def test_add_many_checks_the_door_set_based(crm_factory: Any) -> None:
    crm = crm_factory(config={**REGION, "custom_fields": [{"entity": "customer", "name": "registration_no",
                                                            "type": "str"}],
                              "duplicates": {"exact": ["email", "phone", "external_id",
                                                       "attributes.registration_no"]}})
    zhang = crm.customers.add(name="张伟", email="zhang.wei@example.com", phone="13291417776")
    acme = crm.customers.add(name="Acme", kind="company", attributes={"registration_no": "9144030071"})
    rows = [{"name": f"n{i}", "email": f"n{i}@example.com"} for i in range(200)]
    with Statements(crm.engine) as statements, pytest.raises(DuplicateCustomer) as caught:
        crm.customers.add_many([*rows, {"name": "Zhang Wei", "email": "ZHANG.WEI@example.com"}])
    assert str(caught.value).startswith(f"row 200: looks like customer {zhang.id} '张伟' (same email)")
    assert [m.customer_id for m in caught.value.matches] == [zhang.id]
    # one query per exact key for the whole batch (not one per row)
    assert len(statements.reading_customers()) <= 6, statements.reading_customers()
    assert crm.customers.count() == 2  # nothing stored
    with pytest.raises(DuplicateCustomer, match=f"row 0: looks like customer {acme.id} .*same registration_no"):
        crm.customers.add_many([{"name": "Acme Ltd", "kind": "company", "attributes": {"registration_no": "9144030071"}}])
    with pytest.raises(DuplicateCustomer, match="row 2: looks like row 0 of this batch"):
        crm.customers.add_many([{"name": "x", "phone": "13900000001"}, {"name": "y"},
                                {"name": "z", "phone": "139-0000-0001"}])
    assert crm.customers.add_many([*rows, {"name": "Zhang Wei", "email": "ZHANG.WEI@example.com"}],
                                  on_duplicate="add") == 201
    assert crm.customers.add_many([{"name": "fresh", "email": "fresh@example.com"}]) == 1


def test_a_customer_the_user_cannot_see_is_matched_but_not_named(crm_factory: Any) -> None:
    crm = crm_factory(plugins=["access"], config=REGION)
    for login in ("rep1", "rep2"):
        crm.users.add(login, role="sales-rep")
    crm.users.add("boss", role="admin")
    with crm.acting("boss"):
        theirs = crm.customers.add(Customer(name="王芳", email="wang.fang@example.com", phone="13800001111",
                                            owner="rep2"))
        mine = crm.customers.add(Customer(name="李娜", email="li.na@example.com", owner="rep1"))
    with crm.acting("rep1"):
        with pytest.raises(DuplicateCustomer) as caught:
            crm.customers.add(Customer(name="Wang Fang", email="WANG.FANG@example.com", owner="rep1"))
        message = str(caught.value)
        assert message.startswith("an existing customer you cannot see has the same email: not added"), message
        assert str(theirs.id) not in message and "王芳" not in message and "13800001111" not in message
        assert [(m.customer_id, m.name, m.fields) for m in caught.value.matches] == [(None, "", ("email",))]
        with pytest.raises(DuplicateCustomer) as both:
            crm.customers.add(Customer(name="x", email="li.na@example.com", phone="138 0000 1111", owner="rep1"))
        assert str(both.value).startswith(f"looks like customer {mine.id} '李娜' (same email); and an existing "
                                          f"customer you cannot see has the same phone"), str(both.value)
        with pytest.raises(DuplicateCustomer, match="row 0: an existing customer you cannot see has the same phone"):
            crm.customers.add_many([{"name": "y", "phone": "13800001111", "owner": "rep1"}])
        # The same check asked before adding (what the HTTP API's GET /duplicates answers).
        assert [(m.customer_id, m.name, m.fields) for m in crm.duplicates.check(email="wang.fang@example.com")] \
            == [(None, "", ("email",))]
    with crm.acting("rep2"), pytest.raises(  # the owner sees whom it is
            DuplicateCustomer, match=f"looks like customer {theirs.id} '王芳' \\(same email\\)"):
        crm.customers.add(Customer(name="Wang Fang", email="WANG.FANG@example.com", owner="rep2"))


@pytest.mark.parametrize("workers", [0, 2])
def test_a_sealed_import_is_checked_at_the_door_in_workers_too(crm_factory: Any, monkeypatch: Any,
                                                                tmp_path: Path, workers: int) -> None:
    """Validation workers seal the rows and hand their sealings back with them; the door check in
    the importing process compares by value either way (and a value it did not see sealed, such as
    a later batch's, is opened as before)."""
    crm = encrypted(crm_factory, monkeypatch)
    first = crm.customers.add(name="张伟", email="zhang.wei@example.com", phone="13291417776")
    path = tmp_path / "c.csv"
    lines = ["name,email,phone", "Zhang Wei,ZHANG.WEI@example.com,", "Li,li@example.com,132 9141 7776"]
    lines += [f"P{i},p{i}@example.com,1370000{i:04d}" for i in range(40)]
    lines += ["Again,P3@EXAMPLE.COM,", "Phone again,,+86 137 0000 0007"]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    report = import_file(crm, "customers", path, ImportOptions(on_duplicate="skip", workers=workers, batch_size=7))
    assert (report.inserted, report.skipped) == (40, 4), report.duplicates
    assert [(d["line"], d["customers"]) for d in report.duplicates] == [
        (2, [first.id]), (3, [first.id]), (44, [crm.customers.find(email="p3@example.com").id]),
        (45, [crm.customers.find(phone="+8613700000007").id])]


def test_an_imports_look_ups_by_many_values_search_the_index_per_value(sqlite_crm: Any, tmp_path: Path) -> None:
    # SQLite: the door check of a batch's new rows (one query per exact key) and the look-up of the
    # batch's external ids join the values (json_each) to the key's index, one search per value;
    # IN (SELECT value FROM json_each(...)) sorted the values into a list first (3x the searches).
    crm = sqlite_crm(config=REGION)
    stored = crm.customers.add(name="Stored", email="Stored@Example.com", phone="13291417776", external_id="s1")
    rows = ["external_id,name,email,phone"] + [f"n{i},N{i},n{i}@example.com,1329141{i:04d}" for i in range(30)]
    file = tmp_path / "new.csv"
    file.write_text("\n".join(rows) + "\n", encoding="utf-8")
    with Statements(crm.engine) as statements:
        report = import_file(crm, "customers", file, ImportOptions(workers=0))
    assert report.inserted == 30 and not report.duplicates
    look_ups = [(s, p) for s, p in statements.reading_customers() if "json_each" in s]
    keys = {k for s, _ in look_ups for k in ("email_key", "phone_key", "external_id") if f"customers.{k} =" in s}
    assert keys == {"email_key", "phone_key", "external_id"}, look_ups
    for statement, parameters in look_ups:
        shown = plan(crm, statement, parameters)
        assert "LIST SUBQUERY" not in shown and "SCAN customers" not in shown and "USING INDEX" in shown, shown
    # The same decisions: a row with a stored customer's address (any case) or number is a duplicate,
    # and a file's own key twice is one row and a rejection, as before.
    again = tmp_path / "again.csv"
    again.write_text("external_id,name,email,phone\nd1,Dup,STORED@example.com,\nd2,Dup2,,+86 132 9141 7776\n"
                     "d3,New,d3@example.com,\nd3,New again,d3b@example.com,\n", encoding="utf-8")
    report = import_file(crm, "customers", again, ImportOptions(workers=0, on_error="skip"))
    assert [(d["line"], d["customers"]) for d in report.to_dict()["duplicates"]] == [(2, [stored.id]), (3, [stored.id])]
    assert report.inserted == 1 and report.rejected == 1 and report.skipped == 2
