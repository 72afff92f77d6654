"""``crm token``: API tokens for the HTTP API (``crm serve``)."""

from __future__ import annotations

import re
from datetime import datetime, timedelta

import click

from .context import Session, pass_session, read_only
from .params import ID

_DURATION = re.compile(r"(\d{1,5})([dhw])")
_UNITS = {"h": "hours", "d": "days", "w": "weeks"}


def _expiry(session: Session, text: str | None) -> datetime | None:
    """``--expires``: a duration (``90d``, ``12h``, ``2w``) from now (``--as-of``), or a date or
    ISO time (a bare date: the end of that day in the configured timezone)."""
    if text is None:
        return None
    match = _DURATION.fullmatch(text.strip())
    if match:
        return session.as_of + timedelta(**{_UNITS[match.group(2)]: int(match.group(1))})
    try:
        return session.crm.as_of(text)
    except Exception:
        raise click.BadParameter(f"{text!r} is not a duration (90d, 12h, 2w), a date (YYYY-MM-DD) or an ISO "
                                 f"time", param_hint="--expires") from None


@click.group("token")
def token() -> None:
    """API tokens: each acts as its user over HTTP (crm serve)."""


@token.command("create")
@click.option("--user", "login", required=True, metavar="LOGIN", help="The user the token acts as.")
@click.option("--name", required=True, help="What the token is for (e.g. 'shop integration').")
@click.option("--expires", metavar="WHEN", help="A duration (90d, 12h, 2w) or a date; default: never.")
@pass_session
def create_token(session: Session, login: str, name: str, expires: str | None) -> None:
    """Create a token for LOGIN and print it (shown once: only its hash is kept)."""
    stored, secret = session.crm.tokens.create(login, name, _expiry(session, expires))
    record = {**stored.as_dict(session.as_of), "token": secret}
    session.emit_object(record, f"token {stored.id} for {login} created; it is shown only now:\n{secret}")


@read_only
@token.command("list")
@click.option("--user", "login", metavar="LOGIN", help="Only this user's tokens (default: every user's).")
@click.option("--all", "everything", is_flag=True, help="Include revoked and expired tokens.")
@pass_session
def list_tokens(session: Session, login: str | None, everything: bool) -> None:
    """List tokens (never the tokens themselves: their first characters)."""
    rows = [t.as_dict(session.as_of) for t in session.crm.tokens.list(login, include_inactive=everything)]
    session.emit(rows, columns=None if session.as_json else
                 ["id", "login", "name", "prefix", "state", "created_at", "expires_at"])


@token.command("revoke")
@click.argument("token_id", type=ID, metavar="ID")
@pass_session
def revoke_token(session: Session, token_id: int) -> None:
    """Revoke token ID: requests with it fail from now on."""
    stored = session.crm.tokens.revoke(token_id)
    session.emit_object(stored.as_dict(session.as_of), f"token {token_id} ({stored.name}) revoked")
