"""Erasure: remove or irreversibly anonymise one person's data everywhere, keep the books.

The one sanctioned exception to "history is append-only" (docs/privacy.md): the outbox
bodies, ledger reasons and audit values about the person are rewritten here, and nowhere
else.  What the books need stays, anonymous: deal amounts, currencies, stages and dates,
ledger points, consent decisions (granted or not, when), interaction kinds and times, so
every report total is the same before and after.

The audit trail stays verifiable: a redacted record keeps its original ``hash`` (the link
its successor names), and the erasure's own audit record, appended to the chain, lists the
hash of each redacted record's new content (``redacted``); :func:`crmcore.application.audit.verify`
checks a redacted record against that hash instead.
"""

from __future__ import annotations

import re

import json
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from sqlalchemy import Text, cast, delete, insert, or_, select, update

from ..domain.entities import Customer
from ..store.tables import (
    audit_log,
    contacts,
    customer_merges,
    customers,
    deals,
    idempotency_keys,
    interactions,
    loyalty_ledger,
    notify_outbox,
    privacy_erasures,
    segment_memberships,
    tasks,
)
from ..store.sealed import cipher_of, reseal_tree
from .audit import record_hash
from .privacy_files import WHOLE_ONLY, matches

if TYPE_CHECKING:
    from .uow import UnitOfWork

#: What an erased text value becomes in the audit trail.
ERASED = "[erased]"
#: The name an erased customer keeps (the column is required); the id stays.
ERASED_NAME = "(erased)"
#: The title an erased customer's deals keep.
ERASED_TITLE = "(erased)"
#: The action of the erasure's audit record.
ACTION = "customer.erase"
# Audit fields whose values are no personal data and that the books may need.
_KEEP = frozenset({
    "id", "customer_id", "contact_id", "deal_id", "kind", "direction", "channel", "amount", "currency",
    "pipeline", "stage", "probability", "expected_close", "closed_at", "occurred_at", "created_at",
    "updated_at", "archived_at", "satisfaction", "points", "scheme", "purpose", "granted", "status",
    "consent_email", "consent_sms", "consent_marketing", "owner", "country", "region", "industry", "source",
    "interaction_id", "assignee", "due", "priority", "completed_at",
})
# Outbox messages that wait must not go out to an erased person.
_WAITING = ("pending", "claimed")


def distinctive_values(uow: "UnitOfWork", customer: Customer) -> tuple[str, ...]:
    """The person's values to look for: name, email, phone, external id and those of their
    contacts.  Values of 2 or 3 characters (张伟) are kept but matched as whole cells or whole
    JSON values only (:func:`crmcore.application.privacy_files.matches`); single characters
    are dropped (they identify nobody)."""
    found = [customer.name, customer.email, customer.phone, customer.external_id]
    for row in uow.conn.execute(select(contacts.c.name, contacts.c.email, contacts.c.phone, contacts.c.external_id)
                                .where(contacts.c.customer_id == customer.id)):
        found.extend(row)
    values = {v.strip() for v in found if isinstance(v, str) and len(v.strip()) >= 2 and v != ERASED_NAME}
    return tuple(sorted(values))


