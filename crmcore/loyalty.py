"""Loyalty: schemes from plugins, an append-only points ledger in the core.

The ledger (``loyalty_ledger``) is the truth: every change of points is a new
entry (earn, redeem, expire, adjust, reverse) with a unique idempotency key, so
replaying a job changes nothing.  ``loyalty_accounts`` holds the balance
derived from it, updated in the same transaction with a conditional
``UPDATE ... WHERE balance >= n``; that statement (and a CHECK constraint) is
what keeps a balance from going negative when two processes redeem at once.

Schemes decide how many points a won deal earns, when they expire and which
tier applies; the engine earns on entering a won stage and reverses what a deal
earned when it leaves won.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Mapping
from datetime import date, datetime
from typing import TYPE_CHECKING, Any, TypeVar

import attrs
from sqlalchemy import JSON, String, and_, bindparam, cast, exists, func, insert, literal, or_, select, update
from sqlalchemy.exc import DBAPIError
from sqlalchemy.sql import ColumnElement, Select

from .components import Component, EngineContext, build_options
from .entities import Deal, Stage, StageOutcome
from .errors import CRMError, InsufficientPoints, UnknownComponent, ValidationError
from .registry import Registry
from .store import tables
from .store.upsert import insert_ignore

if TYPE_CHECKING:
    from .app import CRM
    from .uow import UnitOfWork

ledger = tables.loyalty_ledger
accounts = tables.loyalty_accounts
allocations = tables.loyalty_allocations
T = TypeVar("T")
DEADLOCK_ATTEMPTS = 3
KINDS = ("earn", "bonus", "redeem", "expire", "adjust", "reverse")
# Columns a set-based credit (``LoyaltyLedger.insert_credits``) selects, in this order.
CREDIT_COLUMNS = ("customer_id", "points", "idempotency_key", "deal_id", "expires_at", "reason", "occurred_at",
                  "kind", "details")


@attrs.frozen
class LedgerEntry:
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


class LoyaltyContext(EngineContext):
    """What a scheme's SQL paths and jobs see: the unit of work and ``as_of``."""


