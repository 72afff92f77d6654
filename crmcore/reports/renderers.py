"""The core's renderers: a terminal table, CSV and JSON.

Plugins add more formats (Markdown, XLSX, HTML with charts) through
``register_renderers``.
"""

from __future__ import annotations

import csv
import io
import json
from datetime import date, datetime
from decimal import Decimal
from typing import Any

import attrs

from ..domain.spreadsheet import escape_formula
from ..domain.terminal import build_table, fits, is_identifier, vertical_table
from .protocol import (
    Column,
    Renderer,
    ReportResult,
)


def _cell(value: Any) -> Any:
    """JSON/CSV text of a value: Decimal exactly, dates ISO."""
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, (date, datetime)):
        return value.isoformat()
    return value


def render_csv(result: ReportResult, escape_formulas: bool = True) -> str:
    """The table as CSV; each section follows after a blank line, its title and its header.

    Text a spreadsheet would run as a formula (``=...``, ``@...``) gets a
    leading quote; numbers, negative ones too, are written as they are.
    ``csv-raw`` (:func:`render_csv_raw`) leaves text alone for programs.
    """
    cell = _safe_cell if escape_formulas else _cell
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    for n, table in enumerate(result.tables()):
        if n:
            writer.writerow([])
            writer.writerow([table.title])
        writer.writerow([c.name for c in table.columns])
        for row in table.rows:
            writer.writerow(["" if v is None else cell(v) for v in row])
    return buffer.getvalue()


def render_csv_raw(result: ReportResult) -> str:
    """:func:`render_csv` without the formula escaping, for programs reading the file."""
    return render_csv(result, escape_formulas=False)


def _safe_cell(value: Any) -> Any:
    return escape_formula(value) if isinstance(value, str) else _cell(value)


def _optional_unset(attribute: Any, value: Any) -> bool:
    """Leave out the optional fields added later when unset, so older readers see the same JSON."""
    return not ((attribute.name in ("currency", "group", "drill", "behind") and value is None)
                or (attribute.name == "exclude" and not value))


def _json_table(result: ReportResult) -> dict[str, Any]:
    return {
        "title": result.title,
        "columns": [attrs.asdict(c, filter=_optional_unset) for c in result.columns],
        "rows": [{c.name: _cell(v) for c, v in zip(result.columns, row)} for row in result.rows],
        "charts": [attrs.asdict(c, filter=_optional_unset) for c in result.charts],
        "notes": list(result.notes),
    }


def render_json(result: ReportResult) -> str:
    document = _json_table(result)
    document = {"title": document.pop("title"), "as_of": _cell(result.as_of), **document}
    if result.sections:
        document["sections"] = [_json_table(section) for section in result.sections]
    return json.dumps(document, ensure_ascii=False, indent=2)


def _display(value: Any, column: Column) -> str:
    if value is None:
        return ""
    if column.type == "percent":
        return f"{value:.1%}" if isinstance(value, float) else f"{Decimal(value) * 100:.1f}%"
    if column.type == "decimal":
        return f"{Decimal(value):,}"
    if column.type == "float":
        return f"{value:,.2f}"
    if column.type == "int" and isinstance(value, int) and not is_identifier(column.name):
        return f"{value:,}"
    return str(_cell(value))


def render_table(result: ReportResult, terminal: bool = False, width: int = 120) -> str:
    """The result as box tables ``width`` columns wide.

    Numbers are right-aligned and never cut: a table whose columns cannot fit
    is drawn one row at a time, column under column (see
    :mod:`crmcore.domain.terminal`).
    """
    buffer = io.StringIO()
    from rich.console import Console  # here: only a table rendered for a person needs rich

    console = Console(file=buffer, width=width, force_terminal=terminal, color_system=None
                      if not terminal else "auto", record=False)
    for part in result.tables():
        labels = [column.label for column in part.columns]
        numeric = {c.label for c in part.columns if c.type in ("int", "decimal", "float", "percent")}
        rows = [dict(zip(labels, (_display(v, c) for v, c in zip(row, part.columns)))) for row in part.rows]
        table = build_table(rows, labels, part.title, numeric=numeric)
        if fits(console, table):
            console.print(table)
        else:
            if part.title:
                console.print(part.title)
            for n, row in enumerate(rows, 1):
                console.print(vertical_table(row, labels, title=f"{n} of {len(rows)}"))
        for note in part.notes:
            console.print(note)
    return buffer.getvalue()


CORE_RENDERERS = (
    Renderer("table", render_table, "txt", "a box table for people"),
    Renderer("csv", render_csv, "csv", "comma-separated values (text that looks like a formula is quoted)"),
    Renderer("csv-raw", render_csv_raw, "csv", "comma-separated values as they are, for programs"),
    Renderer("json", render_json, "json", "columns, rows and charts as JSON"),
)
