"""Signed inbound webhooks (POST /webhooks/{name}) over a real uvicorn process, on SQLite,
PostgreSQL and MariaDB: the signature is computed here with hmac, independently of the server."""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import time
import uuid
from typing import Any

import httpx

from .conftest import Api

SECRET = "whsec-" + uuid.uuid4().hex
# The server process inherits the test process's environment (tests/web/conftest.py start_server).
os.environ["CRM_TEST_WEBHOOK_SECRET"] = SECRET

API_TOML = """
[api.webhooks.shop]
secret_env = "CRM_TEST_WEBHOOK_SECRET"
tolerance = 300
fields = { "customer.email" = "email", "customer.name" = "name", "order.note" = "interaction.body" }
consent = { marketing = "customer.accepts_marketing" }
event_id = "id"
interaction = { subject = "Order from {customer.name}" }
"""


def signed(body: bytes, secret: str = SECRET, at: int | None = None) -> dict[str, str]:
    """The X-CRM-Signature header a sender computes: HMAC-SHA256 of "<t>.<raw body>"."""
    t = str(int(time.time()) if at is None else at)
    digest = hmac.new(secret.encode(), t.encode() + b"." + body, hashlib.sha256).hexdigest()
    return {"X-CRM-Signature": f"t={t},v1={digest}", "Content-Type": "application/json"}


def event(email: str, **extra: Any) -> bytes:
    payload = {"id": "evt_" + uuid.uuid4().hex, "type": "order.created",
               "customer": {"email": email, "name": "Wang Fang", "accepts_marketing": True},
               "order": {"note": "gift wrap please"}, **extra}
    return json.dumps(payload).encode()


def post(api: Api, body: bytes, headers: dict[str, str]) -> httpx.Response:
    return api.client(None).post("/webhooks/shop", content=body, headers=headers)


def test_a_valid_signature_is_accepted(api: Api) -> None:
    email = f"buyer.{uuid.uuid4().hex[:8]}@example.com"
    body = event(email)
    response = post(api, body, signed(body))
    assert response.status_code == 201, response.text
    data = response.json()
    customer = api.crm.customers.find(email=email)
    assert customer is not None and data["customer_id"] == customer.id and data["created"] is True
    assert (customer.name, customer.source, customer.consent_marketing) == ("Wang Fang", "webhook:shop", True)
    interaction = api.crm.interactions.get(data["interaction_id"])
    assert (interaction.customer_id, interaction.direction.value, interaction.channel) == (customer.id, "inbound",
                                                                                          "webhook")
    assert (interaction.subject, interaction.body) == ("Order from Wang Fang", "gift wrap please")
    [decision] = api.crm.messages.consents(customer.id)
    assert (decision.purpose, decision.channel, decision.granted, decision.source) == ("marketing", "*", True,
                                                                                       "webhook:shop")


def _nothing_written(api: Api, email: str, before: tuple[int, int]) -> None:
    assert api.crm.customers.find(email=email) is None
    assert (api.crm.customers.count(), api.crm.interactions.count()) == before


def test_bad_missing_or_stale_signatures_are_401_and_write_nothing(api: Api) -> None:
    email = f"forged.{uuid.uuid4().hex[:8]}@example.com"
    body = event(email)
    before = (api.crm.customers.count(), api.crm.interactions.count())
    cases = {
        "signature-invalid": signed(body, secret="not-the-secret"),
        "signature-missing": {"Content-Type": "application/json"},
        "signature-malformed": {"X-CRM-Signature": "sha256=abc", "Content-Type": "application/json"},
        "signature-expired": signed(body, at=int(time.time()) - 301),  # right secret, outside the tolerance
    }
    for kind, headers in cases.items():
        response = post(api, body, headers)
        assert response.status_code == 401, (kind, response.text)
        assert response.headers["content-type"] == "application/problem+json"
        assert response.json()["type"].endswith("/" + kind), (kind, response.json())
    # A body changed after signing.
    tampered = post(api, body.replace(b"gift wrap", b"free stuff"), signed(body))
    assert tampered.status_code == 401 and tampered.json()["type"].endswith("/signature-invalid")
    _nothing_written(api, email, before)


def test_a_replayed_event_id_returns_the_first_result_and_writes_nothing(api: Api) -> None:
    email = f"twice.{uuid.uuid4().hex[:8]}@example.com"
    payload = json.loads(event(email))
    first_body = json.dumps(payload).encode()
    first = post(api, first_body, signed(first_body))
    assert first.status_code == 201, first.text
    before = (api.crm.customers.count(), api.crm.interactions.count())
    # The sender redelivers the same event (a retry counter changes the body), freshly signed.
    again_body = json.dumps({**payload, "attempt": 2}).encode()
    again = post(api, again_body, signed(again_body))
    assert again.status_code == 200, again.text
    assert again.json() == first.json()
    assert again.headers["idempotency-replayed"] == "true"
    assert (api.crm.customers.count(), api.crm.interactions.count()) == before
    # A new event for the same customer is a second interaction on the same customer.
    other = event(email)
    third = post(api, other, signed(other))
    assert third.status_code == 201
    assert third.json()["customer_id"] == first.json()["customer_id"] and third.json()["created"] is False


def test_unknown_webhook_and_invalid_payload(api: Api) -> None:
    body = event("x@example.com")
    assert api.client(None).post("/webhooks/nope", content=body, headers=signed(body)).status_code == 404
    before = (api.crm.customers.count(), api.crm.interactions.count())
    bad = json.dumps({"id": "evt_bad_" + uuid.uuid4().hex, "customer": {"email": "not-an-email"}}).encode()
    response = post(api, bad, signed(bad))
    assert response.status_code == 422
    assert [e["field"] for e in response.json()["errors"]] == ["customer.email"]  # the payload's path
    no_id = json.dumps({"customer": {"email": "y@example.com"}}).encode()
    assert post(api, no_id, signed(no_id)).json()["errors"][0]["field"] == "id"
    assert (api.crm.customers.count(), api.crm.interactions.count()) == before
