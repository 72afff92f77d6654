"""Built-once statements run on the unit's SQLite driver connection (issue 21, single writes).

``crmcore.store.direct.run`` stands in for ``conn.execute`` on a move's statements: each check
runs the same statement both ways on one database and compares what the callers use (rows with
their processed values, row counts, the new row's id, the exception type), and checks that it
steps aside where it could differ (a server database, a statement listener, a scoped SELECT).
A move with every plugin then leaves the same rows as the same moves through SQLAlchemy.
"""

from __future__ import annotations

from datetime import datetime, timezone
from decimal import Decimal

import pytest
from sqlalchemy import bindparam, event, insert, select, update
from sqlalchemy.exc import IntegrityError, MultipleResultsFound, NoResultFound

from crmcore.application.audit import diff, verify
from crmcore.domain.entities import Deal
from crmcore.store import direct, tables

WHEN = datetime(2026, 3, 4, 5, 6, 7, tzinfo=timezone.utc)
HISTORY = insert(tables.deal_stage_history)
BY_DEAL = select(tables.deal_stage_history.c.id, tables.deal_stage_history.c.changed_at,
                 tables.deal_stage_history.c.to_stage).where(
    tables.deal_stage_history.c.deal_id == bindparam("d")).order_by(tables.deal_stage_history.c.id)
RENAME = update(tables.deals).where(tables.deals.c.id == bindparam("d")).values(title=bindparam("t"))


@pytest.fixture
def deal(crm_factory):
    crm = crm_factory()
    customer = crm.customers.add(name="A")
    return crm, crm.deals.add(customer_id=customer.id, title="d", amount=Decimal("10"), stage="proposal")


def _both(crm, deal_id):
    """The stage history written and read back through run() and through conn.execute()."""
    found = []
    for execute in (direct.run, lambda c, s, p: c.execute(s, p)):
        with crm.engine.begin() as conn:
            result = execute(conn, HISTORY, {"deal_id": deal_id, "from_stage": None, "to_stage": "won",
                                             "changed_at": WHEN, "actor": "x"})
            new_id = result.inserted_primary_key[0]
            rows = [tuple(r) for r in execute(conn, BY_DEAL, {"d": deal_id}).all()]
            changed = execute(conn, RENAME, {"d": deal_id, "t": "renamed"}).rowcount
            missing = execute(conn, RENAME, {"d": -1, "t": "x"}).rowcount
        found.append((type(result).__name__, new_id, rows, changed, missing))
    return found


def test_run_gives_what_sqlalchemy_gives(deal, crm_db_url):
    crm, stored = deal
    mine, theirs = _both(crm, stored.id)
    assert mine[0] == ("DirectResult" if crm_db_url.startswith("sqlite") else "CursorResult")
    assert theirs[0] == "CursorResult"
    assert mine[1] == theirs[1] - 1 == mine[2][-1][0]                 # the new row's id
    assert mine[2] == theirs[2][:-1]                                    # the same rows, times processed
    assert mine[2][-1][1] == WHEN and mine[2][-1][1].tzinfo is not None
    assert (mine[3], mine[4]) == (theirs[3], theirs[4]) == (1, 0)      # row counts


def test_named_columns_and_executemany(deal):
    crm, stored = deal
    rows = [{"deal_id": stored.id, "from_stage": "a", "to_stage": s, "changed_at": WHEN, "actor": None}
            for s in ("b", "c")]
    with crm.engine.begin() as conn:
        direct.run(conn, HISTORY, rows)
        read = direct.run(conn, BY_DEAL, {"d": stored.id}).all()
        assert [r.to_stage for r in read][-2:] == ["b", "c"]
        assert direct.run(conn, BY_DEAL, {"d": -1}).first() is None
        with pytest.raises(MultipleResultsFound):
            direct.run(conn, BY_DEAL, {"d": stored.id}).one()
        with pytest.raises(NoResultFound):
            direct.run(conn, BY_DEAL, {"d": -1}).one()


def test_a_driver_error_is_sqlalchemys_exception(deal):
    crm, _ = deal
    with pytest.raises(IntegrityError):
        with crm.engine.begin() as conn:  # no such deal: the foreign key refuses it
            direct.run(conn, HISTORY, {"deal_id": 10**9, "from_stage": None, "to_stage": "won",
                                       "changed_at": WHEN, "actor": None})


def test_a_connection_without_a_transaction_begins_one(deal):
    """As with conn.execute: the statement joins the transaction the connection then begins, so
    a rollback takes it back (the driver alone would have committed it at once)."""
    crm, stored = deal
    with crm.engine.connect() as conn:
        direct.run(conn, RENAME, {"d": stored.id, "t": "never"})
        assert conn.in_transaction()
        conn.rollback()
    assert crm.deals.get(stored.id).title == "d"


