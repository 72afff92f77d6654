"""The loyalty jobs are set-based (issue 21 point 5) and write what the per-member rules say.

Tier evaluation of a whole job is compared with a plain-Python replay of the
documented rules (upgrade at once, grace before a downgrade, recovery during
grace), including the change log, the grace state, the events and the change
counts; bulk credits (accounts created in bulk, ``tier_for`` evaluated in
batches) with the single-credit path; the earn job with every scheme with the
points scheme alone.  Each runs on SQLite, PostgreSQL and MariaDB.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import pytest
from crmcore_loyalty.tables import tier_changes, tier_status
from sqlalchemy import select

import crmcore
from crmcore.application import audit
from crmcore.store import tables

from .conftest import ledger_rows, won

LEVELS = [("Silver", Decimal(1000)), ("Gold", Decimal(5000))]
GRACE = timedelta(days=30)


def at(y: int, m: int, d: int) -> datetime:
    return datetime(y, m, d, 12, 0, tzinfo=timezone.utc)


class TierEvents:
    __name__ = "tier_events"

    def __init__(self) -> None:
        self.calls: list[tuple[int, str, str | None, str | None]] = []

    @crmcore.hookimpl
    def on_loyalty_tier_changed(self, uow, customer_id, scheme, old, new):
        self.calls.append((customer_id, scheme, old, new))


class TierModel:
    """The documented tier rules, member by member, in plain Python (no SQL)."""

    def __init__(self) -> None:
        self.deals: list[tuple[int, datetime, Decimal]] = []   # customer, closed_at, amount
        self.rank: dict[int, int] = {}
        self.below: dict[int, datetime] = {}
        self.log: list[tuple[int, str | None, str | None, datetime]] = []

    def name(self, rank: int) -> str | None:
        return LEVELS[rank - 1][0] if rank else None

    def evaluate(self, as_of: datetime, only: list[int] | None = None) -> int:
        start = as_of.replace(year=as_of.year - 1)  # 12 months (no 29 February in these dates)
        spend: dict[int, Decimal] = {}
        for cid, closed, amount in self.deals:
            if start < closed <= as_of:
                spend[cid] = spend.get(cid, Decimal(0)) + amount
        members = set(spend) | {c for c, r in self.rank.items() if r} | set(self.below)
        changes = 0
        for cid in sorted(members if only is None else members & set(only)):
            qualifying = max([i + 1 for i, (_, t) in enumerate(LEVELS) if spend.get(cid, 0) >= t], default=0)
            current = self.rank.get(cid, 0)
            if qualifying >= current:
                changes += cid in self.below or qualifying > current
                self.below.pop(cid, None)
                if qualifying > current:
                    self._move(cid, qualifying, as_of)
            elif cid not in self.below:
                self.below[cid] = as_of
                changes += 1
            elif as_of - self.below[cid] >= GRACE:
                del self.below[cid]
                self._move(cid, qualifying, as_of)
                changes += 1
        return changes

    def _move(self, cid: int, rank: int, as_of: datetime) -> None:
        self.log.append((cid, self.name(self.rank.get(cid, 0)), self.name(rank), as_of))
        self.rank[cid] = rank


def _tier_state(crm: Any) -> tuple[dict[int, str], dict[int, datetime], list[tuple[Any, ...]]]:
    accounts = tables.loyalty_accounts
    with crm.unit(readonly=True) as uow:
        tiers = dict(uow.conn.execute(select(accounts.c.customer_id, accounts.c.tier).where(
            accounts.c.scheme == "tiers", accounts.c.tier.is_not(None))).all())
        grace = dict(uow.conn.execute(select(tier_status.c.customer_id, tier_status.c.below_since)).all())
        log = [tuple(r) for r in uow.conn.execute(select(
            tier_changes.c.customer_id, tier_changes.c.old, tier_changes.c.new, tier_changes.c.changed_at)
            .order_by(tier_changes.c.id))]
    return tiers, grace, log


def _spends(ids):
    """(title, customer, moment, amount) of won deals whose spends cross each threshold, at dates
    that put them in and out of the window."""
    for n, cid in enumerate(ids):
        for k in range(n % 4):
            yield (f"d{n}-{k}", cid, at(2026, 1 + (n + k) % 12, 1 + (3 * n + k) % 27),
                   Decimal(400 * (1 + (n * 7 + k * 3) % 9)))


def _job_follows(crm, model, moment):
    """Run the tier job as of ``moment``: its changes, tiers, grace periods and log are the model's."""
    changes = crm.loyalty.run(as_of=moment, scheme="tiers")["tiers"]
    assert changes == model.evaluate(moment), f"changes as of {moment}"
    tiers, grace, log = _tier_state(crm)
    assert tiers == {c: model.name(r) for c, r in model.rank.items() if r}, f"tiers as of {moment}"
    assert grace == model.below, f"grace periods as of {moment}"
    assert log == model.log


