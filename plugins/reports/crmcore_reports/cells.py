"""How a cell looks in text formats (Markdown, HTML), by column type.

Decimals keep every digit they have (money arrives at its minor unit);
percentages are shares (0.125) shown as ``12.5%``.
"""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal
from typing import Any

import crmcore

NUMERIC = ("int", "decimal", "float", "percent")


def display(value: Any, column: crmcore.Column) -> str:
    """The text of one cell."""
    if value is None:
        return ""
    if column.type == "percent":
        return f"{Decimal(str(value)) * 100:.2f}%"
    if column.type == "decimal":
        return f"{Decimal(value):,}"
    if column.type == "float":
        return f"{value:,.1f}"
    if column.type == "int":
        return f"{value:,}"
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%d %H:%M UTC")
    if isinstance(value, date):
        return value.isoformat()
    return str(value)
