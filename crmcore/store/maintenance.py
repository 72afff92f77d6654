"""Whole-database maintenance (used by ``crm demo --force`` and the test fixtures)."""

from __future__ import annotations

from sqlalchemy import MetaData

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
