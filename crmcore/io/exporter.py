"""Export customers, contacts, interactions or deals to CSV, JSON Lines or XLSX.

Rows are streamed from the database (a server-side cursor on PostgreSQL and
MariaDB) and written one at a time, so memory stays flat.  The filters and
sort are those of ``crm <entity> list`` (``--where``, ``--sort``).

What is written is exactly what an import reads back:

* every field, with ``id`` and ``external_id`` first and the time stamps last;
* ``customer`` (and for interactions ``contact``): the linked record's external
  id, else its email, else its id -- what the importer resolves in the target
  database -- next to the raw ``customer_id`` / ``contact_id``;
* declared custom fields as ``attributes.NAME`` columns, any other custom
  attributes as one ``attributes`` JSON column (JSON Lines: one object);
* money as exact decimal text, times as ISO 8601 UTC with microseconds, dates
  as ``YYYY-MM-DD``, booleans as ``true``/``false``, tags comma-separated (a
  JSON list when a tag itself holds a comma).

In XLSX, numbers that a spreadsheet stores exactly are numeric cells (money
with its currency's number format), dates are date cells, and times are
date-time cells in the configured ``timezone`` -- how an import reads a time
without a zone -- unless they have sub-millisecond digits a spreadsheet would
lose (then ISO text).  The header row is bold and frozen, like the report
workbooks.
"""

from __future__ import annotations

import enum
import functools
import json
from collections.abc import Callable, Mapping
from datetime import date, datetime, tzinfo
from decimal import Decimal
from pathlib import Path
from typing import IO, Any
from zoneinfo import ZoneInfo

import attrs
from sqlalchemy import select

from ..domain.convert import local_zone
from ..domain.entities import ENTITY_TYPES
from ..store.filters import conditions
from ..store.repositories import Archived, archived_conditions
from ..store.tables import ENTITY_TABLES, contacts, customers
from .mapping import REFERENCES, entity_fields, entity_kind
from .readers import EXTENSIONS, FORMATS, SourceError
from .writers import excel_encoding, open_writer

STREAM_ROWS = 1000


@attrs.define
class ExportReport:
    entity: str
    format: str
    target: str
    rows: int = 0


def export_columns(crm: Any, kind: str, format: str) -> list[str]:
    """The columns of an export, in order."""
    fields = [f.name for f in attrs.fields(ENTITY_TYPES[kind])]
    columns = ["id", "external_id"]
    for ref in REFERENCES[kind]:
        columns += [ref, f"{ref}_id"]
    columns += [f for f in fields if f not in columns and f not in ("attributes", "created_at", "updated_at")]
    if format == "jsonl":
        columns.append("attributes")
    else:
        columns += [f"attributes.{name}" for name in crm.custom_fields.get(kind, {})]
        columns.append("attributes")
    return columns + ["created_at", "updated_at"]


def export_entities(crm: Any, entity: str, target: str | Path | IO[bytes] | None = None, *,
                    format: str | None = None, filters: Mapping[str, Any] | None = None,
                    sort: str = "id", limit: int | None = None, encoding: str | None = None,
                    delimiter: str = ",", progress: Callable[[int], None] | None = None,
                    raw_csv: bool = False, excel: bool | None = None,
                    archived: Archived = "exclude") -> ExportReport:
    """Write the entities matching ``filters`` to ``target`` (a path, a binary stream, or stdout).

    CSV text a spreadsheet would run as a formula gets a leading quote unless
    ``raw_csv`` (see :mod:`crmcore.domain.spreadsheet`); importing the file
    undoes it.  ``excel`` (None: ``excel_csv`` in crm.toml) writes CSV as
    UTF-8 with a byte order mark, which Excel needs to read Chinese text.
    Archived customers and deals, and the deals, contacts and interactions of
    archived customers, are left out unless ``archived`` says otherwise (as in
    ``crm.customers.list``).
    """
    kind = entity_kind(entity)
    format = _format(target, format)
    if format == "csv":  # a byte order mark belongs in CSV only
        encoding = excel_encoding(encoding, excel, crm.config.excel_csv)
    service = getattr(crm, f"{kind}s")
    table = ENTITY_TABLES[kind]
    typed = service.typed_filters(filters)
    column = sort.lstrip("-")
    if column not in table.c:
        raise SourceError(f"--sort: {kind}s have no column {column!r}")
    order = table.c[column].desc() if sort.startswith("-") else table.c[column]
    owner = customers.alias("owner")
    stmt = (select(table, owner.c.external_id.label("_customer_external_id"),
                   owner.c.email.label("_customer_email"))
            if kind != "customer" else select(table))
    if kind != "customer":
        stmt = stmt.join_from(table, owner, owner.c.id == table.c.customer_id)
    if kind == "interaction":
        person = contacts.alias("person")
        stmt = stmt.add_columns(person.c.external_id.label("_contact_external_id"),
                                person.c.email.label("_contact_email"))
        stmt = stmt.outerjoin(person, person.c.id == table.c.contact_id)
    with local_zone(ZoneInfo(crm.config.timezone)):  # --where closed_at>=2024-01-01: a local day
        stmt = stmt.where(*conditions(table, typed, kind), *archived_conditions(table, archived, kind))
        stmt = stmt.order_by(order, table.c.id).limit(limit)
    columns = export_columns(crm, kind, format)
    declared = list(crm.custom_fields.get(kind, {}))
    zone = ZoneInfo(crm.config.timezone)
    cells: dict[str, Callable[[Any], Any]] = {"csv": _text, "jsonl": _json_value,
                                              "xlsx": functools.partial(_xlsx_value, zone=zone)}
    cell = cells[format]
    report = ExportReport(kind, format, "<stdout>" if target in (None, "-") else str(target))
    with crm.unit(readonly=True) as uow:
        crm.authorize(f"{kind}.list", None)
        repo = service.repo(uow)
        writer = open_writer(target, format, columns, encoding=encoding or "utf-8", delimiter=delimiter,
                             escape_formulas=not raw_csv, kinds=_kinds(kind, columns))
        try:
            conn = uow.conn.execution_options(stream_results=True, yield_per=STREAM_ROWS)
            table_columns = [c.name for c in table.c]
            for row in conn.execute(stmt):
                mapping = row._mapping
                entity = repo.from_row({c: mapping[c] for c in table_columns})
                values = _values(entity, mapping, kind, declared, format)
                writer.write_row([cell(values.get(c)) for c in columns])
                report.rows += 1
                if progress is not None and report.rows % STREAM_ROWS == 0:
                    progress(report.rows)
        finally:
            writer.close()
    return report


