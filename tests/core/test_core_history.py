"""Deletes never rewrite history (issue 13, point 1; issue 15, point 6).

A customer or deal with loyalty ledger entries, outbox messages, consent
decisions or won deals cannot be purged (it can only be archived, which is what
a plain delete does: tests/core/test_archive.py); no foreign key cascades into
the ledger, its allocations, the outbox or the consent records; the command
line asks before deleting a contact or interaction and wants ``--purge --yes``
to purge.  On every database ``crm_db_url`` offers.
"""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest
from click.testing import CliRunner
from sqlalchemy import delete, func, inspect, insert, select
from sqlalchemy.exc import IntegrityError

from crmcore import CRM, Config, HasHistory, NotFound
from crmcore import migrations
from crmcore.cli import cli
from crmcore.store import tables
from crmcore.store.engine import make_engine
from crmcore.testing import FIXED_NOW

PREVIOUS_HEAD = "0006_segment_run_details"


def won_deal_count(crm: CRM) -> int:
    result = crm.reports.run("win-loss", options={"start": "2026-01-01", "end": "2026-12-31"})
    return int(result.records()[-1]["won"])


def test_win_loss_for_a_past_period_keeps_its_won_deal(crm_factory) -> None:
    """The issue's reproduction: deleting the customer of a won deal used to drop it from win-loss."""
    crm = crm_factory(plugins=["reports"])
    customer = crm.customers.add(name="客户九十三")
    crm.deals.add(customer_id=customer.id, title="合同", amount=Decimal("1000"), currency="USD", stage="won",
                  closed_at=FIXED_NOW - timedelta(days=40))
    before = won_deal_count(crm)
    assert before == 1
    with pytest.raises(HasHistory, match=r"customer \d+ has history \(1 won deal\).*only be archived"):
        crm.customers.delete(customer.id, purge=True)
    assert won_deal_count(crm) == before
    assert crm.customers.get(customer.id).name == "客户九十三"


def test_a_customer_with_ledger_entries_messages_or_consent_is_kept(crm_factory) -> None:
    crm = crm_factory(plugins=["loyalty", "notify"])
    points = crm.customers.add(name="积分")
    crm.loyalty.adjust(points.id, 100, scheme="points", reason="welcome")
    mailed = crm.customers.add(name="通知", email="m@example.com")
    crm.notify.enqueue("console", customer_id=mailed.id, subject="s", body="b")
    asked = crm.customers.add(name="同意")
    crm.messages.set_consent(asked.id, False, source="cli")
    for customer, what in ((points, "1 loyalty ledger entry"), (mailed, "1 outbox message"),
                           (asked, "1 consent decision")):
        with pytest.raises(HasHistory, match=rf"has history \({what}\)"):
            crm.customers.delete(customer.id, purge=True)
        assert crm.customers.get(customer.id).id == customer.id


def test_a_customer_without_history_is_purged_with_its_open_work(crm_factory) -> None:
    crm = crm_factory()
    customer = crm.customers.add(name="新客户")
    contact = crm.contacts.add(customer_id=customer.id, name="联系人")
    crm.interactions.add(customer_id=customer.id, contact_id=contact.id, kind="call", occurred_at=FIXED_NOW)
    lost = crm.deals.add(customer_id=customer.id, title="t", amount="10", currency="CNY", stage="lead")
    crm.deals.move(lost.id, "lost", lost_reason="price")
    crm.deals.add(customer_id=customer.id, title="open", amount="10", currency="CNY", stage="lead")
    crm.customers.delete(customer.id, purge=True)
    with pytest.raises(NotFound):
        crm.customers.get(customer.id)
    assert [s.count(archived="include") for s in (crm.contacts, crm.interactions, crm.deals)] == [0, 0, 0]


