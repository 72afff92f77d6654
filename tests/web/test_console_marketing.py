"""The console's segments, campaigns and outbox pages over a real ``crm serve`` on SQLite,
PostgreSQL and MariaDB: a strategy run from the page with its sizes and movement against the
runs the service recorded; a campaign previewed per locale and queued through
``crm.campaigns`` (counts, consent, idempotence, audit); refusals for a sales rep; the outbox
showing only what the user may see."""

from __future__ import annotations

import re
import uuid

import pytest
from crmcore.application.audit import records

from .conftest import Api
from .console_helpers import csrf_of, set_passwords, sign_in

API_TOML = """
[notify]
unsubscribe_secret = "console-marketing-tests-secret"
"""


@pytest.fixture(scope="module")
def seeded(api: Api) -> dict[str, list[int]]:
    """Buyers of rita's and of max's (won deals, marketing consent), and passwords."""
    set_passwords(api, "max", "rita")
    crm = api.crm
    tag = uuid.uuid4().hex[:6]
    owned: dict[str, list[int]] = {"rita": [], "max": []}
    for owner in owned:
        for n in range(3):
            buyer = crm.customers.add(name=f"Buyer {owner} {tag} {n}", email=f"b{n}{owner}{tag}@example.com",
                                      owner=owner, consent_email=True, consent_marketing=True)
            crm.deals.add(customer_id=buyer.id, title=f"order {tag}", amount=f"{100 * (n + 1)}.00", currency="CNY",
                          stage="won", owner=owner)
            owned[owner].append(buyer.id)  # type: ignore[arg-type]
    return owned


def _hx(client, path: str, data: dict[str, str]):  # type: ignore[no-untyped-def]
    return client.post(path, data=data, headers={"HX-Request": "true", "X-CSRF-Token": csrf_of(client)})


def test_running_a_strategy_shows_its_sizes_and_movement(api: Api, seeded: dict[str, list[int]]) -> None:
    crm = api.crm
    max_ = sign_in(api, "max")
    first = _hx(max_, "/console/segments/run", {"strategy": "rfm"})
    assert first.status_code == 200 and 'id="strategy-rfm"' in first.text, first.text
    run = crm.segments.runs("rfm", limit=1)[0]
    assert f"Run {run.id} " in first.text and run.actor == "max"
    shown = dict(re.findall(r'<tr data-segment="([^"]+)"><td>[^<]*</td><td class="num">([\d,]+)</td>', first.text))
    assert {k: int(v.replace(",", "")) for k, v in shown.items()} == run.counts
    # A new buyer, a second run: the page puts each size beside the run before, and the movement.
    extra = crm.customers.add(name="Late buyer", owner="max", consent_email=True, consent_marketing=True,
                              email=f"late{uuid.uuid4().hex[:6]}@example.com")
    crm.deals.add(customer_id=extra.id, title="late", amount="50.00", currency="CNY", stage="won", owner="max")
    second = _hx(max_, "/console/segments/run", {"strategy": "rfm"})
    now, before = crm.segments.runs("rfm", limit=2)
    for segment in set(now.counts or {}) | set(before.counts or {}):
        row = re.search(rf'<tr data-segment="{re.escape(segment)}">(.*?)</tr>', second.text, re.S)
        assert row, segment
        cells = [c.replace(",", "") for c in re.findall(r'<td class="num">([^<]*)</td>', row.group(1))]
        change = (now.counts or {}).get(segment, 0) - (before.counts or {}).get(segment, 0)
        assert cells == [str((now.counts or {}).get(segment, 0)), str((before.counts or {}).get(segment, 0)),
                         f"+{change}" if change > 0 else str(change)], (segment, cells)
    for field in ("entered", "left", "moved"):
        assert f'<span class="{field}">{getattr(now, field):,}</span>' in second.text
    with crm.unit(readonly=True) as uow:
        assert any(r.action == "segment.run" and r.actor == "max" and r.entity_id == str(now.id)
                   for r in records(uow.conn, actor="max"))
    # A sales rep sees the runs but may not run a strategy: refused (the page shows it), nothing run.
    rita = sign_in(api, "rita")
    assert rita.get("/console/segments").status_code == 200
    refused = _hx(rita, "/console/segments/run", {"strategy": "rfm"})
    assert refused.status_code == 403 and "segment.run" in refused.text
    assert crm.segments.runs("rfm", limit=1)[0].id == now.id
    unknown = _hx(max_, "/console/segments/run", {"strategy": "nope"})
    assert unknown.status_code == 404 and "nope" in unknown.text


