"""Notifications: channels from plugins, a transactional outbox in the core.

Use cases enqueue messages with ``uow.outbox.enqueue(...)`` inside their
transaction, so a rollback enqueues nothing.  :meth:`NotifyEngine.dispatch`
delivers after commit.

A message moves through these states::

    pending --claim--> claimed --start--> sending --> sent
       ^                  |                  |------> pending (retry, backoff + jitter)
       |-- lease expired -|                  |------> dead (permanent, or max_attempts)
                                             |------> dead ("in doubt": dispatcher died mid-send)

* **claimed**: a dispatcher took the message (``FOR UPDATE SKIP LOCKED`` on
  PostgreSQL and MariaDB, one conditional ``UPDATE`` under SQLite's write lock),
  so two dispatchers never take the same one.  Nothing has gone out yet: a
  claim whose dispatcher died is taken again once its lease has run out, and
  a dispatcher that stops on SIGTERM hands its claims back at once.
* **sending**: committed *before* the network call.  The outcome (sent, retry,
  dead) is committed after it.  If the dispatcher dies in between, nobody
  knows whether the provider accepted the message.  Such a message is *in
  doubt*: once its lease has run out it goes to the dead letters with that
  reason (at most once: never sent twice, but possibly not sent), unless the
  channel says ``resend_in_doubt`` because its receivers de-duplicate on the
  idempotency key (then it is sent again: at least once).  The window is one
  message per dispatcher thread: the network call plus one commit.

Consent: :mod:`crmcore.notify.consent` decides (recorded decisions, then the
channel's policy and the customer's flags), when enqueuing and again before
sending (consent may be withdrawn in between).
"""

from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor
import os
import random
import socket
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, TypeVar

import attrs
from sqlalchemy import Connection, Row, Update, and_, bindparam, case, false, func, literal, or_, select, text, update
from sqlalchemy.exc import DBAPIError

from ..application.components import build_options
from ..application.registry import Registry
from ..application.uow import unit_open
from ..domain.errors import ConfigError, ValidationError
from ..store import tables
from . import consent
from .channels import (
    Channel,
    Delivered,
    DispatchResult,
    Message,
    PermanentError,
    is_channel_fault,
    is_permanent,
)
from .outbox import (
    BACKOFF_BASE,
    backoff,
)
from .policy import DeliveryPolicy, Pacer, split_delivery_options

if TYPE_CHECKING:
    from ..app import CRM

outbox = tables.notify_outbox
T = TypeVar("T")
DEADLOCK_RETRIES = 5
# A claim or a send this old belongs to a dispatcher that died (sends time out
# long before this; a claim is renewed per message, see _start).
CLAIM_LEASE = timedelta(minutes=10)
# Messages claimed per round trip; small enough that a stopped dispatcher has
# little to hand back, large enough that claiming costs little per message.
CLAIM_BATCH = 100
# A dispatch of given ids (a delivery job) tries this many times more to claim due messages
# of its batch that SKIP LOCKED passed over (held a moment by another transaction).
SKIPPED_RETRIES = 10
# After this many transient failures in a row, a channel is taken as down for
# the rest of the dispatch: its other messages are deferred without an attempt.
DOWN_AFTER = 3
# Built once: the per-message statements run with bound values only (building an
# UPDATE costs more than executing it).
_START = update(outbox).where(
    outbox.c.id == bindparam("b_id"), outbox.c.status == "claimed", outbox.c.claimed_by == bindparam("b_token")).values(
    status="sending", attempts=bindparam("b_attempts"), claimed_at=bindparam("b_now"),
    last_attempt_at=bindparam("b_now"), recipient=bindparam("b_to"))
# The same, for a group whose recipients are those claimed (no per-row value but the id): one
# statement for the group instead of one per message.
_START_GROUP = update(outbox).where(
    outbox.c.id.in_(bindparam("b_ids", expanding=True)), outbox.c.status == "claimed",
    outbox.c.claimed_by == bindparam("b_token")).values(
    status="sending", attempts=bindparam("b_attempts"), claimed_at=bindparam("b_now"), last_attempt_at=bindparam("b_now"))
_SENT = update(outbox).where(
    outbox.c.id == bindparam("b_id"), outbox.c.status == "sending", outbox.c.claimed_by == bindparam("b_token")).values(
    status="sent", last_error=None, claimed_at=None, claimed_by=None, sent_at=bindparam("b_at"),
    provider_id=bindparam("b_provider"), delivery=bindparam("b_delivery", type_=outbox.c.delivery.type))
# PostgreSQL: the same marks for a whole group in one statement, each row's values from arrays (a
# constant text, so the server plans it once; a row UPDATE per message cost it 2-3 times the CPU).
_SENT_ARRAYS = text(
    f"UPDATE {outbox.name} AS o SET status = 'sent', last_error = NULL, claimed_at = NULL, claimed_by = NULL, "
    "sent_at = v.sent_at, provider_id = v.provider_id, delivery = v.delivery "
    "FROM unnest(CAST(:ids AS integer[]), CAST(:tokens AS varchar[]), CAST(:ats AS timestamp[]), "
    "CAST(:providers AS varchar[]), CAST(:deliveries AS json[])) AS v(id, token, sent_at, provider_id, delivery) "
    "WHERE o.id = v.id AND o.status = 'sending' AND o.claimed_by = v.token")
