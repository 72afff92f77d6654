"""``crm db``: schema upgrades and migration state."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

import click

from .. import migrations
from .context import Session, act, pass_session

if TYPE_CHECKING:
    from ..app import CRM


@contextmanager
def _authorized(session: Session, action: str, create: bool = False) -> Iterator["CRM"]:
    """The CRM opened WITHOUT migrating, once ``authorize(action)`` allowed the acting user.

    ``session.crm`` migrates on opening, which is the very thing ``db upgrade`` must ask
    about first.  A database without the users table (new, or older than users) has no
    users yet, so the built-in ``system`` actor asks.
    """
    from ..app import CRM

    crm = CRM.open(config=session.config(), migrate=False, create=create)
    acting = None
    try:
        if "users" in _tables(crm):
            acting = act(crm, session.as_user)
        crm.authorize(action, None)
        yield crm
    finally:
        if acting is not None:
            acting.__exit__(None, None, None)
        crm.close()


def _tables(crm: "CRM") -> set[str]:
    """The database's tables; none for a SQLite file that does not exist yet."""
    from ..store.engine import DatabaseMissing

    try:
        return migrations.table_names(crm.engine)
    except DatabaseMissing:
        return set()


@click.group()
def db() -> None:
    """Database schema: upgrade, current revision, history."""


@db.command()
@pass_session
def upgrade(session: Session) -> None:
    """Bring the core and every enabled plugin's tables to head."""
    with _authorized(session, "db.upgrade", create=True) as crm:
        crm.upgrade()
        state = migrations.current(crm.engine, crm.schemas)
    session.emit([{"branch": b, "revision": ", ".join(r)} for b, r in state.items()], title="Schema at head")


@db.command()
@pass_session
def current(session: Session) -> None:
    """Show the applied revision of the core and each plugin branch."""
    with _authorized(session, "db.current") as crm:
        applied, available = migrations.current(crm.engine, crm.schemas), migrations.heads(crm.engine, crm.schemas)
        session.emit([{"branch": b, "current": ", ".join(applied.get(b, ())) or "(none)",
                       "head": ", ".join(h)} for b, h in available.items()])


@db.command()
@pass_session
def history(session: Session) -> None:
    """List every known revision, core and plugins."""
    with _authorized(session, "db.history") as crm:
        session.emit([{"branch": b, "revision": r, "down_revision": d or "", "message": m}
                      for b, r, d, m in migrations.history(crm.engine, crm.schemas)])
