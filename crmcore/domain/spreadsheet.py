"""Text cells a spreadsheet will not run: the CSV formula-injection rule.

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


__all__ = ["FORMULA_TRIGGERS", "escape_formula", "needs_escape", "unescape_formula"]