IN_DOUBT = ("in doubt: the dispatcher stopped while sending; the provider may have accepted it "
            "(compare the provider id); `crm notify retry` sends it again")


def is_deadlock(exc: DBAPIError) -> bool:
    """True for a deadlock or serialization failure (MariaDB/MySQL 1213/1205, PostgreSQL 40P01/40001)."""
    orig = exc.orig
    if getattr(orig, "sqlstate", None) in ("40P01", "40001"):
        return True
    args = getattr(orig, "args", None)
    code = args[0] if args else None
    return code in (1213, 1205)


def dispatcher_name() -> str:
    """Who holds a claim: host, process and a random part (one per claim round)."""
    return f"{socket.gethostname()[:40]}:{os.getpid()}:{uuid.uuid4().hex[:12]}"


@attrs.define
class _Claimed:
    """A claimed message and what the dispatcher needs to finish it."""

    message: Message
    token: str
    max_attempts: int
    claimed_recipient: str | None = None  # as the row had it (the dispatcher may fill a missing one)


class NotifyEngine:
    """``crm.notify``: channels, enqueueing, dispatching and the outbox."""

    def __init__(self, crm: CRM):
        self.crm = crm
        self.registry: Registry[Channel] = Registry("channel")
        self._pacers: dict[str, Pacer] = {}
        self._pacers_lock = threading.Lock()

    def channels(self) -> list[Channel]:
        """The registered notification channels."""
        self.crm.authorize("notify.channels", None)
        return list(self.registry)

    # -- options ---------------------------------------------------------------------------
    def delivery_policy(self, name: str) -> DeliveryPolicy:
        """The dispatcher's settings for a channel (rate limit, quiet hours)."""
        raw = self.crm.config.component_options("channels", name)
        return split_delivery_options(raw, name, self.crm.config.timezone)[0]

    def channel_options(self, name: str, given: Mapping[str, Any] | None = None) -> Any:
        """The channel's own options, from ``[channels.NAME]`` without the delivery keys."""
        channel = self.registry.get(name)
        config = self.crm.config
        own = split_delivery_options(config.component_options("channels", name), name, config.timezone)[1]
        options = {**config.options, "channels": {**config.options.get("channels", {}), name: own}}
        return build_options(channel, "channels", attrs.evolve(config, options=options), given)

    def enqueue(self, channel: str, **fields: Any) -> int:
        """Queue a message in its own transaction (see :meth:`Outbox.enqueue`)."""
        with self.crm.unit() as uow:
            self.crm.authorize("notify.enqueue", channel)
            if isinstance(fields.get("customer_id"), int):
                with uow.scoped():  # NotFound for a customer the acting user cannot see
                    uow.customers.get(fields["customer_id"])
            return uow.outbox.enqueue(channel, **fields)

    # -- dispatching -------------------------------------------------------------------------
    def dispatch(self, limit: int | None = None, channel: str | None = None, *, as_of: datetime | None = None,
                 workers: int = 1, stop: threading.Event | None = None, ids: Sequence[int] | None = None,
                 dead: Sequence[str] = ()) -> DispatchResult:
        """Deliver due messages; safe to run in several processes at once.

        :param limit: at most this many messages (all due ones if None).
        :param channel: only this channel's messages.
        :param as_of: treat this moment as now (default: the CRM's clock).
        :param workers: threads delivering in parallel, each with its own
            claims and channel connections.
        :param stop: when set, each worker finishes the message in flight,
            hands its remaining claims back and returns.
        :param ids: only these messages (a delivery job's batch, :mod:`crmcore.jobs`);
            those not due, or already taken, are skipped.
        :param dead: dispatchers known to be dead (``host:pid`` of a killed worker): their
            claims and sends are settled at once, as if their lease had run out.
        """
        self.crm.authorize("notify.dispatch", channel)
        if workers < 1:
            raise ValidationError.single("workers", "must be at least 1", "dispatch")
        clock: Callable[[], datetime] = (lambda: as_of) if as_of is not None else self.crm.clock
        only = None if ids is None else list(ids)
        self.recover(clock(), dead, only)
        self.defer_quiet_hours(clock(), channel)
        budget = _Budget(limit)
        if workers == 1:
            return _Worker(self, clock, channel, budget, stop, only).run()
        results: list[DispatchResult] = []
        errors: list[BaseException] = []

        def work() -> None:
            try:
                results.append(_Worker(self, clock, channel, budget, stop, only).run())
            except BaseException as exc:  # re-raised in the caller's thread
                errors.append(exc)

        threads = [threading.Thread(target=work, name=f"crm-dispatch-{i}") for i in range(workers)]
        for thread in threads:
            thread.start()
        for thread in threads:
            while thread.is_alive():  # join in slices: the main thread stays responsive to signals
                thread.join(0.2)
        if errors:
            raise errors[0]
        return sum(results, DispatchResult())

    def recover(self, now: datetime, dead: Sequence[str] = (), ids: Sequence[int] | None = None) -> int:
        """Settle messages whose dispatcher died: expired claims become due again;
        expired sends are in doubt (see the module docstring).  Returns how many.

        ``dead``: ``host:pid`` of dispatchers known to be gone (a killed job worker):
        their claims and sends count as expired now.  ``ids``: only these messages (a
        delivery job settles its own batch: found by primary key, its cost does not grow
        with the outbox or with the versions of rows its index still points to)."""
        cutoff = now - CLAIM_LEASE
        resend = [c.name for c in self.registry if c.resend_in_doubt]
        expired = or_(outbox.c.claimed_at < cutoff, *(outbox.c.claimed_by.startswith(f"{d}:", autoescape=True) for d in dead))
        if ids is not None:
            expired = and_(outbox.c.id.in_(ids), expired)
        sending = outbox.c.status == "sending"
        again = and_(sending, outbox.c.channel.in_(resend)) if resend else false()  # in doubt, sent again
        lost = and_(sending, outbox.c.channel.not_in(resend)) if resend else sending  # in doubt: dead
        # One statement for the three outcomes (a delivery job runs it on its batch before each
        # dispatch: three passes over the batch's rows cost PostgreSQL more than its sent marks).
        # ``status`` is assigned last: MariaDB evaluates SET left to right, so the CASEs before it
        # read the status the row had, as PostgreSQL and SQLite do anyway.
        statement = update(outbox).where(outbox.c.status.in_(("claimed", "sending")), expired).ordered_values(
            (outbox.c.claimed_at, None),
            (outbox.c.claimed_by, case((lost, outbox.c.claimed_by), else_=None)),  # (a dead one keeps who sent it)
            (outbox.c.next_attempt_at, case((again, literal(now, outbox.c.next_attempt_at.type)),
                                            else_=outbox.c.next_attempt_at)),
            (outbox.c.last_error, case((again, "in doubt: the dispatcher stopped while sending; sent again"),
                                       (lost, IN_DOUBT), else_=outbox.c.last_error)),
            (outbox.c.status, case((lost, "dead"), else_="pending")))
        return self._write(lambda conn: int(conn.execute(statement).rowcount))

    def defer_quiet_hours(self, now: datetime, channel: str | None = None) -> int:
        """Move due messages of channels in their quiet hours to the window's end."""
        deferred = 0
        for chan in self.registry:
            if channel and chan.name != channel:
                continue
            quiet = self.delivery_policy(chan.name).quiet_hours
            until = quiet.deferral(now) if quiet else None
            if quiet is None or until is None:
                continue
            scope = [outbox.c.channel == chan.name, outbox.c.status == "pending", outbox.c.next_attempt_at < until]
            if quiet.applies_to == "marketing":
                scope.append(outbox.c.purpose == "marketing")
            statement = update(outbox).where(*scope).values(next_attempt_at=until)
            deferred += self._write(lambda conn: conn.execute(statement).rowcount)
        return deferred

    def pacer(self, name: str) -> Pacer | None:
        """The shared rate limiter of a channel (None when it has no rate limit)."""
        rate = self.delivery_policy(name).rate_limit
        if rate is None:
            return None
        with self._pacers_lock:
            pacer = self._pacers.get(name)
            if pacer is None or pacer.interval != 1.0 / rate:
                pacer = self._pacers[name] = Pacer(rate)
            return pacer

    def _write(self, work: Callable[[Connection], T]) -> T:
        """Run ``work(conn)`` in its own transaction, again if the database chose it
        as a deadlock victim (InnoDB does, between concurrent claims and updates of
        neighbouring rows; the victim's transaction was rolled back whole)."""
        for attempt in range(DEADLOCK_RETRIES):
            try:
                if unit_open(self.crm):  # called inside a use case: its transaction
                    with self.crm.unit() as uow:
                        return work(uow.conn)
                # The dispatcher's own bookkeeping touches outbox rows only (no repository, audit
                # record, event or visibility-scoped read), so a bare transaction does: same BEGIN
                # (IMMEDIATE on SQLite) and the same durable commit, without setting up a unit of
                # work per message (repositories, ledger, outbox, a per-connection SELECT hook).
                with self.crm.engine.begin() as conn:
                    return work(conn)
            except DBAPIError as exc:
                if attempt == DEADLOCK_RETRIES - 1 or not is_deadlock(exc):
                    raise
                time.sleep(random.uniform(0.005, 0.02) * 2 ** attempt)
        raise AssertionError("unreachable")

    def _claim(self, now: datetime, limit: int | None, channel: str | None,
               only: Sequence[int] | None = None) -> list[_Claimed]:
        """Take up to ``limit`` due messages for this dispatcher (status ``claimed``),
        among ``only`` when given."""
        token = dispatcher_name()
        due = or_(and_(outbox.c.status == "pending", outbox.c.next_attempt_at <= now),
                  and_(outbox.c.status == "claimed", outbox.c.claimed_at < now - CLAIM_LEASE))
        ids = select(outbox.c.id).where(due).order_by(outbox.c.id).limit(limit)
        if channel:
            ids = ids.where(outbox.c.channel == channel)
        if only is not None:
            ids = ids.where(outbox.c.id.in_(only))
        claim = update(outbox).values(status="claimed", claimed_at=now, claimed_by=token)

        def work(conn: Connection) -> Sequence[Row[*tuple[Any, ...]]]:
            if conn.dialect.name == "postgresql":
                # One statement: lock the due rows (skipping those another dispatcher holds), mark them
                # and return them.  The locking CTE is evaluated once (MATERIALIZED), so exactly the
                # rows it locked are claimed.
                locked = ids.with_for_update(skip_locked=True).cte("locked").prefix_with("MATERIALIZED")
                claimed = conn.execute(claim.where(outbox.c.id.in_(select(locked.c.id))).returning(*outbox.c)).all()
                return sorted(claimed, key=lambda r: r.id)
            if conn.dialect.name == "sqlite":
                # One statement under SQLite's write lock (BEGIN IMMEDIATE): atomic.
                conn.execute(claim.where(outbox.c.id.in_(ids.scalar_subquery())))
            else:
                # Rows another dispatcher has locked are skipped, not waited for.
                taken = conn.execute(ids.with_for_update(skip_locked=True)).scalars().all()
                if not taken:
                    return []
                conn.execute(claim.where(outbox.c.id.in_(taken)))
            return conn.execute(select(outbox).where(outbox.c.claimed_by == token, outbox.c.status == "claimed")
                                .order_by(outbox.c.id)).all()

        rows = self._write(work)
        return [_Claimed(Message(r.id, r.channel, r.recipient, r.subject, r.body, r.payload or {}, r.purpose,
                                 r.customer_id, r.idempotency_key, r.attempts + 1), token, r.max_attempts, r.recipient)
                for r in rows]

    def _pending(self, ids: Sequence[int], now: datetime) -> bool:
        """True if any of ``ids`` is pending and due (not claimed by anybody)."""
        query = select(outbox.c.id).where(outbox.c.id.in_(ids), outbox.c.status == "pending",
                                          outbox.c.next_attempt_at <= now).limit(1)
        with self.crm.engine.connect() as conn:
            return conn.execute(query).first() is not None

    def _start(self, claimed: _Claimed, now: datetime, conn: Any = None) -> bool:
        """Mark a claimed message ``sending`` (committed before the network call).

        False if the claim was lost (it expired and another dispatcher took it).
        """
        return bool(self._start_many([claimed], now, conn))

    def _start_many(self, group: list[_Claimed], now: datetime, conn: Any = None) -> list[_Claimed]:
        """:meth:`_start` for several messages in one statement; returns those still held."""
        if conn is None:
            return self._write(lambda c: self._start_many(group, now, c))
        # Messages whose recipient is the claimed one are marked by one statement per claim and
        # attempt count (a campaign's group: one); a recipient filled in since goes row by row.
        same: dict[tuple[str, int], list[int]] = {}
        filled = []
        for c in group:
            if c.message.recipient == c.claimed_recipient:
                same.setdefault((c.token, c.message.attempts), []).append(c.message.id)
            else:
                filled.append({"b_id": c.message.id, "b_token": c.token, "b_attempts": c.message.attempts,
                               "b_now": now, "b_to": c.message.recipient})
        marked = sum(conn.execute(_START_GROUP, {"b_ids": ids, "b_token": token, "b_attempts": attempts,
                                                 "b_now": now}).rowcount for (token, attempts), ids in same.items())
        if filled:
            marked += conn.execute(_START, filled).rowcount
        if marked == len(group):
            return group
        # Some claim was lost (or the driver does not count executemany rows): ask which ones are ours.
        ours = set(conn.execute(select(outbox.c.id).where(
            outbox.c.id.in_([c.message.id for c in group]), outbox.c.status == "sending",
            outbox.c.claimed_by.in_({c.token for c in group}), outbox.c.last_attempt_at == now)).scalars())
        return [c for c in group if c.message.id in ours]

    def _record_sent(self, sent: list[tuple[_Claimed, Delivered, datetime]], conn: Any) -> None:
        """Mark messages sent: on PostgreSQL one statement over arrays (``_SENT_ARRAYS``), elsewhere
        one executemany for all.

        (One ``UPDATE ... FROM (VALUES ...)`` was tried before: SQLAlchemy compiled the VALUES anew
        every time, and the server's CPU did not move in that bench.  The arrays keep one text; a
        backend's CPU for the marks alone, measured apart: 0.015-0.028 ms a message against
        0.040-0.058 for the row updates.)"""
        if not sent:
            return
        if conn.dialect.name == "postgresql":
            conn.execute(_SENT_ARRAYS, _sent_arrays(sent, conn.dialect))
            return
        conn.execute(_SENT, [{"b_id": c.message.id, "b_token": c.token, "b_at": at,
                              "b_provider": d.provider_id, "b_delivery": dict(d.details) or None}
                             for c, d, at in sent])

    def _failed(self, claimed: _Claimed, exc: BaseException, now: datetime, from_status: str = "sending",
                permanent: bool | None = None) -> str:
        """Record a failed attempt: retry with backoff, or dead. Returns the count it goes to.

        ``permanent`` overrides the classification of ``exc`` (:func:`is_permanent`), e.g. for a channel
        that could not open: whatever it raised, that says nothing about the message.
        """
        error = f"{type(exc).__name__}: {exc}"
        attempts = claimed.message.attempts
        extra: dict[str, Any] = {}
        if from_status == "claimed":  # failed before it was marked sending (e.g. the connection): still an attempt
            extra["last_attempt_at"] = now
        if (is_permanent(exc) if permanent is None else permanent) or attempts >= claimed.max_attempts:
            self._finish(claimed, "dead", now, error=error, from_status=from_status, attempts=attempts, **extra)
            return "dead"
        self._finish(claimed, "pending", now, error=error, from_status=from_status, attempts=attempts,
                     next_attempt_at=now + backoff(attempts), **extra)
        return "retried"

    def _finish(self, claimed: _Claimed, status: str, now: datetime, error: str | None = None,
                from_status: str = "sending", conn: Any = None, **values: Any) -> bool:
        """Record the outcome, if this dispatcher still holds the message."""
        if status == "sent":
            values["sent_at"] = now
        message = claimed.message
        # The token identifies this claim: if the lease ran out and another
        # dispatcher took the message, its result is the one that stands.
        statement = update(outbox).where(
            outbox.c.id == message.id, outbox.c.status == from_status, outbox.c.claimed_by == claimed.token).values(
            status=status, last_error=error, claimed_at=None, claimed_by=None, **values)
        if conn is not None:
            return bool(conn.execute(statement).rowcount)
        return self._write(lambda c: bool(c.execute(statement).rowcount))

    def release(self, claims: list[_Claimed], reason: str | None, now: datetime,
                next_attempt_at: datetime | None = None) -> int:
        """Hand claimed (never attempted) messages back: pending, attempts unchanged."""
        released = 0
        by_token: dict[str, list[int]] = {}
        for claimed in claims:
            by_token.setdefault(claimed.token, []).append(claimed.message.id)
        values: dict[str, Any] = {"status": "pending", "claimed_at": None, "claimed_by": None}
        if reason is not None:
            values["last_error"] = reason
        if next_attempt_at is not None:
            values["next_attempt_at"] = next_attempt_at
        for token, ids in by_token.items():
            def release(conn: Connection, token: str = token, ids: list[int] = ids) -> int:
                return conn.execute(update(outbox).where(
                    outbox.c.id.in_(ids), outbox.c.status == "claimed", outbox.c.claimed_by == token).values(
                    **values)).rowcount

            released += self._write(release)
        return released

    def _customers_of(self, claims: list[_Claimed]) -> dict[int, Any]:
        """The addresses of the customers whose messages of a claim round have no recipient (to
        fill it in, :meth:`_check_now`): one query per round, none when every message has one
        (a campaign's).  Consent is decided apart, in SQL (:func:`crmcore.notify.consent.refusals`)."""
        wanted = {c.message.customer_id for c in claims
                  if c.message.customer_id is not None and c.message.recipient is None}
        if not wanted:
            return {}
        customers = tables.customers
        query = select(customers.c.id, customers.c.email, customers.c.phone, customers.c.consent_marketing,
                       customers.c.consent_email, customers.c.consent_sms).where(customers.c.id.in_(wanted))
        with self.crm.unit(readonly=True) as uow:
            return {row.id: row for row in uow.conn.execute(query)}

    @staticmethod
    def _check_now(message: Message, channel: Channel, customer: Any) -> tuple[Message, str | None]:
        """Fill a missing address (a requeued message may have died for lack of one).
        Returns the message and a missing-address reason.  Consent is re-checked by
        :func:`crmcore.notify.consent.refusals` for the whole claim round."""
        if message.recipient is None and channel.address is not None and customer is not None \
                and getattr(customer, channel.address):
            message = attrs.evolve(message, recipient=getattr(customer, channel.address))
        missing = f"customer {message.customer_id} has no {channel.address}" if message.recipient is None \
            and channel.address and message.customer_id is not None else None
        return message, missing

    # -- reading / maintenance ---------------------------------------------
    def outbox(self, status: str | None = None, customer_id: int | None = None,
               limit: int = 100, message_id: int | None = None, channel: str | None = None,
               before_id: int | None = None) -> list[dict[str, Any]]:
        """Outbox rows, newest first, by status, customer, channel or id; ``before_id`` pages
        (the rows older than that message: give the last id of the previous page)."""
        self.crm.authorize("notify.outbox", customer_id if message_id is None else message_id)
        query = select(outbox).order_by(outbox.c.id.desc()).limit(limit)
        if message_id is not None:
            query = query.where(outbox.c.id == message_id)
        if status:
            query = query.where(outbox.c.status == status)
        if customer_id is not None:
            query = query.where(outbox.c.customer_id == customer_id)
        if channel:
            query = query.where(outbox.c.channel == channel)
        if before_id is not None:
            query = query.where(outbox.c.id < before_id)
        with self.crm.unit(readonly=True) as uow:
            return [dict(r._mapping) for r in uow.conn.execute(query)]

    def status_counts(self) -> dict[str, int]:
        """How many messages are in each status."""
        with self.crm.unit(readonly=True) as uow:
            return dict(uow.conn.execute(select(outbox.c.status, func.count()).group_by(outbox.c.status)).all())

    def retry(self, ids: list[int] | None = None, *, as_of: datetime | None = None) -> int:
        """Requeue dead messages (all, or the given ids) with fresh attempts."""
        query = update(outbox).where(outbox.c.status == "dead")
        if ids is not None:
            query = query.where(outbox.c.id.in_(ids))
        with self.crm.unit() as uow:
            self.crm.authorize("notify.retry", ids)
            return uow.conn.execute(query.values(status="pending", attempts=0, claimed_by=None,
                                                 next_attempt_at=as_of or uow.now)).rowcount