def test_a_won_deal_or_one_with_ledger_entries_is_kept(crm_factory) -> None:
    crm = crm_factory(plugins=["loyalty"])
    customer = crm.customers.add(name="赢单")
    won = crm.deals.add(customer_id=customer.id, title="won", amount="500", currency="CNY", stage="lead")
    crm.deals.move(won.id, "won")
    with pytest.raises(HasHistory, match=r"deal \d+ has history \(won, \d+ loyalty ledger entr"):
        crm.deals.delete(won.id, purge=True)
    crm.deals.move(won.id, "lost", lost_reason="refund")  # the reversal is a new ledger entry
    with pytest.raises(HasHistory, match=r"deal \d+ has history \(\d+ loyalty ledger entries\)"):
        crm.deals.delete(won.id, purge=True)
    plain = crm.deals.add(customer_id=customer.id, title="plain", amount="5", currency="CNY", stage="lead")
    crm.deals.delete(plain.id, purge=True)
    assert crm.deals.find(id=plain.id) is None


def test_no_foreign_key_cascades_into_history(crm_factory) -> None:
    """Even a raw DELETE of a customer is refused by the database while history refers to it."""
    crm = crm_factory(plugins=["loyalty", "notify"])
    customer = crm.customers.add(name="账本", email="l@example.com")
    deal = crm.deals.add(customer_id=customer.id, title="d", amount="100", currency="CNY", stage="lead")
    crm.deals.move(deal.id, "won")
    crm.loyalty.redeem(customer.id, 1, scheme="points")
    crm.notify.enqueue("console", customer_id=customer.id, subject="s", body="b")
    crm.messages.set_consent(customer.id, True, source="cli")
    counts = _history_counts(crm)
    assert all(counts.values()), counts
    for statement in (delete(tables.customers).where(tables.customers.c.id == customer.id),
                      delete(tables.deals).where(tables.deals.c.id == deal.id)):
        with pytest.raises(IntegrityError), crm.engine.begin() as conn:
            conn.execute(statement)
    assert _history_counts(crm) == counts


def _history_counts(crm: CRM) -> dict[str, int]:
    with crm.engine.connect() as conn:
        return {t.name: conn.execute(select(func.count()).select_from(t)).scalar_one()
                for t in (tables.loyalty_ledger, tables.loyalty_allocations, tables.notify_outbox,
                          tables.customer_consents)}


@pytest.mark.empty_database  # it migrates to an older revision itself
def test_migration_from_the_previous_head_keeps_every_row(crm_db_url) -> None:
    """A database created at the previous head, with history, upgrades with every row kept."""
    from alembic import command

    engine = make_engine(crm_db_url)
    command.upgrade(migrations.alembic_config(engine, migrations.HERE / "versions", "alembic_version"),
                    PREVIOUS_HEAD)
    stamp = {"created_at": FIXED_NOW, "updated_at": FIXED_NOW}
    with engine.begin() as conn:
        conn.execute(insert(tables.customers).values(
            id=1, kind="person", name="老客户", stage="customer", consent_email=True, consent_sms=True,
            consent_marketing=True, tags=[], attributes={}, **stamp))
        conn.execute(insert(tables.deals).values(
            id=1, customer_id=1, title="d", amount=Decimal("10"), currency="CNY", pipeline="default",
            stage="won", probability=100, closed_at=FIXED_NOW, attributes={}, **stamp))
        conn.execute(insert(tables.loyalty_ledger), [
            {"id": 1, "customer_id": 1, "scheme": "points", "kind": "earn", "points": 10, "idempotency_key": "e1",
             "deal_id": 1, "occurred_at": FIXED_NOW},
            {"id": 2, "customer_id": 1, "scheme": "points", "kind": "redeem", "points": -4, "idempotency_key": "r1", "deal_id": None,
             "occurred_at": FIXED_NOW}])
        conn.execute(insert(tables.loyalty_allocations).values(id=1, debit_id=2, batch_id=1, points=4))
        conn.execute(insert(tables.loyalty_accounts).values(customer_id=1, scheme="points", balance=6,
                                                            updated_at=FIXED_NOW))
        conn.execute(insert(tables.notify_outbox).values(
            id=1, idempotency_key="k", channel="console", customer_id=1, purpose="marketing", payload={},
            status="sent", attempts=1, max_attempts=5, next_attempt_at=FIXED_NOW, created_at=FIXED_NOW))
        conn.execute(insert(tables.customer_consents).values(
            customer_id=1, channel="*", purpose="marketing", granted=True, source="import", recorded_at=FIXED_NOW))
    before = _counts(engine)
    migrations.upgrade(engine, {})
    assert migrations.current(engine, {})["crmcore"] == migrations.heads(engine, {})["crmcore"]
    assert _counts(engine, before) == before
    with pytest.raises(IntegrityError), engine.begin() as conn:
        conn.execute(delete(tables.customers).where(tables.customers.c.id == 1))
    assert _counts(engine, before) == before
    engine.dispose()


