"""Merging duplicate customers (``crm.merges``): merge, unmerge, bulk merge.

A merge keeps one customer and folds the others into it, in one unit of work:

1. every row that belongs to a merged customer is re-pointed to the kept one: contacts,
   interactions, deals, follow-up tasks, outbox messages, loyalty ledger
   entries, consent decisions (the history), segment memberships (where the kept customer has
   none in that run; otherwise the kept one's stands and the other's is set aside), and each
   plugin's rows through the ``merge_customer_rows`` hook;
2. what is derived from those rows is rebuilt from them: loyalty balances (the sum of the ledger,
   so no point is created or lost) and tiers, the current consent state and ``consent_marketing``
   (the latest decision per channel and purpose wins: an opt-out recorded for either customer
   after the other's opt-in still stands);
3. the kept customer's fields are settled by ``[duplicates] merge_rule`` (``non-empty``: the kept
   value unless empty; ``newest``: the most recently updated customer's non-empty value; ``kept``)
   or per field by ``prefer``; tags are united, custom fields merged key by key, and the channel
   consent flags keep the most restrictive value (a person who opted out stays opted out);
4. the merged customers are archived, the merge is recorded in ``customer_merges`` with the full
   before-state and the ids of every row moved, audited (``customer.merge``), and
   ``on_customers_merged`` fires (``on_customers_unmerged`` when :meth:`MergeService.unmerge` undoes it).

**Why history may be re-pointed.**  Ledger entries, outbox messages and consent decisions are
append-only: no entry is edited or removed by a merge.  Only the ``customer_id`` that says whose
history it is changes, because after a merge it is the kept customer's history; their points,
keys, times and contents stay as written.  The re-pointing is itself recorded (the merge record
lists every row moved and the audit trail holds the merge), so it can be read back and undone:
:meth:`MergeService.unmerge` moves exactly those rows back, while nothing newer depends on them
(a later merge of the same customers, points of a moved batch spent or expired after the merge).
"""

from __future__ import annotations

import builtins
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import attrs
from sqlalchemy import Table, delete, func, insert, select, update

from ..domain.convert import unstructure
from ..domain.entities import Customer
from ..domain.errors import CRMError, MergeRefused, NotAuthorized, NotFound, RecordArchived, ValidationError
from ..store import tables
from ..store.bulk import inserted_id
from ..store.sealed import open_tree, seal_tree
from .audit import jsonable
from .duplicates import Cluster

if TYPE_CHECKING:
    from ..app import CRM
    from .uow import UnitOfWork

customers = tables.customers
merges = tables.customer_merges
#: The core tables whose rows follow their customer (an ``id`` and a ``customer_id`` each).
MOVED_TABLES: tuple[Table, ...] = (tables.contacts, tables.interactions, tables.deals, tables.tasks,
                                   tables.notify_outbox, tables.loyalty_ledger, tables.consent_history)
#: Fields never taken from a merged customer (ids, stamps, the derived marketing flag).
FIXED_FIELDS = ("id", "created_at", "updated_at", "archived_at", "consent_marketing")
#: Channel consent flags: the most restrictive value wins.
CONSENT_FLAGS = ("consent_email", "consent_sms")
CHUNK = 1000


