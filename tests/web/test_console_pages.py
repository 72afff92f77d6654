"""The web console (plugins/web) over a real uvicorn process, on SQLite, PostgreSQL and MariaDB:
sign-in (password, token, refusals), CSRF, visibility on every page, in-place edits with the
core's validation messages, a deal moved on the board (points, audit), sign-out."""

from __future__ import annotations

import re
import uuid

import pytest
from sqlalchemy import select

from crmcore.store import tables

from .conftest import Api
from .console_helpers import PASSWORD, csrf_of, drilled_ids, set_passwords, sign_in

# Sign-in attempts per address and login: room for this module's sign-ins, run out by the last test.
API_TOML = """
[[custom_fields]]
entity = "customer"
name = "visits"
type = "int"
description = "store visits"

[plugins.web]
sign_in_rate_limit = "24/minute"
"""


@pytest.fixture(scope="module")
def seeded(api: Api) -> dict[str, int]:
    """Two reps' customers (rita's with a phone, a deal and points), one manager's."""
    set_passwords(api, "ann", "rita", "max")
    crm = api.crm
    tag = uuid.uuid4().hex[:6]
    mine = crm.customers.add(name=f"Rita Kunde {tag}", email=f"rk{tag}@example.com", phone="+8613291417776",
                             owner="rita")
    other = crm.customers.add(name=f"Otto Fremd {tag}", email=f"of{tag}@example.com", owner="max")
    deal = crm.deals.add(customer_id=mine.id, title=f"Rita deal {tag}", amount="1200.00", currency="CNY",
                         stage="negotiation", owner="rita")
    crm.deals.add(customer_id=other.id, title=f"Max deal {tag}", amount="99.00", currency="CNY", stage="lead",
                  owner="max")
    assert mine.id and other.id and deal.id
    return {"mine": mine.id, "other": other.id, "deal": deal.id}


def test_pages_need_a_session_and_sign_in_refuses_wrong_credentials(api: Api, seeded: dict[str, int]) -> None:
    anonymous = api.client(None, follow_redirects=False)
    for path in ("/console/customers", f"/console/customers/{seeded['mine']}", "/console/pipeline",
                 "/console/dashboard"):
        page = anonymous.get(path)
        assert page.status_code == 303 and page.headers["location"].startswith("/console/sign-in"), path
    form = anonymous.get("/console/sign-in")
    csrf = re.search(r'name="csrf" value="([^"]+)"', form.text)
    assert csrf
    wrong = anonymous.post("/console/sign-in", data={"login": "rita", "password": "not it", "csrf": csrf.group(1)})
    assert wrong.status_code == 401 and "sign-in-error" in wrong.text
    unknown = anonymous.post("/console/sign-in", data={"login": "nobody", "password": PASSWORD,
                                                       "csrf": csrf.group(1)})
    assert unknown.status_code == 401
    forged = api.client(None).post("/console/sign-in", data={"login": "rita", "password": PASSWORD,
                                                             "csrf": "forged"})
    assert forged.status_code == 403  # no matching pre-session cookie: a cross-site form
    # The console's routes stay out of the API document (and so out of the API fuzzing).
    assert "/console" not in api.client().get("/openapi.json").text


def test_a_token_signs_in_and_pages_act_as_its_user(api: Api, seeded: dict[str, int]) -> None:
    client = sign_in(api, "", "", token=api.tokens["rita"])
    page = client.get("/console/customers")
    assert page.status_code == 200 and 'id="who">rita<' in page.text


def test_a_rep_never_sees_another_reps_customers_on_any_page(api: Api, seeded: dict[str, int]) -> None:
    rita = sign_in(api, "rita")
    other = api.crm.customers.get(seeded["other"])
    mine = api.crm.customers.get(seeded["mine"])
    pages = {path: rita.get(path) for path in (
        "/console/customers", f"/console/customers?q={other.name}", "/console/customers?sort=-created_at",
        "/console/customers?owner=max", "/console/pipeline", "/console/dashboard",
        "/console/reports", "/console/reports?name=pipeline", "/console/reports?name=sales-performance")}
    for path, page in pages.items():
        assert page.status_code == 200, (path, page.text)
        assert f'/console/customers/{other.id}"' not in page.text and other.email not in page.text, path
        assert "Max deal" not in page.text, path
        if "q=" not in path:  # a search page shows what was searched for in its search box
            assert other.name not in page.text, path
    assert mine.name in pages["/console/customers"].text
    assert "Rita deal" in pages["/console/pipeline"].text
    refused = rita.get(f"/console/customers/{seeded['other']}")
    assert refused.status_code == 404 and other.name not in refused.text
    assert rita.get(f"/console/customers/{seeded['other']}/fields/name").status_code == 404
    # The admin sees both.
    ann = sign_in(api, "ann")
    listed = ann.get("/console/customers", params={"q": other.name}).text
    assert other.name in listed


