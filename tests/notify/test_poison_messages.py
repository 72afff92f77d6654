"""Poison messages never stall a campaign (issue 14, point 1).

A failure that belongs to one message (its mail cannot be built, a header
value has CR/LF, the receiver refuses that one recipient) is permanent for
that message: it goes dead at once with the reason.  It never counts toward
the channel being down, so the good messages behind it go out in the same,
first dispatch.  Real servers: aiosmtpd and a loopback HTTP server.
"""

from __future__ import annotations

from typing import Any

import crmcore

from .conftest import smtp_options

GOOD = 47
POISON = 3


def enqueue_campaign(crm: Any, channel: str, poison: dict[str, Any], good: dict[str, Any]) -> tuple[list[int], list[int]]:
    """Three poison messages at the head of a campaign, then the good ones."""
    with crm.unit() as uow:
        bad = [uow.outbox.enqueue(channel, purpose="marketing", **{k: v.format(n=n) for k, v in poison.items()})
               for n in range(POISON)]
        ok = [uow.outbox.enqueue(channel, purpose="marketing", **{k: v.format(n=n) for k, v in good.items()})
              for n in range(GOOD)]
    return bad, ok


def statuses(crm: Any, ids: list[int]) -> list[tuple[str, str | None]]:
    return [(r["status"], r["last_error"]) for r in crm.notify.outbox(limit=10_000) if r["id"] in ids]


def test_smtp_poison_headers_do_not_stall_the_campaign(crm_factory, smtp_server):
    crm = crm_factory(plugins=["notify"], config={"channels": {"smtp": smtp_options(smtp_server)}})
    bad, ok = enqueue_campaign(
        crm, "smtp",
        poison={"recipient": "p{n}@example.com", "subject": "Hello Eve{n}\r\nBcc: victim@example.com",
                "body": "x", "key": "campaign:1:poison:{n}"},
        good={"recipient": "c{n}@example.com", "subject": "Offer {n}", "body": "hi", "key": "campaign:1:good:{n}"})

    result = crm.notify.dispatch()

    assert result.sent == GOOD and result.dead == POISON and result.deferred == 0 and result.retried == 0
    assert len(smtp_server.messages) == GOOD
    for status, error in statuses(crm, bad):
        assert status == "dead"
        assert "PermanentError" in error and "linefeed or carriage return" in error
    assert {s for s, _ in statuses(crm, ok)} == {"sent"}


def test_smtp_refused_recipients_do_not_stall_the_campaign(crm_factory, smtp_server):
    """4xx replies to RCPT concern that recipient only: retried later, never 'channel down'."""
    crm = crm_factory(plugins=["notify"], config={"channels": {"smtp": smtp_options(smtp_server)}})
    recorder = smtp_server.recorder

    async def handle_RCPT(server: Any, session: Any, envelope: Any, address: str, options: list) -> str:
        if address.startswith("full"):
            return "452 4.2.2 mailbox full"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    recorder.handle_RCPT = handle_RCPT
    bad, ok = enqueue_campaign(
        crm, "smtp", poison={"recipient": "full{n}@example.com", "subject": "s", "body": "x", "key": "c:full:{n}"},
        good={"recipient": "c{n}@example.com", "subject": "Offer {n}", "body": "hi", "key": "c:good:{n}"})

    result = crm.notify.dispatch()

    assert result.sent == GOOD and result.retried == POISON and result.deferred == 0
    assert len(smtp_server.messages) == GOOD
    assert all(s == "pending" and "452" in e for s, e in statuses(crm, bad))


def test_webhook_poison_header_does_not_stall_the_campaign(crm_factory, http_server):
    options = {"url": http_server.url(), "secret": "k", "timeout": 2}
    crm = crm_factory(plugins=["notify"], config={"channels": {"webhook": options}})
    bad, ok = enqueue_campaign(crm, "webhook", poison={"body": "x", "key": "campaign:1:\r\nX-Evil: {n}"},
                               good={"body": "hi {n}", "key": "campaign:1:good:{n}"})

    result = crm.notify.dispatch()

    assert result.sent == GOOD and result.dead == POISON and result.deferred == 0 and result.retried == 0
    assert len(http_server.received("/hook")) == GOOD
    assert all(s == "dead" and "PermanentError" in e for s, e in statuses(crm, bad))


class Fragile(crmcore.Channel):
    """A third-party channel that does not classify its own errors."""

    name = "fragile"
    description = "raises ValueError on some messages"

    def __init__(self) -> None:
        self.delivered: list[int] = []

    def send(self, message: crmcore.Message, options: Any) -> str | None:
        if "\n" in (message.subject or ""):
            raise ValueError("subject has a line break")
        self.delivered.append(message.id)
        return None


def test_an_unclassified_error_is_permanent_for_that_message_only(crm_factory):
    channel = Fragile()

    class Plugin:
        @crmcore.hookimpl
        def register_channels(self, register: Any) -> None:
            register(channel)

    crm = crm_factory(plugins=[], extra_plugins=[Plugin()])
    bad, ok = enqueue_campaign(crm, "fragile", poison={"subject": "a\nb{n}", "key": "f:bad:{n}"},
                               good={"subject": "fine {n}", "key": "f:good:{n}"})

    result = crm.notify.dispatch()

    assert result.sent == GOOD and result.dead == POISON and result.deferred == 0
    assert sorted(channel.delivered) == sorted(ok)
    assert all(s == "dead" and e == "ValueError: subject has a line break" for s, e in statuses(crm, bad))
