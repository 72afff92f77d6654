"""The web console in real Chromium (Playwright driving Debian's ``chromium``; never
``playwright install``), against a real ``crm serve`` on SQLite: sign in, search, open a
customer 360 page, edit a field with a bad value and see the error next to it, drag a deal to
won and see the points it earned, open the dashboard with its charts, switch to Chinese.

One browser and one server for the module; screenshots of each page go to the test's tmp dir.
The HTTP-level tests (test_console_pages.py) cover the three databases.
"""

from __future__ import annotations

import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from .conftest import Api
from .console_helpers import PASSWORD, set_passwords

CHROMIUM = Path("/usr/bin/chromium")
pytestmark = pytest.mark.skipif(not CHROMIUM.exists() or shutil.which("chromium") is None,
                                reason="Debian's chromium is not installed (/usr/bin/chromium; .ci/run installs it)")
playwright_api = pytest.importorskip("playwright.sync_api", reason="playwright (PyPI) is not installed")

API_TOML = """
[notify]
unsubscribe_secret = "console-browser-tests-secret"
"""

ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync"]


@pytest.fixture(scope="module")
def api_db_url(tmp_path_factory: Any) -> str:
    """SQLite only: the browser flow is the same on every database (the pages' SQL is tested on all three)."""
    return f"sqlite:///{tmp_path_factory.mktemp('console') / 'crm.db'}"


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with playwright_api.sync_playwright() as driver:
        launched = driver.chromium.launch(executable_path=str(CHROMIUM), args=ARGS, headless=True)
        try:
            yield launched
        finally:
            launched.close()