def test_search_by_formatted_phone_and_keyset_pages(api: Api, seeded: dict[str, int]) -> None:
    rita = sign_in(api, "rita")
    mine = api.crm.customers.get(seeded["mine"])
    for written in ("132-9141-7776", "+86 132 9141 7776", "13291417776"):
        rows = rita.get("/console/customers", params={"q": written}, headers={"HX-Request": "true"})
        assert rows.status_code == 200 and mine.name in rows.text, written
    tag = uuid.uuid4().hex[:6]
    api.crm.customers.add_many([{"name": f"Page {tag} {n:03d}", "owner": "rita"} for n in range(60)])
    first = rita.get("/console/customers", params={"q": f"Page {tag}", "sort": "name"})
    names = re.findall(rf"Page {tag} (\d+)", first.text)
    assert names == [f"{n:03d}" for n in range(50)]
    cursor = re.search(r"cursor=([A-Za-z0-9_-]+)", first.text)
    assert cursor
    second = rita.get("/console/customers", params={"q": f"Page {tag}", "sort": "name", "cursor": cursor.group(1)},
                      headers={"HX-Request": "true"})
    assert re.findall(rf"Page {tag} (\d+)", second.text) == [f"{n:03d}" for n in range(50, 60)]
    assert "cursor=" not in second.text
    bad = rita.get("/console/customers", params={"sort": "email"})
    assert bad.status_code == 422 and "sort" in bad.text


def test_edit_in_place_shows_the_cores_validation_message_and_audits(api: Api, seeded: dict[str, int]) -> None:
    rita = sign_in(api, "rita")
    token = csrf_of(rita)
    path = f"/console/customers/{seeded['mine']}/fields/email"
    no_csrf = rita.post(path, data={"value": "new@example.com"}, headers={"HX-Request": "true"})
    assert no_csrf.status_code == 403
    bad = rita.post(path, data={"value": "not-an-email"}, headers={"HX-Request": "true", "X-CSRF-Token": token})
    assert bad.status_code == 200 and "field-error" in bad.text and "not a valid email" in bad.text
    good_address = f"fixed{uuid.uuid4().hex[:6]}@example.com"
    good = rita.post(path, data={"value": good_address}, headers={"HX-Request": "true", "X-CSRF-Token": token})
    assert good.status_code == 200 and "field-error" not in good.text and good_address in good.text
    assert api.crm.customers.get(seeded["mine"]).email == good_address
    custom = f"/console/customers/{seeded['mine']}/fields/attributes.visits"
    page = rita.get(f"/console/customers/{seeded['mine']}")
    assert "store visits" in page.text and 'id="field-attributes-visits"' in page.text
    wrong = rita.post(custom, data={"value": "many"}, headers={"HX-Request": "true", "X-CSRF-Token": token})
    assert wrong.status_code == 200 and "field-error" in wrong.text
    right = rita.post(custom, data={"value": "12"}, headers={"HX-Request": "true", "X-CSRF-Token": token})
    assert "field-error" not in right.text and api.crm.customers.get(seeded["mine"]).attributes["visits"] == 12
    with api.crm.unit(readonly=True) as uow:
        audit = tables.audit_log
        actors = uow.conn.execute(select(audit.c.actor).where(
            audit.c.action == "customer.update", audit.c.entity_id == str(seeded["mine"]))).scalars().all()
    assert "rita" in actors


