"""The point-read paths (issue 21): statements built once, rows -> entities without cattrs' set-up,
the access plugin's role asked once per unit of work, visibility rewrites reused.

Each fast path is compared with the general one it stands in for (the converter, a filtered
listing), on every database, and the security rules are checked across units of work: a role
change and a different actor count at once.
"""

from __future__ import annotations

from decimal import Decimal

import pytest
from sqlalchemy import event, select

from crmcore import NotAuthorized, NotFound, ValidationError
from crmcore.domain.convert import DERIVED_COLUMNS, converter, from_row
from crmcore.domain.entities import Contact, Customer, Deal, Interaction
from crmcore.store import tables
from crmcore.store.pointread import row_function


@pytest.fixture
def crm(crm_factory):
    crm = crm_factory(plugins=["access"], config={"default_currency": "CNY"})
    crm.users.add("boss", role="admin")
    crm.users.add("alice", role="sales-rep")
    crm.users.add("bob", role="sales-rep")
    return crm


def _fill(crm):
    full = crm.customers.add(name="张伟", kind="company", email="zhang@example.com", phone="+8613291417776",
                             country="CN", region="华东", city="上海", industry="retail", source="web",
                             owner="alice", stage="prospect", birthday="1990-02-03", consent_marketing=True,
                             tags=["vip", "批发"], attributes={"会员": "金", "n": 3}, external_id="EXT-1")
    bare = crm.customers.add(name="Bob's", owner="bob")
    crm.contacts.add(customer_id=full.id, name="李", title="CEO", email="li@example.com", is_primary=True)
    crm.interactions.add(customer_id=full.id, kind="call", occurred_at="2026-01-02T03:04:05Z", subject="你好")
    crm.deals.add(customer_id=full.id, title="大单", amount=Decimal("1234.5"), stage="proposal", owner="alice",
                  expected_close="2026-09-30", attributes={"k": [1, 2]}, external_id="D-1")
    crm.deals.add(customer_id=bare.id, title="won", amount=Decimal("12000"), currency="JPY", stage="won")
    crm.customers.delete(bare.id)  # an archived one: archived_at set
    return full, bare


def test_rows_become_the_same_entities_as_through_the_converter(crm, monkeypatch):
    _fill(crm)
    kinds = ((tables.customers, Customer), (tables.contacts, Contact), (tables.interactions, Interaction),
             (tables.deals, Deal))
    seen = 0
    with crm.engine.connect() as conn:
        for table, cls in kinds:
            for row in conn.execute(select(table)):
                # The database's own columns (customers.email_key, generated; import_digest) are no entity field.
                stored = {k: v for k, v in row._mapping.items() if k not in DERIVED_COLUMNS}
                expected = converter.structure(stored, cls)
                with monkeypatch.context() as patch:  # stored rows take the fast path, not the converter
                    patch.setattr("crmcore.domain.convert.converter", None)
                    assert from_row(row._mapping, cls) == expected
                seen += 1
    assert seen == 6


def test_a_row_the_fast_path_does_not_plan_for_goes_to_the_converter():
    row = {f.name: None for f in Customer.__attrs_attrs__} | {
        "name": "x", "kind": "PERSON", "stage": " Lead ", "consent_email": 1, "consent_sms": "yes",
        "consent_marketing": False, "tags": "a, b", "attributes": None}
    assert from_row(row, Customer) == converter.structure(dict(row), Customer)
    assert from_row(row, Customer).tags == ("a", "b")


def test_find_by_one_column_matches_the_filtered_listing_and_checks_values(crm):
    full, bare = _fill(crm)
    assert crm.customers.find(email="zhang@example.com") == crm.customers.list({"email": "zhang@example.com"})[0]
    assert crm.customers.find(external_id="EXT-1").id == full.id
    assert crm.customers.find(external_id="nope") is None
    assert crm.customers.find(id=str(full.id)).id == full.id  # text coerced as the filters do
    assert crm.deals.find(external_id="D-1").amount == Decimal("1234.50")
    with pytest.raises(ValidationError, match="id"):
        crm.customers.find(id="abc")
    with pytest.raises(ValidationError, match="unknown filter field"):
        crm.customers.find(nonsense="x")
    assert crm.customers.find(email="zhang@example.com", external_id="EXT-1").id == full.id  # the general path


