"""Personal data protection (``crm.privacy``): subject access, erasure, retention.

Each use case asks ``authorize`` (``customer.export-data``, ``customer.erase``,
``privacy.apply-retention``), reads the customer through record visibility, and writes its audit
record; the audit records never hold the erased values.  See docs/privacy.md.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Any

import attrs
from dateutil.relativedelta import relativedelta
from sqlalchemy import JSON, String, Table, and_, bindparam, delete, func, select, tuple_, type_coerce, update

from ..domain.errors import ConfigError, ValidationError
from ..store.sealed import FIELDS, MARK, Cipher, cipher_of, reseal_tree
from ..store.tables import (
    contacts,
    customer_merges,
    customers,
    deals,
    idempotency_keys,
    interactions,
    notify_outbox,
    privacy_erasures,
)
from . import privacy_erase, privacy_export, privacy_files
from .privacy_erase import reseal_audit

if TYPE_CHECKING:
    from ..app import CRM
    from ..config.privacy import Retention
    from .uow import UnitOfWork

#: The longest reason an erasure keeps (the column's size).
REASON_LIMIT = 300
# Outbox messages whose body retention may blank: done with (never one still to be sent).
_FINISHED = ("sent", "dead", "suppressed")


@attrs.frozen
class Erasure:
    """What :meth:`PrivacyService.erase` did: ``rows`` changed per table (plugins' as
    ``plugin:NAME``), ``files`` rows removed from reject files, ``audit`` records redacted;
    ``already``: the person had been erased before (the run checked again)."""

    customer_id: int
    already: bool
    erased_at: datetime
    rows: Mapping[str, int]
    files: int
    audit: int

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready."""
        return {**attrs.asdict(self), "erased_at": self.erased_at.isoformat(), "rows": dict(self.rows)}


