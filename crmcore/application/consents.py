"""Consent decisions and the customer's ``consent_marketing`` flag: one source of truth.

The flag is a view of one decision: **``consent_marketing`` is the standing
marketing decision for every channel (``"*"``)**: true when it grants,
false when it withdraws or when there is none.  So

* recording a ``"*"`` marketing decision (``crm customer unsubscribe``, an
  unsubscribe link, ``set_consent``) sets the flag in the same transaction;
* setting the flag (``customer add --consent-marketing``, ``update``, an
  import, ``crm.customers.add_many``) records a ``"*"`` marketing decision
  with its source, in the same transaction.  A new customer without the flag
  records nothing: no decision and false mean the same.

A decision for one channel (``mail``) leaves the flag alone: campaigns and
the dispatcher honour it through :func:`crmcore.notify.consent.refusal_column`,
the one rule for "may we send marketing to X on channel C".

The source comes from :func:`decisions_from` (``cli`` for the command line,
``import`` for imports); otherwise it is ``api``.  This module sits in the
application layer so the entity services can record decisions; the notify
family's :mod:`crmcore.notify.consent` records through it too.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import ARRAY, Integer, and_, cast, exists, func, literal, select, update
from sqlalchemy.types import NullType

from ..store import tables
from ..store.bulk import ids_in, pg_array_text
from ..store.upsert import insert_ignore
from . import consent_history

if TYPE_CHECKING:
    from .uow import UnitOfWork

consents = tables.customer_consents
customers = tables.customers
EVERY_CHANNEL = "*"
MARKETING = "marketing"
#: Customers per statement on the bulk path.
CHUNK = 5000

_source: ContextVar[str] = ContextVar("crm_consent_source", default="api")


@contextmanager
def decisions_from(source: str) -> Iterator[None]:
    """Decisions recorded inside the block because a flag was set say they came from ``source``."""
    token = _source.set(source)
    try:
        yield
    finally:
        _source.reset(token)


def current_source() -> str:
    """Where a flag change recorded now comes from (``api`` unless :func:`decisions_from` says)."""
    return _source.get()


def write_decision(uow: UnitOfWork, customer_id: int, granted: bool, channel: str, purpose: str, source: str,
                   recorded_at: datetime) -> None:
    """Store a decision (appended to the history, and the latest per customer, channel and
    purpose in ``customer_consents``) and, for marketing on every channel, set the customer's
    flag: all in ``uow``'s transaction."""
    values = {"granted": granted, "source": source, "recorded_at": recorded_at, "actor": uow.actor}
    key = and_(consents.c.customer_id == customer_id, consents.c.channel == channel, consents.c.purpose == purpose)
    # Update, else insert-if-absent, else update again: two concurrent decisions never collide.
    updated = uow.conn.execute(update(consents).where(key).values(values)).rowcount
    row = {"customer_id": customer_id, "channel": channel, "purpose": purpose, **values}
    if not updated and not insert_ignore(uow.conn, consents, row):
        uow.conn.execute(update(consents).where(key).values(values))
    uow.audit.record("consent.record", "consent", f"{channel}/{purpose}", customer_id=customer_id, values=values)
    # customer_consents holds only the latest per key; the history keeps every decision.
    consent_history.append(uow.conn, customer_id, channel, purpose, granted, source, recorded_at, uow.actor)
    if channel == EVERY_CHANNEL and purpose == MARKETING:
        uow.conn.execute(update(customers).where(customers.c.id == customer_id,
                                                  customers.c.consent_marketing != granted).values(
            consent_marketing=granted, updated_at=uow.now))


def flag_set(uow: UnitOfWork, customer_id: int, granted: bool, previous: bool | None) -> None:
    """The flag of one customer was set (``previous``: None for a new customer): record the decision."""
    if granted != bool(previous):
        write_decision(uow, customer_id, granted, EVERY_CHANNEL, MARKETING, current_source(), uow.now)


def flags_set(uow: UnitOfWork, granted_ids: Sequence[int], withdrawn_ids: Sequence[int] = ()) -> None:
    """The bulk path (imports, ``add_many``): record the ``"*"`` marketing decision of many
    customers whose flag was just set, one UPDATE and two INSERT ... SELECT (the current
    state and the history) per chunk."""
    for granted, ids in ((True, granted_ids), (False, withdrawn_ids)):
        for start in range(0, len(ids), CHUNK):
            _record_chunk(uow, list(ids[start:start + CHUNK]), granted)


def new_flags_set(uow: UnitOfWork, first: int, last: int) -> None:
    """:func:`flags_set` for the customers with ids ``first`` to ``last``, every one of them just
    inserted (a bulk insert's consecutive ids): the decisions of those whose flag is set, selected
    from the rows themselves, in two INSERT ... SELECT (no id list sent, no UPDATE).

    A new customer has no stored decision to update or to skip: a decision's foreign key
    restricts deleting its customer, so no id that was free holds one.  The records are those
    :func:`flags_set` writes for the ids whose flag is set (same values, history in id order).
    """
    source, now, actor = current_source(), uow.now, uow.actor
    chosen = and_(customers.c.id.between(first, last), customers.c.consent_marketing.is_(True))
    rows = select(customers.c.id, literal(EVERY_CHANNEL), literal(MARKETING), literal(True), literal(source),
                  literal(now, consents.c.recorded_at.type), literal(actor, consents.c.actor.type)).where(chosen)
    uow.conn.execute(consents.insert().from_select(
        ["customer_id", "channel", "purpose", "granted", "source", "recorded_at", "actor"], rows))
    consent_history.append_where(uow.conn, chosen, EVERY_CHANNEL, MARKETING, True, source, now, actor)


