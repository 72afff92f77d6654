"""The transactional outbox: messages enqueued inside a use case's transaction."""

from __future__ import annotations

import random
import uuid
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import select

from ..domain.errors import ValidationError
from ..store import tables
from ..store.bulk import inserted_id
from ..store.upsert import insert_new
from . import consent

if TYPE_CHECKING:
    from ..application.uow import UnitOfWork

outbox = tables.notify_outbox
PURPOSES = ("transactional", "marketing")
STATUSES = ("pending", "claimed", "sending", "sent", "dead", "suppressed")
DEFAULT_MAX_ATTEMPTS = 5
BACKOFF_BASE = timedelta(seconds=30)
BACKOFF_CAP = timedelta(hours=6)


class Outbox:
    """Enqueueing inside a unit of work (``uow.outbox``)."""

    def __init__(self, uow: UnitOfWork):
        self.uow = uow

    def enqueue(self, channel: str, *, customer_id: int | None = None, recipient: str | None = None,
                subject: str | None = None, body: str | None = None,
                payload: Mapping[str, Any] | None = None, purpose: str = "transactional",
                key: str | None = None, max_attempts: int = DEFAULT_MAX_ATTEMPTS,
                not_before: datetime | None = None) -> int:
        """Queue a message; returns its id.  A repeated ``key`` returns the first message's id,
        also when two transactions queue it at once (insert-or-return-existing).

        The recipient defaults to the customer's address for the channel.  A
        message that can never go (no address, no consent) is stored as
        ``dead`` or ``suppressed`` with the reason, so nothing vanishes silently.
        """
        crm = self.uow.crm
        chan = crm.notify.registry.get(channel)
        if purpose not in PURPOSES:
            raise ValidationError.single("purpose", f"must be one of {', '.join(PURPOSES)}", "message")
        key = key or f"{channel}:{uuid.uuid4().hex}"
        existing: int | None = self.uow.conn.execute(
            select(outbox.c.id).where(outbox.c.idempotency_key == key)).scalar()
        if existing is not None:
            return existing
        customer = self.uow.customers.get(customer_id) if customer_id is not None else None
        status, reason = "pending", None
        if recipient is None and customer is not None and chan.address:
            recipient = getattr(customer, chan.address)
            if not recipient:
                status, reason = "dead", f"customer {customer_id} has no {chan.address}"
        refusal = consent.refusal(self.uow, customer_id, channel, purpose)  # the one rule, as campaigns apply it
        if refusal:
            status, reason = "suppressed", refusal
        values = {"idempotency_key": key, "channel": channel, "customer_id": customer_id,
                  "recipient": recipient, "purpose": purpose, "subject": subject, "body": body,
                  "payload": dict(payload or {}), "status": status, "attempts": 0,
                  "max_attempts": max_attempts, "next_attempt_at": not_before or self.uow.now,
                  "last_error": reason, "created_at": self.uow.now}
        new_id = insert_new(self.uow.conn, outbox, values, outbox.c.idempotency_key)
        if new_id is not None:
            self.uow.audit.record("message.queue", "message", new_id, customer_id=customer_id, values=values)
            return new_id
        # Another transaction queued this key meanwhile: its message is the one (read its latest version).
        winner: int | None = self.uow.conn.execute(select(outbox.c.id).where(
            outbox.c.idempotency_key == key).with_for_update(read=True)).scalar()
        if winner is None:  # not a key clash (INSERT IGNORE skips other errors too): raise the real one
            return inserted_id(self.uow.conn.execute(outbox.insert().values(values)))
        return winner


def backoff(attempts: int, base: timedelta = BACKOFF_BASE, cap: timedelta = BACKOFF_CAP,
            jitter: float = 0.1) -> timedelta:
    """Delay before the next attempt: base * 2^(attempts-1), capped, +/- jitter."""
    delay: timedelta = min(base * (2 ** max(attempts - 1, 0)), cap)
    return delay * (1 + random.uniform(-jitter, jitter))
