"""The audit trail: who changed what, appended in the writing transaction, hash-chained.

A use case records what it wrote through ``uow.audit`` (one call per write
site; bulk paths one record per batch with the row ids).  The records are
buffered in the unit of work and appended when it commits, in the same
transaction, so a rolled-back change leaves no record and a committed one
always has its record.

Why a chain, and why a lock row: each record carries the hash of the one before
it (``prev_hash``) and a hash over its own content and ``prev_hash``, so an
edited record no longer matches its hash and a deleted one breaks the link of
its successor (or leaves ``audit_head`` pointing past the last record).  Two
transactions appending at once must not both chain to the same predecessor:
the appending transaction locks the one ``audit_head`` row (``SELECT ... FOR
UPDATE`` on PostgreSQL and MariaDB; SQLite's write transactions are already
serialised by ``BEGIN IMMEDIATE``), reads the tip, writes its records and moves
the tip, so commits append in order.  The lock is taken only at commit time, for
one small statement batch, so writers queue for milliseconds, not for their whole
use case.
"""

from __future__ import annotations

import enum
import hashlib
import json
from collections.abc import Iterable, Iterator, Mapping, Sequence
from datetime import date, datetime, timezone
from decimal import Decimal
from typing import TYPE_CHECKING, Any

import attrs
from sqlalchemy import Connection, bindparam, insert, select, update

from ..domain.convert import unstructure
from ..store import direct
from ..store.intlist import IntList, int_list_json
from ..store.sealed import open_changes, seal_changes
from ..store.tables import audit_head, audit_log

if TYPE_CHECKING:
    from .uow import UnitOfWork

#: The ``prev_hash`` of the first record.
GENESIS = "0" * 64


@attrs.frozen
class AuditRecord:
    """One entry of the audit trail.

    :ivar seq: the position in the chain (1, 2, ...; no gaps).
    :ivar changes: ``{field: [before, after]}`` (a create has ``before`` None, a delete ``after`` None).
    :ivar ids: the row ids of a batch record (imports, bulk jobs), else None.
    """

    seq: int
    recorded_at: datetime
    actor: str
    action: str
    entity: str
    entity_id: str | None
    customer_id: int | None
    ids: list[Any] | None
    changes: dict[str, Any] | None
    prev_hash: str
    hash: str

    def as_dict(self) -> dict[str, Any]:
        """The record as JSON-ready values."""
        return {**attrs.asdict(self), "recorded_at": self.recorded_at.isoformat()}


#: Types that are JSON data as they are (exactly these classes: a subclass, an enum of str, is not).
_PLAIN = frozenset((str, int, float, bool))


def jsonable(value: Any) -> Any:
    """``value`` as plain JSON data: Decimals and times as text, enums as their value."""
    if value is None or value.__class__ in _PLAIN:  # most values: no isinstance chain (Mapping's is slow)
        return value
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, (datetime, date)):
        return value.isoformat()
    if isinstance(value, enum.Enum):
        return jsonable(value.value)
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if value.__class__ is IntList:  # checked already (a copy: the caller may change its list)
        return IntList(value)
    if isinstance(value, (list, tuple, set, frozenset)):
        if value.__class__ is list and all(v.__class__ is int for v in value):
            return IntList(value)  # a batch's row ids: what the loop below gives, without a call per id
        return [jsonable(v) for v in value]
    return value


def diff(before: Any, after: Any) -> dict[str, list[Any]]:
    """The changed fields of two versions of an entity (either may be None): ``{field: [old, new]}``."""
    old = unstructure(before) if before is not None else {}
    new = unstructure(after) if after is not None else {}
    skip = {"updated_at", "created_at"} if before is not None and after is not None else set()
    changed = {}
    for key in sorted(old.keys() | new.keys()):
        a, b = old.get(key), new.get(key)
        # One object on both sides (an update keeps the fields it does not change) is one JSON
        # value: only the others are converted and compared, as JSON (Decimal 1.0 vs 1.00 differs).
        if key in skip or a is b:
            continue
        a, b = jsonable(a), jsonable(b)
        if a != b:
            changed[key] = [a, b]
    return changed


