"""Every command asks ``authorize`` before it acts (issue 15, point 3).

A census: under a deny-all policy (a single-file plugin from ``--plugins-dir``) every
command crmcore and its first-party plugins register, run with arguments that would
otherwise succeed, must exit non-zero with the one-line ``NotAuthorized`` message and
leave every table's row count unchanged.  It enumerates the commands, so a new command
without a check fails here.  An allow-all run proves the hook hears the ``--as`` user.

Runs on every database crm_db_url offers (SQLite always; PostgreSQL and MariaDB when
their URLs are set).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import sqlalchemy as sa
from click.testing import CliRunner

from crmcore.cli import cli, load_plugin_commands
from crmcore.store.engine import make_engine

PLUGINS = "segments,loyalty,notify,reports,access"
CONFIG = """\
[channels.file]
path = "outbox.jsonl"

[notify]
unsubscribe_secret = "test-only-secret"
unsubscribe_url = "https://crm.example/u?t={token}"
"""


# The policy plugin: deny everything, or allow everything and record who asked for what.
POLICY = '''\
import json, os
from crmcore import hookimpl

@hookimpl
def authorize(actor, action, resource, crm):
    if os.environ.get("CRM_TEST_POLICY") == "deny":
        return False
    with open(os.environ["CRM_TEST_ASKED"], "a", encoding="utf-8") as out:
        out.write(json.dumps([actor, action]) + "\\n")
    return True
'''

# Commands that need no authorization, and why.
NO_AUTHORIZATION = {
    ("plugin", "new"): "writes a plugin skeleton to disk; touches no CRM data",
    ("init",): "writes a crm.toml and an empty database for a new CRM; there is no policy before it",
    ("demo",): "builds a throw-away demo database of its own (--db), before any policy applies",
    ("privacy", "new-key"): "prints a random key; reads and writes no CRM data",
}

ACTOR = "li.wei"


def arguments(tmp_path: Path, ids: dict[str, str]) -> dict[tuple[str, ...], list[str]]:
    """Arguments that make each command succeed on the seeded database (absent: none)."""
    ann, ben, won, open_deal = ids["ann"], ids["ben"], ids["won"], ids["open"]
    return {
        ("audit", "log"): [],
        ("customer", "add"): ["--name", "Eve"],
        ("customer", "show"): [ann],
        ("customer", "search"): ["Ann"],
        ("customer", "update"): [ann, "--city", "上海"],
        ("customer", "consent"): [ann],
        ("customer", "unsubscribe"): [ben, "--channel", "console"],
        ("customer", "resubscribe"): [ben, "--channel", "console"],
        ("customer", "delete"): [ben],
        ("customer", "restore"): [ids["archived_customer"]],
        ("customer", "merge"): [ann, ben],
        ("customer", "unmerge"): ["1"],
        ("contact", "add"): ["--customer", "ann", "--name", "Finn"],
        ("contact", "show"): [ids["contact"]],
        ("contact", "update"): [ids["contact"], "--title", "CTO"],
        ("contact", "delete"): [ids["contact"], "--yes"],
        ("interaction", "add"): ["--customer", "ann", "--kind", "email"],
        ("interaction", "log"): ["--customer", "ann", "--kind", "visit"],
        ("interaction", "show"): [ids["interaction"]],
        ("interaction", "update"): [ids["interaction"], "--subject", "later"],
        ("interaction", "delete"): [ids["interaction"], "--yes"],
        ("deal", "add"): ["--customer", "ben", "--title", "x", "--amount", "5", "--stage", "lead"],
        ("deal", "show"): [won],
        ("deal", "update"): [open_deal, "--title", "CRM+"],
        ("deal", "move"): [open_deal, "negotiation"],
        ("task", "add"): ["--customer", "ann", "--title", "x"],
        ("task", "show"): [ids["task"]],
        ("task", "update"): [ids["task"], "--title", "later"],
        ("task", "done"): [ids["task"]],
        ("task", "cancel"): [ids["task"]],
        ("task", "delete"): [ids["task"], "--yes"],
        ("task", "remind"): ["--channel", "file"],
        ("deal", "delete"): [open_deal],
        ("deal", "restore"): [ids["archived_deal"]],
        ("segment", "run"): ["geo"],
        ("segment", "members"): ["value-tier"],
        ("segment", "export"): ["value-tier", "--output", str(tmp_path / "members.csv")],
        ("segment", "diff"): [ids["run1"], ids["run2"]],
        ("segment", "explain"): ["value-tier", "ann"],
        ("loyalty", "balance"): ["ann"],
        ("loyalty", "history"): ["ann"],
        ("loyalty", "redeem"): ["ann", "100"],
        ("loyalty", "adjust"): ["ann", "5", "--reason", "test"],
        ("loyalty", "refer"): ["ben", "--by", "ann"],
        ("loyalty", "recompute"): ["--fix"],
        ("notify", "send"): ["--channel", "file", "--customer", "ann", "--subject", "hi", "--body", "b"],
        ("notify", "worker"): ["--max-rounds", "1", "--poll", "0.01"],
        ("notify", "preview"): ["thank-you", "ann", "--deal", won],
        ("notify", "campaign"): ["win-back", "--segment", "A", "--strategy", "value-tier"],
        ("notify", "unsubscribe-url"): ["ann"],
        ("notify", "unsubscribe"): [ids["token"]],
        ("report", "run"): ["pipeline"],
        ("report", "dashboard"): ["--output", str(tmp_path / "dash"), "--format", "json"],
        ("import",): ["customers", str(tmp_path / "people.csv")],
        ("export",): ["customers"],
        ("user", "add"): ["mia", "--name", "Mia"],
        ("user", "show"): [ACTOR],
        ("user", "set-role"): ["bo", "service-agent"],
        ("user", "set-password"): ["bo", "--password-stdin"],
        ("token", "create"): ["--user", "bo", "--name", "t"],
        ("token", "revoke"): ["1"],
        ("role", "show"): ["sales-rep"],
        ("user", "deactivate"): ["bo"],
        ("user", "assign-region"): ["bo", "north"],
        ("user", "unassign-region"): ["bo", "east"],
        ("team", "add"): ["west"],
        ("team", "show"): ["east"],
        ("team", "add-member"): ["east", ACTOR],
        ("team", "remove-member"): ["east", "bo"],
        ("team", "assign-region"): ["east", "north"],
        ("team", "unassign-region"): ["east", "east"],
        ("customer", "export-data"): [ann, "--output", str(tmp_path / "subject.json")],
        ("customer", "erase"): [ben, "--reason", "test", "--yes"],
        ("db", "backup"): [str(tmp_path / "crm.backup")],
        ("db", "restore"): [str(tmp_path / "crm.backup"), "--yes"],
        ("privacy", "apply-retention"): [],
        ("privacy", "rotate-key"): [],
        ("jobs", "show"): ["1"],
        ("scheduler",): ["--once"],
        ("worker",): ["--broker", "redis://127.0.0.1:1/0"],
    }


@pytest.fixture
def census(crm_db_url, tmp_path, monkeypatch):
    """(invoke(policy, *args) -> Result, row_counts() -> dict, ids) on a seeded database."""
    monkeypatch.chdir(tmp_path)
    for var in ("CRM_PLUGINS", "CRM_DATABASE_URL", "CRM_PLUGINS_DIR", "CRM_PLUGINS_BLOCK", "CRM_CONFIG",
                "CRM_USER", "TTY_COMPATIBLE", "FORCE_COLOR", "COLUMNS"):
        monkeypatch.delenv(var, raising=False)
    (tmp_path / "crm.toml").write_text(CONFIG, encoding="utf-8")
    (tmp_path / "policy").mkdir()
    (tmp_path / "policy" / "policy.py").write_text(POLICY, encoding="utf-8")
    asked = tmp_path / "asked.jsonl"
    load_plugin_commands(["--plugins", PLUGINS])

    def invoke(policy: str | None, *args: str):
        extra = ["--plugins-dir", str(tmp_path / "policy")] if policy else []
        env = {"CRM_TEST_POLICY": policy or "", "CRM_TEST_ASKED": str(asked)}
        return CliRunner().invoke(cli, ["--db", crm_db_url, "--plugins", PLUGINS, *extra, *args], env=env)

    def ok(*args: str) -> dict:
        result = invoke(None, "--json", "--as-of", "2026-06-30", *args)
        assert result.exit_code == 0, (args, result.output)
        return json.loads(result.stdout) if result.stdout.strip().startswith("{") else {}

    ids: dict[str, str] = {}
    for name in ("ann", "ben"):
        ids[name] = str(ok("customer", "add", "--name", name.title(), "--email", f"{name}@example.com",
                           "--external-id", name, "--consent-marketing")["id"])
    ok("contact", "add", "--customer", "ann", "--name", "Ann's assistant")
    ids["contact"] = str(ok("contact", "add", "--customer", "ben", "--name", "Cleo")["id"])
    ids["interaction"] = str(ok("interaction", "log", "--customer", "ben", "--kind", "note")["id"])
    ids["task"] = str(ok("task", "add", "--customer", "ben", "--title", "call back", "--due", "today")["id"])
    ids["won"] = str(ok("deal", "add", "--customer", "ann", "--title", "ERP", "--amount", "24000", "--stage",
                        "won", "--closed-at", "2026-06-02T10:00:00+00:00")["id"])
    ids["open"] = str(ok("deal", "add", "--customer", "ben", "--title", "CRM", "--amount", "10",
                         "--stage", "proposal")["id"])
    # Archived ones, so that restore would succeed without the policy.
    ids["archived_customer"] = str(ok("customer", "add", "--name", "Gone")["id"])
    ok("customer", "delete", ids["archived_customer"])
    ids["archived_deal"] = str(ok("deal", "add", "--customer", "ann", "--title", "Old", "--amount", "1",
                                  "--stage", "lead")["id"])
    ok("deal", "delete", ids["archived_deal"])
    ids["run1"] = str(ok("segment", "run", "value-tier")["id"])
    ids["run2"] = str(ok("segment", "run", "value-tier")["id"])
    ok("notify", "send", "--channel", "file", "--customer", "ann", "--subject", "hi", "--body", "b")
    ids["token"] = ok("notify", "unsubscribe-url", "ben")["url"].split("t=", 1)[1]
    (tmp_path / "people.csv").write_text("name,email\nDee,dee@example.com\n", encoding="utf-8")
    # Users last: from here on every command must say who acts (--as).
    # The access plugin polices too: the actor is an admin, so only the deny-all policy refuses.
    ok("user", "add", ACTOR, "--name", ACTOR, "--role", "admin")
    ok("--as", ACTOR, "user", "add", "bo", "--name", "bo", "--role", "sales-rep")
    ok("--as", ACTOR, "team", "add", "east")
    ok("--as", ACTOR, "team", "add-member", "east", "bo")
    ok("--as", ACTOR, "team", "assign-region", "east", "east")
    ok("--as", ACTOR, "user", "assign-region", "bo", "east")

    engine = make_engine(crm_db_url)

    def row_counts() -> dict[str, int]:
        with engine.connect() as conn:
            tables = sa.inspect(conn).get_table_names()
            return {t: conn.execute(sa.select(sa.func.count()).select_from(sa.table(t))).scalar_one()
                    for t in tables}

    yield invoke, row_counts, ids, asked
    engine.dispose()


def test_every_command_is_refused_by_a_deny_all_policy_and_writes_nothing(census, tmp_path, command_paths) -> None:
    invoke, row_counts, ids, _ = census
    table = arguments(tmp_path, ids)
    every = set(command_paths(cli))
    assert set(table) - every == set(), "arguments for a command that no longer exists"
    before = row_counts()
    acted = []
    for path in sorted(every - set(NO_AUTHORIZATION)):
        result = invoke("deny", "--as", ACTOR, "--as-of", "2026-06-30", *path, *table.get(path, []))
        refused = (result.exit_code == 1 and f"user '{ACTOR}' may not " in result.output
                   and "Traceback" not in result.output)
        if not refused:
            acted.append((" ".join(path), result.exit_code, result.output[-300:]))
    assert acted == [], "commands that ran under a deny-all policy:\n" + "\n".join(map(str, acted))
    assert row_counts() == before
    assert not (tmp_path / "members.csv").exists() and not (tmp_path / "dash").exists()


def test_the_hook_hears_the_as_user_not_none(census) -> None:
    invoke, _, ids, asked = census
    for args in (("customer", "show", ids["ann"]), ("segment", "members", "value-tier"),
                 ("loyalty", "adjust", "ann", "5", "--reason", "goodwill"), ("plugins", "list")):
        result = invoke("allow", "--as", ACTOR, *args)
        assert result.exit_code == 0, (args, result.output)
    heard = [tuple(json.loads(line)) for line in asked.read_text(encoding="utf-8").splitlines()]
    assert {actor for actor, _ in heard} == {ACTOR}
    assert {"customer.read", "segment.members", "loyalty.adjust", "plugins.list"} <= {a for _, a in heard}


def test_nobody_named_is_the_system_user_not_none(crm_factory) -> None:
    """Python code that names nobody acts as ``system``; the hook never sees None."""
    from crmcore import hookimpl

    seen: list[object] = []

    class Policy:
        @hookimpl
        def authorize(self, actor: object, action: str, resource: object) -> None:
            seen.append(actor)

    crm = crm_factory(extra_plugins=[Policy()])
    crm.customers.add(name="Ann")
    assert seen and set(seen) == {"system"}
