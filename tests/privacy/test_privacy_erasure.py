"""Subject access and erasure on SQLite, PostgreSQL and MariaDB (issue 19, points 1 and 2).

Two people get distinctive values planted everywhere the CRM keeps them (customer fields,
contacts, interactions, deals, outbox messages, consent, segments, the audit trail, a
plugin's own table, an import reject file).  The export of one holds every value of theirs and
none of the other's; after erasing one, a scan of every row of every table (and the SQLite file
bytes) finds none of theirs and all of the other's, the report totals are equal, and the audit
trail still verifies.
"""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Column, Integer, MetaData, String, Table, func, inspect, select, table, text

import crmcore
from crmcore.application import audit
from crmcore.io import ImportOptions, import_file
from crmcore.store.tables import deals, loyalty_ledger

AS_OF = "2026-06-30"

notes_meta = MetaData()
notes = Table("privtest_notes", notes_meta, Column("id", Integer, primary_key=True),
              Column("customer_id", Integer, nullable=False), Column("note", String(200)))


class NotesPlugin:
    """A plugin that owns a table of notes about customers and takes part in export and erasure."""

    __name__ = "privtest"

    @crmcore.hookimpl
    def export_personal_data(self, uow: Any, customer: Any) -> dict[str, list[dict[str, Any]]]:
        rows = uow.conn.execute(select(notes).where(notes.c.customer_id == customer.id)).mappings()
        return {"privtest_notes": [dict(r) for r in rows]}

    @crmcore.hookimpl
    def erase_personal_data(self, uow: Any, customer: Any, values: tuple[str, ...]) -> int:
        return uow.conn.execute(notes.delete().where(notes.c.customer_id == customer.id)).rowcount


PEOPLE = {
    "zhang": {"name": "Zhang Plantedone", "email": "zhang.plantedone@example.com", "phone": "+8613912345671",
              "external_id": "EXT-PLANTEDONE", "city": "Plantcityone", "contact": "Wang Contactone",
              "contact_email": "wang.contactone@example.com", "subject": "Subjectplantone",
              "body": "Bodyplantone 张伟的秘密", "deal": "Dealplantone", "note": "Noteplantone",
              "message": "Messageplantone"},
    "li": {"name": "Li Plantedtwo", "email": "li.plantedtwo@example.com", "phone": "+8613912345672",
           "external_id": "EXT-PLANTEDTWO", "city": "Plantcitytwo", "contact": "Chen Contacttwo",
           "contact_email": "chen.contacttwo@example.com", "subject": "Subjectplanttwo",
           "body": "Bodyplanttwo", "deal": "Dealplanttwo", "note": "Noteplanttwo",
           "message": "Messageplanttwo"},
}


def plant(crm: Any, who: str, amount: str) -> int:
    p = PEOPLE[who]
    customer = crm.customers.add(name=p["name"] + " draft", email=p["email"], phone=p["phone"],
                                 external_id=p["external_id"], city=p["city"], region="East", country="CN")
    customer = crm.customers.update(customer.id, name=p["name"])  # the old name lives on in the audit trail
    crm.contacts.add(customer_id=customer.id, name=p["contact"], email=p["contact_email"])
    crm.interactions.add(customer_id=customer.id, kind="note", subject=p["subject"], body=p["body"],
                         occurred_at="2026-02-01T10:00:00Z")
    crm.deals.add(customer_id=customer.id, title=p["deal"], amount=amount, currency="CNY", stage="won",
                  closed_at="2026-03-01")
    with crm.unit() as uow:
        uow.outbox.enqueue("console", customer_id=customer.id, subject=p["message"], body=f"Dear {p['name']}",
                           key=f"plant:{who}")
        uow.conn.execute(notes.insert().values(customer_id=customer.id, note=p["note"]))
    return int(customer.id)


def scan(crm: Any) -> str:
    """Every row of every table as text."""
    parts = []
    with crm.engine.connect() as conn:
        for name in sorted(inspect(conn).get_table_names()):
            for row in conn.execute(select(text("*")).select_from(table(name))):
                parts.append(f"{name}: {tuple(row)!r}")
    return "\n".join(parts)


def totals(crm: Any) -> dict[str, Any]:
    """Report figures, computed independently of the reports: won revenue, deal count, points."""
    with crm.engine.connect() as conn:
        revenue = conn.execute(select(func.sum(deals.c.amount))).scalar_one()
        count = conn.execute(select(func.count()).select_from(deals)).scalar_one()
        points = conn.execute(select(func.coalesce(func.sum(loyalty_ledger.c.points), 0))).scalar_one()
    report = crm.reports.run("customer-value", as_of=AS_OF)
    return {"revenue": Decimal(revenue), "deals": count, "points": int(points),
            "report_rows": sorted(json.dumps([str(v) for v in row][1:], default=str) for row in report.rows)}


