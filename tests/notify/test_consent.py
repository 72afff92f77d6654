"""Consent: the decision matrix, recorded decisions, unsubscribe tokens, the
WSGI handler on a real loopback HTTP server, the CLI, and the dispatcher
honouring a withdrawal that came after the message was queued."""

from __future__ import annotations

import json
import threading
import urllib.error
import urllib.parse
import urllib.request
from datetime import timedelta
from wsgiref.simple_server import WSGIRequestHandler, make_server

import pytest
from click.testing import CliRunner

from crmcore import ConfigError
from crmcore.notify import consent
from crmcore.cli import cli
from crmcore.notify.consent import InvalidToken
from crmcore.testing import FIXED_NOW

from .campaign_fixtures import SECRET, RecordingChannel, open_crm, outbox_rows

T1, T2 = FIXED_NOW - timedelta(days=2), FIXED_NOW - timedelta(days=1)

# (purpose, [notify.consent], customer flags, recorded decisions (channel, purpose, granted, when), expected)
# Worked out by hand from the rule in docs/notify.md, not from the code.
MATRIX = [
    ("transactional", {}, {"consent_marketing": False, "consent_email": False}, [], None),
    ("transactional", {}, {"consent_marketing": True}, [("mail", "transactional", False, T1)],
     "withdrew transactional consent for mail"),
    ("marketing", {}, {"consent_marketing": False}, [], "no marketing consent"),
    ("marketing", {}, {"consent_marketing": True}, [], None),
    ("marketing", {}, {"consent_marketing": True, "consent_email": False}, [], "opted out of email"),
    ("marketing", {"default": "opt-out"}, {"consent_marketing": False}, [], None),
    ("marketing", {"default": "opt-out"}, {"consent_email": False}, [], "opted out of email"),
    ("marketing", {}, {"consent_marketing": False}, [("mail", "marketing", True, T1)], None),
    ("marketing", {"default": "opt-out"}, {}, [("*", "marketing", False, T1)],
     "withdrew marketing consent for every channel"),
    ("marketing", {}, {}, [("*", "marketing", False, T1), ("mail", "marketing", True, T2)], None),
    ("marketing", {}, {"consent_marketing": True}, [("mail", "marketing", True, T1), ("*", "marketing", False, T2)],
     "withdrew marketing consent for every channel"),
    ("marketing", {"default": "opt-out"}, {}, [("sms", "marketing", False, T1)], None),
    ("marketing", {"default": "opt-out"}, {}, [("mail", "transactional", False, T1)], None),
    ("marketing", {"default": "opt-in", "mail": "opt-out"}, {"consent_marketing": False}, [], None),
    ("marketing", {"default": "opt-out", "mail": "opt-in"}, {"consent_marketing": False}, [],
     "no marketing consent"),
]


@pytest.mark.parametrize("purpose, policy, flags, decisions, expected", MATRIX)
def test_consent_matrix(crm_factory, purpose, policy, flags, decisions, expected):
    crm = open_crm(crm_factory, recorder=RecordingChannel("mail"), consent=policy)
    customer = crm.customers.add(name="Ada", email="ada@example.com", **flags)
    with crm.unit() as uow:
        for channel, what, granted, when in decisions:
            consent.record(uow, customer.id, granted, channel, what, source="test", at=when)
    with crm.unit(readonly=True) as uow:
        assert consent.refusal(uow, customer.id, "mail", purpose) == expected
    # The set-based path (campaigns, triggers) agrees with the single one.
    with crm.unit() as uow:
        counts = crm.messages.enqueue(uow, "win-back", customer.id, key="k", purpose=purpose)
    assert (counts.enqueued, counts.skipped_consent) == ((0, 1) if expected else (1, 0))


