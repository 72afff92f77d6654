"""Reports: generators from plugins, renderers in the core and from plugins.

A :class:`Report` aggregates in SQL and returns a :class:`ReportResult`
(columns, rows, optional chart specs).  Renderers turn a result into text or
bytes: the core has ``table`` (rich on a terminal, plain box text otherwise),
``csv`` and ``json``; plugins add more through ``register_renderers``.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable, Mapping, Sequence
from datetime import date, datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any

import attrs
from rich.console import Console
from rich.table import Table

from .components import Component, EngineContext, build_options
from .registry import Registry

if TYPE_CHECKING:
    from .app import CRM

COLUMN_TYPES = ("str", "int", "decimal", "float", "percent", "date", "datetime")


@attrs.frozen
class Column:
    """A result column: its key, type (one of COLUMN_TYPES) and display title."""

    name: str
    type: str = attrs.field(default="str", validator=attrs.validators.in_(COLUMN_TYPES))
    title: str | None = None

    @property
    def label(self) -> str:
        return self.title or self.name.replace("_", " ")


@attrs.frozen
class Chart:
    """A chart a renderer may draw: ``kind`` bar/stacked-bar/line/funnel/heatmap."""

    kind: str
    title: str
    x: str
    y: tuple[str, ...]


@attrs.frozen
class ReportResult:
    """What a report returns: a table plus optional charts and notes."""

    title: str
    columns: tuple[Column, ...]
    rows: tuple[tuple[Any, ...], ...]
    charts: tuple[Chart, ...] = ()
    notes: tuple[str, ...] = ()
    as_of: datetime | None = None

    def records(self) -> list[dict[str, Any]]:
        names = [c.name for c in self.columns]
        return [dict(zip(names, row)) for row in self.rows]


class ReportContext(EngineContext):
    """What a report sees: a read-only unit of work, ``as_of``, the configuration."""


class Report(Component):
    """Base class of report generators."""

    def run(self, ctx: ReportContext, options: Any) -> ReportResult:
        raise NotImplementedError


@attrs.frozen
class Renderer:
    """An output format: ``render(result) -> str | bytes``."""

    name: str
    render: Callable[[ReportResult], str | bytes]
    extension: str
    description: str = ""


def _cell(value: Any) -> Any:
    """JSON/CSV text of a value: Decimal exactly, dates ISO."""
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, (date, datetime)):
        return value.isoformat()
    return value


def render_csv(result: ReportResult) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow([c.name for c in result.columns])
    for row in result.rows:
        writer.writerow(["" if v is None else _cell(v) for v in row])
    return buffer.getvalue()


def render_json(result: ReportResult) -> str:
    document = {
        "title": result.title,
        "as_of": _cell(result.as_of),
        "columns": [attrs.asdict(c) for c in result.columns],
        "rows": [{c.name: _cell(v) for c, v in zip(result.columns, row)} for row in result.rows],
        "charts": [attrs.asdict(c) for c in result.charts],
        "notes": list(result.notes),
    }
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
    return str(_cell(value))


def render_table(result: ReportResult, terminal: bool = False, width: int = 120) -> str:
    table = Table(title=result.title, show_lines=False)
    for column in result.columns:
        numeric = column.type in ("int", "decimal", "float", "percent")
        table.add_column(column.label, justify="right" if numeric else "left")
    for row in result.rows:
        table.add_row(*(_display(v, c) for v, c in zip(row, result.columns)))
    console = Console(file=io.StringIO(), width=width, force_terminal=terminal, color_system=None
                      if not terminal else "auto", record=False)
    console.print(table)
    for note in result.notes:
        console.print(note)
    return console.file.getvalue()


CORE_RENDERERS = (
    Renderer("table", render_table, "txt", "a box table for people"),
    Renderer("csv", render_csv, "csv", "comma-separated values"),
    Renderer("json", render_json, "json", "columns, rows and charts as JSON"),
)


class ReportEngine:
    """``crm.reports``: list, run and render reports."""

    def __init__(self, crm: "CRM"):
        self.crm = crm
        self.registry: Registry[Report] = Registry("report")
        self.renderers: Registry[Renderer] = Registry("renderer")
        for renderer in CORE_RENDERERS:
            self.renderers.add(renderer, "crmcore")

    def list(self) -> list[Report]:
        return list(self.registry)

    def run(self, name: str, as_of: str | date | datetime | None = None,
            options: Mapping[str, Any] | None = None) -> ReportResult:
        """Run a report as of ``as_of`` (default now) with ``options``."""
        report = self.registry.get(name)
        opts = build_options(report, "reports", self.crm.config, options)
        moment = self.crm.as_of(as_of)
        with self.crm.unit(readonly=True) as uow:
            self.crm.authorize("reports.run", name)
            result = report.run(ReportContext(uow, moment), opts)
        return attrs.evolve(result, as_of=moment)

    def render(self, name: str, format: str = "table", as_of: str | date | datetime | None = None,
               options: Mapping[str, Any] | None = None) -> str | bytes:
        """Run a report and render it in ``format``."""
        renderer = self.renderers.get(format)
        return renderer.render(self.run(name, as_of, options))


def rows_of(result: Sequence[Any]) -> tuple[tuple[Any, ...], ...]:
    """Rows from a SQLAlchemy result, as plain tuples."""
    return tuple(tuple(r) for r in result)
