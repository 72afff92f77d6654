"""Fixtures for the import/export tests (helpers live in iotools.py)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from iotools import Crm

@pytest.fixture(autouse=True)
def _isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No crm.toml from the working directory, no CRM_* settings from the environment."""
    monkeypatch.chdir(tmp_path)
    for var in ("CRM_PLUGINS", "CRM_DATABASE_URL", "CRM_PLUGINS_DIR", "CRM_PLUGINS_BLOCK", "CRM_PHONE_REGION",
                "CRM_DEFAULT_CURRENCY"):
        monkeypatch.delenv(var, raising=False)


@pytest.fixture
def crm_cli(crm_db_url: str, tmp_path: Path) -> Any:
    """``crm`` on a fresh database (SQLite, and the servers when configured)."""
    runner = Crm(crm_db_url, tmp_path)
    runner.run("db", "upgrade")
    yield runner
    runner.close()


@pytest.fixture
def sqlite_cli(tmp_path: Path) -> Any:
    runner = Crm(f"sqlite:///{tmp_path / 'other.db'}", tmp_path)
    runner.run("db", "upgrade")
    yield runner
    runner.close()


@pytest.fixture
def make_cli(tmp_path: Path) -> Callable[..., Crm]:
    made: list[Crm] = []

    def make(url: str, config: Path | None = None) -> Crm:
        runner = Crm(url, tmp_path, config)
        runner.run("db", "upgrade")
        made.append(runner)
        return runner

    yield make
    for runner in made:
        runner.close()