def test_moving_a_deal_on_the_board_earns_points_and_a_refusal_shows_on_the_card(
        api: Api, seeded: dict[str, int]) -> None:
    rita = sign_in(api, "rita")
    token = csrf_of(rita)
    headers = {"HX-Request": "true", "X-CSRF-Token": token}
    unknown = rita.post(f"/console/deals/{seeded['deal']}/move", data={"stage": "nowhere"}, headers=headers)
    assert unknown.status_code == 200 and "card-error" in unknown.text
    moved = rita.post(f"/console/deals/{seeded['deal']}/move", data={"stage": "won"}, headers=headers)
    assert moved.status_code == 200 and 'data-stage="won"' in moved.text, moved.text
    earned = sum(e.points for e in api.crm.loyalty.history(seeded["mine"]) if e.deal_id == seeded["deal"])
    assert earned > 0 and f"+{earned:,}" in moved.text
    # A read-only user sees the board but may not move: the refusal shows on the card.
    otto = sign_in(api, "", "", token=api.tokens["otto"])
    refused = otto.post(f"/console/deals/{seeded['deal']}/move", data={"stage": "lost"},
                        headers={"HX-Request": "true", "X-CSRF-Token": csrf_of(otto)})
    assert refused.status_code == 200 and "card-error" in refused.text and "may not deal.move" in refused.text
    assert api.crm.deals.get(seeded["deal"]).stage == "won"


def test_sign_out_revokes_the_session_token(api: Api, seeded: dict[str, int]) -> None:
    max_ = sign_in(api, "max")
    token = csrf_of(max_)
    before = {t.id for t in api.crm.tokens.list("max")}
    out = max_.post("/console/sign-out", headers={"HX-Request": "true", "X-CSRF-Token": token})
    assert out.status_code == 200 and out.headers["hx-redirect"] == "/console/sign-in"
    after = {t.id for t in api.crm.tokens.list("max")}
    assert len(before - after) == 1  # the session's token is revoked (no longer listed as active)
    assert max_.get("/console/customers").status_code == 303


def test_dashboard_figures_match_an_independent_computation(api: Api, seeded: dict[str, int]) -> None:
    """The KPI queries (SQL, per database) against the same figures summed in Python from the
    services' lists, as the admin and as a sales rep (whose figures cover only her deals)."""
    from datetime import datetime, time, timedelta
    from decimal import Decimal

    from crmcore_web import views

    crm = api.crm
    tag = uuid.uuid4().hex[:6]
    buyer = crm.customers.add(name=f"Dash {tag}", owner="rita")
    for amount, stage in (("100.50", "negotiation"), ("200.25", "proposal"), ("999.99", "lost")):
        deal = crm.deals.add(customer_id=buyer.id, title=f"dash {tag} {amount}", amount=amount, currency="CNY",
                             stage="lead", owner="rita")
        crm.deals.move(deal.id, stage)
    zone = crm.as_of().tzinfo
    today = crm.as_of().date()
    start, end = today - timedelta(days=40), today
    lo = datetime.combine(start, time.min, tzinfo=zone)
    hi = datetime.combine(end + timedelta(days=1), time.min, tzinfo=zone)
    month = datetime.combine(today.replace(day=1), time.min, tzinfo=zone)
    stages = {s.name: s for s in crm.config.pipelines["default"].stages}
    figures = {}
    for login in ("ann", "rita"):
        with crm.acting(login):
            shown = views.dashboard(crm, start, end)
            deals = crm.deals.list(limit=100_000)
            customers = crm.customers.list(limit=100_000)
        outcome = {d.id: stages[d.stage].outcome.value for d in deals}
        won = [d for d in deals if outcome[d.id] == "won" and d.closed_at and lo <= d.closed_at < hi]
        lost = [d for d in deals if outcome[d.id] == "lost" and d.closed_at and lo <= d.closed_at < hi]
        assert (shown["won"], shown["lost"]) == (len(won), len(lost)), login
        revenue: dict[str, Decimal] = {}
        for d in deals:
            if outcome[d.id] == "won" and d.closed_at and d.closed_at >= month:
                revenue[d.currency] = revenue.get(d.currency, Decimal(0)) + d.amount
        assert shown["revenue_this"] == revenue, login
        weighted: dict[str, Decimal] = {}
        for d in deals:
            if outcome[d.id] == "open":
                share = d.probability if d.probability is not None else stages[d.stage].probability
                weighted[d.currency] = weighted.get(d.currency, Decimal(0)) + d.amount * share / 100
        assert shown["weighted"] == weighted, login
        assert shown["new_customers"] == sum(1 for c in customers if c.created_at and lo <= c.created_at < hi)
        figures[login] = shown
    # Max's open lead counts for the admin, not for the sales rep.
    assert figures["ann"]["weighted"]["CNY"] > figures["rita"]["weighted"]["CNY"]

