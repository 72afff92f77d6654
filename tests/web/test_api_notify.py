"""``/notify`` over a real uvicorn process: queueing (templated and plain), consent, the
outbox's idempotency keys, paging, visibility and roles, on SQLite, PostgreSQL and MariaDB."""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs, urlsplit

from crmcore_notify import SmtpOptions, build_email
from sqlalchemy import select

import crmcore
from crmcore.notify.consent import read_token
from crmcore.store import tables

from .conftest import Api

SECRET = "notify-api-test-secret"
API_TOML = f"""
[notify]
channel = "smtp"
unsubscribe_secret = "{SECRET}"
unsubscribe_url = "https://crm.example.com/unsubscribe?token={{token}}"
"""


def outbox_row(api: Api, message_id: int) -> dict[str, Any]:
    """The stored row, read straight from the database (not through the API)."""
    with api.crm.engine.connect() as conn:
        row = conn.execute(select(tables.notify_outbox).where(tables.notify_outbox.c.id == message_id)).one()
    return dict(row._mapping)


def test_send_plain_message_is_queued_with_the_customers_address(api: Api) -> None:
    customer = api.crm.customers.add(name="Lin Mei", email="lin.mei@example.com", owner="rita")
    response = api.client("rita").post("/notify/messages", json={
        "customer_id": customer.id, "subject": "Your order", "body": "It has shipped."})
    assert response.status_code == 201, response.text
    body = response.json()
    assert response.headers["location"] == f"/notify/outbox/{body['id']}"
    stored = outbox_row(api, body["id"])
    assert (stored["channel"], stored["customer_id"], stored["recipient"], stored["status"], stored["purpose"]) == (
        "smtp", customer.id, "lin.mei@example.com", "pending", "transactional")
    assert (stored["subject"], stored["body"]) == ("Your order", "It has shipped.")
    assert body["status"] == "pending" and body["recipient"] == "lin.mei@example.com"


