"""The ``access`` plugin's roles and ``authorize`` (issue 15, point 3), on every database.

Each built-in role against a table of actions; a refusal writes nothing; the default role,
the system actor's role; unknown and deactivated logins; custom roles from crm.toml.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest
import sqlalchemy as sa

from crmcore import CRM, Config, ConfigError, Customer, Deal, NotAuthorized
from crmcore.store import tables
from crmcore_access import plugin as access
from crmcore_access.roles import built_in_roles

ROLES = ("admin", "manager", "sales-rep", "service-agent", "read-only")
ALL = set(ROLES)

# action -> the built-in roles that may perform it (every other built-in role is refused).
ALLOWED: dict[str, set[str]] = {
    "customer.read": ALL,
    "customer.list": ALL,
    "customer.create": {"admin", "manager", "sales-rep"},
    "customer.update": {"admin", "manager", "sales-rep", "service-agent"},
    "customer.delete": {"admin", "manager", "sales-rep"},
    "customer.restore": {"admin", "manager", "sales-rep"},
    "customer.purge": {"admin"},
    "customer.merge": {"admin", "manager"},
    "customer.import": {"admin", "manager", "sales-rep"},
    "customer.export": {"admin", "manager", "sales-rep", "read-only"},
    "contact.create": {"admin", "manager", "sales-rep", "service-agent"},
    "contact.delete": {"admin", "manager", "sales-rep"},
    "interaction.update": {"admin", "manager", "sales-rep", "service-agent"},
    "interaction.import": {"admin", "manager", "sales-rep"},
    "deal.read": ALL,
    "deal.create": {"admin", "manager", "sales-rep"},
    "deal.update": {"admin", "manager", "sales-rep"},
    "deal.move": {"admin", "manager", "sales-rep"},
    "deal.purge": {"admin"},
    "consent.unsubscribe": {"admin", "manager", "sales-rep", "service-agent"},
    "segment.strategies": ALL,
    "segment.run": {"admin", "manager"},
    "segment.runs": {"admin", "manager", "sales-rep", "read-only"},
    "segment.members": {"admin", "manager", "sales-rep", "read-only"},
    "segment.export": {"admin", "manager", "read-only"},
    "segment.explain": {"admin", "manager", "sales-rep", "read-only"},
    "loyalty.read": ALL,
    "loyalty.redeem": {"admin", "manager", "sales-rep", "service-agent"},
    "loyalty.refer": {"admin", "manager", "sales-rep"},
    "loyalty.adjust": {"admin", "manager"},
    "loyalty.recompute": {"admin", "manager"},
    "loyalty.tiers": ALL,
    "notify.enqueue": {"admin", "manager", "sales-rep", "service-agent"},
    "notify.preview": ALL,
    "notify.outbox": ALL,
    "notify.campaign": {"admin", "manager"},
    "notify.dispatch": {"admin", "manager"},
    "notify.unsubscribe-url": {"admin", "manager"},
    "report.list": ALL,
    "report.run": ALL,
    "report.dashboard": ALL,
    "user.read": ALL,
    "user.list": ALL,
    "user.add": {"admin"},
    "user.deactivate": {"admin"},
    "user.set-role": {"admin"},
    "user.assign-region": {"admin", "manager"},
    "team.list": ALL,
    "team.add": {"admin", "manager"},
    "team.add-member": {"admin", "manager"},
    "role.list": ALL,
    "role.read": ALL,
    "audit.log": {"admin", "manager", "read-only"},
    "audit.verify": {"admin", "manager", "read-only"},
    "config.show": {"admin", "manager", "read-only"},
    "db.upgrade": {"admin"},
    "db.current": {"admin", "manager", "read-only"},
    "plugins.list": {"admin", "manager", "read-only"},
}


@pytest.mark.parametrize("action", sorted(ALLOWED))
def test_each_built_in_role_against_the_table_of_actions(action: str) -> None:
    roles = {role.name: role for role in built_in_roles()}
    assert set(roles) == ALL
    assert {name for name, role in roles.items() if role.allows(action)} == ALLOWED[action]


def test_built_in_scopes() -> None:
    assert {r.name: r.scope for r in built_in_roles()} == {
        "admin": "all", "manager": "team", "sales-rep": "own", "service-agent": "territory", "read-only": "all"}


def open_access(crm_factory: Any, **settings: Any) -> CRM:
    config = {"plugins": {"access": settings}} if settings else None
    crm: CRM = crm_factory(plugins=["access"], config=config)
    return crm


def counts(crm: CRM) -> dict[str, int]:
    with crm.engine.connect() as conn:
        return {t.name: conn.execute(sa.select(sa.func.count()).select_from(t)).scalar_one()
                for t in tables.metadata.sorted_tables}


def test_through_authorize_users_act_by_their_role(crm_factory) -> None:
    crm = open_access(crm_factory)
    assert crm.roles.names() == sorted(ROLES)
    for name in ROLES:
        crm.users.add(name.replace("-", "_"), role=name)  # the unconfigured CRM's system actor is admin
    for action in ("customer.create", "deal.move", "segment.run", "user.set-role", "report.run"):
        for name in ROLES:
            with crm.acting(name.replace("-", "_")):
                if name in ALLOWED[action]:
                    crm.authorize(action, None)
                else:
                    with pytest.raises(NotAuthorized, match=f"user '{name.replace('-', '_')}' may not {action}"):
                        crm.authorize(action, None)


def test_a_refusal_writes_nothing(crm_factory) -> None:
    crm = open_access(crm_factory)
    ann = crm.customers.add(Customer(name="Ann", region="north"))
    deal = crm.deals.add(Deal(customer_id=ann.id, title="ERP", amount=Decimal("100"), currency="CNY", stage="lead"))
    crm.users.add("ro", role="read-only")
    crm.users.add("agent", role="service-agent")
    crm.users.add("boss", role="admin")
    crm.users.assign_region("agent", "north")  # the agent sees Ann: refused by permission, not visibility
    before = counts(crm)
    assert before["audit_log"] > 0
    attempts = [
        ("ro", lambda: crm.customers.add(Customer(name="Bea")), "customer.create"),
        ("ro", lambda: crm.customers.update(ann.id, city="上海"), "customer.update"),
        ("ro", lambda: crm.deals.move(deal.id, "won"), "deal.move"),
        ("agent", lambda: crm.customers.delete(ann.id), "customer.delete"),
        ("agent", lambda: crm.deals.add(Deal(customer_id=ann.id, title="x", amount=Decimal("1"), currency="CNY",
                                           stage="lead")),
         "deal.create"),
        ("agent", lambda: crm.users.add("mia"), "user.add"),
        ("agent", lambda: crm.users.set_role("agent", "admin"), "user.set-role"),
        ("agent", lambda: crm.teams.add("east"), "team.add"),
    ]
    for login, attempt, action in attempts:
        with crm.acting(login), pytest.raises(NotAuthorized, match=f"user '{login}' may not {action}"):
            attempt()
    assert counts(crm) == before
    with crm.acting("boss"):  # the same write by an admin does write (the count can change)
        crm.customers.update(ann.id, city="上海")
    assert counts(crm)["audit_log"] == before["audit_log"] + 1


def test_default_role_for_users_without_one(crm_factory) -> None:
    crm = open_access(crm_factory, default_role="sales-rep")
    crm.users.add("lee")
    assert crm.users.get("lee").role is None
    with crm.acting("lee"):
        crm.customers.add(Customer(name="Ann", owner="lee"))
        with pytest.raises(NotAuthorized, match="may not segment.run"):
            crm.authorize("segment.run", None)


def test_the_default_default_role_is_read_only(crm_factory) -> None:
    crm = open_access(crm_factory)
    crm.users.add("lee")
    with crm.acting("lee"):
        crm.customers.list()
        with pytest.raises(NotAuthorized, match="user 'lee' may not customer.create"):
            crm.customers.add(Customer(name="Ann"))


def test_system_role_governs_library_code(crm_factory) -> None:
    crm = open_access(crm_factory, system_role="read-only")
    crm.customers.list()
    with pytest.raises(NotAuthorized, match="user 'system' may not customer.create"):
        crm.customers.add(Customer(name="Ann"))


def test_unknown_and_deactivated_logins_may_do_nothing(crm_factory) -> None:
    crm = open_access(crm_factory)
    crm.users.add("boss", role="admin")
    crm.users.add("gone", role="admin")
    with crm.acting("boss"):
        crm.users.deactivate("gone")
    for login in ("ghost", "gone"):
        assert access.authorize(login, "customer.read", None, crm) is False
        with crm.acting_as(login), pytest.raises(NotAuthorized, match=f"user '{login}' may not customer.list"):
            crm.customers.list()
    assert access.authorize("boss", "customer.read", None, crm) is None  # allowed: left to the others


def test_a_role_no_longer_registered_may_do_nothing(crm_factory) -> None:
    crm = open_access(crm_factory)
    crm.users.add("lee", role="admin")
    with crm.engine.begin() as conn:  # a custom role since removed from crm.toml
        conn.execute(sa.update(tables.users).where(tables.users.c.login == "lee").values(role="old-custom"))
    assert access.authorize("lee", "customer.read", None, crm) is False


# -- custom roles from crm.toml ------------------------------------------------------------------

def open_sqlite(url: str, access_settings: dict[str, Any]) -> CRM:
    return CRM.open(config=Config.from_mapping({"database_url": url,
                                                "plugins": {"enabled": ["access"], "access": access_settings}}))


def test_custom_roles_extend_add_and_remove(crm_sqlite_url) -> None:
    crm = open_sqlite(crm_sqlite_url, {"roles": {
        "key-account": {"extends": "sales-rep", "permissions": ["segment.run", "!customer.delete"],
                        "description": "a rep for key accounts"},
        "senior-key-account": {"extends": "key-account", "permissions": ["loyalty.adjust"], "scope": "team"},
        "auditor": {"permissions": ["audit.*", "*.read"]},
    }})
    try:
        key, senior, auditor = (crm.roles.get(n) for n in ("key-account", "senior-key-account", "auditor"))
        assert crm.roles.owner("key-account") == "access"
        assert (key.scope, key.description) == ("own", "a rep for key accounts")  # the base's scope
        assert key.allows("segment.run") and key.allows("customer.create") and key.allows("deal.move")
        assert not key.allows("customer.delete") and not key.allows("loyalty.adjust")
        assert senior.scope == "team" and senior.allows("loyalty.adjust") and senior.allows("segment.run")
        assert not senior.allows("customer.delete")
        assert auditor.scope == "all" and auditor.allows("audit.verify") and auditor.allows("deal.read")
        assert not auditor.allows("deal.list")
        crm.users.add("kim", role="key-account")
        with crm.acting("kim"):
            crm.authorize("segment.run", None)
            with pytest.raises(NotAuthorized, match="user 'kim' may not customer.delete"):
                crm.authorize("customer.delete", None)
    finally:
        crm.close()


@pytest.mark.parametrize("settings, message", [
    ({"roles": {"x": {"scope": "region"}}},
     r"\[plugins.access.roles.x\] scope: unknown scope 'region' \(known: all, team, territory, own\)"),
    ({"roles": {"x": {"extends": "sales"}}},
     r"\[plugins.access.roles.x\] extends: unknown role 'sales' \(known: admin, manager"),
    ({"roles": {"manager": {"permissions": ["customer.read"]}}},
     r"\[plugins.access.roles.manager\]: 'manager' is a built-in role"),
    ({"roles": {"x": {"permissions": "customer.read"}}},
     r"\[plugins.access.roles.x\] permissions: must be a list of action patterns"),
    ({"roles": {"x": {"permission": ["customer.read"]}}},
     r"\[plugins.access.roles.x\] permission: unknown key \(known: permissions, scope, description, extends\)"),
    ({"roles": {"x": {"extends": "y"}, "y": {"extends": "x"}}},
     r"\[plugins.access.roles.[xy]\] extends: .* \(a cycle\)"),
    ({"default_rol": "admin"}, r"\[plugins.access\].*default_rol"),
    ({"system_role": "root"}, r"\[plugins.access\] system_role: unknown role 'root' \(known: admin"),
    ({"default_role": "rep", "roles": {"rep2": {}}},
     r"\[plugins.access\] default_role: unknown role 'rep' \(known: admin, .*, rep2\)"),
])
def test_bad_custom_roles_are_config_errors_naming_the_key(crm_sqlite_url, settings, message) -> None:
    with pytest.raises(ConfigError, match=message):
        open_sqlite(crm_sqlite_url, settings).close()