def test_a_campaign_is_previewed_per_locale_then_queued_once(api: Api, seeded: dict[str, list[int]]) -> None:
    crm = api.crm
    max_ = sign_in(api, "max")
    if not crm.segments.runs("rfm", limit=1):
        _hx(max_, "/console/segments/run", {"strategy": "rfm"})
    run = crm.segments.runs("rfm", limit=1)[0]
    segment = max(run.counts or {}, key=lambda s: (run.counts or {})[s])
    form = max_.get("/console/campaigns")
    assert form.status_code == 200 and f'value="rfm:{segment}"' in form.text
    data = {"template": "win-back", "segment": f"rfm:{segment}", "channel": "file", "purpose": "marketing"}
    queued_before = len(crm.notify.outbox(limit=100_000))

    preview = _hx(max_, "/console/campaigns/preview", data)
    assert preview.status_code == 200 and 'data-dry-run="true"' in preview.text, preview.text
    with crm.acting("max"):
        plan = crm.campaigns.plan("win-back", f"rfm:{segment}", channel="file", purpose="marketing")
        sample = next(crm.segments.iter_members("rfm", segment, run.id, limit=1))
        expected = {loc: crm.messages.preview("win-back", sample["customer_id"], locale=loc)
                    for loc in ("en", "zh-CN")}
    assert f'class="members">{plan.members:,}<' in preview.text and f'class="eligible">{plan.eligible:,}<' in preview.text
    for locale, message in expected.items():
        block = re.search(rf'data-locale="{locale}">(.*?)</article>', preview.text, re.S)
        assert block and message.subject in block.group(1), locale
    assert expected["en"].subject != expected["zh-CN"].subject
    assert len(crm.notify.outbox(limit=100_000)) == queued_before  # a preview queues nothing

    rita = sign_in(api, "rita")  # a sales rep may preview, not queue a campaign
    refused = _hx(rita, "/console/campaigns/queue", data)
    assert refused.status_code == 403 and "notify.campaign" in refused.text
    assert len(crm.notify.outbox(limit=100_000)) == queued_before

    queued = _hx(max_, "/console/campaigns/queue", data)
    assert queued.status_code == 200 and 'data-dry-run="false"' in queued.text
    enqueued = int(re.search(r'class="enqueued">([\d,]+)<', queued.text).group(1).replace(",", ""))  # type: ignore[union-attr]
    mine = [m for m in crm.notify.outbox(limit=100_000) if (m["idempotency_key"] or "").startswith(
        f"campaign:{plan.name}:file:")]
    assert enqueued == plan.eligible == len(mine) > 0
    with crm.unit(readonly=True) as uow:
        assert any(r.action == "campaign.queue" and r.actor == "max" for r in records(uow.conn, actor="max"))
    again = _hx(max_, "/console/campaigns/queue", data)
    assert 'class="enqueued">0<' in again.text and f'class="duplicates">{enqueued:,}<' in again.text

    bad = _hx(max_, "/console/campaigns/preview", {**data, "purpose": "spam"})
    assert bad.status_code == 422 and "purpose" in bad.text


def test_the_outbox_page_shows_only_what_the_user_may_see(api: Api, seeded: dict[str, list[int]]) -> None:
    crm = api.crm
    tag = uuid.uuid4().hex[:6]
    for owner in ("rita", "max"):
        crm.messages.send("file", customer_id=seeded[owner][0], subject=f"hello {owner} {tag}", body="hi",
                          key=f"outbox-page-{owner}-{tag}")
    rita = sign_in(api, "rita")
    page = rita.get("/console/outbox")
    assert page.status_code == 200 and f"hello rita {tag}" in page.text and f"hello max {tag}" not in page.text
    shown = {int(i) for i in re.findall(r'href="/console/customers/(\d+)"', page.text)}
    with crm.acting("rita"):
        visible = {c.id for c in crm.customers.list(limit=100_000)}
    assert seeded["rita"][0] in shown and shown <= visible and seeded["max"][0] not in shown
    pending = rita.get("/console/outbox", params={"status": "pending"})
    assert all(s == "pending" for s in re.findall(r'<tr class="message" data-status="([^"]+)"', pending.text))


def test_a_report_chart_drills_down_to_its_segments_members(api: Api, seeded: dict[str, list[int]]) -> None:
    """The segments report's "members per segment" bars declare their drill-down (a customers
    filter); each point opens the segment's members, as the service lists them, per user."""
    import html
    import json

    crm = api.crm
    with crm.acting("max"):
        crm.segments.run("rfm")
    run = crm.segments.runs("rfm", limit=1)[0]
    for login in ("max", "rita"):
        client = sign_in(api, login)
        page = client.get("/console/reports", params={"name": "segments"})
        specs = [json.loads(html.unescape(s)) for s in re.findall(r'data-spec="([^"]+)"', page.text)]
        members_chart = next(s for s in specs if s["layout"]["title"]["text"] == "Members per segment")
        drills = members_chart["data"][0]["customdata"]
        assert drills == [f"where:segment.rfm={x}" for x in members_chart["data"][0]["x"]]
        for drill in drills:
            listed = client.get("/console/customers", params={"drill": drill})
            assert listed.status_code == 200 and 'id="drill"' in listed.text
            shown = {int(i) for i in re.findall(r'href="/console/customers/(\d+)"', listed.text)}
            with crm.acting(login):
                expected = {m["customer_id"] for m in crm.segments.members("rfm", drill.rsplit("=", 1)[1], run.id)}
            assert shown == expected, (login, drill)
            if login == "rita":
                assert not shown & set(seeded["max"])
    # A report of a run named explicitly or narrowed by a filter has no drill-down: the customers
    # filter reads the strategy's latest run, unfiltered.
    for options in ({"run": run.id}, {"region": "华东"}):
        result = crm.reports.run("segments", options=options)
        assert all(chart.drill is None for chart in result.charts), options
    assert crm.reports.run("segments").charts[0].drill == "segment.rfm={x}"
    assert client.get("/console/customers", params={"drill": "where:nonsense"}).status_code == 422
