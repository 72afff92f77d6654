"""The ``html`` renderer: one self-contained page, tables and charts.

The page has no external resource at all (no script, stylesheet, font or
image URL): CSS is inline and each chart is an inline SVG whose text is glyph
outlines, so it opens the same offline and on a machine without CJK fonts.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Any

import crmcore

from .cells import NUMERIC, display
from .fonts import embedded_font_css

if TYPE_CHECKING:
    from jinja2 import Environment


@functools.cache
def _environment() -> Environment:
    """The page's Jinja2 environment, made on the first HTML render: the plugin loads with every
    command, and importing Jinja2 cost each one's start-up about 20 ms."""
    from jinja2 import Environment, PackageLoader, select_autoescape

    return Environment(loader=PackageLoader("crmcore_reports", "templates"),
                       autoescape=select_autoescape(["html", "j2"]), trim_blocks=True, lstrip_blocks=True)


def _table_view(table: crmcore.ReportResult) -> dict[str, Any]:
    from markupsafe import Markup

    from .charts import chart_svg  # matplotlib loads on the first HTML render only

    return {
        "title": table.title,
        "columns": [{"label": c.label + (f" ({c.currency})" if c.currency else ""), "numeric": c.type in NUMERIC}
                    for c in table.columns],
        "rows": [[display(v, c) for v, c in zip(row, table.columns)] for row in table.rows],
        "charts": [Markup(svg) for svg in (chart_svg(table, chart) for chart in table.charts) if svg],
        "notes": list(table.notes),
    }


def render_html(result: crmcore.ReportResult) -> str:
    """The report as one HTML page."""
    from markupsafe import Markup

    template = _environment().get_template("report.html.j2")
    tables = [_table_view(t) for t in result.tables()]
    # The text the browser draws itself (charts are outlines already); its CJK glyphs get embedded.
    text = " ".join([result.title, *(t["title"] for t in tables), *(c["label"] for t in tables for c in t["columns"]),
                     *(cell for t in tables for row in t["rows"] for cell in row), *(n for t in tables for n in t["notes"])])
    return template.render(title=result.title, as_of=result.as_of, tables=tables,
                           font_face=Markup(embedded_font_css(text)))
