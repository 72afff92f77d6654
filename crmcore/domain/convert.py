"""The one cattrs converter between rows/inputs and entities.

Inputs come from Python callers, CSV cells and database rows, so structuring is
lenient about representation (``"12000.00"``, ``"2026-06-30"``, ``"true"``) but
strict about meaning: a float is refused as money, a time without a zone is
read in the configured ``timezone`` (:func:`local_zone`, :func:`to_utc`), and
every failure becomes a :class:`~crmcore.domain.errors.ValidationError` naming
the field.
"""

from __future__ import annotations

import enum
import functools
import operator
import re
import types
import typing
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar, Token
from datetime import date, datetime, timezone, tzinfo
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


# Numbers in text are ASCII digits: Python's int() and Decimal() would also take
# full-width or Arabic-Indic digits and "1_000", which no file format means.
_DECIMAL_TEXT = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?", re.ASCII)
_GROUPED_TEXT = re.compile(r"[+-]?[0-9]{1,3}(?:,[0-9]{3})+\.[0-9]*", re.ASCII)  # 1,234.50
_INT_TEXT = re.compile(r"\s*[+-]?[0-9]+\s*", re.ASCII)


def parse_decimal(value: Any) -> Decimal:
    """A Decimal from a Decimal, int or numeric text; floats are refused.

    Text is ASCII digits with an optional sign, decimal point and exponent
    (``12.50``, ``-3``, ``1e3``); thousands separators are accepted only in
    the grouped form with a decimal point (``1,234.50``).  Full-width digits,
    underscores and other groupings are refused, not guessed.
    """
    if isinstance(value, Decimal):
        number = value
    elif isinstance(value, bool) or isinstance(value, float):
        raise ValueError(f"use a Decimal or text for money, not {type(value).__name__} {value!r}")
    elif isinstance(value, int):
        number = Decimal(value)
    elif isinstance(value, str):
        text = value.strip()
        if _GROUPED_TEXT.fullmatch(text):
            text = text.replace(",", "")
        if not _DECIMAL_TEXT.fullmatch(text):
            raise ValueError(f"not a number: {value!r} (digits 0-9, an optional sign, point and exponent)")
        try:
            number = Decimal(text)
        except InvalidOperation:  # pragma: no cover - the pattern admits only valid literals
            raise ValueError(f"not a number: {value!r}") from None
    else:
        raise ValueError(f"not a number: {value!r}")
    if not number.is_finite():
        raise ValueError(f"not a finite number: {value!r}")
    return number


# The zone of times written without one.  A context variable rather than an
# argument because the converter's hooks take none: crm.unit() sets it to the
# configured timezone for everything inside a use case, the import's row checker
# for each row (also in worker processes), and it is UTC where nothing set it.
_LOCAL_ZONE: ContextVar[tzinfo] = ContextVar("crm_local_zone", default=timezone.utc)


@contextmanager
def local_zone(zone: tzinfo) -> Iterator[None]:
    """Read times without a zone in ``zone`` (the configured ``timezone``) inside the block."""
    token = _LOCAL_ZONE.set(zone)
    try:
        yield
    finally:
        _LOCAL_ZONE.reset(token)


#: :func:`local_zone` without a context manager (for a unit of work's own ``__enter__``):
#: ``enter_local_zone(zone)`` returns the token to give ``leave_local_zone(token)``, which ends
#: it.  The context variable's own methods: no Python frame of ours around them (a point read
#: enters and leaves once each).
enter_local_zone: Callable[[tzinfo], Token[tzinfo]] = _LOCAL_ZONE.set
leave_local_zone: Callable[[Token[tzinfo]], None] = _LOCAL_ZONE.reset


def to_utc(moment: datetime, zone: tzinfo | None = None) -> datetime:
    """The one rule for every time given as input: aware UTC.

    A naive datetime is a wall-clock time in ``zone`` (default: the
    :func:`local_zone`, i.e. the configured ``timezone``); an aware one keeps
    its instant.
    """
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=zone or _LOCAL_ZONE.get())
    return moment.astimezone(timezone.utc)


