"""The PostgreSQL import path (crmcore.io.pgcopy): rows bound in the validation workers, written with
COPY, store exactly what the SQLite path stores; refused rows, sealed columns and the consent
records go as before (PostgreSQL only: the path does not exist elsewhere)."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import JSON, DateTime, String, create_engine, event, func, select, text

from crmcore.application.consents import flags_set, write_decision
from crmcore.application.consent_history import read as history_of
from crmcore.domain.validation import normalize_email
from crmcore.io.importer import ImportFailed, ImportOptions, import_file
from crmcore.io.pgcopy import CopyTarget, binary_types, copy_new_rows, copy_processor, copy_target
from crmcore.io.rows import Binder
from crmcore.store.bulk import any_of, pg_array_text
from crmcore.store.sealed import MARK, SealedAttributes
from crmcore.store.tables import audit_log, customer_consents, customers
from sealedtools import SEALED_ROWS, import_sealed_rows, sealing_crm

POSTGRES_ONLY = pytest.mark.parametrize("crm_db_url", ["postgresql"], indirect=True)

# Cells COPY's text format must escape (backslash, "\N", "\."; in multi-line fields tab and newline too),
# quotes, and text beyond ASCII: each must be stored as the SQLite path stores it.
TRICKY = [
    ("T1", "a\\b", "Zürich", "tab\there"),
    ("T2", "\\N", "東京", "line\nbreak\n"),
    ("T3", "\\.", "Kraków 🚀", "\\.\n\\N\tend"),
    ("T4", 'Quote "double" \'single\'', "São Paulo", "back\\slash\\t and \\n"),
    ("T5", "Ünïcödé 名前 😀", "N", '{"json": [1]}\t\\'),
]
NOTE = {"custom_fields": [{"entity": "customer", "name": "note", "type": "str"}]}
HEADER = "external_id,name,city,note,tags,consent_marketing"


def _csv(path: Path, rows: list[tuple[str, ...]], header: str = HEADER) -> Path:
    def cell(value: str) -> str:
        return '"' + value.replace('"', '""') + '"'
    path.write_text(header + "\n" + "".join(",".join(cell(v) for v in row) + "\n" for row in rows),
                    encoding="utf-8", newline="")
    return path


def _tricky_rows() -> list[tuple[str, ...]]:
    return [(ext, name, city, note, "vip, back\\slash, ü", "yes" if i % 2 else "no")
            for i, (ext, name, city, note) in enumerate(TRICKY)]


def _stored(crm: Any) -> list[tuple[Any, ...]]:
    # Not import_digest: its context names the dialect (crmcore.io.fingerprint), so it differs by design.
    columns = [c for c in customers.c if c.name not in ("id", "created_at", "updated_at", "import_digest")]
    with crm.engine.connect() as conn:
        return [tuple(r) for r in conn.execute(select(*columns).order_by(customers.c.external_id))]


@POSTGRES_ONLY
@pytest.mark.parametrize("workers", [0, 2])
def test_copy_stores_what_the_sqlite_path_stores(crm_factory: Any, tmp_path: Path, workers: int) -> None:
    path = _csv(tmp_path / "tricky.csv", _tricky_rows() + [
        (f"P{i}", f"Plain {i}", "Berlin", "", "a,b", "true") for i in range(40)])
    crm = crm_factory(config=NOTE)
    reference = crm_factory(config={**NOTE, "database_url": f"sqlite:///{tmp_path / 'reference.db'}"})
    options = ImportOptions(workers=workers, batch_size=9)
    report = import_file(crm, "customers", path, options)
    assert (report.inserted, report.rejected) == (45, 0), report.summary()
    assert import_file(reference, "customers", path, options).inserted == 45
    assert _stored(crm) == _stored(reference)
    assert {c.external_id: (c.name, c.city, c.attributes["note"]) for c in crm.customers.list()
            if c.external_id.startswith("T")} == {ext: (name, city, note) for ext, name, city, note in TRICKY}
    crm.customers.add(name="Added", external_id="ADDED", tags=["vip", "back\\slash", "ü"],
                      attributes={"note": TRICKY[2][3]})
    with crm.engine.connect() as conn:
        # The JSON text COPY stored is the engine's serialisation, as an insert stores it.
        texts = {r[0]: r[1:] for r in conn.execute(select(
            customers.c.external_id, text("customers.tags::text"), text("customers.attributes::text")).where(
            customers.c.external_id.in_(["T3", "ADDED"])))}
        assert texts["T3"] == texts["ADDED"] == (json.dumps(["vip", "back\\slash", "ü"], ensure_ascii=False),
                                                 json.dumps({"note": TRICKY[2][3]}, ensure_ascii=False))
        # One audit record per batch naming each new id, and the marketing decisions of the flagged rows.
        ids = sorted(i for r in conn.execute(select(audit_log.c.ids).where(audit_log.c.action == "customer.import"))
                     for i in r[0])
        assert ids == sorted(conn.execute(select(customers.c.id).where(customers.c.external_id != "ADDED")).scalars())
        flagged = conn.execute(select(func.count()).select_from(customers).where(
            customers.c.consent_marketing.is_(True))).scalar_one()
        assert flagged == 42
        assert conn.execute(select(func.count()).select_from(customer_consents)).scalar_one() == flagged


@POSTGRES_ONLY
def test_multi_line_text_of_interactions_through_copy(crm_factory: Any, tmp_path: Path) -> None:
    crm = crm_factory()
    customer = crm.customers.add(name="Has interactions", external_id="C1")
    bodies = [note for *_, note in TRICKY]
    path = tmp_path / "interactions.csv"
    path.write_text("external_id,customer,kind,occurred_at,body\n" + "".join(
        f'I{i},C1,call,2026-01-0{i + 1},"' + body.replace('"', '""') + '"\n' for i, body in enumerate(bodies)),
        encoding="utf-8", newline="")
    report = import_file(crm, "interactions", path, ImportOptions(workers=0, batch_size=2))
    assert report.inserted == len(bodies), report.summary()
    stored = {i.external_id: (i.customer_id, i.body) for i in crm.interactions.list()}
    assert stored == {f"I{i}": (customer.id, body) for i, body in enumerate(bodies)}


@POSTGRES_ONLY
def test_a_nul_is_rejected_with_its_line_and_column(crm_factory: Any, tmp_path: Path) -> None:
    rows = [("N1", "Good", "Berlin", "x", "", "no"), ("N2", "Bad\x00name", "Berlin", "x", "", "no"),
            ("N3", "Good too", "Berlin", "x\x00y", "", "no"), ("N4", "Fine", "Paris", "x", "", "yes")]
    path = _csv(tmp_path / "nul.csv", rows)
    crm = crm_factory(config=NOTE)
    with pytest.raises(ImportFailed) as failed:
        import_file(crm, "customers", path, ImportOptions(workers=0))
    assert [(e.line, e.column) for e in failed.value.report.errors] == [(3, "name"), (4, "note")]
    assert crm.customers.list() == []
    report = import_file(crm, "customers", path, ImportOptions(workers=0, on_error="skip"))
    assert (report.inserted, report.rejected) == (2, 2)
    assert sorted(c.external_id for c in crm.customers.list()) == ["N1", "N4"]


@POSTGRES_ONLY
def test_a_row_the_database_refuses_during_copy_is_rejected_alone(crm_factory: Any, tmp_path: Path) -> None:
    """COPY fails as a whole; the batch is retried row by row (each its own COPY in a savepoint):
    the refused row is rejected with its line, every other row lands with its audit and consent."""
    crm = crm_factory(config=NOTE)
    rows = [(f"R{i}", f"Name {i}", "Refused" if i == 3 else "Berlin", "x", "", "yes") for i in range(8)]
    path = _csv(tmp_path / "refused.csv", rows)
    with crm.engine.begin() as conn:
        conn.execute(text("ALTER TABLE customers ADD CONSTRAINT ck_test_refused CHECK (city <> 'Refused')"))
    try:
        report = import_file(crm, "customers", path, ImportOptions(workers=0, on_error="skip", batch_size=5))
        assert (report.inserted, report.rejected) == (7, 1), report.summary()
        assert report.errors[0].line == 5 and "the database refused the row" in report.errors[0].reason
        assert "ck_test_refused" in report.errors[0].reason
        landed = {c.external_id: c.id for c in crm.customers.list()}
        assert sorted(landed) == [f"R{i}" for i in range(8) if i != 3]
        with crm.engine.connect() as conn:
            audited = sorted(i for r in conn.execute(select(audit_log.c.ids).where(
                audit_log.c.action == "customer.import")) for i in r[0])
            consented = sorted(conn.execute(select(customer_consents.c.customer_id)).scalars())
        assert audited == consented == sorted(landed.values())
        with pytest.raises(ImportFailed):  # all or nothing: the refusal rolls the whole file back
            import_file(crm, "customers", _csv(tmp_path / "again.csv", [(f"S{i}", "N", "Refused" if i else "B",
                                                                         "x", "", "no") for i in range(3)]),
                        ImportOptions(workers=0))
        assert not [c for c in crm.customers.list() if c.external_id.startswith("S")]
    finally:
        with crm.engine.begin() as conn:
            conn.execute(text("ALTER TABLE customers DROP CONSTRAINT ck_test_refused"))


@POSTGRES_ONLY
@pytest.mark.parametrize("workers", [0, 2])
def test_sealed_columns_through_copy(crm_factory: Any, monkeypatch: Any, tmp_path: Path, workers: int) -> None:
    """Email, phone and birthday sealed in the workers, written with COPY: nothing
    readable is stored, every value reads back, exact look-ups and the door check find them."""
    crm = sealing_crm(crm_factory, monkeypatch)
    import_sealed_rows(crm, tmp_path, workers)
    rows = SEALED_ROWS
    assert crm.customers.find(email=normalize_email(rows[4][1])).external_id == "C4"
    with crm.engine.connect() as conn:
        raw = conn.execute(text("SELECT email, phone, birthday FROM customers")).all()
    assert all(v.startswith(MARK) for row in raw for v in row)
    # The door check opens the sealed values of a later file: the same person again is skipped.
    again = tmp_path / "again.csv"
    again.write_text("external_id,name,email\nNEW1,Again," + rows[0][1] + "\n", encoding="utf-8")
    report = import_file(crm, "customers", again, ImportOptions(workers=0, on_duplicate="skip"))
    assert (report.inserted, report.skipped) == (0, 1), report.summary()


@POSTGRES_ONLY
def test_bulk_flags_update_stored_decisions_and_add_missing_ones(crm_factory: Any) -> None:
    """flags_set's PostgreSQL upsert: a customer with a stored "*" marketing decision gets the new one,
    a customer without gets one, an id that is no customer gets none; history grows by one each."""
    crm = crm_factory()
    first = crm.customers.add(name="Had a decision")
    second = crm.customers.add(name="Had none")
    with crm.unit() as uow:
        write_decision(uow, first.id, False, "*", "marketing", "api", uow.now)
        write_decision(uow, first.id, True, "mail", "marketing", "api", uow.now)
    with crm.unit() as uow:
        flags_set(uow, [first.id, second.id, 999_999])
    with crm.engine.connect() as conn:
        state = conn.execute(select(customer_consents.c.customer_id, customer_consents.c.channel,
                                    customer_consents.c.granted, customer_consents.c.source).order_by(
            customer_consents.c.customer_id, customer_consents.c.channel)).all()
        assert [tuple(r) for r in state] == [(first.id, "*", True, "api"), (first.id, "mail", True, "api"),
                                             (second.id, "*", True, "api")]
        assert [(h["channel"], h["granted"]) for h in history_of(conn, first.id)] == [
            ("*", False), ("mail", True), ("*", True)]
        assert [(h["channel"], h["granted"]) for h in history_of(conn, second.id)] == [("*", True)]
        assert history_of(conn, 999_999) == []


def test_copy_processor_gives_the_json_text_an_insert_sends() -> None:
    engine = create_engine("postgresql+psycopg://nobody@localhost/none",
                           json_serializer=lambda v: json.dumps(v, ensure_ascii=False))
    dialect = engine.dialect
    assert copy_processor(String(), dialect) is None
    as_text = copy_processor(JSON(), dialect)
    assert as_text is not None
    assert as_text(["ü", "a\tb"]) == '["ü", "a\\tb"]'
    assert as_text({"k": 1}) == '{"k": 1}'
    assert as_text(None) == "null"  # none_as_null is off: JSON's own null, as the insert binds it
    assert copy_processor(JSON(none_as_null=True), dialect)(None) is None
    sealed = copy_processor(SealedAttributes(), dialect)  # no cipher: the custom fields as they are
    assert sealed is not None and sealed({"size": "L"}) == '{"size": "L"}'


@POSTGRES_ONLY
def test_arrays_sent_as_text_find_exactly_their_values(crm_factory: Any) -> None:
    """any_of binds a batch's keys as one text array: quotes, backslashes, commas, braces, blanks,
    the word NULL and the empty string are each one element, found as they are (and nothing else)."""
    crm = crm_factory()
    odd = ['with "quotes"', "back\\slash", "a,b", "{braces}", " padded ", "NULL", "", "ü 名", '\\"', "plain"]
    assert pg_array_text(odd) is not None and pg_array_text([1, 2]) == "{1,2}"
    assert pg_array_text([True]) is None and pg_array_text([1, "a"]) is None and pg_array_text([]) is None
    for value in odd:
        crm.customers.add(name="Odd", external_id=value or None, city=value or None)
    crm.customers.add(name="Other", external_id="other", city="other")
    with crm.engine.connect() as conn:
        by_text = conn.execute(select(customers.c.city).where(any_of(customers.c.city, odd))).scalars().all()
        ids = conn.execute(select(customers.c.id).where(customers.c.city.in_([v for v in odd if v]))).scalars().all()
        by_id = conn.execute(select(customers.c.id).where(any_of(customers.c.id, ids))).scalars().all()
    assert sorted(by_text) == sorted(v for v in odd if v)  # the empty string matches no NULL city
    assert sorted(by_id) == sorted(ids) and len(ids) == len(odd) - 1


@POSTGRES_ONLY
def test_unchanged_rows_on_reimport_cost_one_comparison(crm_factory: Any, tmp_path: Path) -> None:
    """Re-importing an unchanged file on PostgreSQL: each batch's rows are found unchanged by their
    stored import fingerprints in one query (crmcore.io.fingerprint), no look-up by key follows,
    nothing is written; a changed row still goes the general way (its stored row compared, JSON
    read as its stored text) and is updated."""
    crm = crm_factory(config=NOTE)
    path = _csv(tmp_path / "tricky.csv", _tricky_rows() + [
        (f"P{i}", f"Plain {i}", "Berlin", "", "a,b", "true") for i in range(10)])
    options = ImportOptions(workers=0, batch_size=5)
    assert import_file(crm, "customers", path, options).inserted == 15
    report, statements = _import_seeing(crm, path, options)
    assert (report.unchanged, report.updated, report.inserted) == (15, 0, 0), report.summary()
    lookups = [s for s in statements if "FROM customers" in s and "ANY" in s]
    assert len(lookups) == 3 and all("customers.import_digest" in s for s in lookups)
    assert not [s for s in statements if s.startswith(("UPDATE", "INSERT INTO customers"))]
    changed = _tricky_rows()
    changed[1] = (*changed[1][:2], "Osaka", *changed[1][3:])
    report, statements = _import_seeing(crm, _csv(tmp_path / "changed.csv", changed), options)
    assert (report.unchanged, report.updated) == (4, 1), report.summary()
    assert any("CAST(customers.tags AS TEXT)" in s for s in statements)  # the changed row's batch compared
    assert crm.customers.find(external_id="T2").city == "Osaka"


@POSTGRES_ONLY
def test_statistics_refreshed_only_when_an_import_changed_enough(crm_factory: Any, tmp_path: Path) -> None:
    """The ANALYZE after an import runs only past autovacuum's own point (by default 50 rows + 10% of
    the rows the statistics counted; the table's own settings where it has them): after a first
    import of 60 rows and after 100 more, not after a re-import of the unchanged file (nothing
    changed) nor after 5 new rows."""
    crm = crm_factory(config=NOTE)
    analyses: list[str] = []

    def seen(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if statement.startswith("ANALYZE"):
            analyses.append(statement)

    def imported(name: str, keys: range) -> int:
        path = _csv(tmp_path / f"{name}.csv", [(f"A{i}", f"Name {i}", "Berlin", "", "", "no") for i in keys])
        report = import_file(crm, "customers", path, ImportOptions(workers=0))
        assert report.rejected == 0, report.summary()
        return report.inserted

    def counted() -> float:
        with crm.engine.connect() as conn:
            return float(conn.execute(text("SELECT reltuples FROM pg_class WHERE oid = 'customers'::regclass"))
                         .scalar_one())

    event.listen(crm.engine, "before_cursor_execute", seen)
    try:
        assert imported("first", range(60)) == 60
        assert len(analyses) == 1 and counted() == 60
        assert imported("first", range(60)) == 0  # unchanged: the statistics are still right
        assert imported("few", range(60, 65)) == 5  # 5 <= 50 + 6
        assert len(analyses) == 1 and counted() == 60
        assert imported("more", range(65, 165)) == 100
        assert len(analyses) == 2 and counted() == 165
        with crm.engine.begin() as conn:  # the table's own settings win over the server's
            conn.execute(text("ALTER TABLE customers SET (autovacuum_analyze_threshold = 0, "
                              "autovacuum_analyze_scale_factor = 0)"))
        assert imported("one", range(165, 166)) == 1
        assert len(analyses) == 3 and counted() == 166
    finally:
        event.remove(crm.engine, "before_cursor_execute", seen)


# Text as a person may type it (no NUL: validation rejects it; no lone surrogate: not UTF-8).
TEXT = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=30)
STAMPS = st.datetimes(min_value=datetime(1900, 1, 1), max_value=datetime(2200, 1, 1), timezones=st.just(timezone.utc))


ROWS = st.lists(st.fixed_dictionaries({
    "name": TEXT, "city": st.none() | TEXT, "region": st.none() | TEXT, "consent_email": st.booleans(),
    "consent_sms": st.booleans(), "consent_marketing": st.booleans(),
    "tags": st.lists(TEXT, max_size=3), "attributes": st.dictionaries(TEXT, TEXT | st.integers(), max_size=2),
    "created_at": STAMPS, "updated_at": STAMPS, "archived_at": st.none() | STAMPS}), min_size=1, max_size=5)


@POSTGRES_ONLY
def test_binary_copy_stores_what_text_copy_stores(crm_factory: Any) -> None:
    """COPY's binary format (every customer column's type allows it) stores exactly what its
    text format stores, for the values the workers bind: any text, JSON, time stamps, flags."""
    crm = crm_factory()
    binder = Binder(customers, crm.engine.dialect)
    now = datetime(2026, 1, 1, tzinfo=timezone.utc)
    columns = [c for c in customers.c if c.name not in ("id", "external_id")]
    with crm.engine.connect() as conn:
        target = copy_target(conn, customers, binder.columns)
    assert target.binary is not None

    @settings(max_examples=60, deadline=None)
    @given(rows=ROWS)
    def same(rows: list[dict[str, Any]]) -> None:
        stored = {}
        with crm.engine.connect() as conn:
            for form, binary in (("binary", target.binary), ("text", None)):
                bound = [binder.bind_fields({**row, "kind": "person", "stage": "lead",
                                             "external_id": f"{form}{i}"}.get, now) for i, row in enumerate(rows)]
                ids = copy_new_rows(conn, customers, binder.columns, bound, CopyTarget(target.sequence, binary))
                found = {r[0]: tuple(r[1:]) for r in conn.execute(select(customers.c.id, *columns).where(
                    customers.c.id.in_(ids)))}
                stored[form] = [found[i] for i in ids]
            conn.rollback()
        assert stored["binary"] == stored["text"]

    same()


def test_binary_copy_only_for_types_whose_bound_values_it_takes() -> None:
    """The binary format names a psycopg type per column, or gives way to the text format when a
    column's server type is another, or its declared type binds what the binary dumper refuses."""
    from sqlalchemy import Column, Integer, MetaData, Table

    dialect = create_engine("postgresql+psycopg://nobody@localhost/none").dialect
    server = {"id": "integer", "external_id": "character varying", "tags": "json",
              "created_at": "timestamp without time zone", "consent_sms": "boolean", "name": "character varying"}
    assert binary_types(customers, list(server), server, dialect) == ("int4", "text", "text", "timestamp", "bool",
                                                                      "text")
    assert binary_types(customers, ["id", "tags"], {**server, "tags": "jsonb"}, dialect) is None
    assert binary_types(customers, ["id", "name"], {"id": "integer"}, dialect) is None  # no such column there
    naive = Table("t", MetaData(), Column("id", Integer), Column("at", DateTime()))  # may hold an offset
    assert binary_types(naive, ["id", "at"], {"id": "integer", "at": "timestamp without time zone"}, dialect) is None


