"""Import fingerprints (crmcore.io.fingerprint): a re-imported row whose digest of the import's
context, its cells and the stored row matches is unchanged without validation.  The shortcut must
decide exactly what the general path decides: after every kind of change made to the stored
customers by other paths, and of the import's context, a re-import's report, stored rows, audit
trail, consent records and users equal those of the same re-import with the shortcut off."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st
from sqlalchemy import select, text, update

import sealedtools
from crmcore import CRM
from crmcore.config import Config
from crmcore.contracts.data import FIXED_NOW
from crmcore.io import fingerprint, importer
from crmcore.io.importer import ImportOptions, import_file
from crmcore.io.pgcopy import copies
from crmcore.io.rows import RowChecker
from crmcore.store.tables import audit_log, consent_history, customer_consents, customers, users
from crmcore.testing import reset_database

HEADER = "external_id,name,email,phone,country,tags,consent_email,birthday,owner\n"
#: A birthday 100 days before the fixed clock: "in the future" for a clock 400 days earlier.
RECENT = (FIXED_NOW - timedelta(days=100)).date().isoformat()


def _rows(count: int) -> list[str]:
    rows = []
    for i in range(count):
        owner = ("ann", "bob", "ann@example.com", "")[i % 4]  # a login, an email (resolved), none
        birthday = RECENT if i == 12 else f"1990-01-{1 + i % 28:02d}"
        phone = f"138 0013 {i:04d}" if i == 11 else f"+86 138 0013 {i:04d}"  # national: as the region says
        rows.append(f"C{i:04d},Name {i},User.{i}@Example.COM,{phone},CN,\"vip,news\",true,{birthday},{owner}")
    return rows


def _write(path: Path, lines: list[str]) -> Path:
    path.write_text(HEADER + "".join(line + "\n" for line in lines), encoding="utf-8")
    return path


@pytest.fixture
def count_checks(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """How many rows the importing process validated (workers=0: all of them)."""
    calls = [0]
    check = RowChecker.check

    def counted(self: RowChecker, values: Any) -> Any:
        calls[0] += 1
        return check(self, values)

    monkeypatch.setattr(RowChecker, "check", counted)
    return calls


def _screened(crm: CRM) -> bool:
    """Whether imports bind rows where the digest is computed (SQLite, PostgreSQL's COPY path); on
    MariaDB every row takes the general path and no digest is written."""
    dialect = crm.engine.dialect
    return dialect.name == "sqlite" or copies(dialect)


def _fresh_url(crm_db_url: str, tmp_path: Path, name: str) -> str:
    if crm_db_url.startswith("sqlite"):
        return f"sqlite:///{tmp_path / name}.db"
    reset_database(crm_db_url)
    return crm_db_url


def _open(url: str, config: dict[str, Any] | None = None, clock: Callable[[], datetime] | None = None) -> CRM:
    values = {"database_url": url, "plugins": [], "phone_region": "CN", **(config or {})}
    return CRM.open(config=Config.from_mapping(values), clock=clock or (lambda: FIXED_NOW))


def _id(crm: CRM, ext: str) -> int:
    with crm.unit() as uow:
        return int(uow.conn.execute(select(customers.c.id).where(customers.c.external_id == ext)).scalar_one())


def _state(crm: CRM) -> dict[str, Any]:
    """Everything a re-import may write, but the digests (bookkeeping: compared apart)."""
    columns = [c for c in customers.c if c.name != fingerprint.COLUMN]
    with crm.unit() as uow:
        def rows(query: Any) -> list[tuple[Any, ...]]:
            return [tuple(r) for r in uow.conn.execute(query)]
        return {
            "customers": rows(select(*columns).order_by(customers.c.id)),
            "audit": rows(select(audit_log).order_by(*audit_log.primary_key.columns)),
            "consents": rows(select(customer_consents).order_by(*customer_consents.c)),
            "consent_history": rows(select(consent_history).order_by(*consent_history.c)),
            "users": rows(select(users).order_by(users.c.login)),
        }


def _outcome(report: Any) -> tuple[Any, ...]:
    return (report.inserted, report.updated, report.unchanged, report.rejected, report.skipped,
            [(e.line, e.column, e.reason) for e in report.errors], report.duplicates, report.notes)


def _change_out_of_band(crm: CRM) -> None:
    """A change of the stored customers by every other path."""
    crm.customers.update(_id(crm, "C0001"), name="Changed by the service")
    crm.customers.update(_id(crm, "C0002"), consent_email=False)  # a consent change
    crm.users.deactivate("bob")  # C0001, C0005, ... are bob's
    crm.customers.delete(_id(crm, "C0004"))  # archived
    crm.merges.merge(_id(crm, "C0006"), [_id(crm, "C0010")])
    with crm.unit() as uow:  # plain SQL
        uow.conn.execute(update(customers).where(customers.c.external_id == "C0005").values(city="上海"))
        uow.conn.execute(update(customers).where(customers.c.external_id == "C0009").values(birthday="1991-02-03"))


def _edited(rows: list[str]) -> list[str]:
    """The file again, with a changed cell, keys twice (in one batch and across batches), a blank
    cell (unchanged on update) and a bad row."""
    edited = list(rows)
    edited[3] = edited[3].replace("Name 3,", "Name Three,")
    edited[7] = edited[7].replace(",CN,", ",,")
    edited[13] = edited[13].replace("@Example.COM", "@@")
    edited.insert(17, rows[16])  # the same row twice in a batch
    edited.append(rows[20])  # again in a later batch
    edited.append(rows[22].replace("Name 22", "Name 22 again"))
    return edited


def _reimport(crm_db_url: str, tmp_path: Path, shortcut: bool, context: str, workers: int,
              monkeypatch: pytest.MonkeyPatch) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """A file imported, the customers changed, the file (edited) imported again: the second report
    and what is stored then."""
    url = _fresh_url(crm_db_url, tmp_path, f"{context}-{shortcut}")
    rows = _rows(40)
    with monkeypatch.context() as patch:
        patch.setattr(fingerprint, "SHORTCUT", shortcut)
        crm = _open(url)
        try:
            crm.users.add("ann", email="ann@example.com")
            crm.users.add("bob")
            first = import_file(crm, "customers", _write(tmp_path / "a.csv", rows),
                                ImportOptions(batch_size=8, workers=workers))
            assert first.inserted == 40, first.summary()
            _change_out_of_band(crm)
        finally:
            crm.close()
        options = ImportOptions(batch_size=8, workers=workers, on_error="skip")
        config: dict[str, Any] = {}
        clock = None
        if context == "phone_region":
            config = {"phone_region": "US"}
        elif context == "values":
            options.values = {"country": {"CN": "JP"}}
        elif context == "mapping":
            options.mapping = {"tags": "attributes.labels"}
        elif context == "rules":
            patch.setattr(fingerprint, "RULES_VERSION", fingerprint.RULES_VERSION + 1)
        elif context == "clock":
            clock = lambda: FIXED_NOW - timedelta(days=400)  # noqa: E731
        crm = _open(url, config, clock)
        try:
            report = import_file(crm, "customers", _write(tmp_path / "b.csv", _edited(rows)), options)
            return _outcome(report), _state(crm)
        finally:
            crm.close()


@pytest.mark.parametrize("context", ["none", "phone_region", "values", "mapping", "rules", "clock"])
def test_a_reimport_decides_as_without_the_shortcut(crm_db_url: str, tmp_path: Path, context: str,
                                                    monkeypatch: pytest.MonkeyPatch,
                                                    count_checks: list[int]) -> None:
    without = _reimport(crm_db_url, tmp_path, False, context, 0, monkeypatch)
    checks_without = count_checks[0]
    count_checks[0] = 0
    with_shortcut = _reimport(crm_db_url, tmp_path, True, context, 0, monkeypatch)
    assert with_shortcut[0] == without[0]
    assert with_shortcut[1] == without[1]
    if context == "none" and not crm_db_url.startswith(("mysql", "mariadb")):  # the shortcut was taken: fewer rows
        assert count_checks[0] < checks_without - 10                   # validated (the first import: 40)
    elif context != "clock":  # a changed context: no row is taken for unchanged without validation
        assert count_checks[0] == checks_without
    if context == "clock":  # line 14's birthday is in the future for that clock
        assert any(line == 14 and "in the future" in reason for line, _, reason in without[0][5])


def test_a_reimport_with_workers_decides_as_without_the_shortcut(crm_sqlite_url: str, tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    without = _reimport(crm_sqlite_url, tmp_path, False, "none", 2, monkeypatch)
    assert _reimport(crm_sqlite_url, tmp_path, True, "none", 2, monkeypatch) == without


@pytest.fixture
def pools(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[int]]:
    """How many validation pools an import started."""
    started = [0]
    start = importer._Validation._pool

    def counted(self: Any) -> Any:
        if self.pool is None:
            started[0] += 1
        return start(self)

    monkeypatch.setattr(importer._Validation, "_pool", counted)
    yield started


@pytest.mark.parametrize("workers", [0, 2])
def test_an_unchanged_reimport_validates_no_row_and_starts_no_pool(crm_factory: Any, tmp_path: Path, workers: int,
                                                                   count_checks: list[int], pools: list[int]) -> None:
    crm = crm_factory(config={"phone_region": "CN"})
    crm.users.add("ann", email="ann@example.com")
    crm.users.add("bob")
    rows = [row for i, row in enumerate(_rows(40)) if i % 4 != 2]  # no owner by email: each row hits
    file = _write(tmp_path / "c.csv", rows)
    first = import_file(crm, "customers", file, ImportOptions(batch_size=7, workers=workers))
    assert first.inserted == 30
    count_checks[0] = pools[0] = 0
    before = _state(crm)
    again = import_file(crm, "customers", file, ImportOptions(batch_size=7, workers=workers))
    assert (again.inserted, again.updated, again.unchanged, again.rejected) == (0, 0, 30, 0)
    # MariaDB: every row validated, by the workers when there are any (not counted in this process).
    assert (count_checks[0], pools[0]) == ((0, 0) if _screened(crm) else (0, 1) if workers else (30, 0))
    assert _state(crm) == before


def test_rows_imported_without_a_digest_gain_it_on_their_next_import(crm_factory: Any, tmp_path: Path,
                                                                     count_checks: list[int]) -> None:
    """A database imported before revision 0028 (no digests): the next import finds the rows the
    slow way and writes their digests; the one after validates none."""
    crm = crm_factory(config={"phone_region": "CN"})
    screened = _screened(crm)  # MariaDB: no bound rows, so no digest: every import validates every row
    file = _write(tmp_path / "c.csv", [row.rsplit(",", 1)[0] + "," for row in _rows(20)])
    import_file(crm, "customers", file, ImportOptions(batch_size=6))
    with crm.unit() as uow:
        uow.conn.execute(update(customers).values({fingerprint.COLUMN: None}))
    count_checks[0] = 0
    assert import_file(crm, "customers", file, ImportOptions(batch_size=6)).unchanged == 20
    assert count_checks[0] == 20
    with crm.unit() as uow:
        digests = uow.conn.execute(select(customers.c[fingerprint.COLUMN])).scalars().all()
    assert None not in digests if screened else set(digests) == {None}
    count_checks[0] = 0
    assert import_file(crm, "customers", file, ImportOptions(batch_size=6)).unchanged == 20
    assert count_checks[0] == (0 if screened else 20)


def test_a_sealed_database_reimport(crm_factory: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                    count_checks: list[int]) -> None:
    """Sealed email, phone and birthday: the digest covers the stored ciphertexts, and a
    re-import is decided as without the shortcut."""
    crm = sealedtools.sealing_crm(crm_factory, monkeypatch)
    screened = _screened(crm)  # MariaDB: no digest, every row validated; the same decisions
    sealedtools.import_sealed_rows(crm, tmp_path, workers=0)
    path = tmp_path / "sealed.csv"
    before = _state(crm)
    count_checks[0] = 0
    report = import_file(crm, "customers", path, ImportOptions(batch_size=7))
    assert (report.unchanged, count_checks[0]) == (30, 0 if screened else 30)
    assert _state(crm) == before
    with crm.unit() as uow:  # one customer changed by plain SQL (its sealed phone gone): validated again
        uow.conn.execute(update(customers).where(customers.c.external_id == "C3").values(phone=None))
    for shortcut in (True, False):
        monkeypatch.setattr(fingerprint, "SHORTCUT", shortcut)
        count_checks[0] = 0
        report = import_file(crm, "customers", path, ImportOptions(batch_size=7, dry_run=True))
        assert (report.updated, report.unchanged) == (1, 29)
        assert count_checks[0] == (1 if shortcut and screened else 30)


def test_the_digest_is_no_field_and_is_not_exported(crm_factory: Any, tmp_path: Path) -> None:
    crm = crm_factory()
    import_file(crm, "customers", _write(tmp_path / "c.csv", [_rows(1)[0].rsplit(",", 1)[0] + ","]),
                ImportOptions())
    customer = crm.customers.list()[0]
    assert not hasattr(customer, fingerprint.COLUMN)
    with crm.unit() as uow:
        digest = uow.conn.execute(text(f"SELECT {fingerprint.COLUMN} FROM customers")).scalar_one()
    assert (len(digest) == 32) if _screened(crm) else digest is None
    from crmcore.io.exporter import export_entities
    out = tmp_path / "out.csv"
    export_entities(crm, "customers", out)
    assert fingerprint.COLUMN not in out.read_text(encoding="utf-8")


# -- the digest of the cells alone, and the trigger that forgets it (0029_import_digest_trigger) --

def _digests(crm: CRM) -> dict[str, str | None]:
    with crm.unit() as uow:
        return {r[0]: r[1] for r in uow.conn.execute(select(customers.c.external_id, customers.c[fingerprint.COLUMN]))}


#: A value per column type, for an UPDATE that changes the column (not the key, not the digest).
_CHANGED = {"name": "'renamed'", "birthday": "'1980-01-01'"}


@pytest.mark.parametrize("column", [c.name for c in customers.c
                                    if c.name not in ("id", fingerprint.COLUMN) and c.computed is None])
def test_the_database_forgets_a_digest_when_any_column_is_updated(crm_factory: Any, tmp_path: Path,
                                                                    column: str) -> None:
    """Plain SQL setting any column, even to its own value, forgets the row's digest (and only that
    row's); an UPDATE that writes a digest keeps it.  MariaDB keeps no digests at all."""
    crm = crm_factory(config={"phone_region": "CN"})
    import_file(crm, "customers", _write(tmp_path / "c.csv", [r.rsplit(",", 1)[0] + "," for r in _rows(3)]),
                ImportOptions())
    before = _digests(crm)
    if not _screened(crm):
        assert set(before.values()) == {None}
        return
    assert None not in before.values()
    with crm.unit() as uow:
        uow.conn.execute(text(f"UPDATE customers SET {column} = {_CHANGED.get(column, column)} "
                              "WHERE external_id = 'C0001'"))
    assert _digests(crm) == {**before, "C0001": None}
    with crm.unit() as uow:  # a digest written with the change is kept
        uow.conn.execute(text(f"UPDATE customers SET {column} = {column}, import_digest = :d "
                              "WHERE external_id = 'C0002'"), {"d": "f" * 32})
    assert _digests(crm) == {**before, "C0001": None, "C0002": "f" * 32}


def test_a_service_update_forgets_the_digest(crm_factory: Any, tmp_path: Path) -> None:
    crm = crm_factory(config={"phone_region": "CN"})
    import_file(crm, "customers", _write(tmp_path / "c.csv", [r.rsplit(",", 1)[0] + "," for r in _rows(2)]),
                ImportOptions())
    crm.customers.update(_id(crm, "C0000"), city="Paris")
    digests = _digests(crm)
    assert digests["C0000"] is None
    assert (digests["C0001"] is not None) == _screened(crm)


def test_without_the_trigger_no_digest_is_written_or_trusted(crm_factory: Any, tmp_path: Path,
                                                             count_checks: list[int]) -> None:
    """A database whose trigger is gone (a later revision rebuilt the table, say): imports write no
    digest and trust none, and a plain-SQL change is still noticed."""
    crm = crm_factory(config={"phone_region": "CN"})
    if not _screened(crm):
        return  # MariaDB: no trigger and no digest in any case (test_the_database_forgets_...)
    file = _write(tmp_path / "c.csv", [r.rsplit(",", 1)[0] + "," for r in _rows(10)])
    import_file(crm, "customers", file, ImportOptions(batch_size=4))
    with crm.unit() as uow:
        if uow.dialect == "sqlite":
            uow.conn.execute(text(f"DROP TRIGGER {fingerprint.TRIGGER}"))
        else:
            uow.conn.execute(text(f"DROP TRIGGER {fingerprint.TRIGGER} ON customers"))
        uow.conn.execute(update(customers).where(customers.c.external_id == "C0003").values(name="Out of band"))
    count_checks[0] = 0
    report = import_file(crm, "customers", file, ImportOptions(batch_size=4))
    assert (report.updated, report.unchanged, count_checks[0]) == (1, 9, 10)
    fresh = _write(tmp_path / "d.csv", [r.rsplit(",", 1)[0] + "," for r in _rows(13)[10:]])
    assert import_file(crm, "customers", fresh, ImportOptions()).inserted == 3
    assert [_digests(crm)[k] for k in ("C0010", "C0011", "C0012")] == [None] * 3


def test_an_owner_given_by_address_is_resolved_again(crm_db_url: str, tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """A row whose owner cell is a user's address stores the login: the row keeps no digest, so a
    re-import after the address moved to another user decides as without the shortcut."""
    def run(shortcut: bool) -> tuple[Any, ...]:
        monkeypatch.setattr(fingerprint, "SHORTCUT", shortcut)
        url = _fresh_url(crm_db_url, tmp_path, f"owner-{shortcut}")
        crm = _open(url)
        try:
            crm.users.add("ann", email="ann@example.com")
            crm.users.add("bob")
            file = _write(tmp_path / "o.csv", _rows(12))
            assert import_file(crm, "customers", file, ImportOptions(batch_size=5)).inserted == 12
            with crm.unit() as uow:  # the address is bob's now
                uow.conn.execute(update(users).where(users.c.login == "ann").values(email="ann@elsewhere.example"))
                uow.conn.execute(update(users).where(users.c.login == "bob").values(email="ann@example.com"))
            report = import_file(crm, "customers", file, ImportOptions(batch_size=5, on_error="skip"))
            return _outcome(report), _state(crm)
        finally:
            crm.close()

    without = run(False)
    assert without[0][1] == 3  # the rows owned by address now go to bob
    assert run(True) == without


def test_digests_of_an_older_revision_are_forgotten(crm_sqlite_url: str, tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch,
                                                    count_checks: list[int]) -> None:
    """A database imported before revision 0029 (digests of the older formula, no trigger, a row
    changed in plain SQL since): upgraded, its re-import validates every row once and decides as
    without the shortcut; the one after validates none."""
    from alembic import command
    from crmcore import migrations
    from crmcore.store.engine import make_engine

    def imported(url: str) -> None:
        crm = _open(url)
        try:
            crm.users.add("ann", email="ann@example.com")
            crm.users.add("bob")
            import_file(crm, "customers", _write(tmp_path / "a.csv", _rows(20)), ImportOptions(batch_size=6))
        finally:
            crm.close()
        engine = make_engine(url)
        try:
            config = migrations.alembic_config(engine, migrations.HERE / "versions", "alembic_version")
            command.downgrade(config, "0028_import_digest")
            with engine.begin() as conn:  # as an import of 0028 left them; then a change it noticed by its formula
                conn.execute(update(customers).values({fingerprint.COLUMN: "0" * 32}))
                conn.execute(update(customers).where(customers.c.external_id == "C0003").values(name="Edited"))
                assert conn.execute(select(customers.c[fingerprint.COLUMN]).where(
                    customers.c.external_id == "C0003")).scalar_one() == "0" * 32  # no trigger at 0028
        finally:
            engine.dispose()

    outcomes = []
    for shortcut in (False, True):
        monkeypatch.setattr(fingerprint, "SHORTCUT", shortcut)
        url = crm_sqlite_url.replace("crm.db", f"old-{shortcut}.db")
        imported(url)
        crm = _open(url)  # migrates to the head
        try:
            assert set(_digests(crm).values()) == {None}
            count_checks[0] = 0
            report = import_file(crm, "customers", tmp_path / "a.csv", ImportOptions(batch_size=6))
            assert (report.updated, report.unchanged, count_checks[0]) == (1, 19, 20)
            outcomes.append((_outcome(report), _state(crm)))
            count_checks[0] = 0
            again = import_file(crm, "customers", tmp_path / "a.csv", ImportOptions(batch_size=6))
            assert again.unchanged == 20
            # Rows whose owner cell is an address keep no digest (validated each time), nor does the
            # row the last import updated (the trigger forgot it; this import finds it equal).
            assert count_checks[0] == (20 if not shortcut else 5 + 1)
        finally:
            crm.close()
    assert outcomes[0] == outcomes[1]


_UPDATABLE = ["name", "city", "tags", "owner", "birthday", "consent_email", "archived_at", "attributes"]


@given(st.lists(st.tuples(st.sets(st.sampled_from(range(4)), min_size=1),  # the rows an UPDATE touches
                          st.sets(st.sampled_from(_UPDATABLE)),            # the columns it sets to themselves
                          st.sampled_from(["none", "same", "new"])),       # and what it does to the digest
                min_size=1, max_size=6))
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_the_trigger_follows_its_rule_for_any_updates(crm_sqlite_url: str, tmp_path: Path,
                                                      updates: list[tuple[set[int], set[str], str]]) -> None:
    """Fuzzed UPDATE statements on SQLite against the rule: a row an UPDATE touches keeps a digest
    only if the statement writes one that differs from the row's (a digest written again with
    the same value counts as none: nothing tells them apart); untouched rows keep theirs."""
    url = crm_sqlite_url.replace("crm.db", f"fuzz-{len(list(tmp_path.iterdir()))}.db")
    crm = _open(url)
    try:
        import_file(crm, "customers", _write(tmp_path / f"f{len(list(tmp_path.iterdir()))}.csv",
                                             [r.rsplit(",", 1)[0] + "," for r in _rows(4)]), ImportOptions())
        expected = {f"C{i:04d}": d for i, d in enumerate(_digests(crm)[f"C{i:04d}"] for i in range(4))}
        assert None not in expected.values()
        for step, (rows, columns, digest) in enumerate(updates):
            keys = [f"C{i:04d}" for i in sorted(rows)]
            sets = [f"{c} = {c}" for c in sorted(columns)]
            new = f"{step:032x}"
            if digest == "new":
                sets.append(f"import_digest = '{new}'")
            elif digest == "same":
                sets.append("import_digest = import_digest")
            if not sets:
                sets = ["name = name"]
            with crm.unit() as uow:
                uow.conn.execute(text(f"UPDATE customers SET {', '.join(sets)} WHERE external_id IN "
                                      f"({', '.join(repr(k) for k in keys)})"))
            for key in keys:
                expected[key] = new if digest == "new" and expected[key] != new else None
        assert _digests(crm) == expected
    finally:
        crm.close()


_CELL = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=12)


@given(st.lists(st.tuples(_CELL, _CELL, _CELL, st.sampled_from(["true", "false", "", "yes", " TRUE "]),
                          st.sampled_from(["1990-01-02", "", " 1990-01-02 ", "1990/01/02"])),
                min_size=1, max_size=6))
@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_an_insert_stores_what_its_digest_says(crm_db_url: str, tmp_path: Path,
                                               cells: list[tuple[str, str, str, str, str]]) -> None:
    """A digest written with an insert claims that the stored row is what the cells bind to: with
    fuzzed cells (any text, odd booleans and dates), a re-import right after the first import
    decides and stores as without the shortcut."""
    import csv

    runs = len(list(tmp_path.iterdir()))
    path = tmp_path / f"fuzz-{runs}.csv"
    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["external_id", "name", "city", "tags", "consent_email", "birthday"])
        for i, (name, city, tags, consent, birthday) in enumerate(cells):
            writer.writerow([f"F{i}", name or "x", city, tags, consent, birthday])
    outcomes = []
    for shortcut in (True, False):
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(fingerprint, "SHORTCUT", shortcut)
            crm = _open(_fresh_url(crm_db_url, tmp_path, f"fuzz-{runs}-{shortcut}"))
            try:
                import_file(crm, "customers", path, ImportOptions(on_error="skip"))
                report = import_file(crm, "customers", path, ImportOptions(on_error="skip"))
                outcomes.append((_outcome(report), _state(crm)))
            finally:
                crm.close()
    assert outcomes[0] == outcomes[1]


