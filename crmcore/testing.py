"""A pytest plugin for crmcore and for plugin authors (entry point ``pytest11``).

Fixtures:

* ``crm_db_url``: a fresh, empty database URL.  SQLite (a file in tmp_path)
  always; PostgreSQL and MariaDB when ``CRM_TEST_POSTGRES_URL`` /
  ``CRM_TEST_MARIADB_URL`` are set (otherwise those cases skip, saying why).
  Parametrised, so a test using it runs once per database.
* ``crm_sqlite_url``: a fresh SQLite file URL only.
* ``crm_factory``: ``crm_factory(plugins=[...], extra_plugins=[...], config={...})``
  opens a migrated :class:`crmcore.CRM` on ``crm_db_url`` and closes it after.

Contract tests: subclass :class:`SegmenterContract`, :class:`ChannelContract`,
:class:`LoyaltySchemeContract` or :class:`ReportContract` and provide the
``component`` fixture to prove a plugin obeys its family's protocol.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from datetime import datetime, timezone
from typing import Any

import pytest

from .store.maintenance import drop_all_tables

SERVER_ENV = {"postgresql": "CRM_TEST_POSTGRES_URL", "mariadb": "CRM_TEST_MARIADB_URL"}
FIXED_NOW = datetime(2026, 6, 30, 12, 0, tzinfo=timezone.utc)


def reset_database(url: str) -> None:
    """Drop every table in a server test database so each test starts empty."""
    drop_all_tables(url)


def server_url(kind: str) -> str:
    """The URL of a server test database, or skip with the reason."""
    var = SERVER_ENV[kind]
    url = os.environ.get(var)
    if not url and os.environ.get("CRM_REQUIRE_SERVERS"):
        pytest.fail(f"{var} is not set but CRM_REQUIRE_SERVERS is: CI must test {kind}")
    if not url:
        pytest.skip(f"{var} is not set: no {kind} server to test against")
    return url


@pytest.fixture
def crm_sqlite_url(tmp_path: Any) -> str:
    return f"sqlite:///{tmp_path / 'crm.db'}"


@pytest.fixture(params=["sqlite", "postgresql", "mariadb"])
def crm_db_url(request: Any, tmp_path: Any) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'crm.db'}"
    url = server_url(request.param)
    reset_database(url)
    return url


@pytest.fixture
def crm_factory(crm_db_url: str) -> Iterator[Callable[..., Any]]:
    from .app import CRM
    from .config import Config

    opened: list[Any] = []

    def factory(plugins: list[str] | None = None, extra_plugins: tuple[object, ...] = (),
                config: dict[str, Any] | None = None,
                clock: Callable[[], datetime] | None = None, **kwargs: Any) -> CRM:
        values = dict(config or {})
        values.setdefault("database_url", crm_db_url)
        values["plugins"] = [] if plugins is None else list(plugins)
        crm = CRM.open(config=Config.from_mapping(values), extra_plugins=extra_plugins,
                       clock=clock or (lambda: FIXED_NOW), **kwargs)
        opened.append(crm)
        return crm

    yield factory
    for crm in opened:
        crm.close()


# -- contract tests --------------------------------------------------------------

class _Contract:
    """Common checks: a name, a description, and options that build from config."""

    def test_has_name_and_description(self, component: Any) -> None:
        assert isinstance(component.name, str) and component.name
        assert isinstance(component.description, str) and component.description

    def test_default_options_build(self, component: Any) -> None:
        from .application.components import build_options
        from .config import Config

        build_options(component, self.family, Config(), None)

    family = ""


class SegmenterContract(_Contract):
    """Subclass and provide ``component`` (a Segmenter) and ``seeded_crm``
    (a CRM with the segmenter registered and some customers)."""

    family = "segments"

    def test_run_assigns_every_customer_at_most_once(self, seeded_crm: Any, component: Any) -> None:
        run = seeded_crm.segments.run(component.name, as_of=FIXED_NOW)
        members = seeded_crm.segments.members(component.name, run_id=run.id)
        ids = [m["customer_id"] for m in members]
        assert len(ids) == len(set(ids)) == run.members
        assert set(ids) <= {c.id for c in seeded_crm.customers.list()}
        assert all(isinstance(m["segment"], str) and m["segment"] for m in members)


class ChannelContract(_Contract):
    """Subclass and provide ``component`` (a Channel) and ``delivered``: a
    callable returning what reached the channel's destination so far."""

    family = "channels"

    def test_address_kind(self, component: Any) -> None:
        assert component.address in (None, "email", "phone")


class LoyaltySchemeContract(_Contract):
    """Subclass and provide ``component`` (a LoyaltyScheme)."""

    family = "loyalty"


class ReportContract(_Contract):
    """Subclass and provide ``component`` (a Report) and ``seeded_crm``."""

    family = "reports"

    def test_rows_match_columns(self, seeded_crm: Any, component: Any) -> None:
        result = seeded_crm.reports.run(component.name, as_of=FIXED_NOW)
        assert result.columns
        assert all(len(row) == len(result.columns) for row in result.rows)

    def test_core_renderers(self, seeded_crm: Any, component: Any) -> None:
        for fmt in ("table", "csv", "json"):
            assert seeded_crm.reports.render(component.name, format=fmt, as_of=FIXED_NOW)