def _as_is(value: Any) -> Any:
    return value


def _sent_arrays(sent: list[tuple[_Claimed, Delivered, datetime]], dialect: Any) -> dict[str, list[Any]]:
    """The parameters of ``_SENT_ARRAYS``: one array per column, each value converted as the
    columns' own types convert it for ``_SENT`` (UTC timestamps, the JSON serializer)."""
    stamp = outbox.c.sent_at.type.dialect_impl(dialect).bind_processor(dialect) or _as_is
    as_json = outbox.c.delivery.type.dialect_impl(dialect).bind_processor(dialect) or _as_is
    return {"ids": [c.message.id for c, _, _ in sent], "tokens": [c.token for c, _, _ in sent],
            "ats": [stamp(when) for _, _, when in sent],
            "providers": [d.provider_id for _, d, _ in sent],
            "deliveries": [as_json(dict(d.details) or None) for _, d, _ in sent]}


class _Budget:
    """How many messages the dispatch may still take, shared by its workers."""

    def __init__(self, limit: int | None):
        self.left, self._lock = limit, threading.Lock()

    def take(self, most: int) -> int:
        with self._lock:
            if self.left is None:
                return most
            granted = min(most, self.left)
            self.left -= granted
            return granted

    def give_back(self, count: int) -> None:
        with self._lock:
            if self.left is not None:
                self.left += count


