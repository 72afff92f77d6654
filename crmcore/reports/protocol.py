"""What a report generator is and what it returns.

A :class:`Report` (from a plugin) returns a :class:`ReportResult`: typed
:class:`Column` values, rows aggregated in SQL, and optional :class:`Chart`
specs.  A :class:`Renderer` turns a result into an output format.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

import attrs

from sqlalchemy import Select

from ..application.components import Component, EngineContext

COLUMN_TYPES = ("str", "int", "decimal", "float", "percent", "date", "datetime")


@attrs.frozen
class Column:
    """A result column: its key, type (one of COLUMN_TYPES) and display title.

    ``currency`` (ISO 4217) marks a ``decimal`` column as money, so renderers
    can show it at the currency's minor unit (an XLSX number format, say).
    """

    name: str
    type: str = attrs.field(default="str", validator=attrs.validators.in_(COLUMN_TYPES))
    title: str | None = None
    currency: str | None = None

    @property
    def label(self) -> str:
        """The column's heading: its title, or its name."""
        return self.title or self.name.replace("_", " ")


CHART_KINDS = ("bar", "stacked-bar", "line", "funnel", "heatmap")


@attrs.frozen
class Chart:
    """A chart a renderer may draw, declared by the report over its own columns.

    ``kind`` is one of CHART_KINDS:

    * ``bar`` / ``stacked-bar`` / ``line``: one category (or point) per distinct
      value of column ``x``, one series per column in ``y``; with ``group``,
      one series per distinct value of that column instead (``y`` then holds
      the single value column), e.g. revenue per month with a bar per owner.
    * ``funnel``: one band per row, labelled by ``x``, sized by ``y[0]``.
    * ``heatmap``: one row per row (labelled by ``x``), one cell per ``y`` column
      (with ``group``: one cell per distinct value of that column).

    ``exclude``: values of ``x`` left out of the chart (a total row, say).

    ``drill``: the customers behind a category, as a customer filter in the ``--where``
    language with ``{x}`` for the category's value (``"segment.rfm={x}"``); the web
    console opens those customers when a bar or point is clicked.  None: no drill-down.

    ``behind``: the name the report's :meth:`Report.customers_behind` knows this chart by,
    for a chart whose elements are not a customers filter (a forecast month: the customers
    with a deal won or expected then).  The web console asks
    :meth:`~crmcore.reports.engine.ReportEngine.customers_behind` for the customers behind a
    clicked element.  None: the report answers nothing for this chart.
    """

    kind: str
    title: str
    x: str
    y: tuple[str, ...]
    group: str | None = None
    exclude: tuple[str, ...] = ()
    drill: str | None = None
    behind: str | None = None


@attrs.frozen
class ReportResult:
    """What a report returns: a table plus optional charts and notes."""

    title: str
    columns: tuple[Column, ...]
    rows: tuple[tuple[Any, ...], ...]
    charts: tuple[Chart, ...] = ()
    notes: tuple[str, ...] = ()
    as_of: datetime | None = None
    #: Further tables of the same report (e.g. lost reasons under a win/loss
    #: summary), each with its own title, columns, rows and charts.
    sections: tuple["ReportResult", ...] = ()

    def records(self) -> list[dict[str, Any]]:
        """The rows as dictionaries keyed by column name."""
        names = [c.name for c in self.columns]
        return [dict(zip(names, row)) for row in self.rows]

    def tables(self) -> tuple["ReportResult", ...]:
        """This table followed by its sections (what renderers with pages or sheets walk)."""
        return (self, *self.sections)

    def column(self, name: str) -> list[Any]:
        """The values of one column, in row order."""
        index = [c.name for c in self.columns].index(name)
        return [row[index] for row in self.rows]


class ReportContext(EngineContext):
    """What a report sees: a read-only unit of work, ``as_of``, the configuration."""


class Report(Component):
    """Base class of report generators."""

    def run(self, ctx: ReportContext, options: Any) -> ReportResult:
        """Compute the report as of ``ctx.as_of`` with ``options``: aggregate in SQL, return a ReportResult."""
        raise NotImplementedError

    def customers_behind(self, ctx: ReportContext, options: Any, chart: str, x: str,
                         series: str | None) -> Select[Any] | None:
        """The customers behind one element of one of this report's charts, as a select of
        customer ids (duplicates allowed), or None when ``chart`` has no drill-down.

        ``chart`` is the chart's ``behind`` name, ``x`` the element's category as drawn
        (``str()`` of the ``x`` column's value; a heatmap's row), ``series`` the element's
        series: a ``y`` column's name, or the ``group`` column's value (a heatmap's cell).
        It runs in a read-only unit scoped to the user's visible records, with the options and
        ``as_of`` the chart was drawn with, so the set is the one the number counts.
        A category that cannot be one of the chart's is a :class:`ValidationError`.
        """
        return None


@attrs.frozen
class Renderer:
    """An output format: ``render(result) -> str | bytes``."""

    name: str
    render: Callable[[ReportResult], str | bytes]
    extension: str
    description: str = ""