def record_hash(prev_hash: str, seq: int, recorded_at: datetime, actor: str, action: str, entity: str,
                entity_id: str | None, customer_id: int | None, ids: Any, changes: Any) -> str:
    """The SHA-256 of a record's content and its predecessor's hash (canonical JSON)."""
    head = [prev_hash, seq, recorded_at.isoformat(), actor, action, entity, entity_id, customer_id]
    ids_text = int_list_json(ids) if ids.__class__ is IntList else None
    if ids_text is not None:
        # A batch's row ids (a job's 100,000): orjson writes a list of ints as the canonical form
        # below does, at a tenth of json's time.  The content is the same text either way.
        text = _canonical(head)[:-1] + "," + ids_text + "," + _canonical([changes])[1:]
    else:
        text = _canonical([*head, ids, changes])
    return hashlib.sha256(text.encode()).hexdigest()


def _canonical(value: Any) -> str:
    """The hash's JSON form: sorted keys, no spaces, ASCII only."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True)


class AuditTrail:
    """The audit records of one unit of work (``uow.audit``), appended when it commits."""

    def __init__(self, uow: "UnitOfWork"):
        self.uow = uow
        self.pending: list[dict[str, Any]] = []

    # -- recording ----------------------------------------------------------------
    def record(self, action: str, entity: str, entity_id: Any = None, *, customer_id: int | None = None,
               changes: Mapping[str, Any] | None = None, values: Mapping[str, Any] | None = None,
               ids: Iterable[Any] | None = None) -> None:
        """Record one write: ``action`` (``customer.create``, ``ledger.earn``, ...) on ``entity``
        ``entity_id``, with the changed fields (``{field: [before, after]}``, or the ``values`` of
        a new row) and/or a batch's row ids."""
        if values is not None:
            changes = {key: [None, value] for key, value in values.items() if value is not None}
        if changes is not None:
            changes = seal_changes(self.uow.conn.dialect, jsonable(dict(changes)))
        self.pending.append({
            "actor": self.uow.actor, "action": action, "entity": entity,
            "entity_id": None if entity_id is None else str(entity_id), "customer_id": customer_id,
            "ids": None if ids is None else jsonable(ids if ids.__class__ is IntList else list(ids)),
            # (JSON data already: jsonable above, and sealing puts only texts in it)
            "changes": None if changes is None else dict(changes),
        })

    def created(self, kind: str, entity: Any) -> None:
        """Record that ``entity`` (a customer, contact, interaction, deal, ...) was created."""
        self.record(f"{kind}.create", kind, entity.id, customer_id=_customer_of(kind, entity),
                    changes=diff(None, entity))

    def updated(self, kind: str, entity: Any, previous: Any, action: str | None = None) -> None:
        """Record an update (only the changed fields; nothing when nothing changed)."""
        changes = diff(previous, entity)
        if changes:
            self.record(action or f"{kind}.update", kind, entity.id,
                        customer_id=_customer_of(kind, entity), changes=changes)

    def deleted(self, kind: str, entity: Any, action: str | None = None) -> None:
        """Record that ``entity`` was deleted (every field's last value as ``before``); ``action``
        defaults to ``KIND.delete`` (a purge says ``KIND.purge``)."""
        self.record(action or f"{kind}.delete", kind, entity.id, customer_id=_customer_of(kind, entity),
                    changes=diff(entity, None))

    def batch(self, action: str, entity: str, ids: Sequence[Any], **details: Any) -> None:
        """Record a bulk write as one record with the row ids (imports, segment runs, jobs)."""
        if ids or details:
            self.record(action, entity, ids=ids, changes=details or None)

    def batch_where(self, action: str, entity: str, id_column: Any, *where: Any, **details: Any) -> None:
        """A batch record for rows written set-based (``INSERT ... SELECT``): their ids, selected by ``where``."""
        self.batch(action, entity, self.uow.conn.execute(select(id_column).where(*where)
                                                         .order_by(id_column)).scalars().all(), **details)

    # -- appending (the CRM calls it before committing the unit) -----------------
    def flush(self) -> None:
        """Append the pending records to the chain, inside the unit's transaction."""
        if not self.pending:
            return
        conn, pending, self.pending = self.uow.conn, self.pending, []
        seq, prev = direct.run(conn, _HEAD, _HEAD_ROW).one()
        rows, now = [], self.uow.now.astimezone(timezone.utc)
        for item in pending:
            seq += 1
            row = {**item, "seq": seq, "recorded_at": now, "prev_hash": prev}
            prev = row["hash"] = record_hash(prev, seq, now, item["actor"], item["action"],
                                             item["entity"], item["entity_id"], item["customer_id"],
                                             item["ids"], item["changes"])
            rows.append(row)
        direct.run(conn, _APPEND, rows[0] if len(rows) == 1 else rows)
        direct.run(conn, _SET_HEAD, {"h_seq": seq, "h_hash": prev})


