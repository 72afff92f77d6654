"""``crm user`` and ``crm team``: users, teams and the regions (territories) they cover."""

from __future__ import annotations

import sys
from typing import Any

import attrs
import click

from .context import Session, pass_session, read_only

USER_COLUMNS = ["login", "display_name", "email", "active", "role", "locale", "time_zone", "teams", "regions"]
TEAM_COLUMNS = ["name", "manager", "members", "regions"]


def _record(obj: Any) -> dict[str, Any]:
    """An attrs object as a row; tuples shown comma-separated outside --json."""
    return {f.name: getattr(obj, f.name) for f in attrs.fields(type(obj)) if f.name != "id"}


def _show(session: Session, obj: Any, message: str | None = None) -> None:
    record = _record(obj)
    if not session.as_json:
        record = {k: ", ".join(v) if isinstance(v, tuple) else v for k, v in record.items()}
    session.emit_object(record, message)


@click.group("user")
def user() -> None:
    """Users: who owns customers and deals, and who acts (--as)."""


@user.command("add")
@click.argument("login")
@click.option("--name", "display_name", help="Display name (default: the login).")
@click.option("--email", help="Email address (imports may name the owner by it).")
@click.option("--locale", help="Locale, e.g. zh-CN or en.")
@click.option("--time-zone", help="IANA time zone, e.g. Asia/Shanghai.")
@click.option("--role", help="A role (crm role list); default: the policy's default role.")
@pass_session
def add_user(session: Session, login: str, display_name: str | None, email: str | None, locale: str | None,
             time_zone: str | None, role: str | None) -> None:
    """Add user LOGIN (from then on the CRM needs --as, CRM_USER or default_user)."""
    added = session.crm.users.add(login, display_name, email=email, locale=locale, time_zone=time_zone, role=role)
    _show(session, added, f"user {added.login} added")


@read_only
@user.command("list")
@click.option("--active", "active_only", is_flag=True, help="Only active users.")
@pass_session
def list_users(session: Session, active_only: bool) -> None:
    """List users."""
    rows = [_record(u) for u in session.crm.users.list(include_inactive=not active_only)]
    session.emit(rows, columns=None if session.as_json else ["login", "display_name", "email", "active", "role"])


@read_only
@user.command("show")
@click.argument("login")
@pass_session
def show_user(session: Session, login: str) -> None:
    """Show user LOGIN with their teams and regions."""
    _show(session, session.crm.users.get(login))


@user.command("deactivate")
@click.argument("login")
@pass_session
def deactivate_user(session: Session, login: str) -> None:
    """Deactivate user LOGIN: they can no longer act; what they own stays theirs."""
    # What deactivate returns: reading the user again would ask for user.read, and an actor who
    # just deactivated themselves may no longer act.
    _show(session, session.crm.users.deactivate(login), f"user {login} deactivated")


@user.command("set-role")
@click.argument("login")
@click.argument("role", required=False)
@click.option("--default", "default", is_flag=True,
              help="Clear the user's role: the policy's default role applies (access: default_role).")
@pass_session
def set_role(session: Session, login: str, role: str | None, default: bool) -> None:
    """Give user LOGIN the role ROLE (crm role list), or with --default none of their own."""
    if (role is None) == (not default):
        raise click.UsageError("give a ROLE or --default (not both)")
    done = f"user {login} has role {role}" if role else f"user {login} has the default role"
    _show(session, session.crm.users.set_role(login, role), done)


@user.command("set-password")
@click.argument("login")
@click.option("--password-stdin", is_flag=True,
              help="Read the password from the first line of standard input (scripts) instead of asking.")
@pass_session
def set_password(session: Session, login: str, password_stdin: bool) -> None:
    """Set user LOGIN's password (the web console's sign-in; stored as an argon2 hash)."""
    session.crm.authorize("user.set-password", login)  # before asking for a password that would be refused
    if password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    elif not sys.stdin.isatty():
        raise click.UsageError("standard input is not a terminal: pass the password with --password-stdin")
    else:
        password = click.prompt("Password", hide_input=True, confirmation_prompt=True)
    session.crm.users.set_password(login, password)
    session.emit_object({"login": login, "password": "set"}, f"password of user {login} set")


@user.command("assign-region")
@click.argument("login")
@click.argument("region")
@pass_session
def user_assign_region(session: Session, login: str, region: str) -> None:
    """Let user LOGIN cover REGION (a customer's region)."""
    _show(session, session.crm.users.assign_region(login, region), f"user {login} covers {region}")


@user.command("unassign-region")
@click.argument("login")
@click.argument("region")
@pass_session
def user_unassign_region(session: Session, login: str, region: str) -> None:
    """Stop user LOGIN covering REGION."""
    _show(session, session.crm.users.unassign_region(login, region), f"user {login} no longer covers {region}")


@click.group("team")
def team() -> None:
    """Teams: a manager, members and the regions they cover."""


@team.command("add")
@click.argument("name")
@click.option("--manager", metavar="LOGIN", help="The team's manager.")
@pass_session
def add_team(session: Session, name: str, manager: str | None) -> None:
    """Add team NAME."""
    _show(session, session.crm.teams.add(name, manager), f"team {name} added")


@read_only
@team.command("list")
@pass_session
def list_teams(session: Session) -> None:
    """List teams."""
    rows = [_record(t) for t in session.crm.teams.list()]
    if not session.as_json:
        rows = [{k: ", ".join(v) if isinstance(v, tuple) else v for k, v in r.items()} for r in rows]
    session.emit(rows, columns=TEAM_COLUMNS)


@read_only
@team.command("show")
@click.argument("name")
@pass_session
def show_team(session: Session, name: str) -> None:
    """Show team NAME."""
    _show(session, session.crm.teams.get(name))


@team.command("add-member")
@click.argument("name")
@click.argument("login")
@pass_session
def add_member(session: Session, name: str, login: str) -> None:
    """Make user LOGIN a member of team NAME."""
    _show(session, session.crm.teams.add_member(name, login), f"{login} is a member of team {name}")


@team.command("remove-member")
@click.argument("name")
@click.argument("login")
@pass_session
def remove_member(session: Session, name: str, login: str) -> None:
    """Remove user LOGIN from team NAME."""
    _show(session, session.crm.teams.remove_member(name, login), f"{login} left team {name}")


@team.command("assign-region")
@click.argument("name")
@click.argument("region")
@pass_session
def team_assign_region(session: Session, name: str, region: str) -> None:
    """Let team NAME cover REGION."""
    _show(session, session.crm.teams.assign_region(name, region), f"team {name} covers {region}")


@team.command("unassign-region")
@click.argument("name")
@click.argument("region")
@pass_session
def team_unassign_region(session: Session, name: str, region: str) -> None:
    """Stop team NAME covering REGION."""
    _show(session, session.crm.teams.unassign_region(name, region), f"team {name} no longer covers {region}")
