"""The append-only points ledger, bound to a unit of work (``uow.loyalty``).

Every entry (earn, bonus, redeem, expire, adjust, reverse) carries an
idempotency key; balances, FIFO expiry batches and tiers derive from the
entries, and a balance never goes negative, also under concurrent redemption.
"""

from __future__ import annotations

import functools
import zlib
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

import attrs
from sqlalchemy import (
    BigInteger,
    Column,
    Connection,
    Integer,
    MetaData,
    Table,
    String,
    and_,
    bindparam,
    cast,
    exists,
    func,
    insert,
    literal,
    select,
    update,
)
from sqlalchemy.sql import ColumnElement, Select

from ..domain.errors import (
    CRMError,
    InsufficientPoints,
    ValidationError,
)
from ..store import direct, tables
from ..store.dialects import temporary_table
from ..store.bulk import inserted_id
from ..store.upsert import ignoring_conflicts, insert_ignore, insert_new, upserting
from .scheme import LoyaltyScheme

if TYPE_CHECKING:
    from ..application.uow import UnitOfWork


ledger = tables.loyalty_ledger
accounts = tables.loyalty_accounts
allocations = tables.loyalty_allocations
# Built once: a single credit runs it with bound values (building an UPDATE costs more than running it).
_ADD_POINTS = update(accounts).where(
    accounts.c.customer_id == bindparam("a_customer"), accounts.c.scheme == bindparam("a_scheme")).values(
    balance=accounts.c.balance + bindparam("a_points", type_=BigInteger), updated_at=bindparam("a_now"))


@functools.cache
def _add_points_upsert(dialect: str) -> Any:
    """The account created holding the points, or raised by them if it exists: one statement,
    built once per dialect (None on MariaDB, see :func:`~crmcore.store.upsert.upserting`)."""
    return upserting(dialect, accounts, (accounts.c.customer_id, accounts.c.scheme), (
        ("balance", lambda new: accounts.c.balance + new.balance), ("updated_at", lambda new: new.updated_at)))


KINDS = ("earn", "bonus", "redeem", "expire", "adjust", "reverse")
# Columns a set-based credit (``LoyaltyLedger.insert_credits``) selects, in this order.
CREDIT_COLUMNS = ("customer_id", "points", "idempotency_key", "deal_id", "expires_at", "reason", "occurred_at",
                  "kind", "details")


@attrs.frozen
class LedgerEntry:
    """One entry of the append-only points ledger (earn, bonus, redeem, expire, adjust, reverse)."""
    id: int
    customer_id: int
    scheme: str
    kind: str
    points: int
    idempotency_key: str
    deal_id: int | None
    expires_at: datetime | None
    reason: str | None
    actor: str | None
    occurred_at: datetime
    details: dict[str, Any] | None
    batch_id: int | None = None


