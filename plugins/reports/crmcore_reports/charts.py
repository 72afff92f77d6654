"""Charts drawn with matplotlib (Agg, no display) as inline SVG.

Text is written as glyph outlines (``svg.fonttype = "path"``), so the SVG
needs no font on the viewing machine.  Latin text uses DejaVu Sans (bundled
with matplotlib); characters it lacks fall back to Noto Sans CJK, bundled by
the ``manimgx-fonts-cjk`` distribution, so 华东 draws as glyphs, not boxes,
on a machine without any system font.
"""

from __future__ import annotations

import dataclasses
import io
import math
import threading
from decimal import Decimal
from typing import Any

import crmcore
import matplotlib

matplotlib.use("Agg")  # before pyplot could ever be imported: never a GUI backend

from matplotlib import font_manager  # noqa: E402
from matplotlib.backends.backend_svg import FigureCanvasSVG  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from .fonts import FAMILY, cjk_font_path  # noqa: E402

MAX_CATEGORIES = 60
PALETTE = ("#4e79a7", "#f28e2b", "#59a14f", "#e15759", "#76b7b2", "#edc948", "#b07aa1", "#ff9da7",
           "#9c755f", "#bab0ac")
_fonts_lock = threading.Lock()
_fonts: list[str] | None = None


def font_families() -> list[str]:
    """Fonts in fallback order: DejaVu Sans, then the bundled CJK font (registered once)."""
    global _fonts
    with _fonts_lock:
        if _fonts is None:
            families = ["DejaVu Sans"]
            cjk = cjk_font_path()
            try:
                if cjk is None:
                    raise OSError("manimgx-fonts-cjk is not installed")
                font_manager.fontManager.addfont(str(cjk))
                # A variable font registers under its default instance's weight (100); matplotlib
                # draws that instance whatever the weight, so file it as normal to match without a
                # "Failed to find font weight" warning per chart.
                manager = font_manager.fontManager
                manager.ttflist = [dataclasses.replace(f, weight=400) if f.fname == str(cjk) else f
                                   for f in manager.ttflist]
                # A private lru_cache of FontManager (absent from matplotlib's stubs): cleared so
                # lookups see the font added above.
                font_manager.fontManager._findfont_cached.cache_clear()  # type: ignore[attr-defined]
                families.append(FAMILY)
            except (OSError, RuntimeError):  # still draw, with boxes for CJK
                pass
            _fonts = families
        return list(_fonts)


def _number(value: Any, percent: bool) -> float:
    """A plotted number (float is fine for drawing; the table keeps the exact value)."""
    if value is None:
        return math.nan
    number = float(value) if isinstance(value, (int, float, Decimal)) else math.nan
    return number * 100 if percent else number


def _series(table: crmcore.ReportResult, chart: crmcore.Chart) -> tuple[list[str], dict[str, list[float]]]:
    """Categories (x labels) and named series of numbers, pivoting on ``chart.group`` if set."""
    types = {c.name: c.type for c in table.columns}
    xs = ["" if v is None else str(v) for v in table.column(chart.x)]
    categories = [x for x in dict.fromkeys(xs) if x not in chart.exclude][:MAX_CATEGORIES]
    if chart.group:
        value, percent = chart.y[0], types[chart.y[0]] == "percent"
        groups = ["" if v is None else str(v) for v in table.column(chart.group)]
        names = list(dict.fromkeys(groups))
        series = {name: [math.nan] * len(categories) for name in names}
        position = {c: i for i, c in enumerate(categories)}
        for x, g, v in zip(xs, groups, table.column(value)):
            if x in position:
                series[g][position[x]] = _number(v, percent)
        return categories, series
    position = {c: i for i, c in enumerate(categories)}
    series = {}
    for name in chart.y:
        values = [math.nan] * len(categories)
        for x, v in zip(xs, table.column(name)):
            if x in position:
                values[position[x]] = _number(v, types[name] == "percent")
        series[_label(table, name)] = values
    return categories, series


def _label(table: crmcore.ReportResult, name: str) -> str:
    return next(c.label for c in table.columns if c.name == name)


