"""``send_group``: several messages marked ``sending`` per commit, and what
happens to a group when the dispatcher stops or the channel goes down in it."""

from __future__ import annotations

import threading
from typing import Any

import pytest
from sqlalchemy import event, update

import crmcore
from crmcore.notify.policy import split_delivery_options
from crmcore.store import tables


class Counting(crmcore.Channel):
    """Delivers into a list; can stop the dispatcher or start failing after N sends."""

    name = "counting"
    description = "records deliveries"
    address = None

    def __init__(self) -> None:
        self.sent: list[int] = []
        self.stop: threading.Event | None = None
        self.stop_after: int | None = None
        self.fail_after: int | None = None

    def send(self, message: crmcore.Message, options: Any) -> str | None:
        if self.fail_after is not None and len(self.sent) >= self.fail_after:
            raise crmcore.TransientError("connection refused")
        self.sent.append(message.id)
        if self.stop is not None and len(self.sent) == self.stop_after:
            self.stop.set()
        return f"p-{message.id}"


class Plugin:
    __name__ = "group_test"

    def __init__(self, channel: Counting):
        self.channel = channel

    @crmcore.hookimpl
    def register_channels(self, register: Any) -> None:
        register(self.channel)


def open_crm(crm_factory, channel, group):
    return crm_factory(extra_plugins=[Plugin(channel)], config={"channels": {"counting": {"send_group": group}}})


def commits(crm) -> list[int]:
    counter = [0]
    event.listen(crm.engine, "commit", lambda conn: counter.__setitem__(0, counter[0] + 1))
    return counter


