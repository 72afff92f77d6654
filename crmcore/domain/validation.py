"""Field rules that need configuration: email, phone, country, currency, money,
pipeline stages and custom fields.

:class:`EntityValidator` normalises an entity (``Zhang.Wei@Example.com`` ->
``Zhang.Wei@example.com``, ``+86 138 0013 8000`` -> ``+8613800138000``) and
collects every problem into one :class:`~crmcore.domain.errors.ValidationError`.
"""

from __future__ import annotations

import re
import unicodedata
import types
import typing
from collections.abc import Callable, Iterable, Mapping
from datetime import date, datetime, timezone
from decimal import Decimal
from functools import lru_cache
from zoneinfo import ZoneInfo
from typing import TYPE_CHECKING, Any, TypeVar, cast

import attrs
import email_validator
import phonenumbers
import pycountry
from babel.numbers import get_currency_precision
from email_validator.rfc_constants import CASE_INSENSITIVE_MAILBOX_NAMES

from .customfields import CustomField
from .entities import MONEY_SCALE, Contact, Customer, Deal, Interaction, StageOutcome, Task, TaskStatus
from .errors import ValidationError
from .text import ONE_LINE_FORBIDDEN, check_text, text_problem

if TYPE_CHECKING:
    from ..config import Config

#: One of the four entity types.
A = TypeVar("A", Customer, Contact, Interaction, Deal, Task)

# The Money column keeps a signed 64-bit count of 1/MONEY_SCALE units.
MAX_AMOUNT = Decimal(2**63 - 1) / MONEY_SCALE


# A plain ASCII address (dot-atom local part, LDH domain labels, a letter at the
# end) is one email_validator accepts and normalises by lower-casing the domain
# only; checking that with one regex is ~30x faster than the general path, which
# matters for bulk imports.  Anything else (Unicode, quotes, "--" labels,
# RFC 2142 mailbox names, special-use domains) goes to email_validator, and
# tests/io/test_fastpaths.py checks the two agree with hypothesis.
_ATEXT = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]"
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
PLAIN_EMAIL = re.compile(rf"({_ATEXT}+(?:\.{_ATEXT}+)*)@((?:{_LABEL}\.)+{_LABEL})")


#: What an encrypted (sealed) value starts with (crmcore.store.sealed.MARK; domain may not
#: import store): no address may start with it, or it would be taken for a sealed one.
SEALED_MARK = "$e1$"


def plain_email(value: str) -> str | None:
    """The normalised form of a plain ASCII address, or None if it is not one."""
    if len(value) > 254:
        return None
    match = PLAIN_EMAIL.fullmatch(value)
    if match is None or email_validator.STRICT:
        return None
    local, domain = match.groups()
    domain = _plain_domain(domain)
    if domain is None:
        return None
    if local.lower() in CASE_INSENSITIVE_MAILBOX_NAMES:  # RFC 2142 names are lower-cased
        return None
    return f"{local}@{domain}"


# The domains of plain addresses seen (a handful in a file), as written -> lower-cased, once they
# passed the checks of _plain_domain(), with the special-use list they were checked against: a
# new list (callers may extend it) starts a new memory.  One tuple, replaced at once (threads).
_DOMAINS: tuple[list[str], dict[str, str]] = ([], {})


def _plain_domain(domain: str) -> str | None:
    """The lower-cased domain if email_validator only lower-cases it, else None."""
    global _DOMAINS
    special_use = email_validator.SPECIAL_USE_DOMAIN_NAMES  # read each time: callers may extend it
    checked_against, seen = _DOMAINS
    if special_use != checked_against:
        checked_against, seen = _DOMAINS = (list(special_use), {})
    lowered = seen.get(domain)
    if lowered is not None:
        return lowered
    lowered = domain.lower()
    if not "a" <= lowered[-1] <= "z" or "--" in lowered:
        return None
    for special in checked_against:
        if lowered == special or lowered.endswith("." + special):
            return None
    if len(seen) >= 4096:
        seen.clear()
    seen[domain] = lowered
    return lowered