class _Worker:
    """One dispatcher thread: claims rounds of messages and delivers them through
    channels it opens once (and closes at the end).

    Commits: a group of up to ``send_group`` messages of one channel (1 unless
    configured) is marked ``sending`` in one transaction, together with the
    outcomes of the previous group's sent messages; then the group is sent.
    With the default group of 1 that is one commit per message and at most one
    message in doubt per thread if the process dies.
    """

    def __init__(self, engine: NotifyEngine, clock: Any, channel: str | None, budget: _Budget,
                 stop: threading.Event | None, only: Sequence[int] | None = None):
        self.engine, self.clock, self.channel, self.budget = engine, clock, channel, budget
        self.only = only
        self.stop = stop or threading.Event()
        self.counts: Counter[str] = Counter()
        self.opened: dict[str, tuple[Channel, Any]] = {}
        self.broken: dict[str, BaseException] = {}  # channels that could not open, or went down
        self.failures_in_a_row: Counter[str] = Counter()
        self.unrecorded: list[tuple[_Claimed, Delivered, datetime]] = []  # sent, outcome not committed yet
        self.refusals: dict[int, str] = {}  # message id -> why consent refuses it now
        # Read once per channel for this dispatch, not twice per message (parsing [channels.NAME]).
        self.policies: dict[str, DeliveryPolicy] = {}
        self.pacers: dict[str, Pacer | None] = {}
        self.committer: ThreadPoolExecutor | None = None  # see _send_overlapped

    def run(self) -> DispatchResult:
        skipped = claimed = 0
        try:
            while not self.stop.is_set():
                want = self.budget.take(CLAIM_BATCH)
                if want == 0:
                    break
                claims = self.engine._claim(self.clock(), want, self.channel, self.only)
                self.budget.give_back(want - len(claims))
                if not claims:
                    if self.only is not None and skipped < SKIPPED_RETRIES and self.engine._pending(self.only, self.clock()):
                        # Due messages of this batch were skipped while another transaction held them
                        # for a moment (a recovery releasing them): try again rather than leave them.
                        skipped += 1
                        self.stop.wait(0.05 * skipped)
                        continue
                    break
                self._deliver_all(claims)
                claimed += len(claims)
                if self.only is not None and claimed >= len(set(self.only)):
                    # (a delivery job) its whole batch was claimed by this thread: nothing of it is left
                    # to claim, so no further round over its rows (and no look for skipped ones).
                    break
        finally:
            self._record_sent()
            if self.committer is not None:
                self.committer.shutdown()
            for chan, _ in self.opened.values():
                chan.close()
        return DispatchResult(**self.counts)

    def _deliver_all(self, claims: list[_Claimed]) -> None:
        customers = self.engine._customers_of(claims)
        self.refusals = consent.refusals(self.engine.crm, [c.message for c in claims])  # as it stands now
        queue = list(claims)
        while queue:
            if self.stop.is_set():
                self._hand_back(queue)
                return
            group = self._next_group(queue, customers)
            if group:
                self._send_group(group, queue)

    def _next_group(self, queue: list[_Claimed], customers: dict[int, Any]) -> list[_Claimed]:
        """Take ready messages of one channel off the queue (settling those that cannot go)."""
        group: list[_Claimed] = []
        size = 1
        while queue and len(group) < size:
            if group and queue[0].message.channel != group[0].message.channel:
                break
            claimed = queue.pop(0)
            customer_id = claimed.message.customer_id
            if self._ready(claimed, customers.get(customer_id) if customer_id is not None else None):
                if not group:
                    policy = self._policy(claimed.message.channel)
                    size = 1 if policy.rate_limit else policy.send_group
                group.append(claimed)
        return group

    def _policy(self, name: str) -> DeliveryPolicy:
        policy = self.policies.get(name)
        if policy is None:
            policy = self.policies[name] = self.engine.delivery_policy(name)
        return policy

    def _ready(self, claimed: _Claimed, customer: Any) -> bool:
        """True if the message can be sent now; otherwise it is settled (dead, suppressed, retried, deferred)."""
        engine, now, message = self.engine, self.clock(), claimed.message
        if message.channel not in engine.registry:
            self._record_sent()
            engine._finish(claimed, "dead", now, error=f"channel {message.channel!r} is not enabled",
                           from_status="claimed", attempts=message.attempts)
            self.counts["dead"] += 1
            return False
        opened = self._open(claimed)
        if opened is None:
            return False
        message, missing = engine._check_now(message, opened[0], customer)
        refusal = self.refusals.get(message.id)  # crmcore.notify.consent decides (recorded decisions + policy)
        claimed.message = message
        if refusal or missing:
            self._record_sent()
            engine._finish(claimed, "suppressed" if refusal else "dead", now, error=refusal or missing,
                           from_status="claimed", recipient=message.recipient)
            self.counts["suppressed" if refusal else "dead"] += 1
            return False
        return True

    def _send_group(self, group: list[_Claimed], queue: list[_Claimed]) -> None:
        name = group[0].message.channel
        if name not in self.pacers:
            self.pacers[name] = self.engine.pacer(name)
        pacer = self.pacers[name]
        if pacer is not None:  # (groups of one) the outcome so far is committed, not held during the wait
            self._record_sent()
            pacer.wait_turn(self.stop.wait)
            if self.stop.is_set():
                self._hand_back(group + queue)
                queue.clear()
                return
        channel = self.opened[name][0] if name in self.opened else None
        if len(group) == 1 and channel is not None and type(channel).prepare is not Channel.prepare \
                and not unit_open(self.engine.crm):  # (inside a caller's unit its connection is this thread's)
            self._send_overlapped(group[0], name)
            return
        started = self._start(group)
        for index, claimed in enumerate(started):
            if self.stop.is_set() or name in self.broken:  # stopped, or the channel went down mid-group
                self._unstart(started[index:], self.broken.get(name))
                return
            channel, options = self.opened[name]
            try:
                outcome = channel.send(claimed.message, options)
            except Exception as exc:
                self._failed(claimed, exc)
                continue
            self.failures_in_a_row[name] = 0
            delivered = outcome if isinstance(outcome, Delivered) else Delivered(outcome)
            self.unrecorded.append((claimed, delivered, self.clock()))
            self.counts["sent"] += 1

    def _send_overlapped(self, claimed: _Claimed, name: str) -> None:
        """One message of a channel that sends in two steps (:meth:`Channel.prepare`).

        Its ``sending`` mark (with the outcomes recorded so far) commits in the committer thread
        while the channel prepares the message (builds it and opens the envelope: nothing is
        delivered yet); it is delivered only once the mark is durable.  So the commit's fsync
        overlaps the first half of the exchange, and a crash leaves in doubt what it did before:
        at most the one message being delivered.
        """
        channel, options = self.opened[name]
        previous, now = list(self.unrecorded), self.clock()

        def work(conn: Connection) -> list[_Claimed]:
            self.engine._record_sent(previous, conn)
            return self.engine._start_many([claimed], now, conn)

        marking = self._committer().submit(self.engine._write, work)
        try:
            prepared = channel.prepare(claimed.message, options)
        except Exception as exc:
            if self._marked(marking):  # marked sending: a failed attempt, as a failed send()
                self._failed(claimed, exc)
            return
        try:
            started = self._marked(marking)
        except BaseException:
            if prepared is not None:
                prepared.abort()
            raise
        if not started or self.stop.is_set():  # the claim was lost, or stopping: deliver nothing
            if prepared is not None:
                prepared.abort()
            if started:
                self._unstart(started, None)
            return
        try:
            outcome = prepared.finish() if prepared is not None else channel.send(claimed.message, options)
        except Exception as exc:
            self._failed(claimed, exc)
            return
        self.failures_in_a_row[name] = 0
        delivered = outcome if isinstance(outcome, Delivered) else Delivered(outcome)
        self.unrecorded.append((claimed, delivered, self.clock()))
        self.counts["sent"] += 1

    def _committer(self) -> ThreadPoolExecutor:
        """This worker's thread for the commits that overlap a send (made on first use)."""
        if self.committer is None:
            self.committer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="crm-dispatch-commit")
        return self.committer

    def _marked(self, marking: Future[list[_Claimed]]) -> list[_Claimed]:
        """Wait for an overlapped ``sending`` mark; the outcomes it recorded are no longer pending."""
        started = marking.result()
        self.unrecorded = []
        return started

    def _start(self, group: list[_Claimed]) -> list[_Claimed]:
        """Commit the sent outcomes so far and the group's ``sending`` marks together;
        returns the messages this dispatcher still held (a lost claim is skipped)."""
        previous, now = list(self.unrecorded), self.clock()

        def work(conn: Any) -> list[_Claimed]:
            self.engine._record_sent(previous, conn)
            return self.engine._start_many(group, now, conn)

        started = self.engine._write(work)
        self.unrecorded = []
        return started

    def _record_sent(self) -> None:
        if self.unrecorded:
            previous = list(self.unrecorded)
            self.engine._write(lambda conn: self.engine._record_sent(previous, conn))
            self.unrecorded = []

    def _hand_back(self, claims: list[_Claimed]) -> None:
        """Stopping: record what was sent, return never-attempted claims to pending."""
        self._record_sent()
        self.counts["deferred"] += self.engine.release(claims, None, self.clock())

    def _unstart(self, claims: list[_Claimed], error: BaseException | None) -> None:
        """Messages marked ``sending`` but never handed to the channel go back to pending
        (their attempt uncounted): nothing is in doubt about them."""
        self._record_sent()
        now = self.clock()
        reason = None if error is None else \
            f"deferred: channel {claims[0].message.channel!r} is down ({type(error).__name__}: {error})"
        for claimed in claims:
            values: dict[str, Any] = {"status": "pending", "attempts": claimed.message.attempts - 1,
                                      "claimed_at": None, "claimed_by": None}
            if reason:
                values.update(last_error=reason, next_attempt_at=now + BACKOFF_BASE)
            statement = update(outbox).where(outbox.c.id == claimed.message.id, outbox.c.status == "sending",
                                             outbox.c.claimed_by == claimed.token).values(**values)
            def defer(conn: Connection, st: Update = statement) -> int:
                return conn.execute(st).rowcount

            self.counts["deferred"] += self.engine._write(defer)

    def _open(self, claimed: _Claimed) -> tuple[Channel, Any] | None:
        """The channel, opened once for this worker; None if the message was settled
        because the channel cannot work now."""
        name = claimed.message.channel
        if name in self.opened:
            return self.opened[name]
        if name not in self.broken:
            channel = self.engine.registry.get(name)
            try:
                options = self.engine.channel_options(name)
                channel.open(options)
            except ConfigError as exc:  # the configuration is wrong: no attempt will succeed
                self.broken[name] = PermanentError(str(exc))
            except Exception as exc:  # misconfiguration or server down
                self.broken[name] = exc
            else:
                self.opened[name] = (channel, options)
                return self.opened[name]
        self._record_sent()
        error = self.broken[name]
        if isinstance(error, PermanentError):
            self.counts[self.engine._failed(claimed, error, self.clock(), from_status="claimed")] += 1
        elif self.failures_in_a_row[name] >= DOWN_AFTER:
            self._defer(claimed, error)
        else:  # a few attempts are counted, so a server that stays down ends in the dead letters
            self.failures_in_a_row[name] += 1
            # The channel could not open: a channel fault, retried, whatever exception it was.
            self.counts[self.engine._failed(claimed, error, self.clock(), from_status="claimed", permanent=False)] += 1
        return None

    def _failed(self, claimed: _Claimed, exc: BaseException) -> None:
        self._record_sent()
        name = claimed.message.channel
        self.counts[self.engine._failed(claimed, exc, self.clock())] += 1
        if not is_channel_fault(exc):  # this message's own trouble: says nothing about the channel
            return
        self.failures_in_a_row[name] += 1
        if self.failures_in_a_row[name] >= DOWN_AFTER:
            # The server looks down: the rest of this dispatch should not burn attempts on it.
            channel, _ = self.opened.pop(name)
            channel.close()
            self.broken[name] = exc

    def _defer(self, claimed: _Claimed, error: BaseException) -> None:
        now = self.clock()
        reason = f"deferred: channel {claimed.message.channel!r} is down ({type(error).__name__}: {error})"
        self.counts["deferred"] += self.engine.release([claimed], reason, now, now + BACKOFF_BASE)
