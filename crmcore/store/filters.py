"""Filters for listing entities: ``field`` or ``field__op`` -> value.

Operators: ``eq`` (default), ``ne``, ``lt``, ``le``, ``gt``, ``ge``,
``contains`` (case-insensitive text), ``in`` (a list).  ``attributes.NAME``
reaches a custom field through the database's JSON functions.  Text values are
coerced to the column's type, so the CLI can pass strings.  A value no column
could hold is a :class:`~crmcore.domain.errors.ValidationError`, not a database
error: a number beyond the column's range (``amount>=1e400``, an id of 10^20),
text with NUL or a lone surrogate, an attribute name with a quote or backslash
(it would break the JSON path), or a ``contains`` / search pattern longer than
:data:`MAX_PATTERN` characters.  On customers,
``segment.STRATEGY`` filters by the segment in the latest run of STRATEGY
(``eq``, ``ne`` or ``in``; ``ne`` keeps customers without a membership too).
"""

from __future__ import annotations

import functools

import operator
import re
from collections.abc import Mapping, Sequence
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Date,
    Integer,
    SmallInteger,
    String,
    Table,
    Text,
    exists,
    func,
    or_,
    select,
)
from sqlalchemy.sql import ColumnElement

from ..domain.convert import (
    parse_bool,
    parse_date,
    parse_datetime,
    parse_decimal,
    parse_int,
)
from ..domain.entities import MONEY_SCALE
from ..domain.errors import ValidationError
from ..domain.text import describe_character
from ..domain.validation import MAX_AMOUNT
from .sealed import Sealed, SealedDate, sealed_custom
from .types import Money, UTCDateTime

#: The longest ``contains`` / search pattern (SQLite refuses LIKE patterns over 50,000 bytes).
MAX_PATTERN = 1000
# Text a bound parameter cannot carry on every database: NUL (PostgreSQL) and lone surrogates.
_UNBINDABLE = re.compile(r"[\x00\ud800-\udfff]")
# Characters that would end or escape the quoted key of a JSON path.
_BAD_KEY = re.compile(r'["\\\x00-\x1f\x7f\ud800-\udfff]')
_INT_RANGES = ((BigInteger, 63), (SmallInteger, 15), (Integer, 31))  # most specific first

OPERATORS = {
    "eq": operator.eq, "ne": operator.ne, "lt": operator.lt, "le": operator.le,
    "gt": operator.gt, "ge": operator.ge,
}
# CLI spelling -> operator name, longest first so ">=" wins over ">".
SYMBOLS = (("!=", "ne"), (">=", "ge"), ("<=", "le"), ("~", "contains"), ("=", "eq"), (">", "gt"), ("<", "lt"))


def parse_expression(text: str) -> tuple[str, Any]:
    """``"amount>=100"`` -> ``("amount__ge", "100")``; for ``--where`` options."""
    for symbol, name in SYMBOLS:
        field, found, value = text.partition(symbol)
        if found and field.strip():
            key = field.strip() if name == "eq" else f"{field.strip()}__{name}"
            return key, value.strip()
    raise ValidationError.single("where", f"{text!r} is not FIELD=VALUE (or !=, >=, <=, >, <, ~)")


def conditions(table: Table, filters: Mapping[str, Any], kind: str) -> list[ColumnElement[bool]]:
    result = []
    for key, value in filters.items():
        field, _, op = key.partition("__")
        op = op or "eq"
        if op not in OPERATORS and op not in ("contains", "in"):
            raise ValidationError.single(key, f"unknown operator {op!r}", kind)
        if field.startswith("segment.") and table.name == "customers":
            result.append(_segment_condition(table, field.split(".", 1)[1], op, value, kind))
            continue
        element, coerce = _element(table, field, value, kind)
        try:
            if op == "in":
                values = value.split(",") if isinstance(value, str) else list(value)
                result.append(element.in_([coerce(v) for v in values]))
            elif op == "contains":
                if not isinstance(element.type, (String, Text, Sealed)):  # LIKE on a number or a date is no search
                    raise ValueError("~ (contains) applies to text fields only")
                result.append(element.ilike(_pattern(value), escape="\\"))
            elif value is None:
                result.append(element.is_(None) if op == "eq" else element.is_not(None))
            else:
                result.append(OPERATORS[op](element, coerce(value)))
        except ValueError as exc:
            raise ValidationError.single(field, str(exc), kind) from None
    return result


def equality(table: Table, filters: Mapping[str, Any], kind: str) -> tuple[str, Any] | None:
    """``(column, value)`` when ``filters`` is one column of ``table`` equal to one value (``email=``,
    ``external_id=``), the value coerced and checked as :func:`conditions` would; else None.  A point
    read runs it with a statement built once instead of building the condition."""
    if len(filters) != 1:
        return None
    [(field, value)] = filters.items()
    if value is None or "__" in field or field not in _column_names(table):
        return None
    try:
        return field, _column_coercer(table, field)(value)
    except ValueError as exc:
        raise ValidationError.single(field, str(exc), kind) from None


@functools.cache
def _column_names(table: Table) -> frozenset[str]:
    """The column names of ``table`` (a point read asks at every find: one set look-up instead of
    the column collection's ``__contains__``; a table's columns never change once defined)."""
    return frozenset(table.c.keys())


@functools.cache
def _column_coercer(table: Table, field: str) -> Any:
    """:func:`_coercer` of ``table.field``, worked out once (a point read by email or external id
    asked it every time, and made a new function for a text column)."""
    return _coercer(table.c[field].type)


