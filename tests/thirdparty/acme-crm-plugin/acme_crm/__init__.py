"""acme: ACME's crmcore plugin (entry point ``acme`` in the ``crmcore`` group).

Written only from crmcore's docs: docs/plugin-guide.md and docs/hooks.md.
"""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import insert

from crmcore import CustomField, PluginSchema, Renderer, hookimpl

from .channels import LogChannel
from .reports import WonByOwner, render_markdown
from .segments import StageSegmenter, TagSegmenter
from .settings import AcmeSettings
from .tables import acme_welcomes

__version__ = "0.1.0"


@hookimpl
def register_segmenters(register):
    register(TagSegmenter())
    register(StageSegmenter())


@hookimpl
def register_channels(register):
    register(LogChannel())


@hookimpl
def register_reports(register):
    register(WonByOwner())


@hookimpl
def register_renderers(register):
    register(Renderer("acme-md", render_markdown, "md", "Markdown table"))


@hookimpl
def register_custom_fields(register):
    register(CustomField("customer", "acme_account", "str", description="ACME account number"))


@hookimpl
def register_migrations(register):
    register(PluginSchema(
        branch="acme",
        versions=Path(__file__).parent / "migrations",
        tables=("acme_welcomes",),
        requires_core="0001_core",
    ))


@hookimpl
def register_routes(router, crm):
    from .routes import add_routes  # FastAPI is imported only when the HTTP API starts

    add_routes(router, crm)


@hookimpl
def register_settings(register):
    register(AcmeSettings)


@hookimpl
def register_commands(cli):
    from .commands import vips  # only the `crm` program needs click and the CLI session

    cli.add_command(vips)


@hookimpl
def on_customer_created(uow, customer):
    settings = uow.crm.settings_for(AcmeSettings)
    uow.crm.interactions.add(customer_id=customer.id, kind="note", direction="internal",
                             occurred_at=uow.now, subject=settings.welcome_subject, owner="acme")
    uow.conn.execute(insert(acme_welcomes).values(customer_id=customer.id, welcomed_at=uow.now))


@hookimpl
def merge_customer_rows(uow, kept_id, merged_ids, moved):
    # Our welcomes follow their customer into the kept one; what moved is recorded for an unmerge.
    moved["acme_welcomes"] = uow.crm.merges.move_rows(uow, acme_welcomes, kept_id, merged_ids)


@hookimpl
def unmerge_customer_rows(uow, kept_id, merged_ids, moved):
    uow.crm.merges.restore_rows(uow, acme_welcomes, moved.get("acme_welcomes", {}))