@POSTGRES_ONLY
def test_an_import_falls_back_to_text_copy_for_another_column_type(crm_factory: Any, tmp_path: Path) -> None:
    """A customers table whose tags are jsonb (not a type the binary format is used for) still
    takes the import, through COPY's text format, and stores what the SQLite path stores."""
    crm = crm_factory(config=NOTE)
    with crm.engine.begin() as conn:
        conn.execute(text("ALTER TABLE customers ALTER COLUMN tags TYPE jsonb USING tags::jsonb"))
        assert copy_target(conn, customers, Binder(customers, crm.engine.dialect).columns).binary is None
    reference = crm_factory(config={**NOTE, "database_url": f"sqlite:///{tmp_path / 'reference.db'}"})
    path = _csv(tmp_path / "tricky.csv", _tricky_rows())
    options = ImportOptions(workers=0, batch_size=2)
    assert import_file(crm, "customers", path, options).inserted == import_file(
        reference, "customers", path, options).inserted == len(TRICKY)
    assert _stored(crm) == _stored(reference)


def _decisions(crm: Any) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    """The current "*" decisions and the history, by the customer's external id (ids differ by database)."""
    from crmcore.store.tables import consent_history

    with crm.engine.connect() as conn:
        state = conn.execute(select(customers.c.external_id, customer_consents.c.channel, customer_consents.c.purpose,
                                    customer_consents.c.granted, customer_consents.c.source,
                                    customer_consents.c.actor).join(customers).order_by(customers.c.external_id)).all()
        history = conn.execute(select(customers.c.external_id, consent_history.c.channel, consent_history.c.purpose,
                                      consent_history.c.granted, consent_history.c.source,
                                      consent_history.c.actor).join(customers).order_by(consent_history.c.id)).all()
        # Each batch's history in the order of its customers' ids, as flags_set appends it.
        ids = conn.execute(select(consent_history.c.customer_id).order_by(consent_history.c.id)).scalars().all()
        recorded = conn.execute(select(customer_consents.c.recorded_at, consent_history.c.recorded_at).join(
            consent_history, consent_history.c.customer_id == customer_consents.c.customer_id)).all()
    assert ids == sorted(ids)
    assert all(now == then for now, then in recorded)
    return [tuple(r) for r in state], [tuple(r) for r in history]


