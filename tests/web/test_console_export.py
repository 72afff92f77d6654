"""``crm report dashboard``'s index is the console's dashboard (the ``render_dashboard`` hook):
the same tiles and chart data as the console's page, links to every report written, and one
self-contained file that opens in Chromium with no network, charts drawn and the Chinese
labels in the embedded font."""

from __future__ import annotations

import base64
import io
import json
import re
import shutil
from datetime import timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from crmcore_web import export, views

import crmcore
from crmcore.testing import FIXED_NOW

CHROMIUM = Path("/usr/bin/chromium")
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync"]


class Silent:
    """A plugin that gives no index page: the next plugin (or the core's list of links) does."""

    @crmcore.hookimpl
    def render_dashboard(self, crm: Any, entries: Any, as_of: Any) -> None:
        return None


def _seed(crm: Any) -> None:
    buyer = crm.customers.add(name="张伟")
    for amount, stage in (("12345.60", "won"), ("800.00", "proposal")):
        deal = crm.deals.add(customer_id=buyer.id, title=f"ERP {amount}", amount=amount, currency="CNY",
                             stage="lead")
        crm.deals.move(deal.id, stage)


def _chart_data(page: str) -> dict[str, Any]:
    found = re.search(r'id="chart-data">(.*?)</script>', page, re.S)
    assert found, "no chart data in the page"
    return json.loads(found.group(1))  # type: ignore[no-any-return]


def test_the_export_is_the_consoles_dashboard_linking_every_report(crm_factory: Any, tmp_path: Path) -> None:
    crm = crm_factory(plugins=["reports", "web"], extra_plugins=[Silent()])
    _seed(crm)
    entries = crm.reports.dashboard(tmp_path / "dash")
    page = (tmp_path / "dash" / "index.html").read_text(encoding="utf-8")
    written = [e for e in entries if e.file]
    assert written and all(f'href="{e.file}"' in page and (tmp_path / "dash" / e.file).exists() for e in written)
    # The same figures as the console's page (views.dashboard, checked against Python sums in
    # test_console_pages.py), for the default range ending on the export's day.
    end = FIXED_NOW.astimezone(crm.as_of().tzinfo).date()
    start = (end.replace(day=1) - timedelta(days=1)).replace(day=1)
    shown = views.dashboard(crm, start, end, now=FIXED_NOW)
    assert shown["revenue_this"] == {"CNY": Decimal("12345.60")}
    tile = re.search(r'id="kpi-revenue">(.*?)</section>', page, re.S)
    assert tile and "12,345.60" in tile.group(1)
    data = _chart_data(page)
    assert data["revenue"]["series"] == json.loads(json.dumps(shown["months_json"]))
    assert data["stages"]["x"] == shown["stage_names"] == ["proposal"]
    # Nothing to fetch: no external script, stylesheet, font or image.
    markup = re.sub(r"<script>.*?</script>", "", page, flags=re.S)  # plotly's own code aside
    assert "<script" in page and not re.search(r'<script[^>]+src=|<link[^>]+href=|url\((?!data:)|<img', markup)
    assert "Plotly" in page
    # An English page without CJK characters embeds no CJK font; nor ever the whole face, which is
    # for the server's pages.
    assert not export.page_characters(markup) and "data:font/otf" not in page and "CRM CJK Full" not in page


def _embedded_characters(page: str) -> set[str]:
    """The CJK characters the font embedded in ``page`` has."""
    ttlib = pytest.importorskip("fontTools.ttLib", reason="fontTools is not installed")
    embedded = re.search(r"data:font/otf;base64,([A-Za-z0-9+/=]+)", page)
    assert embedded, "no font embedded"
    font = ttlib.TTFont(io.BytesIO(base64.b64decode(embedded.group(1))))
    return {chr(code) for code in font.getBestCmap() if export.CJK.match(chr(code))}


def test_without_the_console_the_index_is_the_cores_list_of_links(crm_factory: Any, tmp_path: Path) -> None:
    crm = crm_factory(plugins=["reports"], extra_plugins=[Silent()])
    _seed(crm)
    crm.reports.dashboard(tmp_path / "dash")
    page = (tmp_path / "dash" / "index.html").read_text(encoding="utf-8")
    assert 'href="pipeline.html"' in page and "kpi-revenue" not in page


@pytest.mark.skipif(not CHROMIUM.exists() or shutil.which("chromium") is None,
                    reason="Debian's chromium is not installed (/usr/bin/chromium; .ci/run installs it)")
def test_the_export_opens_offline_in_chromium_in_chinese(tmp_path: Path) -> None:
    playwright_api = pytest.importorskip("playwright.sync_api", reason="playwright (PyPI) is not installed")
    crm = crmcore.CRM.open(f"sqlite:///{tmp_path / 'crm.db'}", clock=lambda: FIXED_NOW)
    try:
        crm.users.add("li.na", role="admin", locale="zh-CN")
        _seed(crm)
        with crm.acting("li.na"):
            crm.reports.dashboard(tmp_path / "dash")
    finally:
        crm.close()
    index = tmp_path / "dash" / "index.html"
    # The font embedded holds exactly the CJK characters of the page's text and chart data.
    text = index.read_text(encoding="utf-8")
    shown = export.page_characters(re.sub(r"<script>.*?</script>", "", text, flags=re.S))
    assert {"仪", "表", "盘"} <= shown and _embedded_characters(text) == shown
    fetched: list[str] = []
    with playwright_api.sync_playwright() as driver:
        browser = driver.chromium.launch(executable_path=str(CHROMIUM), args=ARGS, headless=True)
        try:
            context = browser.new_context(offline=True, viewport={"width": 1280, "height": 900})

            def refuse(route: Any) -> None:
                if not route.request.url.startswith("file:"):
                    fetched.append(route.request.url)
                    route.abort()
                else:
                    route.continue_()

            context.route("**/*", refuse)
            page = context.new_page()
            page.set_default_timeout(15000)
            page.goto(index.as_uri())
            page.wait_for_selector("body[data-charts=ready]")
            assert page.locator("#chart-revenue .main-svg").count() > 0
            assert page.locator("#chart-stages .bars path").count() == 1
            assert "仪表盘" in page.inner_text("h1") and "12,345.60" in page.inner_text("#kpi-revenue")
            assert page.evaluate("document.fonts.ready.then(() => document.fonts.check('16px \"CRM CJK\"', '客户'))")
            page.screenshot(path=str(tmp_path / "static-dashboard-zh.png"), full_page=True)
        finally:
            browser.close()
    assert fetched == []  # nothing outside the file was asked for
