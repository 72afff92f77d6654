"""Two-step sends (``Channel.prepare``): the ``sending`` commit overlaps building the message and
opening its envelope, and the message is delivered only once that commit is durable.

With a real SMTP server on loopback: at every ``DATA`` the message's outbox row, read through
another connection, is already ``sending``; a refused recipient still dead-letters its message.
With a recording two-step channel: a dispatcher stopped while a message is prepared delivers
nothing, aborts the prepared message and hands it back with its attempt uncounted.
"""

from __future__ import annotations

import threading
from typing import Any

import pytest
from sqlalchemy import create_engine, select

import crmcore
from crmcore.store import tables
from crmcore.store.engine import normalize_url

from .conftest import Recorder, smtp_options


class Checking(Recorder):
    """Reads each message's outbox status (another connection) when its DATA arrives."""

    def __init__(self, url: str) -> None:
        super().__init__()
        self.engine = create_engine(normalize_url(url))
        self.seen: list[tuple[str, str]] = []  # (recipient, status at DATA)

    async def handle_RCPT(self, server: Any, session: Any, envelope: Any, address: str, options: list) -> str:
        if address.startswith("nobody@"):
            return "550 5.1.1 no such user"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        outbox = tables.notify_outbox
        with self.engine.connect() as conn:
            status = conn.execute(select(outbox.c.status).where(
                outbox.c.recipient == envelope.rcpt_tos[0])).scalar_one()
        self.seen.append((envelope.rcpt_tos[0], status))
        return await super().handle_DATA(server, session, envelope)


def test_smtp_data_goes_out_only_after_the_sending_mark_is_committed(crm_factory, crm_db_url, smtp_server):
    smtp_server.stop()
    checking = smtp_server.recorder = Checking(crm_db_url)
    smtp_server.start()
    crm = crm_factory(plugins=["notify"], config={"channels": {"smtp": smtp_options(smtp_server)}})
    recipients = [f"c{i}@example.com" for i in range(12)] + ["nobody@example.com"]
    with crm.unit() as uow:
        for n, to in enumerate(recipients):
            uow.outbox.enqueue("smtp", recipient=to, subject=f"S{n}", body="hello", key=f"overlap:{n}")
    result = crm.notify.dispatch()
    assert (result.sent, result.dead) == (12, 1)
    assert checking.seen == [(to, "sending") for to in recipients[:-1]]
    assert sorted(env[1][0] for env in smtp_server.envelopes) == sorted(recipients[:-1])
    rows = {r["recipient"]: r for r in crm.notify.outbox(limit=100)}
    assert {to: rows[to]["status"] for to in recipients[:-1]} == {to: "sent" for to in recipients[:-1]}
    assert rows["nobody@example.com"]["status"] == "dead" and "550" in rows["nobody@example.com"]["last_error"]
    assert crm.notify.dispatch().sent == 0  # nothing sent twice
    checking.engine.dispose()


class TwoStep(crmcore.Channel):
    """Records prepare / finish / abort; can stop the dispatcher while preparing a message."""

    name = "twostep"
    description = "records two-step sends"
    address = None

    def __init__(self) -> None:
        self.calls: list[tuple[str, int]] = []
        self.stop: threading.Event | None = None
        self.stop_at: int | None = None
        self.lock = threading.Lock()

    def send(self, message: crmcore.Message, options: Any) -> str:
        return self.prepare(message, options).finish()

    def prepare(self, message: crmcore.Message, options: Any) -> Any:
        self.calls.append(("prepare", message.id))
        if self.stop is not None and message.id == self.stop_at:
            self.stop.set()
        channel = self

        class Prepared:
            def finish(self) -> str:
                channel.calls.append(("finish", message.id))
                return f"p-{message.id}"

            def abort(self) -> None:
                channel.calls.append(("abort", message.id))
        return Prepared()


class Plugin:
    __name__ = "twostep_test"

    def __init__(self, channel: TwoStep):
        self.channel = channel

    @crmcore.hookimpl
    def register_channels(self, register: Any) -> None:
        register(self.channel)


@pytest.fixture
def twostep(crm_factory):
    channel = TwoStep()
    crm = crm_factory(extra_plugins=[Plugin(channel)])
    with crm.unit() as uow:
        ids = [uow.outbox.enqueue("twostep", recipient=f"r{n}", subject="s", body="b", key=f"two:{n}")
               for n in range(5)]
    return crm, channel, ids


def test_a_stop_while_preparing_delivers_nothing_more_and_hands_the_message_back(twostep):
    crm, channel, ids = twostep
    stop = threading.Event()
    channel.stop, channel.stop_at = stop, ids[2]
    result = crm.notify.dispatch(stop=stop)
    assert result.sent == 2
    assert channel.calls == [("prepare", ids[0]), ("finish", ids[0]), ("prepare", ids[1]), ("finish", ids[1]),
                             ("prepare", ids[2]), ("abort", ids[2])]
    rows = {r["id"]: r for r in crm.notify.outbox(limit=100)}
    assert [rows[i]["status"] for i in ids] == ["sent", "sent", "pending", "pending", "pending"]
    assert rows[ids[2]]["attempts"] == 0  # never handed over: its attempt does not count
    channel.stop = None
    assert crm.notify.dispatch().sent == 3
    assert [c for c in channel.calls if c[0] == "finish"] == [("finish", i) for i in ids]


def test_inside_a_callers_unit_the_channel_is_sent_without_overlap(twostep):
    """Inside a use case's unit the marks are its transaction's: no second thread, same outcome."""
    crm, channel, ids = twostep
    with crm.unit():
        assert crm.notify.dispatch().sent == 5
    assert channel.calls == [(step, i) for i in ids for step in ("prepare", "finish")]
