"""Reports: generators from plugins, renderers in the core and from plugins.

A :class:`Report` aggregates in SQL and returns a :class:`ReportResult`
(columns, rows, optional chart specs).  Renderers turn a result into text or
bytes: the core has ``table`` (rich on a terminal, plain box text otherwise),
``csv`` and ``json``; plugins add more through ``register_renderers``.
"""

from __future__ import annotations

import csv
import html
import io
import json
from collections.abc import Callable, Mapping, Sequence
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs
from rich.console import Console
from rich.table import Table

from .components import Component, EngineContext, build_options
from .errors import ConfigError, CRMError
from .registry import Registry

if TYPE_CHECKING:
    from .app import CRM

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
    """

    kind: str
    title: str
    x: str
    y: tuple[str, ...]
    group: str | None = None
    exclude: tuple[str, ...] = ()


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
    """The table as CSV; each section follows after a blank line, its title and its header."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    for n, table in enumerate(result.tables()):
        if n:
            writer.writerow([])
            writer.writerow([table.title])
        writer.writerow([c.name for c in table.columns])
        for row in table.rows:
            writer.writerow(["" if v is None else _cell(v) for v in row])
    return buffer.getvalue()


def _optional_unset(attribute: Any, value: Any) -> bool:
    """Leave out the optional fields added later when unset, so older readers see the same JSON."""
    return not ((attribute.name in ("currency", "group") and value is None)
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
    return str(_cell(value))


def render_table(result: ReportResult, terminal: bool = False, width: int = 120) -> str:
    console = Console(file=io.StringIO(), width=width, force_terminal=terminal, color_system=None
                      if not terminal else "auto", record=False)
    for part in result.tables():
        table = Table(title=part.title, show_lines=False)
        for column in part.columns:
            numeric = column.type in ("int", "decimal", "float", "percent")
            table.add_column(column.label, justify="right" if numeric else "left")
        for row in part.rows:
            table.add_row(*(_display(v, c) for v, c in zip(row, part.columns)))
        console.print(table)
        for note in part.notes:
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
        _check_option_names(report, options)
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

    def write(self, name: str, path: str | Path, format: str = "table",
              as_of: str | date | datetime | None = None, options: Mapping[str, Any] | None = None) -> Path:
        """Run, render and write a report to ``path``; an unwritable path is a CRMError."""
        rendered = self.render(name, format, as_of, options)
        return write_output(Path(path), rendered)

    def dashboard(self, directory: str | Path, as_of: str | date | datetime | None = None,
                  format: str = "html") -> list[DashboardEntry]:
        """Write every report as ``NAME.html`` (or ``format``) into ``directory`` plus an ``index.html``.

        A report that cannot run (a :class:`CRMError`, e.g. missing
        configuration) is listed on the index with its error instead of
        stopping the others.
        """
        renderer = self.renderers.get(format)  # UnknownComponent names the formats there are
        folder = Path(directory)
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise CRMError(f"cannot create output directory {folder}: {exc.strerror or exc}") from None
        moment = self.crm.as_of(as_of)
        entries = []
        for report in self.list():
            file = f"{report.name}.{renderer.extension}"
            try:
                result = self.run(report.name, moment)
            except CRMError as exc:
                entries.append(DashboardEntry(report.name, report.description, None, None, str(exc)))
                continue
            write_output(folder / file, renderer.render(result))
            entries.append(DashboardEntry(report.name, report.description, file, result.title, None))
        write_output(folder / "index.html", dashboard_index(entries, moment))
        return entries


@attrs.frozen
class DashboardEntry:
    """One report on the dashboard: its file, or the error that kept it out."""

    name: str
    description: str
    file: str | None
    title: str | None
    error: str | None


def write_output(path: Path, rendered: str | bytes) -> Path:
    """Write rendered output; a missing folder or no permission is a CRMError naming the path."""
    data = rendered.encode("utf-8") if isinstance(rendered, str) else rendered
    try:
        path.write_bytes(data)
    except OSError as exc:
        raise CRMError(f"cannot write {path}: {exc.strerror or exc}") from None
    return path


def dashboard_index(entries: Sequence[DashboardEntry], as_of: datetime) -> str:
    """A small self-contained HTML page linking every report written."""
    items = []
    for entry in entries:
        if entry.file:
            items.append(f'<li><a href="{html.escape(entry.file, quote=True)}">{html.escape(entry.name)}</a>'
                         f" &mdash; {html.escape(entry.title or '')}<br><small>{html.escape(entry.description)}"
                         "</small></li>")
        else:
            items.append(f"<li>{html.escape(entry.name)} &mdash; <em>not available: "
                         f"{html.escape(entry.error or '')}</em></li>")
    return ("<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>Reports</title>"
            "<style>body{font-family:sans-serif;margin:2em}li{margin:.6em 0}</style></head><body>"
            f"<h1>Reports</h1><p>As of {html.escape(as_of.isoformat())}</p><ul>{''.join(items)}</ul>"
            "</body></html>\n")


def _check_option_names(report: Report, options: Mapping[str, Any] | None) -> None:
    """An option (filter) the report does not take is an error naming the ones it does."""
    if not options or not isinstance(options, Mapping):
        return
    known = {f.name for f in attrs.fields(report.options_type)} if report.options_type else set()
    unknown = sorted(set(options) - known)
    if unknown:
        takes = ", ".join(sorted(known)) or "none"
        raise ConfigError(f"report {report.name!r} has no filter or option "
                          f"{', '.join(repr(k) for k in unknown)} (it takes: {takes})")


def rows_of(result: Sequence[Any]) -> tuple[tuple[Any, ...], ...]:
    """Rows from a SQLAlchemy result, as plain tuples."""
    return tuple(tuple(r) for r in result)
