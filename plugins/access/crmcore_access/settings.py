"""``[plugins.access]``: the default role, the system actor's role and custom roles.

```toml
[plugins.access]
default_role = "read-only"     # users whose role is not set
system_role = "admin"          # the built-in `system` actor (library code, an unconfigured CRM)

[plugins.access.roles.key-account]
extends = "sales-rep"          # its permissions, then these
permissions = ["segment.run", "!customer.delete"]
scope = "team"                 # default: the base role's scope, else "all"
description = "a sales rep for key accounts"
```

A ``!pattern`` takes away what the role (or its base) gives.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import attrs

import crmcore

from .roles import BUILT_IN, built_in_roles

#: The keys a ``[plugins.access.roles.NAME]`` table may have.
ROLE_KEYS = ("permissions", "scope", "description", "extends")
SCOPES = ("all", "team", "territory", "own")


@attrs.frozen
class AccessSettings:
    """The ``access`` plugin's settings (``[plugins.access]``).

    :ivar default_role: the role of users whose role is not set.
    :ivar system_role: what the built-in ``system`` actor may do.
    :ivar roles: custom roles, name -> ``{permissions, scope, description, extends}``.
    """

    default_role: str = "read-only"
    system_role: str = "admin"
    roles: dict[str, dict[str, Any]] = attrs.Factory(dict)


def custom_roles(settings: AccessSettings) -> list[crmcore.Role]:
    """The custom roles of ``[plugins.access.roles]``; a bad one is a ConfigError naming its key.

    A role may extend a built-in role or another custom role (not itself, not in a cycle).
    ``default_role`` and ``system_role`` must name a built-in or custom role (checked here,
    so a typo stops start-up rather than refusing everything).
    """
    built = {role.name: role for role in built_in_roles()}
    made: dict[str, crmcore.Role] = {}

    def make(name: str, chain: tuple[str, ...]) -> crmcore.Role:
        if name in made:
            return made[name]
        table = settings.roles[name]
        where = f"[plugins.access.roles.{name}]"
        if not isinstance(table, Mapping):
            raise crmcore.ConfigError(f"{where}: must be a table (permissions, scope, description, extends)")
        unknown = sorted(set(table) - set(ROLE_KEYS))
        if unknown:
            raise crmcore.ConfigError(f"{where} {unknown[0]}: unknown key (known: {', '.join(ROLE_KEYS)})")
        base: crmcore.Role | None = None
        extends = table.get("extends")
        if extends is not None:
            if extends in chain or extends == name:
                raise crmcore.ConfigError(f"{where} extends: {extends!r} extends {name!r} in turn (a cycle)")
            if extends in built:
                base = built[extends]
            elif isinstance(extends, str) and extends in settings.roles:
                base = make(extends, (*chain, name))
            else:
                known = ", ".join([*BUILT_IN, *sorted(settings.roles)])
                raise crmcore.ConfigError(f"{where} extends: unknown role {extends!r} (known: {known})")
        permissions = table.get("permissions", [])
        if not isinstance(permissions, list) or not all(isinstance(p, str) and p.strip("!") for p in permissions):
            raise crmcore.ConfigError(f"{where} permissions: must be a list of action patterns "
                                      f"(\"customer.read\", \"deal.*\", \"!customer.delete\")")
        scope = table.get("scope", base.scope if base is not None else "all")
        if scope not in SCOPES:
            raise crmcore.ConfigError(f"{where} scope: unknown scope {scope!r} (known: {', '.join(SCOPES)})")
        description = table.get("description", f"extends {base.name}" if base is not None else "")
        if not isinstance(description, str):
            raise crmcore.ConfigError(f"{where} description: must be text")
        inherited = base.permissions if base is not None else ()
        made[name] = crmcore.Role(name, (*inherited, *(p for p in permissions if p not in inherited)), scope,
                                  description)
        return made[name]

    for name in sorted(settings.roles):
        if name in built:
            raise crmcore.ConfigError(f"[plugins.access.roles.{name}]: {name!r} is a built-in role; "
                                      f"give the custom role another name (it may extend {name!r})")
        make(name, ())
    for key, name in (("default_role", settings.default_role), ("system_role", settings.system_role)):
        if name not in built and name not in made:
            known = ", ".join([*BUILT_IN, *sorted(made)])
            raise crmcore.ConfigError(f"[plugins.access] {key}: unknown role {name!r} (known: {known})")
    return [made[name] for name in sorted(made)]