def parse_datetime(value: Any) -> datetime:
    """An aware UTC datetime; naive values are read in the :func:`local_zone` (the configured
    ``timezone``), and a bare date is the start of that day there."""
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
    return to_utc(moment)


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
    """An int from an int, an integral Decimal or ASCII digits (``"42"``, ``" -7 "``)."""
    if isinstance(value, bool):
        raise ValueError(f"expected an integer, got {value!r}")
    if isinstance(value, int):
        return value
    if isinstance(value, str) and _INT_TEXT.fullmatch(value):
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
# cattrs looks a class up by singledispatch before it tries predicates, and it
# registers ``str`` itself that way (as ``str(value)``): a predicate hook for
# ``str`` is never reached.  So ``str`` is registered by class; singledispatch
# also hands it subclasses of str (str-enums), which parse_text sends on.
converter.register_structure_hook(str, lambda v, t: parse_text(v) if t is str else _parse_str_subclass(v, t))
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


def parse_text(value: Any) -> str:
    """Text for a text field: a str as given, an int or an exact Decimal as written.

    Spreadsheet cells hold phone numbers and ids as numbers, so an integer (or
    a finite Decimal, as JSON Lines reads fractions) becomes its written form.
    Everything else -- objects, lists, booleans, floats, NaN, dates -- is
    refused: turning ``{"first": "x"}`` into the text ``"{'first': 'x'}"``
    would store a value nobody wrote.
    """
    if value.__class__ is str:
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    if isinstance(value, Decimal) and value.is_finite():
        return str(value)
    if isinstance(value, str):  # a str subclass
        return str.__str__(value)
    raise ValueError(f"expected text, got {describe_value(value)}")


_KIND_NAMES = ((bool, "a boolean"), (dict, "an object"), (list, "a list"), (float, "a float"))


def describe_value(value: Any, limit: int = 60) -> str:
    """``an object {'first': 'x'}``, ``NaN``, ``a list [1, 2]``: a value for an error message (shortened)."""
    if isinstance(value, float) and value != value:
        return "NaN"
    shown = repr(value)
    if len(shown) > limit:
        shown = shown[:limit - 3] + "..."
    kind = next((name for cls, name in _KIND_NAMES if isinstance(value, cls)), type(value).__name__)
    return f"{kind} {shown}"


def _parse_str_subclass(value: Any, kind: Any) -> Any:
    if isinstance(kind, type) and issubclass(kind, enum.Enum):
        return _parse_enum(value, kind)
    return kind(parse_text(value))


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


# -- rows -> entities without the converter ---------------------------------------------------------
# A database row already holds the types an entity wants (the column types hand back aware UTC times,
# Decimals, bools), so a point read need not pay for cattrs' detailed structuring (a quarter of a
# get()).  The plan checks each value's exact type and converts only what storage keeps differently
# (enum values, the tags list); anything unexpected sends the whole row to the converter, which
# gives the same entity (or the same error) as before.
_AS_IS = (str, int, bool, Decimal, date)


def _value_check(kind: Any) -> tuple[bool, Any]:
    """(None allowed, how to take a value) for a field type, or raise TypeError if not planned."""
    optional = False
    if isinstance(kind, types.UnionType) or typing.get_origin(kind) is typing.Union:
        members = [k for k in typing.get_args(kind) if k is not type(None)]
        if len(members) != 1 or len(typing.get_args(kind)) != 2:
            raise TypeError(kind)
        optional, kind = True, members[0]
    if kind is datetime:
        return optional, datetime
    if isinstance(kind, type) and issubclass(kind, enum.Enum):
        return optional, kind
    if kind in _AS_IS:
        return optional, kind
    if kind == tuple[str, ...]:
        return optional, tuple
    if kind == dict[str, Any]:
        return optional, dict
    raise TypeError(kind)


def from_row(row: Any, cls: type[T]) -> T:
    """The entity ``cls`` of a stored row (a mapping of column values): as
    ``converter.structure(dict(row), cls)`` gives it, without its per-call set-up where every
    value already has the field's type."""
    return from_values(tuple(row.keys()), tuple(row.values()), cls)


def from_values(keys: tuple[str, ...], values: Any, cls: type[T]) -> T:
    """:func:`from_row` of the row whose column ``keys`` hold ``values`` (a sequence, e.g. a result
    row): a result's rows share one ``keys`` tuple and so one compiled reader."""
    read = _reader(cls, keys)
    if read is not None:
        try:
            entity: T = read(values)
            return entity
        except LookupError:
            pass
    return converter.structure({k: v for k, v in zip(keys, values) if k not in DERIVED_COLUMNS}, cls)