def test_reports_page_runs_a_report_with_its_charts(api: Api, seeded: dict[str, int]) -> None:
    ann = sign_in(api, "ann")
    listing = ann.get("/console/reports")
    assert listing.status_code == 200 and 'value="pipeline"' in listing.text
    page = ann.get("/console/reports", params={"name": "pipeline"})
    assert page.status_code == 200 and "report-table" in page.text and "report-chart" in page.text
    result = api.crm.reports.run("pipeline")
    for column in result.columns:
        assert f"<th>{column.label}</th>" in page.text
    unknown = ann.get("/console/reports", params={"name": "nope"})
    assert unknown.status_code in (404, 422) and "nope" in unknown.text


def test_my_day_lists_ones_own_tasks_and_done_completes_one(api: Api, seeded: dict[str, int]) -> None:
    """"My day": the signed-in user's open tasks due today, overdue ones apart; another rep's and
    later ones absent; "done" completes a task through the service (CSRF, audit); the dashboard's
    follow-up tiles count what the task list holds."""
    from datetime import timedelta

    crm = api.crm
    now = crm.as_of()
    tag = uuid.uuid4().hex[:6]
    late = crm.tasks.add(customer_id=seeded["mine"], title=f"Call back {tag}", assignee="rita",
                         due=now - timedelta(hours=2))
    soon = crm.tasks.add(customer_id=seeded["mine"], title=f"Send offer {tag}", assignee="rita", due=now)
    later = crm.tasks.add(customer_id=seeded["mine"], title=f"Next week {tag}", assignee="rita",
                          due=now + timedelta(days=8))
    others = crm.tasks.add(customer_id=seeded["other"], title=f"For max {tag}", assignee="max",
                           due=now - timedelta(hours=1))
    rita = sign_in(api, "rita")
    page = rita.get("/console/my-day")
    assert page.status_code == 200, page.text
    overdue_part = page.text.split('id="tasks-today"')[0]
    assert late.title in overdue_part and soon.title in page.text
    assert later.title not in page.text and others.title not in page.text
    profile = rita.get(f"/console/customers/{seeded['mine']}")  # the 360 page lists the open tasks
    assert f'id="open-task-{later.id}"' in profile.text and later.title in profile.text

    forged = rita.post(f"/console/tasks/{late.id}/done", headers={"HX-Request": "true"})
    assert forged.status_code == 403 and crm.tasks.get(late.id).status.value == "open"
    done = rita.post(f"/console/tasks/{late.id}/done", headers={"HX-Request": "true", "X-CSRF-Token": csrf_of(rita)})
    assert done.status_code == 200 and 'data-status="done"' in done.text, done.text
    assert crm.tasks.get(late.id).status.value == "done"
    with crm.unit(readonly=True) as uow:
        audit = tables.audit_log
        actors = uow.conn.execute(select(audit.c.actor).where(
            audit.c.entity == "task", audit.c.entity_id == str(late.id))).scalars().all()
    assert "rita" in actors
    # Max's task is not rita's to complete: she may not even see it.
    refused = rita.post(f"/console/tasks/{others.id}/done", headers={"HX-Request": "true",
                                                                  "X-CSRF-Token": csrf_of(rita)})
    assert refused.status_code in (403, 404) and crm.tasks.get(others.id).status.value == "open"

    # A field name from the URL is never looked up as an attribute.
    assert rita.get(f"/console/customers/{seeded['mine']}/fields/__class__").status_code == 422

    ann = sign_in(api, "ann")
    board = ann.get("/console/dashboard")
    shown = re.search(r'id="kpi-overdue"><h2>[^<]*</h2><p class="big">([\d,]+)<', board.text)
    assert shown, board.text
    with crm.acting("ann"):
        expected = sum(1 for t in crm.tasks.list(limit=100_000)
                       if t.status.value == "open" and t.due is not None and t.due < crm.as_of())
    assert int(shown.group(1).replace(",", "")) == expected >= 1


