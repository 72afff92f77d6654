"""Deletes keep history (issue 15, point 6): deleting a customer or deal archives it, ``purge``
removes it (with the permission, and only without history), ``restore`` brings it back.

Archived records (and the deals, contacts and interactions of archived customers) are hidden
from lists, counts, searches, exports, segment runs and messages, but ``get``/``show`` find them
and reports keep them.  On every database ``crm_db_url`` offers.
"""

from __future__ import annotations

import json
from datetime import timedelta
from decimal import Decimal
from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy import func, select

from crmcore import CRM, Config, HasHistory, NotAuthorized, RecordArchived, ValidationError, hookimpl
from crmcore.application import audit
from crmcore.cli import cli
from crmcore.io.exporter import export_entities
from crmcore.io.importer import ImportOptions, import_file
from crmcore.notify import consent
from crmcore.store import tables
from crmcore.testing import FIXED_NOW


def people(crm: CRM) -> tuple[int, int]:
    """Two customers with a contact, an interaction and an open deal each: (kept, archived)."""
    ids = []
    for name in ("留下", "归档"):
        customer = crm.customers.add(name=name, email=f"{len(ids)}@example.com", region="华东")
        contact = crm.contacts.add(customer_id=customer.id, name=f"{name}的联系人")
        crm.interactions.add(customer_id=customer.id, contact_id=contact.id, kind="call", occurred_at=FIXED_NOW)
        crm.deals.add(customer_id=customer.id, title=f"{name}的单", amount="10", currency="CNY", stage="lead")
        ids.append(customer.id)
    return ids[0], ids[1]


def test_an_archived_customer_is_hidden_from_listings_with_its_records(crm_factory, tmp_path: Path) -> None:
    crm = crm_factory()
    kept, gone = people(crm)
    archived = crm.customers.delete(gone)
    assert archived.archived_at == FIXED_NOW
    assert [c.id for c in crm.customers.list()] == [kept] == [c.id for c in crm.customers.iter()]
    assert crm.customers.count() == 1 and crm.customers.count(archived="include") == 2
    assert [c.id for c in crm.customers.list(archived="only")] == [gone]
    assert crm.customers.search("归档") == [] and [c.id for c in crm.customers.search("@example.com")] == [kept]
    assert [c.id for c in crm.customers.search("归档", archived="include")] == [gone]
    for service in (crm.contacts, crm.interactions, crm.deals):  # a customer's records go with it ...
        assert {r.customer_id for r in service.list()} == {kept}, service
        assert service.count() == 1 and service.count(archived="include") == 2
        assert {r.customer_id for r in service.list(archived="only")} == {gone}
        assert service.count({"customer_id": gone}) == 0
    assert all(d.archived_at is None for d in crm.deals.list(archived="include"))  # ... unchanged
    for kind in ("customers", "contacts", "interactions", "deals"):
        target = tmp_path / f"{kind}.jsonl"
        export_entities(crm, kind, target, format="jsonl")
        rows = [json.loads(line) for line in target.read_text(encoding="utf-8").splitlines()]
        assert {r["id" if kind == "customers" else "customer_id"] for r in rows} == {kept}, kind
    export_entities(crm, "customers", tmp_path / "all.jsonl", format="jsonl", archived="include")
    assert len((tmp_path / "all.jsonl").read_text(encoding="utf-8").splitlines()) == 2
    # get finds it, and says it is archived
    assert crm.customers.get(gone).archived_at == FIXED_NOW and crm.customers.get(gone).name == "归档"
    with pytest.raises(ValidationError, match="archived"):
        crm.customers.list(archived="sometimes")  # type: ignore[arg-type]


def test_an_archived_deal_is_hidden_and_its_customer_is_not(crm_factory) -> None:
    crm = crm_factory()
    kept, _ = people(crm)
    deal = crm.deals.list({"customer_id": kept})[0]
    crm.deals.delete(deal.id)
    assert crm.deals.count({"customer_id": kept}) == 0
    assert [d.id for d in crm.deals.list({"customer_id": kept}, archived="only")] == [deal.id]
    assert crm.customers.count() == 2 and crm.contacts.count() == 2
    assert crm.deals.get(deal.id).archived_at == FIXED_NOW


