"""Issue 19, the defects left open: a sealed birthday and sealed custom fields, the CRM's copies of
sealed values (audit values, a merge's before-state), and an erasure that reaches the customers
merged into the erased one.  On SQLite, PostgreSQL and MariaDB; planted values are looked for in
every table (and the SQLite file bytes)."""

from __future__ import annotations

import calendar
from datetime import date, datetime, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, inspect, select, table, text

import crmcore
from crmcore.application import audit
from crmcore.store.sealed import MARK, new_key
from crmcore.store.tables import customer_merges, customers, deals, loyalty_ledger

SQLITE_ONLY = pytest.mark.parametrize("crm_db_url", ["sqlite"], indirect=True)
PASSPORTS = ["PP-PLANT-48213", "PP-PLANT-77120"]
BIRTHDAYS = [date(1983, 6, 17), date(1991, 11, 2)]
CUSTOM = [{"entity": "customer", "name": "passport_no", "type": "str"},
          {"entity": "customer", "name": "member_since", "type": "date"},
          {"entity": "customer", "name": "shoe_size", "type": "int"}]
FIELDS = ["email", "phone", "birthday", "custom.passport_no", "custom.member_since"]


def config(fields: list[str] = FIELDS, **more: Any) -> dict[str, Any]:
    return {"custom_fields": CUSTOM, "privacy": {"encryption": {"fields": fields, "key_env": "PRIVFIELDS_KEYS"}},
            **more}


def encrypted(crm_factory: Any, monkeypatch: Any, keys: list[str], plugins: list[str] | None = None,
              fields: list[str] = FIELDS, **more: Any) -> Any:
    monkeypatch.setenv("PRIVFIELDS_KEYS", "\n".join(keys))
    return crm_factory(plugins=plugins or [], config=config(fields, **more))


def everything(crm: Any) -> str:
    with crm.engine.connect() as conn:
        return "\n".join(f"{name}: {tuple(row)!r}" for name in sorted(inspect(conn).get_table_names())
                         for row in conn.execute(select(text("*")).select_from(table(name))))


def file_bytes(crm: Any) -> bytes:
    crm.privacy.compact()  # free pages and the write-ahead log folded in: what is left is live data
    database = Path(str(crm.engine.url.database))
    return b"".join(p.read_bytes() for p in database.parent.glob(database.name + "*"))


def planted_texts(i: int) -> list[str]:
    # A birthday as stored plain (ISO) and as the audit trail writes it; the custom date too.
    return [PASSPORTS[i], BIRTHDAYS[i].isoformat(), f"2011-0{i + 1}-23", f"planted{i}@example.com",
            f"+86139000011{i}2"]


def add(crm: Any, i: int, **more: Any) -> Any:
    return crm.customers.add(name=f"Person {i}", email=f"planted{i}@example.com", phone=f"+86139000011{i}2",
                             birthday=BIRTHDAYS[i], attributes={"passport_no": PASSPORTS[i],
                                                                "member_since": f"2011-0{i + 1}-23",
                                                                "shoe_size": 42 + i}, **more)


def test_birthday_and_custom_fields_are_sealed_typed_and_found_exactly(crm_factory: Any, monkeypatch: Any) -> None:
    crm = encrypted(crm_factory, monkeypatch, [new_key()])
    ids = [add(crm, i).id for i in range(2)]
    crm.customers.update(ids[0], birthday=date(1983, 6, 18))  # an audited change of both values
    crm.customers.update(ids[0], birthday=BIRTHDAYS[0])
    stored = everything(crm)
    assert [v for i in range(2) for v in planted_texts(i) if v in stored] == []
    assert "42" in stored and "shoe_size" in stored  # an unsealed custom field stays as it was
    with crm.engine.connect() as conn:
        raw = conn.execute(text("SELECT birthday FROM customers ORDER BY id")).scalars().all()
    assert all(r.startswith(MARK) and r.split("$")[4] == b.isoformat()[5:] for r, b in zip(raw, BIRTHDAYS))
    # Read back as the right types.
    first = crm.customers.get(ids[0])
    assert first.birthday == BIRTHDAYS[0] and isinstance(first.birthday, date)
    assert first.attributes == {"passport_no": PASSPORTS[0], "member_since": "2011-01-23", "shoe_size": 42}
    # Exact look-ups through the blind index; substring search finds nothing (documented).
    assert [c.id for c in crm.customers.list({"birthday": "1991-11-02"})] == [ids[1]]
    assert [c.id for c in crm.customers.list({"attributes.passport_no": PASSPORTS[0]})] == [ids[0]]
    assert [c.id for c in crm.customers.list({"attributes.passport_no__in": PASSPORTS})] == ids
    assert crm.customers.list({"attributes.passport_no": "PP-NOBODY"}) == []
    assert crm.customers.list({"attributes.passport_no__contains": "PLANT"}) == []
    assert [c.id for c in crm.customers.list({"attributes.shoe_size": 43})] == [ids[1]]
    with crm.unit(readonly=True) as uow:
        records = audit.records(uow.conn, customer_id=ids[0])
        assert audit.verify(uow.conn).ok
    assert records[1].changes["birthday"] == ["1983-06-17", "1983-06-18"]
    assert records[0].changes["attributes"][1]["passport_no"] == PASSPORTS[0]


