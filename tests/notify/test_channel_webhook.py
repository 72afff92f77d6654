"""The ``webhook`` channel against a real HTTP server on loopback: the signed
JSON body, each status class's verdict, timeouts, and receiver-side verification."""

from __future__ import annotations

import json
import time
from datetime import timedelta

import pytest
from crmcore_notify import WebhookChannel, sign, verify_signature

import crmcore
from crmcore.testing import FIXED_NOW, ChannelContract

from .conftest import free_port

SECRET = "whsec-测试-key"


def open_crm(crm_factory, url, clock=None, **more):
    options = {"url": url, "secret": SECRET, "timeout": 2, **more}
    return crm_factory(plugins=["notify"], config={"channels": {"webhook": options}}, clock=clock)


def test_posts_signed_json(crm_factory, http_server):
    crm = open_crm(crm_factory, http_server.url(), headers={"X-Api-Key": "k1"})
    customer = crm.customers.add(name="王芳", email="wang@example.com")
    mid = crm.notify.enqueue("webhook", customer_id=customer.id, subject="订单已付款", body="¥128.00",
                             payload={"order": 7, "amount": "128.00"}, key="paid:7")
    before = int(time.time())
    assert crm.notify.dispatch().sent == 1

    [request] = http_server.received("/hook")
    assert request.method == "POST" and request.headers["Content-Type"].startswith("application/json")
    assert request.headers["X-Api-Key"] == "k1"
    assert request.headers["X-CRM-Idempotency-Key"] == "paid:7"
    body = request.json()
    assert body == {"id": mid, "idempotency_key": "paid:7", "channel": "webhook", "purpose": "transactional",
                    "customer_id": customer.id, "recipient": None, "subject": "订单已付款", "body": "¥128.00",
                    "payload": {"order": 7, "amount": "128.00"}, "attempt": 1}
    stamp = request.headers["X-CRM-Timestamp"]
    assert before <= int(stamp) <= int(time.time())
    # What a receiver does, written out independently of the channel's code:
    import hashlib
    import hmac
    expected = hmac.new(SECRET.encode(), f"{stamp}.".encode() + request.body, hashlib.sha256).hexdigest()
    assert request.headers["X-CRM-Signature"] == f"sha256={expected}"
    assert verify_signature(SECRET.encode(), stamp, request.body, request.headers["X-CRM-Signature"])
    [row] = crm.notify.outbox(message_id=mid)
    assert (row["status"], row["provider_id"]) == ("sent", "m-1")


def test_verification_rejects_tampering_replays_and_wrong_keys():
    body, stamp = b'{"id": 1}', str(int(time.time()))
    good = sign(SECRET.encode(), stamp, body)
    assert verify_signature(SECRET.encode(), stamp, body, good)
    assert not verify_signature(SECRET.encode(), stamp, b'{"id": 2}', good)  # body changed
    assert not verify_signature(b"other", stamp, body, good)  # wrong key
    later = str(int(stamp) + 1)
    assert not verify_signature(SECRET.encode(), later, body, good)  # timestamp changed
    old = str(int(time.time()) - 600)
    assert not verify_signature(SECRET.encode(), old, body, sign(SECRET.encode(), old, body))  # replayed later
    assert verify_signature(SECRET.encode(), old, body, sign(SECRET.encode(), old, body), tolerance_s=900)
    assert not verify_signature(SECRET.encode(), "soon", body, good)


@pytest.mark.parametrize(("status", "verdict"), [(201, "sent"), (204, "sent"), (400, "dead"), (404, "dead"),
                                                 (410, "dead"), (429, "pending"), (500, "pending"),
                                                 (503, "pending"), (301, "dead")])