def test_tier_job_follows_the_member_by_member_rules(open_loyalty, clock):
    events = TierEvents()
    levels = [{"name": n, "threshold": str(t)} for n, t in LEVELS]
    crm = open_loyalty({"tiers": {"levels": levels, "grace_days": 30}}, extra_plugins=[events])
    model = TierModel()
    ids = [crm.customers.add(name=f"Member {i}").id for i in range(24)]
    for title, cid, moment, amount in _spends(ids):
        clock.at(moment)
        won(crm, cid, str(amount), title=title)
        model.deals.append((cid, moment, amount))
        model.evaluate(moment, [cid])  # the plugin evaluates the customer when its deal is won
    assert len(model.log) > 10
    expected_events = [(c, "tiers", old, new) for c, old, new, _ in model.log]
    assert events.calls == expected_events
    for moment in (at(2026, 12, 31), at(2027, 2, 2), at(2027, 3, 1), at(2027, 3, 5), at(2027, 6, 1),
                   at(2027, 6, 1), at(2027, 9, 1), at(2028, 1, 1)):
        _job_follows(crm, model, moment)
        assert events.calls == [(c, "tiers", old, new) for c, old, new, _ in model.log]
    assert any(old is not None and new is not None and old > new for _, old, new, _ in model.log) or \
        any(new is None for _, _, new, _ in model.log), "the data must exercise downgrades"


def test_tier_job_writes_one_audit_record_per_batch(open_loyalty, clock):
    crm = open_loyalty({"tiers": {"levels": [{"name": "Silver", "threshold": "1000"}], "grace_days": 0}})
    ids = [crm.customers.add(name=f"M{i}").id for i in range(5)]
    with crm.unit() as uow:  # history without the per-deal evaluation: the job does it all
        uow.conn.execute(tables.deals.insert(), [
            {"customer_id": cid, "title": "old", "amount": Decimal(2000), "currency": "USD", "pipeline": "default",
             "stage": "won", "probability": 100, "closed_at": at(2026, 1, 10), "attributes": {},
             "created_at": at(2026, 1, 10), "updated_at": at(2026, 1, 10)} for cid in ids])
    assert crm.loyalty.run(as_of=at(2026, 2, 1), scheme="tiers") == {"tiers": 5}
    with crm.unit(readonly=True) as uow:
        records = [r for r in audit.records(uow.conn) if r.action == "tier.change"]
    assert len(records) == 1
    assert records[0].ids == ids and records[0].changes == {"scheme": "tiers"}


class BalanceTiers(crmcore.LoyaltyScheme):
    """A third-party scheme earning per deal in Python, with tiers by balance (``tier_for``)."""

    name = "club"

    def points_for_deal(self, uow, deal, options):
        return int(deal.amount) // 10

    def tier_for(self, uow, customer_id, balance, options):
        return "Gold" if balance >= 300 else "Silver" if balance >= 100 else None


class TwinClub(BalanceTiers):
    name = "club2"


class ClubPlugin:
    __name__ = "club_plugin"

    def __init__(self, *schemes: crmcore.LoyaltyScheme):
        self.schemes = schemes or (BalanceTiers(),)

    @crmcore.hookimpl
    def register_loyalty_schemes(self, register):
        for scheme in self.schemes:
            register(scheme)


