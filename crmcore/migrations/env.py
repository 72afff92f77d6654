"""Alembic environment for crmcore: runs online against the engine in the config."""

from typing import Any

from alembic import context

from crmcore.store.tables import metadata

config = context.config
engine = config.attributes["engine"]
version_table = config.attributes.get("version_table", "alembic_version")


def _sqlite_foreign_keys(connection: Any, on: bool) -> None:
    # Outside any transaction (SQLite ignores the pragma inside one), on the driver's connection
    # so SQLAlchemy does not begin one first.
    cursor = connection.connection.driver_connection.cursor()
    cursor.execute(f"PRAGMA foreign_keys={'ON' if on else 'OFF'}")
    cursor.close()


with engine.connect() as connection:
    sqlite = connection.dialect.name == "sqlite"
    if sqlite:
        # Batch mode rebuilds a table as copy, drop, rename.  With foreign keys on, dropping
        # the old copy of a table others refer to (loyalty_ledger) would cascade into or be
        # refused by its children, so revisions run with them off and are checked at the end.
        _sqlite_foreign_keys(connection, False)
    try:
        with connection.begin():
            context.configure(
                connection=connection,
                target_metadata=metadata if version_table == "alembic_version" else None,
                version_table=version_table,
                render_as_batch=sqlite,
            )
            context.run_migrations()
            if sqlite:
                broken = connection.exec_driver_sql("PRAGMA foreign_key_check").fetchall()
                if broken:
                    raise RuntimeError(f"a migration left rows that break foreign keys: {broken[:5]}")
    finally:
        if sqlite:
            _sqlite_foreign_keys(connection, True)
