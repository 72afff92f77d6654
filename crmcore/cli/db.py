"""``crm db``: schema upgrades and migration state."""

from __future__ import annotations

import click

from .. import migrations
from .context import Session, pass_session


@click.group()
def db() -> None:
    """Database schema: upgrade, current revision, history."""


@db.command()
@pass_session
def upgrade(session: Session) -> None:
    """Bring the core and every enabled plugin's tables to head."""
    crm = session.crm  # opening migrates
    state = migrations.current(crm.engine, crm.schemas)
    session.emit([{"branch": b, "revision": ", ".join(r)} for b, r in state.items()], title="Schema at head")


@db.command()
@pass_session
def current(session: Session) -> None:
    """Show the applied revision of the core and each plugin branch."""
    from ..app import CRM

    crm = CRM.open(config=session.config(), migrate=False, create=False)
    try:
        applied, available = migrations.current(crm.engine, crm.schemas), migrations.heads(crm.engine, crm.schemas)
        session.emit([{"branch": b, "current": ", ".join(applied.get(b, ())) or "(none)",
                       "head": ", ".join(h)} for b, h in available.items()])
    finally:
        crm.close()


@db.command()
@pass_session
def history(session: Session) -> None:
    """List every known revision, core and plugins."""
    from ..app import CRM

    crm = CRM.open(config=session.config(), migrate=False, create=False)
    try:
        session.emit([{"branch": b, "revision": r, "down_revision": d or "", "message": m}
                      for b, r, d, m in migrations.history(crm.engine, crm.schemas)])
    finally:
        crm.close()