@POSTGRES_ONLY
def test_new_customers_decisions_in_one_statement_per_batch(crm_factory: Any, tmp_path: Path) -> None:
    """The "*" marketing decisions of an import's new customers (COPY's rows) go in with one statement
    per batch (the current state and the history together, no ON CONFLICT: nobody new has one), and
    are the records the SQLite path stores: one current decision and one history entry per customer
    whose flag is set, none for the others, in id order."""
    rows = [(f"C{i:02}", f"Name {i}", "Berlin", "", "", "yes" if i % 3 else "no") for i in range(23)]
    path = _csv(tmp_path / "flags.csv", rows)
    crm = crm_factory(config=NOTE)
    reference = crm_factory(config={**NOTE, "database_url": f"sqlite:///{tmp_path / 'reference.db'}"})
    options = ImportOptions(workers=0, batch_size=10)
    report, statements = _import_seeing(
        crm, path, options, lambda s: "customer_consents" in s or "consent_history" in s)
    assert (report.inserted, report.rejected) == (23, 0), report.summary()
    assert import_file(reference, "customers", path, options).inserted == 23
    assert len(statements) == 3 and all(s.startswith("WITH") and "ON CONFLICT" not in s for s in statements)
    state, history = _decisions(crm)
    assert (state, history) == _decisions(reference)
    flagged = [ext for ext, *_, flag in rows if flag == "yes"]
    assert [r[0] for r in state] == flagged and sorted(r[0] for r in history) == flagged
    assert {r[1:] for r in state} == {r[1:] for r in history} == {("*", "marketing", True, "import", "system")}


def _import_seeing(crm: Any, path: Any, options: ImportOptions,
                   keep: Any = lambda statement: True) -> tuple[Any, list[str]]:
    """The import's report and the SQL statements it sent that ``keep`` keeps."""
    statements: list[str] = []

    def seen(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if keep(statement):
            statements.append(statement)

    event.listen(crm.engine, "before_cursor_execute", seen)
    try:
        return import_file(crm, "customers", path, options), statements
    finally:
        event.remove(crm.engine, "before_cursor_execute", seen)
