"""Which column of a file fills which field of an entity.

A column maps to a field when its name is the field's name (case, spaces and
hyphens aside: ``External ID`` is ``external_id``), when ``--map COLUMN=FIELD``
or a mapping file says so, or when it names a custom field: ``attributes.NAME``
or the bare name of a declared custom field.  ``attributes`` holds a JSON
object of custom fields.  Contacts, interactions and deals point at their
customer with a ``customer`` column (external id, email or id) or
``customer_id``; interactions at a contact with ``contact`` or ``contact_id``.

``--map COLUMN=`` (empty field) ignores a column.  Any other column that maps
to nothing is an error, so a misspelt header never loses data silently.
"""

from __future__ import annotations

import json
import tomllib
import types
import typing
from collections.abc import Iterable, Mapping
from decimal import Decimal
from pathlib import Path
from typing import Any

import attrs

from ..domain.customfields import CustomField
from ..domain.entities import ENTITY_TYPES
from ..domain.errors import CRMError

ENTITY_NAMES = {name: name for name in ENTITY_TYPES} | {f"{name}s": name for name in ENTITY_TYPES}
REFERENCES: dict[str, tuple[str, ...]] = {
    "customer": (), "contact": ("customer",), "interaction": ("customer", "contact"), "deal": ("customer",),
    "task": ("customer",),
}
REFERENCE_FIELDS = {"customer": "customer_id", "contact": "contact_id"}
# Added by crmcore to reject files, so a fixed reject file imports as is.
ERROR_COLUMNS = ("error_line", "error_column", "error_reason")
# Whitespace around these is never meaningful; free text keeps its spaces.
STRIPPED_FIELDS = {"email", "phone", "country", "currency", "external_id", "pipeline", "stage", "kind",
                   "direction", "id", "customer_id", "contact_id"}

FIELD, ATTRIBUTE, ATTRIBUTES, REFERENCE, IGNORE = "field", "attribute", "attributes", "reference", "ignore"


class MappingError(CRMError):
    """A column mapping that cannot work (unknown field, column or file)."""


@attrs.frozen
class Target:
    """Where one column's values go: a field, a custom field, a reference, or nowhere."""

    kind: str
    name: str = ""


def entity_kind(name: str) -> str:
    """``customers`` / ``customer`` -> ``customer``."""
    try:
        return ENTITY_NAMES[name.strip().lower()]
    except KeyError:
        raise MappingError(f"unknown entity {name!r} (known: {', '.join(ENTITY_TYPES)})") from None


def normalize_name(column: str) -> str:
    return "_".join(column.strip().lower().replace("-", " ").split())


def entity_fields(kind: str) -> dict[str, Any]:
    """Field name -> resolved type of an entity."""
    cls = ENTITY_TYPES[kind]
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in attrs.fields(cls)}


def text_fields(kind: str) -> frozenset[str]:
    """Fields whose values are text (cells of other types are turned into text)."""
    return frozenset(name for name, hint in entity_fields(kind).items()
                     if hint is str or (typing.get_origin(hint) in (typing.Union, types.UnionType)
                                        and str in typing.get_args(hint)))


def parse_map_options(items: Iterable[str]) -> dict[str, str]:
    """``["E-mail=email", "Notes="]`` -> ``{"E-mail": "email", "Notes": ""}``."""
    mapping: dict[str, str] = {}
    for item in items:
        column, eq, field = item.rpartition("=")
        if not eq or not column.strip():
            raise MappingError(f"--map {item!r} is not COLUMN=FIELD (COLUMN= ignores the column)")
        mapping[column.strip()] = field.strip()
    return mapping


def load_mapping_file(path: str | Path) -> dict[str, str]:
    """A TOML or JSON file of ``column = "field"`` (optionally inside ``[columns]``).

    ``[values.FIELD]`` tables (cell text = stored value) are read by
    :func:`load_value_mapping`.
    """
    return _read_mapping_file(path)[0]


