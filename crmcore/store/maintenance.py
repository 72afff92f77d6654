"""Whole-database maintenance (used by ``crm demo --force`` and the test fixtures)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, MetaData, Table, text

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


def refresh_statistics(crm: Any, table: Table, changed: int | None = None) -> None:
    """ANALYZE a table after a bulk load on PostgreSQL.

    Autovacuum catches up only later; until then the planner sees the table
    as it was (often empty) and picks nested loops that turn a join over
    100k customers from seconds into minutes.

    ``changed``: the rows the load inserted or updated.  Then the table is
    analysed only when that many changes would make autovacuum analyse it
    (:func:`needs_analyze`): ANALYZE samples the whole table and computes
    every column's statistics again (about 0.4 s of the server's CPU for
    100,000 customers), which a load that changed a few rows, or none (a
    re-import of an unchanged file), does not need.  ``None`` analyses always.
    """
    if crm.engine.dialect.name != "postgresql" or changed == 0:
        return
    with crm.engine.begin() as conn:
        if changed is None or needs_analyze(conn, table, changed):
            conn.exec_driver_sql(f"ANALYZE {conn.dialect.identifier_preparer.format_table(table)}")


def needs_analyze(conn: Connection, table: Table, changed: int) -> bool:
    """Whether ``changed`` rows (or, if more, the changes the server counted since the table's
    last ANALYZE) pass autovacuum's own point for analysing ``table`` (PostgreSQL):
    ``autovacuum_analyze_threshold + autovacuum_analyze_scale_factor * reltuples``, with the
    table's own settings where it has them and the server's otherwise; a table never
    analysed counts no rows (``reltuples`` is -1 there).
    """
    name = conn.dialect.identifier_preparer.format_table(table)
    counted, rows, base, scale = conn.execute(text(
        "SELECT pg_stat_get_mod_since_analyze(c.oid), c.reltuples,"
        " coalesce((SELECT o.option_value FROM pg_options_to_table(c.reloptions) o"
        "           WHERE o.option_name = 'autovacuum_analyze_threshold'),"
        "          current_setting('autovacuum_analyze_threshold'))::float8,"
        " coalesce((SELECT o.option_value FROM pg_options_to_table(c.reloptions) o"
        "           WHERE o.option_name = 'autovacuum_analyze_scale_factor'),"
        "          current_setting('autovacuum_analyze_scale_factor'))::float8"
        " FROM pg_class c WHERE c.oid = to_regclass(:name)"), {"name": name}).one()
    return bool(max(changed, counted) > base + scale * max(rows, 0))