def _counts(engine, only=None) -> dict[str, int]:
    """Rows per core table (the tables of ``only``, or every one the database has)."""
    names = set(only) if only is not None else set(inspect(engine).get_table_names())
    with engine.connect() as conn:
        return {name: conn.execute(select(func.count()).select_from(t)).scalar_one()
                for name, t in tables.metadata.tables.items() if name in names}


# -- the command line -----------------------------------------------------------------------------

@pytest.fixture
def run(crm_sqlite_url, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for var in ("CRM_PLUGINS", "CRM_DATABASE_URL", "CRM_PLUGINS_DIR", "CRM_PLUGINS_BLOCK"):
        monkeypatch.delenv(var, raising=False)

    def invoke(*args: str, input: str | None = None):
        return CliRunner().invoke(cli, ["--db", crm_sqlite_url, "--plugins", "reports", *args], input=input)
    return invoke


@pytest.mark.parametrize("kind", ["contact", "interaction"])
def test_delete_asks_and_refuses_without_yes_when_not_on_a_terminal(run, crm_sqlite_url, kind) -> None:
    with CRM.open(config=Config.from_mapping({"database_url": crm_sqlite_url, "plugins": []})) as crm:
        customer = crm.customers.add(name="Ada")
        ids = {"customer": customer.id,
               "contact": crm.contacts.add(customer_id=customer.id, name="C").id,
               "interaction": crm.interactions.add(customer_id=customer.id, kind="call", occurred_at=FIXED_NOW).id,
               "deal": crm.deals.add(customer_id=customer.id, title="t", amount="1", currency="CNY",
                                     stage="lead").id}
    target = str(ids[kind])
    refused = run(kind, "delete", target)  # CliRunner's stdin is not a terminal
    assert refused.exit_code != 0 and "Traceback" not in refused.output
    assert f"--yes" in refused.output and f"{kind} {target}" in refused.output
    assert run(kind, "show", target).exit_code == 0
    done = run(kind, "delete", target, "--yes")
    assert done.exit_code == 0, done.output
    assert f"{kind} {target} deleted" in done.output
    assert run(kind, "show", target).exit_code != 0


@pytest.mark.parametrize("kind", ["customer", "deal"])
def test_purge_wants_yes_and_never_asks(run, crm_sqlite_url, kind) -> None:
    """Customers and deals archive on delete; ``--purge`` without ``--yes`` is refused, no prompt."""
    with CRM.open(config=Config.from_mapping({"database_url": crm_sqlite_url, "plugins": []})) as crm:
        customer = crm.customers.add(name="Ada")
        ids = {"customer": customer.id,
               "deal": crm.deals.add(customer_id=customer.id, title="t", amount="1", currency="CNY",
                                     stage="lead").id}
    target = str(ids[kind])
    refused = run(kind, "delete", target, "--purge", input="y\n")  # an answer on stdin changes nothing
    assert refused.exit_code != 0 and "Traceback" not in refused.output
    assert "add --yes" in refused.output and f"{kind} {target} is not purged" in refused.output
    assert "[y/N]" not in refused.output
    assert run(kind, "show", target).exit_code == 0
    done = run(kind, "delete", target, "--purge", "--yes")
    assert done.exit_code == 0, done.output
    assert f"{kind} {target} purged" in done.output
    assert run(kind, "show", target).exit_code != 0


def test_purge_of_a_customer_with_history_is_a_one_line_error(run, crm_sqlite_url) -> None:
    with CRM.open(config=Config.from_mapping({"database_url": crm_sqlite_url, "plugins": []})) as crm:
        customer = crm.customers.add(name="Ada")
        crm.deals.add(customer_id=customer.id, title="t", amount="1", currency="CNY", stage="won")
    result = run("customer", "delete", str(customer.id), "--purge", "--yes")
    assert result.exit_code != 0 and "Traceback" not in result.output
    assert "won deal" in result.output and "can only be archived" in result.output
    assert "archived_at" in run("--json", "customer", "show", str(customer.id)).output
