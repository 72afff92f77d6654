"""A test plugin that owns a table: ``tableplug_notes`` on the Alembic branch ``tableplug``."""

from pathlib import Path

import crmcore

VERSIONS = Path(__file__).resolve().parent / "versions"
SCHEMA = crmcore.PluginSchema(branch="tableplug", versions=VERSIONS, tables=("tableplug_notes",),
                              requires_core="0001_core")


@crmcore.hookimpl
def register_migrations(register):
    register(SCHEMA)
