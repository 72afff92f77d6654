"""``crm acme-vips``."""

from __future__ import annotations

import click

from crmcore import pass_session

from .settings import AcmeSettings


@click.command(name="acme-vips")
@pass_session
def vips(session):
    """List customers tagged vip (``[plugins.acme] vip_tag``) who were customers at --as-of."""
    settings = session.crm.settings_for(AcmeSettings)
    rows = [{"id": c.id, "name": c.name} for c in session.crm.customers.list()
            if settings.vip_tag in c.tags and c.created_at <= session.as_of]
    session.emit(rows[:settings.max_vips], columns=["id", "name"])
