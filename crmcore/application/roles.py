"""Roles: named sets of permissions and a visibility scope (``crm.roles``).

A role is data: plugins register roles with the ``register_roles`` hook (the
first-party ``access`` plugin registers admin, manager, sales-rep,
service-agent, read-only and the custom roles of ``crm.toml``), users carry a
role name (``crm user add --role``, ``crm user set-role``), and a policy plugin
reads both in its ``authorize`` and ``visibility`` hooks.  The core itself
grants nothing by a role: what a role allows is the policy's decision.

Permissions are patterns over the action names ``authorize`` is asked
(``customer.create``, ``deal.move``, ``segment.run``, ...; the list is in
docs/users-and-audit.md): shell-style wildcards (``customer.*``, ``*.read``),
and a leading ``!`` takes away what the others give (``!*.purge``).
"""

from __future__ import annotations

import functools
from collections.abc import Iterable
from fnmatch import fnmatchcase
from typing import TYPE_CHECKING

import attrs

if TYPE_CHECKING:
    from ..app import CRM

__all__ = ["SCOPES", "Role", "RoleInfo", "list_roles", "show_role"]

#: Which records a role sees: every record, its teams' (as a team's manager), its regions', its own.
SCOPES = ("all", "team", "territory", "own")


def _patterns(value: Iterable[str]) -> tuple[str, ...]:
    if isinstance(value, str):  # a str is iterable too: each character would become a pattern
        raise TypeError("permissions must be a list of action patterns, not one string")
    return tuple(value)


@attrs.frozen
class Role:
    """A named set of permissions and the records its users see.

    :ivar name: what users carry (``sales-rep``).
    :ivar permissions: action patterns (``customer.*``, ``report.run``); ``!pattern`` takes away.
    :ivar scope: one of :data:`SCOPES`: ``all`` records, the ``team`` the user manages
        (and their own), the ``territory`` (regions) of the user and their teams, or their ``own``.
    :ivar description: one line for ``crm role list``.
    """

    name: str
    permissions: tuple[str, ...] = attrs.field(default=(), converter=_patterns)
    scope: str = attrs.field(default="all", validator=attrs.validators.in_(SCOPES))
    description: str = ""

    def allows(self, action: str) -> bool:
        """Whether some pattern gives ``action`` and no ``!pattern`` takes it away."""
        return _allows(self.permissions, action)


@functools.lru_cache(maxsize=4096)
def _allows(permissions: tuple[str, ...], action: str) -> bool:
    """:meth:`Role.allows` worked out, once per permission set and action: every use case asks it
    (a point read too), and matching a role's dozens of patterns cost more than the read itself."""
    given = False
    for pattern in permissions:
        if pattern.startswith("!"):
            if fnmatchcase(action, pattern[1:]):
                return False
        elif fnmatchcase(action, pattern):
            given = True
    return given


@attrs.frozen
class RoleInfo:
    """A registered role as ``crm role list|show`` shows it: the role's fields and its plugin."""

    name: str
    scope: str
    description: str
    permissions: tuple[str, ...]
    plugin: str


def _info(crm: "CRM", role: Role) -> RoleInfo:
    return RoleInfo(role.name, role.scope, role.description, role.permissions, crm.roles.owner(role.name))


def list_roles(crm: "CRM") -> list[RoleInfo]:
    """Every registered role, by name (action ``role.list``)."""
    crm.authorize("role.list", None)
    return [_info(crm, role) for role in crm.roles]


def show_role(crm: "CRM", name: str) -> RoleInfo:
    """The role called ``name`` (action ``role.read``); an unknown name lists the known ones."""
    crm.authorize("role.read", name)
    return _info(crm, crm.roles.get(name))
