"""Tiers by rolling 12-month spend or points: upgrades at once, downgrades after
a grace period, recovery during grace, events, the change log, replays."""

from __future__ import annotations

from datetime import datetime, timezone
from decimal import Decimal

import pytest
from crmcore_loyalty.tables import tier_changes
from sqlalchemy import select

import crmcore
from crmcore import ConfigError

from .conftest import won

LEVELS = [{"name": "Silver", "threshold": "1000", "earn_multiplier": "1.25"},
          {"name": "Gold", "threshold": "5000", "earn_multiplier": "1.5"}]


class TierEvents:
    __name__ = "tier_events"

    def __init__(self):
        self.calls = []

    @crmcore.hookimpl
    def on_loyalty_tier_changed(self, uow, customer_id, scheme, old, new):
        self.calls.append((customer_id, scheme, old, new))


def at(y, m, d):
    return datetime(y, m, d, 12, 0, tzinfo=timezone.utc)


@pytest.fixture
def events():
    return TierEvents()


def tier(crm, cid):
    with crm.unit(readonly=True) as uow:
        return uow.loyalty.tier(cid, "tiers")


def test_upgrade_grace_and_downgrade(open_loyalty, clock, events):
    crm = open_loyalty({"tiers": {"levels": LEVELS, "grace_days": 30}}, extra_plugins=[events])
    cid = crm.customers.add(name="Climber").id
    clock.at(at(2026, 1, 15))
    won(crm, cid, "1200")                                   # spend 1200: Silver at once
    assert tier(crm, cid) == "Silver"
    clock.at(at(2026, 3, 1))
    won(crm, cid, "4000")                                   # 5200: Gold
    assert tier(crm, cid) == "Gold"
    assert events.calls == [(cid, "tiers", None, "Silver"), (cid, "tiers", "Silver", "Gold")]

    # 16 Jan 2027: the January deal left the 12-month window; 4000 is Silver only: grace starts.
    assert crm.loyalty.run(as_of=at(2027, 1, 16), scheme="tiers") == {"tiers": 1}
    assert crm.loyalty.run(as_of=at(2027, 1, 16), scheme="tiers") == {"tiers": 0}   # replay: nothing
    assert tier(crm, cid) == "Gold"
    [status] = [s for s in crm.loyalty.status(cid, as_of=at(2027, 2, 10)) if s["scheme"] == "tiers"]
    assert status["grace_until"] == at(2027, 2, 15)
    assert (status["spend_12m"], status["next_tier"], status["to_next_tier"]) == (Decimal("4000"), "Gold",
                                                                                   Decimal("1000"))
    assert crm.loyalty.run(as_of=at(2027, 2, 10), scheme="tiers") == {"tiers": 0}   # 25 days: still Gold
    assert tier(crm, cid) == "Gold"
    assert crm.loyalty.run(as_of=at(2027, 2, 15), scheme="tiers") == {"tiers": 1}   # 30 days: down
    assert tier(crm, cid) == "Silver"
    assert crm.loyalty.run(as_of=at(2027, 2, 15), scheme="tiers") == {"tiers": 0}

    # 2 Mar 2027: nothing in the window: grace towards no tier, then out after 30 days.
    crm.loyalty.run(as_of=at(2027, 3, 2), scheme="tiers")
    crm.loyalty.run(as_of=at(2027, 4, 1), scheme="tiers")
    assert tier(crm, cid) is None
    assert events.calls[2:] == [(cid, "tiers", "Gold", "Silver"), (cid, "tiers", "Silver", None)]
    with crm.unit(readonly=True) as uow:
        log = uow.conn.execute(select(tier_changes.c.old, tier_changes.c.new, tier_changes.c.changed_at).order_by(
            tier_changes.c.id)).all()
    assert [tuple(r) for r in log] == [(None, "Silver", at(2026, 1, 15)), ("Silver", "Gold", at(2026, 3, 1)),
                                       ("Gold", "Silver", at(2027, 2, 15)), ("Silver", None, at(2027, 4, 1))]


def test_qualifying_again_during_grace_cancels_it(open_loyalty, clock, events):
    crm = open_loyalty({"tiers": {"levels": LEVELS, "grace_days": 30}}, extra_plugins=[events])
    cid = crm.customers.add(name="Back").id
    clock.at(at(2026, 1, 15))
    won(crm, cid, "1200")
    crm.loyalty.run(as_of=at(2027, 1, 16), scheme="tiers")        # grace towards no tier
    clock.at(at(2027, 1, 20))
    won(crm, cid, "1500")                                        # qualifies for Silver again
    assert crm.loyalty.run(as_of=at(2027, 3, 1), scheme="tiers") == {"tiers": 0}
    assert tier(crm, cid) == "Silver"
    assert events.calls == [(cid, "tiers", None, "Silver")]