def _format(target: Any, format: str | None) -> str:
    if format:
        format = format.lower()
        if format not in FORMATS:
            raise SourceError(f"unknown format {format!r} (known: {', '.join(FORMATS)})")
        return format
    if isinstance(target, (str, Path)) and str(target) != "-":
        return EXTENSIONS.get(Path(str(target)).suffix.lower(), "csv")
    return "csv"


def _reference(external_id: Any, email: Any, id: Any) -> str | None:
    if id is None:
        return None
    return external_id or email or str(id)


def _values(entity: Any, row: Mapping[str, Any], kind: str, declared: list[str], format: str) -> dict[str, Any]:
    values = {f.name: getattr(entity, f.name) for f in attrs.fields(type(entity))}
    if kind != "customer":
        values["customer"] = _reference(row["_customer_external_id"], row["_customer_email"], entity.customer_id)
    if kind == "interaction":
        values["contact"] = _reference(row["_contact_external_id"], row["_contact_email"], entity.contact_id)
    attributes = dict(entity.attributes)
    if format == "jsonl":
        values["attributes"] = attributes
        return values
    for name in declared:
        values[f"attributes.{name}"] = attributes.pop(name, None)
    values["attributes"] = attributes or None
    return values


def tags_text(tags: Any) -> str:
    """Comma-separated tags, or a JSON list when a comma-separated form would not read back the same."""
    tags = list(tags)
    if any("," in t or t != t.strip() or not t for t in tags) or (tags and tags[0].startswith("[")):
        return json.dumps(tags, ensure_ascii=False)
    return ",".join(tags)


def _text(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, enum.Enum):
        return str(value.value)
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (Decimal, int)):
        return str(value)
    if isinstance(value, (datetime, date)):
        return value.isoformat()
    if isinstance(value, (tuple, list)):
        return tags_text(value)
    if isinstance(value, dict):
        return json.dumps(value, ensure_ascii=False)
    return str(value)


def _json_value(value: Any) -> Any:
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, (datetime, date)):
        return value.isoformat()
    if isinstance(value, tuple):
        return list(value)
    return value


def _kinds(kind: str, columns: list[str]) -> list[str | None]:
    """The XLSX column types (for number formats): money, dates and times; the rest General."""
    hints = entity_fields(kind)
    kinds: list[str | None] = []
    for column in columns:
        hint = hints.get(column)
        kinds.append("decimal" if hint in (Decimal, Decimal | None) else
                     "datetime" if hint in (datetime, datetime | None) else
                     "date" if hint in (date, date | None) else None)
    return kinds


def _xlsx_value(value: Any, zone: tzinfo) -> Any:
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, int):
        return value if abs(value) < 2**53 else str(value)
    if isinstance(value, Decimal):
        # A spreadsheet number is a double: keep it numeric only when that is exact.
        number = float(value)
        return number if Decimal(repr(number)) == value else str(value)
    if isinstance(value, datetime):
        # Excel has no time zones and keeps milliseconds: a time in the configured timezone (which
        # is how an import reads it back), or ISO text where a cell would lose part of the value.
        local = value.astimezone(zone).replace(tzinfo=None)
        return local if value.microsecond % 1000 == 0 and local.year >= 1900 else value.isoformat()
    if isinstance(value, date):
        return value if value.year >= 1900 else value.isoformat()  # Excel counts days from 1900
    return _text(value)

__all__ = ["ExportReport", "export_columns", "export_entities", "tags_text"]
