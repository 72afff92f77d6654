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

import uuid
from collections.abc import Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Any

import attrs
from sqlalchemy import and_, bindparam, func, select, update

from .components import Component, build_options
from .entities import Deal, Stage, StageOutcome
from .errors import InsufficientPoints, ValidationError
from .registry import Registry
from .store import tables
from .store.upsert import insert_ignore

if TYPE_CHECKING:
    from .app import CRM
    from .uow import UnitOfWork

ledger = tables.loyalty_ledger
accounts = tables.loyalty_accounts
KINDS = ("earn", "redeem", "expire", "adjust", "reverse")


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


class LoyaltyScheme(Component):
    """Base class of loyalty schemes; override what the scheme decides."""

    def points_for_deal(self, uow: "UnitOfWork", deal: Deal, options: Any) -> int:
        """Points a deal earns when it is won (0 for none)."""
        return 0

    def expires_at(self, uow: "UnitOfWork", earned_at: datetime, options: Any) -> datetime | None:
        """When points earned at ``earned_at`` expire (None: never)."""
        return None

    def tier_for(self, uow: "UnitOfWork", customer_id: int, balance: int, options: Any) -> str | None:
        """The tier the customer belongs in now, or None if the scheme has no tiers."""
        return None


class LoyaltyLedger:
    """The ledger operations of one unit of work (``uow.loyalty``)."""

    def __init__(self, uow: "UnitOfWork"):
        self.uow = uow

    def balance(self, customer_id: int, scheme: str) -> int:
        row = self.uow.conn.execute(select(accounts.c.balance).where(
            accounts.c.customer_id == customer_id, accounts.c.scheme == scheme)).first()
        return row[0] if row else 0

    def tier(self, customer_id: int, scheme: str) -> str | None:
        return self.uow.conn.execute(select(accounts.c.tier).where(
            accounts.c.customer_id == customer_id, accounts.c.scheme == scheme)).scalar()

    def entry(self, key: str) -> LedgerEntry | None:
        row = self.uow.conn.execute(select(ledger).where(ledger.c.idempotency_key == key)).first()
        return LedgerEntry(**row._mapping) if row else None

    def credit(self, customer_id: int, scheme: str, points: int, key: str, kind: str = "earn",
               **fields: Any) -> LedgerEntry:
        """Add points (earn, adjust up).  Replaying ``key`` returns the first entry."""
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
        """Take points (redeem, expire, reverse, adjust down); never below zero.

        With ``partial`` the debit takes what is there and records the
        shortfall in ``details``; otherwise too few points raise
        :class:`InsufficientPoints` and nothing is written.
        """
        _check_points(points)
        existing = self.entry(key)
        if existing is not None:
            return existing
        self._ensure_account(customer_id, scheme)
        if self._take(customer_id, scheme, points):
            taken = points
        elif not partial:
            raise InsufficientPoints(customer_id, scheme, points, self.balance(customer_id, scheme))
        else:
            available = self.balance(customer_id, scheme)
            taken = available if available and self._take(customer_id, scheme, available) else 0
            fields = {**fields, "details": {**(fields.get("details") or {}), "requested": points,
                                            "shortfall": points - taken}}
        return self._append(customer_id, scheme, kind, -taken, key, fields)

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
                  "details": fields.get("details")}
        values["id"] = self.uow.conn.execute(ledger.insert().values(values)).inserted_primary_key[0]
        entry = LedgerEntry(**values)
        self.uow.crm.loyalty.evaluate_tier(self.uow, customer_id, scheme)
        return entry


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
            options = self.options(scheme)
            credits = []
            for deal in won:
                points = scheme.points_for_deal(uow, deal, options)
                if points > 0:
                    earned_at = deal.closed_at or uow.now
                    credits.append({"customer_id": deal.customer_id, "points": points, "deal_id": deal.id,
                                    "key": f"{scheme.name}:deal:{deal.id}:earn:import", "occurred_at": earned_at,
                                    "expires_at": scheme.expires_at(uow, earned_at, options),
                                    "reason": f"deal {deal.id} won"})
            uow.loyalty.credit_many(scheme.name, credits)

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
        with self.crm.unit() as uow:
            self.crm.authorize("loyalty.redeem", customer_id)
            uow.customers.get(customer_id)
            key = key or f"{scheme}:redeem:{customer_id}:{uow.now.isoformat()}:{_nonce()}"
            return uow.loyalty.debit(customer_id, scheme, points, key=key, kind="redeem", reason=reason)

    def adjust(self, customer_id: int, points: int, scheme: str, reason: str, key: str | None = None) -> LedgerEntry:
        """A manual correction (positive or negative), recorded with the acting user."""
        self.registry.get(scheme)
        if not reason or not reason.strip():
            raise ValidationError.single("reason", "an adjustment needs a reason", "loyalty entry")
        if isinstance(points, bool) or not isinstance(points, int) or points == 0:
            raise ValidationError.single("points", f"must be a non-zero whole number, got {points!r}",
                                         "loyalty entry")
        with self.crm.unit() as uow:
            self.crm.authorize("loyalty.adjust", customer_id)
            uow.customers.get(customer_id)
            key = key or f"{scheme}:adjust:{customer_id}:{uow.now.isoformat()}:{_nonce()}"
            if points > 0:
                return uow.loyalty.credit(customer_id, scheme, points, key=key, kind="adjust", reason=reason)
            return uow.loyalty.debit(customer_id, scheme, -points, key=key, kind="adjust", reason=reason)

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


def _nonce() -> str:
    return uuid.uuid4().hex[:12]