def test_archived_records_refuse_writes_until_restored(crm_factory) -> None:
    crm = crm_factory()
    kept, gone = people(crm)
    deal = crm.deals.list({"customer_id": kept})[0]
    crm.customers.delete(gone)
    crm.deals.delete(deal.id)
    with pytest.raises(RecordArchived, match=rf"customer {gone} is already archived"):
        crm.customers.delete(gone)
    with pytest.raises(RecordArchived, match=rf"customer {gone} is archived: restore it first"):
        crm.customers.update(gone, city="上海")
    with pytest.raises(RecordArchived, match=rf"deal {deal.id} is archived: restore it first"):
        crm.deals.move(deal.id, "won")
    with pytest.raises(ValidationError, match=rf"deal {deal.id} is archived"):
        crm.deals.move_many([{"deal_id": deal.id, "stage": "won"}])
    with pytest.raises(ValidationError, match=rf"customer {gone} is archived: restore it first"):
        crm.contacts.add(customer_id=gone, name="新人")
    contacts = crm.contacts.count(archived="include")
    with pytest.raises(ValidationError, match=rf"row 1: customer_id: customer {gone} is archived"):
        crm.contacts.add_many([{"customer_id": kept, "name": "甲"}, {"customer_id": gone, "name": "乙"}])
    assert crm.contacts.count(archived="include") == contacts  # the bulk path too, and all-or-nothing
    gone_deal = crm.deals.list({"customer_id": gone}, archived="include")[0]
    for move in (lambda: crm.deals.move(gone_deal.id, "won"),
                 lambda: crm.deals.move_many([{"deal_id": gone_deal.id, "stage": "won"}])):
        with pytest.raises(ValidationError, match=rf"customer {gone} is archived"):  # no earning either
            move()
    with pytest.raises(ValidationError, match="use delete"):  # archiving has its own use case
        crm.customers.update(kept, archived_at=FIXED_NOW)
    with pytest.raises(RecordArchived, match=rf"customer {kept} is not archived"):
        crm.customers.restore(kept)
    restored = crm.customers.restore(gone)
    assert restored.archived_at is None and crm.customers.count() == 2 and crm.deals.count() == 1
    assert crm.customers.update(gone, city="上海").city == "上海"
    assert crm.deals.restore(deal.id).archived_at is None and crm.deals.count() == 2
    assert crm.deals.move(deal.id, "won").stage == "won"


class RefusePurge:
    """A policy that lets everything but purging."""

    @hookimpl
    def authorize(self, actor: object, action: str, resource: object) -> bool:
        return not action.endswith(".purge")


def test_purge_needs_the_permission(crm_factory) -> None:
    crm = crm_factory(extra_plugins=[RefusePurge()])
    _, gone = people(crm)
    deal = crm.deals.list({"customer_id": gone})[0]
    before = row_counts(crm)
    with pytest.raises(NotAuthorized, match=r"may not customer\.purge"):
        crm.customers.delete(gone, purge=True)
    with pytest.raises(NotAuthorized, match=r"may not deal\.purge"):
        crm.deals.delete(deal.id, purge=True)
    assert row_counts(crm) == before
    assert crm.customers.delete(gone).archived_at is not None  # archiving is still allowed


def test_purge_without_history_removes_the_rows(crm_factory) -> None:
    crm = crm_factory()
    kept, gone = people(crm)
    crm.customers.delete(gone)  # archived first, then purged: both are fine
    purged = crm.customers.delete(gone, purge=True)
    assert purged.id == gone and crm.customers.find(id=gone) is None
    for service in (crm.contacts, crm.interactions, crm.deals):
        assert service.count(archived="include") == 1
    deal = crm.deals.list({"customer_id": kept})[0]
    crm.deals.delete(deal.id, purge=True)
    assert crm.deals.find(id=deal.id) is None
    with crm.engine.connect() as conn:
        stages = conn.execute(select(func.count()).select_from(tables.deal_stage_history)).scalar_one()
    assert stages == 0  # the stage history of both deals went with them