def _users_queries(crm):
    """The statements reading ``users``: through SQLAlchemy, and those a point-read unit runs on the
    driver (crmcore.store.pointread, which SQLAlchemy's events do not see)."""
    seen = []

    def count(conn, cursor, statement, parameters, context, executemany):
        if "FROM users" in statement:
            seen.append(statement)
    event.listen(crm.engine, "before_cursor_execute", count)
    # (first_row: every statement the reader runs, those of first() and of a repository's entity)
    reads, first_row = crm.point_reads, crm.point_reads.first_row

    def counted(connection, statement, params, login=None):
        if "FROM users" in reads.shape(statement).sql:
            seen.append(reads.shape(statement).sql)
        return first_row(connection, statement, params, login)
    reads.first_row = counted
    return seen


def test_a_point_read_asks_the_role_once_and_a_role_change_counts_at_once(crm):
    full, bare = _fill(crm)
    crm.customers.restore(bare.id)
    seen = _users_queries(crm)
    with crm.acting_as("bob"):
        assert crm.customers.get(bare.id).name == "Bob's"
        assert len(seen) == 1  # authorize and both visibility questions share one look-up
        with pytest.raises(NotFound):
            crm.customers.get(full.id)  # alice's customer
    crm.users.set_role("bob", "admin")
    with crm.acting_as("bob"):
        assert crm.customers.get(full.id).id == full.id  # the next unit sees the new role
    crm.users.deactivate("bob")
    with crm.acting_as("bob"):
        with pytest.raises(NotAuthorized):  # and a deactivated user may do nothing from the next unit on
            crm.customers.get(bare.id)


def test_reused_rewrites_keep_each_actor_to_their_own_records(crm):
    full, bare = _fill(crm)
    crm.customers.restore(bare.id)
    for _ in range(3):  # alternate actors on the same cached statements
        with crm.acting_as("alice"):
            assert crm.customers.get(full.id).id == full.id
            assert crm.customers.find(email="zhang@example.com").id == full.id
            with pytest.raises(NotFound):
                crm.customers.get(bare.id)
        with crm.acting_as("bob"):
            assert crm.customers.get(bare.id).id == bare.id
            assert crm.customers.find(email="zhang@example.com") is None
            with pytest.raises(NotFound):
                crm.customers.get(full.id)
        with crm.acting_as("boss"):
            assert {crm.customers.get(full.id).id, crm.customers.get(bare.id).id} == {full.id, bare.id}


def test_a_customers_visibility_is_kept_per_condition_with_its_rewrites(crm):
    """``Visibility.of_customers`` hands out one object per condition object (the access plugin's,
    one per scope and login), so a rep's rewritten statement is found on it; another login's
    condition gets its own object and its own rewrite."""
    from crmcore.application.visibility import Visibility, rewrite
    from crmcore.store.repositories import _by_column

    statement = _by_column(tables.customers, "id")
    with crm.acting_as("alice"):
        first, again = (Visibility.of_customers(crm, "alice") for _ in range(2))
        theirs = Visibility.of_customers(crm, "bob")
        assert Visibility.of_customers(crm, "boss") is None  # an admin: nothing to rewrite
    assert first is again and first is not theirs and first.customer is not theirs.customer
    mine = rewrite(first, statement)
    assert rewrite(again, statement) is mine and first._rewritten[statement] is mine
    assert rewrite(theirs, statement) is not mine
    assert {b.value for b in mine.compile().binds.values() if b.value is not None} == {"alice"}


def test_a_plain_read_leaves_no_autocommit_behind(crm):
    """A point read runs without a transaction (SQLite, PostgreSQL); the pooled connection it used must
    be transactional again for the next unit: a failed unit still rolls everything back."""
    full, _ = _fill(crm)
    for _ in range(3):
        crm.customers.get(full.id)
        crm.customers.find(external_id="EXT-1")
        with pytest.raises(RuntimeError):
            with crm.unit() as uow:
                uow.conn.execute(tables.customers.update().where(tables.customers.c.id == full.id)
                                 .values(name="changed"))
                raise RuntimeError("roll back")
        assert crm.customers.get(full.id).name == "张伟"


