"""``crm loyalty ...`` end to end through click, on every test database, with a
crm.toml that configures several schemes side by side."""

from __future__ import annotations

import json
from datetime import date, timedelta

import pytest
from click.testing import CliRunner
from sqlalchemy import create_engine, text

from crmcore.cli import cli
from crmcore.store import normalize_url

CRM_TOML = """
plugins = ["loyalty"]

[loyalty.points]
expiry_days = 30
tier_scheme = "none"

[loyalty.tiers]
grace_days = 0

[loyalty.birthday]
bonus = 50

[[loyalty.rewards.catalogue]]
name = "mug"
cost = 100
stock = 1

[[loyalty.rewards.catalogue]]
name = "tote"
cost = 5000
"""


@pytest.fixture
def run(crm_db_url, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for var in ("CRM_PLUGINS", "CRM_DATABASE_URL", "CRM_PLUGINS_DIR", "CRM_PLUGINS_BLOCK", "CRM_USER"):
        monkeypatch.delenv(var, raising=False)
    (tmp_path / "crm.toml").write_text(CRM_TOML)
    runner = CliRunner()

    def invoke(*args: str):
        return runner.invoke(cli, ["--db", crm_db_url, *args], catch_exceptions=False)
    invoke.url = crm_db_url
    return invoke


def ok(result) -> str:
    assert result.exit_code == 0, result.output
    return result.output


def as_json(result):
    return json.loads(ok(result))


def refused(result, message: str) -> None:
    assert result.exit_code == 1, result.output
    assert message in result.output and "Traceback" not in result.output, result.output


def test_loyalty_commands(run, monkeypatch):
    # The command line runs on the real clock: dates are relative to today.
    today = date.today()
    yesterday, later = (today - timedelta(days=1)).isoformat(), (today + timedelta(days=35)).isoformat()
    ok(run("customer", "add", "--name", "Ann", "--external-id", "ann", "--birthday", f"1990-{today:%m-%d}"))
    ok(run("customer", "add", "--name", "Ben", "--external-id", "ben"))
    schemes = {s["name"] for s in as_json(run("--json", "loyalty", "schemes"))}
    assert schemes == {"points", "tiers", "birthday", "referral", "rewards"}
    ok(run("loyalty", "refer", "ben", "--by", "ann"))
    refused(run("loyalty", "refer", "ann", "--by", "ben"), "referral loop")
    ok(run("deal", "add", "--customer", "ann", "--title", "a", "--amount", "1200", "--stage", "won",
           "--closed-at", f"{yesterday}T09:00:00"))
    ok(run("deal", "add", "--customer", "ben", "--title", "b", "--amount", "300", "--stage", "won",
           "--closed-at", f"{yesterday}T10:00:00"))

    status = as_json(run("--json", "loyalty", "balance", "ann"))["schemes"]
    assert status["points"]["balance"] == 1200 + 500           # the deal and the referrer bonus
    assert status["points"]["expiring"] == {(today + timedelta(days=29)).isoformat(): 1200,
                                            (today + timedelta(days=364)).isoformat(): 500}
    assert status["tiers"]["tier"] == "Silver" and status["tiers"]["next_tier"] == "Gold"
    assert as_json(run("--json", "loyalty", "run")) == [
        {"scheme": s, "changes": n} for s, n in
        [("birthday", 1), ("points", 0), ("referral", 0), ("rewards", 0), ("tiers", 0)]]
    assert as_json(run("--json", "loyalty", "run", "--scheme", "birthday")) == [
        {"scheme": "birthday", "changes": 0}]

    issued = as_json(run("--json", "loyalty", "redeem", "ann", "mug"))
    assert issued["reward"] == "mug" and len(issued["code"]) == 14
    refused(run("loyalty", "redeem", "ben", "mug"), "'mug' is out of stock")
    refused(run("loyalty", "redeem", "ann", "cup"), "unknown reward 'cup' (known: mug, tote)")
    refused(run("loyalty", "redeem", "ann", "tote"), "cannot redeem 5000")
    refused(run("loyalty", "redeem", "ann", "999999"), "cannot redeem 999999")
    assert run("loyalty", "adjust", "ann", "1.5", "--reason", "x").exit_code == 2   # not a whole number
    refused(run("loyalty", "adjust", "ann", "0", "--reason", "x"), "non-zero whole number")
    refused(run("loyalty", "adjust", "ben", "-100000", "--reason", "x"), "cannot redeem 100000")
    # --by once recorded any name unchecked; it is now an alias of --as: an unknown user cannot act.
    refused(run("loyalty", "adjust", "ann", "-10", "--reason", "typo", "--by", "alice"), "'alice'")
    ok(run("user", "add", "alice"))
    monkeypatch.setenv("CRM_USER", "alice")  # the CRM has users now: every command says who acts
    adjusted = as_json(run("--json", "--as", "alice", "loyalty", "adjust", "ann", "-10", "--reason", "typo"))
    assert (adjusted["points"], adjusted["actor"], adjusted["kind"]) == (-10, "alice", "adjust")

    history = as_json(run("--json", "loyalty", "history", "ann", "--scheme", "points"))
    assert [(e["kind"], e["points"]) for e in history] == [
        ("earn", 1200), ("bonus", 500), ("bonus", 50), ("redeem", -100), ("adjust", -10)]
    rewards = {r["name"]: r["left"] for r in as_json(run("--json", "loyalty", "rewards"))}
    assert rewards == {"mug": 0, "tote": None}

    assert as_json(run("--json", "loyalty", "expire")) == {"expired_entries": 0}
    assert as_json(run("--json", "loyalty", "expire", "--as-of", later)) == {"expired_entries": 2}  # both deals
    assert as_json(run("--json", "loyalty", "expire", "--as-of", later)) == {"expired_entries": 0}
    ann = as_json(run("--json", "loyalty", "balance", "ann"))["schemes"]["points"]
    assert ann["balance"] == 500 + 50                          # FIFO: the redeem and adjust took the deal's batch

    tiers = as_json(run("--json", "loyalty", "tiers", "--scheme", "tiers"))
    assert tiers == [{"scheme": "tiers", "tier": "Bronze", "members": 1},
                     {"scheme": "tiers", "tier": "Silver", "members": 1}]
    assert "no drift" in ok(run("loyalty", "recompute"))
    aliased = ok(run("--json", "loyalty", "adjust", "ann", "5", "--reason", "alias", "--by", "alice"))
    assert "deprecated" in aliased and '"actor": "alice"' in aliased


def test_recompute_reports_and_fixes_drift(run):
    ok(run("customer", "add", "--name", "Ann", "--external-id", "ann"))
    ok(run("loyalty", "adjust", "ann", "100", "--reason", "start"))
    engine = create_engine(normalize_url(run.url))
    with engine.begin() as conn:  # damage the derived balance behind the CRM's back
        conn.execute(text("UPDATE loyalty_accounts SET balance = 70 WHERE scheme = 'points'"))
    engine.dispose()
    result = run("--json", "loyalty", "recompute")
    assert result.exit_code == 1 and "rerun with --fix" in result.output
    assert '"stored": 70' in result.output and '"ledger": 100' in result.output
    ok(run("loyalty", "recompute", "--fix"))
    assert "no drift" in ok(run("loyalty", "recompute"))
    assert as_json(run("--json", "loyalty", "balance", "ann"))["schemes"]["points"]["balance"] == 100


def test_earn_job_from_the_command_line(run):
    ok(run("--no-plugins", "customer", "add", "--name", "Ann", "--external-id", "ann"))
    for amount in ("10", "20.5"):
        ok(run("--no-plugins", "deal", "add", "--customer", "ann", "--title", "t", "--amount", amount,
               "--stage", "won"))
    assert as_json(run("--json", "loyalty", "earn", "--scheme", "points")) == [{"scheme": "points", "entries": 2}]
    assert as_json(run("--json", "loyalty", "earn", "--scheme", "points")) == [{"scheme": "points", "entries": 0}]
    assert as_json(run("--json", "loyalty", "balance", "ann"))["schemes"]["points"]["balance"] == 30
