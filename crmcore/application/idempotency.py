"""Idempotency keys: a retried create returns the first result, never a second record.

An interface (the HTTP API's ``Idempotency-Key`` header) runs the create and
:func:`remember` in one unit of work: the key row commits with the record it
made, or neither does.  Two requests with the same key at once: the second
one's insert waits on the first's primary-key lock (PostgreSQL, MariaDB) or on
the write lock (SQLite), then fails as a duplicate, and :func:`recall` returns
the first response.  The key belongs to the acting user, so one user cannot
read another's responses by guessing keys.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import attrs
from sqlalchemy import insert, select
from sqlalchemy.exc import IntegrityError

from ..domain.errors import CRMError, ValidationError
from ..store.sealed import open_tree, seal_tree
from ..store.tables import idempotency_keys

if TYPE_CHECKING:
    from ..app import CRM
    from .uow import UnitOfWork

#: The longest key accepted (the column's size).
MAX_KEY = 200


class KeyReused(CRMError):
    """An idempotency key sent again with a different request (another path or body)."""

    def __init__(self, key: str, scope: str):
        self.key, self.scope = key, scope
        super().__init__(f"idempotency key {key!r} was first used for another request ({scope}); "
                         f"send a new key for a new request")


@attrs.frozen
class StoredResponse:
    """The first response made under an idempotency key."""

    status: int
    body: Any


def request_hash(body: Any) -> str:
    """A stable hash of a request body (JSON data), to tell a retry from a different request."""
    text = json.dumps(body, sort_keys=True, separators=(",", ":"), default=str, ensure_ascii=True)
    return hashlib.sha256(text.encode()).hexdigest()


def recall(uow: "UnitOfWork", key: str, scope: str, digest: str) -> StoredResponse | None:
    """The response stored under the acting user's ``key``, if any; :class:`KeyReused` when the key
    was used for a different request."""
    row = uow.conn.execute(select(idempotency_keys.c.scope, idempotency_keys.c.request_hash,
                                  idempotency_keys.c.status, idempotency_keys.c.response)
                           .where(idempotency_keys.c.actor == uow.actor, idempotency_keys.c.key == key)).first()
    if row is None:
        return None
    if row.scope != scope or row.request_hash != digest:
        raise KeyReused(key, row.scope)
    return StoredResponse(row.status, open_tree(uow.conn.dialect, row.response))


def remember(uow: "UnitOfWork", key: str, scope: str, digest: str, status: int, body: Any) -> None:
    """Store the response of the request made under ``key`` in ``uow`` (commits with it).  A
    concurrent request with the same key makes this insert fail as a duplicate key."""
    uow.conn.execute(insert(idempotency_keys).values(actor=uow.actor, key=key, scope=scope, request_hash=digest,
                                                     status=status, response=seal_tree(uow.conn.dialect, body),
                                                     created_at=uow.now))


def once(crm: "CRM", key: str, scope: str, digest: str, work: Callable[[], tuple[int, Any]],
         prepare: Callable[["UnitOfWork"], None] | None = None) -> tuple[StoredResponse, bool]:
    """Run ``work`` (a use case returning ``(status, JSON body)``) at most once per acting user and
    ``key``: returns the response and whether it is a replay of an earlier one.  ``prepare(uow)``,
    when given, runs first in the unit, before the key is read (a lead capture's door locks, which
    must come before the unit's first read on MariaDB).

    ``work`` runs in the unit of work that stores the key, so both commit or neither.  A concurrent
    request that made the same key first wins: this one's transaction (and whatever ``work``
    wrote in it) rolls back on the duplicate key, and its first response is returned.
    """
    if not key or len(key) > MAX_KEY:
        raise ValidationError.single("Idempotency-Key", f"1 to {MAX_KEY} characters")
    try:
        with crm.unit() as uow:
            if prepare is not None:
                prepare(uow)
            stored = recall(uow, key, scope, digest)
            if stored is not None:
                return stored, True
            status, body = work()
            remember(uow, key, scope, digest, status, body)
            return StoredResponse(status, body), False
    except (IntegrityError, CRMError):
        # A concurrent request with this key may have committed first: its unique values (the key,
        # an external id) then made this one fail, and its response is the answer.
        with crm.unit(readonly=True) as uow:
            stored = recall(uow, key, scope, digest)
        if stored is None:
            raise  # a failure of this request's own (invalid input, another constraint)
        return stored, True