def normalize_email(value: str) -> str:
    """Syntax-check and normalise an address (no DNS look-up)."""
    if value.startswith(SEALED_MARK):
        raise ValueError(f"{value!r} is not accepted as an email address: it starts with "
                         f"{SEALED_MARK!r}, the mark of an encrypted value")
    plain = plain_email(value)
    if plain is not None:
        return plain
    try:
        return email_validator.validate_email(value, check_deliverability=False).normalized
    except email_validator.EmailNotValidError as exc:
        raise ValueError(f"{value!r} is not a valid email address: {exc}") from None


# A number written "+<country code> <digits>" with only spaces, hyphens, dots or
# parentheses between the digits is what most files hold.  For that shape,
# phonenumbers.parse() spends two thirds of its time on generic clean-up
# (finding the number in free text, extensions, RFC 3966, Unicode digits) that
# changes nothing; _plain_e164() runs only the remaining steps of parse(), with
# phonenumbers' own functions, in the same order, and what the calling code
# decides (its metadata, national prefix pattern and regions) is worked out once
# per calling code.  Anything unusual, and every error, goes through parse()
# itself; tests/io/test_fastpaths.py checks with hypothesis that both give the
# same result.
_PLAIN_PHONE = re.compile(r"\+[1-9][0-9 ().-]{5,38}[0-9]")
_FAST_PHONE = False  # True when phonenumbers has the internals _plain_e164() uses
try:
    from phonenumbers import phonenumberutil as _pnu

    _PARSE_STEPS = (_pnu._maybe_strip_national_prefix_carrier_code, _pnu._test_number_length)
    _CALLING_CODES = {str(code): code for code in phonenumbers.COUNTRY_CODE_TO_REGION_CODE}
    _CODE_SIZES = range(1, _pnu._MAX_LENGTH_COUNTRY_CODE + 1)
    _DISCARD_STRIPPED = (_pnu.ValidationResult.TOO_SHORT, _pnu.ValidationResult.IS_POSSIBLE_LOCAL_ONLY,
                         _pnu.ValidationResult.INVALID_LENGTH)
    _MIN_NSN, _MAX_NSN = _pnu._MIN_LENGTH_FOR_NSN, _pnu._MAX_LENGTH_FOR_NSN
    _FAST_PHONE = True
except (ImportError, AttributeError):  # pragma: no cover - a phonenumbers without these internals
    pass


@lru_cache(maxsize=None)
def _parsing(country_code: int) -> "tuple[phonenumbers.PhoneMetadata, re.Pattern[str] | None] | None":
    """(metadata parse() uses for a calling code, its national prefix pattern or None), or None."""
    metadata = phonenumbers.PhoneMetadata.metadata_for_region_or_calling_code(
        country_code, _pnu.region_code_for_country_code(country_code))
    if metadata is None:
        return None
    prefix = metadata.national_prefix_for_parsing
    return metadata, re.compile(prefix) if prefix else None


def _plain_e164(value: str) -> str | None:
    """normalize_phone(value, any region) for a plain, valid "+<digits>" number; None: ask parse().

    As parse(): the country code, then the national prefix stripped if what remains has a
    possible length.  The national significant number is then the national digits as they are
    (phonenumbers keeps Italian leading zeros; no other zero leads), so E.164 is "+", the
    country code and those digits, as format_number() writes it.
    """
    if not _FAST_PHONE or _PLAIN_PHONE.fullmatch(value) is None:
        return None
    strip_prefix, test_length = _PARSE_STEPS
    # The pattern leaves digits, "+" first and the separators: the digits alone, the first not 0.
    digits = value.replace(" ", "").replace("-", "").replace("(", "").replace(")", "").replace(".", "")[1:]
    for size in _CODE_SIZES:  # as _extract_country_code: the shortest calling code that exists
        country_code = _CALLING_CODES.get(digits[:size], 0)
        if country_code:
            national = digits[size:]
            break
    else:
        return None
    if len(national) < _MIN_NSN:
        return None
    parsing = _parsing(country_code)
    if parsing is None:
        return None
    metadata, prefix = parsing
    # No match of the prefix pattern: strip_prefix() leaves the number as it is.
    if prefix is not None and prefix.match(national) is not None:
        _, stripped, _ = strip_prefix(national, metadata)
        if test_length(stripped, metadata) not in _DISCARD_STRIPPED:
            national = stripped
    if not _MIN_NSN <= len(national) <= _MAX_NSN or not _valid_national(country_code, national):
        return None  # not valid (or asks is_valid_number): parse() and its messages decide
    return f"+{country_code}{national}"


