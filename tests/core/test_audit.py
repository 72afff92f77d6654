"""The audit trail (issue 15, point 5): every write appends a record in the same transaction,
hash-chained; ``verify`` detects an edited or deleted record; bulk paths write one record per batch."""

from __future__ import annotations

import threading
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import delete, func, select, update

import crmcore
from crmcore import HookError
from crmcore.application import audit
from crmcore.io.importer import ImportOptions, import_file
from crmcore.store import tables
from crmcore.testing import FIXED_NOW


def log(crm, **filters) -> list[audit.AuditRecord]:
    with crm.unit(readonly=True) as uow:
        return audit.records(uow.conn, **filters)


def verify(crm) -> audit.Verification:
    with crm.unit(readonly=True) as uow:
        return audit.verify(uow.conn)


def test_every_entity_write_is_recorded_with_before_and_after(crm_factory) -> None:
    crm = crm_factory()
    crm.users.add("li")
    with crm.acting("li"):
        customer = crm.customers.add(name="张伟", region="华东", owner="li")
        crm.customers.update(customer.id, city="上海")
        contact = crm.contacts.add(customer_id=customer.id, name="联系人")
        crm.contacts.delete(contact.id)
        deal = crm.deals.add(customer_id=customer.id, title="合同", amount="100.50", currency="CNY", stage="lead")
        crm.deals.move(deal.id, "won")
    records = log(crm)
    assert [(r.actor, r.action, r.entity_id) for r in records] == [
        ("system", "user.add", "li"),
        ("li", "customer.create", str(customer.id)), ("li", "customer.update", str(customer.id)),
        ("li", "contact.create", str(contact.id)), ("li", "contact.delete", str(contact.id)),
        ("li", "deal.create", str(deal.id)), ("li", "deal.update", str(deal.id)),
        ("li", "customer.update", str(customer.id))]  # promoted by the won deal
    assert records[1].changes["name"] == [None, "张伟"] and records[1].changes["owner"] == [None, "li"]
    assert records[2].changes == {"city": [None, "上海"]}
    assert records[4].changes["name"] == ["联系人", None]
    assert records[5].changes["amount"] == [None, "100.50"]
    assert records[7].changes == {"stage": ["lead", "customer"]}
    move = records[6].changes
    assert move["stage"] == ["lead", "won"] and move["closed_at"][0] is None
    assert {r.customer_id for r in records[1:]} == {customer.id}
    assert [r.seq for r in records] == list(range(1, 9))
    assert verify(crm).ok


def test_a_rolled_back_write_leaves_no_record(crm_factory) -> None:
    class Refuse:
        @crmcore.hookimpl
        def on_customer_created(self, uow, customer):
            raise RuntimeError("no")

    crm = crm_factory(extra_plugins=[Refuse()])
    with pytest.raises(HookError):
        crm.customers.add(name="x")
    assert crm.customers.count() == 0 and log(crm) == []
    assert verify(crm).ok


def test_bulk_paths_write_one_record_per_batch_with_the_ids(crm_factory, tmp_path: Path) -> None:
    crm = crm_factory()
    assert crm.customers.add_many([{"name": f"c{i}"} for i in range(5)]) == 5
    file = tmp_path / "customers.csv"
    file.write_text("external_id,name\n" + "".join(f"E{i},n{i}\n" for i in range(7)), encoding="utf-8")
    import_file(crm, "customers", file, ImportOptions(batch_size=4))
    records = log(crm)
    assert [(r.action, len(r.ids or [])) for r in records] == [
        ("customer.import", 5), ("customer.import", 4), ("customer.import", 3)]
    ids = sorted(i for r in records for i in r.ids)
    with crm.unit(readonly=True) as uow:
        assert ids == sorted(uow.conn.execute(select(tables.customers.c.id)).scalars())
    file.write_text("external_id,name\nE1,renamed\n", encoding="utf-8")
    import_file(crm, "customers", file)
    last = log(crm)[-1]
    assert (last.action, last.ids) == ("customer.import-update", [crm.customers.find(external_id="E1").id])


def test_an_import_rolled_back_after_several_batches_leaves_no_record(crm_factory, tmp_path: Path) -> None:
    # On SQLite each batch's record joins the chain before the commit (crmcore.io.importer._write):
    # a bad row in the last batch of an all-or-nothing import still takes them all back.
    crm = crm_factory()
    crm.customers.add(name="before")
    file = tmp_path / "customers.csv"
    file.write_text("external_id,name,email\n" + "".join(f"E{i},n{i},\n" for i in range(9)) + "E9,n9,not-an-address\n",
                    encoding="utf-8")
    with pytest.raises(crmcore.io.importer.ImportFailed):
        import_file(crm, "customers", file, ImportOptions(batch_size=3))
    assert [r.action for r in log(crm)] == ["customer.create"] and crm.customers.count() == 1
    assert verify(crm).ok
    file.write_text("external_id,name\n" + "".join(f"E{i},n{i}\n" for i in range(10)), encoding="utf-8")
    import_file(crm, "customers", file, ImportOptions(batch_size=3))
    records = log(crm)
    assert [(r.action, len(r.ids or [])) for r in records] == [
        ("customer.create", 0), ("customer.import", 3), ("customer.import", 3), ("customer.import", 3),
        ("customer.import", 1)]
    assert [r.seq for r in records] == list(range(1, 6)) and verify(crm).ok


