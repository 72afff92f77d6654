"""Look-ups of many values on PostgreSQL by one index search per value (crmcore.store.bulk.probe_each).

``column = ANY(array)`` leaves the plan to the planner, which scans the whole table for a batch's
5,000 keys until the table holds about a million rows: an import into a database in use then read
every stored customer three times per batch.  In a table large enough for searches to pay
(``probes_pay``), the door check (``DuplicateService.any_stored``) and the importer's look-ups by a
unique column (``_where_in``) join the values to the column's index instead: the same rows, found
by index whatever the table's statistics."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import event, func, select, text

from crmcore.io.importer import ImportOptions, import_file
from crmcore.store.bulk import any_of, pg_array_text, probe_each, probes_pay, without_jit
from crmcore.store.tables import customers

POSTGRES_ONLY = pytest.mark.parametrize("crm_db_url", ["postgresql"], indirect=True)


def _fill(crm: Any, count: int, start: int = 1) -> None:
    """``count`` stored customers, in one statement (no statistics: the table is not analysed)."""
    with crm.engine.begin() as conn:
        conn.execute(text(
            "INSERT INTO customers (kind, name, email, phone, external_id, stage, consent_email, consent_sms,"
            " consent_marketing, tags, attributes, created_at, updated_at)"
            " SELECT 'person', 'n' || g, 'bulk' || g || '@example.com', '+8613' || lpad(g::text, 9, '0'),"
            " 'b' || g, 'lead', false, false, false, '[]', '{}', now(), now()"
            " FROM generate_series(CAST(:start AS integer), CAST(:stop AS integer)) AS g"), {"start": start, "stop": start + count - 1})


def _add(crm: Any, **values: Any) -> None:
    """A stored customer with ``values`` as they are (no validation: any text a column can hold)."""
    row = {"kind": "person", "name": "x", "stage": "lead", "consent_email": False, "consent_sms": False,
           "consent_marketing": False, "tags": [], "attributes": {}, "created_at": text("now()"),
           "updated_at": text("now()"), **values}
    with crm.engine.begin() as conn:
        conn.execute(customers.insert().values(row))


def _plan(conn: Any, statement: Any) -> str:
    compiled = statement.compile(dialect=conn.dialect)
    return "\n".join(row[0] for row in conn.exec_driver_sql("EXPLAIN " + str(compiled), compiled.params))


@POSTGRES_ONLY
def test_probes_find_the_rows_any_finds(crm_factory: Any) -> None:
    crm = crm_factory()
    _fill(crm, 300)
    _add(crm, name="Odd", external_id='q"u,o{t}e\\s')
    _add(crm, name="Wide", external_id="名前-😀")
    wanted = ["b1", "b17", "b300", "b301", "nope", 'q"u,o{t}e\\s', "名前-😀", "", " b2"]
    columns = [customers.c.id, customers.c.name, customers.c.external_id]
    with crm.engine.connect() as conn:
        probed = conn.execute(probe_each(columns, customers.c.external_id, pg_array_text(wanted))).all()
        found = conn.execute(select(*columns).where(any_of(customers.c.external_id, wanted))).all()
        assert sorted(probed) == sorted(found) and len(found) == 5
        # Rows are read by the columns' names; a condition on the rows; integer keys.
        ids = [row.id for row in found]
        live = conn.execute(probe_each([customers.c.id, customers.c.email_key.label("k")], customers.c.id,
                                       pg_array_text(ids), customers.c.name != "Odd")).all()
        assert sorted(row.id for row in live) == sorted(r.id for r in found if r.name != "Odd")
        plan = _plan(conn, probe_each(columns, customers.c.external_id, pg_array_text(wanted)))
        assert "Nested Loop" in plan and "uq_customers_external_id" in plan and "Seq Scan on customers" not in plan


@POSTGRES_ONLY
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(values=st.lists(st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"),
                               max_size=6), max_size=20, unique=True))
def test_probes_agree_with_any_on_any_text(crm_factory: Any, values: list[str]) -> None:
    crm = crm_factory()
    with crm.engine.begin() as conn:
        conn.execute(customers.delete())
    for value in values[::2]:  # half of them stored
        _add(crm, external_id=value)
    with crm.engine.connect() as conn:
        probed = conn.execute(probe_each([customers.c.id], customers.c.external_id, pg_array_text(values))).all()
        found = conn.execute(select(customers.c.id).where(any_of(customers.c.external_id, values))).all()
    assert sorted(probed) == sorted(found)


@POSTGRES_ONLY
def test_searches_pay_in_a_table_of_a_page_for_every_four_values(crm_factory: Any) -> None:
    crm = crm_factory()
    with crm.engine.connect() as conn:
        assert not probes_pay(conn, customers, 5000)  # empty: a scan reads nothing
        assert not probes_pay(conn, customers, 50)  # a few values: no question asked
    _fill(crm, 3000)
    with crm.engine.connect() as conn:
        pages = conn.execute(text("SELECT pg_relation_size('customers') / 8192")).scalar_one()
        assert pages > 25
        assert probes_pay(conn, customers, 4 * pages - 1) and not probes_pay(conn, customers, 4 * pages)


@POSTGRES_ONLY
def test_without_jit_gives_the_setting_back(crm_factory: Any) -> None:
    crm = crm_factory()
    with crm.engine.begin() as conn:
        conn.execute(text("SET LOCAL jit = on"))
        with without_jit(conn):
            assert conn.execute(text("SHOW jit")).scalar_one() == "off"
        assert conn.execute(text("SHOW jit")).scalar_one() == "on"
        with pytest.raises(ZeroDivisionError), without_jit(conn):
            1 / 0
        assert conn.execute(text("SHOW jit")).scalar_one() == "on"


@POSTGRES_ONLY
def test_the_door_check_in_a_large_table_searches_the_index_per_value(crm_factory: Any) -> None:
    crm = crm_factory(config={"phone_region": "CN"})
    _fill(crm, 3000)
    archived = crm.customers.add(name="Gone", email="gone@example.com")
    crm.customers.delete(archived.id)  # archived, not purged
    values = [f"new{i}@example.com" for i in range(200)]
    seen: list[tuple[str, Any]] = []

    def record(conn: Any, cursor: Any, statement: str, parameters: Any, *rest: Any) -> None:
        seen.append((statement, parameters))

    event.listen(crm.engine, "before_cursor_execute", record)
    try:
        with crm.unit() as uow:
            assert not crm.duplicates.any_stored(uow, "email", values)
            assert not crm.duplicates.any_stored(uow, "email", [*values, "gone@example.com"])  # archived
            assert crm.duplicates.any_stored(uow, "email", [*values, "bulk7@example.com"])
            assert crm.duplicates.any_stored(uow, "phone", ["+8613000000011"])  # a few: = ANY
            assert conn_jit(uow.conn) == conn_jit(uow.conn, default=True)
    finally:
        event.remove(crm.engine, "before_cursor_execute", record)
    probes = [(s, p) for s, p in seen if "LATERAL" in s]
    assert len(probes) == 3 and all("customers.email_key = given.value" in s for s, _ in probes), seen
    with crm.engine.connect() as conn:
        shown = "\n".join(r[0] for r in conn.exec_driver_sql("EXPLAIN " + probes[0][0], probes[0][1]))
    assert "Nested Loop" in shown and "ix_customers_email_key" in shown and "Seq Scan on customers" not in shown


def conn_jit(conn: Any, default: bool = False) -> str:
    """The transaction's ``jit`` setting (``default``: the server's, for comparison)."""
    if default:
        return str(conn.execute(text("SELECT reset_val FROM pg_settings WHERE name = 'jit'")).scalar_one())
    return str(conn.execute(text("SHOW jit")).scalar_one())


@POSTGRES_ONLY
def test_an_import_into_a_large_table_finds_its_duplicates_by_index(crm_factory: Any, tmp_path: Path) -> None:
    crm = crm_factory(config={"phone_region": "CN"})
    _fill(crm, 3000)
    # A first batch of new rows only (each door key looked up once, by index), then a second one
    # with a stored customer's key, address and number and a key of the first batch.
    lines = ["external_id,name,email,phone"]
    lines += [f"n{i},N{i},n{i}@example.com,+86 137 0000 {i:04d}" for i in range(200)]
    lines += ["b5,Stored again,changed5@example.com,", "d1,Dup mail,BULK9@Example.com,",
              "d2,Dup phone,,+86 130 0000 0012", "n3,Twice,twice@example.com,"]
    lines += [f"m{i},M{i},m{i}@example.com,+86 138 0000 {i:04d}" for i in range(150)]
    path = tmp_path / "c.csv"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    statements: list[str] = []
    event.listen(crm.engine, "before_cursor_execute", lambda c, cur, s, *a: statements.append(s))
    report = import_file(crm, "customers", path, ImportOptions(workers=0, batch_size=200, on_error="skip",
                                                               on_duplicate="skip"))
    assert (report.inserted, report.updated, report.skipped, report.rejected) == (350, 1, 2, 1), report.to_dict()
    assert [(d["line"], d["customers"]) for d in report.to_dict()["duplicates"]] == [(203, [9]), (204, [12])]
    probed = " ".join(s for s in statements if "LATERAL" in s)
    for column in ("email_key", "phone_key", "external_id"):
        assert f"customers.{column} = given.value" in probed, statements
    assert crm.customers.find(external_id="b5").email == "changed5@example.com"


@POSTGRES_ONLY
def test_whole_rows_by_a_unique_key_in_a_large_table(crm_factory: Any) -> None:
    # _where_in([table], ...): the rows' every column, by name and with its type's processing.
    from crmcore.io.importer import _where_in

    crm = crm_factory()
    _fill(crm, 3000)
    wanted = [f"b{i}" for i in range(1, 400, 2)] + ["absent"]
    with crm.unit() as uow:
        assert probes_pay(uow.conn, customers, len(wanted))
        rows = list(_where_in(uow, [customers], customers.c.external_id, wanted))
        plain = list(uow.conn.execute(select(customers).where(any_of(customers.c.external_id, wanted))))
    assert sorted(map(tuple, rows)) == sorted(map(tuple, plain)) and len(rows) == 200
    assert {r._mapping["email"] for r in rows} == {f"bulk{i}@example.com" for i in range(1, 400, 2)}
    assert all(r.tags == [] and r.created_at.tzinfo is not None for r in rows)


@POSTGRES_ONLY
def test_the_door_updates_many_stored_customers_in_a_large_table(crm_factory: Any, tmp_path: Path) -> None:
    # --on-duplicate update: the matched customers' whole rows are read by id, 120 of them at once.
    crm = crm_factory()
    _fill(crm, 3000)
    lines = ["external_id,name,email,city"] + [f"x{i},Again {i},BULK{i}@example.com,Lyon" for i in range(1, 121)]
    path = tmp_path / "again.csv"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    report = import_file(crm, "customers", path, ImportOptions(workers=0, on_duplicate="update"))
    assert (report.inserted, report.updated, report.skipped) == (0, 120, 0), report.to_dict()
    with crm.engine.connect() as conn:
        assert conn.execute(select(customers.c.name, customers.c.city).where(customers.c.external_id == "x77")
                            ).one() == ("Again 77", "Lyon")
        assert conn.execute(select(func.count()).select_from(customers)).scalar_one() == 3000


@POSTGRES_ONLY
def test_without_jit_lets_the_blocks_database_error_through(crm_factory: Any) -> None:
    from sqlalchemy.exc import DataError

    crm = crm_factory()
    with crm.engine.connect() as conn:
        with pytest.raises(DataError, match="division by zero"), without_jit(conn):
            conn.execute(text("SELECT 1 / 0"))
        conn.rollback()
        assert not probes_pay(conn, customers.to_metadata(type(customers.metadata)(), name="no_such_table"), 5000)


def test_only_a_plain_unique_index_makes_a_column_probed() -> None:
    # An expression or partial unique index lists its column too, but `column = value` cannot use it.
    from sqlalchemy import Column, Index, Integer, MetaData, String, Table

    from crmcore.io.importer import _searchable

    table = Table("t", MetaData(), Column("id", Integer, primary_key=True),
                  *(Column(name, String) for name in ("lowered", "partial", "plain", "indexed")))
    Index("i1", func.lower(table.c.lowered), unique=True)
    Index("i2", table.c.partial, unique=True, postgresql_where=table.c.plain.is_(None))
    Index("i3", table.c.plain, unique=True)
    Index("i4", table.c.indexed)
    assert [_searchable(c, unique=True) for c in table.c] == [True, False, False, True, False]
    assert all(_searchable(c) for c in table.c)
    assert _searchable(customers.c.external_id, unique=True) and not _searchable(customers.c.email_key, unique=True)