def test_no_grace_downgrades_at_once_and_reversal_counts(open_loyalty, clock, events):
    crm = open_loyalty({"tiers": {"levels": LEVELS, "grace_days": 0}}, extra_plugins=[events])
    cid = crm.customers.add(name="Refund").id
    deal = won(crm, cid, "1200")
    assert tier(crm, cid) == "Silver"
    crm.deals.move(deal.id, "lost", lost_reason="refund")       # no longer won: spend 0, down at once
    assert tier(crm, cid) is None
    assert events.calls == [(cid, "tiers", None, "Silver"), (cid, "tiers", "Silver", None)]


def test_points_basis_and_distribution(open_loyalty, clock):
    levels = [{"name": "Fan", "threshold": "100"}, {"name": "Star", "threshold": "1000"}]
    crm = open_loyalty({"tiers": {"basis": "points", "levels": levels, "grace_days": 0},
                        "points": {"tier_scheme": "none"}})
    ids = [crm.customers.add(name=f"P{i}").id for i in range(4)]
    for cid, amount in zip(ids, ["50", "150", "999.99", "1000"]):
        won(crm, cid, amount)
    crm.loyalty.adjust(ids[0], 500, "points", reason="gift")     # adjustments are not earned points
    assert crm.loyalty.run(scheme="tiers") == {"tiers": 0}       # evaluated already when the deals were won
    assert [tier(crm, c) for c in ids] == [None, "Fan", "Fan", "Star"]
    assert {(r["tier"], r["members"]) for r in crm.loyalty.tier_distribution("tiers")} == {("Fan", 2), ("Star", 1)}
    result = crm.reports.run("loyalty-tiers")
    assert [(r["tier"], r["members"], r["entered"]) for r in result.records()] == [("Fan", 2, 2), ("Star", 1, 1)]


@pytest.mark.parametrize("levels, message", [
    ([], "at least one level"),
    ([{"name": "A", "threshold": "10"}, {"name": "B", "threshold": "5"}], "strictly increasing"),
    ([{"name": "A", "threshold": "10"}, {"name": "A", "threshold": "20"}], "unique"),
])
def test_bad_levels(open_loyalty, levels, message):
    with pytest.raises(ConfigError, match=r"\[loyalty.tiers\].*" + message):
        open_loyalty({"tiers": {"levels": levels}})


class BatchEvents:
    """Both tier hooks: the batch one (once per job or change) and the per-move one."""

    __name__ = "tier_batch_events"

    def __init__(self):
        self.batches, self.moves = [], []

    @crmcore.hookimpl
    def on_loyalty_tiers_changed(self, uow, scheme, moves):
        self.batches.append((scheme, [tuple(m) for m in moves]))

    @crmcore.hookimpl
    def on_loyalty_tier_changed(self, uow, customer_id, scheme, old, new):
        self.moves.append((customer_id, scheme, old, new))


def test_a_tier_job_fires_the_batch_hook_once_with_every_move(open_loyalty, clock):
    listener = BatchEvents()
    crm = open_loyalty({"tiers": {"levels": LEVELS, "grace_days": 0}}, extra_plugins=[listener])
    ids = [crm.customers.add(name=f"M{i}").id for i in range(3)]
    clock.at(at(2026, 1, 15))
    for cid, amount in zip(ids, ("1200", "6000", "300")):
        won(crm, cid, amount)                                   # each deal: a change of one customer
    assert listener.batches == [("tiers", [(ids[0], None, "Silver")]), ("tiers", [(ids[1], None, "Gold")])]
    listener.batches.clear(), listener.moves.clear()
    # A year on, the window is empty: the job moves both down at once, in one batch, customers in order.
    assert crm.loyalty.run(as_of=at(2027, 2, 1), scheme="tiers") == {"tiers": 2}
    assert listener.batches == [("tiers", [(ids[0], "Silver", None), (ids[1], "Gold", None)])]
    assert listener.moves == [(ids[0], "tiers", "Silver", None), (ids[1], "tiers", "Gold", None)]
    assert crm.loyalty.run(as_of=at(2027, 2, 1), scheme="tiers") == {"tiers": 0}
    assert len(listener.batches) == 1  # nothing moved: no call