def test_template_is_rendered_for_the_customer_and_marketing_links_the_unsubscribe_page(api: Api) -> None:
    fan = api.crm.customers.add(name="张伟", email="zhang.wei@example.com", consent_marketing=True)
    response = api.client("ann").post("/notify/messages", json={
        "customer_id": fan.id, "template": "win-back", "purpose": "marketing"})
    assert response.status_code == 201, response.text
    stored = outbox_row(api, response.json()["id"])
    expected = api.crm.messages.preview("win-back", fan.id)  # the same renderer, asked independently
    assert (stored["subject"], stored["body"]) == (expected.subject, expected.text)
    assert stored["status"] == "pending" and stored["payload"]["template"] == "win-back"
    # The smtp channel's List-Unsubscribe points at /unsubscribe with a token for this customer.
    message = crmcore.Message(stored["id"], "smtp", stored["recipient"], stored["subject"], stored["body"],
                              stored["payload"], "marketing", fan.id, stored["idempotency_key"], 1)
    mail = build_email(message, SmtpOptions(sender="shop@example.com"))
    assert mail["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    link = urlsplit(str(mail["List-Unsubscribe"]).strip("<>"))
    assert (link.scheme, link.netloc, link.path) == ("https", "crm.example.com", "/unsubscribe")
    assert read_token(SECRET, parse_qs(link.query)["token"][0]) == (fan.id, "*", "marketing")


def test_consent_refusal_is_stored_suppressed_not_sent(api: Api) -> None:
    shy = api.crm.customers.add(name="Shy", email="shy@example.com")  # no marketing consent (opt-in)
    response = api.client("ann").post("/notify/messages", json={
        "customer_id": shy.id, "subject": "Sale", "body": "50% off", "purpose": "marketing"})
    assert response.status_code == 201
    stored = outbox_row(api, response.json()["id"])
    assert stored["status"] == "suppressed" and stored["last_error"] == "no marketing consent"


def test_idempotency_key_returns_the_first_message(api: Api) -> None:
    customer = api.crm.customers.add(name="Once", email="once@example.com", owner="max")
    client = api.client("ann")
    payload = {"customer_id": customer.id, "subject": "Receipt", "body": "Thanks"}
    first = client.post("/notify/messages", json=payload, headers={"Idempotency-Key": "receipt-77"})
    again = client.post("/notify/messages", json={**payload, "body": "changed"},
                        headers={"Idempotency-Key": "receipt-77"})
    assert (first.status_code, again.status_code) == (201, 200)
    assert again.json()["id"] == first.json()["id"] and again.headers["idempotency-replayed"] == "true"
    with api.crm.engine.connect() as conn:
        rows = conn.execute(select(tables.notify_outbox.c.body).where(
            tables.notify_outbox.c.customer_id == customer.id)).scalars().all()
    assert rows == ["Thanks"]
    # Another user's key is theirs: the same key queues a new message.
    other = api.client("max").post("/notify/messages", json=payload, headers={"Idempotency-Key": "receipt-77"})
    assert other.status_code == 201 and other.json()["id"] != first.json()["id"]


def test_bad_requests_name_the_field(api: Api) -> None:
    customer = api.crm.customers.add(name="Bad", email="bad@example.com")
    client = api.client("ann")
    cases = [
        ({"customer_id": customer.id, "channel": "pigeon", "body": "x"}, "channel"),
        ({"customer_id": customer.id, "template": "win-back", "body": "x"}, "template"),
        ({"template": "win-back"}, "customer_id"),
        ({"customer_id": customer.id, "purpose": "spam", "body": "x"}, "purpose"),
    ]
    for payload, field in cases:
        response = client.post("/notify/messages", json=payload)
        assert response.status_code == 422, (payload, response.text)
        assert field in {e["field"] for e in response.json()["errors"]}, response.text
    missing = client.post("/notify/messages", json={"customer_id": customer.id, "template": "no-such-template"})
    assert missing.status_code == 422 and "Traceback" not in missing.text


def test_outbox_filters_pages_and_one_message(api: Api) -> None:
    customer = api.crm.customers.add(name="Paged", email="paged@example.com")
    client = api.client("ann")
    ids = [client.post("/notify/messages", json={"customer_id": customer.id, "channel": "console",
                                                 "subject": f"#{n}", "body": "x"}).json()["id"] for n in range(5)]
    seen: list[int] = []
    url: str | None = f"/notify/outbox?customer_id={customer.id}&channel=console&limit=2"
    while url:
        page = client.get(url)
        assert page.status_code == 200, page.text
        seen += [m["id"] for m in page.json()["items"]]
        url = page.json()["next"]
    assert seen == sorted(ids, reverse=True)  # newest first, every message once
    assert client.get(f"/notify/outbox?customer_id={customer.id}&channel=smtp").json()["items"] == []
    pending = client.get(f"/notify/outbox?customer_id={customer.id}&status=pending").json()["items"]
    assert {m["id"] for m in pending} == set(ids)
    one = client.get(f"/notify/outbox/{ids[0]}")
    assert one.status_code == 200 and one.json()["subject"] == "#0"
    assert client.get("/notify/outbox/2147483647").status_code == 404
    assert client.get("/notify/outbox?status=lost").status_code == 422


def test_roles_and_visibility(api: Api) -> None:
    mine = api.crm.customers.add(name="Rita's", email="ritas@example.com", owner="rita")
    theirs = api.crm.customers.add(name="Not Rita's", email="notritas@example.com", owner="max")
    queued = api.client("ann").post("/notify/messages", json={"customer_id": theirs.id, "body": "x"}).json()
    rita = api.client("rita")
    assert rita.get(f"/notify/outbox/{queued['id']}").status_code == 404  # its customer is not hers
    assert all(m["customer_id"] != theirs.id for m in rita.get("/notify/outbox?limit=500").json()["items"])
    assert rita.post("/notify/messages", json={"customer_id": theirs.id, "body": "x"}).status_code == 404
    assert rita.post("/notify/messages", json={"customer_id": mine.id, "body": "x"}).status_code == 201
    # A message to an address, without a customer: queued, and its sender gets it back.
    loose = rita.post("/notify/messages", json={"to": "walk-in@example.com", "subject": "Hi", "body": "x"})
    assert loose.status_code == 201 and outbox_row(api, loose.json()["id"])["recipient"] == "walk-in@example.com"
    otto = api.client("otto")  # read-only: may read the outbox, may not queue
    assert otto.post("/notify/messages", json={"customer_id": mine.id, "body": "x"}).status_code == 403
    assert otto.get(f"/notify/outbox/{queued['id']}").status_code == 200
    assert api.client(None).get("/notify/outbox").status_code == 401


def test_channels_and_templates(api: Api) -> None:
    client = api.client("otto")
    channels = {c["name"]: c for c in client.get("/notify/channels").json()}
    assert channels["smtp"]["address"] == "email" and channels["smtp"]["default"] is True
    assert "sender" in channels["smtp"]["options"] and channels["console"]["default"] is False
    templates = {t["template"]: t["locales"] for t in client.get("/notify/templates").json()}
    assert set(templates["win-back"]) >= {"en", "zh-CN"}