@attrs.frozen
class MergeResult:
    """What a merge did: its id (for ``unmerge``), the kept customer as stored now, the merged ids,
    and how many rows moved per table."""

    merge_id: int
    kept: Customer
    merged_ids: tuple[int, ...]
    moved: Mapping[str, int]

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready."""
        return {"merge_id": self.merge_id, "kept_id": self.kept.id, "merged_ids": list(self.merged_ids),
                "moved": dict(self.moved)}


class MergeService:
    """``crm.merges``: merge duplicates into one customer, undo a merge, merge every cluster."""

    def __init__(self, crm: "CRM"):
        self.crm = crm

    # -- merge ---------------------------------------------------------------------------------
    def merge(self, keep: int, others: Sequence[int], prefer: Mapping[str, int] | None = None,
              rule: str | None = None) -> MergeResult:
        """Merge ``others`` into ``keep`` (see the module doc); ``prefer`` maps a field (or
        ``attributes.NAME``) to the customer whose value it takes.  Asks ``authorize("customer.merge")``."""
        others = builtins.list(others)
        if not others:
            raise ValidationError.single("others", "name at least one customer to merge into the kept one", "customer")
        if keep in others or len(set(others)) != len(others):
            raise ValidationError.single("others", f"each customer once, and not the kept one ({keep})", "customer")
        with self.crm.unit() as uow:
            kept = _locked(uow, keep)
            self.crm.authorize("customer.merge", kept)
            merged = [_locked(uow, cid) for cid in others]
            for customer in (kept, *merged):
                if customer.archived_at is not None:
                    raise RecordArchived("customer", customer.id, f"is archived: restore it before merging "
                                         f"(crm customer restore {customer.id})")
            return self._merge(uow, kept, merged, dict(prefer or {}), rule or self.crm.config.duplicates.merge_rule)

    def _merge(self, uow: "UnitOfWork", kept: Customer, merged: builtins.list[Customer], prefer: dict[str, int],
               rule: str) -> MergeResult:
        assert kept.id is not None, "a stored customer has an id"
        merged_ids = [c.id for c in merged if c.id is not None]
        changes = merged_fields(kept, merged, prefer, rule)
        before = {str(c.id): jsonable(unstructure(c)) for c in (kept, *merged)}
        moved: dict[str, Any] = {}
        for table in MOVED_TABLES:
            moved[table.name] = self.move_rows(uow, table, kept.id, merged_ids)
        moved["segment_memberships"] = self._move_memberships(uow, kept.id, merged_ids)
        plugin_rows: dict[str, Any] = {}
        uow.fire("merge_customer_rows", kept_id=kept.id, merged_ids=merged_ids, moved=plugin_rows)
        moved["plugins"] = jsonable(plugin_rows)
        ids = [kept.id, *merged_ids]
        self._recompute_accounts(uow, ids)
        rebuild_consents(uow, ids)
        # An external id moves to the kept customer when it has none (the first merged one that has).
        giver = next((c for c in merged if c.external_id), None) if kept.external_id is None else None
        archived = []
        for customer in merged:
            current = uow.customers.get(customer.id or 0)
            done = uow.customers.update(attrs.evolve(
                current, archived_at=uow.now,
                external_id=None if customer is giver else current.external_id), uow.now)
            uow.audit.updated("customer", done, current, "customer.merge")
            archived.append(done)
        if giver is not None:
            changes["external_id"] = giver.external_id
        fresh = uow.customers.get(kept.id)  # with the rebuilt consent_marketing
        stored = self.crm.customers.change(uow, fresh, changes) if changes else fresh
        kept_before: dict[str, Any] = before[str(kept.id)]
        moved["fields"] = {name: [kept_before.get(name), jsonable(value)] for name, value in changes.items()}
        counts = _counts(moved)
        # With encryption on, the copies of sealed fields are sealed too (opened again by unmerge).
        dialect = uow.conn.dialect
        merge_id = inserted_id(uow.conn.execute(insert(merges).values(
            kept_id=kept.id, merged_ids=merged_ids, before=seal_tree(dialect, before), moved=seal_tree(dialect, moved),
            merged_at=uow.now, actor=uow.actor)))
        uow.audit.record("customer.merge", "customer", kept.id, customer_id=kept.id, ids=merged_ids,
                         changes={"merge_id": [None, merge_id], "before": [before, None], "moved": [None, counts]})
        uow.fire("on_customers_merged", kept=stored, merged=archived)
        return MergeResult(int(merge_id), stored, tuple(merged_ids), counts)

    def move_rows(self, uow: "UnitOfWork", table: Table, kept_id: int, merged_ids: Sequence[int],
                  column: str = "customer_id", key: str = "id") -> dict[str, builtins.list[Any]]:
        """Re-point ``table``'s rows of ``merged_ids`` to ``kept_id``; returns ``{old customer id: [row
        keys]}`` for :meth:`restore_rows`.  For plugins too, in ``merge_customer_rows``::

            moved["acme_welcomes"] = uow.crm.merges.move_rows(uow, acme_welcomes, kept_id, merged_ids)
        """
        found: dict[str, builtins.list[Any]] = {}
        owner, ident = table.c[column], table.c[key]
        for cid, row_key in uow.conn.execute(select(owner, ident).where(owner.in_(merged_ids)).order_by(ident)):
            found.setdefault(str(cid), []).append(row_key)
        if found:
            uow.conn.execute(update(table).where(owner.in_(merged_ids)).values({column: kept_id}))
        return found

    def restore_rows(self, uow: "UnitOfWork", table: Table, moved: Mapping[str, Sequence[Any]],
                     column: str = "customer_id", key: str = "id") -> int:
        """Put rows :meth:`move_rows` moved back with their customers (``unmerge_customer_rows``);
        returns how many."""
        count = 0
        for cid, keys in moved.items():
            for start in range(0, len(keys), CHUNK):
                chunk = list(keys[start:start + CHUNK])
                uow.conn.execute(update(table).where(table.c[key].in_(chunk)).values({column: int(cid)}))
                count += len(chunk)
        return count

    def _move_memberships(self, uow: "UnitOfWork", kept_id: int, merged_ids: Sequence[int]) -> dict[str, Any]:
        """Memberships move where the kept customer has none in that run; the others are set aside
        (deleted, kept in the merge record for an unmerge; the next run decides anyway)."""
        m = tables.segment_memberships
        taken = set(uow.conn.execute(select(m.c.run_id).where(m.c.customer_id == kept_id)).scalars())
        moved: dict[str, builtins.list[int]] = {}
        dropped: builtins.list[dict[str, Any]] = []
        for row in uow.conn.execute(select(m).where(m.c.customer_id.in_(merged_ids))
                                    .order_by(m.c.run_id, m.c.customer_id)).mappings().all():
            if row["run_id"] in taken:
                dropped.append(jsonable(dict(row)))
            else:
                taken.add(row["run_id"])
                moved.setdefault(str(row["customer_id"]), []).append(row["run_id"])
        for cid, runs in moved.items():
            uow.conn.execute(update(m).where(m.c.customer_id == int(cid), m.c.run_id.in_(runs))
                             .values(customer_id=kept_id))
        if dropped:
            uow.conn.execute(delete(m).where(m.c.customer_id.in_(merged_ids)))
        return {"moved": moved, "dropped": dropped}

    def _recompute_accounts(self, uow: "UnitOfWork", ids: Sequence[int]) -> None:
        """Balances of ``ids`` rebuilt from the ledger (every scheme they have entries in), then tiers."""
        ledger, accounts = tables.loyalty_ledger, tables.loyalty_accounts
        totals = {(c, s): int(t) for c, s, t in uow.conn.execute(
            select(ledger.c.customer_id, ledger.c.scheme, func.sum(ledger.c.points))
            .where(ledger.c.customer_id.in_(ids)).group_by(ledger.c.customer_id, ledger.c.scheme))}
        held = {(c, s): t for c, s, t in uow.conn.execute(select(
            accounts.c.customer_id, accounts.c.scheme, accounts.c.tier).where(accounts.c.customer_id.in_(ids)))}
        uow.conn.execute(delete(accounts).where(accounts.c.customer_id.in_(ids)))
        rows = [{"customer_id": c, "scheme": s, "balance": total, "tier": held.get((c, s)), "updated_at": uow.now}
                for (c, s), total in sorted(totals.items())]
        if rows:
            uow.conn.execute(insert(accounts), rows)
        for scheme in sorted({s for _, s in totals}):
            self.crm.loyalty.evaluate_tiers(uow, scheme, sorted({c for c, s in totals if s == scheme}))

    # -- unmerge -------------------------------------------------------------------------------
    def unmerge(self, merge_id: int) -> Customer:
        """Undo merge ``merge_id``: the moved rows go back, the merged customers are live again with
        their fields, the kept customer's merged fields return to their before-state (a field
        changed since the merge keeps its newer value).  Refused while something newer depends on
        the merge.  Asks ``authorize("customer.unmerge")``; returns the kept customer."""
        with self.crm.unit() as uow:
            self.crm.authorize("customer.unmerge", merge_id)  # first: a refused user learns nothing of merges
            record = uow.conn.execute(select(merges).where(merges.c.id == merge_id)).mappings().first()
            if record is None:
                raise NotFound("merge", merge_id)
            kept = _locked(uow, record["kept_id"])
            for cid in record["merged_ids"]:
                _locked(uow, int(cid))
            if record["undone_at"] is not None:
                raise MergeRefused(f"merge {merge_id} was already undone ({record['undone_at'].isoformat()})")
            merged_ids = [int(i) for i in record["merged_ids"]]
            erased = uow.conn.execute(select(tables.privacy_erasures.c.customer_id).where(
                tables.privacy_erasures.c.customer_id.in_([record["kept_id"], *merged_ids]))).scalar()
            if erased is not None:
                raise MergeRefused(f"merge {merge_id} cannot be undone: customer {erased} was erased "
                                   f"(its before-state is anonymised)")
            moved = open_tree(uow.conn.dialect, record["moved"])
            before = open_tree(uow.conn.dialect, record["before"])
            self._check_undoable(uow, merge_id, kept.id or 0, merged_ids, moved)
            for table in MOVED_TABLES:
                self.restore_rows(uow, table, moved.get(table.name, {}))
            self._tasks_follow_restored(uow, moved)
            self._restore_memberships(uow, kept.id or 0, moved.get("segment_memberships", {}))
            uow.fire("unmerge_customer_rows", kept_id=kept.id, merged_ids=merged_ids, moved=moved.get("plugins", {}))
            restored = []
            for cid in merged_ids:
                current = uow.customers.get(cid)
                old = self.crm.customers.build({k: v for k, v in before[str(cid)].items()
                                                if k not in ("created_at", "updated_at")})
                back = attrs.evolve(old, id=cid, created_at=current.created_at, archived_at=None)
                restored.append(back)
            # The kept customer first gives back an external id it took from a merged one.
            fields = moved.get("fields", {})
            current = uow.customers.get(kept.id or 0)
            undo = {name: old for name, (old, new) in fields.items()
                    if jsonable(unstructure(current)).get(name) == new}
            ids = [kept.id or 0, *merged_ids]
            if "external_id" in undo:
                current = uow.customers.update(attrs.evolve(current, external_id=undo.pop("external_id")), uow.now)
            for back in restored:
                previous = uow.customers.get(back.id or 0)
                stored = uow.customers.update(back, uow.now)
                uow.audit.updated("customer", stored, previous, "customer.unmerge")
            self._recompute_accounts(uow, ids)
            rebuild_consents(uow, ids)
            fresh = uow.customers.get(kept.id or 0)
            undo.pop("consent_marketing", None)
            result = self.crm.customers.change(uow, fresh, undo) if undo else fresh
            uow.conn.execute(update(merges).where(merges.c.id == merge_id).values(undone_at=uow.now,
                                                                                 undone_by=uow.actor))
            uow.audit.record("customer.unmerge", "customer", kept.id, customer_id=kept.id, ids=merged_ids,
                             changes={"merge_id": [merge_id, None]})
            uow.fire("on_customers_unmerged", kept=result, restored=[uow.customers.get(c) for c in merged_ids])
            return result

    def _tasks_follow_restored(self, uow: "UnitOfWork", moved: Mapping[str, Any]) -> None:
        """A task made after the merge on a moved deal or interaction goes back with it: a task's
        deal and interaction belong to its own customer."""
        t = tables.tasks
        for parent, column in ((tables.deals, t.c.deal_id), (tables.interactions, t.c.interaction_id)):
            for cid, ids in moved.get(parent.name, {}).items():
                for start in range(0, len(ids), CHUNK):
                    uow.conn.execute(update(t).where(column.in_(ids[start:start + CHUNK]))
                                     .values(customer_id=int(cid)))

    def _check_undoable(self, uow: "UnitOfWork", merge_id: int, kept_id: int, merged_ids: Sequence[int],
                        moved: Mapping[str, Any]) -> None:
        """Refuse an unmerge that newer work depends on: a later merge of any of these customers, or
        points of a moved batch spent or expired by an entry written after the merge."""
        involved = {kept_id, *merged_ids}
        for later in uow.conn.execute(select(merges.c.id, merges.c.kept_id, merges.c.merged_ids).where(
                merges.c.id > merge_id, merges.c.undone_at.is_(None))).all():
            if involved & {later.kept_id, *later.merged_ids}:
                raise MergeRefused(f"merge {merge_id} cannot be undone: the newer merge {later.id} involves "
                                   f"the same customers; unmerge {later.id} first")
        ledger, allocations = tables.loyalty_ledger, tables.loyalty_allocations
        moved_entries = [e for ids in moved.get(ledger.name, {}).values() for e in ids]
        for start in range(0, len(moved_entries), CHUNK):
            chunk = moved_entries[start:start + CHUNK]
            spent = uow.conn.execute(select(allocations.c.debit_id).where(
                allocations.c.batch_id.in_(chunk), allocations.c.debit_id.not_in(moved_entries)).limit(1)).scalar()
            if spent is not None:
                raise MergeRefused(f"merge {merge_id} cannot be undone: ledger entry {spent}, written after the "
                                   f"merge, spent or expired points the merged customers brought")

    def _restore_memberships(self, uow: "UnitOfWork", kept_id: int, moved: Mapping[str, Any]) -> None:
        m, runs = tables.segment_memberships, tables.segment_runs
        for cid, run_ids in moved.get("moved", {}).items():
            uow.conn.execute(update(m).where(m.c.customer_id == kept_id, m.c.run_id.in_(run_ids))
                             .values(customer_id=int(cid)))
        live = set(uow.conn.execute(select(runs.c.id)).scalars()) if moved.get("dropped") else set()
        rows = [row for row in moved.get("dropped", []) if row["run_id"] in live]
        if rows:
            uow.conn.execute(insert(m), rows)

    # -- in bulk -------------------------------------------------------------------------------
    def plan(self, min_score: float | None = None) -> builtins.list[Cluster]:
        """The clusters a bulk merge at ``min_score`` (default ``[duplicates] merge_score``) would merge."""
        score = self.crm.config.duplicates.merge_score if min_score is None else min_score
        return self.crm.duplicates.find(score)

    def merge_all(self, min_score: float | None = None, dry_run: bool = False
                  ) -> tuple[builtins.list[Cluster], builtins.list[MergeResult], builtins.list[tuple[Cluster, str]]]:
        """Merge every cluster at or above ``min_score`` into its oldest customer, one unit of work
        per cluster; with ``dry_run`` only plan.  A cluster that cannot be merged (say, one of its
        customers was archived meanwhile) is left as it is and reported.  Returns (the plan, the
        merges done, the clusters refused with why)."""
        found = self.plan(min_score)
        if dry_run:
            self.crm.authorize("customer.merge", None)
            return found, [], []
        done, refused = [], []
        for cluster in found:
            try:
                done.append(self.merge(cluster.ids[0], cluster.ids[1:]))
            except NotAuthorized:
                raise
            except CRMError as exc:
                refused.append((cluster, str(exc)))
        return found, done, refused

    def list(self, customer_id: int | None = None) -> builtins.list[dict[str, Any]]:
        """Merge records, newest first (of one kept customer when given)."""
        with self.crm.unit(readonly=True) as uow:
            self.crm.authorize("customer.read", customer_id)
            query = select(merges.c.id, merges.c.kept_id, merges.c.merged_ids, merges.c.merged_at, merges.c.actor,
                           merges.c.undone_at, merges.c.undone_by).order_by(merges.c.id.desc())
            if customer_id is not None:
                query = query.where(merges.c.kept_id == customer_id)
            return [dict(r) for r in uow.conn.execute(query).mappings()]


def _locked(uow: "UnitOfWork", customer_id: int) -> Customer:
    """The customer, if the acting user may see it (else NotFound), locked until the merge commits:
    a contact or deal added meanwhile waits (its foreign key check needs the row) instead of
    landing on a customer the merge is emptying."""
    with uow.scoped():
        return uow.customers.get_for_update(customer_id)


def merged_fields(kept: Customer, merged: Sequence[Customer], prefer: Mapping[str, int], rule: str) -> dict[str, Any]:
    """The kept customer's fields that change: ``{field: new value}`` (see the module doc)."""
    everyone = {c.id: c for c in (kept, *merged)}
    for field, cid in prefer.items():
        if cid not in everyone:
            raise ValidationError.single(f"prefer {field}", f"customer {cid} is not one of those merged", "customer")
        name = field.removeprefix("attributes.")
        if not field.startswith("attributes.") and (name in FIXED_FIELDS or name not in attrs.fields_dict(Customer)):
            raise ValidationError.single(f"prefer {field}", "not a field a merge takes from a customer", "customer")
    order = _ordered(kept, merged, rule)
    changes: dict[str, Any] = {}
    for attribute in attrs.fields(Customer):
        name = attribute.name
        if name in FIXED_FIELDS or name in ("tags", "attributes", "external_id"):
            continue
        if name in prefer:
            value = getattr(everyone[prefer[name]], name)
        elif name in CONSENT_FLAGS:
            value = all(getattr(c, name) for c in everyone.values())
        else:
            value = next((getattr(c, name) for c in order if not _empty(getattr(c, name))), getattr(kept, name))
        if value != getattr(kept, name):
            changes[name] = value
    tags = tuple(dict.fromkeys(t for c in (kept, *merged) for t in c.tags))
    if tags != kept.tags:
        changes["tags"] = tags
    attributes: dict[str, Any] = {}
    for key in dict.fromkeys(k for c in (kept, *merged) for k in c.attributes):
        chosen = prefer.get(f"attributes.{key}")
        if chosen is not None:
            attributes[key] = everyone[chosen].attributes.get(key)
            continue
        attributes[key] = next((c.attributes[key] for c in order if not _empty(c.attributes.get(key))),
                               kept.attributes.get(key))
    attributes = {k: v for k, v in attributes.items() if v is not None}
    if attributes != kept.attributes:
        changes["attributes"] = attributes
    return changes


