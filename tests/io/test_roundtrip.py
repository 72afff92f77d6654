"""Export, then import into an empty database: every field comes back exactly.

For CSV, JSON Lines and XLSX, and for every database (the source is an SQLite
file; the target is each database crm_db_url offers, and its export is read
back into another SQLite file, so both directions run on every server).
Chinese text, emoji, Decimal amounts in three currencies, dates, UTC times
with microseconds, tags (one holding a comma), booleans, declared custom
fields of every type and free-form JSON attributes.
"""

from __future__ import annotations

from datetime import date, datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from crmcore.domain.convert import unstructure

ENTITIES = ("customers", "contacts", "interactions", "deals")
CONFIG = """
default_currency = "CNY"

[[custom_fields]]
entity = "customer"
name = "tier"
type = "choice"
choices = ["gold", "silver"]

[[custom_fields]]
entity = "customer"
name = "credit_limit"
type = "decimal"

[[custom_fields]]
entity = "customer"
name = "visits"
type = "int"

[[custom_fields]]
entity = "customer"
name = "vip"
type = "bool"

[[custom_fields]]
entity = "customer"
name = "since"
type = "date"

[[custom_fields]]
entity = "contact"
name = "wechat"
type = "str"

[[custom_fields]]
entity = "interaction"
name = "score"
type = "int"

[[custom_fields]]
entity = "deal"
name = "销售渠道"
type = "str"
"""

UTC = timezone.utc
BEIJING = timezone(timedelta(hours=8))


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = tmp_path / "crm.toml"
    path.write_text(CONFIG, encoding="utf-8")
    return path


def fill(crm: Any, with_gap: bool = False) -> None:
    """Source data touching every field and awkward value."""
    c = crm.customers
    zhang = c.add(name="张伟", email="Zhang.Wei@Example.com", phone="+86 138 0013 8000", country="CN",
                  region="华东", city="上海", industry="零售", source="微信", owner="王芳", stage="customer",
                  birthday=date(1988, 2, 29), consent_email=True, consent_sms=False, consent_marketing=True,
                  tags=("vip", "north, east", "[weird]"), external_id="C-001",
                  attributes={"tier": "gold", "credit_limit": "12345.6789", "visits": 42, "vip": True,
                              "since": "2019-05-01", "prefs": {"lang": "zh-CN", "channels": ["wechat", "sms"]},
                              "ratio": 0.25, "note": "多行\n\"引号\", 逗号"})
    if with_gap:
        gone = c.add(name="Deleted", external_id="C-GONE")
        c.delete(gone.id, purge=True)
    ana = c.add(name="Ana Núñez 🌮", email="ana@example.com", kind="company", country="ES", stage="prospect",
                tags=("🌶️",), consent_email=False, attributes={"tier": "silver", "vip": False, "visits": 0})
    bob = c.add(name="  Bob  (spaces kept)", external_id="C-003", phone="+1 (415) 555-0132", stage="former",
                attributes={"=SUM(A1)": "looks like a formula", "empty": ""})
    anonymous = c.add(name="无名氏", external_id=None) if with_gap else None
    k1 = crm.contacts.add(customer_id=zhang.id, name="李娜", title="采购经理", email="li.na@example.cn",
                          phone="+86 139 1234 5678", is_primary=True, external_id="K-1",
                          attributes={"wechat": "lina_88"})
    crm.contacts.add(customer_id=ana.id, name="Pablo", email="pablo@example.com")
    when = datetime(2026, 3, 14, 9, 26, 53, 589793, tzinfo=BEIJING)
    crm.interactions.add(customer_id=zhang.id, contact_id=k1.id, kind="complaint", direction="inbound",
                         channel="电话", occurred_at=when, subject="发票问题 🧾", body="第一行\n第二行, \"quoted\"",
                         outcome="resolved", satisfaction=4, follow_up_due=when + timedelta(days=3),
                         resolved_at=when + timedelta(hours=5, microseconds=1), owner="王芳", external_id="I-1",
                         attributes={"score": 9})
    crm.interactions.add(customer_id=bob.id, kind="note", occurred_at=datetime(2025, 12, 31, 23, 59, 59, tzinfo=UTC),
                         direction="internal")
    crm.deals.add(customer_id=zhang.id, title="年度续约", amount=Decimal("12345.67"), currency="CNY", stage="won",
                  expected_close=date(2026, 6, 30), owner="王芳", external_id="D-1", attributes={"销售渠道": "线下"})
    crm.deals.add(customer_id=ana.id, title="Big one", amount=Decimal("98765432109876.54"), currency="EUR",
                  stage="negotiation", probability=80, external_id="D-2")
    crm.deals.add(customer_id=bob.id, title="Yen deal", amount=Decimal("1000"), currency="JPY", stage="lost",
                  lost_reason="price", external_id="D-3")
    crm.deals.add(customer_id=bob.id, title="Dinar", amount=Decimal("1.234"), currency="KWD", stage="lead")
    if anonymous is not None:
        crm.deals.add(customer_id=anonymous.id, title="by id only", amount=Decimal("5"), currency="USD",
                      stage="qualified")