def test_sqlite_times_read_as_aware_utc_whatever_their_stored_form():
    """UTCDateTime's SQLite processor appends "+00:00" to naive text (instead of replace(tzinfo=)):
    every stored form reads as the plain formula reads it, always in timezone.utc."""
    from datetime import datetime, timezone

    from sqlalchemy.dialects import sqlite

    from crmcore.store.types import UTCDateTime

    def expected(text):  # (the formula the processor stands in for)
        parsed = datetime.fromisoformat(text)
        return parsed.replace(tzinfo=timezone.utc) if parsed.tzinfo is None else parsed.astimezone(timezone.utc)

    process = UTCDateTime().dialect_impl(sqlite.dialect()).result_processor(sqlite.dialect(), None)
    # The point reader's row function parses the common case inline (the processor's crm_inline).
    process_row = row_function(2, ((1, process),))
    for text in ("2026-12-06", "2026-12-06 00:00:00", "2026-12-06 12:54:48.824921", "2026-12-06T12:54:48",
                 "2026-12-06 12:54", "2026-12-06 12", "2026-12-06 12:54:48.8", "2026-12-06 12:54:48+05:00",
                 "2026-12-06T12:54:48-03:30", "2026-12-06 12:54:48Z"):
        got = process(text)
        assert got == expected(text) and got.tzinfo is timezone.utc, text
        inline = process_row(("x", text))
        assert inline[0] == "x" and inline[1] == got and inline[1].tzinfo is timezone.utc, text
    assert process_row(("x", None)) == ("x", None)
    with pytest.raises(ValueError):  # (not a time: the processor's own error, inline or not)
        process_row(("x", "soon"))


def test_sealed_columns_result_processors_match_their_types_values(crm_factory, monkeypatch):
    """Sealed, SealedDate and SealedAttributes read in one function per value: the same values as
    their process_result_value after the text's own processing, sealed or not."""
    from crmcore.store.sealed import new_key

    monkeypatch.setenv("POINTREAD_TYPES_KEYS", new_key())
    sealed = crm_factory(plugins=[], config={
        "custom_fields": [{"entity": "customer", "name": "tier", "type": "str"},
                          {"entity": "customer", "name": "n", "type": "int"}],
        "privacy": {"encryption": {"fields": ["email", "birthday", "custom.tier"], "key_env": "POINTREAD_TYPES_KEYS"}}})
    sealed.customers.add(name="s", email="s@example.com", birthday="1990-02-03", attributes={"tier": "金", "n": 1})
    sealed.customers.add(name="p", attributes={})
    dialect = sealed.engine.dialect
    columns = [tables.customers.c[name] for name in ("email", "phone", "birthday", "attributes")]
    with sealed.engine.connect() as conn:
        raw = conn.exec_driver_sql("SELECT email, phone, birthday, attributes FROM customers ORDER BY id").all()
        description = conn.exec_driver_sql("SELECT email, phone, birthday, attributes FROM customers").cursor.description
    assert raw[0][0].startswith("$e1$")  # (really sealed on the way in)
    for row in raw:
        for column, value, (_, coltype, *_rest) in zip(columns, row, description):
            impl = column.type.dialect_impl(dialect)
            inner = impl.impl_instance.result_processor(dialect, coltype)
            want = impl.process_result_value(inner(value) if inner is not None and value is not None else value,
                                             dialect)
            process = impl.result_processor(dialect, coltype)
            assert (process(value) if value is not None else None) == want, (column.name, value)
            # ... and so does the point reader's row function (a sealed text's mark checked inline).
            assert row_function(1, ((0, process),))((value,)) == (want,), (column.name, value)
    assert sealed.customers.find(email="s@example.com").attributes == {"tier": "金", "n": 1}


def test_a_point_read_reuses_its_reader_and_leaves_odd_values_to_the_converter(crm):
    """A repository's point read finds the entity reader of its columns by identity (issue 21):
    a stored value of another type than the field's still goes to the converter, on the first
    read and on the later ones, and a deal keeps its currency's minor unit."""
    full, _ = _fill(crm)
    assert crm.point_reads.available  # (the point-read unit's path, not an ordinary unit's)
    with crm.engine.begin() as conn:  # numbers where the field holds strings: the converter's to read
        conn.execute(tables.customers.update().where(tables.customers.c.id == full.id).values(tags=[1, "b"]))
    with crm.engine.connect() as conn:
        row = conn.execute(select(tables.customers).where(tables.customers.c.id == full.id)).one()
    expected = converter.structure({k: v for k, v in row._mapping.items() if k not in DERIVED_COLUMNS}, Customer)
    with crm.acting_as("boss"):
        plain = crm.customers.find(external_id="EXT-1")  # (another statement, the same columns)
        for _ in range(3):
            got = crm.customers.get(full.id)
            assert got == expected and got.tags == ("1", "b")
        assert crm.customers.find(external_id="EXT-1") == plain == expected
        assert crm.deals.find(external_id="D-1").amount == Decimal("1234.50")