def _ordered(kept: Customer, merged: Sequence[Customer], rule: str) -> builtins.list[Customer]:
    """Whose value a field takes first: ``kept`` -> only the kept one; ``non-empty`` -> the kept one,
    then the others in the order given; ``newest`` -> the most recently updated first."""
    if rule == "kept":
        return [kept]
    if rule == "newest":
        return sorted((kept, *merged), key=lambda c: (c.updated_at is not None, c.updated_at), reverse=True)
    return [kept, *merged]


def _empty(value: Any) -> bool:
    return value is None or value == "" or value == () or value == {}


def rebuild_consents(uow: "UnitOfWork", ids: Sequence[int]) -> None:
    """The current consent state of ``ids`` rebuilt from their history: the latest decision per
    channel and purpose, and ``consent_marketing`` from the every-channel marketing one."""
    history, current = tables.consent_history, tables.customer_consents
    latest = select(func.max(history.c.id)).where(history.c.customer_id.in_(ids)).group_by(
        history.c.customer_id, history.c.channel, history.c.purpose)
    uow.conn.execute(delete(current).where(current.c.customer_id.in_(ids)))
    rows = uow.conn.execute(select(history.c.customer_id, history.c.channel, history.c.purpose, history.c.granted,
                                   history.c.source, history.c.recorded_at, history.c.actor).where(
        history.c.id.in_(latest))).mappings().all()
    if rows:
        uow.conn.execute(insert(current), [dict(r) for r in rows])
    granted = {r["customer_id"] for r in rows if r["channel"] == "*" and r["purpose"] == "marketing" and r["granted"]}
    for flag, chosen in ((True, sorted(granted)), (False, sorted(set(ids) - granted))):
        if chosen:
            uow.conn.execute(update(customers).where(customers.c.id.in_(chosen),
                                                     customers.c.consent_marketing != flag)
                             .values(consent_marketing=flag, updated_at=uow.now))


def _counts(moved: Mapping[str, Any]) -> dict[str, int]:
    counts = {name: sum(len(v) for v in rows.values()) for name, rows in moved.items()
              if name not in ("segment_memberships", "plugins", "fields")}
    memberships = moved.get("segment_memberships", {})
    counts["segment_memberships"] = sum(len(v) for v in memberships.get("moved", {}).values())
    for name, rows in (moved.get("plugins") or {}).items():
        counts[name] = sum(len(v) for v in rows.values()) if isinstance(rows, Mapping) else 0
    return counts

