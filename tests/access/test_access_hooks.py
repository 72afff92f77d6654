"""Other plugins beside ``access``: roles from ``register_roles`` and conditions from ``visibility``."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import select

from crmcore import Customer, NotAuthorized, PluginError, Role, hookimpl
from crmcore.store import tables


class Auditors:
    """A plugin adding a role of its own and hiding one region from everybody but system."""

    @hookimpl
    def register_roles(self, register: Any, crm: Any) -> None:
        register(Role("auditor", ("audit.*", "customer.read"), "all", "reads the audit trail"))

    @hookimpl
    def visibility(self, actor: str, entity: str, crm: Any) -> Any:
        if entity == "customer" and actor != "system":
            return tables.customers.c.region != "secret"
        return None


class Clash:
    @hookimpl
    def register_roles(self, register: Any, crm: Any) -> None:
        register(Role("admin", ("*",)))


def test_a_role_from_another_plugin_is_a_role_access_honours(crm_factory) -> None:
    crm = crm_factory(plugins=["access"], extra_plugins=[Auditors()])
    assert "auditor" in crm.roles and crm.roles.owner("auditor") != "access"
    crm.users.add("aud", role="auditor")
    with crm.acting("aud"):
        crm.authorize("audit.log", None)
        with pytest.raises(NotAuthorized, match="user 'aud' may not customer.create"):
            crm.customers.add(Customer(name="Ann"))


def test_every_plugins_condition_applies(crm_factory) -> None:
    crm = crm_factory(plugins=["access"], extra_plugins=[Auditors()])
    crm.users.add("rep", role="sales-rep")
    mine = crm.customers.add(Customer(name="A", owner="rep", region="north"))
    hidden = crm.customers.add(Customer(name="B", owner="rep", region="secret"))
    crm.customers.add(Customer(name="C", region="north"))
    conditions = [c for c in crm.plugins.call("visibility", actor="rep", entity="customer", crm=crm) if c is not None]
    assert len(conditions) == 2
    with crm.engine.connect() as conn:
        seen = set(conn.execute(select(tables.customers.c.id).where(*conditions)).scalars())
    assert seen == {mine.id} and hidden.id not in seen


def test_a_role_registered_twice_names_both_plugins(crm_factory) -> None:
    with pytest.raises(PluginError, match="role 'admin' is registered by both plugin"):
        crm_factory(plugins=["access"], extra_plugins=[Clash()])
