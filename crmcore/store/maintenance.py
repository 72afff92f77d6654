"""Whole-database maintenance (used by ``crm demo --force`` and the test fixtures)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import MetaData, Table

from .engine import make_engine


def drop_all_tables(url: str) -> None:
    """Drop every table in the database at ``url`` (core, plugins, version tables)."""
    engine = make_engine(url)
    try:
        meta = MetaData()
        meta.reflect(engine)
        meta.drop_all(engine)
    finally:
        engine.dispose()


def refresh_statistics(crm: Any, table: Table) -> None:
    """ANALYZE a table after a bulk load on PostgreSQL.

    Autovacuum catches up only later; until then the planner sees the table
    as it was (often empty) and picks nested loops that turn a join over
    100k customers from seconds into minutes.
    """
    if crm.engine.dialect.name == "postgresql":
        with crm.engine.begin() as conn:
            conn.exec_driver_sql(f'ANALYZE "{table.name}"')
