"""Reports: the engine that runs report generators and renders their tables.

Plugins supply :class:`Report` generators (pipeline, forecast, cohorts, ...)
and extra :class:`Renderer` formats; a report returns a
:class:`ReportResult` (typed columns, rows, optional charts) aggregated in
SQL, and the core renders it as a terminal table, CSV or JSON
(``crm.reports``).
"""

from .dashboard import DashboardEntry, dashboard_index, write_output
from .engine import ReportEngine, rows_of
from .labels import month_of_label
from .protocol import (
           CHART_KINDS,
           COLUMN_TYPES,
           Chart,
           Column,
           Renderer,
           Report,
           ReportContext,
           ReportResult,
)
from .renderers import CORE_RENDERERS, render_csv, render_json, render_table

__all__ = ["CHART_KINDS", "COLUMN_TYPES", "CORE_RENDERERS", "Chart", "Column", "DashboardEntry", "Renderer", "Report",
           "ReportContext", "ReportEngine", "ReportResult", "dashboard_index", "month_of_label", "render_csv", "render_json",
           "render_table", "rows_of", "write_output"]
