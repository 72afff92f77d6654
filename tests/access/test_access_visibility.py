"""The ``access`` plugin's visibility conditions per role scope (issue 15, point 4), on every database.

Only the conditions: ``select(customers.c.id).where(condition)`` returns the ids each scope
covers.  (Applying them to every read is the core's part.)
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import select

from crmcore import CRM, Customer, Deal
from crmcore.store import tables
from crmcore_access import plugin as access

customers, deals = tables.customers, tables.deals


@pytest.fixture
def world(crm_factory) -> tuple[CRM, dict[str, int]]:
    """Users of each scope, teams, territories, four customers and four deals.

    - mgr manages team east (member rep1); agent covers north, is a member of team svc (south)
      and manages team westies (west);
    - c1 rep1/north, c2 rep2/south, c3 mgr/west, c4 nobody/east;
    - d1 on c1 by rep2, d2 on c2 by rep1, d3 on c3 by nobody, d4 on c4 by rep2.
    """
    crm: CRM = crm_factory(plugins=["access"])
    for login, role in (("rep1", "sales-rep"), ("rep2", "sales-rep"), ("mgr", "manager"),
                        ("agent", "service-agent"), ("ro", "read-only"), ("boss", "admin"), ("gone", "admin")):
        crm.users.add(login, role=role)
    with crm.acting("boss"):
        crm.users.deactivate("gone")
        crm.teams.add("east", manager="mgr")
        crm.teams.add_member("east", "rep1")
        crm.teams.assign_region("east", "east")  # mgr's scope is team, not territory: no effect on mgr
        crm.teams.add("svc")
        crm.teams.add_member("svc", "agent")
        crm.teams.assign_region("svc", "south")
        crm.teams.add("westies", manager="agent")
        crm.teams.assign_region("westies", "west")
        crm.users.assign_region("agent", "north")
        ids: dict[str, int] = {}
        for name, owner, region in (("c1", "rep1", "north"), ("c2", "rep2", "south"), ("c3", "mgr", "west"),
                                    ("c4", None, "east")):
            added = crm.customers.add(Customer(name=name, owner=owner, region=region))
            assert added.id is not None
            ids[name] = added.id
        for name, customer, owner in (("d1", "c1", "rep2"), ("d2", "c2", "rep1"), ("d3", "c3", None),
                                      ("d4", "c4", "rep2")):
            deal = crm.deals.add(Deal(customer_id=ids[customer], title=name, amount=Decimal("10"), currency="CNY",
                                      stage="lead", owner=owner))
            assert deal.id is not None
            ids[name] = deal.id
    return crm, ids


def visible(crm: CRM, ids: dict[str, int], actor: str, entity: str) -> set[str] | None:
    """The names of the records ``actor`` sees, or None when the condition is None (no restriction).

    Customers: the plugin's condition, alone and inside a join with deals (uncorrelated).  Deals:
    the plugin leaves them to the core (they follow their customer), so they are read through a
    unit of work acting as ``actor``, where the core applies the customer condition.
    """
    names = {v: k for k, v in ids.items() if k[0] == entity[0]}
    if entity == "deal":
        assert access.visibility(actor, "deal", crm) is None or actor in ("gone", "ghost")
        with crm.acting_as(actor), crm.unit(readonly=True) as uow:
            return {names[d.id] for d in uow.deals.list() if d.id is not None}
    condition = access.visibility(actor, entity, crm)
    if condition is None:
        return None
    with crm.engine.connect() as conn:
        found = set(conn.execute(select(customers.c.id).where(condition)).scalars())
        joined = select(customers.c.id).join(deals, deals.c.customer_id == customers.c.id).where(condition)
        assert set(conn.execute(joined).scalars()) <= found
    return {names[i] for i in found}


EVERY_DEAL = {"d1", "d2", "d3", "d4"}
EXPECTED: dict[str, dict[str, set[str] | None]] = {
    "rep1": {"customer": {"c1"}, "deal": {"d1"}},                            # own; deals follow customers
    "rep2": {"customer": {"c2"}, "deal": {"d2"}},
    "mgr": {"customer": {"c1", "c3"}, "deal": {"d1", "d3"}},                 # team: self + rep1
    "agent": {"customer": {"c1", "c2", "c3"}, "deal": {"d1", "d2", "d3"}},   # territory: north, south, west
    "ro": {"customer": None, "deal": EVERY_DEAL},                            # scope all
    "boss": {"customer": None, "deal": EVERY_DEAL},
    "system": {"customer": None, "deal": EVERY_DEAL},
    "gone": {"customer": set(), "deal": set()},                              # deactivated: nothing
    "ghost": {"customer": set(), "deal": set()},                             # no such user: nothing
}


def test_each_scope_as_a_sql_condition(world) -> None:
    crm, ids = world
    seen = {actor: {entity: visible(crm, ids, actor, entity) for entity in ("customer", "deal")}
            for actor in EXPECTED}
    assert seen == EXPECTED


def test_the_hook_answers_through_the_plugin_manager(world) -> None:
    crm, ids = world
    answers = [a for a in crm.plugins.call("visibility", actor="rep1", entity="customer", crm=crm) if a is not None]
    assert len(answers) == 1
    with crm.engine.connect() as conn:
        assert set(conn.execute(select(customers.c.id).where(answers[0])).scalars()) == {ids["c1"]}


def test_conditions_follow_changes_without_caching(world) -> None:
    """The lists are subqueries: a new team member or region counts at once."""
    crm, ids = world
    with crm.acting("boss"):
        crm.teams.add_member("east", "rep2")
        crm.users.unassign_region("agent", "north")
    assert visible(crm, ids, "mgr", "customer") == {"c1", "c2", "c3"}
    assert visible(crm, ids, "agent", "customer") == {"c2", "c3"}


def test_a_role_change_changes_the_scope(world) -> None:
    crm, ids = world
    with crm.acting("boss"):
        crm.users.set_role("rep1", "service-agent")  # rep1 covers no region; team east covers east
    assert visible(crm, ids, "rep1", "customer") == {"c4"}
    with crm.acting("boss"):
        crm.users.assign_region("rep1", "north")
    assert visible(crm, ids, "rep1", "customer") == {"c1", "c4"}
    assert visible(crm, ids, "rep1", "deal") == {"d1", "d4"}  # by customer: d2 (owner rep1) is not seen


def test_other_entities_are_not_restricted_by_the_plugin(world: Any) -> None:
    crm, _ = world
    assert access.visibility("rep1", "contact", crm) is None  # contacts follow their customer (the core)