def search_condition(table: Table, text: str, columns: tuple[str, ...],
                     also: Mapping[str, Sequence[str]] | None = None) -> ColumnElement[bool]:
    """Case-insensitive substring match over ``columns`` (works for CJK text); ``also``: more
    substrings for some columns (a phone number in its stored form)."""
    try:
        pattern = _pattern(text)
        extra = [(column, _pattern(term)) for column, terms in (also or {}).items() for term in terms]
    except ValueError as exc:
        raise ValidationError.single("search", str(exc)) from None
    return or_(*(table.c[c].ilike(pattern, escape="\\") for c in columns),
               *(table.c[c].like(p, escape="\\") for c, p in extra))


def _segment_condition(table: Table, strategy: str, op: str, value: Any, kind: str) -> ColumnElement[bool]:
    """Customers whose membership in ``strategy``'s latest run matches (one subquery, no per-row work)."""
    from .tables import segment_memberships as m
    from .tables import segment_runs as runs

    if op not in ("eq", "ne", "in"):
        raise ValidationError.single(f"segment.{strategy}", f"operator {op!r} does not apply (use =, != or in)", kind)
    latest = select(func.max(runs.c.id)).where(runs.c.strategy == strategy).scalar_subquery()
    values = (value.split(",") if isinstance(value, str) else list(value)) if op == "in" else [value]
    members = select(m.c.customer_id).where(m.c.run_id == latest, m.c.segment.in_([str(v) for v in values]))
    if op == "ne":
        # NOT EXISTS, not NOT IN: PostgreSQL runs NOT IN over a subquery whose hash exceeds work_mem
        # (a few hundred thousand members) as a scan of it per customer; NOT EXISTS is an anti-join
        # there, and a look-up in the run's primary key per customer on SQLite.
        return ~exists(members.where(m.c.customer_id == table.c.id))
    return table.c.id.in_(members)


def _pattern(value: Any) -> str:
    text = _text(value)
    if len(text) > MAX_PATTERN:
        raise ValueError(f"a search pattern is at most {MAX_PATTERN} characters, got {len(text)}")
    return f"%{_escape(text)}%"


def _text(value: Any) -> str:
    """``value`` as text a bound parameter can carry on every database."""
    text = str(getattr(value, "value", value))
    bad = _UNBINDABLE.search(text)
    if bad is not None:
        raise ValueError(f"contains {describe_character(bad.group())}, which no stored text holds")
    return text


def _text_or_bound(value: Any) -> Any:
    """A text column's filter value: a bound expression (``.value``) as it is, anything else
    :func:`_text`; a plain ``str`` (a find by email or external id) checked without the calls."""
    if value.__class__ is str:
        bad = _UNBINDABLE.search(value)
        if bad is not None:
            raise ValueError(f"contains {describe_character(bad.group())}, which no stored text holds")
        return value
    return value if hasattr(value, "value") else _text(value)


def _int_in(bits: int) -> Any:
    low, high = -(2 ** bits), 2 ** bits - 1

    def coerce(value: Any) -> Any:
        if hasattr(value, "value"):  # an enum member
            return value
        number = parse_int(value)
        if not low <= number <= high:
            raise ValueError(f"{number} is out of range ({low} to {high})")
        return number
    return coerce


def _money(value: Any) -> Decimal:
    amount = parse_decimal(value)
    if abs(amount) > MAX_AMOUNT:
        raise ValueError(f"{value} is beyond the largest storable amount {MAX_AMOUNT}")
    if amount != amount.quantize(Decimal(1).scaleb(-len(str(MONEY_SCALE)) + 1)):
        raise ValueError(f"{value} has more than {len(str(MONEY_SCALE)) - 1} decimal places")
    return amount


def _element(table: Table, field: str, value: Any, kind: str) -> tuple[Any, Any]:
    if field.startswith("attributes."):
        name = field.split(".", 1)[1]
        bad = _BAD_KEY.search(name)
        if not name or bad is not None:
            why = f"contains {describe_character(bad.group())}" if bad and bad.group() not in '"\\' else (
                f"contains {bad.group()!r}" if bad else "is empty")
            raise ValidationError.single(field, f"the custom field name {why}", kind)
        json_el = table.c.attributes[name]
        if isinstance(value, bool):
            return json_el.as_boolean(), parse_bool
        if isinstance(value, int):
            return json_el.as_integer(), _int_in(63)
        if isinstance(value, float):
            return json_el.as_float(), float
        # Compared by blind index when custom.NAME is sealed (its value as text: "1", "true").
        return sealed_custom(json_el.as_string(), name), _text
    if field not in table.c:
        known = ", ".join(c.name for c in table.c)
        raise ValidationError.single(field, f"unknown filter field (known: {known}, attributes.NAME)", kind)
    column = table.c[field]
    return column, _coercer(column.type)


def _coercer(type_: Any) -> Any:
    if isinstance(type_, Money):
        return _money
    if isinstance(type_, UTCDateTime):
        return parse_datetime
    if isinstance(type_, Boolean):
        return parse_bool
    if isinstance(type_, (Date, SealedDate)):
        return parse_date
    for kind, bits in _INT_RANGES:
        if isinstance(type_, kind):
            return _int_in(bits)
    if isinstance(type_, (String, Text, JSON, Sealed)):
        return _text_or_bound
    return lambda v: v


def _escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
