"""The built-in roles: who may do what, one table per role.

Each table maps an *area* (the part of an action name before the dot:
``customer``, ``segment``, ``loyalty``, ...) to the verbs the role may perform
there (``"*"``: every verb of the area, also those added later).  An action is
``AREA.VERB`` as ``authorize`` is asked it (docs/users-and-audit.md, "Actions
authorize is asked").  Verbs are listed even where no command asks them yet
(``export``, ``merge``, ``restore``, ``purge``), so the role is right when one does:
purge is for admins only, restore goes with delete.

Every role may read the catalogs (segmentation strategies, loyalty schemes,
rewards and tiers, channels, templates, reports, roles): they show no customer
data.  The tables hold no ``!`` removals, so a custom role that ``extends`` one can add
or take away anything (see :mod:`crmcore_access.settings`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import crmcore

#: A role's permissions: area -> verbs (``"*"`` for all of the area's verbs).
Table = Mapping[str, Sequence[str]]

ENTITIES = ("customer", "contact", "interaction", "deal", "task")

ADMIN: Table = {"*": ["*"]}

MANAGER: Table = {
    "customer": ["read", "list", "create", "update", "delete", "restore", "merge", "unmerge", "duplicates", "import",
                 "export", "export-data"],
    "contact": ["read", "list", "create", "update", "delete", "restore", "merge", "import", "export"],
    "interaction": ["read", "list", "create", "update", "delete", "restore", "merge", "import", "export"],
    "deal": ["read", "list", "create", "update", "delete", "restore", "merge", "import", "export", "move"],
    "task": ["read", "list", "create", "update", "delete", "complete", "remind", "import", "export"],
    "consent": ["*"],
    "segment": ["*"],
    "loyalty": ["*"],
    "notify": ["*"],
    "report": ["*"],
    "job": ["submit", "list", "read", "read_all"],
    "user": ["read", "list", "assign-region", "unassign-region"],
    "team": ["*"],
    "role": ["list", "read"],
    "audit": ["log", "verify"],
    "config": ["show"],
    "db": ["current", "history"],
    "plugins": ["list"],
}

SALES_REP: Table = {
    "customer": ["read", "list", "create", "update", "delete", "restore", "duplicates", "import", "export"],
    "contact": ["read", "list", "create", "update", "delete", "restore", "import", "export"],
    "interaction": ["read", "list", "create", "update", "delete", "restore", "import", "export"],
    "deal": ["read", "list", "create", "update", "delete", "restore", "import", "export", "move"],
    "task": ["read", "list", "create", "update", "delete", "complete", "import", "export"],
    "consent": ["*"],
    "segment": ["strategies", "runs", "members", "explain", "diff"],
    "loyalty": ["read", "redeem", "refer", "schemes", "rewards", "tiers"],
    "notify": ["enqueue", "preview", "outbox", "channels", "templates"],
    "report": ["run", "list", "dashboard"],
    "job": ["submit", "list", "read"],
    "user": ["read", "list"],
    "team": ["read", "list"],
    "role": ["list", "read"],
}

SERVICE_AGENT: Table = {
    "customer": ["read", "list", "update"],
    "contact": ["read", "list", "create", "update"],
    "interaction": ["read", "list", "create", "update"],
    "deal": ["read", "list"],
    "task": ["read", "list", "create", "update", "complete"],
    "consent": ["*"],
    "segment": ["strategies"],
    "loyalty": ["read", "redeem", "schemes", "rewards", "tiers"],
    "notify": ["enqueue", "preview", "outbox", "channels", "templates"],
    "report": ["*"],
    "job": ["submit", "list", "read"],
    "user": ["read", "list"],
    "team": ["read", "list"],
    "role": ["list", "read"],
}

READ_ONLY: Table = {
    "*": ["read", "list"],  # every entity, user, team, role, also new ones (``KIND.list``: search, count too)
    "customer": ["export"],
    "contact": ["export"],
    "interaction": ["export"],
    "deal": ["export"],
    "task": ["export"],
    "segment": ["strategies", "runs", "members", "export", "explain", "diff"],
    "loyalty": ["read", "schemes", "rewards", "tiers"],
    "notify": ["channels", "templates", "outbox", "preview"],
    "report": ["*"],
    "audit": ["log", "verify"],
    "config": ["show"],
    "db": ["current", "history"],
    "plugins": ["list"],
}

#: name -> (scope, description, table), in the order ``crm role list`` shows them (by name).
BUILT_IN: dict[str, tuple[str, str, Table]] = {
    "admin": ("all", "everything, on every record", ADMIN),
    "manager": ("team", "runs a team: all business actions on the team's records; no purge, no user "
                        "administration, no db upgrade", MANAGER),
    "sales-rep": ("own", "works their own customers and deals", SALES_REP),
    "service-agent": ("territory", "serves the customers of their regions: contacts, interactions, consent, "
                                   "redemptions", SERVICE_AGENT),
    "read-only": ("all", "reads everything, changes nothing", READ_ONLY),
}


def patterns(table: Table) -> tuple[str, ...]:
    """A table as action patterns: ``{"deal": ["move"]}`` -> ``("deal.move",)``; ``{"*": ["*"]}`` -> ``("*",)``."""
    found: list[str] = []
    for area, verbs in table.items():
        for verb in verbs:
            pattern = "*" if area == "*" and verb == "*" else f"{area}.{verb}"
            if pattern not in found:
                found.append(pattern)
    return tuple(found)


def built_in_roles() -> list[crmcore.Role]:
    """The five built-in roles."""
    return [crmcore.Role(name, patterns(table), scope, description)
            for name, (scope, description, table) in BUILT_IN.items()]