def test_rotation_reseals_birthday_and_custom_fields(crm_factory: Any, monkeypatch: Any) -> None:
    old, new = new_key(), new_key()
    crm = encrypted(crm_factory, monkeypatch, [old])
    cid = add(crm, 0).id
    crm.close()
    crm = encrypted(crm_factory, monkeypatch, [new, old])
    counts = crm.privacy.rotate_key()
    assert counts["customers.birthday"] == 1 and counts["customers.attributes"] == 1 and counts["audit_log"] == 1
    assert crm.privacy.rotate_key()["customers.attributes"] == 0
    crm.close()
    crm = encrypted(crm_factory, monkeypatch, [new])  # the old key is gone: everything still opens
    customer = crm.customers.get(cid)
    assert customer.birthday == BIRTHDAYS[0] and customer.attributes["passport_no"] == PASSPORTS[0]
    assert [c.id for c in crm.customers.list({"attributes.passport_no": PASSPORTS[0]})] == [cid]
    with crm.unit(readonly=True) as uow:
        assert audit.verify(uow.conn).ok
        assert audit.records(uow.conn, customer_id=cid)[0].changes["birthday"] == [None, "1983-06-17"]


def test_sealed_custom_field_must_be_declared() -> None:
    with pytest.raises(crmcore.ConfigError, match="'custom.passport' is not a customer custom field.*passport_no"):
        crmcore.Config.from_mapping(config(["email", "custom.passport"]))
    with pytest.raises(crmcore.ConfigError, match="fields must be a list of email, phone, birthday or custom.NAME"):
        crmcore.Config.from_mapping(config(["city"]))


def _expected_celebrants(crm: Any, today: date) -> list[int]:
    """Independently of the SQL: the customers read back (opened) and compared in Python."""
    found = []
    for c in crm.customers.list({}):
        b = c.birthday
        if b is None or b.month != today.month:
            continue
        if b.day == today.day or (today.month == 2 and today.day == 28 and b.day == 29
                                  and not calendar.isleap(today.year)):
            found.append(c.id)
    return sorted(found)


def test_birthday_bonuses_and_greetings_work_with_birthday_sealed(crm_factory: Any, monkeypatch: Any) -> None:
    crm = encrypted(crm_factory, monkeypatch, [new_key()], plugins=["loyalty", "notify"],
                    loyalty={"birthday": {"mode": "day", "bonus": 77}})
    days = [date(2000, 2, 29), date(1990, 2, 28), date(1985, 3, 1), date(1970, 12, 31), date(1999, 7, 14)]
    for n, day in enumerate(days):
        crm.customers.add(name=f"B{n}", birthday=day)
    crm.customers.add(name="No birthday")
    from crmcore_notify.triggers import birthdays

    for today in (date(2027, 2, 28), date(2027, 12, 31), date(2027, 7, 14), date(2027, 5, 5)):
        expected = _expected_celebrants(crm, today)
        with crm.unit(readonly=True) as uow:
            assert birthdays(uow, today) == expected
        as_of = datetime(today.year, today.month, today.day, 12, tzinfo=timezone.utc)
        assert crm.loyalty.run(as_of=as_of, scheme="birthday") == {"birthday": len(expected)}
        with crm.engine.connect() as conn:
            credited = sorted(conn.execute(select(loyalty_ledger.c.customer_id).where(
                loyalty_ledger.c.idempotency_key.like(f"birthday:{today.year}:%"),
                loyalty_ledger.c.occurred_at == as_of)).scalars())
        assert credited == expected


