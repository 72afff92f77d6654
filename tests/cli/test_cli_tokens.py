"""``crm token create|list|revoke`` (issue 16, point 2) on every database, with the access plugin's roles."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import pytest
from click.testing import CliRunner

from crmcore import CRM
from crmcore.application.tokens import InvalidToken, token_hash
from crmcore.cli import cli
from crmcore.store import tables


@pytest.fixture
def run(crm_db_url, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for var in ("CRM_PLUGINS", "CRM_DATABASE_URL", "CRM_PLUGINS_DIR", "CRM_PLUGINS_BLOCK", "CRM_USER"):
        monkeypatch.delenv(var, raising=False)

    def invoke(*args: str):
        return CliRunner().invoke(cli, ["--db", crm_db_url, "--plugins", "access", "--as-of", "2026-12-01", *args])
    invoke("user", "add", "ann", "--role", "admin")
    invoke("--as", "ann", "user", "add", "rita", "--role", "sales-rep")
    return invoke


def ok(result) -> str:
    assert result.exit_code == 0, result.output
    return result.output


def test_create_shows_the_token_once_and_stores_its_hash(run, crm_db_url) -> None:
    created = json.loads(ok(run("--as", "ann", "--json", "token", "create", "--user", "rita", "--name", "shop",
                                "--expires", "30d")))
    secret = created["token"]
    assert secret.startswith("crm_") and len(secret) == 47
    assert created["expires_at"].startswith("2026-12-31T23:59:59")  # 30 days after --as-of (end of 2026-12-01)
    with CRM.open(crm_db_url, plugins=["access"]) as crm, crm.engine.connect() as conn:
        stored = conn.execute(tables.api_tokens.select()).mappings().one()
        assert stored["token_hash"] == token_hash(secret) and secret not in str(dict(stored))
        assert crm.tokens.authenticate(secret) == "rita"
    listed = ok(run("--as", "ann", "token", "list"))
    assert secret[:12] in listed and secret not in listed


def test_users_manage_their_own_tokens_only(run) -> None:
    ok(run("--as", "rita", "token", "create", "--user", "rita", "--name", "mine"))
    refused = run("--as", "rita", "token", "create", "--user", "ann", "--name", "theirs")
    assert refused.exit_code == 1 and "may not token.create" in refused.output and "Traceback" not in refused.output
    assert run("--as", "rita", "token", "list").exit_code == 1  # every user's tokens: admin only
    assert "mine" in ok(run("--as", "rita", "token", "list", "--user", "rita"))


def test_revoke_and_expiry_stop_a_token(run, crm_db_url) -> None:
    first = json.loads(ok(run("--as", "ann", "--json", "token", "create", "--user", "rita", "--name", "a")))
    ok(run("--as", "ann", "token", "revoke", str(first["id"])))
    again = run("--as", "ann", "token", "revoke", str(first["id"]))
    assert again.exit_code == 1 and "was revoked" in again.output
    assert "a" not in [t["name"] for t in json.loads(ok(run("--as", "ann", "--json", "token", "list")))]
    assert json.loads(ok(run("--as", "ann", "--json", "token", "list", "--all")))[0]["state"] == "revoked"
    with CRM.open(crm_db_url, plugins=["access"]) as crm:
        with pytest.raises(InvalidToken, match="revoked"):
            crm.tokens.authenticate(first["token"])
        soon = datetime.now(timezone.utc) + timedelta(seconds=1)
        _, secret = crm.as_user("ann").tokens.create("rita", "short", soon)
        assert crm.tokens.authenticate(secret) == "rita"
        crm.clock = lambda: soon + timedelta(seconds=1)
        with pytest.raises(InvalidToken, match="expired"):
            crm.tokens.authenticate(secret)
        crm.clock = lambda: datetime.now(timezone.utc)
        _, other = crm.tokens.create("rita", "other")
        crm.users.deactivate("rita")
        with pytest.raises(InvalidToken, match="deactivated"):
            crm.tokens.authenticate(other)


def test_bad_input_is_one_line(run) -> None:
    for args, needle in ((("--expires", "soonish"), "--expires"), (("--expires", "2020-01-01"), "not in the future"),
                         (("--name", ""), "name")):
        base = ["--as", "ann", "token", "create", "--user", "rita"]
        if args[0] != "--name":
            base += ["--name", "n"]
        result = run(*base, *args)
        assert result.exit_code in (1, 2) and needle in result.output and "Traceback" not in result.output
    unknown = run("--as", "ann", "token", "create", "--user", "nobody", "--name", "n")
    assert unknown.exit_code == 1 and "nobody" in unknown.output
    assert run("--as", "ann", "token", "revoke", "999").exit_code == 1
