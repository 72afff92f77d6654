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
from collections.abc import Callable
from datetime import date, datetime
from typing import TYPE_CHECKING, Any, TypeVar

from sqlalchemy import (
    func,
    select,
    update,
)
from sqlalchemy.exc import DBAPIError

from ..application.components import build_options
from ..application.registry import Registry
from ..application.uow import unit_open
from ..domain.entities import Deal, Stage, StageOutcome
from ..domain.errors import (
    CRMError,
    UnknownComponent,
    ValidationError,
)
from ..store import tables
from .jobs import LoyaltyJobs, earns_for_deals
from .ledger import (
    LedgerEntry,
    accounts,
    allocations,
    ledger,
)
from .scheme import LoyaltyContext, LoyaltyScheme

if TYPE_CHECKING:
    from ..app import CRM
    from ..application.uow import UnitOfWork

T = TypeVar("T")
DEADLOCK_ATTEMPTS = 3


class LoyaltyEngine(LoyaltyJobs):
    """``crm.loyalty``: schemes, balances, history, redemption and adjustments."""

    def __init__(self, crm: "CRM"):
        self.crm = crm
        self.registry: Registry[LoyaltyScheme] = Registry("loyalty scheme")
        self._options: dict[str, Any] = {}

    def schemes(self) -> list[LoyaltyScheme]:
        """The registered loyalty schemes."""
        self.crm.authorize("loyalty.schemes", None)
        return list(self.registry)

    def options(self, scheme: LoyaltyScheme) -> Any:
        """The scheme's configured options (built once: configuration does not change)."""
        if scheme.name not in self._options:
            self._options[scheme.name] = build_options(scheme, "loyalty", self.crm.config, None)
        return self._options[scheme.name]

    # -- deal events (called by the deal use cases) ---------------------------
    def deal_stage_changed(self, uow: "UnitOfWork", deal: Deal, old: Stage | None, new: Stage | None,
                           transition_id: int) -> None:
        """Earn when a deal enters a won stage and reverse when it leaves one, for every scheme."""
        was_won = old is not None and old.outcome is StageOutcome.WON
        is_won = new is not None and new.outcome is StageOutcome.WON
        if was_won == is_won:
            return
        if is_won and not uow.earn_points:  # a history load (--no-earn)
            return
        for scheme in self.registry:
            if is_won:
                self._earn(uow, scheme, deal, transition_id)
            else:
                self._reverse(uow, scheme, deal, transition_id)

    def deals_imported(self, uow: "UnitOfWork", deals: list[Deal]) -> None:
        """Earn, in bulk, for deals that arrive already won through a bulk path."""
        if not len(self.registry) or not uow.earn_points:
            return
        won = [d for d in deals if (stage := self.crm.stage_of(d)) is not None and stage.outcome is StageOutcome.WON]
        for scheme in self.registry:
            if not earns_for_deals(scheme):
                continue
            if won and type(scheme).earn_select is not LoyaltyScheme.earn_select:
                ids = [d.id for d in won]
                for start in range(0, len(ids), 5000):
                    self._earn_where(uow, scheme, [tables.deals.c.id.in_(ids[start:start + 5000])], "import",
                                     uow.now)
                continue
            self._credit_deals(uow, scheme, self.options(scheme), won, "import")

    def evaluate_tiers(self, uow: "UnitOfWork", scheme_name: str, customer_ids: list[int]) -> None:
        """Re-evaluate tiers after a bulk change (skipped for schemes without tiers).

        What :meth:`evaluate_tier` does per customer, in a few statements per
        5,000 customers: one read of balances and tiers, one ``UPDATE`` per new
        tier; the tier hooks fire for the changes (``LoyaltyLedger.tiers_changed``).
        """
        scheme = self.registry.get(scheme_name) if scheme_name in self.registry else None
        if scheme is None or type(scheme).tier_for is LoyaltyScheme.tier_for:
            return
        options = self.options(scheme)
        changed: list[tuple[int, str | None, str | None]] = []
        for start in range(0, len(customer_ids), 5000):  # one read per chunk, not two per customer
            chunk = customer_ids[start:start + 5000]
            held = {c: (int(b), t) for c, b, t in uow.conn.execute(select(
                accounts.c.customer_id, accounts.c.balance, accounts.c.tier).where(
                accounts.c.scheme == scheme_name, accounts.c.customer_id.in_(chunk)))}
            for customer_id in chunk:
                balance, old = held.get(customer_id, (0, None))
                new = scheme.tier_for(uow, customer_id, balance, options)
                if new != old:
                    changed.append((customer_id, old, new))
        by_tier: dict[str | None, list[int]] = {}
        for customer_id, _, new in changed:
            by_tier.setdefault(new, []).append(customer_id)
        for new, ids in by_tier.items():
            for start in range(0, len(ids), 5000):
                uow.conn.execute(update(accounts).where(accounts.c.scheme == scheme_name,
                                                        accounts.c.customer_id.in_(ids[start:start + 5000]))
                                 .values(tier=new))
        uow.loyalty.tiers_changed(scheme_name, changed)

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
        assert deal.id is not None, "a stored deal has an id"
        net = uow.loyalty.net_for_deal(deal.id, scheme.name)
        if net > 0:
            uow.loyalty.debit(deal.customer_id, scheme.name, net, partial=True,
                              key=f"{scheme.name}:deal:{deal.id}:reverse:{transition_id}", kind="reverse",
                              deal_id=deal.id, reason=f"deal {deal.id} left won ({deal.stage})")

    def evaluate_tier(self, uow: "UnitOfWork", customer_id: int, scheme_name: str) -> None:
        """Set the customer's tier in ``scheme_name`` from their balance (fires the tier hooks)."""
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
            uow.loyalty.tiers_changed(scheme_name, [(customer_id, old, new)])

    # -- batch jobs --------------------------------------------------------------
    def context(self, uow: "UnitOfWork", as_of: datetime | None = None) -> LoyaltyContext:
        """The context a scheme's SQL paths and jobs see: this unit of work and ``as_of``."""
        return LoyaltyContext(uow, as_of or uow.now)

    # -- member views --------------------------------------------------------------
    def status(self, customer_id: int, as_of: str | date | datetime | None = None) -> list[dict[str, Any]]:
        """Per scheme: balance, available (less points past expiry), expiring by date, tier, scheme extras."""
        moment = self.crm.as_of(as_of)
        rows = []
        with self.crm.unit(readonly=True) as uow:
            self.crm.authorize("loyalty.read", customer_id)
            with uow.scoped():  # NotFound for a customer the acting user cannot see
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
        self.crm.authorize("loyalty.tiers", scheme)
        query = select(accounts.c.scheme, accounts.c.tier, func.count().label("members")).group_by(
            accounts.c.scheme, accounts.c.tier).order_by(accounts.c.scheme, accounts.c.tier)
        if scheme:
            query = query.where(accounts.c.scheme == scheme)
        with self.crm.unit(readonly=True) as uow:
            return [{"scheme": s, "tier": t, "members": int(n)} for s, t, n in uow.conn.execute(query)]

    # -- rewards and referrals ------------------------------------------------------
    def rewards(self, as_of: str | date | datetime | None = None) -> list[dict[str, Any]]:
        """Every scheme's reward catalogue, each row with its ``scheme``."""
        self.crm.authorize("loyalty.rewards", None)
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
            with uow.scoped():  # NotFound for a customer the acting user cannot see
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
            with uow.scoped():  # both must be customers the acting user can see
                uow.customers.get(referee_id)
                uow.customers.get(referrer_id)
            return candidates[0].refer(self.context(uow), referee_id, referrer_id, self.options(candidates[0]))

    # -- integrity -----------------------------------------------------------------
    def recompute(self, fix: bool = False) -> list[dict[str, Any]]:
        """Compare derived state with the ledger; with ``fix`` rebuild balances from it.

        Reports accounts whose balance differs from the sum of their entries
        and debits whose FIFO allocations do not add up to the points taken.
        """
        self.crm.authorize("loyalty.recompute", "--fix" if fix else None)
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
        """The customer's ledger entries, oldest first (of one scheme if given)."""
        query = select(ledger).where(ledger.c.customer_id == customer_id).order_by(ledger.c.id)
        if scheme:
            query = query.where(ledger.c.scheme == scheme)
        with self.crm.unit(readonly=True) as uow:
            self.crm.authorize("loyalty.read", customer_id)
            with uow.scoped():  # NotFound (not an empty history) for a customer the user cannot see
                uow.customers.get(customer_id)
            return [LedgerEntry(**r._mapping) for r in uow.conn.execute(query)]

    def redeem(self, customer_id: int, points: int, scheme: str, reason: str | None = None,
               key: str | None = None) -> LedgerEntry:
        """Spend points; :class:`InsufficientPoints` if the balance is short."""
        self.registry.get(scheme)

        def work(uow: UnitOfWork) -> LedgerEntry:
            self.crm.authorize("loyalty.redeem", customer_id)
            with uow.scoped():  # NotFound for a customer the acting user cannot see
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
            with uow.scoped():  # NotFound for a customer the acting user cannot see
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
            joined = unit_open(self.crm)
            try:
                with self.crm.unit() as uow:
                    return work(uow)
            except DBAPIError as exc:
                if joined or attempt == DEADLOCK_ATTEMPTS or not _is_deadlock(exc):
                    raise
                time.sleep(0.02 * attempt)
        raise AssertionError("unreachable")


def _is_deadlock(exc: DBAPIError) -> bool:
    """PostgreSQL deadlock_detected / serialization_failure, MySQL/MariaDB ER_LOCK_DEADLOCK."""
    orig = exc.orig
    args = getattr(orig, "args", None)
    return getattr(orig, "sqlstate", None) in ("40P01", "40001") or bool(args and args[0] == 1213)


def _nonce() -> str:
    return uuid.uuid4().hex[:12]