def test_status_verdicts(crm_factory, http_server, status, verdict):
    http_server.reply("/hook", status, "" if status in (204, 301) else '{"error": "nope"}')
    crm = open_crm(crm_factory, http_server.url())
    mid = crm.notify.enqueue("webhook", body="x")
    crm.notify.dispatch()
    [row] = crm.notify.outbox(message_id=mid)
    assert row["status"] == verdict
    if verdict != "sent":
        assert f"-> {status}" in row["last_error"]
    if verdict == "pending":
        assert row["next_attempt_at"] > FIXED_NOW  # retried later, with backoff
    assert len(http_server.received()) == 1


def test_timeout_retries_then_succeeds(crm_factory, http_server):
    now = [FIXED_NOW]
    http_server.reply("/slow", 200, '{"id": "late"}', delay=1.5)
    crm = open_crm(crm_factory, http_server.url("/slow"), clock=lambda: now[0], timeout=0.3)
    mid = crm.notify.enqueue("webhook", body="x")
    assert crm.notify.dispatch().retried == 1
    [row] = crm.notify.outbox(message_id=mid)
    assert row["status"] == "pending" and "timed out" in row["last_error"]

    http_server.reply("/slow", 200, '{"id": "fast"}')
    now[0] = row["next_attempt_at"] + timedelta(seconds=1)
    assert crm.notify.dispatch().sent == 1
    [row] = crm.notify.outbox(message_id=mid)
    assert (row["status"], row["attempts"], row["provider_id"]) == ("sent", 2, "fast")
    attempts = [r.json()["attempt"] for r in http_server.received("/slow")]
    assert attempts == [1, 2]


def test_nobody_listening_retries(crm_factory):
    crm = open_crm(crm_factory, f"http://127.0.0.1:{free_port()}/hook")
    mid = crm.notify.enqueue("webhook", body="x")
    assert crm.notify.dispatch().retried == 1
    assert "cannot connect" in crm.notify.outbox(message_id=mid)[0]["last_error"]


def test_unknown_host_is_dead(crm_factory):
    crm = open_crm(crm_factory, "http://no-such-host.invalid/hook")
    mid = crm.notify.enqueue("webhook", body="x")
    assert crm.notify.dispatch().dead == 1
    assert "unknown host" in crm.notify.outbox(message_id=mid)[0]["last_error"]


def test_missing_url_or_secret_is_dead_with_reason(crm_factory, http_server):
    crm = crm_factory(plugins=["notify"], config={"channels": {"webhook": {"url": http_server.url()}}})
    mid = crm.notify.enqueue("webhook", body="x")
    assert crm.notify.dispatch().dead == 1
    assert "no signing secret" in crm.notify.outbox(message_id=mid)[0]["last_error"]
    assert http_server.received() == []


def test_bad_url_in_config(crm_factory):
    with pytest.raises(crmcore.ConfigError, match=r"\[channels.webhook\].*url must be an http"):
        crm_factory(plugins=["notify"], config={"channels": {"webhook": {"url": "ftp://x"}}})


def test_one_client_per_batch_and_keys_in_order(crm_factory, http_server):
    crm = open_crm(crm_factory, http_server.url())
    ids = [crm.notify.enqueue("webhook", body=str(n), key=f"k{n}") for n in range(5)]
    assert crm.notify.dispatch().sent == 5
    assert [json.loads(r.body)["id"] for r in http_server.received()] == ids


class TestWebhookContract(ChannelContract):
    @pytest.fixture
    def component(self):
        return WebhookChannel()

    @pytest.fixture
    def channel_options(self, http_server):
        return {"url": http_server.url(), "secret": SECRET, "timeout": 2}

    @pytest.fixture
    def delivered(self, http_server):
        return lambda: [r.body for r in http_server.received()]

    @pytest.fixture
    def provoke_failure(self, http_server):
        return lambda kind: http_server.reply("/hook", 503 if kind == "transient" else 400)

    def test_delivers_through_the_dispatcher(self, crm_factory, http_server, delivered):
        crm = open_crm(crm_factory, http_server.url())
        crm.notify.enqueue("webhook", body="contract")
        crm.notify.dispatch()
        assert [json.loads(body)["body"] for body in delivered()] == ["contract"]