def erase_rows(uow: "UnitOfWork", customer: Customer, values: tuple[str, ...], first: bool) -> dict[str, int]:
    """Anonymise the core tables' rows about ``customer``; returns the rows changed per table.

    ``first``: the person was not erased before.  Checking again writes the same values and
    keeps the rows' ``updated_at``, so a second run leaves the database as the first left it.
    """
    conn, cid = uow.conn, customer.id
    stamp = {"updated_at": uow.now} if first else {}
    counts: dict[str, int] = {}

    def run(name: str, statement: Any) -> None:
        counts[name] = counts.get(name, 0) + (conn.execute(statement).rowcount or 0)

    run("interactions", update(interactions).where(interactions.c.customer_id == cid).values(
        contact_id=None, subject=None, body=None, outcome=None, attributes={}, external_id=None, **stamp))
    _erase_reminder_lines(conn, [int(i) for i in conn.execute(select(tasks.c.id).where(tasks.c.customer_id == cid))
                                 .scalars()], run)
    run("tasks", update(tasks).where(tasks.c.customer_id == cid).values(
        title=ERASED_TITLE, notes=None, attributes={}, external_id=None, **stamp))
    run("contacts", delete(contacts).where(contacts.c.customer_id == cid))
    run("deals", update(deals).where(deals.c.customer_id == cid).values(
        title=ERASED_TITLE, lost_reason=None, attributes={}, external_id=None, **stamp))
    run("loyalty_ledger", update(loyalty_ledger).where(loyalty_ledger.c.customer_id == cid).values(
        reason=None, details=None))
    run("segment_memberships", update(segment_memberships).where(segment_memberships.c.customer_id == cid)
        .values(details=None))
    mine = [notify_outbox.c.customer_id == cid]
    if values:
        mine.append(notify_outbox.c.recipient.in_(values))
    run("messages", update(notify_outbox).where(or_(*mine), notify_outbox.c.status.in_(_WAITING))
        .values(status="suppressed", last_error="recipient erased"))
    run("messages", update(notify_outbox).where(or_(*mine)).values(
        recipient=None, subject=None, body=None, payload={}, delivery=None,
        last_error=ERASED))
    if values:
        run("idempotency_keys", delete(idempotency_keys).where(
            or_(*_mentions(idempotency_keys.c.response, values, conn.dialect))))
    run("customers", update(customers).where(customers.c.id == cid).values(
        name=ERASED_NAME, email=None, phone=None, city=None, birthday=None, tags=[], attributes={},
        external_id=None, consent_email=False, consent_sms=False, consent_marketing=False,
        archived_at=customer.archived_at or uow.now, **stamp))
    return {name: n for name, n in counts.items() if n}


def _erase_reminder_lines(conn: Any, task_ids: list[int], run: Any) -> None:
    """Task reminders (``crm task remind``: one message per assignee and day, not the customer's)
    list task titles: the lines of this customer's tasks become ``- #ID (erased)``."""
    if not task_ids:
        return
    wanted = set(task_ids)
    line = re.compile(r"^- #(\d+) .*$", re.M)
    rows = conn.execute(select(notify_outbox.c.id, notify_outbox.c.body, notify_outbox.c.payload).where(
        notify_outbox.c.idempotency_key.like("task-remind:%"))).all()
    for message_id, body, payload in rows:
        listed = set((payload or {}).get("tasks") or ())
        if not listed & wanted or not body:
            continue
        rewritten = line.sub(lambda m: f"- #{m.group(1)} {ERASED_TITLE}" if int(m.group(1)) in wanted else m.group(0),
                             body)
        run("messages", update(notify_outbox).where(notify_outbox.c.id == message_id).values(body=rewritten))


def _mentions(column: Any, values: Iterable[str], dialect: Any = None) -> list[Any]:
    """``column`` (JSON) as text contains one of ``values``, as written or as JSON escapes it
    (a short value: as a whole JSON string, quotes included), or (encryption on) sealed: the
    value's blind index in any sealed field under any listed key."""
    found = []
    cipher = cipher_of(dialect) if dialect is not None else None
    for value in values:
        forms = {value, json.dumps(value)[1:-1]}
        if len(value) < WHOLE_ONLY:
            forms = {f'"{form}"' for form in forms}
        if cipher is not None:
            forms |= {cipher.prefix(field, value, key) + "$" for field in {*cipher.fields, "recipient"}
                      for key in range(cipher.key_count)}
        for form in forms:
            pattern = "%" + form.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
            found.append(cast(column, Text).like(pattern, escape="\\"))
    return found


