"""``run(*args)``: the ``crm`` command on the test database (every dialect the fixtures provide)."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from crmcore.cli import cli


@pytest.fixture
def run(crm_db_url, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for var in ("CRM_PLUGINS", "CRM_DATABASE_URL", "CRM_PLUGINS_DIR", "CRM_PLUGINS_BLOCK"):
        monkeypatch.delenv(var, raising=False)
    runner = CliRunner()

    def invoke(*args: str):
        return runner.invoke(cli, ["--db", crm_db_url, "--plugins", "segments", *args])
    return invoke


def ok(result) -> str:
    assert result.exit_code == 0, result.output
    return result.output


def as_json(result):
    return json.loads(ok(result))
