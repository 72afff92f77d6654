"""The ``xlsx`` renderer: one worksheet per table, typed cells.

Numbers are numbers (money as Decimal with a number format at the currency's
minor unit), percentages are shares formatted ``0.00%``, dates are dates and
datetimes are Excel datetimes in UTC (Excel has no time zones; the header
says UTC).  A last sheet "About" holds the title, as-of and notes.
"""

from __future__ import annotations

import io
import re
from datetime import date, datetime, timezone
from typing import Any

import crmcore

BAD_SHEET_CHARS = re.compile(r"[\[\]:*?/\\]")


def _number_format(column: crmcore.Column) -> str | None:
    return crmcore.xlsx_number_format(column.type, column.currency)  # the look of crm export's sheets too


# What a worksheet cannot hold (XML 1.0 forbids these control characters): shown as U+FFFD.
_ILLEGAL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f]")


def _value(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.astimezone(timezone.utc).replace(tzinfo=None)
    if isinstance(value, (date, int, float)) or value is None:
        return value
    if hasattr(value, "is_finite"):  # Decimal: openpyxl writes it as a number
        return value
    # A report title can carry option values as typed (a filter with a form feed): never a failed render.
    return _ILLEGAL.sub("\ufffd", str(value))


def _as_text(cells: Any) -> None:
    """Text stays text: openpyxl would store a value starting with ``=`` as a live formula."""
    for cell in cells:
        if isinstance(cell.value, str) and cell.data_type == "f":
            cell.data_type = "s"


def _sheet_name(title: str, taken: set[str]) -> str:
    base = BAD_SHEET_CHARS.sub(" ", title).strip()[:31] or "Sheet"
    name, n = base, 2
    while name.lower() in taken:
        suffix = f" ({n})"
        name, n = base[:31 - len(suffix)] + suffix, n + 1
    taken.add(name.lower())
    return name


def _header(column: crmcore.Column) -> str:
    label = column.label
    if column.currency:
        label += f" ({column.currency})"
    return label + (" (UTC)" if column.type == "datetime" else "")


def render_xlsx(result: crmcore.ReportResult) -> bytes:
    """The report as an XLSX workbook (bytes)."""
    # openpyxl loads on the first XLSX render, not when the renderer is registered (start-up time).
    from openpyxl import Workbook
    from openpyxl.styles import Font

    book = Workbook()
    first = book.active
    if first is not None:  # always there: a new workbook starts with one empty sheet
        book.remove(first)
    taken: set[str] = set()
    bold = Font(bold=True)
    for table in result.tables():
        sheet = book.create_sheet(_sheet_name(table.title, taken))
        sheet.append([_header(c) for c in table.columns])
        _as_text(sheet[1])
        for cell in sheet[1]:
            cell.font = bold
        formats = [_number_format(c) for c in table.columns]
        for row in table.rows:
            sheet.append([_value(v) for v in row])
            _as_text(sheet[sheet.max_row])
            for cell, number_format in zip(sheet[sheet.max_row], formats):
                if number_format and cell.value is not None:
                    cell.number_format = number_format
        for i, column in enumerate(table.columns, 1):
            sheet.column_dimensions[sheet.cell(1, i).column_letter].width = crmcore.xlsx_column_width(_header(column))
        sheet.freeze_panes = "A2"
    about = book.create_sheet(_sheet_name("About", taken))
    about.append(["report", _value(result.title)])
    about.append(["as of (UTC)", _value(result.as_of)])
    for table in result.tables():
        for note in table.notes:
            about.append(["note", _value(note)])
    for row in about.iter_rows():
        _as_text(row)
    buffer = io.BytesIO()
    book.save(buffer)
    return buffer.getvalue()
