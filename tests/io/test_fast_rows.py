"""The fast path of plain customer rows (crmcore.io.fastrows) gives the general path's row, or nothing.

``RowChecker.check`` takes a plain CSV customer row through ``FastCustomerRows``
when it can; the general path (``given`` + ``check_given``: cattrs, the
validator, ``attrs.evolve``, the storability checks, then the binder on the
SQLite bulk path or ``Repository.to_row`` elsewhere) is the reference.  For every row the fast path answers, the general path must accept
the row and give exactly the same bound values (types included); every row it
declines goes the general way, so rejections keep their messages.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from functools import cache

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from sqlalchemy import create_engine

from crmcore import Config
from crmcore.domain.validation import EntityValidator, index_custom_fields
from crmcore.domain.customfields import CustomField
from crmcore.io.fastrows import FAST_FIELDS, FastCustomerRows
from crmcore.io.mapping import ColumnMapping
from crmcore.io.rows import Binder, RowChecker
from crmcore.store.sealed import MARK, Cipher, new_key
from crmcore.store.tables import customers
from crmcore.testing import FIXED_NOW

SETTINGS = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
COLUMNS = ["external_id", "kind", "name", "email", "phone", "country", "region", "city", "industry", "source",
           "owner", "stage", "birthday", "consent_email", "consent_sms", "consent_marketing", "tags", "id"]
TODAY = FIXED_NOW.date()


@cache
def checker(columns: tuple[str, ...], region: str | None = None, bound: bool = True) -> RowChecker:
    """A checker of ``columns``; ``bound``: with the SQLite bulk path's binder (else rows are to_row's)."""
    config = Config(phone_region=region)
    validator = EntityValidator(config, index_custom_fields(config.custom_fields), lambda: FIXED_NOW)
    made = RowChecker("customer", ColumnMapping("customer", {}, {}, False, {}), list(columns), validator,
                      FIXED_NOW, "external_id")
    if bound:
        made.binder = Binder(customers, create_engine("sqlite://").dialect)
    return made


def general(check: RowChecker, values: list[object]) -> object:
    """What check() gave before the fast path: the general path's (row, issues, references)."""
    found = check.given(values)
    if found.issues:
        return None, found.issues, found.references
    return check.check_given(found)


def both(columns: tuple[str, ...], values: list[object], region: str | None = None,
         bound: bool = True) -> tuple[object, object]:
    check = checker(columns, region, bound)
    fast = FastCustomerRows.for_checker(check)
    assert fast is not None
    return fast(values), general(check, values)


def assert_agrees(columns: tuple[str, ...], values: list[object], region: str | None = None,
                  bound: bool = True) -> object:
    fast, reference = both(columns, values, region, bound)
    if fast is not None:
        row, issues, references = reference  # type: ignore[misc]
        assert issues is None, (values, issues)
        assert fast == row and [type(v) for v in fast] == [type(v) for v in row]
        assert references == {}
    # And check() itself, whichever way it went, gives the general path's answer.
    assert checker(columns, region, bound).check(values) == reference
    return fast


ORDINARY = ["B00000001", "person", "Zhang Wei", "Zhang.Wei@Example.COM", "+86 138 0013 8000", "cn", "华东",
            "上海", "retail", "web", "alice", "customer", "1990-05-12", "true", "false", "yes", "vip,newsletter", "7"]


def test_an_ordinary_row_takes_the_fast_path_to_the_same_row():
    fast = assert_agrees(tuple(COLUMNS), list(ORDINARY))
    assert fast is not None
    assert fast[:5] == ("person", "Zhang Wei", "Zhang.Wei@example.com", "+8613800138000", "CN")
    unbound = assert_agrees(tuple(COLUMNS), list(ORDINARY), bound=False)
    assert unbound is not None and unbound[:6] == (None, "person", "Zhang Wei", "Zhang.Wei@example.com",
                                                   "+8613800138000", "CN")


