"""The notification engine: the transactional outbox, consent, dispatching,
retries with backoff, the dead-letter state, concurrent dispatchers and stale
claims.

Channels here are real objects that record what they deliver; failures are
real exceptions raised by them; "now" comes from a clock the test moves.
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event as sqlalchemy_event

import crmcore
from crmcore import HookError, PermanentError, TransientError, UnknownComponent
from crmcore.notify import CLAIM_LEASE, DispatchResult
from crmcore.store import tables

from .conftest import Components, row_count

WORKER = Path(__file__).with_name("worker.py")
T0 = datetime(2026, 7, 1, 9, 0, tzinfo=timezone.utc)


# -- channels under test ---------------------------------------------------------------------

class ListChannel(crmcore.Channel):
    """Delivers into a list (shared between instances when given one)."""

    description = "records deliveries in memory"

    def __init__(self, name: str = "list", address: str | None = "email", delivered: list | None = None,
                 pause_s: float = 0.0):
        self.name, self.address = name, address
        self.delivered: list[crmcore.Message] = [] if delivered is None else delivered
        self.pause_s = pause_s
        self.fail_with: Exception | None = None
        self.opened = self.closed = 0

    def open(self, options: Any) -> None:
        self.opened += 1

    def send(self, message: crmcore.Message, options: Any) -> str | None:
        if self.fail_with is not None:
            raise self.fail_with
        if self.pause_s:
            time.sleep(self.pause_s)  # lets a concurrent dispatcher interleave
        self.delivered.append(message)
        return f"{self.name}-{message.id}"

    def close(self) -> None:
        self.closed += 1


class FailingChannel(crmcore.Channel):
    """Raises the given exception on every send, counting attempts."""

    description = "always fails"
    address = None

    def __init__(self, name: str, error: Exception):
        self.name, self.error = name, error
        self.attempts: list[tuple[int, int]] = []  # (message id, attempt)

    def send(self, message: crmcore.Message, options: Any) -> str | None:
        self.attempts.append((message.id, message.attempts))
        raise self.error


class UnconfiguredChannel(crmcore.Channel):
    """Cannot even open (e.g. no SMTP host configured)."""

    name = "broken"
    description = "misconfigured"
    address = None

    def __init__(self) -> None:
        self.sent = 0

    def open(self, options: Any) -> None:
        raise RuntimeError("no host configured for channel 'broken'")

    def send(self, message: crmcore.Message, options: Any) -> str | None:
        self.sent += 1
        return None


def channels(*items: crmcore.Channel, name: str = "engine_channels") -> Components:
    return Components(name, channels=items)


def row(crm: crmcore.CRM, message_id: int) -> dict[str, Any]:
    (found,) = [r for r in crm.notify.outbox(limit=10_000) if r["id"] == message_id]
    return found


def statuses(crm: crmcore.CRM) -> dict[int, str]:
    return {r["id"]: r["status"] for r in crm.notify.outbox(limit=10_000)}


@pytest.fixture
def clock() -> list[datetime]:
    return [T0]


# -- enqueueing in the use case's transaction -----------------------------------------------------

def test_enqueue_in_a_failed_unit_leaves_nothing(crm_factory: Any) -> None:
    chan = ListChannel()
    crm = crm_factory(extra_plugins=[channels(chan)])
    cid = crm.customers.add(name="Ann", email="ann@example.com").id

    with pytest.raises(RuntimeError):
        with crm.unit() as uow:
            uow.outbox.enqueue("list", customer_id=cid, subject="order confirmed")
            crm.customers.update(cid, city="Hangzhou")
            raise RuntimeError("payment failed")

    assert crm.notify.outbox() == []
    assert crm.customers.get(cid).city is None
    assert crm.notify.dispatch() == DispatchResult()
    assert chan.delivered == []


class Welcome:
    """Enqueues a welcome message when a customer is created."""

    __name__ = "welcome"

    def __init__(self, order: list[str]):
        self.order, self.enqueued = order, []

    @crmcore.hookimpl
    def on_customer_created(self, uow: Any, customer: Any) -> None:
        self.order.append("welcome")
        self.enqueued.append(uow.outbox.enqueue("list", customer_id=customer.id, subject="Welcome",
                                                key=f"welcome:{customer.id}"))


class Guard:
    """Refuses customers called Boom, after the welcome was queued."""

    __name__ = "guard"

    def __init__(self, order: list[str]):
        self.order = order

    @crmcore.hookimpl
    def on_customer_created(self, uow: Any, customer: Any) -> None:
        self.order.append("guard")
        if customer.name == "Boom":
            raise RuntimeError("no Booms allowed")


def test_enqueue_from_an_event_handler_rolls_back_with_the_use_case(crm_factory: Any) -> None:
    chan, order = ListChannel(), []
    welcome = Welcome(order)
    # pluggy calls the last registered first: welcome enqueues, then guard raises.
    crm = crm_factory(extra_plugins=[channels(chan), Guard(order), welcome])

    with pytest.raises(HookError, match="no Booms allowed") as info:
        crm.customers.add(name="Boom", email="boom@example.com")
    assert info.value.plugin == "guard"
    assert order == ["welcome", "guard"] and len(welcome.enqueued) == 1  # it was queued, then undone
    assert crm.notify.outbox() == [] and crm.customers.count() == 0

    ann = crm.customers.add(name="Ann", email="ann@example.com")
    (message,) = crm.notify.outbox()
    assert (message["customer_id"], message["recipient"], message["status"]) == (ann.id, "ann@example.com", "pending")
    assert crm.notify.dispatch() == DispatchResult(sent=1)
    assert [m.subject for m in chan.delivered] == ["Welcome"]


def test_idempotency_key_suppresses_duplicates(crm_factory: Any) -> None:
    crm = crm_factory(extra_plugins=[channels(ListChannel())])
    cid = crm.customers.add(name="Ann", email="ann@example.com").id
    first = crm.notify.enqueue("list", customer_id=cid, subject="Invoice 7", key="invoice:7")
    assert crm.notify.enqueue("list", customer_id=cid, subject="Invoice 7 again", key="invoice:7") == first
    with crm.unit() as uow:
        assert uow.outbox.enqueue("list", customer_id=cid, key="invoice:7") == first
        other = uow.outbox.enqueue("list", customer_id=cid, subject="Invoice 8", key="invoice:8")
    assert other != first
    assert [r["subject"] for r in crm.notify.outbox()] == ["Invoice 8", "Invoice 7"]
    crm.notify.dispatch()
    assert crm.notify.enqueue("list", customer_id=cid, key="invoice:7") == first  # also once sent
    assert row_count(crm, tables.notify_outbox) == 2


def test_enqueue_refuses_unknown_channel_and_purpose(crm_factory: Any) -> None:
    crm = crm_factory(extra_plugins=[channels(ListChannel())])
    with pytest.raises(UnknownComponent, match=r"'fax'.*list"):
        crm.notify.enqueue("fax", recipient="x")
    with pytest.raises(crmcore.ValidationError, match="purpose"):
        crm.notify.enqueue("list", recipient="a@example.com", purpose="spam")
    assert crm.notify.outbox() == []


# -- consent -------------------------------------------------------------------------------

def test_marketing_needs_consent_transactional_always_goes(crm_factory: Any) -> None:
    chan = ListChannel()
    crm = crm_factory(extra_plugins=[channels(chan)])
    silent = crm.customers.add(name="No Marketing", email="nm@example.com").id  # default: no marketing
    no_email = crm.customers.add(name="No Email", email="ne@example.com", consent_marketing=True,
                                 consent_email=False).id
    fan = crm.customers.add(name="Fan", email="fan@example.com", consent_marketing=True).id

    promo = {cid: crm.notify.enqueue("list", customer_id=cid, subject="Sale!", purpose="marketing")
             for cid in (silent, no_email, fan)}
    receipts = {cid: crm.notify.enqueue("list", customer_id=cid, subject="Receipt") for cid in (silent, no_email)}

    assert (row(crm, promo[silent])["status"], row(crm, promo[silent])["last_error"]) == \
        ("suppressed", "no marketing consent")
    assert (row(crm, promo[no_email])["status"], row(crm, promo[no_email])["last_error"]) == \
        ("suppressed", "opted out of email")
    assert row(crm, promo[fan])["status"] == "pending"
    assert crm.notify.dispatch() == DispatchResult(sent=3)
    assert sorted(m.id for m in chan.delivered) == sorted([promo[fan], *receipts.values()])
    assert statuses(crm)[promo[silent]] == "suppressed"  # never sent later either
    assert crm.notify.dispatch() == DispatchResult()


def test_consent_withdrawn_before_dispatch(crm_factory: Any) -> None:
    chan = ListChannel()
    crm = crm_factory(extra_plugins=[channels(chan)])
    cid = crm.customers.add(name="Fan", email="fan@example.com", consent_marketing=True).id
    promo = crm.notify.enqueue("list", customer_id=cid, subject="Sale!", purpose="marketing")
    receipt = crm.notify.enqueue("list", customer_id=cid, subject="Receipt")
    assert row(crm, promo)["status"] == "pending"

    crm.customers.update(cid, consent_marketing=False)

    assert crm.notify.dispatch() == DispatchResult(sent=1, suppressed=1)
    assert [m.id for m in chan.delivered] == [receipt]
    # Turning the flag off records a withdrawal for every channel (the flag is that decision).
    assert (row(crm, promo)["status"], row(crm, promo)["last_error"]) == (
        "suppressed", "withdrew marketing consent for every channel")


# -- delivering ----------------------------------------------------------------------------------

def test_dispatch_delivers_and_marks_sent(crm_factory: Any, clock: list[datetime]) -> None:
    mail, pager = ListChannel(), ListChannel("pager", address=None)
    crm = crm_factory(extra_plugins=[channels(mail, pager)], clock=lambda: clock[0])
    cid = crm.customers.add(name="Ann", email="Ann@Example.com").id
    to_customer = crm.notify.enqueue("list", customer_id=cid, subject="Hi", body="Hello Ann",
                                     payload={"order": 7})
    explicit = crm.notify.enqueue("list", recipient="ops@example.com", subject="Report")
    page = crm.notify.enqueue("pager", recipient="#oncall", body="disk full")
    later = crm.notify.enqueue("list", recipient="later@example.com", not_before=T0 + timedelta(hours=1))

    clock[0] = T0 + timedelta(minutes=1)
    assert crm.notify.dispatch(channel="pager") == DispatchResult(sent=1)
    assert [m.id for m in pager.delivered] == [page] and mail.delivered == []
    assert crm.notify.dispatch() == DispatchResult(sent=2)  # "later" is not due yet

    first, second = mail.delivered
    assert (first.id, first.recipient, first.subject, first.body, first.payload, first.purpose,
            first.customer_id, first.attempts) == (to_customer, "Ann@example.com", "Hi", "Hello Ann",
                                                    {"order": 7}, "transactional", cid, 1)
    assert (second.id, second.recipient, second.customer_id) == (explicit, "ops@example.com", None)
    for message_id, provider in ((to_customer, f"list-{to_customer}"), (page, f"pager-{page}")):
        stored = row(crm, message_id)
        assert (stored["status"], stored["provider_id"], stored["attempts"], stored["sent_at"],
                stored["claimed_at"], stored["last_error"]) == ("sent", provider, 1, clock[0], None, None)
    assert (mail.opened, mail.closed) == (1, 1)  # once per dispatch that had its messages

    assert statuses(crm)[later] == "pending"
    clock[0] = T0 + timedelta(hours=1)
    assert crm.notify.dispatch() == DispatchResult(sent=1)
    assert crm.notify.dispatch() == DispatchResult()  # nothing is sent twice
    assert len(mail.delivered) == 3


def test_transient_failures_retry_with_backoff_then_die(crm_factory: Any, clock: list[datetime]) -> None:
    flaky = FailingChannel("flaky", TransientError("connection refused"))
    crm = crm_factory(extra_plugins=[channels(flaky)], clock=lambda: clock[0])
    mid = crm.notify.enqueue("flaky", recipient="x", subject="try me", max_attempts=3)

    assert crm.notify.dispatch() == DispatchResult(retried=1)
    first = row(crm, mid)
    assert (first["status"], first["attempts"]) == ("pending", 1)
    assert first["last_error"] == "TransientError: connection refused"
    assert T0 + timedelta(seconds=27) <= first["next_attempt_at"] <= T0 + timedelta(seconds=33)

    clock[0] = first["next_attempt_at"] - timedelta(seconds=1)
    assert crm.notify.dispatch() == DispatchResult()  # not due yet
    assert row(crm, mid)["attempts"] == 1

    clock[0] = first["next_attempt_at"]
    assert crm.notify.dispatch() == DispatchResult(retried=1)
    second = row(crm, mid)
    assert (second["status"], second["attempts"]) == ("pending", 2)
    assert clock[0] + timedelta(seconds=54) <= second["next_attempt_at"] <= clock[0] + timedelta(seconds=66)

    clock[0] = second["next_attempt_at"]
    assert crm.notify.dispatch() == DispatchResult(dead=1)
    last = row(crm, mid)
    assert (last["status"], last["attempts"], last["last_error"]) == ("dead", 3, "TransientError: connection refused")
    assert flaky.attempts == [(mid, 1), (mid, 2), (mid, 3)]

    clock[0] += timedelta(days=1)
    assert crm.notify.dispatch() == DispatchResult()  # dead stays dead


def test_unexpected_exceptions_from_send_are_the_messages_own(crm_factory: Any, clock: list[datetime]) -> None:
    # Issue 14: an exception that is neither TransientError nor OSError comes from the message itself
    # (a header with CR/LF, text that cannot be encoded): dead at once with the reason, never retried.
    odd = FailingChannel("odd", ValueError("provider sent garbage"))
    crm = crm_factory(extra_plugins=[channels(odd)], clock=lambda: clock[0])
    mid = crm.notify.enqueue("odd", recipient="x")
    assert crm.notify.dispatch() == DispatchResult(dead=1)
    assert (row(crm, mid)["status"], row(crm, mid)["last_error"]) == ("dead", "ValueError: provider sent garbage")


def test_permanent_failure_is_dead_at_once(crm_factory: Any, clock: list[datetime]) -> None:
    doomed = FailingChannel("doomed", PermanentError("550 no such mailbox"))
    crm = crm_factory(extra_plugins=[channels(doomed)], clock=lambda: clock[0])
    mid = crm.notify.enqueue("doomed", recipient="nobody@example.com", max_attempts=5)
    assert crm.notify.dispatch() == DispatchResult(dead=1)
    stored = row(crm, mid)
    assert (stored["status"], stored["attempts"], stored["last_error"]) == \
        ("dead", 1, "PermanentError: 550 no such mailbox")
    assert doomed.attempts == [(mid, 1)]


def test_channel_that_cannot_open_retries_everything_others_still_go(crm_factory: Any,
                                                                     clock: list[datetime]) -> None:
    broken, mail = UnconfiguredChannel(), ListChannel()
    crm = crm_factory(extra_plugins=[channels(broken, mail)], clock=lambda: clock[0])
    stuck = [crm.notify.enqueue("broken", recipient=f"r{i}") for i in range(2)]
    fine = crm.notify.enqueue("list", recipient="ann@example.com")

    assert crm.notify.dispatch() == DispatchResult(sent=1, retried=2)
    assert [m.id for m in mail.delivered] == [fine] and broken.sent == 0
    for mid in stuck:
        stored = row(crm, mid)
        assert (stored["status"], stored["attempts"]) == ("pending", 1)
        assert stored["last_error"] == "RuntimeError: no host configured for channel 'broken'"
        assert stored["next_attempt_at"] > T0


def test_message_for_a_channel_no_longer_enabled_is_dead(crm_factory: Any) -> None:
    with_pager = crm_factory(extra_plugins=[channels(ListChannel("pager", address=None), ListChannel())])
    page = with_pager.notify.enqueue("pager", recipient="#oncall", body="disk full")
    mail = with_pager.notify.enqueue("list", recipient="ann@example.com")

    survivor = ListChannel()
    without = crm_factory(extra_plugins=[channels(survivor)])  # same database, pager plugin gone
    assert without.notify.dispatch() == DispatchResult(sent=1, dead=1)
    assert (row(without, page)["status"], row(without, page)["last_error"]) == \
        ("dead", "channel 'pager' is not enabled")
    assert [m.id for m in survivor.delivered] == [mail]


def test_customer_without_address_is_dead_with_reason(crm_factory: Any) -> None:
    mail = ListChannel()
    crm = crm_factory(extra_plugins=[channels(mail)])
    cid = crm.customers.add(name="Offline", phone="+8613800138000").id
    mid = crm.notify.enqueue("list", customer_id=cid, subject="Receipt")
    stored = row(crm, mid)
    assert (stored["status"], stored["recipient"], stored["last_error"]) == \
        ("dead", None, f"customer {cid} has no email")
    assert crm.notify.dispatch() == DispatchResult()
    assert mail.delivered == []


def test_retry_requeues_dead_messages(crm_factory: Any, clock: list[datetime]) -> None:
    mail = ListChannel()
    mail.fail_with = PermanentError("mailbox full")
    crm = crm_factory(extra_plugins=[channels(mail)], clock=lambda: clock[0])
    first, second, third = (crm.notify.enqueue("list", recipient=f"r{i}@example.com") for i in range(3))
    assert crm.notify.dispatch() == DispatchResult(dead=3)

    mail.fail_with = None
    clock[0] = T0 + timedelta(hours=1)
    assert crm.notify.retry([second]) == 1
    assert (row(crm, second)["status"], row(crm, second)["attempts"], row(crm, second)["next_attempt_at"]) == \
        ("pending", 0, clock[0])
    assert crm.notify.dispatch() == DispatchResult(sent=1)
    assert crm.notify.retry() == 2  # the rest; sent ones are not touched
    assert crm.notify.retry() == 0
    assert crm.notify.dispatch() == DispatchResult(sent=2)
    assert sorted(m.id for m in mail.delivered) == [first, second, third]
    assert set(statuses(crm).values()) == {"sent"}


# -- concurrency ---------------------------------------------------------------------------------

def test_two_dispatchers_never_deliver_a_message_twice(crm_factory: Any, clock: list[datetime]) -> None:
    delivered: list[crmcore.Message] = []
    crms = [crm_factory(extra_plugins=[channels(ListChannel(delivered=delivered, pause_s=0.002))],
                        clock=lambda: clock[0]) for _ in range(2)]
    ids = [crms[0].notify.enqueue("list", recipient=f"r{i}@example.com", subject=f"#{i}") for i in range(40)]
    start, errors = threading.Barrier(2), []
    sent_by = [0, 0]

    def dispatcher(index: int) -> None:
        try:
            start.wait(timeout=30)
            # Not "until a dispatch finds nothing": losing a claim race to the
            # other dispatcher also returns nothing while work remains.
            for _ in range(1000):  # bounded: a stuck message fails the test instead of hanging it
                if not row_count(crms[index], tables.notify_outbox, tables.notify_outbox.c.status != "sent"):
                    break
                sent_by[index] += crms[index].notify.dispatch(limit=3).sent
        except Exception as exc:  # re-raised below, in the test's thread
            errors.append(exc)

    threads = [threading.Thread(target=dispatcher, args=(i,)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    assert not errors, errors
    assert sorted(m.id for m in delivered) == sorted(ids)  # every one, none twice
    assert sum(sent_by) == len(ids)
    assert set(statuses(crms[0]).values()) == {"sent"}
    assert all(r["attempts"] == 1 for r in crms[0].notify.outbox(limit=100))


@pytest.mark.parametrize("resend", [False, True], ids=["at-most-once", "resend-in-doubt"])
def test_send_in_doubt_after_a_dispatcher_died(crm_factory: Any, crm_db_url: str, clock: list[datetime],
                                               resend: bool) -> None:
    pager = ListChannel("pager", address=None)
    pager.resend_in_doubt = resend
    crm = crm_factory(extra_plugins=[channels(pager)], clock=lambda: clock[0])
    mid = crm.notify.enqueue("pager", recipient="#oncall", body="disk full")
    other = crm.notify.enqueue("pager", recipient="#ops", body="claimed, never started")

    # Another process claims both messages and dies in the middle of sending the first.
    done = subprocess.run([sys.executable, str(WORKER), "die-in-send", crm_db_url, "pager", T0.isoformat()],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 3, done.stderr
    assert done.stdout.strip() == f"claimed {mid} attempt 1"
    stuck = row(crm, mid)
    assert (stuck["status"], stuck["attempts"], stuck["claimed_at"], stuck["last_attempt_at"]) == \
        ("sending", 1, T0, T0)
    assert (row(crm, other)["status"], row(crm, other)["attempts"]) == ("claimed", 0)

    clock[0] = T0 + CLAIM_LEASE - timedelta(minutes=1)
    assert crm.notify.dispatch() == DispatchResult()  # the claims may still be alive
    assert pager.delivered == []

    clock[0] = T0 + CLAIM_LEASE + timedelta(seconds=1)
    if resend:  # the receiver de-duplicates: sending again is safe (at least once)
        assert crm.notify.dispatch() == DispatchResult(sent=2)
        assert sorted((m.id, m.attempts) for m in pager.delivered) == [(mid, 2), (other, 1)]
        assert (row(crm, mid)["status"], row(crm, mid)["provider_id"]) == ("sent", f"pager-{mid}")
        return
    # The provider may have accepted it: never sent twice, dead-lettered with the reason.
    assert crm.notify.dispatch() == DispatchResult(sent=1)
    assert [(m.id, m.attempts) for m in pager.delivered] == [(other, 1)]  # never attempted: safe to send
    doubt = row(crm, mid)
    assert (doubt["status"], doubt["attempts"]) == ("dead", 1)
    assert doubt["last_error"].startswith("in doubt: the dispatcher stopped while sending")
    assert crm.notify.retry([mid]) == 1  # a person who checked the provider can send it again
    assert crm.notify.dispatch() == DispatchResult(sent=1)
    assert [m.id for m in pager.delivered] == [other, mid]


@pytest.mark.parametrize("by", ["lease", "ids", "dead worker"])
def test_recovery_settles_claims_and_sends_of_every_kind_at_once(crm_factory: Any, clock: list[datetime],
                                                                 by: str) -> None:
    """One recovery meets expired claims and sends of an at-most-once and a resend-in-doubt channel
    together (one statement settles them all): each gets its own outcome, other columns as they were."""
    pager, hook = ListChannel("pager", address=None), ListChannel("hook", address=None)
    hook.resend_in_doubt = True
    crm = crm_factory(extra_plugins=[channels(pager, hook)], clock=lambda: clock[0])
    ids = {name: crm.notify.enqueue(channel, recipient="#ops", body=name)
           for name, channel in [("pager claimed", "pager"), ("pager sending", "pager"), ("hook claimed", "hook"),
                                 ("hook sending", "hook"), ("alive", "pager"), ("pending", "pager")]}
    earlier, now = T0 - timedelta(hours=1), T0 + CLAIM_LEASE + timedelta(seconds=1)
    # A dead worker's claims are recent (only its being gone settles them); the others' lease ran out.
    stale, holder = (T0 + CLAIM_LEASE, "host-b:42:0123456789ab") if by == "dead worker" else \
        (T0, "host-a:7:0123456789ab")
    outbox = tables.notify_outbox
    with crm.engine.begin() as conn:
        for name, status in [("pager claimed", "claimed"), ("pager sending", "sending"),
                             ("hook claimed", "claimed"), ("hook sending", "sending")]:
            conn.execute(outbox.update().where(outbox.c.id == ids[name]).values(
                status=status, claimed_by=holder, claimed_at=stale, attempts=1 if status == "sending" else 0,
                next_attempt_at=earlier, last_error="an earlier failure"))
        conn.execute(outbox.update().where(outbox.c.id == ids["alive"]).values(
            status="sending", claimed_by="host-c:9:0123456789ab", claimed_at=T0 + CLAIM_LEASE, attempts=1,
            next_attempt_at=earlier))
    if by == "ids":
        assert crm.notify.recover(now, ids=[ids["pager claimed"], ids["hook sending"], ids["alive"]]) == 2
        assert (row(crm, ids["pager sending"])["status"], row(crm, ids["hook claimed"])["status"]) == \
            ("sending", "claimed")  # not in the batch: left for their own recovery
    else:
        assert crm.notify.recover(now, dead=["host-b:42"] if by == "dead worker" else ()) == 4
    settled = {name: row(crm, mid) for name, mid in ids.items()}

    def columns(name: str) -> tuple[Any, ...]:
        r = settled[name]
        return r["status"], r["claimed_by"], r["claimed_at"], r["next_attempt_at"], r["last_error"], r["attempts"]

    assert columns("pager claimed") == ("pending", None, None, earlier, "an earlier failure", 0)
    assert columns("hook sending") == ("pending", None, None, now,
                                       "in doubt: the dispatcher stopped while sending; sent again", 1)
    if by != "ids":
        assert columns("hook claimed") == ("pending", None, None, earlier, "an earlier failure", 0)
        status, claimed_by, claimed_at, next_at, error, attempts = columns("pager sending")
        assert (status, claimed_by, claimed_at, next_at, attempts) == ("dead", holder, None, earlier, 1)
        assert error.startswith("in doubt: the dispatcher stopped while sending")  # who sent it is kept
    assert columns("alive")[:3] == ("sending", "host-c:9:0123456789ab", T0 + CLAIM_LEASE)  # its lease runs
    assert columns("pending")[:2] == ("pending", None)


@pytest.mark.parametrize("size", [5, 130])
def test_a_batch_claimed_whole_is_not_looked_for_again(crm_factory: Any, size: int) -> None:
    """A dispatch of given ids (a delivery job's batch) stops once it has claimed them all: no
    further pass over the batch's rows for due messages (130: two claim rounds, then none)."""
    pager = ListChannel("pager", address=None)
    crm = crm_factory(extra_plugins=[channels(pager)])
    ids = [crm.notify.enqueue("pager", recipient="#ops", body=str(i)) for i in range(size)]
    looks: list[str] = []

    def seen(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if "notify_outbox.next_attempt_at <=" in statement and "notify_outbox.status" in statement:
            looks.append(statement)  # a claim round's (or a look for skipped messages') selection of due ones

    sqlalchemy_event.listen(crm.engine, "before_cursor_execute", seen)
    try:
        assert crm.notify.dispatch(ids=ids) == DispatchResult(sent=size)
    finally:
        sqlalchemy_event.remove(crm.engine, "before_cursor_execute", seen)
    assert len(looks) == (1 if size <= 100 else 2)
    assert sorted(m.id for m in pager.delivered) == ids
    # A batch with a message already sent (a job run again): the rounds go on until none is due.
    again = [crm.notify.enqueue("pager", recipient="#ops", body="new"), ids[0]]
    assert crm.notify.dispatch(ids=again) == DispatchResult(sent=1)
    assert [m.id for m in pager.delivered[size:]] == again[:1]


def test_customers_are_read_only_for_messages_without_a_recipient(crm_factory: Any) -> None:
    """A claim round reads customers' addresses only to fill a missing recipient: a campaign's
    round (every message addressed) reads none; consent is still decided as it stands now."""
    chan = ListChannel()
    crm = crm_factory(extra_plugins=[channels(chan)])
    fan = crm.customers.add(name="Fan", email="fan@example.com", consent_marketing=True).id
    gone = crm.customers.add(name="Gone", email="gone@example.com", consent_marketing=True).id
    promo = {cid: crm.notify.enqueue("list", customer_id=cid, subject="Sale!", purpose="marketing")
             for cid in (fan, gone)}
    crm.customers.update(gone, consent_marketing=False)
    reads: list[str] = []

    def seen(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if " ".join(statement.split()).startswith("SELECT customers.id, customers.email"):
            reads.append(statement)

    sqlalchemy_event.listen(crm.engine, "before_cursor_execute", seen)
    try:
        assert crm.notify.dispatch() == DispatchResult(sent=1, suppressed=1)
        assert (reads, [m.recipient for m in chan.delivered]) == ([], ["fan@example.com"])
        # A message that lost its recipient (say, requeued after its customer had none) is filled in.
        receipt = crm.notify.enqueue("list", customer_id=fan, subject="Receipt")
        with crm.engine.begin() as conn:
            outbox = tables.notify_outbox
            conn.execute(outbox.update().where(outbox.c.id == receipt).values(recipient=None))
        assert crm.notify.dispatch() == DispatchResult(sent=1)
    finally:
        sqlalchemy_event.remove(crm.engine, "before_cursor_execute", seen)
    assert len(reads) == 1
    assert [(m.id, m.recipient) for m in chan.delivered[1:]] == [(receipt, "fan@example.com")]
    assert row(crm, promo[gone])["status"] == "suppressed"
