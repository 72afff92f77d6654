"""The ``sms-http`` channel against a loopback HTTP gateway: E.164 numbers,
templated bodies (JSON and form), auth, GSM-7/UCS-2 segment counts."""

from __future__ import annotations

import base64
import json
import math
from urllib.parse import parse_qs

import pytest
from crmcore_notify import SmsHttpChannel, sms_length
from hypothesis import given
from hypothesis import strategies as st

import crmcore
from crmcore.testing import ChannelContract

GSM_BASIC = ("@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?¡ABCDEFGHIJKLMNOPQRSTUVWXYZ"
             "ÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà")
GSM_EXTENSION = "^{}\\[~]|€"


def open_crm(crm_factory, url, **more):
    return crm_factory(plugins=["notify"], config={"channels": {"sms-http": {"url": url, "sender": "CRM", **more}}})


def test_json_gateway_with_bearer_token(crm_factory, http_server, monkeypatch):
    monkeypatch.setenv("CRM_TEST_SMS_TOKEN", "tok-123")
    http_server.reply("/sms", 200, '{"messages": [{"id": "SM-9"}]}')
    crm = open_crm(crm_factory, http_server.url("/sms"), token_env="CRM_TEST_SMS_TOKEN",
                   default_region="CN", provider_id_field="messages.0.id")
    customer = crm.customers.add(name="刘洋", phone="+86 138 0013 8000")
    text = "刘洋您好，您的验证码是 834201，5 分钟内有效。"
    mid = crm.notify.enqueue("sms-http", customer_id=customer.id, body=text)
    assert crm.notify.dispatch().sent == 1

    [request] = http_server.received("/sms")
    assert request.headers["Authorization"] == "Bearer tok-123"
    assert request.json() == {"to": "+8613800138000", "from": "CRM", "text": text}
    [row] = crm.notify.outbox(message_id=mid)
    assert (row["status"], row["provider_id"]) == ("sent", "SM-9")
    units = len(text)  # all in the Basic Multilingual Plane: one UTF-16 unit each
    assert row["delivery"] == {"to": "+8613800138000", "encoding": "UCS-2", "units": units,
                               "segments": 1 if units <= 70 else math.ceil(units / 67)}


def test_form_gateway_with_basic_auth(crm_factory, http_server):
    http_server.reply("/2010-04-01/Messages.json", 201, '{"sid": "SMabc"}')
    crm = open_crm(crm_factory, http_server.url("/2010-04-01/Messages.json"), username="AC1", password="pw",
                   content_type="application/x-www-form-urlencoded", provider_id_field="sid",
                   body_template="To={{ to|urlencode }}&From={{ sender|urlencode }}&Body={{ text|urlencode }}")
    mid = crm.notify.enqueue("sms-http", recipient="+1 (415) 555-2671", body="Your table is ready & waiting")
    assert crm.notify.dispatch().sent == 1
    [request] = http_server.received()
    assert request.headers["Authorization"] == "Basic " + base64.b64encode(b"AC1:pw").decode()
    assert parse_qs(request.body.decode()) == {"To": ["+14155552671"], "From": ["CRM"],
                                               "Body": ["Your table is ready & waiting"]}
    [row] = crm.notify.outbox(message_id=mid)
    assert (row["provider_id"], row["delivery"]["encoding"], row["delivery"]["segments"]) == ("SMabc", "GSM-7", 1)


@pytest.mark.parametrize("number", ["12345", "+86 123", "not a phone", "+1 555 0000000"])
def test_invalid_number_is_dead_others_go(crm_factory, http_server, number):
    crm = open_crm(crm_factory, http_server.url("/sms"))
    bad = crm.notify.enqueue("sms-http", recipient=number, body="x")
    good = crm.notify.enqueue("sms-http", recipient="+8613800138000", body="y")
    result = crm.notify.dispatch()
    assert (result.sent, result.dead) == (1, 1)
    [row] = crm.notify.outbox(message_id=bad)
    assert row["status"] == "dead" and f"invalid phone number {number!r}" in row["last_error"]
    assert crm.notify.outbox(message_id=good)[0]["status"] == "sent"
    assert [r.json()["to"] for r in http_server.received()] == ["+8613800138000"]


def test_too_many_segments_refused_before_sending(crm_factory, http_server):
    crm = open_crm(crm_factory, http_server.url("/sms"), max_segments=2)
    mid = crm.notify.enqueue("sms-http", recipient="+8613800138000", body="长" * 135)  # 135 > 2 * 67
    assert crm.notify.dispatch().dead == 1
    assert "needs 3 segments (UCS-2)" in crm.notify.outbox(message_id=mid)[0]["last_error"]
    assert http_server.received() == []