def test_purge_with_history_fails_clearly_and_deletes_nothing(crm_factory) -> None:
    crm = crm_factory(plugins=["loyalty", "notify"])
    points = crm.customers.add(name="积分")
    crm.loyalty.adjust(points.id, 100, scheme="points", reason="welcome")
    mailed = crm.customers.add(name="通知", email="m@example.com")
    crm.notify.enqueue("console", customer_id=mailed.id, subject="s", body="b")
    asked = crm.customers.add(name="同意")
    crm.messages.set_consent(asked.id, False, source="cli")
    buyer = crm.customers.add(name="买家")
    won = crm.deals.add(customer_id=buyer.id, title="w", amount="5", currency="CNY", stage="lead")
    crm.deals.move(won.id, "won")  # ledger entries on the deal
    crm.deals.move(won.id, "lost", lost_reason="refund")
    crm.customers.delete(asked.id)  # archived or not, the history keeps it
    before = row_counts(crm)
    for kind, id, what in (("customer", points.id, "1 loyalty ledger entry"),
                           ("customer", mailed.id, "1 outbox message"),
                           ("customer", asked.id, "1 consent decision"),
                           ("deal", won.id, "2 loyalty ledger entries")):
        service = crm.customers if kind == "customer" else crm.deals
        with pytest.raises(HasHistory, match=rf"{kind} {id} has history \({what}\) and cannot be purged: "
                                             "it can only be archived"):
            service.delete(id, purge=True)
    assert row_counts(crm) == before


def test_archive_purge_and_restore_are_audited(crm_factory) -> None:
    crm = crm_factory()
    kept, gone = people(crm)
    deal = crm.deals.list({"customer_id": kept})[0]
    with crm.acting_as("li.wei"):
        crm.customers.delete(gone)
        crm.customers.restore(gone)
        crm.deals.delete(deal.id)
        crm.deals.restore(deal.id)
        crm.customers.delete(gone, purge=True)
    with crm.engine.connect() as conn:
        found = [r for r in audit.records(conn, actor="li.wei", limit=None)]
        assert audit.verify(conn).ok
    found.sort(key=lambda r: r.seq)
    assert [(r.action, r.entity_id) for r in found] == [
        ("customer.archive", str(gone)), ("customer.restore", str(gone)), ("deal.archive", str(deal.id)),
        ("deal.restore", str(deal.id)), ("customer.purge", str(gone))]
    archive, restore = found[0].changes, found[1].changes
    assert archive is not None and restore is not None
    assert archive["archived_at"][0] is None and archive["archived_at"][1] is not None
    assert restore["archived_at"] == archive["archived_at"][::-1]
    assert found[4].changes is not None and found[4].changes["name"] == ["归档", None]


def test_reports_keep_archived_records(crm_factory) -> None:
    crm = crm_factory(plugins=["reports"])
    customer = crm.customers.add(name="老客户")
    crm.deals.add(customer_id=customer.id, title="合同", amount=Decimal("1000"), currency="USD", stage="won",
                  closed_at=FIXED_NOW - timedelta(days=40))
    other = crm.customers.add(name="另一个")
    spare = crm.deals.add(customer_id=other.id, title="w", amount=Decimal("500"), currency="USD", stage="won",
                          closed_at=FIXED_NOW - timedelta(days=20))
    options = {"start": "2026-01-01", "end": "2026-12-31"}
    before = crm.reports.run("win-loss", options=options).records()[-1]
    crm.customers.delete(customer.id)
    crm.deals.delete(spare.id)
    after = crm.reports.run("win-loss", options=options).records()[-1]
    assert int(before["won"]) == 2 and after == before


def test_segment_runs_and_messages_leave_archived_customers_out(crm_factory) -> None:
    crm = crm_factory(plugins=["segments", "notify"])
    kept, gone = people(crm)
    first = crm.segments.run("geo")
    assert {m["customer_id"] for m in crm.segments.members("geo", run_id=first.id)} == {kept, gone}
    crm.customers.delete(gone)
    second = crm.segments.run("geo")
    assert {m["customer_id"] for m in crm.segments.members("geo", run_id=second.id)} == {kept}
    assert (second.members, second.left) == (1, 1)
    with crm.unit(readonly=True) as uow:
        assert consent.refusal(uow, gone, "console", "transactional") == "customer is archived"
        assert consent.refusal(uow, kept, "console", "transactional") is None
    message = crm.notify.enqueue("console", customer_id=gone, subject="s", body="b")
    with crm.engine.connect() as conn:
        row = conn.execute(select(tables.notify_outbox.c.status, tables.notify_outbox.c.last_error).where(
            tables.notify_outbox.c.id == message)).one()
    assert tuple(row) == ("suppressed", "customer is archived")
    crm.customers.restore(gone)
    third = crm.segments.run("geo")
    assert {m["customer_id"] for m in crm.segments.members("geo", run_id=third.id)} == {kept, gone}


