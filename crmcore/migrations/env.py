"""Alembic environment for crmcore: runs online against the engine in the config."""

from alembic import context

from crmcore.store.tables import metadata

config = context.config
engine = config.attributes["engine"]
version_table = config.attributes.get("version_table", "alembic_version")

with engine.begin() as connection:
    context.configure(
        connection=connection,
        target_metadata=metadata if version_table == "alembic_version" else None,
        version_table=version_table,
        render_as_batch=connection.dialect.name == "sqlite",
    )
    context.run_migrations()