@pytest.fixture
def planted(crm_factory: Any, tmp_path: Path) -> tuple[Any, dict[str, int], Path]:
    crm = crm_factory(plugins=["notify", "loyalty", "reports", "segments"], extra_plugins=[NotesPlugin()])
    notes_meta.create_all(crm.engine)
    ids = {"zhang": plant(crm, "zhang", "1200.50"), "li": plant(crm, "li", "800.25")}
    crm.segments.run("rfm", as_of=AS_OF)
    # An import whose bad rows (one of each person) land in a reject file the CRM wrote.
    source, rejects = tmp_path / "in.csv", tmp_path / "rejects.csv"
    source.write_text("name,email\n" + "".join(f"{p['name']},not-an-email {p['email']}\n" for p in PEOPLE.values()),
                      encoding="utf-8")
    import_file(crm, "customers", source, ImportOptions(on_error="skip", reject_file=rejects))
    assert all(p["email"] in rejects.read_text(encoding="utf-8") for p in PEOPLE.values())
    return crm, ids, rejects


def values_of(who: str) -> list[str]:
    return [v for k, v in PEOPLE[who].items()]


def test_export_holds_every_value_of_the_person_and_none_of_another(planted: Any) -> None:
    crm, ids, _ = planted
    data = crm.privacy.export(ids["zhang"])
    text_ = json.dumps(data, ensure_ascii=False)
    assert [v for v in values_of("zhang") if v not in text_] == []
    assert [v for v in values_of("li") if v in text_] == []
    assert data["plugins"]["privtest_notes"][0]["note"] == PEOPLE["zhang"]["note"]
    assert {"contacts", "interactions", "deals", "messages", "consents", "consent_history", "segments",
            "audit", "loyalty_ledger"} <= set(data["sections"])
    assert data["sections"]["segments"], "the rfm run put the customer in a segment"
    html = crm.privacy.render_html(data)
    assert PEOPLE["zhang"]["body"].split()[1] in html and "<table>" in html


def test_erasure_leaves_no_value_of_the_person_anywhere(planted: Any) -> None:
    crm, ids, rejects = planted
    before = totals(crm)
    result = crm.privacy.erase(ids["zhang"], "PIPL request 2026-114")
    assert not result.already and result.audit > 0 and result.files == 1
    everything = scan(crm)
    assert [v for v in values_of("zhang") if v in everything] == []
    assert [v for v in values_of("li") if v not in everything] == []  # nobody else's data was touched
    assert totals(crm) == before
    with crm.unit(readonly=True) as uow:
        verified = audit.verify(uow.conn)
        erase_records = [r for r in audit.records(uow.conn, customer_id=ids["zhang"]) if r.action == "customer.erase"]
    assert verified.ok, verified.problems
    assert erase_records[0].changes["reason"] == [None, "PIPL request 2026-114"]
    left = rejects.read_text(encoding="utf-8")
    assert PEOPLE["zhang"]["email"] not in left and PEOPLE["li"]["email"] in left
    if crm.engine.dialect.name == "sqlite":
        database = Path(str(crm.engine.url.database))
        files = b"".join(p.read_bytes() for p in database.parent.glob(database.name + "*"))
        assert [v for v in values_of("zhang") if v.encode() in files] == []
        assert PEOPLE["li"]["email"].encode() in files


    # Idempotent: a second erasure checks again and changes nothing.
    again = crm.privacy.erase(ids["zhang"], "request 2")
    assert again.already and again.audit == 0 and again.files == 0
    assert scan(crm) == everything


@pytest.mark.parametrize("crm_db_url", ["sqlite"], indirect=True)
def test_the_loyalty_plugin_exports_its_rows(crm_factory: Any) -> None:
    crm = crm_factory(plugins=["loyalty"])
    referrer = crm.customers.add(name="Referrer")
    referee = crm.customers.add(name="Referee")
    crm.loyalty.refer(referee.id, referrer.id)
    data = crm.privacy.export(referrer.id)
    assert [r["referee_id"] for r in data["plugins"]["loyalty_referrals"]] == [referee.id]
    assert "loyalty_reward_codes" in data["plugins"]
    assert crm.privacy.erase(referee.id, "request").rows.get("plugins") is None  # ids only: nothing to erase
