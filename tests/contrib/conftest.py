"""Helpers for the contrib plugin tests (kmeans, clv)."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from crmcore.cli import cli


@pytest.fixture(autouse=True)
def _isolated(tmp_path, monkeypatch):
    """No crm.toml from the working directory, no CRM_* settings from the environment."""
    monkeypatch.chdir(tmp_path)
    for var in ("CRM_PLUGINS", "CRM_DATABASE_URL", "CRM_PLUGINS_DIR", "CRM_PLUGINS_BLOCK",
                "CRM_DEFAULT_CURRENCY"):
        monkeypatch.delenv(var, raising=False)


@pytest.fixture
def crm_cli(crm_db_url):
    """crm_cli(*args, plugins="kmeans,clv") -> click Result on the test database."""
    runner = CliRunner()

    def invoke(*args: str, plugins: str = "kmeans,clv"):
        return runner.invoke(cli, ["--db", crm_db_url, "--plugins", plugins, *args], catch_exceptions=False)
    return invoke