def test_the_reader_sets_slots_itself_only_where_init_would_do_nothing_else():
    """The entity reader fills a plain slotted class's slots by their descriptors (issue 21), the
    same entity as its __init__ makes; a class whose __init__ validates, converts or runs a hook
    is still made by its __init__."""
    import attrs

    from crmcore.domain.convert import from_values

    seen = []

    @attrs.frozen
    class Plain:
        name: str
        n: int

    @attrs.frozen
    class Validated:
        name: str
        n: int = attrs.field(validator=attrs.validators.gt(0))

    @attrs.frozen
    class Hooked:
        name: str
        n: int

        def __attrs_post_init__(self):
            seen.append(self.n)

    keys = ("name", "n")
    made = from_values(keys, ("a", 1), Plain)
    assert made == Plain("a", 1) and made.__class__ is Plain
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        made.n = 2  # (still frozen: only the reader sets its slots)
    with pytest.raises(ValueError):
        from_values(keys, ("a", 0), Validated)
    assert from_values(keys, ("a", 5), Hooked) == Hooked("a", 5) and seen == [5, 5]


def test_the_entity_function_makes_what_the_row_function_and_the_reader_make(crm):
    """The point read's one generated function from a driver's row to the entity (issue 21) gives
    the entity that the row function's values and the converter give, with and without the
    point-read unit's confirming column after the entity's, and leaves odd values to the converter."""
    from crmcore.application.point_reads import _ACTIVE, _plan_of
    from crmcore.store.repositories import CustomerRepository, _by_column

    full, bare = _fill(crm)
    statement = _by_column(tables.customers, "id")
    confirming = _plan_of(statement).confirming_form(_ACTIVE)
    reads = crm.point_reads
    connection = reads.checkout()
    try:
        for customer in (full, bare):
            shape, row = reads.first_row(connection, statement, {"value": customer.id})
            read = shape.entity_function(Customer, False)
            expected = from_row(dict(zip(shape.keys, shape.process(row))), Customer)
            assert read is not None and read(row) == expected == crm.customers.get(customer.id)
            assert CustomerRepository().point_entity(shape, row) == expected
            shape, row = reads.first_row(connection, confirming, {"value": customer.id, "crm_login": "alice"})
            assert shape.keys[-1] == "crm_user_same" and row[-1] == "sales-rep"
            tailed = shape.entity_function(Customer, True)
            assert tailed is not None and tailed(row) == expected
            assert CustomerRepository().point_entity(shape, row, True) == expected
            assert shape.entity_function(Customer, False) is None  # (a column that is no field)
        # A value of another type than the field's: LookupError, and the repository converts it.
        odd = list(row)
        tags = shape.keys.index("tags")
        odd[tags] = '[1, "b"]' if isinstance(row[tags], str) else [1, "b"]  # (JSON text, or parsed by the driver)
        with pytest.raises(LookupError):
            tailed(tuple(odd))
        assert CustomerRepository().point_entity(shape, tuple(odd), True).tags == ("1", "b")
    finally:
        reads.checkin(connection)


