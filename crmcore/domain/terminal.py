"""Rows as a terminal table for people: numbers never cut, no Python reprs.

Shared by the command line (``Session.emit``) and the report ``table``
renderer.  Numbers are right-aligned with thousands separators and never
wrapped or cut ("1,9…" is a wrong number, not a short one): when the columns
cannot fit the console's width the rows are drawn one record at a time, field
under field, instead.  Times are shown to the second in the configured zone.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from datetime import date, datetime, tzinfo
from decimal import Decimal
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rich.console import Console
    from rich.table import Table

# rich is imported by the functions that draw: a command printing JSON, or nothing, never loads it
# (importing it cost every command's start-up about 20 ms).


UNLIMITED = 1_000_000  # columns: "no limit" when measuring a table


def is_number(value: Any) -> bool:
    """Whether ``value`` is drawn as a number (right-aligned, never cut); booleans are not numbers."""
    return isinstance(value, (int, Decimal, float)) and not isinstance(value, bool)


def is_identifier(column: str) -> bool:
    """Whether a column holds ids (``id``, ``customer_id``): numbers, but without thousands separators."""
    return column == "id" or column.endswith("_id")


def cell_text(value: Any, zone: tzinfo | None = None, separators: bool = True) -> str:
    """One value as text for a person: ``12,000.50``, ``2026-06-30 18:00:00``, ``a=1, b=2``.

    :param zone: the zone times are shown in (default: as stored, UTC).
    :param separators: thousands separators in numbers (not for ids).
    """
    if value is None:
        return ""
    if isinstance(value, enum.Enum):
        return str(value.value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if is_number(value):
        return format(value, ",") if separators else str(value)
    if isinstance(value, datetime):
        shown = value.astimezone(zone) if zone is not None and value.tzinfo is not None else value
        return shown.strftime("%Y-%m-%d %H:%M:%S")
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, Mapping):
        return ", ".join(f"{k}={cell_text(v, zone, separators)}" for k, v in value.items())
    if isinstance(value, (list, tuple, set, frozenset)):
        sep = "; " if any(isinstance(v, Mapping) for v in value) else ", "
        return sep.join(cell_text(v, zone, separators) for v in value)
    return str(value)


def numeric_columns(rows: Sequence[Mapping[str, Any]], columns: Sequence[str]) -> set[str]:
    """Columns whose every non-empty value is a number."""
    found = set()
    for column in columns:
        values = [row.get(column) for row in rows if row.get(column) is not None]
        if values and all(is_number(v) for v in values):
            found.add(column)
    return found


def build_table(rows: Sequence[Mapping[str, Any]], columns: Sequence[str], title: str | None = None,
                zone: tzinfo | None = None, numeric: set[str] | None = None) -> Table:
    """A rich table: numeric columns right-aligned, unwrapped and as wide as their widest cell."""
    numeric = numeric_columns(rows, columns) if numeric is None else numeric
    cells = [[cell_text(row.get(c), zone, not is_identifier(c)) for c in columns] for row in rows]
    from rich.table import Table

    table = Table(title=title)
    for i, column in enumerate(columns):
        if column in numeric:
            widest = max([len(column)] + [len(r[i]) for r in cells])
            table.add_column(column, justify="right", no_wrap=True, min_width=widest)
        else:
            table.add_column(column, overflow="fold")
    for row_cells in cells:
        table.add_row(*row_cells)
    return table


def vertical_table(row: Mapping[str, Any], columns: Sequence[str], zone: tzinfo | None = None,
                   title: str | None = None) -> Table:
    """One record as a field/value table (the layout when the columns do not fit side by side)."""
    from rich.table import Table

    table = Table(title=title, show_header=False)
    table.add_column("field", style="bold", no_wrap=True)
    table.add_column("value", overflow="fold")
    for column in columns:
        table.add_row(column, cell_text(row.get(column), zone, not is_identifier(column)))
    return table


def fits(console: Console, table: Table) -> bool:
    """Whether ``table`` fits the console's width without cutting a column below its minimum."""
    # Measured without the console's limit: Measurement.get clamps to the width it is given.
    from rich.measure import Measurement

    measured = Measurement.get(console, console.options.update_width(UNLIMITED), table)
    return measured.minimum <= console.width


def print_rows(console: Console, rows: Sequence[Mapping[str, Any]], columns: Sequence[str],
               title: str | None = None, zone: tzinfo | None = None) -> None:
    """Print rows as one table when it fits ``console``, else one field/value table per row."""
    table = build_table(rows, columns, title, zone)
    if fits(console, table):
        console.print(table)
        return
    if title:
        console.print(title)
    for n, row in enumerate(rows, 1):
        console.print(vertical_table(row, columns, zone, title=f"{n} of {len(rows)}"))