# phonenumbers.is_valid_number() asks for the number's *type*: up to ten patterns in a fixed order (premium
# rate first, mobile last), each compiled through a cache look-up, when validity only needs to know that one
# of them matches.  _is_valid() gives the same answer with the patterns compiled once per region and the
# common types tried first; tests/io/test_fastpaths.py compares it with is_valid_number() (hypothesis).
_TYPE_DESCS = ("fixed_line", "mobile", "premium_rate", "toll_free", "shared_cost", "voip", "personal_number",
               "pager", "uan", "voicemail")
_Pattern = tuple[frozenset[int], "re.Pattern[str]"]


@lru_cache(maxsize=None)
def _region_patterns(region: str) -> "tuple[re.Pattern[str] | None, tuple[_Pattern, ...]] | None":
    """(general pattern, (possible lengths, pattern) of each number type) of a region, or None."""
    metadata = phonenumbers.PhoneMetadata.metadata_for_region(region, None)
    if metadata is None:
        return None
    general = metadata.general_desc
    general_pattern = re.compile(general.national_number_pattern) if (
        general is not None and general.national_number_pattern) else None
    types = []
    for name in _TYPE_DESCS:
        if name == "mobile" and metadata.same_mobile_and_fixed_line_pattern:
            continue  # phonenumbers only tries mobile when its pattern differs from fixed line's
        desc = getattr(metadata, name)
        if desc is None or not desc.national_number_pattern:
            continue  # such a type never matches
        types.append((frozenset(desc.possible_length), re.compile(desc.national_number_pattern)))
    return general_pattern, tuple(types)


def _valid_for(national: str, patterns: "tuple[re.Pattern[str] | None, tuple[_Pattern, ...]]") -> bool:
    """_number_type_helper(national, metadata) != UNKNOWN."""
    general, types = patterns
    if general is None or general.fullmatch(national) is None:
        return False
    length = len(national)
    return any((not lengths or length in lengths) and pattern.fullmatch(national) is not None
               for lengths, pattern in types)


def _is_valid(number: "phonenumbers.PhoneNumber") -> bool:
    """phonenumbers.is_valid_number(number), with fewer pattern matches."""
    valid = _valid_national(number.country_code or 0, phonenumbers.national_significant_number(number))
    return bool(phonenumbers.is_valid_number(number)) if valid is None else valid


_Own = tuple["tuple[re.Pattern[str] | None, tuple[_Pattern, ...]] | None", bool]
_Candidate = tuple["re.Pattern[str] | None", "tuple[re.Pattern[str] | None, tuple[_Pattern, ...]] | None", _Own]


@lru_cache(maxsize=None)
def _regions_of(country_code: int) -> "tuple[tuple[_Candidate, ...] | None, _Own | None] | None":
    """What _valid_national() needs of a calling code, worked out once: for a code of several
    regions, (leading digits pattern or None, patterns for full validation or None, the region's
    own (patterns, whether the region has this calling code)) of each region with metadata, in
    order; for a code of one region, its own pair.  None: a non-geographic code (or none)."""
    regions = phonenumbers.COUNTRY_CODE_TO_REGION_CODE.get(country_code)
    if not regions or phonenumbers.REGION_CODE_FOR_NON_GEO_ENTITY in regions:
        return None

    def own(region: str) -> _Own:
        patterns = _region_patterns(region.upper())  # None: no metadata (country_code_for_valid_region raises)
        return patterns, patterns is not None and country_code == phonenumbers.country_code_for_valid_region(region)

    if len(regions) == 1:
        return None, own(regions[0])
    candidates = []
    for candidate in regions:
        metadata = phonenumbers.PhoneMetadata.metadata_for_region(candidate.upper(), None)
        if metadata is None:
            continue
        leading = re.compile(metadata.leading_digits) if metadata.leading_digits is not None else None
        candidates.append((leading, None if leading is not None else _region_patterns(candidate.upper()),
                           own(candidate)))
    return tuple(candidates), None