def entity_reader(cls: type[T], keys: tuple[str, ...]) -> Callable[[Any], T] | None:
    """The function :func:`from_values` reads ``cls`` with from values in ``keys`` order (None: it
    uses the converter); it raises LookupError for a value the converter must decide on."""
    return _reader(cls, keys)


#: Columns the database derives from others (``customers.email_key``, the door check's key) and
#: the importer's bookkeeping (``customers.import_digest``, crmcore.io.fingerprint): no entity has
#: a field for them, so reading a row skips them.
DERIVED_COLUMNS = frozenset({"email_key", "phone_key", "import_digest"})


class _Plan(typing.NamedTuple):
    name: str
    optional: bool
    kind: Any


@functools.lru_cache(maxsize=256)
def _reader(cls: type, keys: tuple[str, ...]) -> Callable[[Any], Any] | None:
    """A function reading ``cls`` from a values sequence in ``keys`` order, compiled once per class
    and column order (None: no plan, always the converter).  It raises LookupError for any value
    whose type is not the field's exact one: the converter then decides."""
    body = _reader_body(cls, keys)
    if body is None:
        return None
    lines, scope = body
    # One unpacking of the whole row (a short one is the converter's to explain) ...
    lines = ["def read(values):", f"    if len(values) != {len(keys)}: raise LookupError",
             "    " + "".join(f"c{i}, " for i in range(len(keys))) + "= values", *lines, "    return entity"]
    # Generated, as attrs and cattrs generate theirs: a loop over the plan per row cost a page
    # of 100 records a fifth of its time.
    exec(compile("\n".join(lines), f"<crmcore reader {cls.__name__}>", "exec"), scope)  # noqa: S102
    return typing.cast(Callable[[Any], Any], scope["read"])


def entity_reader_body(cls: type, keys: tuple[str, ...]) -> tuple[list[str], dict[str, Any]] | None:
    """The source lines (a function body, four spaces in) that set ``entity`` to ``cls`` read from
    the local variables ``c0``, ``c1``, ... holding the values of ``keys`` (unpacked already),
    raising LookupError for a value the converter must decide on, and the names they use (None:
    the converter reads ``cls``).  For a row function that builds the entity straight from a
    driver's row (:func:`crmcore.store.pointread.entity_function`); the lines are fresh, the
    names a copy, per call."""
    found = _reader_body(cls, keys)
    return None if found is None else (list(found[0]), dict(found[1]))


@functools.lru_cache(maxsize=256)
def _reader_body(cls: type, keys: tuple[str, ...]) -> tuple[list[str], dict[str, Any]] | None:
    try:
        hints = typing.get_type_hints(cls)
        plan = [_Plan(name, *_value_check(hints[name])) for name in attrs.fields_dict(cls)]
    except (TypeError, NameError, KeyError):
        return None
    names = {p.name for p in plan}
    if len(set(keys)) != len(keys) or not names <= set(keys) or not set(keys) - names <= DERIVED_COLUMNS:
        return None
    position = {key: i for i, key in enumerate(keys)}
    lines: list[str] = []
    scope: dict[str, Any] = {"cls": cls, "datetime": datetime, "UTC": timezone.utc}
    for i, field in enumerate(plan):
        lines += _read_field(f"v{i}", position[field.name], field, scope)
    # ... and the constructor called with positional arguments where the class takes every field so
    # (attrs' __init__ in field order), not 22 keywords to match: with the unpacking, a customer's
    # reading went from 46,000 instructions to 32,000.
    fields = attrs.fields(cls)
    if _plain_slots(cls, fields) and [f.name for f in fields] == [p.name for p in plan]:
        # ... or, where __init__ would only set each slot (no validator, converter or hook), each
        # slot set by its own descriptor: attrs' frozen __init__ goes through object.__setattr__
        # per field, 22 generic attribute look-ups a customer.
        lines.append("    entity = new_(cls)")
        for i, field in enumerate(fields):
            scope[f"S{i}"] = cls.__dict__[field.name].__set__
            lines.append(f"    S{i}(entity, v{i})")
        scope["new_"] = object.__new__
    elif all(f.init and not f.kw_only for f in fields) and [f.name for f in fields] == [p.name for p in plan]:
        lines.append("    entity = cls(" + ", ".join(f"v{i}" for i in range(len(plan))) + ")")
    else:
        lines.append("    entity = cls(" + ", ".join(f"{p.name}=v{i}" for i, p in enumerate(plan)) + ")")
    return lines, scope