@pytest.mark.parametrize("group", [1, 10])
def test_groups_deliver_everything_with_fewer_commits(crm_factory, group):
    chan = Counting()
    crm = open_crm(crm_factory, chan, group)
    ids = [crm.notify.enqueue("counting", recipient="x", body=str(n)) for n in range(25)]
    counter = commits(crm)
    assert crm.notify.dispatch().sent == 25
    assert chan.sent == ids
    rows = crm.notify.outbox(limit=100)
    assert {(r["status"], r["attempts"]) for r in rows} == {("sent", 1)}
    assert {r["provider_id"] for r in rows} == {f"p-{i}" for i in ids}
    # per dispatch: recover + claim rounds + one commit per group (+ the last outcomes) + an empty claim
    groups = -(-25 // group)
    assert counter[0] <= groups + 6, counter[0]
    if group > 1:
        assert counter[0] < 25


def test_stop_mid_group_returns_the_unsent_rest(crm_factory):
    chan = Counting()
    crm = open_crm(crm_factory, chan, 10)
    ids = [crm.notify.enqueue("counting", recipient="x", body=str(n)) for n in range(25)]
    chan.stop, chan.stop_after = threading.Event(), 4
    result = crm.notify.dispatch(stop=chan.stop)
    assert (result.sent, result.deferred) == (4, 21)
    rows = {r["id"]: r for r in crm.notify.outbox(limit=100)}
    assert [i for i in ids if rows[i]["status"] == "sent"] == chan.sent == ids[:4]
    rest = [rows[i] for i in ids[4:]]
    assert {(r["status"], r["attempts"], r["claimed_by"]) for r in rest} == {("pending", 0, None)}
    assert crm.notify.dispatch().sent == 21
    assert chan.sent == ids


def test_channel_down_mid_group_defers_the_rest_without_an_attempt(crm_factory):
    chan = Counting()
    chan.fail_after = 5
    crm = open_crm(crm_factory, chan, 20)
    ids = [crm.notify.enqueue("counting", recipient="x", body=str(n)) for n in range(20)]
    result = crm.notify.dispatch()
    assert (result.sent, result.retried, result.deferred) == (5, 3, 12)
    rows = {r["id"]: r for r in crm.notify.outbox(limit=100)}
    assert [rows[i]["attempts"] for i in ids[5:8]] == [1, 1, 1]
    assert {(rows[i]["status"], rows[i]["attempts"]) for i in ids[8:]} == {("pending", 0)}
    assert all(rows[i]["last_error"].startswith("deferred: channel 'counting' is down") for i in ids[8:])


def test_in_doubt_after_a_crash_is_at_most_the_group(crm_factory):
    """A dispatcher that dies mid-group leaves its group 'sending': all of it is in
    doubt and dead-lettered, never resent; the claimed rest goes out normally."""
    from datetime import timedelta

    from crmcore.notify import CLAIM_LEASE
    from crmcore.testing import FIXED_NOW

    chan = Counting()
    now = [FIXED_NOW]
    crm = crm_factory(extra_plugins=[Plugin(chan)], config={"channels": {"counting": {"send_group": 5}}},
                      clock=lambda: now[0])
    ids = [crm.notify.enqueue("counting", recipient="x", body=str(n)) for n in range(12)]
    claims = crm.notify._claim(now[0], None, None)
    started = crm.notify._start_many(claims[:5], now[0])  # marked sending, then the process "died"
    assert len(started) == 5
    now[0] += CLAIM_LEASE + timedelta(minutes=1)
    assert crm.notify.dispatch().sent == 7
    rows = {r["id"]: r for r in crm.notify.outbox(limit=100)}
    assert {rows[i]["status"] for i in ids[:5]} == {"dead"}
    assert all(rows[i]["last_error"].startswith("in doubt") for i in ids[:5])
    assert chan.sent == ids[5:]


@pytest.mark.parametrize("value", [0, -1, 1001, "10", True, 2.5])
def test_bad_send_group(value):
    with pytest.raises(crmcore.ConfigError, match=r"\[channels.c\] send_group: a whole number from 1 to 1000"):
        split_delivery_options({"send_group": value}, "c", "UTC")


class Addressed(Counting):
    """A counting channel that takes the customer's email as recipient."""

    name = "addressed"
    address = "email"


def test_a_group_marks_claimed_recipients_together_and_a_filled_one_too(crm_factory):
    """A group's messages go ``sending`` in one statement when their recipient is the claimed one;
    a recipient the dispatcher fills in (a requeued message that died for lack of one) is stored."""
    chan = Addressed()
    crm = crm_factory(extra_plugins=[Plugin(chan)], config={"channels": {"addressed": {"send_group": 10}}})
    late = crm.customers.add(name="Late Address")
    first = crm.notify.enqueue("addressed", customer_id=late.id, body="no address yet")
    assert crm.notify.outbox(message_id=first)[0]["status"] == "dead"
    crm.customers.update(late.id, email="late@example.com")
    assert crm.notify.retry([first]) == 1
    others = [crm.notify.enqueue("addressed", recipient=f"r{n}@example.com", body=str(n)) for n in range(12)]
    assert crm.notify.dispatch().sent == 13
    assert sorted(chan.sent) == sorted([first, *others])
    rows = {r["id"]: r for r in crm.notify.outbox(limit=100)}
    assert {(r["status"], r["attempts"], r["claimed_by"]) for r in rows.values()} == {("sent", 1, None)}
    assert rows[first]["recipient"] == "late@example.com"
    assert [rows[i]["recipient"] for i in others] == [f"r{n}@example.com" for n in range(12)]
    assert all(r["last_attempt_at"] is not None for r in rows.values())


class Detailed(Counting):
    """Delivers with details (none for every third message); while sending ``steal_at`` it hands
    the claim of ``steal`` (sent earlier in the same group) to another dispatcher."""

    name = "detailed"

    def __init__(self) -> None:
        super().__init__()
        self.crm: Any = None
        self.steal: int | None = None
        self.steal_at: int | None = None

    def send(self, message: crmcore.Message, options: Any) -> crmcore.Delivered:
        self.sent.append(message.id)
        if message.id == self.steal_at:
            outbox = tables.notify_outbox
            with self.crm.engine.begin() as conn:
                conn.execute(update(outbox).where(outbox.c.id == self.steal).values(claimed_by="elsewhere:1"))
        return crmcore.Delivered(f"p-{message.id}", {} if message.id % 3 == 0 else {"n": message.id, "text": "é ✓"})


def test_sent_marks_carry_each_outcome_and_spare_a_lost_claim(crm_factory):
    """The group's ``sent`` marks (one statement over arrays on PostgreSQL, an executemany elsewhere)
    write each message's own provider id, details and time, and leave alone a message whose claim
    another dispatcher holds now."""
    from crmcore.testing import FIXED_NOW

    chan = Detailed()
    crm = crm_factory(extra_plugins=[Plugin(chan)], config={"channels": {"detailed": {"send_group": 10}}},
                      clock=lambda: FIXED_NOW)
    chan.crm = crm
    ids = [crm.notify.enqueue("detailed", recipient="x", body=str(n)) for n in range(12)]
    chan.steal, chan.steal_at = ids[2], ids[5]
    assert crm.notify.dispatch().sent == 12
    rows = {r["id"]: r for r in crm.notify.outbox(limit=100)}
    stolen = rows.pop(ids[2])
    assert (stolen["status"], stolen["claimed_by"], stolen["sent_at"], stolen["provider_id"]) == \
        ("sending", "elsewhere:1", None, None)
    assert {i: (r["status"], r["claimed_by"], r["sent_at"], r["provider_id"], r["delivery"]) for i, r in rows.items()} \
        == {i: ("sent", None, FIXED_NOW, f"p-{i}", None if i % 3 == 0 else {"n": i, "text": "é ✓"})
            for i in ids if i != ids[2]}