class Departures:
    """Records what an ``on_customer_deleted`` handler can tell: archived, and whether the row is there."""

    def __init__(self) -> None:
        self.seen: list[tuple[int, bool, bool]] = []

    @hookimpl
    def on_customer_deleted(self, uow, customer) -> None:
        self.seen.append((customer.id, customer.archived_at is not None,
                          uow.customers.find(id=customer.id) is not None))

    @hookimpl
    def on_customer_updated(self, uow, customer, previous) -> None:
        self.seen.append((customer.id, previous.archived_at is not None, customer.archived_at is not None))


def test_archive_and_purge_fire_on_customer_deleted_and_restore_an_update(crm_factory) -> None:
    """As docs/hooks.md says: a handler tells a purge from an archive by the row being gone."""
    departures = Departures()
    crm = crm_factory(extra_plugins=[departures])
    kept, gone = people(crm)
    crm.customers.delete(gone)
    crm.customers.restore(gone)
    crm.customers.delete(gone)
    crm.customers.delete(gone, purge=True)
    crm.customers.delete(kept, purge=True)
    assert departures.seen == [(gone, True, True), (gone, True, False), (gone, True, True),
                               (gone, True, False), (kept, False, False)]


def test_an_import_row_matching_an_archived_record_is_refused(crm_factory, tmp_path: Path) -> None:
    crm = crm_factory()
    live = crm.customers.add(name="A", external_id="C1")
    gone = crm.customers.add(name="B", external_id="C2", email="b@example.com")
    crm.customers.delete(gone.id)
    file = tmp_path / "customers.csv"
    file.write_text("external_id,name\nC1,A2\nC2,B2\n", encoding="utf-8")
    report = import_file(crm, "customers", file, ImportOptions(on_error="skip"))
    assert report.error_messages() == [
        f'customers.csv:3: column "external_id": customer {gone.id} is archived: restore it first '
        f"(crm customer restore {gone.id}) or leave this row out"]
    assert crm.customers.get(live.id).name == "A2" and crm.customers.get(gone.id).name == "B"
    file.write_text("external_id,name,archived_at\nC1,A3,2026-01-01T00:00:00Z\n", encoding="utf-8")
    report = import_file(crm, "customers", file, ImportOptions(on_error="skip"))
    assert report.error_messages() == [
        f'customers.csv:2: column "archived_at": customer {live.id} is not archived: an import does not '
        f"archive it (crm customer delete {live.id} does)"]
    assert crm.customers.get(live.id).archived_at is None
    by_email = tmp_path / "by_email.csv"
    by_email.write_text("email,city\nb@example.com,上海\n", encoding="utf-8")
    report = import_file(crm, "customers", by_email, ImportOptions(on_error="skip", key="email"))
    assert [m.split(": ", 1)[0] for m in report.error_messages()] == ["by_email.csv:2"]
    assert crm.customers.get(gone.id).city is None
    deal = crm.deals.add(customer_id=live.id, title="d", amount="1", currency="CNY", stage="lead", external_id="D1")
    crm.deals.delete(deal.id)
    deals = tmp_path / "deals.csv"
    deals.write_text("external_id,customer,title,amount,currency,stage\nD1,C1,d2,1,CNY,lead\n", encoding="utf-8")
    report = import_file(crm, "deals", deals, ImportOptions(on_error="skip"))
    assert [m.split(": ", 1)[0] for m in report.error_messages()] == ["deals.csv:2"]
    assert crm.deals.get(deal.id).title == "d"
    contacts = tmp_path / "contacts.csv"  # a new record for an archived customer: refused as add() refuses it
    contacts.write_text("customer,name\nC1,Kim\nC2,Lee\nb@example.com,Moe\n", encoding="utf-8")
    report = import_file(crm, "contacts", contacts, ImportOptions(on_error="skip"))
    assert [m.split(": ", 1)[0] for m in report.error_messages()] == ["contacts.csv:3", "contacts.csv:4"]
    assert f"customer {gone.id} is archived" in report.error_messages()[0]
    assert [c.name for c in crm.contacts.list(archived="include")] == ["Kim"]