class PrivacyService:
    """``crm.privacy``: export one person's data, erase it, apply the retention policies."""

    def __init__(self, crm: "CRM"):
        self.crm = crm

    # -- subject access ------------------------------------------------------------
    def export(self, customer_id: int) -> dict[str, Any]:
        """Everything held about the customer (see :mod:`crmcore.application.privacy_export`);
        audited as ``customer.export-data`` (that the export happened, not what it held)."""
        with self.crm.unit() as uow:
            customer = self.crm.customers.target(uow, customer_id)
            self.crm.authorize("customer.export-data", customer)
            data = privacy_export.collect(uow, customer)
            uow.audit.record("customer.export-data", "customer", customer_id, customer_id=customer_id)
        data["exported_at"] = uow.now.isoformat()
        return data

    @staticmethod
    def render_html(data: Mapping[str, Any]) -> str:
        """The readable HTML summary of an :meth:`export`."""
        return privacy_export.render_html(data, str(data.get("exported_at", "")))

    # -- erasure ---------------------------------------------------------------------
    def erase(self, customer_id: int, reason: str, compact: bool = True) -> Erasure:
        """Remove or anonymise the person's data everywhere; idempotent (see
        :mod:`crmcore.application.privacy_erase`).  On SQLite the file is then rebuilt
        (``VACUUM``), so no erased value survives in free pages or the write-ahead log
        (``compact=False``: the caller does it once after many erasures)."""
        reason = " ".join(reason.split())
        if not reason:
            raise ValidationError.single("reason", "say why the customer is erased (e.g. 'request 2026-114')")
        if len(reason) > REASON_LIMIT:
            raise ValidationError.single("reason", f"at most {REASON_LIMIT} characters, got {len(reason)}")
        with self.crm.unit() as uow:
            customer = self.crm.customers.target(uow, customer_id)
            self.crm.authorize("customer.erase", customer)
            result = self._erase(uow, customer, reason)
            cipher = cipher_of(uow.conn.dialect)
            if cipher is not None:  # nor in this process's memory of recent sealings
                cipher.forget()
            if compact and uow.dialect == "sqlite":
                uow.after_commit(self.compact)
        return result

    def _erase(self, uow: "UnitOfWork", customer: Any, reason: str) -> Erasure:
        cid = customer.id
        sqlite = uow.dialect == "sqlite"
        if sqlite:  # freed cells are overwritten with zeros, not left in the file
            uow.conn.exec_driver_sql("PRAGMA secure_delete = ON")
        try:
            # The person's rows under every id: the customer and those merged into it (issue 18).
            family = privacy_erase.merge_family(uow, cid)
            members = [customer] + [uow.customers.get(i) for i in family if i != cid]
            values = tuple(sorted({v for m in members for v in privacy_erase.distinctive_values(uow, m)}))
            previous = uow.conn.execute(select(privacy_erasures.c.erased_at)
                                        .where(privacy_erasures.c.customer_id == cid)).scalar()
            rows: dict[str, int] = {}
            for member in members:
                first = member.id == cid and previous is None or member.id != cid and uow.conn.execute(
                    select(privacy_erasures.c.customer_id).where(privacy_erasures.c.customer_id == member.id)
                ).first() is None
                for name, n in privacy_erase.erase_rows(uow, member, values, first=first).items():
                    rows[name] = rows.get(name, 0) + n
                if uow.crm.plugins.has_impls("erase_personal_data"):
                    changed = [n for n in uow.crm.plugins.call("erase_personal_data", uow=uow, customer=member,
                                                                values=values) if n]
                    if changed:
                        rows["plugins"] = rows.get("plugins", 0) + sum(changed)
            merges_changed = privacy_erase.redact_merges(uow, family, values)
            if merges_changed:
                rows["customer_merges"] = merges_changed
            files = privacy_files.scrub(uow, values)
            redacted = privacy_erase.redact_audit(uow, family, values)
            for member in members:
                privacy_erase.record_erasure(uow, member.id, reason)
            if previous is None or redacted or files:
                # The reason, the counts and the redacted records' new hashes: no erased value.
                uow.audit.record(privacy_erase.ACTION, "customer", cid, customer_id=cid, changes={
                    "reason": [None, reason], "rows": [None, rows], "files": [None, files],
                    "redacted": [None, redacted], "merged": [None, [i for i in family if i != cid]]})
        finally:
            if sqlite:
                uow.conn.exec_driver_sql("PRAGMA secure_delete = OFF")
        return Erasure(cid, previous is not None, previous or uow.now, rows, files, len(redacted))

    def compact(self) -> None:
        """Rebuild a SQLite file and empty its write-ahead log (outside any transaction), so no
        erased value is left in free pages; nothing on the servers (docs/privacy.md)."""
        if self.crm.engine.dialect.name != "sqlite":
            return
        raw = self.crm.engine.raw_connection()
        try:
            cursor = raw.cursor()
            cursor.execute("VACUUM")
            cursor.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            cursor.close()
        finally:
            raw.close()

    # -- encryption ------------------------------------------------------------------
    def rotate_key(self, batch: int = 5000) -> dict[str, int]:
        """Re-seal every sealed value with the first configured key (also values stored before
        encryption was turned on, and the sealed values of a field no longer configured);
        returns the values re-sealed per ``table.field``.  One transaction: look-ups by blind
        index never see half the rows rotated."""
        self.crm.authorize("privacy.rotate-key", None)
        cipher = cipher_of(self.crm.engine.dialect)
        if cipher is None:
            raise ConfigError("encryption is not configured: [privacy.encryption] fields and key_env or key_file")
        counts: dict[str, int] = {}
        with self.crm.unit() as uow:
            # Every sealable field, configured or not: a field dropped from `fields` keeps its
            # sealed values readable (they open with any listed key), so they move to the new key
            # too, and removing the old key afterwards loses nothing.
            for table in (customers, contacts):
                for field in FIELDS:
                    if field in table.c:
                        counts[f"{table.name}.{field}"] = _reseal(uow, cipher, table, field, batch)
            counts["notify_outbox.recipient"] = _reseal(uow, cipher, notify_outbox, "recipient", batch)
            # Custom fields inside customers' attributes, and the copies the CRM keeps of a
            # customer: merges' before-states and stored API responses (audit values below).
            counts["customers.attributes"] = _reseal_json(uow, cipher, customers, "attributes", batch, "attributes")
            for column in ("before", "moved"):
                counts[f"customer_merges.{column}"] = _reseal_json(uow, cipher, customer_merges, column, batch)
            counts["idempotency_keys.response"] = _reseal_json(uow, cipher, idempotency_keys, "response", batch)
            # Audit values of sealed fields too; the new contents' hashes go in this record, as an
            # erasure's do, so the chain still verifies (crmcore.application.audit.verify).
            redacted = reseal_audit(uow, cipher, batch)
            counts["audit_log"] = len(redacted)
            uow.audit.record("privacy.rotate-key", "database", changes={
                "key": [None, cipher.key_id], "counts": [None, dict(counts)], "redacted": [None, redacted]})
        return counts

    # -- retention -------------------------------------------------------------------
    def apply_retention(self, as_of: datetime | None = None, dry_run: bool = False) -> dict[str, int]:
        """Apply ``[privacy.retention]``: delete interactions older than ``interactions_years``,
        erase leads never converted within ``leads_months`` of their creation, blank the bodies of
        finished outbox messages older than ``outbox_body_days``.  Returns what was (or, with
        ``dry_run``, would be) removed per policy; an unset policy is skipped."""
        policy = self.crm.config.privacy.retention
        now = as_of or self.crm.as_of()
        self.crm.authorize("privacy.apply-retention", None)
        found: dict[str, int] = {}
        with self.crm.unit() as uow:
            sqlite = uow.dialect == "sqlite" and not dry_run
            if sqlite:  # as for an erasure: freed cells are zeroed, and the file is rebuilt below
                uow.conn.exec_driver_sql("PRAGMA secure_delete = ON")
            try:
                self._expire(uow, policy, now, dry_run, found)
            finally:
                if sqlite:
                    uow.conn.exec_driver_sql("PRAGMA secure_delete = OFF")
            leads = self._stale_leads(uow, now, policy.leads_months) if policy.leads_months is not None else None
        if sqlite and any(found.values()):
            self.compact()
        if leads is not None:
            found["leads"] = len(leads)
            if not dry_run and leads:
                for customer_id in leads:
                    self.erase(customer_id, f"retention: lead not converted within {policy.leads_months} months",
                               compact=False)
                self.compact()
        return found

    def _expire(self, uow: "UnitOfWork", policy: "Retention", now: datetime, dry_run: bool,
                found: dict[str, int]) -> None:
        """Delete old interactions and blank old outbox bodies (set-based), counting into ``found``."""
        if policy.interactions_years is not None:
            old = interactions.c.occurred_at < _before(now, relativedelta(years=policy.interactions_years))
            found["interactions"] = self._apply(uow, dry_run, interactions, old,
                                                delete(interactions).where(old), "interaction", redact=True)
        if policy.outbox_body_days is not None:
            cutoff = _before(now, relativedelta(days=policy.outbox_body_days))
            old = and_(notify_outbox.c.created_at < cutoff, notify_outbox.c.status.in_(_FINISHED),
                       notify_outbox.c.body.is_not(None))
            found["outbox_bodies"] = self._apply(uow, dry_run, notify_outbox, old, update(notify_outbox)
                                                 .where(old).values(body=None, subject=None, payload={}),
                                                 "message")

    def _apply(self, uow: "UnitOfWork", dry_run: bool, table: Any, where: Any, statement: Any, entity: str,
               redact: bool = False) -> int:
        """Count, or run ``statement`` and record the ids it touched as one audit batch
        (``redact``: the rows are deleted, and so are the texts of their audit records; the
        batch lists the redacted records' new hashes, so the chain still verifies)."""
        if dry_run:
            return int(uow.conn.execute(select(func.count()).select_from(table).where(where)).scalar_one())
        ids = uow.conn.execute(select(table.c.id).where(where).order_by(table.c.id)).scalars().all()
        if ids:
            uow.conn.execute(statement)
            if redact:
                redacted = privacy_erase.redact_entities(uow, entity, list(ids))
                uow.audit.batch("privacy.retention", entity, ids, redacted=[None, redacted])
            else:
                uow.audit.batch("privacy.retention", entity, ids)
        return len(ids)

    def _stale_leads(self, uow: "UnitOfWork", now: datetime, months: int) -> list[int]:
        """Leads created more than ``months`` ago, with no deal, not yet erased (set-based)."""
        cutoff = _before(now, relativedelta(months=months))
        query = (select(customers.c.id)
                 .where(customers.c.stage == "lead", customers.c.created_at < cutoff,
                        ~select(deals.c.id).where(deals.c.customer_id == customers.c.id).exists(),
                        ~select(privacy_erasures.c.customer_id)
                        .where(privacy_erasures.c.customer_id == customers.c.id).exists())
                 .order_by(customers.c.id))
        return list(uow.conn.execute(query).scalars())