class LoyaltyLedger:
    """The ledger operations of one unit of work (``uow.loyalty``).

    Every credit (earn, bonus, adjust up) is a *batch* with its own
    ``expires_at``.  Every debit records in ``loyalty_allocations`` which
    batches it consumed: the oldest first (FIFO), except that a reversal takes
    its own deal's batch first.  A batch's remaining points are its points less
    its allocations, which makes expiry one ``INSERT ... SELECT``.
    """

    def __init__(self, uow: "UnitOfWork"):
        self.uow = uow

    def balance(self, customer_id: int, scheme: str, *, latest: bool = False) -> int:
        """The account's balance; ``latest`` reads it with a locking read, which sees
        the latest committed value (a plain read on MariaDB/MySQL sees the
        transaction's snapshot, possibly older than a lock this transaction waited for)."""
        query = select(accounts.c.balance).where(accounts.c.customer_id == customer_id, accounts.c.scheme == scheme)
        row = self.uow.conn.execute(query.with_for_update() if latest else query).first()
        return int(row[0]) if row else 0

    def tier(self, customer_id: int, scheme: str) -> str | None:
        """The customer's current tier in ``scheme``, or None."""
        return self.uow.conn.execute(select(accounts.c.tier).where(
            accounts.c.customer_id == customer_id, accounts.c.scheme == scheme)).scalar()

    def entry(self, key: str, *, latest: bool = False) -> LedgerEntry | None:
        """The entry with idempotency key ``key``, or None; ``latest``: a locking
        read, which sees entries committed after this transaction's snapshot."""
        query = select(ledger).where(ledger.c.idempotency_key == key)
        row = self.uow.conn.execute(query.with_for_update(read=True) if latest else query).first()
        return LedgerEntry(**row._mapping) if row else None

    def credit(self, customer_id: int, scheme: str, points: int, key: str, kind: str = "earn",
               **fields: Any) -> LedgerEntry:
        """Add points (earn, bonus, adjust up) as a new batch.  Replaying ``key`` returns the first entry.

        Insert-or-return-existing: the entry is inserted unless its key exists
        (the database decides, so two concurrent credits with one key both
        return the one entry), and only a new entry changes the balance.
        """
        _check_points(points)
        # No look-up of the key first: the insert finds a replay itself (and then returns the
        # entry), which saves a SELECT on every new credit, the common case.
        mariadb = self.uow.conn.dialect.name in ("mysql", "mariadb")
        if mariadb:  # the account before the entry, read first (see _ensure_account): no gap locks
            self._ensure_account(customer_id, scheme)
        entry, new = self._append(customer_id, scheme, kind, points, key, fields)
        if new:
            self._add_points(customer_id, scheme, points, ensured=mariadb)
            self.uow.crm.loyalty.evaluate_tier(self.uow, customer_id, scheme)
        return entry

    def _add_points(self, customer_id: int, scheme: str, points: int, ensured: bool) -> None:
        """Raise the account's balance by ``points``; an account not yet there (not ``ensured``)
        is created with them.  One statement on SQLite and PostgreSQL (an upsert), one on
        MariaDB when the account exists (the common case there)."""
        conn = self.uow.conn
        upsert = _add_points_upsert(conn.dialect.name)
        if upsert is not None:
            direct.run(conn, upsert, {"customer_id": customer_id, "scheme": scheme, "balance": points,
                                      "updated_at": self.uow.now})
            return
        params = {"a_customer": customer_id, "a_scheme": scheme, "a_points": points, "a_now": self.uow.now}
        if conn.execute(_ADD_POINTS, params).rowcount == 1 or ensured:
            return
        # No account: create it holding the points; if a concurrent credit created it meanwhile
        # (the insert then waits for its commit and skips), add to that one.
        # (RETURNING tells; the rowcount of PostgreSQL's ON CONFLICT DO NOTHING does not.)
        created = conn.execute(ignoring_conflicts(conn, accounts, accounts.c.customer_id, accounts.c.scheme).values(
            customer_id=customer_id, scheme=scheme, balance=points, updated_at=self.uow.now).returning(
            accounts.c.customer_id)).first()
        if created is None:
            conn.execute(_ADD_POINTS, params)

    def debit(self, customer_id: int, scheme: str, points: int, key: str, kind: str = "redeem",
              partial: bool = False, **fields: Any) -> LedgerEntry:
        """Take points (redeem, reverse, adjust down); never below zero.

        Points past their expiry are expired first (so they cannot be spent),
        then the debit consumes the oldest batches.  With ``partial`` the debit
        takes what is there and records the shortfall in ``details``; otherwise
        too few points raise :class:`InsufficientPoints` and nothing is written.
        """
        _check_points(points)
        existing = self.entry(key)
        if existing is not None:
            return existing
        self._ensure_account(customer_id, scheme)
        self._lock_account(customer_id, scheme)
        # A debit with this key may have committed while this one waited for the lock.
        existing = self.entry(key, latest=True)
        if existing is not None:
            return existing
        self.expire(self.uow.now, scheme=scheme, customer_id=customer_id)
        if self._take(customer_id, scheme, points):
            taken = points
        elif not partial:
            raise InsufficientPoints(customer_id, scheme, points, self.balance(customer_id, scheme, latest=True))
        else:
            available = self.balance(customer_id, scheme, latest=True)
            taken = available if available and self._take(customer_id, scheme, available) else 0
            fields = {**fields, "details": {**(fields.get("details") or {}), "requested": points,
                                            "shortfall": points - taken}}
        entry, new = self._append(customer_id, scheme, kind, -taken, key, fields)
        if not new:  # the key was taken meanwhile by an entry of another account: nothing here may stand
            raise CRMError(f"idempotency key {key!r} is already used by ledger entry {entry.id} "
                           f"(customer {entry.customer_id}, {entry.kind}); use another key")
        self.uow.crm.loyalty.evaluate_tier(self.uow, customer_id, scheme)
        if taken:
            self._allocate(entry.id, customer_id, scheme, taken, prefer_deal=fields.get("deal_id"))
        return entry

    def tiers_changed(self, scheme: str, moves: Sequence[tuple[int, str | None, str | None]]) -> None:
        """Tell the plugins that listen that ``moves`` ((customer id, old tier, new tier) each,
        already stored) happened in ``scheme``: ``on_loyalty_tiers_changed`` once with them all,
        then ``on_loyalty_tier_changed`` per move.  Each hook only if a plugin implements it: a
        tier job's 100,000 moves cost no call per move where nobody listens per move."""
        if not moves:
            return
        uow = self.uow
        uow.fire("on_loyalty_tiers_changed", scheme=scheme, moves=moves)
        if uow.crm.plugins.has_impls("on_loyalty_tier_changed"):
            for customer_id, old, new in moves:
                uow.fire("on_loyalty_tier_changed", customer_id=customer_id, scheme=scheme, old=old, new=new)

    def set_tier(self, customer_id: int, scheme: str, tier: str | None) -> bool:
        """Store a customer's tier in a scheme; fires the tier hooks (:meth:`tiers_changed`) if it changed."""
        self._ensure_account(customer_id, scheme)
        old = self.tier(customer_id, scheme)
        if old == tier:
            return False
        self.uow.conn.execute(update(accounts).where(
            accounts.c.customer_id == customer_id, accounts.c.scheme == scheme).values(
            tier=tier, updated_at=self.uow.now))
        self.tiers_changed(scheme, [(customer_id, old, tier)])
        return True

    def net_for_deal(self, deal_id: int, scheme: str) -> int:
        """Points a deal has earned in a scheme, less what was reversed.

        A reversal's shortfall (points already spent) is written off, not owed:
        otherwise winning the deal again and losing it again would take the old
        shortfall out of points other deals earned.  ``int``: SUM of a BIGINT is
        a Decimal on PostgreSQL and MariaDB.
        """
        rows = self.uow.conn.execute(select(ledger.c.points, ledger.c.details).where(
            ledger.c.deal_id == deal_id, ledger.c.scheme == scheme,
            ledger.c.kind.in_(("earn", "reverse")))).all()
        return sum(int(points) - int((details or {}).get("shortfall", 0)) for points, details in rows)

    def batches(self, customer_id: int, scheme: str, as_of: datetime | None = None) -> list[dict[str, Any]]:
        """The customer's batches with points left: id, points, remaining, occurred_at, expires_at, deal_id.

        Oldest first, the order redemptions consume them in.
        """
        used = _used_by_batch()
        remaining = ledger.c.points - func.coalesce(used.c.used, 0)
        query = select(ledger.c.id, ledger.c.points, remaining.label("remaining"), ledger.c.occurred_at,
                       ledger.c.expires_at, ledger.c.deal_id).select_from(
            ledger.outerjoin(used, used.c.batch_id == ledger.c.id)).where(
            ledger.c.customer_id == customer_id, ledger.c.scheme == scheme, ledger.c.points > 0,
            remaining > 0).order_by(ledger.c.occurred_at, ledger.c.id)
        return [{**r._mapping, "remaining": int(r.remaining), "points": int(r.points)}
                for r in self.uow.conn.execute(query)]

    def credit_many(self, scheme: str, credits: list[dict[str, Any]]) -> int:
        """Bulk credit: one ledger row per new key, balances raised by what was inserted.

        Each item has ``customer_id``, ``points``, ``key`` and optionally
        ``kind`` (default earn), ``deal_id``, ``expires_at``, ``reason``,
        ``occurred_at``, ``details``.  Insert-or-skip: the database decides
        which keys are new (``ON CONFLICT DO NOTHING`` / ``INSERT IGNORE``), so a
        replayed batch changes nothing and two concurrent callers with
        overlapping keys both succeed, each key credited once.  Balances and
        the count come from the rows actually inserted (``RETURNING``), never
        from a check made before the insert.  Returns the number of new entries.
        """
        for item in credits:
            _check_points(item["points"])
        unique: dict[str, dict[str, Any]] = {}
        for item in credits:
            unique.setdefault(item["key"], item)  # a key twice in one batch: the first counts
        # Keys in one order for every caller: two batches sharing keys then wait
        # on their first shared key instead of deadlocking on two of them.
        rows = [self._credit_row(scheme, unique[key]) for key in sorted(unique)]
        statement = ignoring_conflicts(self.uow.conn, ledger, ledger.c.idempotency_key).returning(
            ledger.c.customer_id, ledger.c.points, ledger.c.idempotency_key)
        totals: dict[int, int] = {}
        written: list[str] = []
        for start in range(0, len(rows), 5000):
            for customer_id, points, key in self.uow.conn.execute(statement, rows[start:start + 5000]):
                totals[customer_id] = totals.get(customer_id, 0) + int(points)
                written.append(key)
        if not written:
            return 0
        self.uow.audit.batch("ledger.credit", "ledger_entry", written, scheme=scheme)
        self._ensure_accounts(scheme, sorted(totals))
        self.uow.conn.execute(update(accounts).where(
            accounts.c.customer_id == bindparam("cid"), accounts.c.scheme == scheme).values(
            balance=accounts.c.balance + bindparam("add"), updated_at=self.uow.now),
            [{"cid": cid, "add": add} for cid, add in sorted(totals.items())])
        self.uow.crm.loyalty.evaluate_tiers(self.uow, scheme, sorted(totals))
        return len(written)

    def _credit_row(self, scheme: str, item: Mapping[str, Any]) -> dict[str, Any]:
        """The ledger row of one :meth:`credit_many` item."""
        return {"customer_id": item["customer_id"], "scheme": scheme, "kind": item.get("kind", "earn"),
                "points": item["points"], "idempotency_key": item["key"], "deal_id": item.get("deal_id"),
                "expires_at": item.get("expires_at"), "reason": item.get("reason"), "actor": self.uow.actor,
                "occurred_at": item.get("occurred_at") or self.uow.now, "details": item.get("details"),
                "batch_id": None}

    def insert_credits(self, scheme: str, source: Select[*tuple[Any, ...]], key_like: str,
                       only: ColumnElement[bool] | None = None) -> int:
        """Set-based credit: ``INSERT INTO ledger ... SELECT`` plus one balance update.

        ``source`` selects the columns of :data:`CREDIT_COLUMNS` (labelled) with
        positive ``points`` and keys not yet in the ledger (``NOT EXISTS`` on
        the key; a key written meanwhile by a concurrent job is skipped, and
        overlapping runs of one job are serialised, see :meth:`_job_lock`).  ``key_like`` is a LIKE pattern matching every key
        this job writes, and only those, so the balance update counts exactly
        the new rows even when other transactions write to the ledger.
        ``only`` narrows what counts as this call's rows further (e.g. its deals),
        for a ``key_like`` other writers' keys can match too.
        Returns the number of entries written.
        """
        conn = self.uow.conn
        self._job_lock(f"credit:{scheme}:{key_like}")
        before = conn.execute(select(func.coalesce(func.max(ledger.c.id), 0))).scalar_one()
        src = source.subquery("credit_source")
        rows = select(*(src.c[name] for name in CREDIT_COLUMNS), literal(scheme).label("scheme"),
                      literal(self.uow.actor, String).label("actor")).where(literal(True))
        conn.execute(ignoring_conflicts(conn, ledger, ledger.c.idempotency_key).from_select([*CREDIT_COLUMNS, "scheme", "actor"], rows))
        new = and_(ledger.c.id > before, ledger.c.scheme == scheme, ledger.c.idempotency_key.like(key_like),
                   literal(True) if only is None else only)
        written = _count(conn, new)  # rowcount of INSERT ... SELECT is -1 with psycopg
        if written:
            self.uow.audit.batch_where("ledger.credit", "ledger_entry", ledger.c.id, new, scheme=scheme)
            self._apply_new_entries(scheme, new)
        return written

    def expire(self, as_of: datetime, scheme: str | None = None, customer_id: int | None = None) -> int:
        """Write an expiry entry for every batch past its ``expires_at`` with points left.

        Set-based and idempotent: an expired batch has nothing left, and its
        key ``<scheme>:expire:<batch>`` is unique.  Returns the entries written.
        """
        conn = self.uow.conn
        used = _used_by_batch()
        remaining = ledger.c.points - func.coalesce(used.c.used, 0)
        where = [ledger.c.points > 0, ledger.c.expires_at <= as_of, remaining > 0]
        if scheme is not None:
            where.append(ledger.c.scheme == scheme)
        if customer_id is not None:
            where.append(ledger.c.customer_id == customer_id)
        if customer_id is None and conn.dialect.name != "sqlite":
            self._lock_due_accounts(used, where)
        key = ledger.c.scheme + literal(":expire:") + cast(ledger.c.id, String)
        rows = select(ledger.c.customer_id, ledger.c.scheme, literal("expire"), (-remaining).label("points"),
                      key.label("idempotency_key"), literal("points expired").label("reason"),
                      literal(self.uow.actor, String).label("actor"), ledger.c.expires_at.label("occurred_at"),
                      ledger.c.id.label("batch_id")).select_from(
            ledger.outerjoin(used, used.c.batch_id == ledger.c.id)).where(*where)
        before = conn.execute(select(func.coalesce(func.max(ledger.c.id), 0))).scalar_one()
        conn.execute(insert(ledger).from_select(
            ["customer_id", "scheme", "kind", "points", "idempotency_key", "reason", "actor", "occurred_at",
             "batch_id"], rows))
        new = [ledger.c.id > before, ledger.c.kind == "expire", ledger.c.batch_id.is_not(None)]
        if scheme is not None:
            new.append(ledger.c.scheme == scheme)
        if customer_id is not None:
            new.append(ledger.c.customer_id == customer_id)
        written = _count(conn, and_(*new))
        if not written:
            return 0
        self.uow.audit.batch_where("ledger.expire", "ledger_entry", ledger.c.id, *new)
        conn.execute(insert(allocations).from_select(
            ["debit_id", "batch_id", "points"], select(ledger.c.id, ledger.c.batch_id, -ledger.c.points).where(
                *new, ~exists().where(allocations.c.debit_id == ledger.c.id))))
        for name in ([scheme] if scheme else self._schemes_with(and_(*new))):
            self._apply_new_entries(name, and_(*new, ledger.c.scheme == name), ensure=False,
                                    bulk=customer_id is None)
        return written

    # -- internals -------------------------------------------------------------
    def _job_lock(self, name: str) -> None:
        """Serialise one job (e.g. two overlapping ``crm loyalty earn`` runs) until commit.

        PostgreSQL (read committed) would otherwise let the second run count
        the first run's committed entries as its own; a transaction-scoped
        advisory lock makes it wait, and its statements then see them.
        SQLite write transactions are serial; MariaDB's ``INSERT ... SELECT``
        reads with locks (the latest committed rows), and its own counts read
        its snapshot.
        """
        if self.uow.conn.dialect.name == "postgresql":
            self.uow.conn.execute(select(func.pg_advisory_xact_lock(zlib.crc32(name.encode("utf-8")))))

    def _lock_due_accounts(self, used: Any, where: list[ColumnElement[bool]]) -> None:
        """Lock the accounts the expiry job is about to change, in key order.

        A redemption locks its account before expiring that customer's due
        batches itself; taking the same locks first makes it wait for this
        job's commit and then find nothing left to expire, instead of
        colliding on the same expiry key.  (SQLite write transactions are
        serial already.)
        """
        due = exists().select_from(ledger.outerjoin(used, used.c.batch_id == ledger.c.id)).where(
            *where, ledger.c.customer_id == accounts.c.customer_id, ledger.c.scheme == accounts.c.scheme)
        self.uow.conn.execute(select(accounts.c.customer_id).where(due).order_by(
            accounts.c.customer_id, accounts.c.scheme).with_for_update()).all()

    def _schemes_with(self, where: ColumnElement[bool]) -> list[str]:
        return list(self.uow.conn.execute(select(ledger.c.scheme).where(where).distinct()).scalars())

    def _apply_few_entries(self, scheme: str, new: ColumnElement[bool], ensure: bool) -> None:
        """:meth:`_apply_new_entries` for one customer's entries: the totals aggregated in each statement."""
        conn = self.uow.conn
        totals = select(ledger.c.customer_id, func.sum(ledger.c.points).label("total")).where(new).group_by(
            ledger.c.customer_id).subquery("new_totals")
        conn.execute(update(accounts).values(balance=accounts.c.balance + totals.c.total,
                                             updated_at=self.uow.now).where(
            accounts.c.customer_id == totals.c.customer_id, accounts.c.scheme == scheme))
        if ensure:  # after the UPDATE, so new accounts are not counted twice
            missing = select(ledger.c.customer_id, literal(scheme), func.sum(ledger.c.points),
                             literal(self.uow.now, accounts.c.updated_at.type)).where(
                new, ~exists().where(accounts.c.customer_id == ledger.c.customer_id,
                                     accounts.c.scheme == scheme)).group_by(ledger.c.customer_id)
            conn.execute(insert(accounts).from_select(["customer_id", "scheme", "balance", "updated_at"], missing))
        scheme_obj = self.uow.crm.loyalty.registry.get(scheme) if scheme in self.uow.crm.loyalty.registry else None
        if scheme_obj is not None and type(scheme_obj).tier_for is not LoyaltyScheme.tier_for:
            ids = list(conn.execute(select(ledger.c.customer_id).where(new).distinct()).scalars())
            self.uow.crm.loyalty.evaluate_tiers(self.uow, scheme, ids)

    def _apply_new_entries(self, scheme: str, new: ColumnElement[bool], ensure: bool = True,
                           bulk: bool = True) -> None:
        """Add the points of the ledger rows matching ``new`` to their accounts.

        The per-customer totals are aggregated once into a temporary table;
        existing accounts get one ``UPDATE ... FROM`` it, missing ones
        (``ensure``) one ``INSERT ... SELECT`` of their total.  Not ``bulk`` (one
        customer's lazy expiry inside a debit): no temporary table.
        """
        conn = self.uow.conn
        if not bulk:  # a redemption's lazy expiry: a few rows, no temporary table
            self._apply_few_entries(scheme, new, ensure)
            return
        totals = _totals_table()
        with temporary_table(conn, totals):
            conn.execute(insert(totals).from_select(["customer_id", "total"], select(
                ledger.c.customer_id, func.sum(ledger.c.points)).where(new).group_by(ledger.c.customer_id)))
            conn.execute(update(accounts).values(balance=accounts.c.balance + totals.c.total,
                                                 updated_at=self.uow.now).where(
                accounts.c.customer_id == totals.c.customer_id, accounts.c.scheme == scheme))
            if ensure:  # after the UPDATE, so new accounts are not counted twice
                missing = select(totals.c.customer_id, literal(scheme), totals.c.total,
                                 literal(self.uow.now, accounts.c.updated_at.type)).where(
                    ~exists().where(accounts.c.customer_id == totals.c.customer_id, accounts.c.scheme == scheme))
                conn.execute(insert(accounts).from_select(["customer_id", "scheme", "balance", "updated_at"],
                                                          missing))
            scheme_obj = self.uow.crm.loyalty.registry.get(scheme) if scheme in self.uow.crm.loyalty.registry \
                else None
            ids: list[int] = []
            if scheme_obj is not None and type(scheme_obj).tier_for is not LoyaltyScheme.tier_for:
                ids = list(conn.execute(select(totals.c.customer_id).order_by(totals.c.customer_id)).scalars())
        if ids:
            self.uow.crm.loyalty.evaluate_tiers(self.uow, scheme, ids)

    def _allocate(self, debit_id: int, customer_id: int, scheme: str, points: int, prefer_deal: int | None) -> None:
        """Record which batches a debit consumed: its own deal's first (reversals), then oldest first."""
        batches = self._live_batches(customer_id, scheme)
        if prefer_deal is not None:
            batches.sort(key=lambda b: b["deal_id"] != prefer_deal)  # stable: FIFO within each group
        rows, left = [], points
        for batch in batches:
            take = min(left, batch["remaining"])
            rows.append({"debit_id": debit_id, "batch_id": batch["id"], "points": take})
            left -= take
            if not left:
                break
        if rows:
            self.uow.conn.execute(allocations.insert(), rows)

    def _live_batches(self, customer_id: int, scheme: str) -> list[dict[str, Any]]:
        """The customer's batches with points left, oldest first, read with locking reads.

        Locking reads see the latest committed rows: on MariaDB/MySQL (repeatable
        read) a plain SELECT would read the snapshot taken before this debit
        waited for the account lock, and allocate points another transaction
        has just spent or expired.
        """
        conn = self.uow.conn
        rows = conn.execute(select(ledger.c.id, ledger.c.points, ledger.c.deal_id).where(
            ledger.c.customer_id == customer_id, ledger.c.scheme == scheme, ledger.c.points > 0).order_by(
            ledger.c.occurred_at, ledger.c.id).with_for_update(read=True)).all()
        used: dict[int, int] = {}
        batch = ledger.alias("batch")
        for batch_id, points in conn.execute(select(allocations.c.batch_id, allocations.c.points).select_from(
                allocations.join(batch, batch.c.id == allocations.c.batch_id)).where(
                batch.c.customer_id == customer_id, batch.c.scheme == scheme).with_for_update(read=True)):
            used[batch_id] = used.get(batch_id, 0) + int(points)
        return [{"id": i, "remaining": int(p) - used.get(i, 0), "deal_id": d} for i, p, d in rows
                if int(p) > used.get(i, 0)]

    def _ensure_accounts(self, scheme: str, customer_ids: list[int]) -> None:
        """Create the missing accounts of ``customer_ids`` in ``scheme`` (balance 0), in bulk."""
        existing: set[int] = set()
        for start in range(0, len(customer_ids), 5000):
            chunk = customer_ids[start:start + 5000]
            existing.update(self.uow.conn.execute(select(accounts.c.customer_id).where(
                accounts.c.scheme == scheme, accounts.c.customer_id.in_(chunk))).scalars())
        missing = [{"customer_id": cid, "scheme": scheme, "balance": 0, "updated_at": self.uow.now}
                   for cid in customer_ids if cid not in existing]
        # Read first, then one multi-row insert of the missing accounts only (as _ensure_account
        # does for one: an INSERT IGNORE hitting existing rows takes shared locks on MariaDB).
        if missing:
            self.uow.conn.execute(ignoring_conflicts(self.uow.conn, accounts, accounts.c.customer_id,
                                                     accounts.c.scheme), missing)

    def _lock_account(self, customer_id: int, scheme: str) -> None:
        # Serialise debits of one account before expiring and allocating, so
        # two concurrent redemptions cannot allocate the same batch (PostgreSQL,
        # MariaDB; SQLite write transactions are serial already).
        self.uow.conn.execute(select(accounts.c.balance).where(
            accounts.c.customer_id == customer_id, accounts.c.scheme == scheme).with_for_update())

    def _take(self, customer_id: int, scheme: str, points: int) -> bool:
        result = self.uow.conn.execute(update(accounts).where(
            accounts.c.customer_id == customer_id, accounts.c.scheme == scheme,
            accounts.c.balance >= points).values(
            balance=accounts.c.balance - points, updated_at=self.uow.now))
        return result.rowcount == 1

    def _ensure_account(self, customer_id: int, scheme: str) -> None:
        # Read first, insert only a missing account: on MariaDB/MySQL an INSERT
        # IGNORE that hits an existing row takes a shared lock, and two
        # concurrent redemptions holding it deadlock upgrading to the UPDATE's lock.
        if self.uow.conn.execute(select(accounts.c.balance).where(
                accounts.c.customer_id == customer_id, accounts.c.scheme == scheme)).first() is not None:
            return
        insert_ignore(self.uow.conn, accounts, {"customer_id": customer_id, "scheme": scheme,
                                                "balance": 0, "updated_at": self.uow.now})

    def _append(self, customer_id: int, scheme: str, kind: str, points: int, key: str,
                fields: Mapping[str, Any]) -> tuple[LedgerEntry, bool]:
        """Insert an entry unless its key exists: (the entry, True if it is new).

        The database decides (``ON CONFLICT DO NOTHING`` / ``INSERT IGNORE``),
        so the loser of a race on one key gets the winner's entry, not an
        ``IntegrityError``.
        """
        values: dict[str, Any] = {"customer_id": customer_id, "scheme": scheme, "kind": kind, "points": points,
                  "idempotency_key": key, "occurred_at": fields.get("occurred_at") or self.uow.now,
                  "actor": self.uow.actor, "deal_id": fields.get("deal_id"),
                  "expires_at": fields.get("expires_at"), "reason": fields.get("reason"),
                  "details": fields.get("details"), "batch_id": None}
        conn = self.uow.conn
        new_id = insert_new(conn, ledger, values, ledger.c.idempotency_key)
        if new_id is not None:
            values["id"] = new_id
            self.uow.audit.record(f"ledger.{kind}", "ledger_entry", new_id, customer_id=customer_id, values=values)
            return LedgerEntry(**values), True
        existing = self.entry(key, latest=True)
        if existing is None:  # not a key conflict (INSERT IGNORE also skips other errors): raise the real one
            inserted_id(conn.execute(ledger.insert().values(values)))
            raise AssertionError("unreachable: the insert above fails")
        return existing, False


def _totals_table() -> Table:
    """Points per customer of one bulk credit or expiry (temporary: this connection's own)."""
    return Table("tmp_loyalty_new_totals", MetaData(), Column("customer_id", Integer, primary_key=True),
                 Column("total", BigInteger, nullable=False), prefixes=["TEMPORARY"])


def _count(conn: Connection, where: ColumnElement[bool]) -> int:
    return int(conn.execute(select(func.count()).select_from(ledger).where(where)).scalar_one())


def _used_by_batch() -> Any:
    """Points allocated so far per batch (subquery: batch_id, used)."""
    return select(allocations.c.batch_id, func.sum(allocations.c.points).label("used")).group_by(
        allocations.c.batch_id).subquery("used")


def _check_points(points: int) -> None:
    if isinstance(points, bool) or not isinstance(points, int) or points <= 0:
        raise ValidationError.single("points", f"must be a positive whole number, got {points!r}", "loyalty entry")
