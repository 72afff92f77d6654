"""``crm user``, ``crm team`` and ``crm audit`` (issue 15, points 1, 2 and 5) on every database."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner
from sqlalchemy import update

from crmcore.cli import cli
from crmcore.store import tables
from crmcore.store.engine import make_engine


@pytest.fixture
def run(crm_db_url, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for var in ("CRM_PLUGINS", "CRM_DATABASE_URL", "CRM_PLUGINS_DIR", "CRM_PLUGINS_BLOCK", "CRM_USER"):
        monkeypatch.delenv(var, raising=False)

    def invoke(*args: str):
        return CliRunner().invoke(cli, ["--db", crm_db_url, "--no-plugins", *args])
    return invoke


def ok(result) -> str:
    assert result.exit_code == 0, result.output
    return result.output


def one_line_error(result, *needles: str) -> str:
    assert result.exit_code == 1 and "Traceback" not in result.output, result.output
    errors = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and all(n in errors[0] for n in needles), result.output
    return errors[0]


def test_user_commands(run) -> None:
    assert ok(run("user", "add", "li.wei", "--name", "李伟", "--email", "li@example.com", "--locale", "zh-CN",
                  "--time-zone", "Asia/Shanghai")).strip() == "user li.wei added"
    ok(run("--as", "li.wei", "user", "add", "bob"))
    shown = json.loads(ok(run("--as", "li.wei", "--json", "user", "show", "li.wei")))
    assert shown == {"login": "li.wei", "display_name": "李伟", "email": "li@example.com", "active": True,
                     "locale": "zh-CN", "time_zone": "Asia/Shanghai", "source": "added", "regions": [], "teams": [],
                     "role": None}
    assert ok(run("--as", "li.wei", "user", "deactivate", "bob")).strip() == "user bob deactivated"
    listed = json.loads(ok(run("--as", "li.wei", "--json", "user", "list")))
    assert [(u["login"], u["active"]) for u in listed] == [("bob", False), ("li.wei", True)]
    assert [u["login"] for u in json.loads(ok(run("--as", "li.wei", "--json", "user", "list", "--active")))] == [
        "li.wei"]
    one_line_error(run("--as", "li.wei", "user", "add", "bad login"), "login")
    one_line_error(run("--as", "li.wei", "user", "show", "ghost"), "user 'ghost' not found")
    one_line_error(run("--as", "bob", "customer", "list"), "'bob' is deactivated")


def test_team_and_territory_commands(run) -> None:
    ok(run("user", "add", "wang"))
    ok(run("--as", "wang", "user", "add", "li"))
    assert ok(run("--as", "wang", "team", "add", "华东", "--manager", "wang")).strip() == "team 华东 added"
    ok(run("--as", "wang", "team", "add-member", "华东", "li"))
    ok(run("--as", "wang", "team", "assign-region", "华东", "上海"))
    ok(run("--as", "wang", "user", "assign-region", "li", "江苏"))
    team = json.loads(ok(run("--as", "wang", "--json", "team", "show", "华东")))
    assert team == {"name": "华东", "manager": "wang", "members": ["li"], "regions": ["上海"]}
    li = json.loads(ok(run("--as", "wang", "--json", "user", "show", "li")))
    assert (li["teams"], li["regions"]) == (["华东"], ["江苏"])
    ok(run("--as", "wang", "team", "remove-member", "华东", "li"))
    ok(run("--as", "wang", "team", "unassign-region", "华东", "上海"))
    listed = json.loads(ok(run("--as", "wang", "--json", "team", "list")))
    assert listed == [{"name": "华东", "manager": "wang", "members": [], "regions": []}]
    one_line_error(run("--as", "wang", "team", "add-member", "nope", "li"), "team 'nope' not found")


def test_audit_log_filters_and_verify_detects_tampering(run, crm_db_url) -> None:
    ok(run("customer", "add", "--name", "first"))
    ok(run("user", "add", "li"))
    ok(run("--as", "li", "customer", "add", "--name", "second"))
    ok(run("--as", "li", "contact", "add", "--customer", "1", "--name", "c"))
    everything = json.loads(ok(run("--as", "li", "--json", "audit", "log")))
    assert [(r["actor"], r["action"]) for r in everything] == [
        ("system", "customer.create"), ("system", "user.add"), ("li", "customer.create"), ("li", "contact.create")]
    assert everything[0]["changes"]["name"] == [None, "first"]
    by_li = json.loads(ok(run("--as", "li", "--json", "audit", "log", "--user", "li")))
    assert [r["action"] for r in by_li] == ["customer.create", "contact.create"]
    about_1 = json.loads(ok(run("--as", "li", "--json", "audit", "log", "--customer", "1")))
    assert [r["action"] for r in about_1] == ["customer.create", "contact.create"]
    assert json.loads(ok(run("--as", "li", "--json", "audit", "log", "--since", "2999-01-01"))) == []
    assert len(json.loads(ok(run("--as", "li", "--json", "audit", "log", "--since", "2000-01-01")))) == 4
    one_line_error(run("--as", "li", "audit", "log", "--since", "yesterday-ish"), "yesterday-ish")
    assert ok(run("--as", "li", "audit", "verify")).startswith("audit trail intact: 4 records, head ")
    engine = make_engine(crm_db_url)
    with engine.begin() as conn:
        conn.execute(update(tables.audit_log).where(tables.audit_log.c.seq == 3).values(changes={"name": "x"}))
    engine.dispose()
    one_line_error(run("--as", "li", "audit", "verify"), "audit trail broken", "record 3", "edited")
