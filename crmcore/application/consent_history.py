"""The consent history: every consent decision, appended, never updated or deleted.

``consent_history`` answers "when did customer X consent to marketing, and
from which source?" for every decision, not only the latest.
``customer_consents`` is its projection: the latest decision per customer,
channel and purpose, which campaigns and the dispatcher read.  Whoever writes a
decision into ``customer_consents`` appends it here in the same transaction,
through :func:`append` (one decision) or :func:`append_many` (the bulk path:
one INSERT ... SELECT per call, no per-row loop).  Nothing in crmcore updates or
deletes a history row, and its foreign key to customers is ON DELETE RESTRICT.

It sits in the application layer so both the entity services (a flag set on a
customer) and the notify family (:mod:`crmcore.notify.consent`) can append.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, RowMapping, insert, literal, select

from ..store import tables
from ..store.bulk import ids_in

history = tables.consent_history
COLUMNS = ("customer_id", "channel", "purpose", "granted", "source", "recorded_at", "actor")


def append(conn: Connection, customer_id: int, channel: str, purpose: str, granted: bool, source: str,
           recorded_at: datetime, actor: str | None) -> None:
    """Append one decision to the history."""
    conn.execute(insert(history).values(customer_id=customer_id, channel=channel, purpose=purpose,
                                        granted=granted, source=source, recorded_at=recorded_at, actor=actor))


def append_many(conn: Connection, customer_ids: Sequence[int], channel: str, purpose: str, granted: bool,
                source: str, recorded_at: datetime, actor: str | None) -> None:
    """Append the same decision for many customers: one INSERT ... SELECT over ``customers``
    (the caller chunks ``customer_ids``; an id that is no customer appends nothing)."""
    if not customer_ids:
        return
    append_where(conn, ids_in(tables.customers.c.id, customer_ids, conn.dialect.name), channel, purpose, granted,
                 source, recorded_at, actor)


def append_where(conn: Connection, where: Any, channel: str, purpose: str, granted: bool, source: str,
                 recorded_at: datetime, actor: str | None) -> None:
    """Append the same decision for each customer ``where`` selects (a condition on ``customers``),
    in id order: one INSERT ... SELECT."""
    customers = tables.customers

    def value(name: str, v: Any) -> Any:  # typed literals: a NULL actor or a UTC time bind correctly
        return literal(v, history.c[name].type)

    rows = select(customers.c.id, value("channel", channel), value("purpose", purpose), value("granted", granted),
                  value("source", source), value("recorded_at", recorded_at), value("actor", actor)).where(
        where).order_by(customers.c.id)
    conn.execute(insert(history).from_select(list(COLUMNS), rows))


def read(conn: Connection, customer_id: int) -> list[RowMapping]:
    """Every decision of a customer, oldest first (by recording order)."""
    query = select(*(history.c[c] for c in COLUMNS)).where(history.c.customer_id == customer_id).order_by(
        history.c.id)
    return list(conn.execute(query).mappings())
