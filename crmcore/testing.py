"""A pytest plugin for crmcore and for plugin authors (entry point ``pytest11``).

Fixtures:

* ``crm_db_url``: a fresh, empty database URL.  SQLite (a file in tmp_path)
  always; PostgreSQL and MariaDB when ``CRM_TEST_POSTGRES_URL`` /
  ``CRM_TEST_MARIADB_URL`` are set (otherwise those cases skip, saying why).
  Parametrised, so a test using it runs once per database.
* ``crm_sqlite_url``: a fresh SQLite file URL only.
* ``crm_factory``: ``crm_factory(plugins=[...], extra_plugins=[...], config={...})``
  opens a migrated :class:`crmcore.CRM` on ``crm_db_url`` and closes it after.

Contract tests (defined in :mod:`crmcore.contracts`, re-exported here): subclass
:class:`SegmenterContract`, :class:`ChannelContract`, :class:`LoyaltySchemeContract`
or :class:`ReportContract` and provide the ``component`` fixture (channels also
``channel_options``, ``delivered`` and ``provoke_failure``) to prove a plugin
obeys its family's protocol; :func:`generate` writes the deterministic data
they run on.  See docs/plugin-guide.md, "Contract tests".
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from datetime import datetime
from typing import Any

import pytest

from .contracts import (
    BEFORE_ANY_DATA, ChannelContract, ComponentPlugin, LoyaltySchemeContract, ReportContract, SegmenterContract,
    generate,
)
from .contracts.data import FIXED_NOW
from .store.maintenance import drop_all_tables

SERVER_ENV = {"postgresql": "CRM_TEST_POSTGRES_URL", "mariadb": "CRM_TEST_MARIADB_URL"}
"""The environment variable that names each server test database (unset: its cases skip)."""


def reset_database(url: str) -> None:
    """Drop every table in a server test database so each test starts empty.

    PostgreSQL drops and recreates the ``public`` schema, MariaDB drops every
    table in one statement: both skip reflecting the tables first, which took
    most of a second per test on MariaDB.  Other databases drop what
    reflection finds.
    """
    from .store.engine import make_engine

    engine = make_engine(url, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            if engine.dialect.name == "postgresql":
                conn.exec_driver_sql("DROP SCHEMA IF EXISTS public CASCADE")
                conn.exec_driver_sql("CREATE SCHEMA public")
                return
            if engine.dialect.name in ("mysql", "mariadb"):
                _drop_mysql_tables(conn)
                return
    finally:
        engine.dispose()
    drop_all_tables(url)


def _drop_mysql_tables(conn: Any) -> None:
    found = conn.exec_driver_sql(
        "SELECT table_name, table_type FROM information_schema.tables WHERE table_schema = DATABASE()").all()
    views = [f"`{name}`" for name, kind in found if kind == "VIEW"]
    tables = [f"`{name}`" for name, kind in found if kind != "VIEW"]
    if views:
        conn.exec_driver_sql(f"DROP VIEW IF EXISTS {', '.join(views)}")
    if tables:
        conn.exec_driver_sql("SET FOREIGN_KEY_CHECKS = 0")
        conn.exec_driver_sql(f"DROP TABLE IF EXISTS {', '.join(tables)}")
        conn.exec_driver_sql("SET FOREIGN_KEY_CHECKS = 1")


def server_url(kind: str) -> str:
    """The URL of a server test database, or skip with the reason."""
    var = SERVER_ENV[kind]
    url = os.environ.get(var)
    if not url and os.environ.get("CRM_REQUIRE_SERVERS"):
        pytest.fail(f"{var} is not set but CRM_REQUIRE_SERVERS is: CI must test {kind}")
    if not url:
        pytest.skip(f"{var} is not set: no {kind} server to test against")
    worker = os.environ.get("PYTEST_XDIST_WORKER")
    return worker_database(url, worker) if worker else url


_created: set[str] = set()


def worker_database(url: str, worker: str) -> str:
    """``url`` with its database renamed for one pytest-xdist worker (``test`` -> ``test_gw1``).

    Each test drops every table of its server database first, so two workers
    sharing one database would drop each other's tables mid-test.  The worker's
    database is created on the server the first time it is asked for.
    """
    from sqlalchemy import text
    from sqlalchemy.engine import make_url

    from .store.engine import make_engine, normalize_url

    parsed = make_url(normalize_url(url))
    name = f"{parsed.database}_{worker}"
    mine = parsed.set(database=name).render_as_string(hide_password=False)
    if mine not in _created:
        admin = parsed.set(database="postgres" if parsed.get_backend_name() == "postgresql" else None)
        engine = make_engine(admin.render_as_string(hide_password=False), isolation_level="AUTOCOMMIT")
        try:
            with engine.connect() as conn:
                if parsed.get_backend_name() == "postgresql":
                    exists = conn.execute(text("SELECT 1 FROM pg_database WHERE datname = :n"), {"n": name})
                    if exists.first() is None:
                        conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
                else:
                    conn.exec_driver_sql(f"CREATE DATABASE IF NOT EXISTS `{name}` CHARACTER SET utf8mb4")
        finally:
            engine.dispose()
        _created.add(mine)
    return mine


@pytest.fixture
def crm_sqlite_url(tmp_path: Any) -> str:
    """A fresh SQLite file URL in ``tmp_path`` (no server variants)."""
    return f"sqlite:///{tmp_path / 'crm.db'}"


@pytest.fixture(params=["sqlite", "postgresql", "mariadb"])
def crm_db_url(request: Any, tmp_path: Any) -> str:
    """A fresh, empty database URL: SQLite, then PostgreSQL and MariaDB when their URLs are set.

    Parametrised, so a test using it runs once per database; a server's tables are dropped first.
    """
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'crm.db'}"
    url = server_url(request.param)
    reset_database(url)
    return url


@pytest.fixture
def crm_factory(crm_db_url: str) -> Iterator[Callable[..., Any]]:
    """Open migrated CRMs on ``crm_db_url``; each is closed after the test.

    ``crm_factory(plugins=[...], extra_plugins=[...], config={...}, clock=...)``:
    ``plugins`` is the allowlist of installed plugins (default: none), ``config``
    a mapping in the shape of ``crm.toml``, ``clock`` defaults to :data:`FIXED_NOW`;
    other keyword arguments go to :meth:`crmcore.CRM.open`.
    """
    from .app import CRM
    from .config import Config

    opened: list[Any] = []

    def factory(plugins: list[str] | None = None, extra_plugins: tuple[Any, ...] | list[Any] = (),
                config: dict[str, Any] | None = None,
                clock: Callable[[], datetime] | None = None, **kwargs: Any) -> CRM:
        values = dict(config or {})
        values.setdefault("database_url", crm_db_url)
        enabled = [] if plugins is None else list(plugins)
        # config={"plugins": {"acme": {...}}} holds [plugins.NAME] settings tables; keep them.
        settings = values.get("plugins")
        values["plugins"] = {**settings, "enabled": enabled} if isinstance(settings, dict) else enabled
        crm = CRM.open(config=Config.from_mapping(values), extra_plugins=extra_plugins,
                       clock=clock or (lambda: FIXED_NOW), **kwargs)
        opened.append(crm)
        return crm

    yield factory
    for crm in opened:
        crm.close()


# The contract classes live in crmcore.contracts; re-exported for plugin authors.
__all__ = ["BEFORE_ANY_DATA", "ChannelContract", "ComponentPlugin", "FIXED_NOW", "LoyaltySchemeContract",
           "ReportContract", "SegmenterContract", "crm_db_url", "crm_factory", "crm_sqlite_url", "generate",
           "reset_database", "server_url"]