# Built once (every writing unit of work runs them): statements with bound values only.
_HEAD = select(audit_head.c.seq, audit_head.c.hash).where(audit_head.c.id == bindparam("h_id")).with_for_update()
_HEAD_ROW = {"h_id": 1}
_APPEND = insert(audit_log)
_SET_HEAD = update(audit_head).where(audit_head.c.id == 1).values(seq=bindparam("h_seq"), hash=bindparam("h_hash"))


def _customer_of(kind: str, entity: Any) -> int | None:
    return entity.id if kind == "customer" else getattr(entity, "customer_id", None)


# -- reading and verifying ---------------------------------------------------------

def records(conn: Connection, *, customer_id: int | None = None, actor: str | None = None,
            since: datetime | None = None, limit: int | None = None) -> list[AuditRecord]:
    """Audit records, oldest first, filtered by customer, actor and time (SQL, not Python)."""
    query = select(audit_log).order_by(audit_log.c.seq)
    if customer_id is not None:
        query = query.where(audit_log.c.customer_id == customer_id)
    if actor is not None:
        query = query.where(audit_log.c.actor == actor)
    if since is not None:
        query = query.where(audit_log.c.recorded_at >= since)
    if limit is not None:
        query = query.order_by(None).order_by(audit_log.c.seq.desc()).limit(limit)
    found = [AuditRecord(**{**row, "changes": open_changes(conn.dialect, row["changes"])})
             for row in conn.execute(query).mappings()]
    return sorted(found, key=lambda r: r.seq)


@attrs.frozen
class Verification:
    """What :func:`verify` found: ``ok``, how many records it checked, the tip's hash, the problems."""

    ok: bool
    checked: int
    head_hash: str
    problems: tuple[str, ...]


def verify(conn: Connection, batch: int = 5000) -> Verification:
    """Recompute the chain: every hash, every link, no gap, and the tip equal to the last record.

    Streams the log in ``seq`` order (memory flat in its size).
    """
    problems: list[str] = []
    expected_seq, prev = 1, GENESIS
    redacted = _redactions(conn)
    for record in _stream(conn, batch):
        if record.seq != expected_seq:
            problems.append(f"records {expected_seq}..{record.seq - 1} are missing (deleted)")
        elif record.prev_hash != prev:
            problems.append(f"record {record.seq}: does not follow record {record.seq - 1} "
                            f"(it was edited or one was removed)")
        again = record_hash(record.prev_hash, record.seq, record.recorded_at, record.actor, record.action,
                            record.entity, record.entity_id, record.customer_id, record.ids, record.changes)
        # A record an erasure redacted keeps its hash (its successor's link); its new content
        # matches the hash the erasure's own record lists (crmcore.application.privacy_erase).
        if again != redacted.get(record.seq, record.hash):
            problems.append(f"record {record.seq} ({record.action} {record.entity} {record.entity_id or ''}"
                            f"): its content does not match its hash (edited)")
        expected_seq, prev = record.seq + 1, record.hash
    seq, head = conn.execute(select(audit_head.c.seq, audit_head.c.hash).where(audit_head.c.id == 1)).one()
    if seq != expected_seq - 1 or head != prev:
        problems.append(f"the chain's tip is record {seq}, the last record is {expected_seq - 1} "
                        f"(records at the end were deleted)")
    return Verification(not problems, expected_seq - 1, head, tuple(problems))


def _redactions(conn: Connection) -> dict[int, str]:
    """``{seq: hash of the rewritten content}`` from every erasure (``customer.erase``), key
    rotation (``privacy.rotate-key``) and retention (``privacy.retention``) record; a later rewrite of a record wins."""
    found: dict[int, str] = {}
    for changes in conn.execute(select(audit_log.c.changes)
                                .where(audit_log.c.action.in_(("customer.erase", "privacy.rotate-key",
                                                                             "privacy.retention")))
                                .order_by(audit_log.c.seq)).scalars():
        listed = (changes or {}).get("redacted") or [None, None]
        for seq, digest in (listed[1] or {}).items():
            found[int(seq)] = digest
    return found


def _stream(conn: Connection, batch: int) -> Iterator[AuditRecord]:
    after = 0
    while True:
        rows = conn.execute(select(audit_log).where(audit_log.c.seq > after)
                            .order_by(audit_log.c.seq).limit(batch)).mappings().all()
        if not rows:
            return
        for row in rows:
            yield AuditRecord(**row)
        after = rows[-1]["seq"]