def test_decisions_are_recorded_with_source_and_time_and_replaced(crm_factory):
    crm = open_crm(crm_factory)
    customer = crm.customers.add(name="Ada", consent_marketing=True)
    crm.messages.set_consent(customer.id, False, source="phone call", at="2026-06-01T10:00:00+00:00")
    assert crm.customers.get(customer.id).consent_marketing is False  # the flag follows "every channel"
    crm.messages.set_consent(customer.id, True, channel="mail", source="web form")
    decisions = {(d.channel, d.purpose): d for d in crm.messages.consents(customer.id)}
    assert decisions["*", "marketing"].granted is False and decisions["*", "marketing"].source == "phone call"
    assert decisions["*", "marketing"].recorded_at.isoformat() == "2026-06-01T10:00:00+00:00"
    assert decisions["mail", "marketing"].granted is True and decisions["mail", "marketing"].recorded_at == FIXED_NOW
    crm.messages.set_consent(customer.id, True, source="web form")
    assert len(crm.messages.consents(customer.id)) == 2  # replaced, not appended
    assert crm.customers.get(customer.id).consent_marketing is True


def test_unknown_channel_or_purpose_is_refused(crm_factory):
    crm = open_crm(crm_factory)
    customer = crm.customers.add(name="Ada")
    with pytest.raises(Exception, match="unknown channel 'mial'"):
        crm.messages.set_consent(customer.id, False, channel="mial")
    with pytest.raises(Exception, match="purpose: must be one of transactional, marketing"):
        crm.messages.set_consent(customer.id, False, purpose="spam")


def test_tokens_round_trip_and_forgeries_fail():
    token = consent.make_token(SECRET, 42, "mail", "marketing")
    assert consent.read_token(SECRET, token) == (42, "mail", "marketing")
    with pytest.raises(InvalidToken):
        consent.read_token("another secret", token)
    _payload, _, signature = token.rpartition(".")
    forged = consent.make_token(SECRET, 43).rpartition(".")[0] + "." + signature
    with pytest.raises(InvalidToken):
        consent.read_token(SECRET, forged)
    with pytest.raises(InvalidToken):
        consent.read_token(SECRET, "not-a-token")
    with pytest.raises(ConfigError, match=r"unsubscribe_secret \(or unsubscribe_secret_env\) is not set"):
        consent.make_token(None, 42)


def test_withdrawal_after_enqueue_is_honoured_at_dispatch(crm_factory):
    channel = RecordingChannel("mail")
    crm = open_crm(crm_factory, recorder=channel)
    customer = crm.customers.add(name="Ada", email="ada@example.com", consent_marketing=True)
    with crm.unit() as uow:
        crm.messages.enqueue(uow, "win-back", customer.id, key="promo", purpose="marketing")
        crm.messages.enqueue(uow, "win-back", customer.id, key="receipt", purpose="transactional")
    crm.messages.set_consent(customer.id, False, channel="mail", source="link")
    result = crm.notify.dispatch()
    assert (result.sent, result.suppressed) == (1, 1)
    assert [m.idempotency_key for m in channel.delivered] == ["receipt"]
    promo = outbox_rows(crm, idempotency_key="promo")[0]
    assert promo["status"] == "suppressed" and promo["last_error"] == "withdrew marketing consent for mail"


@pytest.fixture
def http_server(crm_factory):
    crm = open_crm(crm_factory)

    class Quiet(WSGIRequestHandler):
        def log_message(self, *args):
            pass

    server = make_server("127.0.0.1", 0, consent.unsubscribe_app(crm), handler_class=Quiet)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield crm, f"http://127.0.0.1:{server.server_port}/unsubscribe"
    server.shutdown()
    server.server_close()


def fetch(url: str, data: bytes | None = None) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(urllib.request.Request(url, data=data), timeout=10) as response:
            return response.status, response.read().decode("utf-8")
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode("utf-8")


