"""The one cattrs converter between rows/inputs and entities.

Inputs come from Python callers, CSV cells and database rows, so structuring is
lenient about representation (``"12000.00"``, ``"2026-06-30"``, ``"true"``) but
strict about meaning: a float is refused as money, a naive datetime is taken as
UTC, and every failure becomes a :class:`~crmcore.domain.errors.ValidationError`
naming the field.
"""

from __future__ import annotations

import enum
import functools
import re
from datetime import date, datetime, timezone
from decimal import Decimal, InvalidOperation
from typing import Any, TypeVar

import attrs
import cattrs
from attrs import AttrsInstance

from .entities import (
    CustomerKind,
    Direction,
    InteractionKind,
    LifecycleStage,
    StageOutcome,
)
from .errors import ValidationError

T = TypeVar("T", bound=AttrsInstance)

converter = cattrs.Converter(forbid_extra_keys=True, detailed_validation=True)


def parse_decimal(value: Any) -> Decimal:
    """A Decimal from a Decimal, int or numeric text; floats are refused."""
    if isinstance(value, Decimal):
        number = value
    elif isinstance(value, bool) or isinstance(value, float):
        raise ValueError(f"use a Decimal or text for money, not {type(value).__name__} {value!r}")
    elif isinstance(value, int):
        number = Decimal(value)
    elif isinstance(value, str):
        try:
            number = Decimal(value.strip().replace(",", "") if value.count(",") and "." in value else value.strip())
        except InvalidOperation:
            raise ValueError(f"not a number: {value!r}") from None
    else:
        raise ValueError(f"not a number: {value!r}")
    if not number.is_finite():
        raise ValueError(f"not a finite number: {value!r}")
    return number


def parse_datetime(value: Any) -> datetime:
    """An aware UTC datetime; naive values and bare dates are taken as UTC."""
    if isinstance(value, datetime):
        moment = value
    elif isinstance(value, date):
        moment = datetime(value.year, value.month, value.day)
    elif isinstance(value, str):
        try:
            moment = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
        except ValueError:
            raise ValueError(f"not an ISO 8601 date/time: {value!r}") from None
    else:
        raise ValueError(f"not a date/time: {value!r}")
    if moment.tzinfo is None:
        return moment.replace(tzinfo=timezone.utc)
    return moment.astimezone(timezone.utc)


def parse_date(value: Any) -> date:
    if isinstance(value, datetime):
        return value.date()
    if isinstance(value, date):
        return value
    if isinstance(value, str):
        try:
            return date.fromisoformat(value.strip())
        except ValueError:
            raise ValueError(f"not a date YYYY-MM-DD: {value!r}") from None
    raise ValueError(f"not a date: {value!r}")


_TRUE = {"true", "yes", "y", "1", "on"}
_FALSE = {"false", "no", "n", "0", "off", ""}


def parse_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
        return value.strip().lower() in _TRUE
    raise ValueError(f"expected true/false, got {value!r}")


def parse_int(value: Any) -> int:
    if isinstance(value, bool):
        raise ValueError(f"expected an integer, got {value!r}")
    if isinstance(value, int):
        return value
    if isinstance(value, str) and re.fullmatch(r"\s*[+-]?\d+\s*", value):
        return int(value)
    if isinstance(value, Decimal) and value == value.to_integral_value():
        return int(value)
    raise ValueError(f"expected an integer, got {value!r}")


