"""Notifications: channels from plugins, a transactional outbox in the core.

Use cases enqueue messages with ``uow.outbox.enqueue(...)`` inside their
transaction, so a rollback enqueues nothing.  :meth:`NotifyEngine.dispatch`
delivers after commit: it claims due messages (a conditional UPDATE, so two
dispatchers never take the same one), sends them through their channel, and
marks them sent, schedules a retry with exponential backoff, or moves them to
the dead-letter state after ``max_attempts`` or a permanent failure.

Consent: transactional messages always go; a marketing message needs the
customer's ``consent_marketing`` and the channel's flag (``consent_email`` for
email channels, ``consent_sms`` for SMS).  It is checked when enqueuing and
again before sending (consent may be withdrawn in between).
"""

from __future__ import annotations

import random
import uuid
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

import attrs
from sqlalchemy import func, or_, select, update

from . import consent
from .components import Component, build_options
from .entities import Customer
from .errors import ValidationError
from .registry import Registry
from .store import tables

if TYPE_CHECKING:
    from .app import CRM
    from .uow import UnitOfWork

outbox = tables.notify_outbox
PURPOSES = ("transactional", "marketing")
STATUSES = ("pending", "sending", "sent", "dead", "suppressed")
DEFAULT_MAX_ATTEMPTS = 5
BACKOFF_BASE = timedelta(seconds=30)
BACKOFF_CAP = timedelta(hours=6)
# A message claimed this long ago by a dispatcher that died is due again.
CLAIM_LEASE = timedelta(minutes=10)


class TransientError(Exception):
    """Delivery failed but may succeed later (timeout, 5xx, connection refused)."""


class PermanentError(Exception):
    """Delivery can never succeed (bad address, 4xx, rejected recipient)."""


@attrs.frozen
class Message:
    """A message as a channel sees it."""

    id: int
    channel: str
    recipient: str | None
    subject: str | None
    body: str | None
    payload: dict[str, Any]
    purpose: str
    customer_id: int | None
    idempotency_key: str
    attempts: int


class Channel(Component):
    """Base class of notification channels.

    :cvar address: which customer field is the recipient: ``"email"``,
        ``"phone"`` or None (the channel needs no per-customer address).
    """

    address: str | None = None

    def open(self, options: Any) -> None:
        """Prepare for a batch (e.g. connect); called once per dispatch."""

    def send(self, message: Message, options: Any) -> str | None:
        """Deliver one message; return the provider's message id, if any.

        Raise :class:`TransientError` to retry later, :class:`PermanentError`
        to give up at once.  Any other exception counts as transient.
        """
        raise NotImplementedError

    def close(self) -> None:
        """End the batch (e.g. disconnect)."""


@attrs.frozen
class DispatchResult:
    """What one dispatch did."""

    sent: int = 0
    retried: int = 0
    dead: int = 0
    suppressed: int = 0


class Outbox:
    """Enqueueing inside a unit of work (``uow.outbox``)."""

    def __init__(self, uow: "UnitOfWork"):
        self.uow = uow

    def enqueue(self, channel: str, *, customer_id: int | None = None, recipient: str | None = None,
                subject: str | None = None, body: str | None = None,
                payload: Mapping[str, Any] | None = None, purpose: str = "transactional",
                key: str | None = None, max_attempts: int = DEFAULT_MAX_ATTEMPTS,
                not_before: datetime | None = None) -> int:
        """Queue a message; returns its id.  A repeated ``key`` returns the first message's id.

        The recipient defaults to the customer's address for the channel.  A
        message that can never go (no address, no consent) is stored as
        ``dead`` or ``suppressed`` with the reason, so nothing vanishes silently.
        """
        crm = self.uow.crm
        chan = crm.notify.registry.get(channel)
        if purpose not in PURPOSES:
            raise ValidationError.single("purpose", f"must be one of {', '.join(PURPOSES)}", "message")
        key = key or f"{channel}:{uuid.uuid4().hex}"
        existing = self.uow.conn.execute(select(outbox.c.id).where(outbox.c.idempotency_key == key)).scalar()
        if existing is not None:
            return existing
        customer = self.uow.customers.get(customer_id) if customer_id is not None else None
        status, reason = "pending", None
        if recipient is None and customer is not None and chan.address:
            recipient = getattr(customer, chan.address)
            if not recipient:
                status, reason = "dead", f"customer {customer_id} has no {chan.address}"
        refusal = consent_refusal(customer, chan, purpose)
        if refusal:
            status, reason = "suppressed", refusal
        values = {"idempotency_key": key, "channel": channel, "customer_id": customer_id,
                  "recipient": recipient, "purpose": purpose, "subject": subject, "body": body,
                  "payload": dict(payload or {}), "status": status, "attempts": 0,
                  "max_attempts": max_attempts, "next_attempt_at": not_before or self.uow.now,
                  "last_error": reason, "created_at": self.uow.now}
        return self.uow.conn.execute(outbox.insert().values(values)).inserted_primary_key[0]