def test_ledger_consent_segment_run_and_messages_are_recorded(crm_factory) -> None:
    crm = crm_factory(plugins=["loyalty", "notify", "segments"])
    customer = crm.customers.add(name="A", email="a@example.com")
    crm.loyalty.adjust(customer.id, 100, scheme="points", reason="welcome")
    crm.messages.set_consent(customer.id, False, source="cli")
    crm.notify.enqueue("console", customer_id=customer.id, subject="s", body="b")
    crm.segments.run("lifecycle")
    actions = [r.action for r in log(crm)]
    assert actions[:1] == ["customer.create"]
    for expected in ("ledger.adjust", "consent.record", "message.queue", "segment.run"):
        assert expected in actions, actions
    ledger = next(r for r in log(crm) if r.action == "ledger.adjust")
    assert ledger.customer_id == customer.id and ledger.changes["points"] == [None, 100]
    assert verify(crm).ok


def test_verify_detects_an_edited_record(crm_factory) -> None:
    crm = crm_factory()
    for name in "abc":
        crm.customers.add(name=name)
    assert verify(crm) == audit.Verification(True, 3, log(crm)[-1].hash, ())
    with crm.engine.begin() as conn:
        conn.execute(update(tables.audit_log).where(tables.audit_log.c.seq == 2).values(actor="mallory"))
    result = verify(crm)
    assert not result.ok and result.problems == (
        "record 2 (customer.create customer 2): its content does not match its hash (edited)",)


@pytest.mark.parametrize("seq, problem", [(2, "records 2..2 are missing"), (3, "records at the end were deleted")])
def test_verify_detects_a_deleted_record(crm_factory, seq, problem) -> None:
    crm = crm_factory()
    for name in "abc":
        crm.customers.add(name=name)
    with crm.engine.begin() as conn:
        conn.execute(delete(tables.audit_log).where(tables.audit_log.c.seq == seq))
    result = verify(crm)
    assert not result.ok and problem in " ".join(result.problems)


def test_verify_detects_a_rewritten_chain_link(crm_factory) -> None:
    """Deleting a record and renumbering its successors still breaks the link."""
    crm = crm_factory()
    for name in "abc":
        crm.customers.add(name=name)
    with crm.engine.begin() as conn:
        conn.execute(delete(tables.audit_log).where(tables.audit_log.c.seq == 2))
        conn.execute(update(tables.audit_log).where(tables.audit_log.c.seq == 3).values(seq=2))
        conn.execute(update(tables.audit_head).values(seq=2))
    assert "does not follow record 1" in " ".join(verify(crm).problems)


def test_the_chain_holds_under_concurrent_writers(crm_factory) -> None:
    """Writers in parallel transactions append one after another: no gap, no fork."""
    crm = crm_factory()
    errors: list[BaseException] = []

    def write(n: int) -> None:
        try:
            for i in range(10):
                crm.customers.add(name=f"w{n}-{i}")
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    result = verify(crm)
    assert result.ok and result.checked == 40 == crm.customers.count()


def test_log_filters_by_customer_user_and_time(crm_factory) -> None:
    moments = iter([FIXED_NOW - timedelta(days=3)] * 3 + [FIXED_NOW] * 20)
    crm = crm_factory(clock=lambda: next(moments))
    crm.users.add("li")
    first = crm.customers.add(name="a")
    with crm.acting("li"):
        second = crm.customers.add(name="b")
        crm.contacts.add(customer_id=first.id, name="c")
    assert [r.action for r in log(crm, customer_id=first.id)] == ["customer.create", "contact.create"]
    assert [r.entity_id for r in log(crm, actor="li")] == [str(second.id), "1"]
    assert [r.action for r in log(crm, since=FIXED_NOW - timedelta(days=1))] == ["customer.create", "contact.create"]
    assert [r.seq for r in log(crm, limit=2)] == [3, 4]
    with crm.unit(readonly=True) as uow:
        assert uow.conn.execute(select(func.count()).select_from(tables.audit_log)).scalar_one() == 4


@pytest.mark.parametrize("ids", [[], list(range(100_000)), [2**70, *range(100)], [True, *range(100)],
                                 [1.5, *range(100)], None, "IntList:100000", "IntList:big", "IntList:0"])
def test_the_hash_of_a_batchs_ids_is_the_canonical_jsons(ids) -> None:
    """record_hash writes an IntList (a batch's ids) with orjson: the hash must be the one of the
    canonical JSON text (json.dumps, sorted keys, no spaces, ASCII), whatever the ids hold; the
    JSON column stores it as JSON of the same list."""
    import hashlib
    import json
    from datetime import datetime, timezone

    from crmcore.store.engine import _json_dumps
    from crmcore.store.intlist import IntList

    if isinstance(ids, str):
        ids = IntList({"IntList:100000": range(100_000), "IntList:big": [2**70, 1, -2], "IntList:0": []}[
            ids])
        assert json.loads(_json_dumps(ids)) == list(ids)

    at = datetime(2026, 12, 7, 1, 2, 3, 456789, tzinfo=timezone.utc)
    changes = {"scheme": "tiërs", "a": [1, "ü"]}
    canonical = json.dumps(["p" * 64, 7, at.isoformat(), "ann", "tier.change", "loyalty_account", None, None,
                            ids, changes], sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    assert audit.record_hash("p" * 64, 7, at, "ann", "tier.change", "loyalty_account", None, None, ids,
                             changes) == hashlib.sha256(canonical.encode()).hexdigest()
