"""Request models generated from a plugin component's typed options.

Every segmenter and report has an attrs ``options_type``; this module turns it
into a pydantic model (names, types, defaults, choices, the ``:ivar:`` text of
its docstring as descriptions), so ``/openapi.json`` shows each registered
component's real options and a plugin's new component needs no HTTP code.

The model checks shape and type; the component's own validators (ranges,
cross-field rules) run when :func:`typed_options` builds the options object,
and their messages come back as a 422 naming the option.
"""

from __future__ import annotations

import enum
import inspect
import re
import types
import typing
from collections.abc import Mapping
from datetime import date, datetime
from decimal import Decimal
from typing import Annotated, Any, Literal

import attrs
from pydantic import BaseModel, ConfigDict, Field, create_model

from ..application.components import Component, build_options
from ..config import Config
from ..domain.convert import structure
from ..domain.errors import CRMError, ValidationError
from .schemas import DateIn, DateTimeIn

#: An integer option: what a 64-bit column (or a bound parameter) can hold.
Int64 = Annotated[int, Field(ge=-(2**63), le=2**63 - 1)]

# Types a query parameter or a JSON field carries as they are.
_SCALARS = (bool, int, float, str, Decimal, date, datetime)
_IVAR = re.compile(r":ivar\s+(\w+):\s*(.*?)(?=\n\s*:\w|\n\s*\n|\Z)", re.S)


def model_name(family: str, name: str, suffix: str) -> str:
    """``("report", "customer-value", "Query")`` -> ``ReportCustomerValueQuery`` (an OpenAPI schema name)."""
    words = re.split(r"[^0-9A-Za-z]+", f"{family} {name}")
    return "".join(w[:1].upper() + w[1:] for w in words if w) + suffix


def _descriptions(cls: type) -> dict[str, str]:
    """``:ivar name: text`` of the class and its bases, as one line each."""
    found: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        for name, text in _IVAR.findall(inspect.getdoc(klass) or ""):
            found[name] = " ".join(text.split())
    return found


def _choices(validator: Any) -> tuple[Any, ...] | None:
    """The allowed values of an ``attrs.validators.in_`` validator (also inside ``and_``)."""
    options = getattr(validator, "options", None)
    if isinstance(options, (tuple, list, frozenset, set)) and options:
        return tuple(sorted(options, key=str)) if isinstance(options, (set, frozenset)) else tuple(options)
    for inner in getattr(validator, "_validators", ()) or ():
        found = _choices(inner)
        if found is not None:
            return found
    return None


def _scalar(hint: Any) -> tuple[Any, bool] | None:
    """``(type, optional)`` when ``hint`` is a scalar (possibly ``| None``), else None."""
    optional = False
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        optional = len(args) < len(typing.get_args(hint))
        if len(args) != 1:
            return None
        hint = args[0]
    if typing.get_origin(hint) is Literal:
        return hint, optional
    if isinstance(hint, type) and (issubclass(hint, enum.Enum) or hint in _SCALARS):
        return hint, optional
    return None