def _valid_national(country_code: int, national: str) -> bool | None:
    """is_valid_number() of the number with this calling code and national significant number;
    None for a non-geographic calling code (ask is_valid_number)."""
    found = _regions_of(country_code)
    if found is None:
        return None
    candidates, chosen = found
    if candidates is not None:  # as _region_code_for_number_from_list: leading digits, else full validation
        for leading, patterns, region in candidates:
            if leading is not None:
                if leading.match(national):
                    chosen = region
                    break
            elif patterns is not None and _valid_for(national, patterns):
                return region[1]  # chosen as valid there: _valid_for(national, its patterns) again is True
        else:
            return False
    patterns, same_code = cast("_Own", chosen)
    return same_code and _valid_for(national, cast("tuple[re.Pattern[str] | None, tuple[_Pattern, ...]]", patterns))


# phonenumbers reads "ext. 123", "x123", "#123" and ";ext=123" as an extension, but
# not the Chinese words for one: "转 123" (transfer to), "分机 123" (extension), "内线".
_CJK_EXTENSION = re.compile(r"\s*(?:转|轉|分机号?|分機號?|内线|內線)\s*[:：]?\s*(?=[0-9０-９]+\s*$)")
#: How a stored phone number carries an extension: E.164, then RFC 3966's parameter.
EXTENSION_MARK = ";ext="


def normalize_phone(value: str, region: str | None) -> str:
    """E.164 form of a phone number; ``region`` is used for national numbers.

    An extension is kept after the number as ``;ext=``, RFC 3966's spelling:
    ``+86 10 1234 5678 ext. 123``, ``x123``, ``转 123`` and ``分机 123`` are all
    ``+861012345678;ext=123`` (which reads back as itself).
    """
    plain = _plain_e164(value)
    if plain is not None:
        return plain
    try:
        number = phonenumbers.parse(_CJK_EXTENSION.sub(EXTENSION_MARK, value, count=1), region)
    except phonenumbers.NumberParseException as exc:
        hint = "" if region else " (no default phone region is configured: use +<country code>)"
        raise ValueError(f"{value!r} is not a phone number: {exc._msg}{hint}") from None
    if not phonenumbers.is_valid_number(number):
        raise ValueError(f"{value!r} is not a valid phone number")
    e164 = phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)
    if not number.extension:
        return e164
    digits = "".join(str(unicodedata.digit(c)) for c in number.extension)  # １２３ is 123
    return f"{e164}{EXTENSION_MARK}{digits}"


@lru_cache(maxsize=512)
def normalize_country(value: str) -> str:
    """ISO 3166-1 alpha-2 code from an alpha-2 or alpha-3 code."""
    country = pycountry.countries.get(alpha_2=value.upper()) if len(value) == 2 else None
    country = country or (pycountry.countries.get(alpha_3=value.upper()) if len(value) == 3 else None)
    if country is None:
        raise ValueError(f"{value!r} is not an ISO 3166 country code")
    return country.alpha_2


@lru_cache(maxsize=256)
def currency_digits(code: str) -> int:
    """Minor-unit digits of an ISO 4217 currency (CNY 2, JPY 0, KWD 3)."""
    if pycountry.currencies.get(alpha_3=code) is None:
        raise ValueError(f"{code!r} is not an ISO 4217 currency code")
    return get_currency_precision(code)


def quantize_money(amount: Decimal, currency: str) -> Decimal:
    """``amount`` at the currency's minor unit; refuses negatives and lost digits."""
    if amount < 0:
        raise ValueError(f"amount must not be negative, got {amount}")
    if amount > MAX_AMOUNT:  # also keeps quantize() within Decimal's precision
        raise ValueError(f"amount {amount} is larger than the largest storable amount {MAX_AMOUNT}")
    exponent = Decimal(1).scaleb(-currency_digits(currency))
    quantized = amount.quantize(exponent)
    if quantized != amount:
        raise ValueError(f"{amount} has more decimals than {currency} allows ({currency_digits(currency)})")
    return quantized


