"""Reports: generators from plugins, renderers in the core and from plugins.

A :class:`Report` aggregates in SQL and returns a :class:`ReportResult`
(columns, rows, optional chart specs).  Renderers turn a result into text or
bytes: the core has ``table`` (rich on a terminal, plain box text otherwise),
``csv`` and ``json``; plugins add more through ``register_renderers``.
"""

from __future__ import annotations

import builtins
from collections.abc import Callable, Mapping, Sequence
from datetime import date, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs
from sqlalchemy import select

from ..application.components import build_options
from ..application.registry import Registry
from ..domain.errors import ConfigError, CRMError, ValidationError
from ..store import tables
from .dashboard import DashboardEntry, dashboard_index, write_output
from .protocol import (
    Renderer,
    Report,
    ReportContext,
    ReportResult,
)
from .renderers import CORE_RENDERERS

if TYPE_CHECKING:
    from ..app import CRM

class ReportEngine:
    """``crm.reports``: list, run and render reports."""

    def __init__(self, crm: "CRM"):
        self.crm = crm
        self.registry: Registry[Report] = Registry("report")
        self.renderers: Registry[Renderer] = Registry("renderer")
        for renderer in CORE_RENDERERS:
            self.renderers.add(renderer, "crmcore")

    def list(self) -> builtins.list[Report]:
        """The registered reports: name and description of each."""
        self.crm.authorize("report.list", None)
        return list(self.registry)

    def run(self, name: str, as_of: str | date | datetime | None = None,
            options: Mapping[str, Any] | None = None) -> ReportResult:
        """Run a report as of ``as_of`` (default now) with ``options``."""
        report = self.registry.get(name)
        _check_option_names(report, options)
        opts = build_options(report, "reports", self.crm.config, options)
        moment = self.crm.as_of(as_of)
        with self.crm.unit(replica=True) as uow:  # on the read replica when one is configured
            self.crm.authorize("report.run", name)
            result = report.run(ReportContext(uow, moment), opts)
        return attrs.evolve(result, as_of=moment)

    def customers_behind(self, name: str, chart: str, x: str, series: str | None = None,
                         as_of: str | date | datetime | None = None, options: Mapping[str, Any] | None = None,
                         *, before: int | None = None, limit: int = 50) -> builtins.list[int]:
        """The ids of the customers behind one element of a report's chart, newest first.

        ``chart`` is the chart's ``behind`` name, ``x`` and ``series`` the element (see
        :meth:`Report.customers_behind`); ``as_of`` and ``options`` those the chart was drawn
        with.  One set-based query in a read-only unit, so only the user's visible customers
        (and deals, interactions, ledger entries) count; archived customers are left out.
        ``before``: keyset paging, ids below this one; ``limit``: at most so many ids.
        Needs ``report.run`` for the report and ``customer.list``.
        """
        report = self.registry.get(name)
        _check_option_names(report, options)
        opts = build_options(report, "reports", self.crm.config, options)
        moment = self.crm.as_of(as_of)
        with self.crm.unit(replica=True) as uow:  # read-only: scoped to the user's visible records
            self.crm.authorize("report.run", name)
            self.crm.authorize("customer.list", None)
            behind = report.customers_behind(ReportContext(uow, moment), opts, chart, x, series)
            if behind is None:
                raise ValidationError.single("chart", f"report {name!r} has no drill-down for chart {chart!r}",
                                             "report")
            c = tables.customers
            query = select(c.c.id).where(c.c.archived_at.is_(None), c.c.id.in_(behind))
            if before is not None:
                query = query.where(c.c.id < before)
            return list(uow.conn.execute(query.order_by(c.c.id.desc()).limit(limit)).scalars())

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
                  format: str = "html",
                  progress: Callable[[int, int, str], None] | None = None) -> builtins.list[DashboardEntry]:
        """Write every report as ``NAME.html`` (or ``format``) into ``directory`` plus an ``index.html``.

        A report that cannot run (a :class:`CRMError`, e.g. missing
        configuration) is listed on the index with its error instead of
        stopping the others.

        :param progress: called as ``progress(done, total, report)`` before each
            report and once at the end (``crm report dashboard`` draws a bar).
        """
        self.crm.authorize("report.dashboard", str(directory))
        renderer = self.renderers.get(format)  # UnknownComponent names the formats there are
        folder = Path(directory)
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise CRMError(f"cannot create output directory {folder}: {exc.strerror or exc}") from None
        moment = self.crm.as_of(as_of)
        entries = []
        reports = self.list()
        for n, report in enumerate(reports):
            if progress is not None:
                progress(n, len(reports), report.name)
            file = f"{report.name}.{renderer.extension}"
            try:
                result = self.run(report.name, moment)
            except CRMError as exc:
                entries.append(DashboardEntry(report.name, report.description, None, None, str(exc)))
                continue
            write_output(folder / file, renderer.render(result))
            entries.append(DashboardEntry(report.name, report.description, file, result.title, None))
        # A plugin may give the index (the web console: its dashboard, offline); else a list of links.
        pages = [page for page in self.crm.plugins.call("render_dashboard", crm=self.crm, entries=list(entries),
                                                        as_of=moment) if page is not None]
        write_output(folder / "index.html", pages[0] if pages else dashboard_index(entries, moment))
        if progress is not None:
            progress(len(reports), len(reports), "")
        return entries


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