def _before(now: datetime, span: relativedelta) -> datetime:
    """``now - span``, or the earliest date when that is before year 1 (an early ``--as-of``)."""
    try:
        cutoff: datetime = now - span
        return cutoff
    except (ValueError, OverflowError):
        return datetime.min.replace(tzinfo=now.tzinfo)


def _reseal(uow: "UnitOfWork", cipher: Cipher, table: Table, field: str, batch: int) -> int:
    """Re-seal ``table.field`` with the first key, ``batch`` rows at a time (memory flat)."""
    stored = type_coerce(table.c[field], String).label("stored")  # the stored form, not opened
    write = (update(table).where(table.c.id == bindparam("row_id"))
             .values({field: bindparam("sealed", type_=String)}))
    after, changed = 0, 0
    while True:
        rows = uow.conn.execute(select(table.c.id, stored).where(table.c.id > after, table.c[field].is_not(None))
                                .order_by(table.c.id).limit(batch)).all()
        if not rows:
            return changed
        # A configured field: every value not sealed with the first key; another: only its
        # values sealed with an older key (plain ones stay plain).
        updates = [{"row_id": row_id, "sealed": cipher.seal(field, cipher.open(field, value)
                                                             if value.startswith(MARK) else value)}
                   for row_id, value in rows
                   if not cipher.current(value) and (cipher.seals(field) or value.startswith(MARK))]
        if updates:
            uow.conn.execute(write, updates)
            changed += len(updates)
        after = rows[-1][0]