def test_template_errors(crm_factory, http_server):
    with pytest.raises(crmcore.ConfigError, match=r"\[channels.sms-http\].*body_template: template syntax error on line 1"):
        open_crm(crm_factory, http_server.url(), body_template='{"to": {{ to }')
    crm = open_crm(crm_factory, http_server.url(), body_template='{"to": "{{ too }}"}')
    mid = crm.notify.enqueue("sms-http", recipient="+8613800138000", body="x")
    assert crm.notify.dispatch().dead == 1
    assert "'too' is undefined" in crm.notify.outbox(message_id=mid)[0]["last_error"]
    assert http_server.received() == []


def test_sandbox_blocks_unsafe_templates(crm_factory, http_server):
    crm = open_crm(crm_factory, http_server.url(), body_template="{{ text.__class__.__mro__ }}")
    mid = crm.notify.enqueue("sms-http", recipient="+8613800138000", body="x")
    assert crm.notify.dispatch().dead == 1
    assert "unsafe" in crm.notify.outbox(message_id=mid)[0]["last_error"]


def test_gateway_errors(crm_factory, http_server):
    http_server.reply("/busy", 503, "try later")
    http_server.reply("/bad", 422, '{"error": "invalid sender"}')
    for path, status in (("/busy", "pending"), ("/bad", "dead")):
        crm = open_crm(crm_factory, http_server.url(path))
        mid = crm.notify.enqueue("sms-http", recipient="+8613800138000", body="x", key=path)
        crm.notify.dispatch()
        [row] = crm.notify.outbox(message_id=mid)
        assert row["status"] == status and path in row["last_error"]


# -- segment counting, checked against the rules written out independently ---------------------

@pytest.mark.parametrize(("text", "encoding", "units", "segments"), [
    ("", "GSM-7", 0, 1),
    ("a" * 160, "GSM-7", 160, 1),
    ("a" * 161, "GSM-7", 161, 2),
    ("a" * 306, "GSM-7", 306, 2),
    ("a" * 307, "GSM-7", 307, 3),
    ("€" * 80, "GSM-7", 160, 1),       # extension characters take two septets
    ("€" * 81, "GSM-7", 162, 2),
    ("中" * 70, "UCS-2", 70, 1),
    ("中" * 71, "UCS-2", 71, 2),
    ("中" * 134, "UCS-2", 134, 2),
    ("中" * 135, "UCS-2", 135, 3),
    ("a" * 100 + "é", "GSM-7", 101, 1),  # é is in GSM-7
    ("a" * 100 + "ê", "UCS-2", 101, 2),  # ê is not
    ("😀" * 35, "UCS-2", 70, 1),         # outside the BMP: two units each
    ("😀" * 36, "UCS-2", 72, 2),
])
def test_sms_length_examples(text, encoding, units, segments):
    measured = sms_length(text)
    assert (measured.encoding, measured.units, measured.segments) == (encoding, units, segments)


@given(st.text(alphabet=GSM_BASIC + GSM_EXTENSION, max_size=500))
def test_sms_length_gsm_property(text):
    septets = sum(2 if ch in GSM_EXTENSION else 1 for ch in text)
    measured = sms_length(text)
    assert (measured.encoding, measured.units) == ("GSM-7", septets)
    assert measured.segments == (1 if septets <= 160 else -(-septets // 153))


@given(st.text(min_size=1, max_size=300).filter(lambda t: any(ord(c) > 0x7F and c not in GSM_BASIC + GSM_EXTENSION
                                                                 for c in t)))
def test_sms_length_ucs2_property(text):
    units = sum(2 if ord(ch) > 0xFFFF else 1 for ch in text)
    measured = sms_length(text)
    assert (measured.encoding, measured.units) == ("UCS-2", units)
    assert measured.segments == (1 if units <= 70 else -(-units // 67))


class TestSmsHttpContract(ChannelContract):
    @pytest.fixture
    def component(self):
        return SmsHttpChannel()

    @pytest.fixture
    def channel_options(self, http_server):
        return {"url": http_server.url("/sms"), "sender": "CRM"}

    @pytest.fixture
    def delivered(self, http_server):
        return lambda: [r.body for r in http_server.received()]

    @pytest.fixture
    def provoke_failure(self, http_server):
        return lambda kind: http_server.reply("/sms", 503 if kind == "transient" else 400)

    def test_delivers_through_the_dispatcher(self, crm_factory, http_server, delivered):
        crm = open_crm(crm_factory, http_server.url("/sms"))
        crm.notify.enqueue("sms-http", recipient="+8613800138000", body="contract")
        crm.notify.dispatch()
        assert [json.loads(body)["text"] for body in delivered()] == ["contract"]