TRICKY = {
    "name": ["", "   ", "\u3000", "\u200b", "a" * 200, "a" * 201, "Li\nWei", "Li\x00", "Li\ud800", " padded "],
    "email": ["info@example.com", "a..b@example.com", "用户@例子.中国", "x@localhost", " A@B.CO ",
              "$e1$x@example.com", "a" * 250 + "@example.com", "no-at-sign"],
    "phone": ["138 0013 8000", "+44 020 7946 0958", "+39 06 1234 5678", "+86 10 1234 5678 转 123",
              "+1 415 555 0132 ext 5", "+999 123456", "０１３８ ００１３ ８０００", "+12"],
    "country": ["cn", "CHN", "chn", "XX", "C N", "德国"],
    "kind": ["PERSON", " Company ", "people", "ｐｅｒｓｏｎ"],
    "stage": ["Lead", "FORMER", "won", "lead\t"],
    "birthday": ["1990-01-01", " 1990-01-01", "1990/1/2", "2024年1月2日", "45292", "1990-02-30", "1990-1-2",
                 (TODAY + timedelta(days=1)).isoformat(), TODAY.isoformat(), "19900101", "1990-W01-1",
                 "１９９０-０１-０１", "1990-01-01 12:00"],
    "consent_email": ["YES", "no", "1", "0", "2", " On ", "maybe"],
    "tags": ['["a", "b"]', " [x", "a,,b", ",", "a, b ,c", "[1, 2]", "vip\x85"],
    "city": ["x" * 100, "x" * 101, "Shang\thai"],
    "external_id": ["x" * 100, "x" * 101, " E1 "],
}


@pytest.mark.parametrize(("region", "bound"), [(None, True), ("CN", True), ("CN", False)])
@pytest.mark.parametrize(("field", "value"), [(f, v) for f, values in TRICKY.items() for v in values])
def test_tricky_cells_agree(field: str, value: str, region: str | None, bound: bool):
    values = list(ORDINARY)
    values[COLUMNS.index(field)] = value
    assert_agrees(tuple(COLUMNS), values, region, bound)


def cells(field: str) -> st.SearchStrategy[str]:
    tricky = st.sampled_from(TRICKY.get(field, [""]))
    noise = st.text(max_size=12)
    if field == "email":
        good = st.emails().map(str)
    elif field == "phone":
        good = st.builds(lambda cc, digits, sep: f"+{cc}{sep}{digits}", st.sampled_from(["86 ", "1 ", "44", "49 "]),
                         st.text("0123456789", min_size=6, max_size=11), st.sampled_from(["", " ", "-"]))
    elif field == "birthday":
        good = st.dates().map(lambda d: d.isoformat() if d.year >= 1000 else d.strftime("%Y/%m/%d"))
    elif field in ("consent_email", "consent_sms", "consent_marketing"):
        good = st.sampled_from(["true", "false", "y", "N", "off", ""])
    elif field in ("kind", "stage"):
        good = st.sampled_from(["person", "company", "lead", "prospect", "customer", "former", ""])
    elif field == "country":
        good = st.sampled_from(["CN", "us", "DEU", "gb", ""])
    else:
        good = st.text(max_size=20)
    return st.one_of(good, tricky, noise)


@st.composite
def rows(draw: st.DrawFn) -> tuple[tuple[str, ...], list[object], str | None, bool]:
    columns = tuple(draw(st.lists(st.sampled_from(COLUMNS), min_size=1, max_size=len(COLUMNS), unique=True)))
    values: list[object] = [draw(cells(column)) for column in columns]
    return columns, values, draw(st.sampled_from([None, "CN"])), draw(st.booleans())


@SETTINGS
@given(rows())
@example((tuple(COLUMNS), list(ORDINARY), None, True))
@example((tuple(COLUMNS), list(ORDINARY), None, False))
@example((("name", "email"), ["Li", None], None, True))  # an XLSX blank
@example((("name", "birthday"), ["Li", 45292], None, True))  # an XLSX number: the general path types it
@example((("name", "id", "kind"), ["Li", 45292, None], None, True))  # an XLSX id: dropped, as the general path does
@example((("name", "kind", "tags"), ["Li", 1, True], None, False))  # numbers in remembered columns (1 == True)
def test_any_row_agrees(case: tuple[tuple[str, ...], list[object], str | None, bool]):
    columns, values, region, bound = case
    assert_agrees(columns, values, region, bound)