def load_value_mapping(path: str | Path) -> dict[str, dict[str, Any]]:
    """The ``[values.FIELD]`` tables of a mapping file: field -> cell text -> value.

    ``[values.kind]`` with ``"个人" = "person"`` reads the cell ``个人`` as
    ``person``; values may be text, booleans (``"是" = true``) or numbers.
    Cells not in the table are read as they are.
    """
    return _read_mapping_file(path)[1]


def _read_mapping_file(path: str | Path) -> tuple[dict[str, str], dict[str, dict[str, Any]]]:
    file = Path(path)
    try:
        text = file.read_bytes()
    except OSError as exc:
        raise MappingError(f"cannot read mapping file {file}: {exc.strerror or exc}") from None
    try:
        if file.suffix.lower() == ".json":
            data = json.loads(text.decode("utf-8-sig"))
        else:
            data = tomllib.loads(text.decode("utf-8-sig"))
    except (ValueError, tomllib.TOMLDecodeError) as exc:
        raise MappingError(f"mapping file {file}: {exc}") from None
    values: dict[str, dict[str, Any]] = {}
    if isinstance(data, dict) and isinstance(data.get("values"), dict):
        for field, table in data.pop("values").items():
            if not isinstance(table, dict) or not all(isinstance(v, (str, bool, int, float)) for v in table.values()):
                raise MappingError(f"mapping file {file}: [values.{field}] must map cell text to values "
                                   f"(text, true/false or numbers)")
            values[str(field).strip()] = {str(k).strip(): v for k, v in table.items()}
    if isinstance(data, dict) and set(data) == {"columns"} and isinstance(data["columns"], dict):
        data = data["columns"]
    if not isinstance(data, dict):
        raise MappingError(f"mapping file {file}: expected a table of column = field")
    mapping = {}
    for column, field in data.items():
        if field is None or field is False:
            field = ""
        if not isinstance(field, str):
            raise MappingError(f"mapping file {file}: column {column!r} must map to a field name (text), "
                               f"got {field!r}")
        mapping[str(column).strip()] = field.strip()
    return mapping, values


