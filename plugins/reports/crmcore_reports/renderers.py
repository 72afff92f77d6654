"""The renderers this plugin registers: ``markdown``, ``xlsx`` and ``html``."""

from __future__ import annotations

import crmcore

from .html import render_html
from .markdown import render_markdown
from .xlsx import render_xlsx

RENDERERS = (
    crmcore.Renderer("markdown", render_markdown, "md", "Markdown pipe tables"),
    crmcore.Renderer("xlsx", render_xlsx, "xlsx", "Excel workbook, one sheet per table, typed cells"),
    crmcore.Renderer("html", render_html, "html", "self-contained HTML page with tables and SVG charts"),
)