def redact_audit(uow: "UnitOfWork", customer_ids: Iterable[int], values: tuple[str, ...]) -> dict[str, str]:
    """Replace the personal values in the audit records about the person (``customer_ids``: the
    customer and those merged into it); returns ``{seq: hash of the redacted content}`` for the
    records that changed.  A merge's record elsewhere (the person merged into another customer)
    loses the person's whole before-state."""
    conn = uow.conn
    ids = sorted(set(customer_ids))
    about = [audit_log.c.customer_id.in_(ids), *_mentions(audit_log.c.changes, values, conn.dialect)]
    query = select(audit_log).where(or_(*about), audit_log.c.action != ACTION).order_by(audit_log.c.seq)
    redacted: dict[str, str] = {}
    found = values + sealed_forms(conn.dialect, values)
    for row in conn.execute(query).mappings().all():
        changes = _redact(row["changes"], found, row["customer_id"] in ids)
        if row["action"] == "customer.merge" and isinstance(changes, Mapping):
            changes = {**changes, "before": _redact_before(changes.get("before"), ids, found)}
        _rewrite(conn, row, changes, redacted)
    return redacted


def sealed_forms(dialect: Any, values: tuple[str, ...]) -> tuple[str, ...]:
    """With encryption on, what the sealed forms of ``values`` start with (``$e1$`` and the blind
    index, in every sealed field under every listed key): how a sealed copy of a value is found."""
    cipher = cipher_of(dialect)
    if cipher is None:
        return ()
    return tuple(sorted({cipher.prefix(field, value, key) + "$" for value in values
                         for field in {*cipher.fields, "recipient"} for key in range(cipher.key_count)}))


def _redact_before(pair: Any, ids: list[int], values: tuple[str, ...]) -> Any:
    """A merge's ``before`` audit value (``[{customer id: fields}, None]``) without the fields of ``ids``."""
    if not isinstance(pair, list):
        return pair
    return [{cid: _redact(fields, values, True) if cid in {str(i) for i in ids} else fields
             for cid, fields in state.items()} if isinstance(state, Mapping) else state for state in pair]


def merge_family(uow: "UnitOfWork", customer_id: int) -> list[int]:
    """The customer and every customer merged into it (and into those), by merges not undone:
    one person's rows under several ids."""
    family, todo = {customer_id}, [customer_id]
    while todo:
        rows = uow.conn.execute(select(customer_merges.c.merged_ids).where(
            customer_merges.c.kept_id.in_(todo), customer_merges.c.undone_at.is_(None))).scalars().all()
        todo = [int(i) for ids in rows for i in ids if int(i) not in family]
        family.update(todo)
    return sorted(family)


def redact_merges(uow: "UnitOfWork", family: list[int], values: tuple[str, ...]) -> int:
    """Anonymise the merge records holding the person: their before-state (each of ``family``'s
    entries), the field values a merge into them took, the set-aside memberships' details;
    returns the records changed."""
    conn, ids = uow.conn, {str(i) for i in family}
    near = [cast(customer_merges.c.merged_ids, Text).like(f"%{i}%") for i in family]
    rows = conn.execute(select(customer_merges).where(or_(customer_merges.c.kept_id.in_(family), *near))
                        .order_by(customer_merges.c.id)).mappings().all()
    changed = 0
    for row in rows:
        if str(row["kept_id"]) not in ids and not ids & {str(i) for i in row["merged_ids"]}:
            continue
        before = {cid: _redact(fields, values, True) if cid in ids else fields for cid, fields in row["before"].items()}
        moved = dict(row["moved"])
        if str(row["kept_id"]) in ids and isinstance(moved.get("fields"), Mapping):
            moved["fields"] = {name: pair if name in _KEEP else _erase_value(pair, values, True)
                               for name, pair in moved["fields"].items()}
        memberships = moved.get("segment_memberships")
        if isinstance(memberships, Mapping) and memberships.get("dropped"):
            moved["segment_memberships"] = {**memberships, "dropped": [
                {**r, "details": None} if str(r.get("customer_id")) in ids else r for r in memberships["dropped"]]}
        if before != row["before"] or moved != row["moved"]:
            conn.execute(update(customer_merges).where(customer_merges.c.id == row["id"])
                         .values(before=before, moved=moved))
            changed += 1
    return changed


def redact_entities(uow: "UnitOfWork", entity: str, ids: list[Any]) -> dict[str, str]:
    """Redact the audit records of rows retention deleted (``entity`` with these ``ids``): every
    value but the :data:`_KEEP` fields; returns ``{seq: hash of the redacted content}``."""
    conn = uow.conn
    redacted: dict[str, str] = {}
    for start in range(0, len(ids), 500):
        chunk = [str(i) for i in ids[start:start + 500]]
        rows = conn.execute(select(audit_log).where(audit_log.c.entity == entity, audit_log.c.entity_id.in_(chunk))
                            .order_by(audit_log.c.seq)).mappings().all()
        for row in rows:
            _rewrite(conn, row, _redact(row["changes"], (), True), redacted)
    return redacted


