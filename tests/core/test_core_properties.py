"""Property-based tests of the parsers and validators (hypothesis)."""

from __future__ import annotations

from datetime import date, datetime, timezone
from decimal import Decimal

import phonenumbers
import pytest
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st

from crmcore import CustomField, ValidationError
from crmcore.domain.convert import parse_bool, parse_date, parse_datetime, parse_decimal, parse_int
from crmcore.store.types import MONEY_SCALE, Money
from crmcore.domain.validation import MAX_AMOUNT, currency_digits, normalize_country, normalize_phone, quantize_money

CURRENCIES = ["JPY", "KRW", "CNY", "USD", "EUR", "GBP", "KWD", "BHD", "TND", "CLP"]
finite_decimals = st.decimals(allow_nan=False, allow_infinity=False)
PROPS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


# -- money -----------------------------------------------------------------------

@PROPS
@given(amount=finite_decimals, currency=st.sampled_from(CURRENCIES))
@example(amount=Decimal("1E+30"), currency="JPY")
@example(amount=Decimal("0.005"), currency="CNY")
def test_quantize_money_never_loses_value_silently(amount: Decimal, currency: str) -> None:
    """Either the exact same value at the currency's scale, or a ValueError."""
    try:
        result = quantize_money(amount, currency)
    except ValueError:
        digits = currency_digits(currency)
        scaled = amount.scaleb(digits)
        assert amount < 0 or amount > MAX_AMOUNT or scaled != scaled.to_integral_value()
        return
    assert result == amount
    assert result >= 0
    assert -result.as_tuple().exponent == currency_digits(currency)


@PROPS
@given(units=st.integers(min_value=0, max_value=10**17), currency=st.sampled_from(CURRENCIES))
def test_every_amount_in_minor_units_is_accepted(units: int, currency: str) -> None:
    amount = Decimal(units).scaleb(-currency_digits(currency))
    assume(amount <= MAX_AMOUNT)
    assert quantize_money(amount, currency) == amount


def test_amount_above_the_storable_maximum_is_a_clear_error() -> None:
    assert quantize_money(Decimal("922337203685477.58"), "CNY") == Decimal("922337203685477.58")
    with pytest.raises(ValueError, match="largest storable amount"):
        quantize_money(Decimal("922337203685478"), "JPY")


@PROPS
@given(value=finite_decimals)
def test_parse_decimal_round_trips_str(value: Decimal) -> None:
    parsed = parse_decimal(str(value))
    assert parsed == value
    assert str(parsed) == str(value)


@PROPS
@given(value=st.floats(allow_nan=False))
def test_parse_decimal_refuses_every_float(value: float) -> None:
    with pytest.raises(ValueError, match="float"):
        parse_decimal(value)


@PROPS
@given(value=st.integers(min_value=-(10**14), max_value=10**14))
def test_parse_decimal_of_int_and_its_text(value: int) -> None:
    assert parse_decimal(value) == value == parse_decimal(str(value))


@PROPS
@given(units=st.integers(min_value=0, max_value=(2**63 - 1)), scale=st.integers(min_value=0, max_value=4))
def test_money_column_conversion_is_exact(units: int, scale: int) -> None:
    """The Money column type turns a Decimal into scaled integers and back exactly."""
    amount = Decimal(units).scaleb(-4)
    money = Money()
    stored = money.process_bind_param(amount, None)
    assert stored == units
    assert money.process_result_value(stored, None) == amount
    with pytest.raises(ValueError):
        money.process_bind_param(amount + Decimal(1).scaleb(-5), None)


# -- dates, ints, bools ---------------------------------------------------------------

@PROPS
@given(moment=st.datetimes(timezones=st.timezones()))
def test_parse_datetime_keeps_the_instant_in_utc(moment: datetime) -> None:
    try:
        parsed = parse_datetime(moment.isoformat())
    except ValueError:
        assume(False)  # isoformat of some zones is not parseable (sub-minute offsets)
    assert parsed.tzinfo is timezone.utc
    # astimezone honours fold; aware == between zones treats folded times as unequal
    assert parsed == moment.astimezone(timezone.utc)


@PROPS
@given(moment=st.datetimes())
def test_naive_datetime_taken_as_utc(moment: datetime) -> None:
    assert parse_datetime(moment) == moment.replace(tzinfo=timezone.utc)


@PROPS
@given(day=st.dates())
def test_parse_date_round_trip(day: date) -> None:
    assert parse_date(day.isoformat()) == day


@PROPS
@given(value=st.integers())
def test_parse_int_round_trip(value: int) -> None:
    assert parse_int(str(value)) == value
    assert parse_int(f"  {value} ") == value