def test_the_console_in_chromium(api: Api, browser: Any, tmp_path: Path) -> None:
    set_passwords(api, "rita")
    tag = uuid.uuid4().hex[:6]
    customer = api.crm.customers.add(name=f"Wang Fang {tag}", email=f"wf{tag}@example.com",
                                     phone="+8613800138000", owner="rita")
    deal = api.crm.deals.add(customer_id=customer.id, title=f"Tea order {tag}", amount="2500.00", currency="CNY",
                             stage="proposal", owner="rita")
    sample = api.crm.deals.add(customer_id=customer.id, title=f"Tea sample {tag}", amount="80.00", currency="CNY",
                               stage="lead", owner="rita")
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.set_default_timeout(15000)
    shots = tmp_path / "screenshots"
    shots.mkdir()

    page.goto(api.base_url + "/console/customers")
    assert "/console/sign-in" in page.url
    page.fill("input[name=login]", "rita")
    page.fill("input[name=password]", PASSWORD)
    page.screenshot(path=str(shots / "sign-in.png"))
    page.click("#sign-in")
    page.wait_for_url("**/console/customers")
    assert page.inner_text("#who") == "rita"

    page.fill("#q", "138-0013-8000")  # as people write it; stored as +8613800138000
    page.wait_for_url("**/console/customers?q=138-0013-8000*")  # the search's rows are in (hx-push-url)
    page.wait_for_selector(f"text=Wang Fang {tag}")
    assert page.locator("tr.customer-row").count() == 1
    page.select_option("select[name=sort]", "name")  # the other filters search on change
    page.wait_for_url("**/console/customers?q=138-0013-8000*sort=name*")
    assert page.locator("tr.customer-row").count() == 1
    page.screenshot(path=str(shots / "customers.png"))

    page.click(f"text=Wang Fang {tag}")
    page.wait_for_selector("#customer-name")
    assert page.inner_text("#customer-name") == f"Wang Fang {tag}"
    assert "Tea order" in page.inner_text("table.timeline")
    page.click("#field-email button.edit")
    page.fill("#field-email input[name=value]", "wang at example")
    page.click("#field-email button[type=submit]")
    error = page.wait_for_selector("#field-email .field-error")
    assert "email" in error.inner_text().lower()
    page.screenshot(path=str(shots / "customer-360-error.png"))

    page.goto(api.base_url + "/console/pipeline")
    card = page.locator(f"#deal-{deal.id}")
    card.drag_to(page.locator("#stage-won"))
    earned = page.wait_for_selector(f"#deal-{deal.id} .earned")
    points = sum(e.points for e in api.crm.loyalty.history(customer.id) if e.deal_id == deal.id)
    assert points > 0 and f"{points:,}" in earned.inner_text()
    assert page.locator(f"#stage-won #deal-{deal.id}").count() == 1
    assert page.inner_text("#stage-won .count") == "1" and page.inner_text("#stage-proposal .count") == "0"
    assert api.crm.deals.get(deal.id).stage == "won"
    page.screenshot(path=str(shots / "pipeline.png"))

    # A refused htmx request (here a forged CSRF token) is shown, and the card goes back.
    page.evaluate("""() => { document.body.setAttribute("hx-headers", JSON.stringify({"X-CSRF-Token": "forged"}));
                             document.body.dataset.csrf = "forged"; }""")
    page.locator(f"#deal-{sample.id}").drag_to(page.locator("#stage-qualified"))
    flash = page.wait_for_selector("#flash:not([hidden])")
    assert "403" in flash.inner_text() and "CSRF" in flash.inner_text()
    page.wait_for_selector(f"#stage-lead #deal-{sample.id}")
    assert api.crm.deals.get(sample.id).stage == "lead"
    page.screenshot(path=str(shots / "refusal.png"))

    page.goto(api.base_url + "/console/dashboard")
    page.wait_for_selector("body[data-charts=ready]")
    assert page.locator("#chart-revenue .main-svg").count() > 0
    assert "¥2,500.00" in page.inner_text("#kpi-revenue") or "CN¥2,500.00" in page.inner_text("#kpi-revenue")
    page.screenshot(path=str(shots / "dashboard.png"))

    # Drill-down: clicking the month's revenue bar lists the customers behind it.
    box = page.locator("#chart-revenue .bars path").first.bounding_box()
    assert box is not None
    page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    page.mouse.click(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    page.wait_for_url("**/console/customers?drill=won*")
    assert page.locator("tr.customer-row").count() == 1 and f"Wang Fang {tag}" in page.inner_text("#customer-rows")
    assert "CNY" in page.inner_text("#drill")
    page.screenshot(path=str(shots / "drill-down.png"))

    page.goto(api.base_url + "/console/reports?name=pipeline")
    page.wait_for_selector("body[data-charts=ready]")
    assert page.locator(".report-chart .main-svg").count() > 0
    page.screenshot(path=str(shots / "report-pipeline.png"))

    # Segments and campaigns: rita (a sales rep) sees the runs and previews a campaign per locale;
    # running a strategy is refused, and the refusal is shown.
    run = api.crm.segments.run("rfm")
    page.goto(api.base_url + "/console/segments")
    assert f"Run {run.id} " in page.inner_text("#strategy-rfm .run-summary")
    page.click("#strategy-rfm button.run")
    assert "segment.run" in page.wait_for_selector("#flash:not([hidden])").inner_text()
    page.goto(api.base_url + "/console/campaigns")
    page.select_option("select[name=template]", "win-back")
    page.click("#preview-campaign")
    page.wait_for_selector("#campaign-preview article[data-locale=zh-CN] .subject")
    assert page.locator("#campaign-preview article.preview").count() == 2
    assert page.inner_text("#campaign-plan .members") == "1"
    page.screenshot(path=str(shots / "campaign-preview.png"), full_page=True)
    page.goto(api.base_url + "/console/outbox")
    page.wait_for_selector("table.outbox")

    page.select_option("select[name=locale]", "zh_CN")
    page.wait_for_selector("nav.top >> text=客户")
    assert page.evaluate("document.fonts.ready.then(() => document.fonts.check('16px \"CRM CJK\"', '客户'))")
    page.screenshot(path=str(shots / "dashboard-zh.png"))
    page.close()


def _signed_in_page(api: Api, browser: Any, login: str) -> Any:
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.set_default_timeout(30000)
    page.goto(api.base_url + "/console/sign-in")
    page.fill("input[name=login]", login)
    page.fill("input[name=password]", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url("**/console/customers*")
    return page


def test_a_report_chart_element_opens_the_customers_behind_it(api: Api, browser: Any, tmp_path: Path) -> None:
    """Point 5: a click on a report's bar (the pipeline's "negotiation" bar) lands on the customer
    list filtered to the customers with a deal counted there, as a sales rep."""
    import html
    import json

    set_passwords(api, "rita")
    tag = uuid.uuid4().hex[:6]
    for n in range(2):
        buyer = api.crm.customers.add(name=f"Board {tag} {n}", owner="rita")
        api.crm.deals.add(customer_id=buyer.id, title=f"talks {tag}", amount="700.00",
                          currency=api.crm.config.default_currency, stage="negotiation", owner="rita")
    with api.crm.acting("rita"):
        expected = {d.customer_id for d in api.crm.deals.list({"stage": "negotiation"}, limit=10_000)}
        names = {c.name for c in api.crm.customers.list({"id__in": sorted(expected)}, limit=10_000)}
    page = _signed_in_page(api, browser, "rita")
    page.goto(api.base_url + "/console/reports?name=pipeline")
    page.wait_for_selector("body[data-charts=ready]")
    chart = page.locator(".report-chart").first
    spec = json.loads(html.unescape(chart.get_attribute("data-spec") or "{}"))
    index = spec["data"][0]["x"].index("negotiation")
    box = chart.locator(".bars path").nth(index).bounding_box()
    assert box is not None and box["height"] > 0
    page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    page.mouse.click(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    page.wait_for_url("**/console/customers?drill=report*")
    listed = set(page.locator("#customer-rows tr.customer-row td:first-child").all_inner_texts())
    assert listed == names and {f"Board {tag} 0", f"Board {tag} 1"} <= listed
    assert "negotiation" in page.inner_text("#drill") and "pipeline" in page.inner_text("#drill")
    page.screenshot(path=str(tmp_path / "report-drill-down.png"))
    page.close()


#: Each character drawn alone in a canvas with the element's fonts, as an image (a data: URL):
#: where no font has a glyph, Chromium draws the same empty box for every character ("tofu"), so
#: two different characters drawing the same picture means they did not render.
GLYPHS = """async ([selector, family]) => {
  const element = document.querySelector(selector);
  const fonts = family || getComputedStyle(element).fontFamily;
  await document.fonts.load('32px ' + fonts, element.innerText);
  await document.fonts.ready;
  return Array.from(new Set(element.innerText.replace(/[\\x00-\\x7f]/g, ''))).map((ch) => {
    const canvas = document.createElement('canvas');
    canvas.width = canvas.height = 48;
    const context = canvas.getContext('2d');
    context.font = '32px ' + fonts;
    context.fillText(ch, 4, 38);
    return canvas.toDataURL();
  });
}"""


def test_chinese_customer_data_renders_without_system_cjk_fonts(api: Api, browser: Any, tmp_path: Path) -> None:
    """Point 7: a customer named 张伟 with notes in Chinese, on a machine without CJK fonts (checked
    first: sans-serif draws every CJK character as the same box), draws a distinct glyph for each
    character, from the whole face the console serves (its label font lacks most of them)."""
    import subprocess

    fonts_here = subprocess.run(["fc-list", ":lang=zh"], capture_output=True, text=True).stdout.strip()
    if fonts_here:
        pytest.skip(f"this machine has a CJK font, so the test would prove nothing: {fonts_here[:100]}")
    set_passwords(api, "rita")
    customer = api.crm.customers.add(name="张伟", owner="rita")
    api.crm.interactions.add(customer_id=customer.id, kind="note", direction="inbound", owner="rita",
                             occurred_at=api.crm.as_of(),
                             subject="张伟希望下周回访：讨论龙井茶叶订单与发票抬头")
    page = _signed_in_page(api, browser, "rita")
    page.goto(api.base_url + f"/console/customers/{customer.id}")
    page.wait_for_selector("#customer-name")
    assert page.inner_text("#customer-name") == "张伟"
    note = page.locator("text=张伟希望下周回访").first
    note.evaluate("(element) => element.id = 'chinese-note'")
    without = page.evaluate(GLYPHS, ["#chinese-note", "sans-serif"])
    assert len(set(without)) == 1, "a system font draws CJK here: the check below would prove nothing"
    for selector in ("#customer-name", "#chinese-note"):
        drawn = page.evaluate(GLYPHS, [selector, None])
        assert len(drawn) >= 2 and len(set(drawn)) == len(drawn), f"{selector}: some characters drew the same box"
    loaded = page.evaluate("Array.from(document.fonts).filter((f) => f.status === 'loaded').map((f) => f.family)")
    assert '"CRM CJK Full"' in loaded or "CRM CJK Full" in loaded
    page.screenshot(path=str(tmp_path / "customer-zh.png"))
    page.close()
