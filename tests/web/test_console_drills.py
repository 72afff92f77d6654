"""Drill-down from every report chart to the customers behind the clicked element (issue 17, point 5).

For each report the console shows, every element of every chart (bar, point, funnel band,
heatmap cell) carries a drill key; the customer list it opens must be exactly the customers an
independent computation (tests/web/drill_data.py: raw rows and the report's documented rules in
Python) finds behind that element, for the admin and for a sales rep who sees only hers, on
SQLite, PostgreSQL and MariaDB.
"""

from __future__ import annotations

import html
import json
import re
from datetime import date
from typing import Any

import httpx
import pytest

from crmcore_web import views

from .conftest import Api
from .console_helpers import drilled_ids, set_passwords, sign_in
from .drill_data import CHECKS, Expected, as_of_end, seed

#: The report pages are drawn as of this day (the seeded moves run from July to December 2026).
DAY = date(2026, 12, 6)


@pytest.fixture(scope="module")
def seeded(api: Api) -> None:
    set_passwords(api, "ann", "rita")
    seed(api.crm)


def _chart_keys(client: httpx.Client, report: str) -> list[tuple[str, list[str]]]:
    """(chart title, every element's drill key) of each chart on the report's page."""
    page = client.get("/console/reports", params={"name": report, "as_of": DAY.isoformat()})
    assert page.status_code == 200, page.text[:500]
    found = []
    for raw in re.findall(r'data-spec="([^"]*)"', page.text):
        spec: dict[str, Any] = json.loads(html.unescape(raw))
        keys = []
        for trace in spec["data"]:
            for item in trace.get("customdata") or []:
                keys += item if isinstance(item, list) else [item]
        found.append((spec["layout"]["title"]["text"], keys))
    return found


def _meaning(key: str) -> tuple[str, str]:
    """(x, series) of a drill key (a ``where:`` key is the segments chart's ``segment.S=X`` filter)."""
    if key.startswith(views.WHERE):
        return key.rsplit("=", 1)[1], "members"
    _, _, _, x, series = views.read_report_drill(key)
    return x, series


@pytest.mark.parametrize("login", ["ann", "rita"])
def test_every_report_chart_drills_down_to_exactly_the_customers_behind_it(api: Api, seeded: None,
                                                                          login: str) -> None:
    client = sign_in(api, login)
    with api.crm.acting(login):
        expected = Expected(api.crm, as_of_end(DAY))
        installed = [r.name for r in api.crm.reports.list()]
    first_party = {name for name, _ in CHECKS}
    assert first_party <= set(installed)
    reports = [r for r in installed if r in first_party]
    others = {c for c, row in expected.customers.items() if row["owner"] != "rita"} if login == "rita" else set()
    checked: set[tuple[str, str]] = set()
    for report in reports:
        for title, keys in _chart_keys(client, report):
            check = next(((name, start) for name, start in CHECKS if name == report and title.startswith(start)),
                         None)
            assert check is not None, f"{report}: chart {title!r} has no independent check"
            assert keys, f"{report}: chart {title!r} has no element to click (or none carries a drill key)"
            nonempty = 0
            for key in keys:
                x, series = _meaning(key)
                listed = drilled_ids(client, key)
                want = CHECKS[check](expected, x, series)
                assert listed == sorted(want, reverse=True), (login, report, title, x, series)
                assert not set(listed) & others  # a rep never sees another rep's customers
                nonempty += bool(listed)
            assert nonempty, f"{report}: every element of {title!r} is empty: the data proves nothing"
            checked.add(check)
    assert checked == set(CHECKS)  # every chart of every report was clicked
    # A third party's report whose charts declare no drill-down (the docs' example) draws no keys.
    for report in set(installed) - first_party:
        assert all(not keys for _, keys in _chart_keys(client, report)), report


def test_a_drill_key_that_names_no_chart_element_is_refused(api: Api, seeded: None) -> None:
    client = sign_in(api, "ann")
    for key in ("report:not-base64!", views.drill_for_report("forecast", DAY, "months", "2026-13", "won"),
                views.drill_for_report("forecast", DAY, "months", "2026-09", "nonsense"),
                views.drill_for_report("funnel", DAY, "steps", "no-such-stage", "reached"),
                views.drill_for_report("pipeline", DAY, "no-such-chart", "lead", "amount")):
        assert client.get("/console/customers", params={"drill": key}).status_code == 422, key
    unknown = client.get("/console/customers", params={"drill": views.drill_for_report("nope", DAY, "c", "x", "y")})
    assert unknown.status_code == 404


def test_a_user_without_report_permission_cannot_drill(api: Api, seeded: None) -> None:
    """``crm.reports.customers_behind`` asks ``report.run`` and ``customer.list``, as its docstring says."""
    set_passwords(api, "otto")
    allowed = api.crm.acting("otto")
    with allowed:
        may_run = True
        try:
            api.crm.authorize("report.run", "pipeline")
            api.crm.authorize("customer.list", None)
        except Exception:
            may_run = False
    answer = sign_in(api, "otto").get("/console/customers", params={
        "drill": views.drill_for_report("pipeline", DAY, "stages", "lead", "amount")})
    assert answer.status_code == (200 if may_run else 403)
