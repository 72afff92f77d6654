"""``crm acme-vips``."""

from __future__ import annotations

import click

from crmcore.cli.context import pass_session


@click.command(name="acme-vips")
@pass_session
def vips(session):
    """List customers tagged vip."""
    rows = [{"id": c.id, "name": c.name} for c in session.crm.customers.list() if "vip" in c.tags]
    session.emit(rows, columns=["id", "name"])
