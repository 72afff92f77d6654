"""Who acts with which role, and what a role's scope lets them see (as SQL conditions)."""

from __future__ import annotations

import functools
import weakref
from typing import TYPE_CHECKING

from sqlalchemy import ColumnElement, Connection, bindparam, false, inspect, or_, select, union
from sqlalchemy.sql import Select

import crmcore
from crmcore.store import tables

from .settings import AccessSettings

if TYPE_CHECKING:
    from crmcore import CRM

#: The built-in actor of library code and of an unconfigured CRM (crmcore's ``SYSTEM_ACTOR``).
SYSTEM = "system"

# The CRMs whose database has users.role; one that does not yet is looked at again (it may
# have been upgraded since).
_with_roles: "weakref.WeakSet[CRM]" = weakref.WeakSet()


def _has_roles(crm: "CRM", uow: crmcore.UnitOfWork) -> bool:
    """Whether the database has ``users.role`` (revision 0010); inspected once per CRM (``uow.conn``
    only then: a point-read unit opens no SQLAlchemy connection unless asked for one)."""
    if crm not in _with_roles:
        if not any(column["name"] == "role" for column in inspect(uow.conn).get_columns("users")):
            return False
        _with_roles.add(crm)
    return True


def role_of(actor: str, crm: "CRM") -> crmcore.Role | None:
    """The acting login's role: ``system_role`` for ``system``, a user's role or ``default_role``.

    None for a login that is no user, a deactivated user, or a role no plugin registers
    (a custom role since removed from crm.toml): such an actor may do nothing.
    One indexed query (users.login) per unit of work: the answer is kept on the unit (``uow.memo``),
    so the ``authorize`` and ``visibility`` calls of one use case share it, and never outlives the
    unit (a role changed by another unit counts from the next one on).
    """
    if actor == SYSTEM:
        name = crm.settings_for(AccessSettings).system_role
        return crm.roles.get(name) if name in crm.roles else None  # checked at start-up (custom_roles)
    key = ("access.role_of", actor)
    uow = crm.current_unit()  # (the usual case, inside a use case: no context manager to enter)
    if uow is not None:
        memo = uow.memo
        if key in memo:  # (the second ask of a use case: no settings needed)
            cached: crmcore.Role | None = memo[key]
            return cached
        memo[key] = found = _looked_up(actor, crm, crm.settings_for(AccessSettings), uow)
        return found
    with crm.unit(readonly=True) as uow:
        uow.memo[key] = found = _looked_up(actor, crm, crm.settings_for(AccessSettings), uow)
        return found


def _looked_up(actor: str, crm: "CRM", settings: AccessSettings, uow: crmcore.UnitOfWork) -> crmcore.Role | None:
    """The role of the user ``actor`` as the database says now (see :func:`role_of`)."""
    known = uow.acting_user  # read with the request's token, in this unit: no second query
    if known is not None and known.login == actor:
        return _role(crm, settings, known.active, known.role)
    if not _has_roles(crm, uow):
        # A schema older than roles (before revision 0010; `crm db upgrade` opens it
        # unmigrated): nobody has a role yet, and before roles every user could do
        # everything, so an active user acts with system_role until the upgrade.
        active = uow.conn.execute(select(tables.users.c.active)
                                  .where(tables.users.c.login == actor)).scalar()
        return crm.roles.get(settings.system_role) if active else None
    found = uow.read_first(_USER_ROLE, {"login": actor})  # a point-read unit runs it on the driver
    if found is None:
        return None
    active, role = found[1]
    return _role(crm, settings, active, role)


def _role(crm: "CRM", settings: AccessSettings, active: bool, role: str | None) -> crmcore.Role | None:
    """The role an (``active``) user with ``users.role`` = ``role`` acts with."""
    if not active:
        return None
    name = settings.default_role if role is None else role
    return crm.roles.get(name) if name in crm.roles else None  # default_role checked at start-up


# Built once: the statement and its cache key are not rebuilt for every unit of work.
_USER_ROLE = select(tables.users.c.active, tables.users.c.role).where(tables.users.c.login == bindparam("login"))


def condition(role: crmcore.Role, login: str, entity: str) -> ColumnElement[bool] | None:
    """The records of ``entity`` (``customer`` or ``deal``) a user with ``role`` sees; None: all.

    Every list of ids is a subquery (never fetched into Python), uncorrelated so that it
    means the same inside any query the core puts it in (even one that reads customers).
    The same condition object for the same role, login and entity (a bounded cache): the core's
    rewrite of a statement is then found by identity, not by the condition's cache key.  Only the
    SQL is cached, never an answer: who belongs to a team or territory is read when it runs.
    """
    return _condition(role.scope, login, entity)  # (all the condition depends on; a Role hashes slowly)


@functools.lru_cache(maxsize=1024)
def _condition(scope: str, login: str, entity: str) -> ColumnElement[bool] | None:
    # Deals follow their customer (the core's rule when a plugin answers None for "deal"): a deal
    # seen without its customer would vanish from every query that joins the two.
    if scope == "all" or entity != "customer":
        return None
    customers = tables.customers
    if scope == "own":
        return customers.c.owner == login
    if scope == "team":
        return or_(customers.c.owner == login, customers.c.owner.in_(_crew(login)))
    return customers.c.region.in_(_regions(login))  # territory


def nothing() -> ColumnElement[bool]:
    """A condition no record meets (an actor who may not act sees nothing)."""
    return false()


def _crew(login: str) -> Select[tuple[str]]:
    """The logins of the members of every team ``login`` manages."""
    users, members, teams = tables.users, tables.team_members, tables.teams
    manager = users.alias("manager")
    return (select(users.c.login)
            .join(members, members.c.user_id == users.c.id)
            .join(teams, teams.c.id == members.c.team_id)
            .join(manager, manager.c.id == teams.c.manager_id)
            .where(manager.c.login == login)
            .correlate(None))


def _regions(login: str) -> Select[tuple[str]]:
    """The regions ``login`` covers: their own and those of the teams they belong to or manage."""
    users, members, teams, territories = tables.users, tables.team_members, tables.teams, tables.territories
    own = (select(territories.c.region).join(users, users.c.id == territories.c.user_id)
           .where(users.c.login == login))
    as_member = (select(territories.c.region)
                 .join(members, members.c.team_id == territories.c.team_id)
                 .join(users, users.c.id == members.c.user_id)
                 .where(users.c.login == login))
    as_manager = (select(territories.c.region)
                  .join(teams, teams.c.id == territories.c.team_id)
                  .join(users, users.c.id == teams.c.manager_id)
                  .where(users.c.login == login))
    every = union(own, as_member, as_manager).subquery("covered")
    return select(every.c.region).correlate(None)