def _reseal_json(uow: "UnitOfWork", cipher: Cipher, table: Table, column: str, batch: int,
                 root: str | None = None) -> int:
    """Re-seal the sealed values inside a JSON column (see :func:`crmcore.store.sealed.seal_tree`;
    ``root``: the key the column's value sits under, ``attributes`` for custom fields), ``batch``
    rows at a time by primary key; returns the rows changed."""
    keys = list(table.primary_key.columns)
    stored = type_coerce(table.c[column], JSON).label("stored")  # as stored, not opened
    write = update(table).where(*[k == bindparam(f"k_{k.name}") for k in keys]).values(
        {column: bindparam("sealed", type_=JSON)})
    after: tuple[Any, ...] | None = None
    changed = 0
    while True:
        query = select(*keys, stored).order_by(*keys).limit(batch)
        if after is not None:
            query = query.where(tuple_(*keys) > tuple_(*after) if len(keys) > 1 else keys[0] > after[0])
        rows = uow.conn.execute(query).all()
        if not rows:
            return changed
        updates = []
        for row in rows:
            value = row[-1]
            new = reseal_tree(cipher, {root: value})[root] if root else reseal_tree(cipher, value)
            if new != value:
                updates.append({**{f"k_{k.name}": row[i] for i, k in enumerate(keys)}, "sealed": new})
        if updates:
            uow.conn.execute(write, updates)
            changed += len(updates)
        after = tuple(rows[-1][:len(keys)])