class ColumnMapping:
    """Resolves columns to targets for one entity kind."""

    def __init__(self, kind: str, explicit: Mapping[str, str] | None = None,
                 custom_fields: Mapping[str, CustomField] | None = None, ignore_unknown: bool = False,
                 values: Mapping[str, Mapping[str, Any]] | None = None):
        self.kind = kind
        #: field -> cell text -> value (a mapping file's ``[values.FIELD]`` tables)
        self.values = {field: dict(table) for field, table in (values or {}).items()}
        self.fields = entity_fields(kind)
        self.references = REFERENCES[kind]
        self.explicit = dict(explicit or {})
        self.custom_fields = dict(custom_fields or {})
        self.ignore_unknown = ignore_unknown
        self._targets: dict[str, Target | None] = {}
        for field in self.values:
            if field not in self.fields:
                raise MappingError(f"[values.{field}]: {kind} has no field {field!r} "
                                   f"(fields: {self.describe_fields()})")
        for column, field in self.explicit.items():
            self._targets[column] = self._parse_target(field, f"--map {column}={field}")

    def describe_fields(self) -> str:
        names = [n for n in self.fields if n != "attributes"] + list(self.references)
        return ", ".join(names) + ", attributes.NAME"

    def _parse_target(self, field: str, where: str) -> Target:
        if field == "":
            return Target(IGNORE)
        if field == "attributes":
            return Target(ATTRIBUTES)
        if field.startswith("attributes."):
            name = field.split(".", 1)[1].strip()
            if not name:
                raise MappingError(f"{where}: give the custom field's name after 'attributes.'")
            return Target(ATTRIBUTE, name)
        if field in self.references:
            return Target(REFERENCE, field)
        if field in self.fields:
            return Target(FIELD, field)
        raise MappingError(f"{where}: {self.kind} has no field {field!r} (fields: {self.describe_fields()})")

    def target(self, column: str) -> Target | None:
        """The target of ``column``; None when it maps to nothing (unknown)."""
        try:
            return self._targets[column]
        except KeyError:
            pass
        found = self._auto(column)
        self._targets[column] = found
        return found

    def _auto(self, column: str) -> Target | None:
        name = normalize_name(column)
        if name in ERROR_COLUMNS or not column.strip():
            return Target(IGNORE)
        if name in self.fields and name != "attributes":
            return Target(FIELD, name)
        if name == "attributes":
            return Target(ATTRIBUTES)
        stripped = column.strip()
        if stripped.lower().startswith("attributes.") and stripped[len("attributes."):].strip():
            return Target(ATTRIBUTE, stripped[len("attributes."):].strip())
        if name in self.references:
            return Target(REFERENCE, name)
        if stripped in self.custom_fields:
            return Target(ATTRIBUTE, stripped)
        declared = {normalize_name(n): n for n in self.custom_fields}
        if name in declared:
            return Target(ATTRIBUTE, declared[name])
        if self.ignore_unknown:
            return Target(IGNORE)
        return None

    def unknown_message(self, column: str) -> str:
        return (f"matches no {self.kind} field; map it with --map \"{column}=FIELD\", ignore it with "
                f"--map \"{column}=\" or --ignore-unknown (fields: {self.describe_fields()})")

    def check_columns(self, name: str, line: int, columns: list[str]) -> None:
        """Up-front checks for a file with a header: every column known, no field twice."""
        missing = [c for c in self.explicit if c not in columns]
        if missing:
            raise MappingError(f"{name}: --map names column(s) not in the file: {', '.join(map(repr, missing))} "
                               f"(columns: {', '.join(columns)})")
        owners: dict[tuple[str, str], str] = {}
        for column in columns:
            target = self.target(column)
            if target is None:
                raise MappingError(f'{name}:{line}: column "{column}" {self.unknown_message(column)}')
            if target.kind in (IGNORE, ATTRIBUTES):
                continue
            key = (target.kind, target.name)
            if key in owners:
                raise MappingError(f'{name}:{line}: columns "{owners[key]}" and "{column}" both map to '
                                   f"{_describe(target)}; map one of them elsewhere or ignore it with --map COLUMN=")
            owners[key] = column

    def column_for(self, target: Target, columns: list[str] | None = None) -> str | None:
        """The first column (of ``columns``, or seen so far) that maps to ``target``."""
        for column in (columns if columns is not None else list(self._targets)):
            if self.target(column) == target:
                return column
        return None

    def mapped(self, columns: list[str]) -> dict[Target, str]:
        """Target -> column for a header (after :meth:`check_columns`)."""
        found: dict[Target, str] = {}
        for column in columns:
            target = self.target(column)
            if target is not None and target.kind != IGNORE:
                found.setdefault(target, column)
        return found


def _describe(target: Target) -> str:
    if target.kind == ATTRIBUTE:
        return f"custom field {target.name!r}"
    if target.kind == REFERENCE:
        return f"the {target.name} reference"
    return f"field {target.name!r}"


def plain_json(value: Any) -> Any:
    """JSON-storable form of a value read with Decimal floats (custom attributes)."""
    if isinstance(value, Decimal):  # JSON numbers with a fraction or exponent
        return float(value)
    if isinstance(value, dict):
        return {str(k): plain_json(v) for k, v in value.items()}
    if isinstance(value, list):
        return [plain_json(v) for v in value]
    return value


__all__ = ["ATTRIBUTE", "ATTRIBUTES", "ColumnMapping", "ERROR_COLUMNS", "FIELD", "IGNORE", "MappingError",
           "REFERENCE", "REFERENCES", "REFERENCE_FIELDS", "STRIPPED_FIELDS", "Target", "entity_fields",
           "entity_kind", "load_mapping_file", "load_value_mapping", "normalize_name", "parse_map_options", "plain_json",
           "text_fields"]