class LoyaltyScheme(Component):
    """Base class of loyalty schemes; override what the scheme decides.

    The first three methods are the per-deal rules the engine asks when a deal
    is won.  The others are optional capabilities the engine and ``crm
    loyalty`` use when a scheme provides them (the defaults do nothing).
    """

    def points_for_deal(self, uow: "UnitOfWork", deal: Deal, options: Any) -> int:
        """Points a deal earns when it is won (0 for none)."""
        return 0

    def expires_at(self, uow: "UnitOfWork", earned_at: datetime, options: Any) -> datetime | None:
        """When points earned at ``earned_at`` expire (None: never)."""
        return None

    def tier_for(self, uow: "UnitOfWork", customer_id: int, balance: int, options: Any) -> str | None:
        """The tier the customer belongs in now, or None if the scheme has no tiers."""
        return None

    def earn_select(self, ctx: LoyaltyContext, options: Any, where: list[ColumnElement]) -> Select | None:
        """The set-based earn path: a SELECT over ``tables.deals`` filtered by ``where``.

        Columns (labelled): ``deal_id``, ``customer_id``, ``points`` (int),
        ``occurred_at`` and ``expires_at``.  The engine inserts its rows with
        positive points in one ``INSERT ... SELECT`` (batch earn job, bulk
        imports).  None (the default): the engine asks ``points_for_deal`` per deal.
        """
        return None

    def run(self, ctx: LoyaltyContext, options: Any) -> int:
        """The scheme's periodic job as of ``ctx.as_of`` (bonuses, tier evaluation).

        Must be idempotent: every entry it writes has a deterministic key, so a
        second run changes nothing.  Returns the number of changes made.
        """
        return 0

    def status(self, ctx: LoyaltyContext, customer_id: int, options: Any) -> dict[str, Any]:
        """Extra member status for ``crm loyalty balance`` (e.g. tier progress)."""
        return {}

    def rewards(self, ctx: LoyaltyContext, options: Any) -> list[dict[str, Any]]:
        """The scheme's reward catalogue: dicts with at least ``name`` and ``cost``."""
        return []

    def redeem_reward(self, ctx: LoyaltyContext, customer_id: int, reward: str, options: Any) -> dict[str, Any]:
        """Exchange points for ``reward`` inside ``ctx.uow``; returns what was issued."""
        raise CRMError(f"loyalty scheme {self.name!r} has no rewards")

    def refer(self, ctx: LoyaltyContext, referee_id: int, referrer_id: int, options: Any) -> dict[str, Any]:
        """Record that ``referrer_id`` referred ``referee_id``."""
        raise CRMError(f"loyalty scheme {self.name!r} does not record referrals")


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

    def balance(self, customer_id: int, scheme: str) -> int:
        row = self.uow.conn.execute(select(accounts.c.balance).where(
            accounts.c.customer_id == customer_id, accounts.c.scheme == scheme)).first()
        return int(row[0]) if row else 0

    def tier(self, customer_id: int, scheme: str) -> str | None:
        return self.uow.conn.execute(select(accounts.c.tier).where(
            accounts.c.customer_id == customer_id, accounts.c.scheme == scheme)).scalar()

    def entry(self, key: str) -> LedgerEntry | None:
        row = self.uow.conn.execute(select(ledger).where(ledger.c.idempotency_key == key)).first()
        return LedgerEntry(**row._mapping) if row else None

    def credit(self, customer_id: int, scheme: str, points: int, key: str, kind: str = "earn",
               **fields: Any) -> LedgerEntry:
        """Add points (earn, bonus, adjust up) as a new batch.  Replaying ``key`` returns the first entry."""
        _check_points(points)
        existing = self.entry(key)
        if existing is not None:
            return existing
        self._ensure_account(customer_id, scheme)
        self.uow.conn.execute(update(accounts).where(
            accounts.c.customer_id == customer_id, accounts.c.scheme == scheme).values(
            balance=accounts.c.balance + points, updated_at=self.uow.now))
        return self._append(customer_id, scheme, kind, points, key, fields)

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
        self.expire(self.uow.now, scheme=scheme, customer_id=customer_id)
        if self._take(customer_id, scheme, points):
            taken = points
        elif not partial:
            raise InsufficientPoints(customer_id, scheme, points, self.balance(customer_id, scheme))
        else:
            available = self.balance(customer_id, scheme)
            taken = available if available and self._take(customer_id, scheme, available) else 0
            fields = {**fields, "details": {**(fields.get("details") or {}), "requested": points,
                                            "shortfall": points - taken}}
        entry = self._append(customer_id, scheme, kind, -taken, key, fields)
        if taken:
            self._allocate(entry.id, customer_id, scheme, taken, prefer_deal=fields.get("deal_id"))
        return entry

    def set_tier(self, customer_id: int, scheme: str, tier: str | None) -> bool:
        """Store a customer's tier in a scheme; fires ``on_loyalty_tier_changed`` if it changed."""
        self._ensure_account(customer_id, scheme)
        old = self.tier(customer_id, scheme)
        if old == tier:
            return False
        self.uow.conn.execute(update(accounts).where(
            accounts.c.customer_id == customer_id, accounts.c.scheme == scheme).values(
            tier=tier, updated_at=self.uow.now))
        self.uow.fire("on_loyalty_tier_changed", customer_id=customer_id, scheme=scheme, old=old, new=tier)
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
        """Bulk credit: one ledger row per item, balances updated per customer.

        Each item has ``customer_id``, ``points``, ``key`` and optionally
        ``kind`` (default earn), ``deal_id``, ``expires_at``, ``reason``,
        ``occurred_at``, ``details``.  Keys already in the ledger are skipped, so
        a replayed batch changes nothing.  Returns the number of new entries.
        A few statements per batch instead of five per entry.
        """
        for item in credits:
            _check_points(item["points"])
        conn = self.uow.conn
        keys = [item["key"] for item in credits]
        seen: set[str] = set()
        for start in range(0, len(keys), 5000):
            chunk = keys[start:start + 5000]
            seen.update(conn.execute(select(ledger.c.idempotency_key).where(
                ledger.c.idempotency_key.in_(chunk))).scalars())
        fresh = []
        for item in credits:
            if item["key"] not in seen:
                seen.add(item["key"])
                fresh.append(item)
        if not fresh:
            return 0
        totals: dict[int, int] = {}
        for item in fresh:
            totals[item["customer_id"]] = totals.get(item["customer_id"], 0) + item["points"]
        self._ensure_accounts(scheme, list(totals))
        conn.execute(update(accounts).where(
            accounts.c.customer_id == bindparam("cid"), accounts.c.scheme == scheme).values(
            balance=accounts.c.balance + bindparam("add"), updated_at=self.uow.now),
            [{"cid": cid, "add": add} for cid, add in totals.items()])
        conn.execute(ledger.insert(), [{
            "customer_id": item["customer_id"], "scheme": scheme, "kind": item.get("kind", "earn"),
            "points": item["points"], "idempotency_key": item["key"], "deal_id": item.get("deal_id"),
            "expires_at": item.get("expires_at"), "reason": item.get("reason"), "actor": self.uow.actor,
            "occurred_at": item.get("occurred_at") or self.uow.now, "details": item.get("details")}
            for item in fresh])
        self.uow.crm.loyalty.evaluate_tiers(self.uow, scheme, list(totals))
        return len(fresh)

    def insert_credits(self, scheme: str, source: Select, key_like: str) -> int:
        """Set-based credit: ``INSERT INTO ledger ... SELECT`` plus one balance update.

        ``source`` selects the columns of :data:`CREDIT_COLUMNS` (labelled) with
        positive ``points`` and keys not yet in the ledger (``NOT EXISTS`` on
        the key: a duplicate key fails the whole statement).  ``key_like`` is a LIKE pattern matching every key
        this job writes, and only those, so the balance update counts exactly
        the new rows even when other transactions write to the ledger.
        Returns the number of entries written.
        """
        conn = self.uow.conn
        before = conn.execute(select(func.coalesce(func.max(ledger.c.id), 0))).scalar_one()
        src = source.subquery("credit_source")
        rows = select(*(src.c[name] for name in CREDIT_COLUMNS), literal(scheme).label("scheme"),
                      literal(self.uow.actor, String).label("actor"))
        conn.execute(insert(ledger).from_select([*CREDIT_COLUMNS, "scheme", "actor"], rows))
        new = and_(ledger.c.id > before, ledger.c.scheme == scheme, ledger.c.idempotency_key.like(key_like))
        written = _count(conn, new)  # rowcount of INSERT ... SELECT is -1 with psycopg
        if written:
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
        conn.execute(insert(allocations).from_select(
            ["debit_id", "batch_id", "points"], select(ledger.c.id, ledger.c.batch_id, -ledger.c.points).where(
                *new, ~exists().where(allocations.c.debit_id == ledger.c.id))))
        for name in ([scheme] if scheme else self._schemes_with(and_(*new))):
            self._apply_new_entries(name, and_(*new, ledger.c.scheme == name), ensure=False)
        return written

    # -- internals -------------------------------------------------------------
    def _lock_due_accounts(self, used: Any, where: list[ColumnElement]) -> None:
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

    def _schemes_with(self, where: ColumnElement) -> list[str]:
        return list(self.uow.conn.execute(select(ledger.c.scheme).where(where).distinct()).scalars())

    def _apply_new_entries(self, scheme: str, new: ColumnElement, ensure: bool = True) -> None:
        """Add the points of the ledger rows matching ``new`` to their accounts.

        Existing accounts get one ``UPDATE ... FROM`` the per-customer totals;
        missing ones (``ensure``) are inserted with their total.
        """
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
        existing: set[int] = set()
        for start in range(0, len(customer_ids), 5000):
            chunk = customer_ids[start:start + 5000]
            existing.update(self.uow.conn.execute(select(accounts.c.customer_id).where(
                accounts.c.scheme == scheme, accounts.c.customer_id.in_(chunk))).scalars())
        for cid in customer_ids:
            if cid not in existing:
                insert_ignore(self.uow.conn, accounts, {"customer_id": cid, "scheme": scheme, "balance": 0,
                                                        "updated_at": self.uow.now})

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
                fields: Mapping[str, Any]) -> LedgerEntry:
        values = {"customer_id": customer_id, "scheme": scheme, "kind": kind, "points": points,
                  "idempotency_key": key, "occurred_at": fields.get("occurred_at") or self.uow.now,
                  "actor": self.uow.actor, "deal_id": fields.get("deal_id"),
                  "expires_at": fields.get("expires_at"), "reason": fields.get("reason"),
                  "details": fields.get("details"), "batch_id": None}
        values["id"] = self.uow.conn.execute(ledger.insert().values(values)).inserted_primary_key[0]
        entry = LedgerEntry(**values)
        self.uow.crm.loyalty.evaluate_tier(self.uow, customer_id, scheme)
        return entry