class KeptMoves:
    """Keeps the batch hook's ``moves``; reads them during the call only if ``read``."""

    __name__ = "kept_moves"

    def __init__(self, read: bool):
        self.read, self.kept = read, []

    @crmcore.hookimpl
    def on_loyalty_tiers_changed(self, uow, scheme, moves):
        if self.read:
            assert moves[0][0] == min(m[0] for m in moves)
        self.kept.append(moves)


@pytest.mark.parametrize("read", [True, False], ids=["read-in-the-call", "kept-unread"])
def test_a_tier_jobs_moves_are_read_on_first_use(open_loyalty, clock, read):
    """The job hands the hooks its moves unread (len() known); read during the call they stay
    readable, kept unread they are an error that says so once the job dropped its table."""
    listener = KeptMoves(read)
    crm = open_loyalty({"tiers": {"levels": LEVELS, "grace_days": 0}}, extra_plugins=[listener])
    ids = [crm.customers.add(name=f"K{i}").id for i in range(3)]
    clock.at(at(2026, 1, 15))
    for cid, amount in zip(ids, ("1200", "6000", "300")):
        won(crm, cid, amount)
    listener.kept.clear()
    assert crm.loyalty.run(as_of=at(2027, 2, 1), scheme="tiers") == {"tiers": 2}
    [moves] = listener.kept
    assert len(moves) == 2
    if read:
        assert list(moves) == [(ids[0], "Silver", None), (ids[1], "Gold", None)]
        assert moves[1:] == [(ids[1], "Gold", None)]
        assert moves == [(ids[0], "Silver", None), (ids[1], "Gold", None)] and moves[-1] in moves
    else:
        with pytest.raises(RuntimeError, match="during the hook call"):
            list(moves)
    with crm.unit(readonly=True) as uow:  # the job's one audit record names the moved customers
        record = uow.conn.execute(select(crmcore.store.tables.audit_log.c.ids).where(
            crmcore.store.tables.audit_log.c.action == "tier.change").order_by(
            crmcore.store.tables.audit_log.c.seq.desc())).first()
    assert record.ids == [ids[0], ids[1]]


@pytest.mark.parametrize("crm_db_url", ["postgresql"], indirect=True)
def test_a_tier_given_meanwhile_to_a_new_account_stays(open_loyalty, clock, crm_db_url):
    """A member with no account when the job reads (its won deal written without the per-deal
    evaluation) gets one holding its tier; if a concurrent transaction creates the account with a
    tier before the job writes, that tier is newer than the job's and stays.  PostgreSQL only: on
    SQLite the job's transaction holds the write lock from its start, and on MariaDB its
    ``INSERT ... SELECT`` locks the accounts' range it read, so the other transaction waits."""
    from sqlalchemy import create_engine, event, insert, update

    from crmcore.store import tables

    crm = open_loyalty({"tiers": {"levels": LEVELS, "grace_days": 0}})
    clock.at(at(2026, 1, 15))
    meanwhile, plain = (crm.customers.add(name=n).id for n in ("Meanwhile", "Plain"))
    for cid in (meanwhile, plain):  # won deals the job is first to see: no account, no tier yet
        deal = crm.deals.add(customer_id=cid, title="deal", amount=Decimal("1200"), currency="USD", stage="lead")
        with crm.unit() as uow:
            uow.conn.execute(update(tables.deals).where(tables.deals.c.id == deal.id).values(
                stage="won", closed_at=at(2026, 1, 15)))
    other = create_engine(crm.engine.url)
    done = []

    @event.listens_for(crm.engine, "before_cursor_execute")
    def concurrent_account(conn, cursor, statement, parameters, context, executemany):
        if statement.startswith("INSERT") and "INTO loyalty_accounts" in statement and not done:
            done.append(statement)
            with other.begin() as side:  # another transaction, committed before the job's insert
                side.execute(insert(tables.loyalty_accounts).values(
                    customer_id=meanwhile, scheme="tiers", balance=0, tier="Gold", updated_at=at(2026, 1, 15)))
    try:
        assert crm.loyalty.run(as_of=at(2026, 2, 1), scheme="tiers") == {"tiers": 2}
    finally:
        event.remove(crm.engine, "before_cursor_execute", concurrent_account)
        other.dispose()
    assert done
    assert (tier(crm, meanwhile), tier(crm, plain)) == ("Gold", "Silver")