def consent_refusal(customer: Customer | None, channel: Channel, purpose: str) -> str | None:
    """Why a message may not go to ``customer``, or None if it may."""
    if purpose != "marketing" or customer is None:
        return None
    if not customer.consent_marketing:
        return "no marketing consent"
    flag = {"email": "consent_email", "phone": "consent_sms"}.get(channel.address or "")
    if flag and not getattr(customer, flag):
        return f"opted out of {channel.address}"
    return None


def backoff(attempts: int, base: timedelta = BACKOFF_BASE, cap: timedelta = BACKOFF_CAP,
            jitter: float = 0.1) -> timedelta:
    """Delay before the next attempt: base * 2^(attempts-1), capped, +/- jitter."""
    delay = min(base * (2 ** max(attempts - 1, 0)), cap)
    return delay * (1 + random.uniform(-jitter, jitter))


class NotifyEngine:
    """``crm.notify``: channels, enqueueing, dispatching and the outbox."""

    def __init__(self, crm: "CRM"):
        self.crm = crm
        self.registry: Registry[Channel] = Registry("channel")

    def channels(self) -> list[Channel]:
        return list(self.registry)

    def enqueue(self, channel: str, **fields: Any) -> int:
        """Queue a message in its own transaction (see :meth:`Outbox.enqueue`)."""
        with self.crm.unit() as uow:
            self.crm.authorize("notify.enqueue", channel)
            return uow.outbox.enqueue(channel, **fields)

    def dispatch(self, limit: int | None = None, channel: str | None = None) -> DispatchResult:
        """Deliver due messages; safe to run in several processes at once."""
        now = self.crm.clock()
        counts = {"sent": 0, "retried": 0, "dead": 0, "suppressed": 0}
        claimed = self._claim(now, limit, channel)
        by_channel: dict[str, list[Message]] = {}
        for message in claimed:
            by_channel.setdefault(message.channel, []).append(message)
        for name, messages in by_channel.items():
            self._deliver(name, messages, counts)
        return DispatchResult(**counts)

    def _claim(self, now: datetime, limit: int | None, channel: str | None) -> list[Message]:
        due = or_(outbox.c.status == "pending",
                  (outbox.c.status == "sending") & (outbox.c.claimed_at < now - CLAIM_LEASE))
        query = select(outbox).where(due, outbox.c.next_attempt_at <= now).order_by(outbox.c.id).limit(limit)
        if channel:
            query = query.where(outbox.c.channel == channel)
        claimed = []
        with self.crm.unit() as uow:
            for row in uow.conn.execute(query).all():
                took = uow.conn.execute(update(outbox).where(
                    outbox.c.id == row.id, outbox.c.status == row.status,
                    outbox.c.attempts == row.attempts).values(
                    status="sending", claimed_at=now, attempts=row.attempts + 1)).rowcount
                if took:
                    claimed.append(Message(row.id, row.channel, row.recipient, row.subject, row.body,
                                           row.payload or {}, row.purpose, row.customer_id,
                                           row.idempotency_key, row.attempts + 1))
        return claimed

    def _deliver(self, name: str, messages: list[Message], counts: dict[str, int]) -> None:
        if name not in self.registry:
            for message in messages:
                self._finish(message, "dead", error=f"channel {name!r} is not enabled")
                counts["dead"] += 1
            return
        channel = self.registry.get(name)
        try:
            options = build_options(channel, "channels", self.crm.config, None)
            channel.open(options)
        except Exception as exc:  # misconfiguration or server down: every message retries
            for message in messages:
                counts[self._failed(message, exc)] += 1
            return
        try:
            refusals = consent.refusals(self.crm, name, messages)  # consent as it stands now (crmcore.consent)
            for message in messages:
                message, refusal, missing = self._check_now(message, channel)
                refusal = refusals.get(message.id)
                if refusal or missing:
                    self._finish(message, "suppressed" if refusal else "dead", error=refusal or missing)
                    counts["suppressed" if refusal else "dead"] += 1
                    continue
                try:
                    provider_id = channel.send(message, options)
                except Exception as exc:
                    counts[self._failed(message, exc)] += 1
                else:
                    self._finish(message, "sent", provider_id=provider_id)
                    counts["sent"] += 1
        finally:
            channel.close()

    def _check_now(self, message: Message, channel: Channel) -> tuple[Message, str | None, str | None]:
        """Re-check consent (it may have been withdrawn) and fill a missing address
        (a requeued message may have died for lack of one).  Returns the message,
        a consent refusal and a missing-address reason."""
        needs_address = message.recipient is None and channel.address is not None
        if message.customer_id is None or (message.purpose != "marketing" and not needs_address):
            return message, None, None
        with self.crm.unit(readonly=True) as uow:
            customer = uow.customers.find(id=message.customer_id)
        if needs_address and customer is not None and getattr(customer, channel.address):
            message = attrs.evolve(message, recipient=getattr(customer, channel.address))
            with self.crm.unit() as uow:
                uow.conn.execute(update(outbox).where(outbox.c.id == message.id).values(recipient=message.recipient))
        missing = f"customer {message.customer_id} has no {channel.address}" if message.recipient is None \
            and channel.address else None
        return message, consent_refusal(customer, channel, message.purpose), missing

    def _failed(self, message: Message, exc: BaseException) -> str:
        error = f"{type(exc).__name__}: {exc}"
        with self.crm.unit(readonly=True) as uow:
            max_attempts = uow.conn.execute(select(outbox.c.max_attempts).where(
                outbox.c.id == message.id)).scalar_one()
        if isinstance(exc, PermanentError) or message.attempts >= max_attempts:
            self._finish(message, "dead", error=error)
            return "dead"
        self._finish(message, "pending", error=error,
                     next_attempt_at=self.crm.clock() + backoff(message.attempts))
        return "retried"

    def _finish(self, message: Message, status: str, error: str | None = None, **values: Any) -> None:
        now = self.crm.clock()
        if status == "sent":
            values["sent_at"] = now
        with self.crm.unit() as uow:
            # attempts identifies this claim: if the lease ran out and another
            # dispatcher reclaimed the message, its result is the one that stands.
            uow.conn.execute(update(outbox).where(outbox.c.id == message.id, outbox.c.status == "sending",
                                                  outbox.c.attempts == message.attempts).values(
                status=status, last_error=error, claimed_at=None, **values))

    # -- reading / maintenance ---------------------------------------------
    def outbox(self, status: str | None = None, customer_id: int | None = None,
               limit: int = 100, message_id: int | None = None) -> list[dict[str, Any]]:
        """Outbox rows, newest first, by status, customer or id."""
        query = select(outbox).order_by(outbox.c.id.desc()).limit(limit)
        if message_id is not None:
            query = query.where(outbox.c.id == message_id)
        if status:
            query = query.where(outbox.c.status == status)
        if customer_id is not None:
            query = query.where(outbox.c.customer_id == customer_id)
        with self.crm.unit(readonly=True) as uow:
            return [dict(r._mapping) for r in uow.conn.execute(query)]

    def status_counts(self) -> dict[str, int]:
        """How many messages are in each status."""
        with self.crm.unit(readonly=True) as uow:
            return dict(uow.conn.execute(select(outbox.c.status, func.count()).group_by(outbox.c.status)).all())

    def retry(self, ids: list[int] | None = None) -> int:
        """Requeue dead messages (all, or the given ids) with fresh attempts."""
        query = update(outbox).where(outbox.c.status == "dead")
        if ids is not None:
            query = query.where(outbox.c.id.in_(ids))
        with self.crm.unit() as uow:
            self.crm.authorize("notify.retry", ids)
            return uow.conn.execute(query.values(status="pending", attempts=0, next_attempt_at=uow.now)).rowcount
