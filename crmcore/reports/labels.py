"""Reading back the category labels reports put on their charts, for drill-downs
(:meth:`crmcore.reports.Report.customers_behind` is handed the label of the bar that was clicked)."""

from __future__ import annotations

from ..domain.errors import ValidationError


def month_of_label(label: str, field: str = "x") -> tuple[int, int]:
    """``(year, month)`` of a ``YYYY-MM`` chart category; a :class:`~crmcore.ValidationError` on
    ``field`` (the drill-down's ``x``) for anything else, so a forged key is a 422, not a 500."""
    try:
        year, month = (int(part) for part in label.split("-"))
        if not 1 <= month <= 12:
            raise ValueError(label)
    except ValueError:
        raise ValidationError.single(field, f"not a month (YYYY-MM): {label!r}", "report") from None
    return year, month
