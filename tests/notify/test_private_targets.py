"""Webhook and SMS URLs may be refused when they resolve to private, loopback or
link-local addresses (issue 14, point 9).  The check is made on the resolved
address at connect time (``localhost`` is refused although its text is no IP),
on by default for a URL taken from a message's data, off by default for the
operator's configured URL (these tests' servers are on loopback)."""

from __future__ import annotations

import pytest
from crmcore_notify.httpcalls import refusal

SECRET = "k"


def open_webhook(crm_factory, url, **more):
    options = {"url": url, "secret": SECRET, "timeout": 2, **more}
    return crm_factory(plugins=["notify"], config={"channels": {"webhook": options}})


def test_refused_when_configured_even_through_a_host_name(crm_factory, http_server):
    crm = open_webhook(crm_factory, f"http://localhost:{http_server.port}/hook", refuse_private=True)
    mid = crm.notify.enqueue("webhook", body="x")
    assert crm.notify.dispatch().dead == 1
    assert http_server.received() == []
    [row] = crm.notify.outbox(message_id=mid)
    assert "PermanentError" in row["last_error"] and "is a loopback address" in row["last_error"]
    assert "localhost" in row["last_error"]


def test_the_operators_loopback_url_is_allowed_by_default(crm_factory, http_server):
    crm = open_webhook(crm_factory, http_server.url())
    crm.notify.enqueue("webhook", body="x")
    assert crm.notify.dispatch().sent == 1


def test_a_url_from_the_payload_is_refused_by_default(crm_factory, http_server):
    crm = open_webhook(crm_factory, http_server.url(), payload_url=True)
    bad = crm.notify.enqueue("webhook", body="x", payload={"url": f"http://localhost:{http_server.port}/evil"})
    good = crm.notify.enqueue("webhook", body="y")
    result = crm.notify.dispatch()
    assert result.sent == 1 and result.dead == 1
    assert [r.path for r in http_server.received()] == ["/hook"]
    [row] = crm.notify.outbox(message_id=bad)
    assert "is a loopback address" in row["last_error"]
    assert crm.notify.outbox(message_id=good)[0]["status"] == "sent"


def test_a_url_from_the_payload_may_be_allowed_explicitly(crm_factory, http_server):
    crm = open_webhook(crm_factory, http_server.url(), payload_url=True, refuse_private=False)
    crm.notify.enqueue("webhook", body="x", payload={"url": http_server.url("/theirs")})
    assert crm.notify.dispatch().sent == 1
    assert [r.path for r in http_server.received()] == ["/theirs"]


def test_sms_refuses_private_targets_when_asked(crm_factory, http_server):
    options = {"url": f"http://localhost:{http_server.port}/sms", "refuse_private": True, "timeout": 2}
    crm = crm_factory(plugins=["notify"], config={"channels": {"sms-http": options}})
    mid = crm.notify.enqueue("sms-http", recipient="+8613800138000", body="hi")
    assert crm.notify.dispatch().dead == 1
    assert http_server.received() == []
    assert "is a loopback address" in crm.notify.outbox(message_id=mid)[0]["last_error"]


@pytest.mark.parametrize("address, verdict", [
    ("127.0.0.1", "a loopback address"), ("::1", "a loopback address"), ("10.1.2.3", "a private address"),
    ("192.168.0.1", "a private address"), ("169.254.169.254", "a link-local address"),
    ("fe80::1", "a link-local address"), ("::ffff:127.0.0.1", "a loopback address"), ("0.0.0.0", "not a public address"),
    ("100.64.0.1", "not a public address"), ("93.184.216.34", None), ("2606:4700::1111", None)])
def test_address_verdicts(address, verdict):
    assert refusal(address) == verdict