def row_counts(crm: CRM) -> dict[str, int]:
    with crm.engine.connect() as conn:
        return {name: conn.execute(select(func.count()).select_from(t)).scalar_one()
                for name, t in tables.metadata.tables.items() if name not in ("audit_log", "audit_head")}


# -- the command line -----------------------------------------------------------------------------

@pytest.fixture
def run(crm_db_url, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for var in ("CRM_PLUGINS", "CRM_DATABASE_URL", "CRM_PLUGINS_DIR", "CRM_PLUGINS_BLOCK", "CRM_CONFIG",
                "CRM_USER", "COLUMNS", "TTY_COMPATIBLE"):
        monkeypatch.delenv(var, raising=False)

    def invoke(*args: str):
        return CliRunner().invoke(cli, ["--db", crm_db_url, "--plugins", "", *args])
    return invoke


def test_cli_delete_archives_and_restore_brings_back(run, crm_db_url) -> None:
    with CRM.open(config=Config.from_mapping({"database_url": crm_db_url, "plugins": []})) as crm:
        kept, gone = people(crm)
        deal = crm.deals.list({"customer_id": kept})[0].id
    result = run("customer", "delete", str(gone))
    assert result.exit_code == 0, result.output
    assert f"customer {gone} archived" in result.output and f"crm customer restore {gone}" in result.output
    listed = json.loads(run("--json", "customer", "list").stdout)
    assert [c["id"] for c in listed] == [kept]
    only = json.loads(run("--json", "customer", "list", "--archived").stdout)
    assert [c["id"] for c in only] == [gone] and only[0]["archived_at"]
    both = json.loads(run("--json", "customer", "list", "--include-archived").stdout)
    assert [c["id"] for c in both] == [kept, gone]
    assert run("customer", "list", "--archived", "--include-archived").exit_code != 0
    for flags, expected in (((), [kept]), (("--archived",), [gone]), (("--include-archived",), [kept, gone])):
        exported = run("--json", "export", "customers", *flags)
        assert exported.exit_code == 0, exported.output
        assert [json.loads(line)["id"] for line in exported.stdout.splitlines()] == expected, flags
        contacts = run("--json", "export", "contacts", *flags).stdout.splitlines()
        assert [json.loads(line)["customer_id"] for line in contacts] == expected, flags
    assert [d["customer_id"] for d in json.loads(run("--json", "deal", "list").stdout)] == [kept]
    shown = json.loads(run("--json", "customer", "show", str(gone)).stdout)
    assert shown["archived_at"] and [d["customer_id"] for d in shown["deals"]] == [gone]
    text = run("customer", "show", str(gone)).output
    assert f"customer {gone} is archived" in text and "archived_at" in text
    refused = run("customer", "update", str(gone), "--city", "上海")
    assert refused.exit_code == 1 and "restore it first" in refused.output and "Traceback" not in refused.output
    again = run("customer", "delete", str(gone))
    assert again.exit_code == 1 and "already archived" in again.output
    result = run("deal", "delete", str(deal))
    assert result.exit_code == 0 and f"deal {deal} archived" in result.output
    assert json.loads(run("--json", "deal", "list").stdout) == []
    assert [d["id"] for d in json.loads(run("--json", "deal", "list", "--archived").stdout)] == [
        d for d in sorted({deal} | {d["id"] for d in shown["deals"]})]
    restored = run("customer", "restore", str(gone))
    assert restored.exit_code == 0 and f"customer {gone} restored" in restored.output
    assert json.loads(run("--json", "deal", "restore", str(deal)).stdout)["archived_at"] is None
    assert len(json.loads(run("--json", "customer", "list").stdout)) == 2
    assert len(json.loads(run("--json", "deal", "list").stdout)) == 2
