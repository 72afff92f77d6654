"""``crm role``: the roles policy plugins registered (``register_roles``) and what they allow."""

from __future__ import annotations

from typing import Any

import attrs
import click

from ..application.roles import RoleInfo, list_roles, show_role
from .context import Session, pass_session, read_only

ROLE_COLUMNS = ["name", "scope", "plugin", "description"]


def _record(info: RoleInfo, as_json: bool) -> dict[str, Any]:
    """A role as a row; permissions comma-separated outside --json."""
    record = attrs.asdict(info)
    record["permissions"] = list(info.permissions) if as_json else ", ".join(info.permissions)
    return record


@click.group("role")
def role() -> None:
    """Roles: named permissions and the records their users see (crm user set-role)."""


@read_only
@role.command("list")
@pass_session
def list_role_names(session: Session) -> None:
    """List the registered roles."""
    rows = [_record(info, session.as_json) for info in list_roles(session.crm)]
    session.emit(rows, columns=ROLE_COLUMNS)


@read_only
@role.command("show")
@click.argument("name")
@pass_session
def show_role_details(session: Session, name: str) -> None:
    """Show role NAME: scope, description, permissions and the plugin that registered it."""
    session.emit_object(_record(show_role(session.crm, name), session.as_json))
