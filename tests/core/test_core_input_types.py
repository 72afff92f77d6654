"""Types are types (issue 14 point 3): what a field is given must be what it holds.

Objects, lists, booleans, floats and NaN are refused for text fields on every
entry path (the converter, the services, import rows); numbers are written in
ASCII digits without separators; a birthday is not in the future.
"""

from __future__ import annotations

import json
from datetime import date, timedelta
from decimal import Decimal
from pathlib import Path

import pytest

from crmcore import CustomField, Customer, ValidationError
from crmcore.domain.convert import parse_decimal, parse_int, structure
from crmcore.io.importer import ImportOptions, import_file
from crmcore.testing import FIXED_NOW

NOT_TEXT = [{"first": "x"}, ["x"], True, False, float("nan"), 1.5, float("inf")]


@pytest.mark.parametrize("value", NOT_TEXT, ids=repr)
@pytest.mark.parametrize("field", ["name", "email", "city", "external_id"])
def test_structure_refuses_non_text_for_text_fields(field: str, value: object) -> None:
    data = {"name": "x", field: value}
    with pytest.raises(ValidationError) as err:
        structure(data, Customer, "customer")
    assert [f for f, _ in err.value.issues] == [field]
    assert "expected text" in str(err.value)


def test_structure_keeps_integers_and_exact_numbers_as_written() -> None:
    # Spreadsheet cells hold phone numbers and ids as numbers: an integer (or an
    # exact decimal) is its written form, nothing is guessed.
    customer = structure({"name": 12345, "external_id": 678, "city": Decimal("1.50")}, Customer)
    assert (customer.name, customer.external_id, customer.city) == ("12345", "678", "1.50")


def test_str_enums_still_structure_by_value() -> None:
    assert structure({"name": "x", "kind": "Company"}, Customer).kind.value == "company"


@pytest.mark.parametrize("text", ["１２３", "1_000", "١٢٣", "²", " 1 2 "])
def test_integers_are_ascii_digits(text: str) -> None:
    with pytest.raises(ValueError):
        parse_int(text)


@pytest.mark.parametrize("text", ["１２３.5", "1_000", "1_000.50", "١٢٣", "1,2,3.4", "12,34.5"])
def test_decimals_are_ascii_digits_without_underscores(text: str) -> None:
    with pytest.raises(ValueError):
        parse_decimal(text)


@pytest.mark.parametrize(("text", "value"), [("1,234.50", Decimal("1234.50")), ("12.5", Decimal("12.5")),
                                             (" -3 ", Decimal(-3)), ("1e3", Decimal("1e3"))])
def test_documented_decimal_forms(text: str, value: Decimal) -> None:
    assert parse_decimal(text) == value


@pytest.mark.parametrize(("kind", "text"), [("int", "１２"), ("int", "1_000"), ("decimal", "1_000"),
                                            ("decimal", "１２.5"), ("int", "²")])
def test_custom_field_numbers_are_ascii(kind: str, text: str) -> None:
    with pytest.raises(ValueError):
        CustomField("customer", "n", kind).check(text)


def test_custom_text_field_refuses_objects() -> None:
    with pytest.raises(ValueError, match="expected text"):
        CustomField("customer", "note").check({"a": 1})


def test_services_refuse_non_text_and_future_birthdays(sqlite_crm) -> None:
    crm = sqlite_crm()
    for bad in ({"first": "x"}, ["x"], True, float("nan")):
        with pytest.raises(ValidationError, match="name"):
            crm.customers.add(name=bad)
    today = FIXED_NOW.date()
    with pytest.raises(ValidationError, match="birthday"):
        crm.customers.add(name="x", birthday=today + timedelta(days=2))
    with pytest.raises(ValidationError, match="birthday"):
        crm.customers.add(Customer("x", birthday=today + timedelta(days=400)))
    stored = crm.customers.add(name="x", birthday=date(1990, 5, 1))
    with pytest.raises(ValidationError, match="city"):
        crm.customers.update(stored.id, city={"a": 1})
    with pytest.raises(ValidationError, match="birthday"):
        crm.customers.update(stored.id, birthday=(today + timedelta(days=30)).isoformat())
    assert crm.customers.add(name="y", birthday=today).birthday == today
    assert [c.name for c in crm.customers.list()] == ["x", "y"]


def test_jsonl_import_refuses_non_text_and_keeps_valid_rows(sqlite_crm, tmp_path: Path) -> None:
    crm = sqlite_crm()
    rows = ['{"name": {"first": "x"}, "external_id": "a"}',
            '{"name": ["x"], "external_id": "b"}',
            '{"name": true, "external_id": "c"}',
            '{"name": NaN, "external_id": "d"}',
            '{"name": "ok", "city": {"x": 1}, "external_id": "e"}',
            '{"name": "ok", "birthday": "2099-01-01", "external_id": "f"}',
            '{"name": "good one", "external_id": "g", "region": 8613800138000}',
            '{"name": 42, "external_id": "h"}']
    path = tmp_path / "in.jsonl"
    path.write_text("\n".join(rows) + "\n", encoding="utf-8")
    report = import_file(crm, "customer", path, ImportOptions(on_error="skip"))
    assert report.inserted == 2 and report.rejected == 6, report.error_messages()
    lines = sorted(e.line for e in report.errors)
    assert lines == [1, 2, 3, 4, 5, 6]
    columns = {e.line: e.column for e in report.errors}
    assert columns == {1: "name", 2: "name", 3: "name", 4: "name", 5: "city", 6: "birthday"}
    stored = {c.external_id: c.name for c in crm.customers.list()}
    assert crm.customers.list()[0].region == "8613800138000"
    assert stored == {"g": "good one", "h": "42"}
    assert json.dumps(stored)  # nothing like "{'first': 'x'}" or "nan" stored
