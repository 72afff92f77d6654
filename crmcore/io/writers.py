"""Streaming writers for CSV, JSON Lines and XLSX (openpyxl write-only mode).

A writer takes one row at a time and keeps nothing but the current row, so an
export of a million rows uses as little memory as one of ten.  Values arrive
already converted by the caller (see :mod:`crmcore.io.exporter`): text for CSV,
JSON types for JSON Lines, and text, numbers, booleans or dates for XLSX.

XLSX sheets look like the report workbooks (:mod:`crmcore.domain.spreadsheet`):
a bold, frozen header row, column widths, and number formats by column type.
``--excel`` CSV is UTF-8 with a byte order mark (:func:`excel_encoding`).
"""

from __future__ import annotations

import codecs
import csv
import io
import json
import re
import sys
from pathlib import Path
from collections.abc import Sequence
from typing import IO, Any

from ..domain.convert import json_default
from ..domain.errors import CRMError
from ..domain.spreadsheet import escape_formula, xlsx_column_width, xlsx_number_format

XLSX_MAX_ROWS = 1_048_576
XLSX_MAX_CELL = 32_767
# Characters XML 1.0 (and so XLSX) cannot hold.
_ILLEGAL_XML = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f]")


class WriteError(CRMError):
    """A value cannot be written in the chosen format."""


def excel_encoding(encoding: str | None, excel: bool | None, default: bool = False) -> str:
    """The encoding of a CSV file for ``--excel`` / ``--no-excel`` (None: the configured ``default``).

    Excel reads a CSV file as UTF-8 only when it starts with a byte order mark,
    so ``--excel`` writes ``utf-8-sig``.  An explicit ``--encoding`` other than
    UTF-8 wins over the configured default and is an error with ``--excel``.
    """
    utf8 = encoding is None or codecs.lookup(encoding).name in ("utf-8", "utf-8-sig")
    if excel and not utf8:
        raise WriteError(f"--excel writes UTF-8 with a byte order mark; it cannot be combined with "
                         f"--encoding {encoding}")
    if excel or (excel is None and default and utf8):
        return "utf-8-sig"
    return encoding or "utf-8"


def open_writer(target: str | Path | IO[bytes] | None, format: str, columns: list[str], *,
                encoding: str = "utf-8", delimiter: str = ",", escape_formulas: bool = True,
                kinds: Sequence[str | None] | None = None) -> "Writer":
    """A writer for ``format`` to a path, a binary stream, or standard output (None or ``-``).

    CSV text cells that a spreadsheet would run as a formula get a leading
    quote (:func:`crmcore.domain.spreadsheet.escape_formula`) unless
    ``escape_formulas`` is false (``--raw-csv``, for programs reading the file).
    ``kinds`` (one per column: ``decimal``, ``date``, ``datetime`` ... or None)
    give XLSX cells their number formats.
    """
    if format == "xlsx":
        if target is None or str(target) == "-" or not isinstance(target, (str, Path)):
            raise WriteError("XLSX needs an output file: give --output FILE.xlsx")
        return XLSXWriter(Path(target), columns, kinds)
    if (target is None or str(target) == "-") and not hasattr(sys.stdout, "buffer"):
        text: Any = sys.stdout  # a text-only stdout (embedding, some test runners): its own encoding
        owned = None
    else:
        stream, owned = _binary_stream(target)
        text = io.TextIOWrapper(stream, encoding=encoding, newline="", errors="strict", write_through=False)
    if format == "jsonl":
        return JSONLWriter(text, owned, columns)
    return CSVWriter(text, owned, columns, delimiter, escape_formulas)


def _binary_stream(target: str | Path | IO[bytes] | None) -> tuple[IO[bytes], bool]:
    if target is None or str(target) == "-":
        sys.stdout.flush()
        return sys.stdout.buffer, False
    if isinstance(target, (str, Path)):
        return open(target, "wb"), True
    return target, False


class Writer:
    columns: list[str]
    rows = 0

    def write_row(self, values: list[Any]) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def write_record(self, record: dict[str, Any]) -> None:
        self.write_row([record.get(c) for c in self.columns])

    def close(self) -> None:  # pragma: no cover - abstract
        raise NotImplementedError


class _TextWriter(Writer):
    def __init__(self, text: io.TextIOWrapper, owned: bool | None):
        self.text, self.owned = text, owned

    def close(self) -> None:
        self.text.flush()
        if self.owned:
            self.text.close()
        elif self.owned is False:  # our wrapper around someone else's binary stream
            self.text.detach()