#: Text fields that hold several lines, by entity (LF and TAB kept, CR LF stored as LF);
#: every other text field of an entity holds one line (see :mod:`crmcore.domain.text`).
MULTILINE_FIELDS: Mapping[str, frozenset[str]] = {"interaction": frozenset({"body"}), "task": frozenset({"notes"})}


@lru_cache(maxsize=None)
def _text_fields(cls: type) -> tuple[str, ...]:
    """The ``str`` / ``str | None`` fields of an entity class, in order."""
    names = []
    for name, hint in typing.get_type_hints(cls).items():
        if hint is str or (typing.get_origin(hint) in (typing.Union, types.UnionType) and str in typing.get_args(hint)):
            names.append(name)
    return tuple(names)


def _utcnow() -> datetime:
    return datetime.now(timezone.utc)


@lru_cache(maxsize=16)
def _zone(name: str) -> ZoneInfo:
    return ZoneInfo(name)


@attrs.define
class EntityValidator:
    """Normalises and checks entities against configuration and custom fields."""

    config: Config
    custom_fields: Mapping[str, Mapping[str, CustomField]]  # entity -> name -> field
    #: The source of "now" (the CRM's clock): a birthday may not be after today
    #: in the configured time zone.
    clock: Callable[[], datetime] = _utcnow

    def today(self) -> date:
        """Today's date in the configured time zone, by :attr:`clock`."""
        return self.clock().astimezone(_zone(self.config.timezone)).date()

    def customer(self, customer: Customer) -> Customer:
        issues: list[tuple[str, str]] = []
        bad = self._texts("customer", customer, issues)
        changes = self._contact_points(customer, issues, bad)
        if customer.country and "country" not in bad:
            changes["country"] = _check(issues, "country", normalize_country, customer.country)
        if not customer.name.strip() and "name" not in bad:
            issues.append(("name", "must not be blank"))
        if customer.birthday is not None and customer.birthday > self.today():
            issues.append(("birthday", f"{customer.birthday.isoformat()} is in the future"))
        changes["attributes"] = self._attributes("customer", customer.attributes, issues)
        return _finish(customer, changes, issues, "customer")

    def contact(self, contact: Contact) -> Contact:
        issues: list[tuple[str, str]] = []
        bad = self._texts("contact", contact, issues)
        changes = self._contact_points(contact, issues, bad)
        if not contact.name.strip() and "name" not in bad:
            issues.append(("name", "must not be blank"))
        changes["attributes"] = self._attributes("contact", contact.attributes, issues)
        return _finish(contact, changes, issues, "contact")

    def interaction(self, interaction: Interaction) -> Interaction:
        issues: list[tuple[str, str]] = []
        changes: dict[str, Any] = {}
        self._texts("interaction", interaction, issues, changes)
        if interaction.satisfaction is not None and not 1 <= interaction.satisfaction <= 5:
            issues.append(("satisfaction", f"must be 1-5, got {interaction.satisfaction}"))
        if interaction.resolved_at and interaction.resolved_at < interaction.occurred_at:
            issues.append(("resolved_at", "is before occurred_at"))
        changes["attributes"] = self._attributes("interaction", interaction.attributes, issues)
        return _finish(interaction, changes, issues, "interaction")

    def deal(self, deal: Deal) -> Deal:
        issues: list[tuple[str, str]] = []
        changes: dict[str, Any] = {}
        bad = self._texts("deal", deal, issues)
        currency = deal.currency.upper()
        if "currency" not in bad and _check(issues, "currency", currency_digits, currency) is not None:
            changes["currency"] = currency
            changes["amount"] = _check(issues, "amount", quantize_money, deal.amount, currency)
        if not deal.title.strip() and "title" not in bad:
            issues.append(("title", "must not be blank"))
        pipeline = self.config.pipelines.get(deal.pipeline)
        if pipeline is None:
            issues.append(("pipeline", f"unknown pipeline {deal.pipeline!r} (known: {', '.join(self.config.pipelines)})"))
        else:
            stage = pipeline.stage(deal.stage)
            if stage is None:
                known = ", ".join(s.name for s in pipeline.stages)
                issues.append(("stage", f"{deal.stage!r} is not a stage of pipeline {pipeline.name!r} (known: {known})"))
            elif deal.probability is None:
                changes["probability"] = stage.probability
            if stage is not None and stage.outcome is not StageOutcome.LOST and deal.lost_reason:
                issues.append(("lost_reason", "only a lost deal has a lost reason"))
        if deal.probability is not None and not 0 <= deal.probability <= 100:
            issues.append(("probability", f"must be a percent 0-100, got {deal.probability}"))
        changes["attributes"] = self._attributes("deal", deal.attributes, issues)
        return _finish(deal, changes, issues, "deal")

    def task(self, task: Task) -> Task:
        issues: list[tuple[str, str]] = []
        changes: dict[str, Any] = {}
        bad = self._texts("task", task, issues, changes)
        if not task.title.strip() and "title" not in bad:
            issues.append(("title", "must not be blank"))
        if task.status is TaskStatus.OPEN and task.completed_at is not None:
            issues.append(("completed_at", "an open task has no completion time (done or cancel it)"))
        changes["attributes"] = self._attributes("task", task.attributes, issues)
        return _finish(task, changes, issues, "task")

    def _texts(self, kind: str, entity: Any, issues: list[tuple[str, str]],
               changes: dict[str, Any] | None = None) -> set[str]:
        """Check every text field (and tag) for control characters; returns the bad fields.

        Multi-line fields (:data:`MULTILINE_FIELDS`) get their line ends
        normalised into ``changes``.
        """
        multiline = MULTILINE_FIELDS.get(kind, frozenset())
        names = _text_fields(entity.__class__)
        values = [getattr(entity, name) for name in names]
        tags = getattr(entity, "tags", ())
        # One search over everything first: almost every entity is clean.
        joined = "".join(v for n, v in zip(names, values) if v and n not in multiline) + "".join(tags)
        bad: set[str] = set()
        if ONE_LINE_FORBIDDEN.search(joined) is not None:
            for name, value in zip(names, values):
                if value and name not in multiline:
                    problem = text_problem(value)
                    if problem is not None:
                        issues.append((name, problem))
                        bad.add(name)
            for tag in tags:
                problem = text_problem(tag)
                if problem is not None and "tags" not in bad:
                    issues.append(("tags", f"tag {tag!r} {problem}"))
                    bad.add("tags")
        for name in multiline:
            value = getattr(entity, name)
            if value:
                checked = _check(issues, name, check_text, value, True)
                if checked is None:
                    bad.add(name)
                elif checked != value and changes is not None:
                    changes[name] = checked
        return bad

    def _contact_points(self, entity: Customer | Contact, issues: list[tuple[str, str]],
                        bad: set[str]) -> dict[str, Any]:
        changes: dict[str, Any] = {}
        if entity.email and "email" not in bad:
            changes["email"] = _check(issues, "email", normalize_email, entity.email)
        if entity.phone and "phone" not in bad:
            changes["phone"] = _check(issues, "phone", normalize_phone, entity.phone, self.config.phone_region)
        return changes

    def _attributes(self, entity: str, values: Mapping[str, Any], issues: list[tuple[str, str]]) -> dict[str, Any]:
        declared = self.custom_fields.get(entity, {})
        result = dict(values)
        for name, field in declared.items():
            checked = _check(issues, name, field.check, values.get(name))
            if checked is not None:
                result[name] = checked
            else:
                result.pop(name, None)
        return result


def _check(issues: list[tuple[str, str]], field: str, rule: Callable[..., Any], *args: Any) -> Any:
    try:
        return rule(*args)
    except ValueError as exc:
        issues.append((field, str(exc)))
        return None


def _finish(entity: A, changes: dict[str, Any], issues: list[tuple[str, str]], kind: str) -> A:
    if issues:
        raise ValidationError(issues, kind)
    return attrs.evolve(entity, **{k: v for k, v in changes.items() if v is not None})


def index_custom_fields(fields: Iterable[CustomField]) -> dict[str, dict[str, CustomField]]:
    """Group declarations by entity; a second declaration of a name is refused."""
    index: dict[str, dict[str, CustomField]] = {}
    for field in fields:
        if field.name in index.setdefault(field.entity, {}):
            raise ValueError(f"custom field {field.entity}.{field.name} is declared twice")
        index[field.entity][field.name] = field
    return index
