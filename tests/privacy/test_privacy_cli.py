"""``crm customer export-data|erase``, ``crm privacy apply-retention`` and ``crm db backup|restore``
on the command line (SQLite: the engines are tested on every database elsewhere), with the
access plugin's roles: who may, and the errors a person gets."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from crmcore.cli import cli


@pytest.fixture
def run(crm_sqlite_url: str, tmp_path: Path, monkeypatch: Any) -> Any:
    monkeypatch.chdir(tmp_path)
    for var in ("CRM_PLUGINS", "CRM_DATABASE_URL", "CRM_PLUGINS_DIR", "CRM_PLUGINS_BLOCK", "CRM_USER"):
        monkeypatch.delenv(var, raising=False)

    def invoke(*args: str) -> Any:
        return CliRunner().invoke(cli, ["--db", crm_sqlite_url, "--plugins", "access", "--as-of", "2026-12-01",
                                        *args])
    invoke("user", "add", "ann", "--role", "admin")
    invoke("--as", "ann", "user", "add", "mia", "--role", "manager")
    invoke("--as", "ann", "user", "add", "rita", "--role", "sales-rep")
    invoke("--as", "ann", "user", "add", "rob", "--role", "read-only")
    invoke("--as", "ann", "customer", "add", "--name", "Zhao Cliplanted", "--email", "zhao.cli@example.com",
           "--owner", "mia")
    return invoke


def ok(result: Any) -> str:
    assert result.exit_code == 0, result.output
    return result.output


def test_export_writes_json_and_html(run: Any, tmp_path: Path) -> None:
    out = json.loads(ok(run("--as", "mia", "--json", "customer", "export-data", "zhao.cli@example.com",
                            "-o", "out/zhao.json")))
    assert out["html"].endswith("zhao.html")
    data = json.loads((tmp_path / "out" / "zhao.json").read_text(encoding="utf-8"))
    assert data["customer"]["name"] == "Zhao Cliplanted"
    assert "Zhao Cliplanted" in (tmp_path / "out" / "zhao.html").read_text(encoding="utf-8")
    # Readable by the owner only, whatever the umask.
    assert [oct((tmp_path / "out" / n).stat().st_mode & 0o777) for n in ("zhao.json", "zhao.html")] == ["0o600"] * 2
    hidden = run("--as", "rita", "customer", "export-data", "1", "-o", "x.json")  # not her customer
    assert hidden.exit_code == 1 and "not found" in hidden.output
    refused = run("--as", "rob", "customer", "export-data", "1", "-o", "x.json")  # sees it, may not export it
    assert refused.exit_code == 1 and "may not" in refused.output and "Traceback" not in refused.output


def test_erase_needs_yes_a_reason_and_the_permission(run: Any) -> None:
    assert "add --yes" in run("--as", "ann", "customer", "erase", "1", "--reason", "r").output
    assert "--reason" in run("--as", "ann", "customer", "erase", "1", "--yes").output
    refused = run("--as", "mia", "customer", "erase", "1", "--reason", "request", "--yes")
    assert refused.exit_code == 1 and "may not" in refused.output
    assert "erased" in ok(run("--as", "ann", "customer", "erase", "1", "--reason", "PIPL request", "--yes"))
    assert "already erased" in ok(run("--as", "ann", "customer", "erase", "1", "--reason", "again", "--yes"))
    log = json.loads(ok(run("--as", "ann", "--json", "audit", "log", "--customer", "1")))
    assert "Zhao" not in json.dumps(log) and ok(run("--as", "ann", "audit", "verify"))


def test_retention_dry_run_then_apply(run: Any, tmp_path: Path) -> None:
    (tmp_path / "crm.toml").write_text("[privacy.retention]\nleads_months = 6\ninteractions_years = 1\n",
                                       encoding="utf-8")
    run("--as", "ann", "interaction", "add", "--customer", "1", "--kind", "note", "--occurred-at", "2024-01-05")
    dry = ok(run("--as", "ann", "--json", "privacy", "apply-retention", "--dry-run", "--as-of", "2027-12-01"))
    assert {r["policy"]: r["would_remove"] for r in json.loads(dry)} == {"interactions": 1, "leads": 1}
    done = json.loads(ok(run("--as", "ann", "--json", "privacy", "apply-retention", "--as-of", "2027-12-01")))
    assert {r["policy"]: r["removed"] for r in done} == {"interactions": 1, "leads": 1}
    again = json.loads(ok(run("--as", "ann", "--json", "privacy", "apply-retention", "--as-of", "2027-12-01")))
    assert {r["policy"]: r["removed"] for r in again} == {"interactions": 0, "leads": 0}
    refused = run("--as", "mia", "privacy", "apply-retention")
    assert refused.exit_code == 1 and "may not" in refused.output


def test_backup_and_restore_commands(run: Any, tmp_path: Path) -> None:
    out = ok(run("--as", "ann", "db", "backup", "b.zip"))
    assert "verified" in out
    assert oct((tmp_path / "b.zip").stat().st_mode & 0o777) == "0o600"
    run("--as", "ann", "customer", "add", "--name", "Later")
    assert "add --yes" in run("--as", "ann", "db", "restore", "b.zip").output
    assert "verified" in ok(run("--as", "ann", "db", "restore", "b.zip", "--yes"))
    names = [c["name"] for c in json.loads(ok(run("--as", "ann", "--json", "customer", "list")))]
    assert names == ["Zhao Cliplanted"]
    assert "exists" in run("--as", "ann", "db", "backup", "b.zip").output
    assert "not a crm backup file" in run("--as", "ann", "db", "restore", "crm.toml", "--yes").output \
        or "no such backup file" in run("--as", "ann", "db", "restore", "crm.toml", "--yes").output
    refused = run("--as", "mia", "db", "backup", "c.zip")
    assert refused.exit_code == 1 and "may not" in refused.output