def _plain_slots(cls: type, fields: Any) -> bool:
    """Whether ``cls``'s __init__ does nothing but set each field's own slot from its argument:
    a slotted attrs class of its own slots only (no cached hash), made by ``object.__new__``,
    without validators, converters, ``__attrs_pre_init__`` or ``__attrs_post_init__``."""
    slots = cls.__dict__.get("__slots__")
    if slots is None or set(slots) - {"__weakref__"} != {f.name for f in fields}:
        return False
    new: Any = cls.__new__  # (Any: mypy takes an identity check with object.__new__ for a type error)
    if new is not object.__new__ or hasattr(cls, "__attrs_pre_init__") or hasattr(cls, "__attrs_post_init__"):
        return False
    return all(f.init and f.validator is None and f.converter is None
               and isinstance(cls.__dict__.get(f.name), types.MemberDescriptorType) for f in fields)


def _read_field(var: str, index: int, field: _Plan, scope: dict[str, Any]) -> list[str]:
    """Source lines setting ``var`` to the field value in column ``index`` (``c<index>``, unpacked
    already) or raising LookupError."""
    lines = [f"    {var} = c{index}"]
    guard = f"{var} is not None and " if field.optional else ""
    if not field.optional:
        lines.append(f"    if {var} is None: raise LookupError")
    kind = field.kind
    if kind is datetime:
        lines.append(f"    if {guard}({var}.__class__ is not datetime or {var}.tzinfo is not UTC): raise LookupError")
    elif kind is tuple:  # a list of strings (inline, without all() over a generator)
        lines.append(f"    if {guard}True:")
        lines.append(f"        if {var}.__class__ is not list: raise LookupError")
        lines.append(f"        for t in {var}:")
        lines.append("            if t.__class__ is not str: raise LookupError")
        lines.append(f"        {var} = tuple({var})")
    elif kind is dict:  # a copy: the entity never shares the row's dict
        lines.append(f"    if {guard}True:")
        lines.append(f"        if {var}.__class__ is not dict: raise LookupError")
        lines.append(f"        {var} = dict({var})")
    elif isinstance(kind, type) and issubclass(kind, enum.Enum):
        scope[f"K{index}"] = kind
        scope[f"M{index}"] = kind._value2member_map_
        # Only exact values (the converter explains any other one).
        lines.append(f"    if {guard}True: {var} = M{index}[{var}] if {var}.__class__ is str else _no()")
        scope["_no"] = _no
    elif kind is Decimal:
        scope["Decimal"] = Decimal
        lines.append(f"    if {guard}({var}.__class__ is not Decimal or not {var}.is_finite()): raise LookupError")
    else:
        scope[f"T{index}"] = kind
        lines.append(f"    if {guard}{var}.__class__ is not T{index}: raise LookupError")
    return lines


def _no() -> Any:
    raise LookupError


# -- entities -> JSON-ready fields without the converter ---------------------------------------------
def json_fields(entity: AttrsInstance) -> dict[str, Any]:
    """An entity's fields as a dict whose orjson encoding (``default=json_default``) is the JSON of
    :func:`unstructure`: values stay Python objects (enums, tuples, times, Decimals), and an
    entity class of such plain fields needs no converter (a page of records, an ETag)."""
    reader = _field_reader(type(entity))
    if reader is None:
        return unstructure(entity)
    names, values = reader
    return dict(zip(names, values(entity)))


@functools.cache
def _field_reader(cls: type) -> tuple[tuple[str, ...], Callable[[Any], tuple[Any, ...]]] | None:
    """The field names of an entity class and a getter of their values, when orjson writes every
    value as :func:`record` does (None: some need the converter)."""
    try:
        hints = typing.get_type_hints(cls)
    except (NameError, TypeError):
        return None
    names = tuple(attrs.fields_dict(cls))
    if len(names) < 2 or not all(_plain(hints.get(name)) for name in names):
        return None
    return names, operator.attrgetter(*names)


def _plain(kind: Any) -> bool:
    members = [k for k in typing.get_args(kind) if k is not type(None)] \
        if isinstance(kind, types.UnionType) or typing.get_origin(kind) is typing.Union else [kind]
    return all(k in _PLAIN or k == tuple[str, ...] or k == dict[str, Any]
               or (isinstance(k, type) and issubclass(k, enum.Enum)) for k in members)


#: Value types orjson writes as json.dumps(default=json_default) does (Decimal through the default).
_PLAIN = (str, int, bool, Decimal, date, datetime)
