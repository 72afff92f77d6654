"""Requeued messages look the recipient up again, and a reclaimed claim's late
result does not overwrite the new dispatcher's."""

from __future__ import annotations

from datetime import timedelta

import crmcore
from crmcore.store import tables
from sqlalchemy import select

from .conftest import Components


class Inbox(crmcore.Channel):
    name = "inbox"
    description = "records deliveries in memory"
    address = "email"

    def __init__(self):
        self.delivered: list[tuple[str, str]] = []

    def send(self, message, options):
        self.delivered.append((message.recipient, message.subject))
        return f"id-{len(self.delivered)}"


def test_dead_for_no_email_then_fixed_and_retried(crm_factory):
    inbox = Inbox()
    crm = crm_factory(extra_plugins=[Components("requeue", channels=(inbox,))])
    customer = crm.customers.add(name="没有邮箱")
    mid = crm.notify.enqueue("inbox", customer_id=customer.id, subject="您好")
    [row] = crm.notify.outbox(message_id=mid)
    assert row["status"] == "dead" and "has no email" in row["last_error"]
    crm.customers.update(customer.id, email="fixed@example.com")
    assert crm.notify.retry([mid]) == 1
    assert crm.notify.dispatch().sent == 1
    assert inbox.delivered == [("fixed@example.com", "您好")]
    [row] = crm.notify.outbox(message_id=mid)
    assert row["status"] == "sent" and row["recipient"] == "fixed@example.com"


def test_retried_without_an_address_dies_again_with_reason(crm_factory):
    inbox = Inbox()
    crm = crm_factory(extra_plugins=[Components("requeue", channels=(inbox,))])
    customer = crm.customers.add(name="still none")
    mid = crm.notify.enqueue("inbox", customer_id=customer.id, subject="x")
    crm.notify.retry([mid])
    result = crm.notify.dispatch()
    assert (result.sent, result.dead) == (0, 1) and inbox.delivered == []
    assert "has no email" in crm.notify.outbox(message_id=mid)[0]["last_error"]


def test_stale_claim_result_does_not_overwrite_reclaim(crm_factory):
    """Dispatcher A claims, stalls past the lease; B reclaims and sends; A's late
    start and late 'retry' must not touch B's 'sent'."""
    now = [crmcore.parse_as_of("2026-06-30T12:00:00")]
    inbox = Inbox()
    crm = crm_factory(extra_plugins=[Components("requeue", channels=(inbox,))], clock=lambda: now[0])
    customer = crm.customers.add(name="a", email="a@example.com")
    mid = crm.notify.enqueue("inbox", customer_id=customer.id, subject="once")
    [stale] = crm.notify._claim(now[0], None, None)  # A's claim, never finished
    now[0] += timedelta(hours=1)  # past the lease
    assert crm.notify.dispatch().sent == 1  # B
    assert not crm.notify._start(stale, now[0])  # A wakes up: its claim is gone, it must not send
    crm.notify._failed(stale, crmcore.TransientError("A was slow"), now[0])  # A's late verdict
    [row] = crm.notify.outbox(message_id=mid)
    assert row["status"] == "sent" and row["attempts"] == 1 and row["claimed_by"] is None
    with crm.unit(readonly=True) as uow:
        assert uow.conn.execute(select(tables.notify_outbox.c.status)).scalar_one() == "sent"
    assert inbox.delivered == [("a@example.com", "once")]
