"""The ``smtp`` channel against a real SMTP server (aiosmtpd on loopback):
MIME structure, UTF-8 headers, List-Unsubscribe, connection reuse, STARTTLS,
implicit TLS, AUTH, and each failure's verdict."""

from __future__ import annotations

import pytest
from crmcore_notify import SmtpChannel, SmtpOptions, build_email

import crmcore
from crmcore.testing import ChannelContract

from .conftest import SMTP_PASSWORD, SMTP_USER, free_port, smtp_options

SUBJECT = "张伟，您的订单 #1024 已发货"


def open_crm(crm_factory, server, **more):
    return crm_factory(plugins=["notify"], config={"channels": {"smtp": smtp_options(server, **more)}})


def test_multipart_mail_with_utf8_headers(crm_factory, smtp_server):
    crm = open_crm(crm_factory, smtp_server, sender_name="茶叶小店", reply_to="help@example.com")
    customer = crm.customers.add(name="张伟", email="zhang.wei@example.com")
    mid = crm.notify.enqueue("smtp", customer_id=customer.id, subject=SUBJECT, body="您好，包裹已寄出。",
                             payload={"html": "<p>您好，<b>包裹</b>已寄出。</p>", "to_name": "张伟"},
                             key="shipped:1024")
    assert crm.notify.dispatch().sent == 1

    [(mail_from, rcpt_tos, _)] = smtp_server.envelopes
    assert (mail_from, rcpt_tos) == ("shop@example.com", ["zhang.wei@example.com"])
    [mail] = smtp_server.messages
    assert mail["Subject"] == SUBJECT
    assert mail["From"].addresses[0].display_name == "茶叶小店"
    assert mail["To"].addresses[0].display_name == "张伟"
    assert mail["To"].addresses[0].addr_spec == "zhang.wei@example.com"
    assert str(mail["Reply-To"]) == "help@example.com"
    assert mail.get_content_type() == "multipart/alternative"
    assert mail.get_body(("plain",)).get_content().strip() == "您好，包裹已寄出。"
    assert mail.get_body(("html",)).get_content().strip() == "<p>您好，<b>包裹</b>已寄出。</p>"
    assert "List-Unsubscribe" not in mail  # transactional

    [row] = crm.notify.outbox(message_id=mid)
    assert row["status"] == "sent"
    assert row["provider_id"] == str(mail["Message-ID"]) and row["provider_id"].endswith("@example.com>")