def test_listeners_see_every_statement(deal):
    """With a statement listener (a test counting statements, a tracer) everything goes through
    SQLAlchemy, so the listener misses none."""
    crm, stored = deal
    seen: list[str] = []
    event.listen(crm.engine, "before_cursor_execute", lambda *a: seen.append(a[2]))
    with crm.engine.begin() as conn:
        result = direct.run(conn, BY_DEAL, {"d": stored.id})
    assert type(result).__name__ == "CursorResult"
    assert any("deal_stage_history" in s for s in seen)


def test_a_scoped_select_goes_through_the_visibility_rewrite(crm_factory):
    crm = crm_factory(plugins=["access"])
    crm.users.add("boss", role="admin")
    crm.users.add("alice", role="sales-rep")
    hidden = crm.customers.add(name="Not Alice's", owner="boss")
    stage = select(tables.customers.c.stage).where(tables.customers.c.id == bindparam("c"))
    with crm.acting_as("alice"), crm.unit() as uow:
        assert direct.run(uow.conn, stage, {"c": hidden.id}).scalar() == "lead"   # unscoped: the row
        with uow.scoped():
            assert direct.run(uow.conn, stage, {"c": hidden.id}).scalar() is None  # alice cannot see it


# run() goes through SQLAlchemy on a server database: there is nothing to compare there.
@pytest.mark.parametrize("crm_db_url", ["sqlite"], indirect=True)
def test_moves_leave_the_same_rows_either_way(crm_factory, crm_db_url, tmp_path, monkeypatch):
    """Won moves with the loyalty schemes, once through run() and once through SQLAlchemy (a
    listener present), on two SQLite databases: the same deals, history, ledger, accounts, tiers
    and audit chain."""

    def moved(name: str) -> dict[str, list[tuple]]:
        crm = crm_factory(plugins=["loyalty"], config={
            "database_url": f"sqlite:///{tmp_path / name}",
            "loyalty": {"tiers": {"levels": [{"name": "Silver", "threshold": "100"}]}}})
        ids = []
        for n in range(3):
            customer = crm.customers.add(name=f"C{n}", stage="lead")
            ids += [crm.deals.add(customer_id=customer.id, title=f"{n}{k}", amount=Decimal(f"{60 * k + 1}.25"),
                                  stage="proposal").id for k in (1, 2)]
        for deal_id in ids:
            crm.deals.move(deal_id, "won")
        crm.deals.move(ids[0], "lost")
        with crm.engine.connect() as conn:
            assert verify(conn).ok
            return {t.name: [tuple(r) for r in conn.execute(select(t).order_by(*t.primary_key.columns))]
                    for t in (tables.deals, tables.deal_stage_history, tables.customers, tables.loyalty_ledger,
                              tables.loyalty_accounts, tables.audit_log)}

    quick = moved("direct.db")
    assert len(quick["loyalty_ledger"]) > 6 and any(r[3] == "Silver" for r in quick["loyalty_accounts"])
    monkeypatch.setattr(direct, "_listened", lambda conn: True)
    assert moved("sqlalchemy.db") == quick


def test_diff_compares_the_json_values():
    """An update's audit record: fields holding the same object are skipped unconverted; the
    others compare as JSON, so a Decimal's new scale is a change."""
    before = Deal(id=1, customer_id=2, title="t", amount=Decimal("1.0"), currency="USD", stage="proposal")
    assert diff(before, before) == {}
    after = Deal(id=1, customer_id=2, title="t", amount=Decimal("1.00"), currency="USD", stage="won")
    assert diff(before, after) == {"amount": ["1.0", "1.00"], "stage": ["proposal", "won"]}


def test_a_move_keeps_its_stored_owner_without_a_look_up(crm_factory):
    """The stored owner is a user's login (a foreign key): a move does not look it up again; a
    change of owner given as an email still becomes the login."""
    crm = crm_factory()
    crm.users.add("ann", email="ann@example.com")
    crm.users.add("bo", email="bo@example.com")
    customer = crm.customers.add(name="A")
    deal = crm.deals.add(customer_id=customer.id, title="d", amount=Decimal("5"), stage="proposal", owner="ann")
    seen: list[str] = []
    event.listen(crm.engine, "before_cursor_execute", lambda *a: seen.append(a[2]))
    crm.deals.move(deal.id, "won")
    assert not any("users.email" in s for s in seen)
    assert crm.deals.update(deal.id, owner="bo@example.com").owner == "bo"
    assert any("users.email" in s for s in seen)