class CSVWriter(_TextWriter):
    """CSV rows; text that would be a spreadsheet formula is escaped (numbers, negative ones too, are not)."""

    def __init__(self, text: io.TextIOWrapper, owned: bool | None, columns: list[str], delimiter: str = ",",
                 escape_formulas: bool = True):
        super().__init__(text, owned)
        self.columns = columns
        self.encoding = text.encoding
        self.escape = escape_formulas
        self.writer = csv.writer(text, delimiter=delimiter, lineterminator="\r\n")
        self._write(columns)

    def _write(self, values: list[Any]) -> None:
        if self.escape:
            values = [escape_formula(v) if isinstance(v, str) else v for v in values]
        try:
            self.writer.writerow(values)
        except UnicodeEncodeError as exc:
            bad = exc.object[exc.start:exc.end]
            raise WriteError(f"{bad!r} cannot be written in {self.encoding}; use --encoding utf-8") from None

    def write_row(self, values: list[Any]) -> None:
        self._write(["" if v is None else v for v in values])
        self.rows += 1


class JSONLWriter(_TextWriter):
    def __init__(self, text: io.TextIOWrapper, owned: bool | None, columns: list[str]):
        super().__init__(text, owned)
        self.columns = columns

    def write_row(self, values: list[Any]) -> None:
        self.write_record(dict(zip(self.columns, values)))

    def write_record(self, record: dict[str, Any]) -> None:
        self.text.write(json.dumps(record, ensure_ascii=False, default=json_default))
        self.text.write("\n")
        self.rows += 1


class XLSXWriter(Writer):
    """One sheet with a bold, frozen header row, column widths and number formats; text cells
    are always text (a leading ``=`` is not a formula).

    A ``decimal`` column is money in the row's ``currency`` column (its minor
    unit), as in the report workbooks.
    """

    def __init__(self, path: Path, columns: list[str], kinds: Sequence[str | None] | None = None):
        import openpyxl
        from openpyxl.styles import Font
        from openpyxl.utils import get_column_letter

        self.path, self.columns = path, columns
        self.kinds = list(kinds) if kinds is not None else [None] * len(columns)
        self.book = openpyxl.Workbook(write_only=True)
        self.sheet = self.book.create_sheet("data")
        # Write-only sheets take widths and panes before the first row.
        for index, (column, kind) in enumerate(zip(columns, self.kinds), 1):
            self.sheet.column_dimensions[get_column_letter(index)].width = xlsx_column_width(column, kind)
        self.sheet.freeze_panes = "A2"
        self._formats = [None if kind in (None, "decimal") else xlsx_number_format(kind) for kind in self.kinds]
        self._currency = columns.index("currency") if "decimal" in self.kinds and "currency" in columns else None
        bold = Font(bold=True)
        header = [self._cell(c) for c in columns]
        for cell in header:
            cell.font = bold
        self.sheet.append(header)

    def _cell(self, value: Any, number_format: str | None = None) -> Any:
        from openpyxl.cell import WriteOnlyCell

        if isinstance(value, str):
            if len(value) > XLSX_MAX_CELL:
                raise WriteError(f"a value of {len(value)} characters does not fit an XLSX cell "
                                 f"(at most {XLSX_MAX_CELL}); export to CSV or JSON Lines")
            if _ILLEGAL_XML.search(value):
                raise WriteError(f"{value[:40]!r} holds control characters XLSX cannot store; "
                                 "export to CSV or JSON Lines")
            cell = WriteOnlyCell(self.sheet, value=value)
            cell.data_type = "s"
            return cell
        if number_format is not None and value is not None and not isinstance(value, bool):
            cell = WriteOnlyCell(self.sheet, value=value)
            cell.number_format = number_format
            return cell
        return value

    def _row_formats(self, values: list[Any]) -> list[str | None]:
        if self._currency is None:
            return self._formats
        currency = values[self._currency]
        money = xlsx_number_format("decimal", currency) if isinstance(currency, str) and currency else None
        return [money if kind == "decimal" else f for kind, f in zip(self.kinds, self._formats)]

    def write_row(self, values: list[Any]) -> None:
        if self.rows + 1 >= XLSX_MAX_ROWS:
            raise WriteError(f"XLSX holds at most {XLSX_MAX_ROWS - 1} data rows; export to CSV or JSON Lines")
        self.sheet.append([self._cell(v, f) for v, f in zip(values, self._row_formats(values))])
        self.rows += 1

    def close(self) -> None:
        try:
            self.book.save(self.path)
        except OSError as exc:
            raise WriteError(f"cannot write {self.path}: {exc.strerror or exc}") from None


__all__ = ["CSVWriter", "JSONLWriter", "WriteError", "Writer", "XLSXWriter", "excel_encoding", "open_writer"]


