"""Request and response models generated from what the core knows.

Each entity's models come from its attrs class (field names, types, enums,
defaults) and the custom fields declared for it in ``crm.toml`` or by plugins
(typed properties of ``attributes``; undeclared keys stay allowed, as in the
core).  So ``/openapi.json`` always describes this CRM's configuration, and a
plugin that declares a field changes the schema without HTTP code.

The models check shape and type only; the core's validation (email, phone,
currency, pipeline stage, custom-field rules) still runs in the service and
answers 422 naming the field, the same rules as the CLI and imports.
"""

from __future__ import annotations

import enum
import types
import typing
from datetime import date, datetime
from decimal import Decimal
from typing import Annotated, Any, Literal

import attrs
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, Strict, create_model

from ..domain.customfields import CustomField
from ..domain.entities import ENTITY_TYPES

#: Fields the server sets: never in a request body.
SERVER_FIELDS = frozenset({"id", "created_at", "updated_at", "archived_at"})
#: The plural path segment of each entity: ``/customers``, ...
PLURALS = {"customer": "customers", "contact": "contacts", "interaction": "interactions", "deal": "deals",
           "task": "tasks"}

# Ids are 32-bit integer columns: a larger number can name no record (and must not reach the driver).
Id = Annotated[int, Field(ge=1, le=2**31 - 1)]
# An integer any column (or JSON value) of ours holds.
Int = Annotated[int, Field(ge=-(2**31), le=2**31 - 1)]
# Money out: exact decimal text ("1234.50"), never a float.
MoneyText = Annotated[str, Field(pattern=r"^-?[0-9]+(\.[0-9]+)?$", examples=["1234.50"])]
# Money in: a number or decimal text; the core checks the scale and range.
MoneyIn = Annotated[Decimal, Field(examples=["1234.50"], allow_inf_nan=False)]


def _text_only(value: Any) -> Any:
    """Dates and times arrive as ISO 8601 text; lax pydantic would read a number (also ``"0"``, as
    in a query string) as seconds since 1970."""
    if isinstance(value, str):
        try:
            (date if len(value.strip()) == 10 else datetime).fromisoformat(value.strip())
        except ValueError:
            raise ValueError("must be an ISO 8601 date (YYYY-MM-DD) or date-time") from None
    elif not isinstance(value, (date, datetime)):
        raise ValueError("must be ISO 8601 text")
    return value


# Request values are taken exactly when the document allows them: lax pydantic also took 0 for
# false, "12" for 12, 1.0 for 1 and 0 for 1970-01-01, values the schema calls invalid.  (FastAPI
# validates the parsed JSON in Python mode, where a blanket strict mode would refuse dates as
# text, so strictness is per type.)
IdIn = Annotated[int, Strict(), Field(ge=1, le=2**31 - 1)]
IntIn = Annotated[int, Strict(), Field(ge=-(2**31), le=2**31 - 1)]
BoolIn = Annotated[bool, Strict()]
DateIn = Annotated[date, BeforeValidator(_text_only)]
DateTimeIn = Annotated[datetime, BeforeValidator(_text_only)]
_CUSTOM_TYPES: dict[str, Any] = {"str": str, "int": IntIn, "decimal": MoneyIn, "bool": BoolIn, "date": DateIn}
_CUSTOM_OUT: dict[str, Any] = {"str": str, "int": int, "decimal": MoneyText, "bool": bool, "date": date}


def _title(kind: str) -> str:
    return kind.capitalize()


def _attributes_model(kind: str, fields: dict[str, CustomField], output: bool) -> type[BaseModel]:
    """``attributes``: each declared custom field typed (choices as an enum), other keys allowed."""
    declared: dict[str, Any] = {}
    for name, field in fields.items():
        if field.type == "choice":
            type_: Any = Literal[tuple(field.choices)] if field.choices else str
        else:
            type_ = (_CUSTOM_OUT if output else _CUSTOM_TYPES)[field.type]
        description = field.description or f"custom field ({field.type})"
        declared[name] = (type_ | None, Field(default=None, description=description))
    suffix = "" if output else "Input"
    model: type[BaseModel] = create_model(f"{_title(kind)}Attributes{suffix}",
                                          __config__=ConfigDict(extra="allow"), **declared)
    return model


def _field_type(kind: str, name: str, hint: Any, attributes: type[BaseModel], output: bool) -> Any:
    """The pydantic type of one entity field."""
    optional = False
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        optional = len(args) < len(typing.get_args(hint))
        hint = args[0]
    if name == "attributes":
        found: Any = attributes
    elif hint is int and (name == "id" or name.endswith("_id")):
        found = Id if output else IdIn
    elif hint is int:
        found = Int if output else IntIn
    elif hint is Decimal:
        found = MoneyText if output else MoneyIn
    elif typing.get_origin(hint) is tuple:
        found = list[str]
    elif isinstance(hint, type) and issubclass(hint, enum.Enum):
        found = hint
    elif hint in (str, bool, date, datetime):
        found = hint if output else {str: str, bool: BoolIn, date: DateIn, datetime: DateTimeIn}[hint]
    else:  # pragma: no cover - a new field type must be mapped here
        raise TypeError(f"{kind}.{name}: no HTTP schema for {hint!r}")
    return found | None if optional else found


class EntityModels:
    """The three models of one entity: ``read`` (responses), ``create`` (POST) and ``patch`` (PATCH)."""

    def __init__(self, kind: str, custom_fields: dict[str, CustomField]):
        cls = ENTITY_TYPES[kind]
        hints = typing.get_type_hints(cls)
        attrs_in = _attributes_model(kind, custom_fields, output=False)
        attrs_out = _attributes_model(kind, custom_fields, output=True)
        read: dict[str, Any] = {}
        create: dict[str, Any] = {}
        patch: dict[str, Any] = {}
        for field in attrs.fields(cls):
            out_type = _field_type(kind, field.name, hints[field.name], attrs_out, output=True)
            read[field.name] = (out_type, ...)
            if field.name in SERVER_FIELDS:
                continue
            in_type = _field_type(kind, field.name, hints[field.name], attrs_in, output=False)
            if field.default is attrs.NOTHING:
                create[field.name] = (in_type, ...)
            else:
                default = field.default.factory() if hasattr(field.default, "factory") else field.default
                create[field.name] = (in_type, Field(default=list(default) if isinstance(default, tuple) else default))
            # PATCH: every field optional; only the fields sent change (null clears an optional one).
            patch[field.name] = (in_type | None, None)
        closed = ConfigDict(extra="forbid")
        title = _title(kind)
        self.kind = kind
        self.read: type[BaseModel] = create_model(title, **read)
        self.create: type[BaseModel] = create_model(f"{title}Create", __config__=closed, **create)
        self.patch: type[BaseModel] = create_model(f"{title}Patch", __config__=closed, **patch)
        self.page: type[BaseModel] = create_model(
            f"{title}Page", items=(list[self.read], ...),  # type: ignore[name-defined]
            next=(str | None, Field(None, description="The URL of the next page (null on the last page).")),
            cursor=(str | None, Field(None, description="The cursor of the next page (null on the last page).")))


def entity_models(custom_fields: dict[str, dict[str, CustomField]]) -> dict[str, EntityModels]:
    """The models of the entities for a CRM's custom fields (``crm.custom_fields``)."""
    return {kind: EntityModels(kind, custom_fields.get(kind, {})) for kind in ENTITY_TYPES}