def _draw(ax: Any, kind: str, categories: list[str], series: dict[str, list[float]]) -> None:
    positions = list(range(len(categories)))
    colors = [PALETTE[i % len(PALETTE)] for i in range(len(series))]
    if kind == "bar":
        width = 0.8 / max(1, len(series))
        for i, ((name, values), color) in enumerate(zip(series.items(), colors)):
            ax.bar([p + (i - (len(series) - 1) / 2) * width for p in positions], _zeros(values), width,
                   label=name, color=color)
    elif kind == "stacked-bar":
        bottom = [0.0] * len(categories)
        for (name, values), color in zip(series.items(), colors):
            heights = _zeros(values)
            ax.bar(positions, heights, 0.7, bottom=bottom, label=name, color=color)
            bottom = [b + h for b, h in zip(bottom, heights)]
    elif kind == "line":
        for (name, values), color in zip(series.items(), colors):
            ax.plot(positions, values, marker="o", label=name, color=color)
    ax.set_xticks(positions, categories, rotation=45 if len(categories) > 6 else 0,
                  ha="right" if len(categories) > 6 else "center")
    ax.grid(axis="y", alpha=0.3)
    if len(series) > 1:
        ax.legend(fontsize="small")


def _draw_funnel(ax: Any, categories: list[str], values: list[float]) -> None:
    widths = _zeros(values)
    top = max(widths) if widths and max(widths) > 0 else 1.0
    for i, (name, width) in enumerate(zip(categories, widths)):
        ax.barh(i, width, left=(top - width) / 2, color=PALETTE[0], height=0.8)
        ax.text(top / 2, i, f"{name}: {width:,.0f}", ha="center", va="center", color="black")
    ax.set_ylim(len(categories) - 0.5, -0.5)
    ax.set_xlim(0, top)
    ax.axis("off")


def _draw_heatmap(fig: Any, ax: Any, categories: list[str], series: dict[str, list[float]]) -> None:
    matrix = [[series[name][i] for name in series] for i in range(len(categories))]
    image = ax.imshow(matrix, aspect="auto", cmap="Blues")
    ax.set_yticks(range(len(categories)), categories)
    ax.set_xticks(range(len(series)), list(series), rotation=45 if len(series) > 8 else 0)
    if len(categories) * len(series) <= 400:
        for i, row in enumerate(matrix):
            for j, value in enumerate(row):
                if not math.isnan(value):
                    ax.text(j, i, f"{value:.0f}", ha="center", va="center", fontsize=7)
    fig.colorbar(image, ax=ax)


def _zeros(values: list[float]) -> list[float]:
    return [0.0 if math.isnan(v) else v for v in values]


def chart_svg(table: crmcore.ReportResult, chart: crmcore.Chart) -> str:
    """One chart of a table as an ``<svg>`` element (no XML prologue), or "" when it has no value to draw."""
    if chart.kind not in ("bar", "stacked-bar", "line", "funnel", "heatmap") or not table.rows:
        return ""
    categories, series = _series(table, chart)
    if all(math.isnan(v) for values in series.values() for v in values):
        return ""  # nothing to draw (no targets set, say): no empty axes on the page
    with matplotlib.rc_context({"svg.fonttype": "path", "font.family": font_families(), "font.size": 9}):
        height = max(3.2, min(12, 0.35 * len(categories) + 1.5)) if chart.kind == "heatmap" else 3.6
        fig = Figure(figsize=(8, height))
        FigureCanvasSVG(fig)
        ax = fig.add_subplot()
        if chart.kind == "funnel":
            _draw_funnel(ax, categories, next(iter(series.values())))
        elif chart.kind == "heatmap":
            _draw_heatmap(fig, ax, categories, series)
        else:
            _draw(ax, chart.kind, categories, series)
        ax.set_title(chart.title)
        fig.tight_layout()
        buffer = io.StringIO()
        # No metadata block: it only carries a date and links to matplotlib's site.
        fig.savefig(buffer, format="svg", metadata={"Creator": None, "Date": None, "Format": None, "Type": None})
    svg = buffer.getvalue()
    return svg[svg.index("<svg"):]
