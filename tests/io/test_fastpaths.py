"""The email and phone fast paths give exactly what email_validator and phonenumbers give.

crmcore.domain.validation normalises plain addresses and "+<country code> <digits>"
numbers without the general parsers (bulk imports spend most of their time
there).  These properties compare the results with the libraries themselves,
on the inputs the fast paths accept and on everything else.
"""

from __future__ import annotations

import unicodedata

import email_validator
import phonenumbers
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from crmcore.domain.validation import (PLAIN_EMAIL, _is_valid, _plain_e164, normalize_email, normalize_phone,
                                      plain_email)

SETTINGS = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def reference_email(value: str) -> str | None:
    try:
        return email_validator.validate_email(value, check_deliverability=False).normalized
    except email_validator.EmailNotValidError:
        return None


def ours_email(value: str) -> str | None:
    try:
        return normalize_email(value)
    except ValueError:
        return None


LABEL = st.from_regex(r"[A-Za-z0-9]([A-Za-z0-9-]{0,8}[A-Za-z0-9])?", fullmatch=True)
REALISTIC_EMAILS = st.builds(
    lambda local, labels, tld: f"{local}@{'.'.join(labels)}.{tld}",
    st.from_regex(r"[A-Za-z0-9._%+'-]{1,20}", fullmatch=True),
    st.lists(LABEL, min_size=1, max_size=3),
    st.sampled_from(["com", "COM", "cn", "org", "Net", "io", "test", "local", "invalid", "xn--fiqs8s", "c1", "arpa"]),
)


@SETTINGS
@given(st.from_regex(PLAIN_EMAIL, fullmatch=True))
@example("Zhang.Wei@Example.COM")
@example("info@example.com")
@example("a@b.co")
@example("x@ab--cd.com")
@example("user@mail.localhost")
def test_plain_emails_normalise_like_email_validator(value):
    fast = plain_email(value)
    if fast is not None:  # accepted by the fast path: email_validator must agree exactly
        assert fast == reference_email(value)
    assert ours_email(value) == reference_email(value)


@SETTINGS
@given(st.one_of(REALISTIC_EMAILS, st.emails().map(str), st.text(max_size=40)))
@example("Postmaster@Example.com")
@example("a..b@example.com")
@example(" padded@example.com")
@example("用户@例子.中国")
@example("a" * 250 + "@example.com")
def test_normalize_email_matches_email_validator_everywhere(value):
    assert ours_email(value) == reference_email(value)


def test_fast_path_is_taken_for_ordinary_addresses():
    assert plain_email("Zhang.Wei@Example.COM") == "Zhang.Wei@example.com"
    assert plain_email("info@example.com") is None  # RFC 2142 name: email_validator lower-cases it
    assert plain_email("a@例子.com") is None


def test_a_special_use_domain_added_later_is_refused_by_the_plain_path(monkeypatch):
    """The plain path remembers the domains it has checked; extending email_validator's
    special-use list (in place or with a new list) must still refuse them, as email_validator does."""
    address = "Li@Corp.Example.ORG"
    assert plain_email(address) == "Li@corp.example.org"  # checked, and remembered
    special_use = email_validator.SPECIAL_USE_DOMAIN_NAMES
    monkeypatch.setattr(email_validator, "SPECIAL_USE_DOMAIN_NAMES", [*special_use, "example.org"])
    assert plain_email(address) is None
    assert ours_email(address) == reference_email(address)
    monkeypatch.setattr(email_validator, "SPECIAL_USE_DOMAIN_NAMES", special_use)
    assert plain_email(address) == "Li@corp.example.org"
    special_use.append("corp.example.org")
    try:
        assert plain_email(address) is None
    finally:
        special_use.remove("corp.example.org")
    assert plain_email(address) == "Li@corp.example.org"


def reference_phone(value: str, region: str | None) -> str:
    try:
        number = phonenumbers.parse(value, region)
    except phonenumbers.NumberParseException:
        return "error"
    if not phonenumbers.is_valid_number(number):
        return "invalid"
    e164 = phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)
    # crmcore keeps an extension after the number, RFC 3966's way, in ASCII digits.
    extension = "".join(str(unicodedata.digit(c)) for c in number.extension or "")
    return f"{e164};ext={extension}" if extension else e164


def ours_phone(value: str, region: str | None) -> str:
    try:
        return normalize_phone(value, region)
    except ValueError as exc:
        return "invalid" if "is not a valid phone number" in str(exc) else "error"


COUNTRY_CODES = sorted(phonenumbers.COUNTRY_CODE_TO_REGION_CODE)
SEPARATORS = st.sampled_from(["", "", "", " ", "-", ".", "(", ")", " (", ") "])


@st.composite
def plus_numbers(draw):
    code = draw(st.sampled_from(COUNTRY_CODES + [0, 1, 7, 44, 86, 39, 999]))
    digits = draw(st.text("0123456789", min_size=2, max_size=15))
    body = "".join(draw(SEPARATORS) + d for d in digits)
    return f"+{code}{draw(st.sampled_from(['', ' ', '-']))}{body}"