def test_a_dashboard_bar_drills_down_to_the_customers_behind_it(api: Api, seeded: dict[str, int]) -> None:
    """The dashboard's chart data carries a drill key per bar; the customers page lists the customers
    behind it, checked against the same set computed in Python from the services' lists, for the
    admin and for a sales rep (who sees only hers)."""
    import json
    from datetime import datetime, time, timedelta

    crm = api.crm
    tag = uuid.uuid4().hex[:6]
    for owner in ("rita", "max"):
        for n in range(3):
            buyer = crm.customers.add(name=f"Drill {owner} {tag} {n}", owner=owner)
            deal = crm.deals.add(customer_id=buyer.id, title=f"drill {tag}", amount="10.00", currency="CNY",
                                 stage="lead", owner=owner)
            crm.deals.move(deal.id, "won" if n < 2 else "proposal")
    zone = crm.as_of().tzinfo
    today = crm.as_of().date()
    stages = {s.name: s.outcome.value for s in crm.config.pipelines["default"].stages}
    for login in ("ann", "rita"):
        client = sign_in(api, login)
        board = client.get("/console/dashboard")
        data = json.loads(re.search(r'id="chart-data">(.*?)</script>', board.text, re.S).group(1))  # type: ignore[union-attr]
        revenue = data["revenue"]["series"]["CNY"]
        month = today.strftime("%Y-%m")
        won_key = revenue["drill"][revenue["x"].index(month)]
        stage_key = data["stages"]["drill"][data["stages"]["x"].index("proposal")]
        _, first, last, _ = won_key.split(":")
        lo = datetime.combine(datetime.fromisoformat(first).date(), time.min, tzinfo=zone)
        hi = datetime.combine(datetime.fromisoformat(last).date() + timedelta(days=1), time.min, tzinfo=zone)
        with crm.acting(login):
            deals = crm.deals.list(limit=100_000)
            live = {c.id for c in crm.customers.list(limit=100_000)}
        won = {d.customer_id for d in deals if stages[d.stage] == "won" and d.currency == "CNY"
               and d.closed_at and lo <= d.closed_at < hi} & live
        open_ = {d.customer_id for d in deals if d.stage == "proposal"} & live
        assert won and open_
        listed_won, listed_open = drilled_ids(client, won_key), drilled_ids(client, stage_key)
        assert listed_won == sorted(won, reverse=True) and listed_open == sorted(open_, reverse=True), login
        if login == "rita":
            max_customers = {c.id for c in crm.customers.list({"owner": "max"}, limit=100_000)}
            assert not max_customers & (set(listed_won) | set(listed_open))
    # Past one page (50 rows): 60 customers with an open deal in "qualified", paged by id.
    crm.customers.add_many([{"name": f"Deep {tag} {n:02d}", "owner": "rita"} for n in range(60)])
    deep = crm.customers.list({"name__contains": f"Deep {tag}"}, limit=100)
    crm.deals.add_many([{"customer_id": c.id, "title": f"deep {tag}", "amount": "1.00", "currency": "CNY",
                         "stage": "qualified", "owner": "rita"} for c in deep])
    with crm.acting("rita"):
        expected = sorted({d.customer_id for d in crm.deals.list({"stage": "qualified"}, limit=100_000)},
                          reverse=True)
    assert len(expected) >= 60 and drilled_ids(sign_in(api, "rita"), "stage:qualified") == expected
    bad = client.get("/console/customers", params={"drill": "won:2026-13-01:2026-12-01:CNY"})
    assert bad.status_code == 422 and "drill" in bad.text
    assert client.get("/console/customers", params={"drill": "stage:won"}).status_code == 422  # not an open stage


def test_sign_in_attempts_are_limited(api: Api, seeded: dict[str, int]) -> None:
    """Runs last: it uses up the address's attempts (the server is this module's)."""
    client = api.client(None, follow_redirects=False)
    csrf = re.search(r'name="csrf" value="([^"]+)"', client.get("/console/sign-in").text)
    assert csrf
    # Empty passwords: counted like any attempt, refused without hashing (keeps the test quick).
    answers = [client.post("/console/sign-in", data={"login": "otto", "password": "",
                                                     "csrf": csrf.group(1)}).status_code for _ in range(25)]
    assert answers[0] == 401 and answers[-1] == 429
    right = client.post("/console/sign-in", data={"login": "rita", "password": PASSWORD, "csrf": csrf.group(1)})
    assert right.status_code == 429 and "sign-in-error" in right.text  # right or wrong, until the window moves