def test_marketing_mail_carries_list_unsubscribe(crm_factory, smtp_server):
    crm = open_crm(crm_factory, smtp_server, unsubscribe_mailto="unsubscribe@example.com")
    fan = crm.customers.add(name="Fan", email="fan@example.com", consent_marketing=True)
    url = "https://shop.example.com/u/abc123"
    crm.notify.enqueue("smtp", customer_id=fan.id, subject="Sale", body="50% off",
                       purpose="marketing", payload={"unsubscribe_url": url})
    crm.notify.enqueue("smtp", customer_id=fan.id, subject="Receipt", body="thanks",
                       payload={"unsubscribe_url": url})  # transactional: no header even with a URL
    assert crm.notify.dispatch().sent == 2
    sale, receipt = sorted(smtp_server.messages, key=lambda m: m["Subject"] != "Sale")
    assert sale["List-Unsubscribe"] == f"<{url}>, <mailto:unsubscribe@example.com?subject=unsubscribe>"
    assert sale["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert sale.get_content_type() == "text/plain"  # no HTML given: a single part
    assert "List-Unsubscribe" not in receipt


def test_one_connection_per_batch(crm_factory, smtp_server):
    crm = open_crm(crm_factory, smtp_server)
    for n in range(5):
        crm.notify.enqueue("smtp", recipient=f"r{n}@example.com", subject=f"#{n}", body="x")
    assert crm.notify.dispatch().sent == 5
    assert len(smtp_server.messages) == 5
    assert smtp_server.connections() == 1
    for n in range(2):
        crm.notify.enqueue("smtp", recipient=f"s{n}@example.com", subject="again", body="x")
    assert crm.notify.dispatch().sent == 2
    assert smtp_server.connections() == 2  # a new dispatch, a new connection


def test_message_id_is_stable_across_attempts():
    options = SmtpOptions(sender="shop@example.com")
    first = crmcore.Message(7, "smtp", "a@example.com", "s", "b", {}, "transactional", None, "order:7", 1)
    again = crmcore.Message(7, "smtp", "a@example.com", "s", "b", {}, "transactional", None, "order:7", 3)
    other = crmcore.Message(8, "smtp", "a@example.com", "s", "b", {}, "transactional", None, "order:8", 1)
    assert build_email(first, options)["Message-ID"] == build_email(again, options)["Message-ID"]
    assert build_email(first, options)["Message-ID"] != build_email(other, options)["Message-ID"]


def test_invalid_recipient_is_dead_the_rest_go(crm_factory, smtp_server):
    crm = open_crm(crm_factory, smtp_server)
    bad = crm.notify.enqueue("smtp", recipient="not an address", subject="x", body="x")
    good = crm.notify.enqueue("smtp", recipient="ok@example.com", subject="y", body="y")
    result = crm.notify.dispatch()
    assert (result.sent, result.dead) == (1, 1)
    [row] = crm.notify.outbox(message_id=bad)
    assert row["status"] == "dead" and "invalid recipient" in row["last_error"] and "not an address" in row["last_error"]
    assert crm.notify.outbox(message_id=good)[0]["status"] == "sent"
    assert len(smtp_server.messages) == 1


def test_unknown_host_is_dead_with_reason(crm_factory):
    crm = crm_factory(plugins=["notify"], config={"channels": {"smtp": {"host": "no-such-host.invalid",
                                                                        "sender": "shop@example.com"}}})
    mid = crm.notify.enqueue("smtp", recipient="a@example.com", subject="x", body="x")
    assert crm.notify.dispatch().dead == 1
    [row] = crm.notify.outbox(message_id=mid)
    assert row["status"] == "dead" and "unknown host 'no-such-host.invalid'" in row["last_error"]


def test_nobody_listening_retries_later(crm_factory):
    port = free_port()
    crm = crm_factory(plugins=["notify"], config={"channels": {"smtp": {"host": "127.0.0.1", "port": port,
                                                                        "sender": "shop@example.com"}}})
    mid = crm.notify.enqueue("smtp", recipient="a@example.com", subject="x", body="x")
    assert crm.notify.dispatch().retried == 1
    [row] = crm.notify.outbox(message_id=mid)
    assert row["status"] == "pending" and f"cannot connect to 127.0.0.1:{port}" in row["last_error"]


def test_a_connection_failure_is_an_attempt_with_its_time(crm_factory):
    """Issue 14 point 10: ``last_attempt_at`` is set on every attempt, a refused connection too."""
    from datetime import UTC, datetime, timedelta

    port = free_port()
    crm = crm_factory(plugins=["notify"], config={"channels": {"smtp": {"host": "127.0.0.1", "port": port,
                                                                        "sender": "shop@example.com"}}})
    mid = crm.notify.enqueue("smtp", recipient="a@example.com", subject="x", body="x")
    first = datetime(2030, 1, 1, 9, 0, tzinfo=UTC)
    assert crm.notify.dispatch(as_of=first).retried == 1
    [row] = crm.notify.outbox(message_id=mid)
    assert row["attempts"] == 1 and row["last_attempt_at"] == first
    second = first + timedelta(hours=1)
    assert crm.notify.dispatch(as_of=second).retried == 1
    [row] = crm.notify.outbox(message_id=mid)
    assert row["attempts"] == 2 and row["last_attempt_at"] == second


def test_missing_sender_is_dead_with_reason(crm_factory, smtp_server):
    crm = crm_factory(plugins=["notify"], config={"channels": {"smtp": {"host": smtp_server.host,
                                                                        "port": smtp_server.port}}})
    mid = crm.notify.enqueue("smtp", recipient="a@example.com", subject="x", body="x")
    assert crm.notify.dispatch().dead == 1
    assert "set [channels.smtp] sender" in crm.notify.outbox(message_id=mid)[0]["last_error"]


def test_bad_port_in_config_is_a_clear_error(crm_factory):
    with pytest.raises(crmcore.ConfigError, match=r"\[channels.smtp\].*port must be between 1 and 65535, got 70000"):
        crm_factory(plugins=["notify"], config={"channels": {"smtp": {"port": 70000}}})


@pytest.mark.parametrize("mode", ["starttls", "tls"])
def test_encrypted_and_authenticated(crm_factory, smtp_server_factory, tls_ca, mode, monkeypatch):
    server = smtp_server_factory(mode, auth=True)
    monkeypatch.setenv("CRM_TEST_SMTP_PASSWORD", SMTP_PASSWORD)
    crm = open_crm(crm_factory, server, host="localhost", ca_file=tls_ca.ca_file, username=SMTP_USER,
                   password_env="CRM_TEST_SMTP_PASSWORD")
    mid = crm.notify.enqueue("smtp", recipient="a@example.com", subject="secret", body="over TLS")
    assert crm.notify.dispatch().sent == 1, crm.notify.outbox(message_id=mid)[0]["last_error"]
    assert [m["Subject"] for m in server.messages] == ["secret"]
    assert server.logins == [SMTP_USER]


def test_wrong_password_is_dead_with_reason(crm_factory, smtp_server_factory, tls_ca):
    server = smtp_server_factory("starttls", auth=True)
    crm = open_crm(crm_factory, server, host="localhost", ca_file=tls_ca.ca_file, username=SMTP_USER,
                   password="wrong")
    mid = crm.notify.enqueue("smtp", recipient="a@example.com", subject="x", body="x")
    assert crm.notify.dispatch().dead == 1
    assert "login to localhost" in crm.notify.outbox(message_id=mid)[0]["last_error"]
    assert server.messages == []


def test_untrusted_certificate_is_dead_with_reason(crm_factory, smtp_server_factory):
    server = smtp_server_factory("tls")
    crm = open_crm(crm_factory, server, host="localhost")  # the system CAs do not know the test CA
    mid = crm.notify.enqueue("smtp", recipient="a@example.com", subject="x", body="x")
    assert crm.notify.dispatch().dead == 1
    assert "not trusted" in crm.notify.outbox(message_id=mid)[0]["last_error"]


def test_starttls_required_by_server_but_plain_configured(crm_factory, smtp_server_factory):
    server = smtp_server_factory("starttls")
    crm = crm_factory(plugins=["notify"], config={"channels": {"smtp": smtp_options(server, security="plain")}})
    mid = crm.notify.enqueue("smtp", recipient="a@example.com", subject="x", body="x")
    result = crm.notify.dispatch()
    assert result.dead == 1  # 530 "Must issue a STARTTLS command first" is a 5xx: permanent
    assert "530" in crm.notify.outbox(message_id=mid)[0]["last_error"]
    assert server.messages == []


class TestSmtpChannelContract(ChannelContract):
    @pytest.fixture
    def component(self):
        return SmtpChannel()

    @pytest.fixture
    def channel_options(self, smtp_server):
        return smtp_options(smtp_server)

    @pytest.fixture
    def delivered(self, smtp_server):
        return lambda: [m.as_string() for m in smtp_server.messages]

    @pytest.fixture
    def provoke_failure(self, smtp_server):
        def provoke(kind):
            if kind == "transient":  # the server is down: connecting is refused
                smtp_server.stop()
                return None
            return {"message": {"recipient": "not an address"}}
        return provoke

    def test_delivers_through_the_dispatcher(self, crm_factory, smtp_server, delivered):
        crm = open_crm(crm_factory, smtp_server)
        crm.notify.enqueue("smtp", recipient="a@example.com", body="contract")
        crm.notify.dispatch()
        assert [m.get_content().strip() for m in smtp_server.messages] == ["contract"]


def test_list_unsubscribe_goes_out_as_angle_bracketed_urls_not_encoded_words(crm_factory, smtp_server):
    """A real token URL is longer than a header line: it must still go out as ``<URL>`` (RFC 2369,
    RFC 8058), never RFC 2047-encoded, or one-click unsubscribe breaks.  Read from the raw bytes."""
    crm = open_crm(crm_factory, smtp_server, unsubscribe_mailto="unsubscribe@example.com")
    fan = crm.customers.add(name="粉丝", email="fan@example.com", consent_marketing=True)
    url = "https://shop.example.com/unsubscribe?token=" + "eyJjIjoxLCJoIjoiKiIsInAiOiJtYXJrZXRpbmcifQ." * 3
    crm.notify.enqueue("smtp", customer_id=fan.id, subject="促销：全场五折" * 5, body="50% off",
                       purpose="marketing", payload={"unsubscribe_url": url})
    assert crm.notify.dispatch().sent == 1
    [(_, _, raw)] = smtp_server.envelopes
    head = raw.split(b"\r\n\r\n", 1)[0].decode("ascii")
    unfolded = head.replace("\r\n ", " ").replace("\r\n\t", " ")
    assert "=?" not in unfolded.partition("List-Unsubscribe:")[2].partition("\r\n")[0]
    assert f"List-Unsubscribe: <{url}>, <mailto:unsubscribe@example.com?subject=unsubscribe>\r\n" in unfolded + "\r\n"
    assert "List-Unsubscribe-Post: List-Unsubscribe=One-Click" in unfolded
    assert "=?utf-8?" in unfolded.partition("Subject:")[2].partition("\r\n")[0]  # other headers still encoded
    [mail] = smtp_server.messages
    assert str(mail["Subject"]) == "促销：全场五折" * 5


def test_list_unsubscribe_url_with_a_line_break_is_refused(crm_factory, smtp_server):
    crm = open_crm(crm_factory, smtp_server)
    fan = crm.customers.add(name="Fan", email="fan@example.com", consent_marketing=True)
    crm.notify.enqueue("smtp", customer_id=fan.id, subject="Sale", body="b", purpose="marketing",
                       payload={"unsubscribe_url": "https://x.example/u\r\nBcc: victim@example.com"})
    result = crm.notify.dispatch()
    assert result.sent == 0 and not smtp_server.envelopes