def _count(conn: Any, where: ColumnElement) -> int:
    return int(conn.execute(select(func.count()).select_from(ledger).where(where)).scalar_one())


def _used_by_batch() -> Any:
    """Points allocated so far per batch (subquery: batch_id, used)."""
    return select(allocations.c.batch_id, func.sum(allocations.c.points).label("used")).group_by(
        allocations.c.batch_id).subquery("used")


def _check_points(points: int) -> None:
    if isinstance(points, bool) or not isinstance(points, int) or points <= 0:
        raise ValidationError.single("points", f"must be a positive whole number, got {points!r}", "loyalty entry")


class LoyaltyEngine:
    """``crm.loyalty``: schemes, balances, history, redemption and adjustments."""

    def __init__(self, crm: "CRM"):
        self.crm = crm
        self.registry: Registry[LoyaltyScheme] = Registry("loyalty scheme")
        self._options: dict[str, Any] = {}

    def schemes(self) -> list[LoyaltyScheme]:
        return list(self.registry)

    def options(self, scheme: LoyaltyScheme) -> Any:
        """The scheme's configured options (built once: configuration does not change)."""
        if scheme.name not in self._options:
            self._options[scheme.name] = build_options(scheme, "loyalty", self.crm.config, None)
        return self._options[scheme.name]

    # -- deal events (called by the deal use cases) ---------------------------
    def deal_stage_changed(self, uow: "UnitOfWork", deal: Deal, old: Stage | None, new: Stage | None,
                           transition_id: int) -> None:
        was_won = old is not None and old.outcome is StageOutcome.WON
        is_won = new is not None and new.outcome is StageOutcome.WON
        if was_won == is_won:
            return
        for scheme in self.registry:
            if is_won:
                self._earn(uow, scheme, deal, transition_id)
            else:
                self._reverse(uow, scheme, deal, transition_id)

    def deals_imported(self, uow: "UnitOfWork", deals: list[Deal]) -> None:
        """Earn, in bulk, for deals that arrive already won through a bulk path."""
        if not len(self.registry):
            return
        won = [d for d in deals if (stage := self.crm.stage_of(d)) is not None and stage.outcome is StageOutcome.WON]
        for scheme in self.registry:
            if won and type(scheme).earn_select is not LoyaltyScheme.earn_select:
                ids = [d.id for d in won]
                for start in range(0, len(ids), 5000):
                    self._earn_where(uow, scheme, [tables.deals.c.id.in_(ids[start:start + 5000])], "import",
                                     uow.now)
                continue
            self._credit_deals(uow, scheme, self.options(scheme), won, "import")

    def evaluate_tiers(self, uow: "UnitOfWork", scheme_name: str, customer_ids: list[int]) -> None:
        """Re-evaluate tiers after a bulk change (skipped for schemes without tiers)."""
        scheme = self.registry.get(scheme_name) if scheme_name in self.registry else None
        if scheme is None or type(scheme).tier_for is LoyaltyScheme.tier_for:
            return
        for customer_id in customer_ids:
            self.evaluate_tier(uow, customer_id, scheme_name)

    def _earn(self, uow: "UnitOfWork", scheme: LoyaltyScheme, deal: Deal, transition_id: int | str) -> None:
        options = self.options(scheme)
        points = scheme.points_for_deal(uow, deal, options)
        if points > 0:
            earned_at = deal.closed_at or uow.now
            uow.loyalty.credit(deal.customer_id, scheme.name, points,
                               key=f"{scheme.name}:deal:{deal.id}:earn:{transition_id}", kind="earn",
                               deal_id=deal.id, occurred_at=earned_at,
                               expires_at=scheme.expires_at(uow, earned_at, options),
                               reason=f"deal {deal.id} won")

    def _reverse(self, uow: "UnitOfWork", scheme: LoyaltyScheme, deal: Deal, transition_id: int) -> None:
        net = uow.loyalty.net_for_deal(deal.id, scheme.name)
        if net > 0:
            uow.loyalty.debit(deal.customer_id, scheme.name, net, partial=True,
                              key=f"{scheme.name}:deal:{deal.id}:reverse:{transition_id}", kind="reverse",
                              deal_id=deal.id, reason=f"deal {deal.id} left won ({deal.stage})")

    def evaluate_tier(self, uow: "UnitOfWork", customer_id: int, scheme_name: str) -> None:
        if scheme_name not in self.registry:
            return
        scheme = self.registry.get(scheme_name)
        if type(scheme).tier_for is LoyaltyScheme.tier_for:  # no tiers: nothing to evaluate
            return
        old = uow.loyalty.tier(customer_id, scheme_name)
        new = scheme.tier_for(uow, customer_id, uow.loyalty.balance(customer_id, scheme_name), self.options(scheme))
        if new != old:
            uow.conn.execute(update(accounts).where(
                accounts.c.customer_id == customer_id, accounts.c.scheme == scheme_name).values(tier=new))
            uow.fire("on_loyalty_tier_changed", customer_id=customer_id, scheme=scheme_name, old=old, new=new)

    # -- batch jobs --------------------------------------------------------------
    def context(self, uow: "UnitOfWork", as_of: datetime | None = None) -> LoyaltyContext:
        return LoyaltyContext(uow, as_of or uow.now)

    def earn_won_deals(self, as_of: str | date | datetime | None = None,
                       scheme: str | None = None) -> dict[str, int]:
        """Catch up: earn for every won deal (closed by ``as_of``) that has not earned in a scheme.

        The batch job behind ``crm loyalty earn``: one ``INSERT ... SELECT``
        per scheme that has :meth:`LoyaltyScheme.earn_select`, keys
        ``<scheme>:deal:<id>:earn:batch``; a deal that already earned (by a
        stage change, an import or an earlier run) is skipped, so a rerun
        writes nothing.  Returns the entries written per scheme.
        """
        moment = self.crm.as_of(as_of)
        names = [scheme] if scheme else self.registry.names()
        written: dict[str, int] = {}
        with self.crm.unit() as uow:
            self.crm.authorize("loyalty.earn", None)
            for name in names:
                target = self.registry.get(name)
                earned = exists().where(ledger.c.deal_id == tables.deals.c.id, ledger.c.scheme == name,
                                        ledger.c.kind == "earn")
                where = [self._won_stage_filter(), tables.deals.c.closed_at <= moment, ~earned]
                written[name] = self._earn_where(uow, target, where, "batch", moment)
        return written

    def _won_stage_filter(self) -> ColumnElement:
        deals = tables.deals
        return or_(*(and_(deals.c.pipeline == pipeline.name,
                          deals.c.stage.in_([s.name for s in pipeline.stages if s.outcome is StageOutcome.WON]))
                     for pipeline in self.crm.config.pipelines.values()))

    def _earn_where(self, uow: "UnitOfWork", scheme: LoyaltyScheme, where: list[ColumnElement], suffix: str,
                    as_of: datetime) -> int:
        """Earn for the deals matching ``where``: set-based if the scheme can, else in chunks."""
        options = self.options(scheme)
        source = scheme.earn_select(self.context(uow, as_of), options, where)
        if source is not None:
            src = source.subquery("earn")
            key = literal(f"{scheme.name}:deal:") + cast(src.c.deal_id, String) + literal(f":earn:{suffix}")
            rows = select(src.c.customer_id, src.c.points, key.label("idempotency_key"), src.c.deal_id,
                          src.c.expires_at, (literal("deal ") + cast(src.c.deal_id, String) + literal(" won"))
                          .label("reason"), src.c.occurred_at, literal("earn").label("kind"),
                          literal(None, JSON(none_as_null=True)).label("details")).where(src.c.points > 0)
            # No key check per row: callers pass only deals without an earn entry in
            # this scheme (or new ones), and the unique key is the last line of defence.
            return uow.loyalty.insert_credits(scheme.name, rows, f"{scheme.name}:deal:%:earn:{suffix}")
        total, last = 0, 0
        while True:  # keyset pages: bounded memory whatever the number of deals
            rows = uow.conn.execute(select(tables.deals).where(*where, tables.deals.c.id > last).order_by(
                tables.deals.c.id).limit(5000)).all()
            if not rows:
                return total
            total += self._credit_deals(uow, scheme, options, [uow.deals.from_row(r._mapping) for r in rows],
                                        suffix)
            last = rows[-1].id

    def _credit_deals(self, uow: "UnitOfWork", scheme: LoyaltyScheme, options: Any, deals: list[Deal],
                      suffix: str) -> int:
        credits = []
        for deal in deals:
            points = scheme.points_for_deal(uow, deal, options)
            if points > 0:
                earned_at = deal.closed_at or uow.now
                credits.append({"customer_id": deal.customer_id, "points": points, "deal_id": deal.id,
                                "key": f"{scheme.name}:deal:{deal.id}:earn:{suffix}", "occurred_at": earned_at,
                                "expires_at": scheme.expires_at(uow, earned_at, options),
                                "reason": f"deal {deal.id} won"})
        return uow.loyalty.credit_many(scheme.name, credits) if credits else 0

    def expire(self, as_of: str | date | datetime | None = None, scheme: str | None = None) -> int:
        """Expire every batch past its expiry as of ``as_of`` (idempotent); returns the entries written."""
        moment = self.crm.as_of(as_of)
        if scheme:
            self.registry.get(scheme)
        def work(uow: UnitOfWork) -> int:
            self.crm.authorize("loyalty.expire", scheme)
            return uow.loyalty.expire(moment, scheme=scheme)
        return self._retrying(work)

    def run(self, as_of: str | date | datetime | None = None, scheme: str | None = None) -> dict[str, int]:
        """Run each scheme's periodic job (birthday bonuses, tier evaluation, referral bonuses)."""
        moment = self.crm.as_of(as_of)
        names = [scheme] if scheme else self.registry.names()
        done: dict[str, int] = {}
        with self.crm.unit() as uow:
            self.crm.authorize("loyalty.run", scheme)
            for name in names:
                target = self.registry.get(name)
                done[name] = target.run(self.context(uow, moment), self.options(target))
        return done

    # -- member views --------------------------------------------------------------
    def status(self, customer_id: int, as_of: str | date | datetime | None = None) -> list[dict[str, Any]]:
        """Per scheme: balance, available (less points past expiry), expiring by date, tier, scheme extras."""
        moment = self.crm.as_of(as_of)
        rows = []
        with self.crm.unit(readonly=True) as uow:
            self.crm.authorize("loyalty.read", customer_id)
            uow.customers.get(customer_id)
            ctx = self.context(uow, moment)
            for scheme in self.registry:
                balance = uow.loyalty.balance(customer_id, scheme.name)
                expiring: dict[str, int] = {}
                due = 0
                for batch in uow.loyalty.batches(customer_id, scheme.name):
                    if batch["expires_at"] is None:
                        continue
                    if batch["expires_at"] <= moment:
                        due += batch["remaining"]
                    else:
                        day = batch["expires_at"].date().isoformat()
                        expiring[day] = expiring.get(day, 0) + batch["remaining"]
                extra = scheme.status(ctx, customer_id, self.options(scheme))
                if not balance and not expiring and not extra and uow.loyalty.tier(customer_id, scheme.name) is None:
                    continue
                rows.append({"scheme": scheme.name, "balance": balance, "available": balance - due,
                             "expiring": dict(sorted(expiring.items())),
                             "tier": uow.loyalty.tier(customer_id, scheme.name), **extra})
        return rows

    def tier_distribution(self, scheme: str | None = None) -> list[dict[str, Any]]:
        """Members per tier and scheme (customers with an account in the scheme)."""
        query = select(accounts.c.scheme, accounts.c.tier, func.count().label("members")).group_by(
            accounts.c.scheme, accounts.c.tier).order_by(accounts.c.scheme, accounts.c.tier)
        if scheme:
            query = query.where(accounts.c.scheme == scheme)
        with self.crm.unit(readonly=True) as uow:
            return [{"scheme": s, "tier": t, "members": int(n)} for s, t, n in uow.conn.execute(query)]

    # -- rewards and referrals ------------------------------------------------------
    def rewards(self, as_of: str | date | datetime | None = None) -> list[dict[str, Any]]:
        """Every scheme's reward catalogue, each row with its ``scheme``."""
        moment = self.crm.as_of(as_of)
        with self.crm.unit(readonly=True) as uow:
            ctx = self.context(uow, moment)
            return [{"scheme": s.name, **r} for s in self.registry for r in s.rewards(ctx, self.options(s))]

    def redeem_reward(self, customer_id: int, reward: str, as_of: str | date | datetime | None = None,
                      ) -> dict[str, Any]:
        """Exchange points for a catalogue reward; balance and stock are checked atomically."""
        moment = self.crm.as_of(as_of)

        def work(uow: UnitOfWork) -> dict[str, Any]:
            self.crm.authorize("loyalty.redeem", customer_id)
            uow.customers.get(customer_id)
            ctx = self.context(uow, moment)
            offered = {r["name"]: s for s in self.registry for r in s.rewards(ctx, self.options(s))}
            if reward not in offered:
                raise UnknownComponent("reward", reward, list(offered))
            scheme = offered[reward]
            return {"scheme": scheme.name, **scheme.redeem_reward(ctx, customer_id, reward, self.options(scheme))}
        return self._retrying(work)

    def refer(self, referee_id: int, referrer_id: int, scheme: str | None = None) -> dict[str, Any]:
        """Record that ``referrer_id`` referred ``referee_id`` (in the scheme that records referrals)."""
        candidates = [s for s in self.registry if type(s).refer is not LoyaltyScheme.refer]
        if scheme:
            candidates = [self.registry.get(scheme)]
        if len(candidates) != 1:
            raise CRMError("no loyalty scheme records referrals" if not candidates else
                           f"choose a referral scheme: {', '.join(s.name for s in candidates)}")
        with self.crm.unit() as uow:
            self.crm.authorize("loyalty.refer", referee_id)
            uow.customers.get(referee_id)
            uow.customers.get(referrer_id)
            return candidates[0].refer(self.context(uow), referee_id, referrer_id, self.options(candidates[0]))

    # -- integrity -----------------------------------------------------------------
    def recompute(self, fix: bool = False) -> list[dict[str, Any]]:
        """Compare derived state with the ledger; with ``fix`` rebuild balances from it.

        Reports accounts whose balance differs from the sum of their entries
        and debits whose FIFO allocations do not add up to the points taken.
        """
        drift = [{"problem": "balance", "customer_id": c, "scheme": s, "stored": int(b), "ledger": int(t)}
                 for c, s, b, t in self.drift()]
        given = select(allocations.c.debit_id, func.sum(allocations.c.points).label("given")).group_by(
            allocations.c.debit_id).subquery()
        short = select(ledger.c.id, ledger.c.customer_id, ledger.c.scheme, ledger.c.points,
                       func.coalesce(given.c.given, 0)).select_from(
            ledger.outerjoin(given, given.c.debit_id == ledger.c.id)).where(
            ledger.c.points < 0, -ledger.c.points != func.coalesce(given.c.given, 0))
        with self.crm.unit(readonly=not fix) as uow:
            drift += [{"problem": "allocation", "entry_id": i, "customer_id": c, "scheme": s,
                       "stored": int(g), "ledger": -int(p)} for i, c, s, p, g in uow.conn.execute(short)]
            if fix and any(d["problem"] == "balance" for d in drift):
                total = select(func.coalesce(func.sum(ledger.c.points), 0)).where(
                    ledger.c.customer_id == accounts.c.customer_id, ledger.c.scheme == accounts.c.scheme
                ).scalar_subquery()
                uow.conn.execute(update(accounts).values(balance=total, updated_at=uow.now).where(
                    accounts.c.balance != total))
        return drift

    # -- use cases -------------------------------------------------------------
    def balance(self, customer_id: int, scheme: str) -> int:
        """Points available now."""
        with self.crm.unit(readonly=True) as uow:
            self.crm.authorize("loyalty.read", customer_id)
            return uow.loyalty.balance(customer_id, scheme)

    def history(self, customer_id: int, scheme: str | None = None) -> list[LedgerEntry]:
        query = select(ledger).where(ledger.c.customer_id == customer_id).order_by(ledger.c.id)
        if scheme:
            query = query.where(ledger.c.scheme == scheme)
        with self.crm.unit(readonly=True) as uow:
            self.crm.authorize("loyalty.read", customer_id)
            return [LedgerEntry(**r._mapping) for r in uow.conn.execute(query)]

    def redeem(self, customer_id: int, points: int, scheme: str, reason: str | None = None,
               key: str | None = None) -> LedgerEntry:
        """Spend points; :class:`InsufficientPoints` if the balance is short."""
        self.registry.get(scheme)

        def work(uow: UnitOfWork) -> LedgerEntry:
            self.crm.authorize("loyalty.redeem", customer_id)
            uow.customers.get(customer_id)
            entry_key = key or f"{scheme}:redeem:{customer_id}:{uow.now.isoformat()}:{_nonce()}"
            return uow.loyalty.debit(customer_id, scheme, points, key=entry_key, kind="redeem", reason=reason)
        return self._retrying(work)

    def adjust(self, customer_id: int, points: int, scheme: str, reason: str, key: str | None = None) -> LedgerEntry:
        """A manual correction (positive or negative), recorded with the acting user."""
        self.registry.get(scheme)
        if not reason or not reason.strip():
            raise ValidationError.single("reason", "an adjustment needs a reason", "loyalty entry")
        if isinstance(points, bool) or not isinstance(points, int) or points == 0:
            raise ValidationError.single("points", f"must be a non-zero whole number, got {points!r}",
                                         "loyalty entry")
        def work(uow: UnitOfWork) -> LedgerEntry:
            self.crm.authorize("loyalty.adjust", customer_id)
            uow.customers.get(customer_id)
            entry_key = key or f"{scheme}:adjust:{customer_id}:{uow.now.isoformat()}:{_nonce()}"
            if points > 0:
                return uow.loyalty.credit(customer_id, scheme, points, key=entry_key, kind="adjust", reason=reason)
            return uow.loyalty.debit(customer_id, scheme, -points, key=entry_key, kind="adjust", reason=reason)
        return self._retrying(work)

    def _retrying(self, work: Callable[[UnitOfWork], T]) -> T:
        """Run ``work`` in a unit of work; rerun it if the database broke a deadlock.

        PostgreSQL and MariaDB resolve a lock cycle by aborting one
        transaction (e.g. the expiry job and a redemption of the same
        account); everything rolled back, so running it again is safe.  Inside
        a unit the caller opened, the error goes to the caller.
        """
        for attempt in range(1, DEADLOCK_ATTEMPTS + 1):
            joined = _unit_open(self.crm)
            try:
                with self.crm.unit() as uow:
                    return work(uow)
            except DBAPIError as exc:
                if joined or attempt == DEADLOCK_ATTEMPTS or not _is_deadlock(exc):
                    raise
                time.sleep(0.02 * attempt)
        raise AssertionError("unreachable")

    def balances(self, scheme: str) -> dict[int, int]:
        """Every customer's balance in a scheme."""
        with self.crm.unit(readonly=True) as uow:
            return dict(uow.conn.execute(select(accounts.c.customer_id, accounts.c.balance).where(
                accounts.c.scheme == scheme)).all())

    def drift(self, scheme: str | None = None) -> list[tuple[int, str, int, int]]:
        """Accounts whose stored balance differs from the ledger's sum: (customer, scheme, stored, ledger)."""
        sums = select(ledger.c.customer_id, ledger.c.scheme, func.sum(ledger.c.points).label("total")).group_by(
            ledger.c.customer_id, ledger.c.scheme).subquery()
        query = select(accounts.c.customer_id, accounts.c.scheme, accounts.c.balance,
                       func.coalesce(sums.c.total, 0)).outerjoin(
            sums, and_(sums.c.customer_id == accounts.c.customer_id, sums.c.scheme == accounts.c.scheme)).where(
            accounts.c.balance != func.coalesce(sums.c.total, 0))
        if scheme:
            query = query.where(accounts.c.scheme == scheme)
        with self.crm.unit(readonly=True) as uow:
            return [tuple(r) for r in uow.conn.execute(query)]


def _unit_open(crm: "CRM") -> bool:
    from .app import _current_unit  # the CRM's own record of the open unit of work

    current = _current_unit.get()
    return current is not None and current.crm is crm


def _is_deadlock(exc: DBAPIError) -> bool:
    """PostgreSQL deadlock_detected / serialization_failure, MySQL/MariaDB ER_LOCK_DEADLOCK."""
    orig = exc.orig
    return getattr(orig, "sqlstate", None) in ("40P01", "40001") or bool(
        getattr(orig, "args", None) and orig.args[0] == 1213)


def _nonce() -> str:
    return uuid.uuid4().hex[:12]