@pytest.mark.parametrize("crm_db_url", ["sqlite"], indirect=True)
def test_json_text_orjson_refuses_is_read_by_the_engines_loader(crm_factory, crm_db_url):
    """SQLite's JSON text is parsed inline by the point row function (orjson); what orjson refuses
    (NaN, an infinity) goes through the column's processor, the engine's json fallback, as through
    SQLAlchemy.  (Server JSON types refuse NaN: SQLite alone.)"""
    import math

    crm = crm_factory(plugins=[])
    stored = crm.customers.add(name="n", tags=["a"], attributes={"x": 1})
    with crm.engine.begin() as conn:
        conn.exec_driver_sql("UPDATE customers SET attributes = '{\"x\": NaN, \"y\": [1e400]}', "
                             "tags = '[\"b\"]' WHERE id = ?", (stored.id,))
    got = crm.customers.get(stored.id)
    assert got.tags == ("b",) and math.isnan(got.attributes["x"]) and got.attributes["y"] == [math.inf]
    with crm.unit(readonly=True) as uow:  # the same as SQLAlchemy's processors read it
        through = uow.customers.from_row(uow.conn.execute(
            select(tables.customers).where(tables.customers.c.id == stored.id)).one()._mapping)
    assert through.tags == got.tags and math.isnan(through.attributes["x"]) and through.attributes["y"] == [math.inf]
    # The row function offers the fast path for both JSON columns on SQLite.
    shape = next(s for s in crm.point_reads._shapes.values() if "attributes" in s.keys)
    inline = {shape.keys[i]: getattr(p, "crm_inline", None) is not None for i, p in shape.results}
    assert inline["tags"] and inline["attributes"]


def test_numbered_sql_names_each_parameter_once_outside_quoted_text():
    """SQLite's ``?NNN``: a name used several times is one parameter; a ``?`` inside quotes is text;
    marks that do not match the names leave the statement as compiled."""
    from crmcore.store.pointread import numbered_sql

    sql = "SELECT 'it''s ?', \"a?\" FROM t WHERE a = ? AND b = ? AND c = lower(?) LIMIT ?"
    assert numbered_sql(sql, ("x", "y", "x", "limit")) == \
        "SELECT 'it''s ?', \"a?\" FROM t WHERE a = ?1 AND b = ?2 AND c = lower(?1) LIMIT ?3"
    assert numbered_sql(sql, ("x", "y", "x")) is None  # one mark too many
    assert numbered_sql(sql, ("x", "y", "x", "limit", "z")) is None  # one too few
    assert numbered_sql("SELECT 'open ? = ?", ("x",)) is None  # (an unclosed quote)


def test_the_binder_gives_what_merging_the_defaults_gave():
    """The generated binder of a statement hands the driver what the merge of its defaults with the
    caller's values gave (and the processors ran on), positional or named, with the login."""
    from crmcore.store.pointread import LOGIN, binder

    defaults = {LOGIN: None, "value": None, "param_1": 1, "param_2": 0}
    order = (LOGIN, "value", "value", "param_1", "param_2")
    calls = []

    def upper(value):
        calls.append(value)
        return None if value is None else value.upper()

    def merged(params, login=None):
        values = {**defaults, **params}
        if login is not None:
            values[LOGIN] = login
        values["value"] = upper(values["value"])
        return values

    for params, login in (({"value": "a"}, None), ({"value": "a", LOGIN: "bob"}, None), ({"value": "a"}, "eve"),
                          ({"value": None, "param_1": 5}, "eve"), ({}, None)):
        positional = binder(order, defaults, {"value": upper})(params, login)
        values = merged(params, login)
        assert positional == tuple(values[name] for name in order)
        numbered = binder(order, defaults, {"value": upper}, numbered=True)(params, login)
        assert numbered == tuple(values[name] for name in dict.fromkeys(order))
        named = binder(None, defaults, {"value": upper})(params, login)
        assert named == values
    assert None in calls  # a processor runs on None too (as SQLAlchemy's do)


def test_find_by_email_binds_the_address_once_and_finds_what_a_listing_finds(crm):
    """On SQLite the find-by-email statement (its key computed in SQL from the address, four uses)
    names the address once (``?1``); every spelling finds what the filtered listing finds."""
    full, bare = _fill(crm)
    other = crm.customers.add(name="Ann", email="Ann.Lee@Example.com", owner="boss")
    with crm.acting_as("boss"):
        for email in ("zhang@example.com", "ZHANG@example.com", other.email, "Ann.Lee@Example.com",
                      "ann.lee@example.com", "nobody@example.com", "$e1$abc@example.com"):
            listed = crm.customers.list({"email": email}, limit=1)
            found = crm.customers.find(email=email)
            assert found == (listed[0] if listed else None), email
        assert crm.customers.find(email=other.email) == crm.customers.get(other.id)
    sql = [shape.sql for shape in crm.point_reads._shapes.values() if "email_key" in shape.sql]
    assert sql
    if crm.engine.dialect.name == "sqlite":
        assert all("?1" in text and "?2" in text and " ? " not in text for text in sql)
