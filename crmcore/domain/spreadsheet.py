"""Spreadsheet rules shared by every file crmcore writes: the CSV formula-injection
rule, and the look of an XLSX sheet (number formats, column widths).

A spreadsheet opening a CSV file treats a cell that starts with ``=``, ``+``,
``-``, ``@``, a tab or a carriage return as a formula (``=HYPERLINK(...)``,
``-2+3``, ``@SUM(...)``).  Following the OWASP rule, such text gets a leading
single quote, which spreadsheets show as "this is text".  A number written as
text (``-5.00``, ``+86``) is not a formula and is left alone, so negative
amounts stay numbers.

The escaping is undone exactly by :func:`unescape_formula`, which the CSV
importer applies, so an exported file imports back to the original values
(text that already starts with quotes before a trigger gets one more).
"""

from __future__ import annotations

import re

from .validation import currency_digits

#: The first characters that make a spreadsheet read a cell as a formula.
FORMULA_TRIGGERS = frozenset("=+-@\t\r")
_NUMBER = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?")


def needs_escape(text: str) -> bool:
    """Whether ``text`` would be a formula in a spreadsheet (or is quoted text that looks like one)."""
    rest = text.lstrip("'")
    if not rest or rest[0] not in FORMULA_TRIGGERS:
        return False
    quoted = len(rest) != len(text)
    return quoted or not _NUMBER.fullmatch(text)


def escape_formula(text: str) -> str:
    """``text`` with a leading single quote when a spreadsheet would run it as a formula."""
    return "'" + text if needs_escape(text) else text


def unescape_formula(text: str) -> str:
    """The inverse of :func:`escape_formula`: drops the quote it added."""
    if text[:1] == "'" and needs_escape(text[1:]):
        return text[1:]
    return text


# -- XLSX sheets: one look for exports and report workbooks ---------------------------

#: Excel number formats by column type (the report column types; money is "decimal" with a currency).
_FORMATS = {"percent": "0.00%", "float": "#,##0.0", "int": "#,##0", "date": "yyyy-mm-dd",
            "datetime": "yyyy-mm-dd hh:mm:ss"}


def xlsx_number_format(kind: str, currency: str | None = None) -> str | None:
    """The Excel number format for a column of ``kind`` (``int``, ``float``, ``decimal``,
    ``percent``, ``date``, ``datetime``; anything else: None, the General format).

    Money (``decimal`` with an ISO 4217 ``currency``) shows the currency's minor
    unit: ``#,##0.00`` for CNY, ``#,##0`` for JPY.
    """
    if kind == "decimal":
        if currency is None:
            return None
        digits = currency_digits(currency)
        return "#,##0" + ("." + "0" * digits if digits else "")
    return _FORMATS.get(kind)


def xlsx_column_width(header: str, kind: str | None = None) -> int:
    """The width of a column from its header (10 to 40 characters; a datetime needs 19)."""
    width = max(10, min(40, len(header) + 2))
    return max(width, 20) if kind == "datetime" else width


__all__ = ["FORMULA_TRIGGERS", "escape_formula", "needs_escape", "unescape_formula", "xlsx_column_width",
           "xlsx_number_format"]