def test_merge_update_and_unmerge_keep_no_readable_copy(crm_factory: Any, monkeypatch: Any) -> None:
    crm = encrypted(crm_factory, monkeypatch, [new_key()])
    a, b = add(crm, 0), add(crm, 1)
    crm.customers.update(a.id, phone="+8613900001199", attributes={**a.attributes, "passport_no": "PP-PLANT-99001"})
    before = {c.id: crm.customers.get(c.id) for c in (a, b)}
    result = crm.merges.merge(a.id, [b.id], prefer={"email": b.id, "attributes.passport_no": b.id})
    assert result.kept.email == "planted1@example.com" and result.kept.attributes["passport_no"] == PASSPORTS[1]
    stored = everything(crm)
    planted = [*planted_texts(0), *planted_texts(1), "+8613900001199", "PP-PLANT-99001"]
    assert [v for v in planted if v in stored] == []
    with crm.engine.connect() as conn:
        assert MARK in str(conn.execute(select(customer_merges.c.before)).scalar_one())
    if crm.engine.dialect.name == "sqlite":
        data = file_bytes(crm)
        assert [v for v in planted if v.encode() in data] == []
    crm.merges.unmerge(result.merge_id)
    for cid, old in before.items():
        back = crm.customers.get(cid)
        assert (back.email, back.phone, back.birthday, back.attributes) == \
            (old.email, old.phone, old.birthday, old.attributes)
    with crm.unit(readonly=True) as uow:
        assert audit.verify(uow.conn).ok


def _totals(crm: Any) -> dict[str, Any]:
    with crm.engine.connect() as conn:
        revenue = conn.execute(select(func.sum(deals.c.amount))).scalar_one()
        points = conn.execute(select(func.coalesce(func.sum(loyalty_ledger.c.points), 0))).scalar_one()
    report = crm.reports.run("customer-value", as_of="2026-06-30")
    return {"revenue": Decimal(revenue), "points": int(points),
            "report": sorted(repr([str(v) for v in row][1:]) for row in report.rows)}


@pytest.mark.parametrize("sealing", [False, True], ids=["plain", "sealed"])
def test_erasing_the_kept_customer_erases_the_merged_away_ones(crm_factory: Any, monkeypatch: Any,
                                                                sealing: bool) -> None:
    if sealing:
        crm = encrypted(crm_factory, monkeypatch, [new_key()], plugins=["loyalty", "reports"])
    else:
        crm = crm_factory(plugins=["loyalty", "reports"], config={"custom_fields": CUSTOM})
    kept, twin = add(crm, 0, city="Plantcityzero"), add(crm, 1, city="Plantcityone", external_id="EXT-PLANT-1")
    other = crm.customers.add(name="Bystander Keepme", email="bystander.keepme@example.com", city="Keepcity")
    for customer, amount in ((kept, "120.50"), (twin, "80.25"), (other, "10.00")):
        title = "Bystander deal" if customer is other else f"Deal plant {customer.id}"
        crm.deals.add(customer_id=customer.id, title=title, amount=amount, currency="CNY",
                      stage="won", closed_at="2026-03-01")
        crm.loyalty.adjust(customer.id, 30, "points", "welcome")
    crm.customers.update(twin.id, name="Person 1 Renamedplant")  # an old name in the audit trail
    merge = crm.merges.merge(kept.id, [twin.id], prefer={"email": twin.id, "city": twin.id})
    totals = _totals(crm)
    crm.privacy.erase(kept.id, "PIPL request 2026-200")
    stored = everything(crm)
    planted = [*planted_texts(0), *planted_texts(1), "Person 0", "Person 1", "Renamedplant", "Plantcityzero",
               "Plantcityone", "EXT-PLANT-1", "Deal plant"]
    assert [v for v in planted if v in stored] == []
    assert "Bystander Keepme" in stored and "Keepcity" in stored  # nobody else was touched
    if crm.engine.dialect.name == "sqlite":
        data = file_bytes(crm)
        assert [v for v in planted if v.encode() in data] == []
    assert _totals(crm) == totals
    with crm.engine.connect() as conn:
        erased = set(conn.execute(text("SELECT customer_id FROM privacy_erasures")).scalars())
        assert erased == {kept.id, twin.id}
        assert conn.execute(select(customers.c.name).where(customers.c.id == twin.id)).scalar_one() == "(erased)"
    with crm.unit(readonly=True) as uow:
        verified = audit.verify(uow.conn)
    assert verified.ok, verified.problems
    with pytest.raises(crmcore.CRMError, match="was erased"):
        crm.merges.unmerge(merge.merge_id)
    assert crm.privacy.erase(kept.id, "again").already
    assert everything(crm) == stored or crm.engine.dialect.name != "sqlite"  # a second run changes nothing


def test_erasing_a_merged_away_customer_leaves_the_kept_one(crm_factory: Any) -> None:
    crm = crm_factory(plugins=[], config={"custom_fields": CUSTOM})
    kept, twin = add(crm, 0), add(crm, 1)
    crm.merges.merge(kept.id, [twin.id])
    crm.privacy.erase(twin.id, "request")
    stored = everything(crm)
    assert [v for v in planted_texts(1) if v in stored] == []  # the twin's before-state went too
    assert crm.customers.get(kept.id).email == "planted0@example.com"
