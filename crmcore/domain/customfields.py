"""Declared custom fields: typed values kept in an entity's ``attributes``.

Fields are declared in ``crm.toml`` (``[[custom_fields]]``) or by a plugin
through the ``register_custom_fields`` hook.  Every write is checked against the
declarations; undeclared keys are allowed and stored as given, so plugins can
keep private data without ceremony.
"""

from __future__ import annotations

import re

from datetime import date, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

import attrs

from .convert import parse_int
from .text import check_text

FIELD_TYPES = ("str", "int", "decimal", "bool", "date", "choice")
ENTITIES = ("customer", "contact", "interaction", "deal", "task")


@attrs.frozen
class CustomField:
    """A typed custom field on one entity.

    ``type`` is one of ``str``, ``int``, ``decimal``, ``bool``, ``date`` or
    ``choice`` (one of ``choices``).  Values are stored as JSON: decimals and
    dates as strings, so they round-trip exactly.
    """

    entity: str = attrs.field(validator=attrs.validators.in_(ENTITIES))
    name: str
    type: str = attrs.field(default="str", validator=attrs.validators.in_(FIELD_TYPES))
    required: bool = False
    choices: tuple[str, ...] = ()
    description: str = ""

    def check(self, value: Any) -> Any:
        """Return the JSON-storable form of ``value`` or raise ``ValueError``."""
        if value is None or value == "":
            if self.required:
                raise ValueError("is required")
            return None
        return _COERCE[self.type](self, value)


# ASCII digits only: int() and Decimal() would also read "１２" and "1_000".
_DECIMAL_TEXT = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?", re.ASCII)


def _as_str(field: CustomField, value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError(f"expected text, got {value!r}")
    return check_text(value, multiline=True)  # custom text may hold lines; no other control characters


def _as_int(field: CustomField, value: Any) -> int:
    if isinstance(value, Decimal):  # an integer field takes whole numbers as int or text, not decimals
        raise ValueError(f"expected an integer, got {value!r}")
    return parse_int(value)


def _as_decimal(field: CustomField, value: Any) -> str:
    if isinstance(value, (bool, float)):
        raise ValueError(f"expected a decimal number as text or Decimal, got {value!r}")
    if isinstance(value, str) and not _DECIMAL_TEXT.fullmatch(value.strip()):
        raise ValueError(f"expected a decimal number (digits 0-9), got {value!r}")
    try:
        number = Decimal(value.strip() if isinstance(value, str) else str(value))
    except InvalidOperation:
        raise ValueError(f"expected a decimal number, got {value!r}") from None
    if not number.is_finite():
        raise ValueError(f"expected a finite number, got {value!r}")
    return str(number)


_TRUE = {"true", "yes", "1", "y", "on"}
_FALSE = {"false", "no", "0", "n", "off"}


def _as_bool(field: CustomField, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise ValueError(f"expected true/false, got {value!r}")


def _as_date(field: CustomField, value: Any) -> str:
    if isinstance(value, datetime):  # a datetime is a date too; keep only the day
        value = value.date()
    if isinstance(value, date):
        return value.isoformat()
    try:
        return date.fromisoformat(str(value)).isoformat()
    except ValueError:
        raise ValueError(f"expected a date YYYY-MM-DD, got {value!r}") from None


def _as_choice(field: CustomField, value: Any) -> str:
    if not isinstance(value, str) or value not in field.choices:  # choices are text
        raise ValueError(f"expected one of {', '.join(field.choices)}; got {value!r}")
    return value


_COERCE = {
    "str": _as_str,
    "int": _as_int,
    "decimal": _as_decimal,
    "bool": _as_bool,
    "date": _as_date,
    "choice": _as_choice,
}
