"""The ``access`` plugin's hook implementations (the entry point)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import ColumnElement

import crmcore

from .policy import SYSTEM, _condition, nothing, role_of
from .roles import built_in_roles
from .settings import AccessSettings, custom_roles

if TYPE_CHECKING:
    from crmcore import CRM


#: What any active user may do with their own API tokens (``resource`` is the token's login).
OWN_TOKEN_ACTIONS = frozenset({"token.create", "token.list", "token.revoke"})
#: What any active user may do to their own account (``resource`` is the login).
OWN_ACCOUNT_ACTIONS = OWN_TOKEN_ACTIONS | {"user.set-password"}


@crmcore.hookimpl
def register_settings(register: crmcore.Register[type[Any]]) -> None:
    """Declare ``[plugins.access]`` (:class:`AccessSettings`)."""
    register(AccessSettings)


@crmcore.hookimpl
def register_migrations(register: crmcore.Register[crmcore.PluginSchema]) -> None:
    """The branch ``access``: no tables; one data revision (the users from before the policy)."""
    register(crmcore.PluginSchema(branch="access", versions=Path(__file__).parent / "migrations",
                                  requires_core="0010_roles_archive"))


@crmcore.hookimpl
def register_roles(register: crmcore.Register[crmcore.Role], crm: "CRM") -> None:
    """Register the built-in roles and the custom roles of ``[plugins.access.roles]``."""
    for role in (*built_in_roles(), *custom_roles(crm.settings_for(AccessSettings))):
        register(role)


@crmcore.hookimpl
def authorize(actor: str, action: str, resource: object, crm: "CRM") -> bool | None:
    """Refuse what the actor's role does not allow (and every action of an unknown or
    deactivated login); leave the rest to other plugins (None)."""
    role = role_of(actor, crm)
    if role is None:
        return False
    if action in OWN_ACCOUNT_ACTIONS and resource == actor:
        return None  # every user manages their own API tokens and password; another user's need the permission
    if not role.allows(action):
        return False
    return None


@crmcore.hookimpl
def visibility(actor: str, entity: str, crm: "CRM") -> ColumnElement[bool] | None:
    """The records of ``entity`` the actor's role scope covers (None: every record)."""
    if actor == SYSTEM:
        return None  # library code and jobs see everything; system_role governs what they may do
    role = role_of(actor, crm)
    if role is None:
        return nothing()
    return _condition(role.scope, actor, entity)  # (condition() without its call: asked by every read)