def test_wsgi_handler_confirms_on_get_and_unsubscribes_on_post(http_server):
    crm, base = http_server
    customer = crm.customers.add(name="Ada", email="ada@example.com", consent_marketing=True)
    token = consent.make_token(SECRET, customer.id)
    status, page = fetch(f"{base}?token={token}")
    assert status == 200 and '<form method="post">' in page
    # Added with consent_marketing: that flag is a recorded grant (source "api").
    granted = [(d.channel, d.purpose, d.granted, d.source) for d in crm.messages.consents(customer.id)]
    assert granted == [("*", "marketing", True, "api")]
    status, page = fetch(f"{base}?token={token}")
    assert [(d.channel, d.purpose, d.granted, d.source) for d in crm.messages.consents(customer.id)] == granted
    # a link scanner's GET changes nothing
    status, page = fetch(base, data=urllib.parse.urlencode({"token": token}).encode())
    assert status == 200 and "You are unsubscribed." in page
    [decision] = crm.messages.consents(customer.id)
    assert (decision.channel, decision.purpose, decision.granted, decision.source) == ("*", "marketing", False, "link")
    # RFC 8058 one-click: POST to the URL from List-Unsubscribe, token in the query.
    other = crm.customers.add(name="Bob", consent_marketing=True)
    status, _ = fetch(f"{base}?token={consent.make_token(SECRET, other.id, 'mail')}",
                      data=b"List-Unsubscribe=One-Click")
    assert status == 200 and [d.channel for d in crm.messages.consents(other.id)] == ["*", "mail"]
    status, page = fetch(base, data=b"token=forged.token")
    assert status == 400 and "not valid" in page


def test_cli_unsubscribe_resubscribe_consent_and_token(crm_factory, crm_db_url, tmp_path, monkeypatch):
    crm = open_crm(crm_factory)
    customer = crm.customers.add(name="Ada", email="ada@example.com", consent_marketing=True)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "crm.toml").write_text(f'[notify]\nunsubscribe_secret = "{SECRET}"\n'
                                       'unsubscribe_url = "https://crm.example/u?t={token}"\n', encoding="utf-8")
    runner = CliRunner()
    base = ["--db", crm_db_url, "--plugins", "notify", "--json"]
    out = runner.invoke(cli, [*base, "customer", "unsubscribe", "ada@example.com", "--channel", "console"])
    assert out.exit_code == 0, out.output
    assert json.loads(out.output)[0] | {"recorded_at": None} == {
        "customer_id": customer.id, "channel": "console", "purpose": "marketing", "granted": False,
        "source": "cli", "recorded_at": None, "actor": "system"}  # every unit has an actor
    out = runner.invoke(cli, [*base, "customer", "resubscribe", str(customer.id), "--purpose", "transactional"])
    assert out.exit_code == 0 and json.loads(out.output)[0]["granted"] is True
    out = runner.invoke(cli, [*base, "customer", "consent", str(customer.id)])
    assert [(r["channel"], r["purpose"], r["granted"]) for r in json.loads(out.output)] == [
        ("*", "marketing", True), ("*", "transactional", True), ("console", "marketing", False)]
    url = runner.invoke(cli, base[:-1] + ["notify", "unsubscribe-url", str(customer.id)]).output.strip()
    assert url.startswith("https://crm.example/u?t=")
    out = runner.invoke(cli, [*base, "notify", "unsubscribe", url.split("t=", 1)[1]])
    assert out.exit_code == 0 and json.loads(out.output)[0]["source"] == "cli-token"
    assert crm.customers.get(customer.id).consent_marketing is False
    out = runner.invoke(cli, [*base, "notify", "unsubscribe", "garbage"])
    assert out.exit_code == 1 and "not valid" in out.output and "Traceback" not in out.output


def test_secret_from_the_environment(crm_factory, monkeypatch):
    crm = open_crm(crm_factory, unsubscribe_secret=None, unsubscribe_secret_env="CRM_TEST_UNSUB_SECRET")
    customer = crm.customers.add(name="Ada", consent_marketing=True)
    with pytest.raises(ConfigError, match="environment variable CRM_TEST_UNSUB_SECRET is not set"):
        crm.messages.preview("win-back", customer.id)
    monkeypatch.setenv("CRM_TEST_UNSUB_SECRET", "from-env")
    url = consent.unsubscribe_url(crm, customer.id)
    assert consent.read_token("from-env", url.split("t=", 1)[1]) == (customer.id, "*", "marketing")
