"""The markdown, xlsx and html renderers on every report, the dashboard, and
the HTML opened in headless Chromium with a screenshot showing the charts.

Rendering does not depend on the database, so these run on one SQLite file
(loaded once for the module).
"""

from __future__ import annotations

import io
import re
import subprocess
import warnings
from datetime import date, datetime, timezone
from decimal import Decimal
from pathlib import Path

import numpy
import openpyxl
import pytest
from PIL import Image

import crmcore
from crmcore.testing import FIXED_NOW

from .conftest import load_world

CHROMIUM = Path("/usr/bin/chromium")
REPORTS = ["activity", "customer-value", "forecast", "funnel", "pipeline", "retention-cohorts",
           "sales-performance", "segments", "service-quality", "win-loss"]


@pytest.fixture(scope="module")
def crm(tmp_path_factory):
    world = load_world(f"sqlite:///{tmp_path_factory.mktemp('render') / 'crm.db'}")
    yield world.crm
    world.crm.close()


# -- xlsx ----------------------------------------------------------------------------------------

def cell_equals(cell_value, value, column) -> bool:
    """A cell read back by openpyxl against the report's value: same number, date or text."""
    if value is None:
        return cell_value is None
    if isinstance(value, datetime):
        return cell_value == value.astimezone(timezone.utc).replace(tzinfo=None)
    if isinstance(value, date):
        return cell_value.date() == value if isinstance(cell_value, datetime) else cell_value == value
    if isinstance(value, Decimal):
        return isinstance(cell_value, (int, float)) and Decimal(str(cell_value)) == value
    if isinstance(value, bool) or isinstance(value, int):
        return cell_value == value and isinstance(cell_value, int)
    if isinstance(value, float):
        return cell_value == pytest.approx(value)
    return cell_value == str(value)


@pytest.mark.parametrize("name", REPORTS)
def test_xlsx_reads_back_as_the_table(crm, name):
    result = crm.reports.run(name, as_of=FIXED_NOW)
    book = openpyxl.load_workbook(io.BytesIO(crm.reports.renderers.get("xlsx").render(result)))
    tables = result.tables()
    assert book.sheetnames[:len(tables)] and book.sheetnames[-1] == "About"
    assert len(book.sheetnames) == len(tables) + 1  # one sheet per table
    for table, sheet in zip(tables, book.worksheets):
        values = list(sheet.iter_rows(values_only=True))
        assert len(values) == len(table.rows) + 1
        assert [h.split(" (")[0] for h in values[0]] == [c.label.split(" (")[0] for c in table.columns]
        for row, read in zip(table.rows, values[1:]):
            assert all(cell_equals(r, v, c) for r, v, c in zip(read, row, table.columns)), (row, read)
        for column, cell in zip(table.columns, sheet[2] if table.rows else ()):
            if cell.value is None:
                continue
            if column.type == "percent":
                assert cell.number_format == "0.00%"
            elif column.type == "decimal" and column.currency:
                assert cell.number_format == ("#,##0" if column.currency == "JPY" else "#,##0.00")
            elif column.type == "datetime":
                assert cell.is_date


def test_xlsx_money_formats_follow_the_currency(crm):
    result = crm.reports.run("win-loss", as_of=FIXED_NOW, options={"currency": "JPY"})
    sheet = openpyxl.load_workbook(io.BytesIO(crm.reports.render("win-loss", "xlsx", FIXED_NOW,
                                                                  {"currency": "JPY"}))).worksheets[0]
    assert sheet.cell(1, 5).value == "won amount (JPY)"
    assert sheet.cell(2, 5).number_format == "#,##0"
    assert sheet.cell(2, 4).number_format == "0.00%"
    assert Decimal(str(sheet.cell(2, 5).value)) == result.rows[0][4]


# -- markdown --------------------------------------------------------------------------------------

def test_markdown_has_every_table(crm):
    result = crm.reports.run("win-loss", as_of=FIXED_NOW)
    text = crm.reports.render("win-loss", "markdown", FIXED_NOW)
    assert text.startswith(f"# {result.title}\n")
    assert "## Lost reasons" in text
    table_lines = [line for line in text.splitlines() if line.startswith("|")]
    assert len(table_lines) == sum(len(t.rows) + 2 for t in result.tables())
    assert "| 王芳 |" in text and "---:" in text


# -- html ---------------------------------------------------------------------------------------------

def has_values(table, chart) -> bool:
    """A chart is drawn when some row not excluded has a value in one of its columns."""
    keep = [x not in chart.exclude for x in table.column(chart.x)]
    return any(v is not None for name in chart.y for v, k in zip(table.column(name), keep) if k)


@pytest.mark.parametrize("name", REPORTS)
def test_html_is_self_contained_with_a_chart_per_declared_chart(crm, name):
    result = crm.reports.run(name, as_of=FIXED_NOW)
    page = crm.reports.renderers.get("html").render(result)
    assert page.startswith("<!DOCTYPE html>")
    assert not re.search(r"<(script|link|img|iframe)\b", page)
    # The only URLs are XML namespace names inside the SVGs, never something to fetch.
    assert set(re.findall(r"https?://[^\s\"'<>)]+", page)) <= {"http://www.w3.org/2000/svg",
                                                                "http://www.w3.org/1999/xlink"}
    drawn = sum(1 for t in result.tables() for chart in t.charts if has_values(t, chart))
    assert page.count("<svg") == drawn > 0
    for table in result.tables():
        assert table.title.replace("'", "&#39;") in page or table is result


def glyph_id(family: str, char: str) -> str:
    """The id matplotlib gives a glyph outline in an SVG: the font's PostScript name and glyph index."""
    from matplotlib import font_manager

    font = font_manager.get_font(font_manager.findfont(font_manager.FontProperties(family=family)))
    index = font.get_char_index(ord(char))
    assert index, f"{family} has no glyph for {char}"
    return f"{font.postscript_name}-{index:x}"


