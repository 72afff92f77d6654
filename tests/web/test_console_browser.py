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
