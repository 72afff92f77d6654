"""Users, teams and territories; owners are users (issue 15, point 1), on every database."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest
from sqlalchemy import func, insert, select
from sqlalchemy.exc import IntegrityError

from crmcore import NotFound, ValidationError, migrations
from crmcore.io.importer import ImportOptions, import_file
from crmcore.store import tables
from crmcore.store.engine import make_engine
from crmcore.testing import FIXED_NOW

PREVIOUS_HEAD = "0007_history_restrict"


@pytest.mark.empty_database  # it migrates to an older revision itself
def test_migration_turns_text_owners_into_users_and_keeps_every_row(crm_db_url) -> None:
    """A database created at the previous head, with text owners, upgrades with every row kept."""
    from alembic import command

    engine = make_engine(crm_db_url)
    command.upgrade(migrations.alembic_config(engine, migrations.HERE / "versions", "alembic_version"),
                    PREVIOUS_HEAD)
    stamp = {"created_at": FIXED_NOW, "updated_at": FIXED_NOW}
    person = {"kind": "person", "stage": "lead", "consent_email": True, "consent_sms": True,
              "consent_marketing": False, "tags": [], "attributes": {}, **stamp}
    with engine.begin() as conn:
        conn.execute(insert(tables.customers), [
            {"id": 1, "name": "A", "owner": "alice", **person},
            {"id": 2, "name": "B", "owner": "王芳", **person},
            {"id": 3, "name": "C", "owner": None, **person},
            {"id": 4, "name": "D", "owner": "Li Na", **person}])  # free text with a space stays as it was
        conn.execute(insert(tables.deals), [
            {"id": n, "customer_id": 1, "title": "d", "amount": Decimal("10"), "currency": "CNY",
             "pipeline": "default", "stage": "lead", "probability": 10, "attributes": {}, "owner": owner, **stamp}
            for n, owner in ((1, "alice"), (2, "bob"), (3, None))])
    # The columns of that revision (later revisions add archived_at, email_key, phone_key and import_digest).
    customer_columns = [c for c in tables.customers.c
                        if c.name not in ("archived_at", "email_key", "phone_key", "import_digest")]
    deal_columns = [c for c in tables.deals.c if c.name != "archived_at"]
    with engine.connect() as conn:
        customers_before = conn.execute(select(*customer_columns).order_by(tables.customers.c.id)).all()
        deals_before = conn.execute(select(*deal_columns).order_by(tables.deals.c.id)).all()
    migrations.upgrade(engine, {})
    try:
        with engine.connect() as conn:
            assert conn.execute(select(*customer_columns).order_by(tables.customers.c.id)).all() == customers_before
            assert conn.execute(select(*deal_columns).order_by(tables.deals.c.id)).all() == deals_before
            migrated = conn.execute(select(tables.users.c.login, tables.users.c.display_name, tables.users.c.active,
                                           tables.users.c.source)).all()
            assert sorted(migrated) == sorted((o, o, True, "migrated") for o in ("alice", "bob", "王芳", "Li Na"))
            assert conn.execute(select(tables.audit_head.c.seq)).scalar_one() == 0
        with pytest.raises(IntegrityError), engine.begin() as conn:  # owner now refers to a user
            conn.execute(insert(tables.customers).values(id=9, name="X", owner="ghost", **person))
    finally:
        engine.dispose()


def test_add_list_show_deactivate(crm_factory) -> None:
    crm = crm_factory()
    li = crm.users.add("li.wei", "李伟", email="Li.Wei@Example.com", locale="zh_CN", time_zone="Asia/Shanghai")
    assert (li.login, li.display_name, li.email, li.locale, li.time_zone, li.active) == (
        "li.wei", "李伟", "Li.Wei@example.com", "zh-CN", "Asia/Shanghai", True)
    crm.users.add("bob")
    assert [u.login for u in crm.users.list()] == ["bob", "li.wei"]
    assert crm.users.deactivate("bob").active is False
    assert [u.login for u in crm.users.list(include_inactive=False)] == ["li.wei"]
    assert crm.users.get("bob").active is False
    with pytest.raises(NotFound, match="user 'nobody'"):
        crm.users.get("nobody")
    with pytest.raises(ValidationError, match="already exists"):
        crm.users.add("bob")
    with pytest.raises(ValidationError, match="another user's email"):
        crm.users.add("li2", email="Li.Wei@example.com")


@pytest.mark.parametrize("fields, field", [
    ({"login": "li wei"}, "login"), ({"login": "", "display_name": "x"}, "login"), ({"login": "system"}, "login"),
    ({"login": "x" * 101}, "login"), ({"login": "a", "email": "not-an-email"}, "email"),
    ({"login": "a", "locale": "xx_YY_ZZ"}, "locale"), ({"login": "a", "time_zone": "Mars/Base"}, "time_zone"),
    ({"login": "a", "display_name": "Li\nWei"}, "display_name"),
])
def test_bad_user_fields_name_the_field(sqlite_crm, fields, field) -> None:
    with pytest.raises(ValidationError) as err:
        sqlite_crm().users.add(**fields)
    assert [f for f, _ in err.value.issues] == [field]


def test_unconfigured_crm_registers_owners_and_adding_a_user_adopts_them(crm_factory) -> None:
    """Single-user CRMs keep working: an owner label becomes a user; `user add` adopts it."""
    crm = crm_factory()
    assert not crm.users.configured()
    customer = crm.customers.add(name="A", owner="alice")
    assert crm.users.get("alice").source == "owner"
    assert not crm.users.configured()
    adopted = crm.users.add("alice", "Alice Smith", email="alice@example.com")
    assert (adopted.source, adopted.display_name, adopted.id) == ("added", "Alice Smith", crm.users.get("alice").id)
    assert crm.users.configured()
    assert crm.customers.get(customer.id).owner == "alice"


def test_owner_by_login_or_email_unknown_refused_once_configured(crm_factory) -> None:
    crm = crm_factory()
    crm.users.add("li.wei", email="li@example.com")
    customer = crm.customers.add(name="A", owner="li@example.com")
    assert customer.owner == "li.wei"
    with pytest.raises(ValidationError, match="owner: unknown owner 'ghost'") as err:
        crm.customers.add(name="B", owner="ghost")
    assert [f for f, _ in err.value.issues] == ["owner"]
    deal = crm.deals.add(customer_id=customer.id, title="t", amount="5", stage="lead", owner="li.wei")
    with pytest.raises(ValidationError, match="owner"):
        crm.deals.update(deal.id, owner="ghost")
    assert crm.deals.update(deal.id, owner="li@example.com").owner == "li.wei"
    with pytest.raises(ValidationError, match="row 1: owner"):
        crm.customers.add_many([{"name": "C", "owner": "li.wei"}, {"name": "D", "owner": "nobody"}])
    assert crm.customers.add_many([{"name": "C", "owner": "li@example.com"}]) == 1
    assert crm.customers.find(name="C").owner == "li.wei"
    assert crm.customers.count() == 2
    # interactions keep a free-text owner
    assert crm.interactions.add(customer_id=customer.id, kind="note", occurred_at=FIXED_NOW, owner="x").owner == "x"


def test_teams_members_and_territories(crm_factory) -> None:
    crm = crm_factory()
    for login in ("wang", "li", "zhao"):
        crm.users.add(login)
    east = crm.teams.add("华东", manager="wang")
    assert (east.name, east.manager, east.members, east.regions) == ("华东", "wang", (), ())
    crm.teams.add_member("华东", "li")
    crm.teams.add_member("华东", "zhao")
    crm.teams.add_member("华东", "zhao")  # already a member: nothing changes
    crm.teams.assign_region("华东", "上海")
    crm.teams.assign_region("华东", "江苏")
    crm.users.assign_region("li", "上海")
    team = crm.teams.remove_member("华东", "zhao")
    assert (team.members, team.regions) == (("li",), ("上海", "江苏"))
    assert crm.teams.unassign_region("华东", "江苏").regions == ("上海",)
    li = crm.users.get("li")
    assert (li.teams, li.regions) == (("华东",), ("上海",))
    assert [t.name for t in crm.teams.list()] == ["华东"]
    with pytest.raises(ValidationError, match="already exists"):
        crm.teams.add("华东")
    with pytest.raises(NotFound, match="user 'ghost'"):
        crm.teams.add("北", manager="ghost")
    with pytest.raises(NotFound, match="team 'nope'"):
        crm.teams.add_member("nope", "li")
    with pytest.raises(NotFound):
        crm.teams.remove_member("华东", "zhao")
    with pytest.raises(NotFound):
        crm.users.unassign_region("li", "北京")


def test_import_maps_owner_by_login_or_email_and_names_an_unknown_one(crm_factory, tmp_path: Path) -> None:
    crm = crm_factory()
    crm.users.add("li.wei", email="li@example.com")
    file = tmp_path / "customers.csv"
    file.write_text("external_id,name,owner\nC1,A,li.wei\nC2,B,li@example.com\nC3,C,ghost\nC4,D,\n",
                    encoding="utf-8")
    report = import_file(crm, "customers", file, ImportOptions(on_error="skip"))
    assert report.error_messages() == [(
        'customers.csv:4: column "owner": unknown owner \'ghost\': no user has this login or email '
        "(add it with `crm user add`)")]
    owners = {c.external_id: c.owner for c in crm.customers.list()}
    assert owners == {"C1": "li.wei", "C2": "li.wei", "C4": None}
    # updates map and check the owner too
    file.write_text("external_id,name,owner\nC4,D,li@example.com\nC1,A,nobody\n", encoding="utf-8")
    report = import_file(crm, "customers", file, ImportOptions(on_error="skip"))
    assert [m.split(": ", 1)[0] for m in report.error_messages()] == ["customers.csv:3"]
    assert crm.customers.find(external_id="C4").owner == "li.wei"
    assert crm.customers.find(external_id="C1").owner == "li.wei"
    with crm.engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(tables.users)).scalar_one() == 1