def _parse_tags(value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        return tuple(t.strip() for t in value.split(",") if t.strip())
    return tuple(str(t) for t in value)


converter.register_structure_hook(Decimal, lambda v, _: parse_decimal(v))
converter.register_structure_hook(datetime, lambda v, _: parse_datetime(v))
converter.register_structure_hook(date, lambda v, _: parse_date(v))
converter.register_structure_hook(bool, lambda v, _: parse_bool(v))
converter.register_structure_hook(int, lambda v, _: parse_int(v))
# A predicate, not a class: singledispatch on ``str`` would also catch str-enums.
converter.register_structure_hook_func(lambda t: t is str, lambda v, _: v if isinstance(v, str) else _bad_text(v))
# str-enums would otherwise be caught by cattrs' ``str`` handling (``cls(value)``),
# which is case-sensitive and names no choices; register each one explicitly.
for _enum in (CustomerKind, LifecycleStage, InteractionKind, Direction, StageOutcome):
    converter.register_structure_hook(_enum, lambda v, t: _parse_enum(v, t))
converter.register_structure_hook_func(lambda t: t == tuple[str, ...], lambda v, _: _parse_tags(v))
converter.register_structure_hook_func(lambda t: t == dict[str, Any], lambda v, _: _parse_mapping(v))
# Keep rich values for the storage layer; SQLAlchemy types do the rest.
for _kind in (Decimal, datetime, date):
    converter.register_unstructure_hook(_kind, lambda v: v)


def _parse_mapping(value: Any) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ValueError(f"expected a mapping of custom fields, got {value!r}")
    return dict(value)


def _parse_enum(value: Any, kind: type[enum.Enum]) -> enum.Enum:
    try:
        return kind(value.strip().lower() if isinstance(value, str) else value)
    except ValueError:
        choices = ", ".join(m.value for m in kind)
        raise ValueError(f"{value!r} is not one of: {choices}") from None


def _bad_text(value: Any) -> str:
    raise ValueError(f"expected text, got {type(value).__name__} {value!r}")


@functools.cache
def _field_names(cls: type) -> tuple[tuple[str, ...], frozenset[str], frozenset[str]]:
    """(field names in order, the same as a set, those without a default), once per class.

    structure() runs once per row on bulk paths; rebuilding attrs.fields_dict
    and two sets for every call was a third of its cost.
    """
    fields = attrs.fields_dict(cls)
    return tuple(fields), frozenset(fields), frozenset(n for n, f in fields.items() if f.default is attrs.NOTHING)


def structure(data: dict[str, Any], cls: type[T], entity: str | None = None) -> T:
    """Build ``cls`` from ``data``; blank optional values count as missing.

    Raises :class:`ValidationError` listing every bad field.
    """
    names, known, required = _field_names(cls)
    if not known.issuperset(data):
        unknown = sorted(set(data) - known)
        raise ValidationError([(k, f"unknown field (known: {', '.join(names)})") for k in unknown], entity)
    cleaned = {k: v for k, v in data.items() if not (v is None or v == "") or k in required}
    try:
        return converter.structure(cleaned, cls)
    except cattrs.BaseValidationError as exc:
        raise ValidationError(_issues(exc), entity) from None


def unstructure(entity: AttrsInstance) -> dict[str, Any]:
    """The storable mapping of an entity (enums as values, tags as a list)."""
    mapping: dict[str, Any] = converter.unstructure(entity)  # cattrs: an attrs instance becomes a dict
    return mapping


def _issues(exc: cattrs.BaseValidationError) -> list[tuple[str, str]]:
    issues = []
    for message in cattrs.transform_error(exc, format_exception=_describe):
        text, _, path = message.rpartition(" @ ")
        field = path.removeprefix("$").removeprefix(".").split(".")[0]
        if not field and "\x00" in text:  # an attrs validator named its attribute (see _describe)
            field, text = text.split("\x00", 1)
        issues.append((field or "*", text))
    return issues


def _describe(exc: BaseException, type_: Any) -> str:
    if isinstance(exc, KeyError):
        return "is required"
    if isinstance(exc, ValueError) and len(exc.args) > 1 and isinstance(exc.args[1], attrs.Attribute):
        # attrs' own validators (in_, ...) raise ValueError(message, attribute, ...)
        return f"{exc.args[1].name}\x00{exc.args[0]}"
    if isinstance(exc, ValueError) and str(exc):
        return str(exc)
    name = getattr(type_, "__name__", None) or str(type_)
    return f"invalid value ({exc.__class__.__name__}), expected {name}"


def json_default(value: Any) -> Any:
    """``json.dumps(default=...)`` for crmcore values: Decimal as exact text,
    dates ISO 8601, enums by value, attrs objects as dicts."""
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, (date, datetime)):
        return value.isoformat()
    if isinstance(value, enum.Enum):
        return value.value
    if attrs.has(type(value)):
        return attrs.asdict(value)
    raise TypeError(f"cannot encode {type(value).__name__} as JSON")