def new_ids_flags_set(uow: UnitOfWork, ids: Sequence[int]) -> None:
    """:func:`flags_set` for customers just inserted, every one of ``ids`` with its flag set
    (PostgreSQL: a bulk insert's ids drawn from the sequence), in one statement per chunk.

    As in :func:`new_flags_set`, a new customer has no stored decision to update or to
    skip, so the current state is a plain INSERT (no ``ON CONFLICT``) and neither insert
    looks the ids up in ``customers`` (the foreign keys still check each); both read the ids
    from one array parameter, in a data-modifying ``WITH`` (one round trip, the array read
    once).  The records are those :func:`flags_set` writes for ``ids`` (same values,
    history in id order).  Any other database: :func:`flags_set`.
    """
    if uow.conn.dialect.name != "postgresql":
        flags_set(uow, ids)
        return
    source, now, actor = current_source(), uow.now, uow.actor
    names = list(consent_history.COLUMNS)
    for start in range(0, len(ids), CHUNK):
        chunk = [int(i) for i in ids[start:start + CHUNK]]
        # The array's text, untyped (as bulk.any_of): read once by the server, not bound per element.
        chosen = select(func.unnest(cast(literal(pg_array_text(chunk), NullType()), ARRAY(Integer))).label("id")
                        ).cte("chosen")

        def rows(table: Any) -> Any:
            c = table.c
            return select(chosen.c.id, literal(EVERY_CHANNEL, c.channel.type), literal(MARKETING, c.purpose.type),
                          literal(True, c.granted.type), literal(source, c.source.type),
                          literal(now, c.recorded_at.type), literal(actor, c.actor.type))
        decisions = consents.insert().from_select(names, rows(consents)).cte("decisions")
        uow.conn.execute(consent_history.history.insert().from_select(
            names, rows(consent_history.history).order_by(chosen.c.id)).add_cte(decisions))


def _record_chunk(uow: UnitOfWork, ids: list[int], granted: bool) -> None:
    values = {"granted": granted, "source": current_source(), "recorded_at": uow.now, "actor": uow.actor}
    mine = and_(consents.c.channel == EVERY_CHANNEL, consents.c.purpose == MARKETING)
    dialect = uow.conn.dialect.name
    if dialect == "postgresql":
        _upsert_chunk(uow, ids, granted, values)
        return
    uow.conn.execute(update(consents).where(ids_in(consents.c.customer_id, ids, dialect), mine).values(values))
    stored = exists().where(consents.c.customer_id == customers.c.id, mine)
    source = select(customers.c.id, literal(EVERY_CHANNEL), literal(MARKETING), literal(granted),
                    literal(values["source"]), literal(uow.now, consents.c.recorded_at.type),
                    literal(uow.actor, consents.c.actor.type)).where(ids_in(customers.c.id, ids, dialect), ~stored)
    uow.conn.execute(consents.insert().from_select(
        ["customer_id", "channel", "purpose", "granted", "source", "recorded_at", "actor"], source))
    consent_history.append_many(uow.conn, ids, EVERY_CHANNEL, MARKETING, granted, current_source(), uow.now,
                                uow.actor)


def _upsert_chunk(uow: UnitOfWork, ids: list[int], granted: bool, values: dict[str, Any]) -> None:
    """:func:`_record_chunk` on PostgreSQL: the current state in one ``INSERT ... ON CONFLICT DO
    UPDATE`` (the update of the stored decisions and the insert of the missing ones together).

    The portable form's ``NOT EXISTS`` is planned from the statistics of the table before the
    transaction (an import's: empty), as a nested loop that scans every decision recorded so
    far for each customer of the chunk: quadratic in the import's size (100,000 customers,
    20 chunks: 21 s of a 47 s import).  The upsert checks each customer against the primary
    key's index; an id that is no customer still records nothing (the rows come from
    ``customers``), and a concurrent decision for the same customer is overwritten by this
    one, as the portable form's UPDATE does.
    """
    from sqlalchemy.dialects.postgresql import insert as pg_insert

    names = ["customer_id", "channel", "purpose", "granted", "source", "recorded_at", "actor"]
    source = select(customers.c.id, literal(EVERY_CHANNEL), literal(MARKETING), literal(granted),
                    literal(values["source"]), literal(uow.now, consents.c.recorded_at.type),
                    literal(uow.actor, consents.c.actor.type)).where(ids_in(customers.c.id, ids, "postgresql"))
    statement = pg_insert(consents).from_select(names, source)
    statement = statement.on_conflict_do_update(
        index_elements=[consents.c.customer_id, consents.c.channel, consents.c.purpose],
        set_={name: statement.excluded[name] for name in ("granted", "source", "recorded_at", "actor")})
    uow.conn.execute(statement)
    consent_history.append_many(uow.conn, ids, EVERY_CHANNEL, MARKETING, granted, current_source(), uow.now,
                                uow.actor)