def _plain_default(value: Any) -> Any:
    """A default as JSON can show it; ``...`` when it is not a plain value (a factory's list, a rule set)."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, (Decimal, date, datetime)):
        return value
    return ...


def options_fields(component: Component, family: str, config: Config, in_query: bool) -> dict[str, Any]:
    """The pydantic field definitions of ``component``'s options (for :func:`pydantic.create_model`).

    Defaults are the effective ones: the class's, overridden by ``[family.name]`` in crm.toml.
    Every field is optional: what a request leaves out keeps its configured value.  A structured
    option (a list of rules, a mapping) is JSON in a body; in a query it is JSON text.
    """
    cls = component.options_type
    if cls is None:
        return {}
    hints = typing.get_type_hints(cls)
    texts = _descriptions(cls)
    try:
        effective: Any = build_options(component, family, config, None)
    except (CRMError, ValueError, TypeError):  # a bad crm.toml table: show the class defaults
        effective = None
    fields: dict[str, Any] = {}
    for field in attrs.fields(cls):
        text = texts.get(field.name, "")
        default = getattr(effective, field.name) if effective is not None else (
            field.default if not isinstance(field.default, attrs.Factory) else ...)  # type: ignore[arg-type]
        shown = _plain_default(default) if default is not attrs.NOTHING else ...
        choices = _choices(field.validator)
        scalar = _scalar(hints.get(field.name, Any))
        if choices is not None:
            type_: Any = Literal[choices]
        elif scalar is not None:
            # Dates as ISO text only (lax pydantic reads "0" as 1970-01-01); the rest as FastAPI parses them.
            # Integers within 64 bits: no database column holds more (a larger id is refused, not a 500).
            type_ = {date: DateIn, datetime: DateTimeIn, int: Int64}.get(scalar[0], scalar[0])
        elif in_query:
            type_ = str
            text = (text + " " if text else "") + "(JSON text, as in crm.toml)"
        else:
            type_ = Any
            text = (text + " " if text else "") + "(a JSON value, as in crm.toml)"
        # The effective default documents the option; only what a request sends is applied
        # (``model_dump(exclude_unset=True)``), so crm.toml stays the source of defaults.
        fields[field.name] = (type_ | None, Field(default=None if shown is ... else shown,
                                                  description=text or None))
    return fields


def structured_names(component: Component) -> frozenset[str]:
    """The options that are not one scalar (rules, mappings, lists): JSON text in a query."""
    cls = component.options_type
    if cls is None:
        return frozenset()
    hints = typing.get_type_hints(cls)
    return frozenset(f.name for f in attrs.fields(cls)
                     if _choices(f.validator) is None and _scalar(hints.get(f.name, Any)) is None)


def options_model(component: Component, family: str, config: Config) -> type[BaseModel]:
    """The JSON body model of ``component``'s options (unknown names refused)."""
    return create_model(model_name(family, component.name, "Options"),
                        __config__=ConfigDict(extra="forbid"),
                        **options_fields(component, family, config, in_query=False))


def options_schema(model: type[BaseModel]) -> dict[str, Any]:
    """The JSON schema of an options model (what the catalogs list)."""
    return model.model_json_schema()


def typed_options(component: Component, family: str, config: Config, given: Mapping[str, Any],
                  prefix: str = "") -> Any:
    """The options object ``given`` (only what the request sent) over the configured options.

    The component's own validators run here; each problem is a 422 naming the option
    (``prefix + name``), where the engine would say ``[family.name] key: ...``.
    """
    cls = component.options_type
    if cls is None:
        return None
    raw = dict(config.component_options(family, component.name)) | dict(given)
    entity = f"{family} {component.name} options"
    try:
        return structure(raw, cls, entity)
    except ValidationError as exc:
        issues = exc.issues
    except (ValueError, TypeError) as exc:  # a rule across options (``__attrs_post_init__``)
        issues = [("*", str(exc) or type(exc).__name__)]
    named: list[tuple[str, str]] = []
    for field, message in issues:
        named += [(prefix + name, message) for name in _fields_named(cls, field, message, given)]
    raise ValidationError(named or [(prefix.rstrip(".") or "options", "invalid")], entity)


def _fields_named(cls: type, field: str, message: str, given: Mapping[str, Any]) -> list[str]:
    """The options an issue is about.  A validator of the options class (an attrs ``ge``, a rule
    across options) names no field, so the options its message mentions are the ones at fault,
    those the request sent first; "options" when it mentions none."""
    if field != "*":
        return [field]
    mentioned = [f.name for f in attrs.fields(cls) if re.search(rf"\b{re.escape(f.name)}\b", message)]
    return [n for n in mentioned if n in given] or mentioned or ["options"]


#: The ``as_of`` query parameter's description (every route whose answer depends on "now").
AS_OF_TEXT = ("Treat this moment as now: an ISO 8601 date (the end of that day in the configured timezone) "
              "or date-time (default: now).")


def as_of_value(crm: Any, text: str | None) -> datetime | None:
    """The ``as_of`` query parameter as an aware UTC instant (None: now); a bad one is a 422 naming it."""
    if text is None:
        return None
    try:
        moment: datetime = crm.as_of(text)
    except (CRMError, ValueError, OverflowError):
        raise ValidationError.single("as_of", f"{text!r} is not an ISO 8601 date (YYYY-MM-DD) or date-time") from None
    return moment