def test_bulk_credits_create_accounts_and_tiers_as_single_credits_do(crm_factory):
    """``club`` credited one entry at a time, ``club2`` (the same rules) in one bulk credit."""
    amounts = [50, 1500, 2500, 999, 4000, 10, 3000, 1200]
    events = TierEvents()
    crm = crm_factory(extra_plugins=[ClubPlugin(BalanceTiers(), TwinClub()), events])
    ids = [crm.customers.add(name=f"C{i}").id for i in range(len(amounts))]
    with crm.unit() as uow:
        for c, a in zip(ids, amounts):
            uow.loyalty.credit(c, "club", a // 10, key=f"club:{c}")
    with crm.unit() as uow:
        assert uow.loyalty.credit_many("club2", [{"customer_id": c, "points": a // 10, "key": f"club2:{c}"}
                                                 for c, a in zip(ids, amounts)]) == len(ids)
    accounts = tables.loyalty_accounts
    with crm.unit(readonly=True) as uow:
        rows = uow.conn.execute(select(accounts.c.scheme, accounts.c.customer_id, accounts.c.balance,
                                       accounts.c.tier)).all()
    state = {s: sorted((c, int(b), t) for sc, c, b, t in rows if sc == s) for s in ("club", "club2")}
    assert state["club"] == state["club2"]
    assert [t for _, _, t in state["club2"]] == [None, "Silver", "Silver", None, "Gold", None, "Gold", "Silver"]
    entries = {s: sorted((r["customer_id"], r["points"], r["kind"], r["idempotency_key"].split(":")[1])
                         for r in ledger_rows(crm) if r["scheme"] == s) for s in ("club", "club2")}
    assert entries["club"] == entries["club2"]
    fired = {s: sorted((c, old, new) for c, sc, old, new in events.calls if sc == s) for s in ("club", "club2")}
    assert fired["club"] == fired["club2"] and len(fired["club2"]) == 5


def test_earn_job_with_every_scheme_earns_only_where_deals_earn(crm_factory):
    """Schemes with neither ``earn_select`` nor ``points_for_deal`` are skipped; the others
    (set-based ``points``, per-deal ``club``) write their usual entries and keys."""
    crm = crm_factory(plugins=["loyalty"], extra_plugins=[ClubPlugin()],
                      config={"loyalty": {"points": {"tier_scheme": "none"}}})  # 1 point per unit
    cid = crm.customers.add(name="Buyer").id
    with crm.unit() as uow:
        uow.earn_points = False  # a history load: the job earns
        deals = [uow.crm.deals.add(customer_id=cid, title="d", amount=amount, currency="USD", stage="won")
                 for amount in ("120", "3400.50", "9")]
    written = crm.loyalty.earn_won_deals()
    assert written == {"points": 3, "tiers": 0, "birthday": 0, "referral": 0, "rewards": 0, "club": 2}
    expected = sorted([(cid, "points", int(d.amount), f"points:deal:{d.id}:earn:batch") for d in deals]
                      + [(cid, "club", int(d.amount) // 10, f"club:deal:{d.id}:earn:batch") for d in deals[:2]])
    assert sorted((r["customer_id"], r["scheme"], r["points"], r["idempotency_key"])
                  for r in ledger_rows(crm)) == expected
    assert crm.loyalty.earn_won_deals() == dict.fromkeys(written, 0)  # a rerun writes nothing


def test_a_schemes_first_job_follows_the_member_by_member_rules(open_loyalty, clock):
    """The same rules when the job is the first to see the deals (written without the per-deal
    evaluation): its first run finds no account and no grace period of the scheme and joins
    nothing; the runs after it find members holding tiers, some with no spend left in the window."""
    levels = [{"name": n, "threshold": str(t)} for n, t in LEVELS]
    crm = open_loyalty({"tiers": {"levels": levels, "grace_days": 30}})
    model = TierModel()
    ids = [crm.customers.add(name=f"Member {i}").id for i in range(24)]
    rows = []
    for title, cid, moment, amount in _spends(ids):
        rows.append({"customer_id": cid, "title": title, "amount": amount, "currency": "USD",
                     "pipeline": "default", "stage": "won", "probability": 100, "closed_at": moment,
                     "attributes": {}, "created_at": moment, "updated_at": moment})
        model.deals.append((cid, moment, amount))
    with crm.unit() as uow:
        uow.conn.execute(tables.deals.insert(), rows)
    for moment in (at(2026, 12, 31), at(2027, 2, 2), at(2027, 3, 1), at(2027, 3, 5), at(2027, 6, 1),
                   at(2027, 9, 1), at(2028, 1, 1)):
        _job_follows(crm, model, moment)
    assert any(new is None for _, _, new, _ in model.log), "the data must leave members with no spend"
