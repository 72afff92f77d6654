"""Defects found in review of issue 19 (personal data protection), each pinned by a test."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import inspect, select, table, text

from crmcore.domain.errors import ValidationError
from crmcore.store.sealed import MARK, new_key
from crmcore.store.tables import notify_outbox

SQLITE_ONLY = pytest.mark.parametrize("crm_db_url", ["sqlite"], indirect=True)
LOOKS_SEALED = MARK + "a$b$c@example.com"


def encrypted(crm_factory: Any, monkeypatch: Any, keys: list[str], plugins: list[str] | None = None,
              fields: tuple[str, ...] = ("email", "phone")) -> Any:
    monkeypatch.setenv("PRIVREV_KEYS", "\n".join(keys))
    return crm_factory(plugins=plugins or [], config={"privacy": {"encryption": {
        "fields": list(fields), "key_env": "PRIVREV_KEYS"}}})


def everything(crm: Any) -> str:
    with crm.engine.connect() as conn:
        return "\n".join(f"{name}: {tuple(row)!r}" for name in sorted(inspect(conn).get_table_names())
                         for row in conn.execute(select(text("*")).select_from(table(name))))


@SQLITE_ONLY
@pytest.mark.parametrize("keyed", [False, True])
def test_a_value_that_looks_sealed_is_rejected_or_sealed(crm_factory: Any, monkeypatch: Any, keyed: bool) -> None:
    crm = encrypted(crm_factory, monkeypatch, [new_key()], ["notify"]) if keyed else crm_factory(plugins=[])
    with pytest.raises(ValidationError, match="encrypted value"):
        crm.customers.add(name="A", email=LOOKS_SEALED)
    if keyed:  # a column written without validation still seals it: the row stays readable
        customer = crm.customers.add(name="B")
        with crm.unit() as uow:
            uow.outbox.enqueue("console", customer_id=customer.id, recipient=LOOKS_SEALED, subject="s", body="b")
        with crm.engine.connect() as conn:
            assert conn.execute(select(notify_outbox.c.recipient)).scalar_one() == LOOKS_SEALED
    assert crm.customers.list({}) is not None


@SQLITE_ONLY
def test_a_two_character_name_is_erased_as_a_whole_value(crm_factory: Any, tmp_path: Path) -> None:
    from crmcore.io import ImportOptions, import_file

    crm = crm_factory(plugins=[])
    person = crm.customers.add(name="张伟")
    other = crm.customers.add(name="Other 张伟明")  # holds the name inside a longer one: stays
    crm.customers.update(other.id, attributes={"referred_by": "张伟"})
    source, rejects = tmp_path / "in.csv", tmp_path / "rej.csv"
    source.write_text("name,email\n张伟,bad-email\nKeep Me,also-bad\n", encoding="utf-8")
    import_file(crm, "customers", source, ImportOptions(on_error="skip", reject_file=rejects))
    assert "张伟" in rejects.read_text(encoding="utf-8")
    crm.privacy.erase(person.id, "request 1")
    text_left = rejects.read_text(encoding="utf-8")
    assert "张伟" not in text_left and "Keep Me" in text_left
    # The audit trail: also the other customer's record naming the person as a whole value.
    audit = "\n".join(line for line in everything(crm).splitlines() if line.startswith("audit_log"))
    assert "张伟明" in audit  # a longer name holding it is another person's
    assert "张伟" not in audit.replace("张伟明", "")


@pytest.mark.parametrize("crm_db_url", ["sqlite", "postgresql"], indirect=True)
def test_lookups_find_values_sealed_with_any_listed_key(crm_factory: Any, monkeypatch: Any) -> None:
    old, new = new_key(), new_key()
    crm = encrypted(crm_factory, monkeypatch, [old])
    crm.customers.add(name="X", email="x.rot@example.com", phone="+8613911112222")
    crm.close()
    crm = encrypted(crm_factory, monkeypatch, [new, old])  # a new key first, no rotation yet
    crm.customers.add(name="Y", email="y.rot@example.com")
    assert crm.customers.find(email="x.rot@example.com").name == "X"
    assert crm.customers.find(email="y.rot@example.com").name == "Y"
    assert [c.name for c in crm.customers.list({"email": "x.rot@example.com"})] == ["X"]
    assert crm.customers.find(email="nobody@example.com") is None
    for email in ("x.rot@example.com", "y.rot@example.com"):  # a cached statement takes each new value
        assert crm.customers.find(email=email) is not None


@SQLITE_ONLY
def test_rotation_reseals_a_field_no_longer_configured(crm_factory: Any, monkeypatch: Any) -> None:
    old, new = new_key(), new_key()
    crm = encrypted(crm_factory, monkeypatch, [old])
    crm.customers.add(name="X", email="x.drop@example.com", phone="+8613911112222")
    crm.close()
    crm = encrypted(crm_factory, monkeypatch, [new, old], fields=("email",))  # phone dropped from fields
    counts = crm.privacy.rotate_key()
    assert counts["customers.phone"] == 1 and counts["customers.email"] == 1
    crm.close()
    crm = encrypted(crm_factory, monkeypatch, [new], fields=("email",))  # the old key removed
    customer = crm.customers.find(email="x.drop@example.com")
    assert customer.phone == "+8613911112222"
    from crmcore.application import audit

    with crm.unit(readonly=True) as uow:
        assert audit.verify(uow.conn).ok
        assert audit.records(uow.conn)[0].changes["phone"] == [None, "+8613911112222"]


@SQLITE_ONLY
def test_retention_leaves_no_deleted_text_in_the_sqlite_file(crm_factory: Any) -> None:
    crm = crm_factory(plugins=[], config={"privacy": {"retention": {"interactions_years": 1}}})
    customer = crm.customers.add(name="Ret")
    for i in range(30):
        crm.interactions.add(customer_id=customer.id, kind="note", body=f"Retplantbody{i:03d} " + "x" * 200,
                             occurred_at="2020-01-01T00:00:00Z")
    assert crm.privacy.apply_retention()["interactions"] == 30
    crm.close()
    database = Path(str(crm.engine.url.database))
    data = b"".join(p.read_bytes() for p in database.parent.glob(database.name + "*"))
    assert b"Retplantbody" not in data


def test_a_retention_period_reaching_before_year_one_is_a_config_error() -> None:
    import crmcore

    with pytest.raises(crmcore.ConfigError, match="interactions_years must be a whole number from 1 to 1000"):
        crmcore.Config.from_mapping({"privacy": {"retention": {"interactions_years": 2026}}})


@SQLITE_ONLY
def test_an_early_as_of_clamps_the_cutoff(crm_factory: Any) -> None:
    from datetime import datetime, timezone

    crm = crm_factory(plugins=[], config={"privacy": {"retention": {"interactions_years": 1000,
                                                                    "outbox_body_days": 365000}}})
    found = crm.privacy.apply_retention(as_of=datetime(900, 1, 1, tzinfo=timezone.utc), dry_run=True)
    assert found == {"interactions": 0, "outbox_bodies": 0}


@SQLITE_ONLY
def test_retention_redacts_the_deleted_interactions_audit_and_the_chain_verifies(crm_factory: Any) -> None:
    from crmcore.application import audit

    crm = crm_factory(plugins=[], config={"privacy": {"retention": {"interactions_years": 1}}})
    customer = crm.customers.add(name="Ret")
    crm.interactions.add(customer_id=customer.id, kind="note", body="Oldsecretbody", occurred_at="2020-01-01T00:00:00Z")
    crm.interactions.add(customer_id=customer.id, kind="note", body="Recentbody", occurred_at="2026-06-01T00:00:00Z")
    crm.privacy.apply_retention()
    stored = everything(crm)
    assert "Oldsecretbody" not in stored and "Recentbody" in stored
    with crm.unit(readonly=True) as uow:
        assert audit.verify(uow.conn).ok


def test_each_of_several_keys_is_scrubbed_from_logs(monkeypatch: Any) -> None:
    import crmcore
    from crmcore.config import secrets

    first, second = new_key(), new_key()
    monkeypatch.setenv("PRIVREV_SCRUB", f"{first}\n{second}")
    config = crmcore.Config.from_mapping({"privacy": {"encryption": {"fields": ["email"],
                                                                     "key_env": "PRIVREV_SCRUB"}}})
    assert config.privacy.encryption.keys() == [first, second]
    assert secrets.scrub(f"old key {second} leaked") == "old key *** leaked"
    assert secrets.scrub(f"new key {first}") == "new key ***"


@pytest.mark.parametrize("crm_db_url", ["postgresql"], indirect=True)
def test_lookups_work_under_a_postgresql_collation_that_skips_punctuation(crm_factory: Any, crm_db_url: str,
                                                                         monkeypatch: Any) -> None:
    from sqlalchemy.engine import make_url

    from crmcore.store.engine import make_engine

    url = make_url(crm_db_url)
    icu = f"{url.database}_icu"
    admin = make_engine(url.render_as_string(hide_password=False)).execution_options(isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{icu}"')
            conn.exec_driver_sql(f"CREATE DATABASE \"{icu}\" TEMPLATE template0 LOCALE_PROVIDER icu "
                                 f"ICU_LOCALE 'en-US' LOCALE 'C.UTF-8'")
    finally:
        admin.dispose()
    monkeypatch.setenv("PRIVREV_ICU", new_key())
    crm = crm_factory(plugins=[], config={"database_url": url.set(database=icu).render_as_string(
        hide_password=False), "privacy": {"encryption": {"fields": ["email", "phone"], "key_env": "PRIVREV_ICU"}}})
    crm.customers.add(name="Icu", email="icu@example.com", phone="+8613911112222")
    crm.customers.add(name="Other", email="other@example.com")
    assert crm.customers.find(email="icu@example.com").name == "Icu"
    assert [c.name for c in crm.customers.list({"phone": "+8613911112222"})] == ["Icu"]
    assert crm.customers.find(email="nobody@example.com") is None
    crm.close()