REGIONS = st.sampled_from([None, "CN", "US", "IT", "GB", "DE"])


@SETTINGS
@given(plus_numbers(), REGIONS)
@example("+86 138 0013 8000", None)
@example("+39 06 1234 5678", None)       # Italian leading zero
@example("+44 020 7946 0958", "GB")      # national prefix after the country code
@example("+1 (415) 555-0132", "CN")
@example("+7 800 555 35 35", None)
@example("+800 1234 5678", None)         # non-geographic
@example("+999 123456", "CN")            # no such country code
@example("+12", None)
def test_plain_numbers_normalise_like_phonenumbers(value, region):
    assert ours_phone(value, region) == reference_phone(value, region)


@SETTINGS
@given(st.one_of(st.text("+0123456789 ()-.x#,;ext", max_size=25), st.text(max_size=25)), REGIONS)
@example("+1 800 FLOWERS", None)
@example("+1 415 555 0132 ext 5", None)
@example("０１３８ ００１３ ８０００", "CN")
@example("tel:+1-415-555-0132", None)
def test_normalize_phone_matches_phonenumbers_everywhere(value, region):
    assert ours_phone(value, region) == reference_phone(value, region)


def _example_numbers() -> list[phonenumbers.PhoneNumber]:
    """phonenumbers' own example number of every region and type: valid numbers everywhere."""
    found = []
    for region in sorted(phonenumbers.SUPPORTED_REGIONS):
        for kind in range(12):
            number = phonenumbers.example_number_for_type(region, kind)
            if number is not None:
                found.append(number)
    for code in sorted(phonenumbers.COUNTRY_CODES_FOR_NON_GEO_REGIONS):
        number = phonenumbers.example_number_for_non_geo_entity(code)
        if number is not None:
            found.append(number)
    return found


EXAMPLES = _example_numbers()


def test_fast_validity_agrees_on_every_example_number():
    assert len(EXAMPLES) > 1000
    for number in EXAMPLES:
        assert _is_valid(number) == phonenumbers.is_valid_number(number) is True, number


@SETTINGS
@given(st.sampled_from(EXAMPLES), st.integers(0, 14), st.sampled_from("0123456789"), st.integers(-1, 1))
def test_fast_validity_agrees_on_altered_example_numbers(number, position, digit, length):
    """One digit replaced, and one dropped or added: mostly invalid numbers, some valid ones elsewhere."""
    national = str(number.national_number)
    position = min(position, len(national) - 1)
    national = national[:position] + digit + national[position + 1:]
    national = national[:-1] if length < 0 and len(national) > 1 else national + digit if length > 0 else national
    altered = phonenumbers.PhoneNumber(country_code=number.country_code, national_number=int(national),
                                       italian_leading_zero=number.italian_leading_zero,
                                       number_of_leading_zeros=number.number_of_leading_zeros)
    assert _is_valid(altered) == phonenumbers.is_valid_number(altered)


def _written(number: phonenumbers.PhoneNumber, prefix: str = "") -> str:
    """The number as a file holds it: "+<code> ", then ``prefix`` (a national prefix) and the
    national number in phonenumbers' own grouping."""
    national = phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.INTERNATIONAL).split(" ", 1)[-1]
    return f"+{number.country_code} {prefix}{national}"


def test_the_plain_number_path_answers_for_example_numbers_as_phonenumbers_does():
    """Every example number written "+<code> <number>" (and with its region's national prefix
    after the code, which parse() strips or keeps): the fast path's E.164, where it answers, is
    phonenumbers'; and it does answer for almost all of them (so these compare something)."""
    answered = 0
    for number in EXAMPLES:
        metadata = phonenumbers.PhoneMetadata.metadata_for_region_or_calling_code(
            number.country_code, phonenumbers.region_code_for_country_code(number.country_code))
        prefixes = ["", metadata.national_prefix or ""] if metadata is not None else [""]
        for prefix in prefixes:
            value = _written(number, prefix)
            fast = _plain_e164(value)
            if fast is not None:
                answered += 1
                assert fast == reference_phone(value, None), value
            assert ours_phone(value, "CN") == reference_phone(value, "CN"), value
    assert answered > len(EXAMPLES) * 0.9


@SETTINGS
@given(st.sampled_from(EXAMPLES), st.integers(0, 14), st.sampled_from("0123456789"), st.integers(-1, 1),
       st.sampled_from(["", "0", "1", "8", "9", "00"]))
def test_the_plain_number_path_agrees_on_altered_example_numbers(number, position, digit, length, prefix):
    """As above, one digit replaced, dropped or added, a would-be national prefix in front: mostly
    invalid numbers (the fast path leaves them to parse()), some valid elsewhere."""
    national = phonenumbers.national_significant_number(number)
    position = min(position, len(national) - 1)
    national = national[:position] + digit + national[position + 1:]
    national = national[:-1] if length < 0 and len(national) > 1 else national + digit if length > 0 else national
    value = f"+{number.country_code} {prefix}{national}"
    fast = _plain_e164(value)
    reference = reference_phone(value, None)
    assert fast is None or fast == reference
    assert ours_phone(value, None) == reference