@PROPS
@given(value=st.booleans(), spelling=st.sampled_from([str, lambda b: str(b).upper(), lambda b: "yes" if b else "no",
                                                      lambda b: "1" if b else "0", lambda b: "on" if b else "off"]))
def test_parse_bool_spellings(value: bool, spelling) -> None:
    assert parse_bool(spelling(value)) is value


# -- custom fields ---------------------------------------------------------------------

INT_FIELD = CustomField("customer", "n", "int")
DEC_FIELD = CustomField("customer", "d", "decimal")
DATE_FIELD = CustomField("customer", "day", "date")
BOOL_FIELD = CustomField("customer", "flag", "bool")


@PROPS
@given(value=st.integers())
def test_custom_int_coercion(value: int) -> None:
    assert INT_FIELD.check(value) == value
    assert INT_FIELD.check(str(value)) == value


@PROPS
@given(text=st.text(max_size=12))
def test_custom_int_text_is_an_int_or_a_value_error(text: str) -> None:
    try:
        result = INT_FIELD.check(text)
    except ValueError:
        return
    assert result is None or isinstance(result, int) and not isinstance(result, bool)


@PROPS
@given(value=finite_decimals)
def test_custom_decimal_coercion_round_trips(value: Decimal) -> None:
    stored = DEC_FIELD.check(value)
    assert isinstance(stored, str)  # JSON-safe
    assert Decimal(stored) == value
    assert DEC_FIELD.check(stored) == stored


@PROPS
@given(day=st.dates())
def test_custom_date_coercion(day: date) -> None:
    assert DATE_FIELD.check(day) == day.isoformat()
    assert DATE_FIELD.check(day.isoformat()) == day.isoformat()


@PROPS
@given(moment=st.datetimes())
def test_custom_date_from_datetime_is_a_date(moment: datetime) -> None:
    assert DATE_FIELD.check(moment) == moment.date().isoformat()


@PROPS
@given(value=st.booleans())
def test_custom_bool_coercion(value: bool) -> None:
    assert BOOL_FIELD.check(value) is value
    assert BOOL_FIELD.check(str(value).lower()) is value
    assert BOOL_FIELD.check(str(value)) is value


@PROPS
@given(value=st.one_of(st.text(max_size=8), st.integers(), st.floats(), st.none()))
def test_custom_fields_accept_or_raise_value_error(value: object) -> None:
    """Whatever arrives, a custom field check returns or raises ValueError (never a crash)."""
    for field in (INT_FIELD, DEC_FIELD, DATE_FIELD, BOOL_FIELD):
        try:
            field.check(value)
        except ValueError:
            pass


# -- phone numbers and countries ------------------------------------------------------

REGIONS = sorted(phonenumbers.SUPPORTED_REGIONS)


@PROPS
@given(region=st.sampled_from(REGIONS), digits=st.text(alphabet="0123456789", min_size=4, max_size=14),
       separator=st.sampled_from(["", " ", "-"]))
def test_normalize_phone_output_parses_back_to_the_same_number(region: str, digits: str, separator: str) -> None:
    text = separator.join([digits[:3], digits[3:]])
    try:
        e164 = normalize_phone(text, region)
    except ValueError:
        return
    assert e164.startswith("+")
    again = phonenumbers.parse(e164, None)
    assert phonenumbers.is_valid_number(again)
    assert again == phonenumbers.parse(text, region)
    assert normalize_phone(e164, None) == e164  # idempotent, and needs no region


@PROPS
@given(region=st.sampled_from(REGIONS))
def test_example_numbers_normalise_in_national_form(region: str) -> None:
    example_number = phonenumbers.example_number(region)
    assume(example_number is not None)
    national = phonenumbers.format_number(example_number, phonenumbers.PhoneNumberFormat.NATIONAL)
    e164 = phonenumbers.format_number(example_number, phonenumbers.PhoneNumberFormat.E164)
    assert normalize_phone(national, region) == e164


@PROPS
@given(text=st.text(max_size=5))
def test_normalize_country_returns_alpha2_or_value_error(text: str) -> None:
    try:
        code = normalize_country(text)
    except ValueError:
        return
    assert len(code) == 2 and code.isupper() and normalize_country(code) == code


def test_validation_error_lists_every_field() -> None:
    err = ValidationError([("a", "x"), ("b", "y")], "deal")
    assert str(err) == "invalid deal: a: x; b: y"
    assert err.issues == [("a", "x"), ("b", "y")]
    assert MONEY_SCALE == 10_000