def test_cjk_labels_draw_as_glyphs_from_a_cjk_font():
    from crmcore_reports.charts import chart_svg, font_families

    assert font_families() == ["DejaVu Sans", "Noto Sans CJK SC"]
    table = crmcore.ReportResult(
        title="t", columns=(crmcore.Column("region"), crmcore.Column("revenue", "decimal")),
        rows=(("华东", Decimal("10.50")), ("华北", Decimal("7"))),
        charts=(crmcore.Chart("bar", "销售额 by region", "region", ("revenue",)),))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # matplotlib warns "Glyph ... missing from font(s)" for a box
        svg = chart_svg(table, table.charts[0])
    # Text is outlines (svg.fonttype "path"): each glyph a <path id="POSTSCRIPTNAME-glyphindex">.
    ids = set(re.findall(r'<path id="([^"]+)"', svg))
    for char in "华东北销售额":
        assert glyph_id("Noto Sans CJK SC", char) in ids, char
    assert glyph_id("DejaVu Sans", "r") in ids  # Latin text stays in DejaVu Sans
    assert not any(i.endswith("-0") for i in ids)  # glyph 0 is .notdef: the box of a missing glyph
    assert "<text" not in svg  # nothing left for the viewer's fonts to draw


def chromium_screenshot(page: Path, png: Path, profile: Path) -> None:
    subprocess.run([str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                    "--disable-component-update", "--disable-sync", "--no-first-run",
                    f"--user-data-dir={profile}", "--window-size=1200,1400", "--hide-scrollbars",
                    f"--screenshot={png}", page.as_uri()],
                   check=True, capture_output=True, timeout=120)


def palette_pixels(image: Image.Image, box: tuple[int, int, int, int]) -> int:
    """Pixels in ``box`` close to the first two chart colours (blue #4e79a7, orange #f28e2b)."""
    region = numpy.asarray(image.convert("RGB").crop(box), dtype=int)
    found = numpy.zeros(region.shape[:2], dtype=bool)
    for target in ((0x4e, 0x79, 0xa7), (0xf2, 0x8e, 0x2b)):
        found |= numpy.abs(region - numpy.array(target)).sum(axis=2) < 40
    return int(found.sum())


def dark_pixels(image: Image.Image, box: tuple[int, int, int, int], below: int) -> int:
    return int((numpy.asarray(image.convert("L").crop(box)) < below).sum())


@pytest.mark.skipif(not CHROMIUM.exists(), reason="Debian's chromium is not installed (/usr/bin/chromium)")
def test_html_in_headless_chromium_shows_the_charts(crm, tmp_path):
    page = tmp_path / "win-loss.html"
    crm.reports.write("win-loss", page, "html", FIXED_NOW)
    png = tmp_path / "win-loss.png"
    chromium_screenshot(page, png, tmp_path / "profile")
    image = Image.open(png)
    assert image.size == (1200, 1400)
    # Below the title: the two charts (win rate bars, stacked won/lost bars), drawn in the palette colours.
    charts_area = (0, 100, 900, 1000)
    coloured = palette_pixels(image, charts_area)
    assert coloured > 5_000, f"only {coloured} chart-coloured pixels: the charts did not render"
    assert dark_pixels(image, charts_area, 245) > 20_000


@pytest.mark.skipif(not CHROMIUM.exists(), reason="Debian's chromium is not installed (/usr/bin/chromium)")
def test_cjk_in_chromium_is_glyphs_not_boxes(tmp_path):
    """Pages differing only in their CJK text (chart label and table cell) rasterise differently.

    A missing glyph is the same box whatever the character, so 华东 and 东北
    drawn as boxes would give identical screenshots.  This machine has no
    CJK system font: the glyphs come from the chart outlines and the
    page's embedded font subset.
    """
    from crmcore_reports.html import render_html

    shots = {}
    for label in ("华东", "东北"):
        table = crmcore.ReportResult(
            title="CJK", columns=(crmcore.Column("region"), crmcore.Column("n", "int")), rows=((label, 3),),
            charts=(crmcore.Chart("bar", "n", "region", ("n",)),))
        page = tmp_path / f"{label}.html"
        page.write_text(render_html(table), encoding="utf-8")
        assert "@font-face" in page.read_text(encoding="utf-8")
        chromium_screenshot(page, tmp_path / f"{label}.png", tmp_path / "profile")
        shots[label] = numpy.asarray(Image.open(tmp_path / f"{label}.png").convert("L"), dtype=int)
    chart_label, table_cell = (80, 400, 800, 460), (0, 460, 300, 560)
    for left, top, right, bottom in (chart_label, table_cell):
        a = shots["华东"][top:bottom, left:right]
        b = shots["东北"][top:bottom, left:right]
        assert (a < 200).sum() > 30 and (b < 200).sum() > 30  # something is drawn there
        assert (abs(a - b) > 60).sum() > 30, (left, top, right, bottom)  # and it is not the same box


# -- dashboard ---------------------------------------------------------------------------------------

def test_dashboard_links_every_report(crm, tmp_path):
    entries = crm.reports.dashboard(tmp_path / "dash", as_of=FIXED_NOW)
    index = (tmp_path / "dash" / "index.html").read_text(encoding="utf-8")
    assert sorted(e.name for e in entries) == REPORTS
    for entry in entries:
        assert entry.error is None and entry.file == f"{entry.name}.html"
        assert f'href="{entry.file}"' in index
        assert (tmp_path / "dash" / entry.file).read_text(encoding="utf-8").count("<svg") >= 1