def test_the_fast_path_applies_only_to_plain_customer_fields():
    assert FastCustomerRows.for_checker(checker(tuple(COLUMNS))) is not None
    plain = checker(("name", "created_at"))
    assert FastCustomerRows.for_checker(plain) is None  # a time stamp column: the general path
    config = Config()
    with_fields = EntityValidator(config, index_custom_fields([CustomField("customer", "tier", "str")]),
                                  lambda: FIXED_NOW)
    declared = RowChecker("customer", ColumnMapping("customer", {}, {}, False, {}), ["name"], with_fields,
                          FIXED_NOW, "external_id")
    declared.binder = checker(("name",)).binder
    assert FastCustomerRows.for_checker(declared) is None  # custom fields are checked by the general path
    mapped = RowChecker("customer", ColumnMapping("customer", {}, {}, False, {"stage": {"潜客": "lead"}}),
                        ["name", "stage"], checker(("name",)).validator, FIXED_NOW, "external_id")
    mapped.binder = checker(("name",)).binder
    assert FastCustomerRows.for_checker(mapped) is None  # a mapping file's value table
    by_id = RowChecker("customer", ColumnMapping("customer", {}, {}, False, {}), ["name"],
                       checker(("name",)).validator, FIXED_NOW, "id")
    assert FastCustomerRows.for_checker(by_id) is None  # keyed by id: the file's ids are kept
    assert FastCustomerRows.for_checker(checker(("name",), bound=False)) is not None  # to_row's rows
    assert FAST_FIELDS >= set(COLUMNS)


@pytest.mark.parametrize("fields", [["email", "phone", "birthday"], ["email", "custom.tier"]])
def test_sealed_columns_are_sealed_at_every_row_on_the_fast_path(fields: list[str]):
    """With encryption on, the fast path remembers no sealed value (each sealing has its own
    nonce, and the door check's sealings are handed over): each row's sealed values are new and
    open to the general path's values; every other bound value is the general path's."""
    dialect = create_engine("sqlite://").dialect
    dialect.crm_cipher = cipher = Cipher([new_key()], fields)  # as CRM.open attaches it
    check = RowChecker("customer", ColumnMapping("customer", {}, {}, False, {}), COLUMNS,
                       checker(tuple(COLUMNS)).validator, FIXED_NOW, "external_id")
    check.binder = binder = Binder(customers, dialect, remember=("email", "phone"))
    fast = FastCustomerRows.for_checker(check)
    assert fast is not None
    first, second = fast(list(ORDINARY)), fast(list(ORDINARY))
    reference = general(check, list(ORDINARY))[0]
    assert first is not None and second is not None and reference is not None
    for column, one, two, expected in zip(binder.columns, first, second, reference):  # type: ignore[call-overload]
        if column in fields:
            assert one.startswith(MARK) and one != two and cipher.open(column, one) == cipher.open(column, expected)
        else:
            assert one == two == expected, column
    assert binder.pure == frozenset(binder.columns) - set(fields) - ({"attributes"} if cipher.custom else set())
    assert len(cipher.hand_over(("email", "phone"))["email"]) == 2 * 3  # (stored, value) of each sealing


def test_time_stamps_are_bound_once_per_import_on_postgresql():
    """PostgreSQL binds time stamps as naive UTC datetimes (not text, as SQLite does): a time stamp
    no cell gives ("now") is bound once for the import, the same immutable object in every row,
    and the rows still equal the general path's, types included."""
    config = Config()
    validator = EntityValidator(config, index_custom_fields(config.custom_fields), lambda: FIXED_NOW)
    columns = [c for c in COLUMNS if c != "id"]
    check = RowChecker("customer", ColumnMapping("customer", {}, {}, False, {}), columns, validator, FIXED_NOW,
                       "external_id")
    check.binder = Binder(customers, create_engine("postgresql+psycopg://").dialect)
    fast = FastCustomerRows.for_checker(check)
    assert fast is not None
    rows = []
    for external_id in ("P1", "P2"):
        values = [external_id, *ORDINARY[1:len(columns)]]
        row = fast(values)
        reference, issues, _ = general(check, values)
        assert row is not None and issues is None and row == reference and [type(v) for v in row] == [type(v) for v in reference]
        rows.append(row)
    stamps = [check.binder.columns.index(name) for name in ("created_at", "updated_at")]
    assert all(type(rows[0][i]) is datetime and rows[0][i].tzinfo is None for i in stamps)
    assert all(rows[0][i] is rows[1][i] for i in stamps)