def _rewrite(conn: Any, row: Any, changes: Any, redacted: dict[str, str]) -> None:
    """Store an audit record's redacted ``changes`` (when they differ) and note the hash of its new
    content in ``redacted`` (seq -> hash), which the erasing record lists for ``crm audit verify``."""
    if changes == row["changes"]:
        return
    conn.execute(update(audit_log).where(audit_log.c.seq == row["seq"]).values(changes=changes))
    redacted[str(row["seq"])] = record_hash(row["prev_hash"], row["seq"], row["recorded_at"], row["actor"],
                                            row["action"], row["entity"], row["entity_id"],
                                            row["customer_id"], row["ids"], changes)


def _redact(changes: Any, values: tuple[str, ...], theirs: bool) -> Any:
    """A record's ``changes`` without the person's values: in their own records every value but
    the :data:`_KEEP` fields; in others' records only the text holding one of ``values``."""
    if not isinstance(changes, Mapping):
        return changes
    return {key: (value if key in _KEEP and not _holds(value, values)
                  else _erase_value(value, values, theirs)) for key, value in changes.items()}


def _erase_value(value: Any, values: tuple[str, ...], everything: bool) -> Any:
    if isinstance(value, Mapping):
        return {k: _erase_value(v, values, everything) for k, v in value.items()}
    if isinstance(value, list):
        return [_erase_value(v, values, everything) for v in value]
    if value is None or isinstance(value, bool):
        return value
    if everything or _holds(value, values):
        return ERASED
    return value


def _holds(value: Any, values: tuple[str, ...]) -> bool:
    if isinstance(value, str):
        return matches(value, values)
    if isinstance(value, Mapping):
        return any(_holds(v, values) for v in value.values())
    if isinstance(value, list):
        return any(_holds(v, values) for v in value)
    text = json.dumps(value, ensure_ascii=False, default=str)
    return any(v in text for v in values if len(v) >= WHOLE_ONLY)


def record_erasure(uow: "UnitOfWork", customer_id: int, reason: str) -> bool:
    """Remember that the person was erased; False when they already were (nothing recorded)."""
    conn = uow.conn
    if conn.execute(select(privacy_erasures.c.customer_id)
                    .where(privacy_erasures.c.customer_id == customer_id)).first() is not None:
        return False
    conn.execute(insert(privacy_erasures).values(customer_id=customer_id, erased_at=uow.now, actor=uow.actor,
                                                 reason=reason))
    return True


def reseal_audit(uow: "UnitOfWork", cipher: Any, batch: int) -> dict[str, str]:
    """Seal with the first key every audit value of a sealed field (plain ones, from before
    encryption, and those sealed with an older key); returns ``{seq: hash of the new content}``."""
    conn, after = uow.conn, 0
    resealed: dict[str, str] = {}
    while True:
        rows = conn.execute(select(audit_log).where(audit_log.c.seq > after, audit_log.c.changes.is_not(None),
                                                    audit_log.c.action.not_in((ACTION, "privacy.rotate-key")))
                            .order_by(audit_log.c.seq).limit(batch)).mappings().all()
        if not rows:
            return resealed
        for row in rows:
            changes = _resealed(cipher, row["changes"])
            if changes != row["changes"]:
                conn.execute(update(audit_log).where(audit_log.c.seq == row["seq"]).values(changes=changes))
                resealed[str(row["seq"])] = record_hash(row["prev_hash"], row["seq"], row["recorded_at"],
                                                        row["actor"], row["action"], row["entity"],
                                                        row["entity_id"], row["customer_id"], row["ids"], changes)
        after = rows[-1]["seq"]


def _resealed(cipher: Any, changes: Any) -> Any:
    if not isinstance(changes, Mapping):
        return changes
    return reseal_tree(cipher, changes)