def snapshot(crm: Any, keep_ids: bool) -> dict[str, list[dict[str, Any]]]:
    """Every stored field; ids replaced by positions unless they must match exactly."""
    data = {kind: [unstructure(e) for e in getattr(crm, kind).list(order_by="id")] for kind in ENTITIES}
    if keep_ids:
        return data
    position = {kind: {row["id"]: i for i, row in enumerate(rows)} for kind, rows in data.items()}
    for kind, rows in data.items():
        for row in rows:
            row["id"] = position[kind][row["id"]]
            if "customer_id" in row:
                row["customer_id"] = position["customers"][row["customer_id"]]
            if row.get("contact_id") is not None:
                row["contact_id"] = position["contacts"][row["contact_id"]]
    return data


def transfer(source: Any, target: Any, tmp: Path, fmt: str, *extra: str) -> None:
    for kind in ENTITIES:
        file = tmp / f"{kind}-{id(source)}.{fmt}"
        source.run("export", kind, "-o", str(file))
        target.run("import", kind, str(file), *extra)


@pytest.mark.parametrize("fmt", ["csv", "jsonl", "xlsx"])
def test_export_import_round_trips_every_field(fmt, crm_db_url, make_cli, config, tmp_path):
    source = make_cli(f"sqlite:///{tmp_path / 'source.db'}", config)
    fill(source.open())
    expected = snapshot(source.open(), keep_ids=False)
    assert expected["customers"][0]["attributes"]["prefs"] == {"lang": "zh-CN", "channels": ["wechat", "sms"]}

    target = make_cli(crm_db_url, config)
    transfer(source, target, tmp_path, fmt)
    assert snapshot(target.open(), keep_ids=False) == expected

    # ... and the target database's own export reads back the same (export on every server).
    again = make_cli(f"sqlite:///{tmp_path / 'again.db'}", config)
    transfer(target, again, tmp_path, fmt)
    assert snapshot(again.open(), keep_ids=False) == expected


@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
def test_key_id_keeps_ids_and_links(fmt, crm_db_url, make_cli, config, tmp_path):
    """--key id: ids too (gaps from deletions included), and new rows get fresh ids afterwards."""
    source = make_cli(f"sqlite:///{tmp_path / 'source.db'}", config)
    fill(source.open(), with_gap=True)
    expected = snapshot(source.open(), keep_ids=True)
    target = make_cli(crm_db_url, config)
    transfer(source, target, tmp_path, fmt, "--key", "id")
    crm = target.open()
    assert snapshot(crm, keep_ids=True) == expected
    added = crm.customers.add(name="after the import")
    assert added.id > max(c["id"] for c in expected["customers"])


def test_second_import_of_the_same_file_changes_nothing(make_cli, config, tmp_path, crm_db_url):
    source = make_cli(f"sqlite:///{tmp_path / 'source.db'}", config)
    fill(source.open())
    target = make_cli(crm_db_url, config)
    transfer(source, target, tmp_path, "csv")
    before = snapshot(target.open(), keep_ids=True)
    # Matched by id, every row is already there as it is: nothing is written, updated_at stays.
    for kind in ENTITIES:
        result = target.run("import", kind, str(tmp_path / f"{kind}-{id(source)}.csv"), "--key", "id")
        assert "0 inserted, 0 updated" in result.output and "unchanged" in result.output, result.output
    assert snapshot(target.open(), keep_ids=True) == before
    # Matched by external id (the default), a row without one is new: the door check finds the stored
    # customer with its email and skips it, saying so (issue 18) ...
    file = str(tmp_path / f"customers-{id(source)}.csv")
    result = target.run("import", "customers", file)
    assert "0 inserted, 0 updated, 2 unchanged, 1 skipped as duplicates" in result.output
    assert "skipped: looks like customer" in result.output
    # ... and --on-duplicate add makes it a new record each time, as the report says.
    result = target.run("import", "customers", file, "--on-duplicate", "add")
    assert "1 inserted, 0 updated, 2 unchanged" in result.output
    assert "1 row had no external_id" in result.output