def test_a_change_committed_during_the_comparison_keeps_its_row_out_of_the_shortcut(
        crm_factory: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Another session changes a customer right after the import compared it equal to its row and
    before the import wrote the row's digest (PostgreSQL runs READ COMMITTED): no digest is written
    for the changed row, and the next import puts the file's values back, as without the shortcut.
    (SQLite: the import's unit holds the write lock, so no other writer gets in between.)"""
    crm = crm_factory(config={"phone_region": "CN"})
    if not _screened(crm) or crm.engine.dialect.name == "sqlite":
        return  # MariaDB keeps no digests
    file = _write(tmp_path / "c.csv", [r.rsplit(",", 1)[0] + "," for r in _rows(20)])
    import_file(crm, "customers", file, ImportOptions(workers=0))
    with crm.engine.begin() as conn:  # changed and changed back by another path: the digest is forgotten
        conn.execute(update(customers).where(customers.c.external_id == "C0005").values(name="Other"))
        conn.execute(update(customers).where(customers.c.external_id == "C0005").values(name="Name 5"))
    compared = importer._where_in
    done = []

    def changed_after_the_read(uow: Any, columns: list[Any], *args: Any, **kwargs: Any) -> Any:
        rows = list(compared(uow, columns, *args, **kwargs))
        if not done and len(columns) > len(fingerprint.STORED) + 1:  # _drop_equal's read of the compared columns
            done.append(True)
            with crm.engine.begin() as other:  # committed now, by another connection
                other.execute(update(customers).where(customers.c.external_id == "C0005").values(name="Other"))
        return iter(rows)

    monkeypatch.setattr(importer, "_where_in", changed_after_the_read)
    report = import_file(crm, "customers", file, ImportOptions(workers=0))
    monkeypatch.setattr(importer, "_where_in", compared)
    assert done and (report.unchanged, report.updated) == (20, 0)
    report = import_file(crm, "customers", file, ImportOptions(workers=0))
    assert (report.unchanged, report.updated) == (19, 1)
    with crm.engine.connect() as conn:
        assert conn.execute(select(customers.c.name).where(customers.c.external_id == "C0005")).scalar() == "Name 5"
