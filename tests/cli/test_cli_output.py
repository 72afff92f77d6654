"""Command-line output for people and for scripts (issue 13, points 16-19).

16: under ``--json`` a command about one thing prints an object, a listing an array;
17: long commands draw progress on a terminal's stderr, and nothing else changes;
18: terminal tables never cut numbers, right-align them with separators, and show times
    to the second in the configured zone; ``deal list`` names the customer;
19: ``customer show`` has contacts, interactions, deals and points, and no output has a
    Python repr.

Runs on every database crm_db_url offers (SQLite always; PostgreSQL and MariaDB when
their URLs are set).
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import threading
from datetime import datetime, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from rich.console import Console

from crmcore.cli import cli, load_plugin_commands
from crmcore.cli.context import Session
from crmcore.reports import Column, ReportResult, render_table

PLUGINS = "segments,loyalty,notify,reports,access"
CONFIG = """\
timezone = "Asia/Shanghai"

[channels.file]
path = "outbox.jsonl"

[notify]
unsubscribe_secret = "test-only-secret"
unsubscribe_url = "https://crm.example/u?t={token}"
"""
# What no output may contain: Python reprs and the doubled unit of issue 13.19.
REPRS = ("datetime.datetime(", "datetime.date(", "Decimal(", "points points", "<crmcore.", "{'")


@pytest.fixture
def run(crm_db_url, tmp_path, monkeypatch):
    """run(*args, env=None) -> click Result, on the test database, from a directory holding CONFIG."""
    monkeypatch.chdir(tmp_path)
    for var in ("CRM_PLUGINS", "CRM_DATABASE_URL", "CRM_PLUGINS_DIR", "CRM_PLUGINS_BLOCK", "CRM_CONFIG",
                "TTY_COMPATIBLE", "FORCE_COLOR", "COLUMNS"):
        monkeypatch.delenv(var, raising=False)
    (tmp_path / "crm.toml").write_text(CONFIG, encoding="utf-8")
    load_plugin_commands(["--plugins", PLUGINS])

    def invoke(*args: str, env: dict[str, str] | None = None, input: str | None = None):
        result = CliRunner().invoke(cli, ["--db", crm_db_url, "--plugins", PLUGINS, *args], env=env, input=input)
        assert result.exit_code == 0, (args, result.output, result.exception)
        return result
    return invoke


def as_json(result) -> Any:
    return json.loads(result.stdout)


def seed(run) -> dict[str, Any]:
    """Two customers with a contact, an interaction, a won and an open deal, points and a segment run."""
    ann = as_json(run("--json", "customer", "add", "--name", "Ann", "--email", "ann@example.com", "--external-id",
                      "ann", "--consent-marketing"))
    ben = as_json(run("--json", "customer", "add", "--name", "Ben", "--email", "ben@example.com", "--external-id",
                      "ben"))
    run("contact", "add", "--customer", "ann", "--name", "Ann's assistant", "--title", "PA")
    run("interaction", "add", "--customer", "ann", "--kind", "call", "--subject", "renewal",
        "--occurred-at", "2026-06-01T04:05:06.123456+00:00")
    won = as_json(run("--json", "deal", "add", "--customer", "ann", "--title", "ERP", "--amount", "24000",
                      "--currency", "CNY", "--stage", "won", "--closed-at", "2026-06-02T10:00:00+00:00"))
    open_deal = as_json(run("--json", "deal", "add", "--customer", "ben", "--title", "CRM", "--amount",
                            "1234567.5", "--currency", "CNY", "--stage", "proposal"))
    run("--as-of", "2026-06-30", "segment", "run", "value-tier")
    return {"ann": ann["id"], "ben": ben["id"], "won": won["id"], "open": open_deal["id"]}


# -- 16: one JSON shape per kind of command ----------------------------------------------------------

# Commands whose --json output is not one JSON document, and why.
NOT_JSON = {
    ("demo",): "prints its summary (the README's first command); tested by test_demo_small",
    ("plugin", "new"): "writes a plugin package to disk and says where",
    ("segment", "export"): "writes the file format --format names (CSV or JSON Lines), like `crm export`",
    ("serve",): "runs the HTTP API until stopped (its JSON is the API's: tests/web)",
    ("worker",): "runs background jobs until stopped: tests/jobs",
    ("user", "set-password"): "reads the password from a prompt or stdin: tests/cli/test_cli_passwords.py",
    ("privacy", "rotate-key"): "needs [privacy.encryption] and a key: tests/privacy/test_privacy_encryption.py",
}


def test_every_command_prints_one_json_shape(run, tmp_path, command_paths) -> None:
    """A command about one thing (show, add, update, move, delete, one action's result) prints an
    object; a listing (list, search, history, members, runs, one row per scheme) an array."""
    ids = seed(run)
    ann, ben, won, open_deal = str(ids["ann"]), str(ids["ben"]), str(ids["won"]), str(ids["open"])
    contact = str(as_json(run("--json", "contact", "add", "--customer", "ben", "--name", "Cleo"))["id"])
    interaction = str(as_json(run("--json", "interaction", "log", "--customer", "ben", "--kind", "note"))["id"])
    task = str(as_json(run("--json", "task", "add", "--customer", "ben", "--title", "call back"))["id"])
    other_task = str(as_json(run("--json", "task", "add", "--customer", "ann", "--title", "visit"))["id"])
    (tmp_path / "people.csv").write_text("name,email\nDee,dee@example.com\n", encoding="utf-8")
    url = as_json(run("--json", "notify", "unsubscribe-url", "ben"))["url"]
    runs = [str(as_json(run("--json", "--as-of", "2026-06-30", "segment", "run", "value-tier"))["id"])]
    runs.append(str(as_json(run("--json", "segment", "run", "value-tier"))["id"]))
    OBJECT, ARRAY = dict, list
    expected: dict[tuple[str, ...], tuple[type, list[str]]] = {
        ("init",): (OBJECT, []),
        ("config", "show"): (OBJECT, []),
        ("db", "upgrade"): (ARRAY, []),
        ("db", "current"): (ARRAY, []),
        ("db", "history"): (ARRAY, []),
        ("plugins", "list"): (ARRAY, []),
        ("customer", "add"): (OBJECT, ["--name", "Eve"]),
        ("customer", "show"): (OBJECT, [ann]),
        ("customer", "list"): (ARRAY, []),
        ("customer", "search"): (ARRAY, ["Ann"]),
        ("customer", "update"): (OBJECT, [ann, "--city", "上海"]),
        ("customer", "consent"): (ARRAY, [ann]),
        ("customer", "unsubscribe"): (OBJECT, [ben, "--channel", "console"]),
        ("customer", "resubscribe"): (OBJECT, [ben, "--channel", "console"]),
        ("contact", "add"): (OBJECT, ["--customer", "ann", "--name", "Finn"]),
        ("contact", "show"): (OBJECT, [contact]),
        ("contact", "list"): (ARRAY, []),
        ("contact", "update"): (OBJECT, [contact, "--title", "CTO"]),
        ("interaction", "add"): (OBJECT, ["--customer", "ann", "--kind", "email"]),
        ("interaction", "log"): (OBJECT, ["--customer", "ann", "--kind", "visit"]),
        ("interaction", "show"): (OBJECT, [interaction]),
        ("interaction", "list"): (ARRAY, []),
        ("interaction", "update"): (OBJECT, [interaction, "--subject", "later"]),
        ("deal", "add"): (OBJECT, ["--customer", "ben", "--title", "x", "--amount", "5", "--stage", "lead"]),
        ("deal", "show"): (OBJECT, [won]),
        ("deal", "list"): (ARRAY, []),
        ("deal", "update"): (OBJECT, [open_deal, "--title", "CRM+"]),
        ("deal", "move"): (OBJECT, [open_deal, "negotiation"]),
        ("task", "add"): (OBJECT, ["--customer", "ann", "--title", "x", "--due", "+1d"]),
        ("task", "show"): (OBJECT, [task]),
        ("task", "list"): (ARRAY, ["--status", "all"]),
        ("task", "update"): (OBJECT, [task, "--title", "call back later"]),
        ("task", "done"): (OBJECT, [task]),
        ("task", "cancel"): (OBJECT, [other_task]),
        ("task", "delete"): (OBJECT, [task, "--yes"]),
        ("task", "remind"): (OBJECT, ["--channel", "file"]),
        ("segment", "strategies"): (ARRAY, []),
        ("segment", "run"): (OBJECT, ["geo"]),
        ("segment", "runs"): (ARRAY, []),
        ("segment", "members"): (ARRAY, ["value-tier"]),
        ("segment", "diff"): (ARRAY, runs),
        ("segment", "explain"): (OBJECT, ["value-tier", "ann"]),
        ("loyalty", "schemes"): (ARRAY, []),
        ("loyalty", "balance"): (OBJECT, ["ann"]),
        ("loyalty", "history"): (ARRAY, ["ann"]),
        ("loyalty", "redeem"): (OBJECT, ["ann", "100"]),
        ("loyalty", "rewards"): (ARRAY, []),
        ("loyalty", "adjust"): (OBJECT, ["ann", "5", "--reason", "test"]),
        ("loyalty", "refer"): (OBJECT, ["ben", "--by", "ann"]),
        ("loyalty", "earn"): (ARRAY, []),       # one row per scheme
        ("loyalty", "expire"): (OBJECT, []),
        ("loyalty", "run"): (ARRAY, []),        # one row per scheme
        ("loyalty", "recompute"): (ARRAY, []),  # one row per drifted record
        ("loyalty", "tiers"): (ARRAY, []),
        ("notify", "channels"): (ARRAY, []),
        ("notify", "templates"): (ARRAY, []),
        ("notify", "send"): (OBJECT, ["--channel", "file", "--customer", "ann", "--subject", "hi", "--body", "b"]),
        ("notify", "outbox"): (ARRAY, []),
        ("notify", "dispatch"): (OBJECT, []),
        ("notify", "worker"): (OBJECT, ["--max-rounds", "1", "--poll", "0.01"]),
        ("notify", "retry"): (OBJECT, []),
        ("notify", "preview"): (OBJECT, ["thank-you", "ann", "--deal", won]),
        ("notify", "campaign"): (OBJECT, ["win-back", "--segment", "A", "--strategy", "value-tier", "--dry-run"]),
        ("notify", "run-scheduled"): (OBJECT, []),
        ("notify", "unsubscribe-url"): (OBJECT, ["ann"]),
        ("notify", "unsubscribe"): (OBJECT, [url.split("t=", 1)[1]]),
        ("report", "list"): (ARRAY, []),
        ("report", "run"): (OBJECT, ["pipeline"]),
        ("report", "dashboard"): (OBJECT, ["--output", str(tmp_path / "dash"), "--format", "json"]),
        ("import",): (OBJECT, ["customers", str(tmp_path / "people.csv")]),
        ("export",): (dict, ["customers"]),  # JSON Lines: one object per line
        ("contact", "delete"): (OBJECT, [contact, "--yes"]),
        ("interaction", "delete"): (OBJECT, [interaction, "--yes"]),
        ("deal", "delete"): (OBJECT, [open_deal]),       # archives
        ("deal", "restore"): (OBJECT, [open_deal]),
        ("customer", "delete"): (OBJECT, ["Eve"]),       # archives (Eve's id, below)
        ("customer", "restore"): (OBJECT, ["Eve"]),
        ("customer", "duplicates"): (ARRAY, []),
        ("customer", "merge"): (OBJECT, [ann, "Eve"]),   # Eve into Ann (merge 1)
        ("customer", "merges"): (ARRAY, []),
        ("customer", "unmerge"): (OBJECT, ["1"]),
        ("customer", "export-data"): (OBJECT, [ann, "--output", str(tmp_path / "subject.json")]),
        ("privacy", "apply-retention"): (ARRAY, ["--dry-run"]),
        ("privacy", "new-key"): (OBJECT, []),
        ("db", "backup"): (OBJECT, [str(tmp_path / "crm.backup")]),
        ("db", "restore"): (OBJECT, [str(tmp_path / "crm.backup"), "--yes"]),
        ("customer", "erase"): (OBJECT, [ben, "--reason", "test", "--yes"]),
        ("scheduler",): (ARRAY, ["--once"]),  # the day's jobs: 1, 2, 3
        ("jobs", "list"): (ARRAY, []),
        ("jobs", "show"): (OBJECT, ["1"]),
        # Users last: once a user exists, commands need an actor (CRM_USER below).
        ("user", "add"): (OBJECT, ["li.wei", "--name", "Li Wei", "--role", "admin"]),
        ("user", "list"): (ARRAY, []),
        ("user", "show"): (OBJECT, ["li.wei"]),
        ("user", "set-role"): (OBJECT, ["li.wei", "admin"]),
        ("token", "create"): (OBJECT, ["--user", "li.wei", "--name", "shell"]),
        ("token", "list"): (ARRAY, []),
        ("token", "revoke"): (OBJECT, ["1"]),
        ("role", "list"): (ARRAY, []),
        ("role", "show"): (OBJECT, ["sales-rep"]),
        ("user", "assign-region"): (OBJECT, ["li.wei", "华东"]),
        ("user", "unassign-region"): (OBJECT, ["li.wei", "华东"]),
        ("team", "add"): (OBJECT, ["east", "--manager", "li.wei"]),
        ("team", "list"): (ARRAY, []),
        ("team", "show"): (OBJECT, ["east"]),
        ("team", "add-member"): (OBJECT, ["east", "li.wei"]),
        ("team", "remove-member"): (OBJECT, ["east", "li.wei"]),
        ("team", "assign-region"): (OBJECT, ["east", "华东"]),
        ("team", "unassign-region"): (OBJECT, ["east", "华东"]),
        ("audit", "log"): (ARRAY, []),
        ("audit", "verify"): (OBJECT, []),
        ("user", "deactivate"): (OBJECT, ["li.wei"]),
    }
    every = set(command_paths(cli))
    assert every - set(expected) - set(NOT_JSON) == set(), "classify each new command's --json shape here"
    eve, acting = None, None
    for path, (shape, args) in expected.items():
        if path in (("customer", "delete"), ("customer", "restore")):
            args = [str(eve)]  + args[1:]
        if path == ("customer", "merge"):
            args = [args[0], str(eve)]
        result = run("--json", "--as-of", "2026-06-30", *path, *args, env=acting)
        documents = ([json.loads(line) for line in result.stdout.splitlines()] if path == ("export",)
                     else [json.loads(result.stdout)])
        for document in documents:
            assert isinstance(document, shape), (path, result.stdout[:300])
        if path == ("customer", "add"):
            eve = documents[0]["id"]
        if path == ("user", "add"):
            acting = {"CRM_USER": "li.wei"}


def test_customer_show_json_has_contacts_interactions_deals_and_points(run) -> None:
    ids = seed(run)
    shown = as_json(run("--json", "--as-of", "2026-06-30", "customer", "show", str(ids["ann"])))
    assert shown["name"] == "Ann"
    assert [c["name"] for c in shown["contacts"]] == ["Ann's assistant"]
    assert [(i["kind"], i["subject"]) for i in shown["recent_interactions"]] == [("call", "renewal")]
    assert [(d["title"], d["amount"], d["stage"]) for d in shown["deals"]] == [("ERP", "24000.00", "won")]
    points = {p["scheme"]: p for p in shown["points"]}
    assert points["points"]["balance"] == 24000  # one point per unit of the won deal, from the ledger
    assert shown["segments"] == {"value-tier": "A"}


# -- 19: no Python reprs, sections in customer show --------------------------------------------------

TERMINAL = {"TTY_COMPATIBLE": "1", "COLUMNS": "100"}  # rich's switch: draw as on a 100-column terminal


def test_customer_show_for_people_has_every_section_and_no_repr(run) -> None:
    ids = seed(run)
    run("notify", "send", "--channel", "file", "--customer", "ann", "--subject", "hello", "--body", "b")
    for env in (None, TERMINAL):
        out = run("--as-of", "2026-06-30", "customer", "show", str(ids["ann"]), env=env).stdout
        for needle in ("contacts", "Ann's assistant", "recent interactions", "renewal", "deals", "ERP",
                       "points", "24,000" if env else "24000", "recent messages", "hello"):
            assert needle in out, (needle, out)
        assert not [r for r in REPRS if r in out], out


def test_no_command_of_the_tour_prints_a_python_repr(run, tmp_path) -> None:
    """Every read command of the README's tour, piped and on a terminal, on a seeded database."""
    ids = seed(run)
    run("notify", "send", "--channel", "file", "--customer", "ann", "--subject", "hi", "--body", "b")
    run("notify", "dispatch")
    tour = [
        ("customer", "list"), ("customer", "search", "Ann"), ("customer", "show", str(ids["ann"])),
        ("deal", "list"), ("deal", "show", str(ids["won"])), ("contact", "list"), ("interaction", "list"),
        ("loyalty", "balance", "ann"), ("loyalty", "history", "ann"), ("loyalty", "tiers"),
        ("segment", "runs"), ("segment", "members", "value-tier"), ("segment", "explain", "value-tier", "ann"),
        ("report", "run", "pipeline"), ("report", "run", "customer-value"), ("plugins", "list"),
        ("notify", "outbox"), ("customer", "consent", "ann"), ("config", "show"),
    ]
    for args in tour:
        for env in (None, TERMINAL):
            out = run("--as-of", "2026-06-30", *args, env=env).stdout
            found = [r for r in REPRS if r in out]
            assert not found, (args, env, found, out)


# -- 18: terminal tables ------------------------------------------------------------------------------

def terminal(width: int) -> tuple[Session, io.StringIO]:
    buffer = io.StringIO()
    session = Session(console=Console(file=buffer, width=width, force_terminal=True, color_system=None))
    session._zone = timezone.utc  # noqa: SLF001 - no configuration file needed for these
    return session, buffer


WIDE = [{f"metric_{n}": Decimal("1934567.89") + n for n in range(17)} for _ in range(3)]


@pytest.mark.parametrize("width", [80, 120, 200])
def test_a_table_too_wide_never_cuts_a_number(width) -> None:
    session, buffer = terminal(width)
    session.emit(WIDE)
    out = buffer.getvalue()
    assert "…" not in out
    for n in range(17):
        assert out.count(f"{Decimal('1934567.89') + n:,}") == 3, out  # every number, whole, with separators
    assert max(len(line) for line in out.splitlines()) <= width


@pytest.mark.parametrize("width", [80, 200])
def test_numbers_right_aligned_with_separators_times_to_the_second(width) -> None:
    session, buffer = terminal(width)
    session._zone = __import__("zoneinfo").ZoneInfo("Asia/Shanghai")  # noqa: SLF001
    at = datetime(2026, 6, 30, 4, 5, 6, 123456, tzinfo=timezone.utc)
    session.emit([{"id": 12345, "name": "Ann", "amount": Decimal("1234567.50"), "at": at},
                  {"id": 7, "name": "Ben", "amount": Decimal("5.00"), "at": at}])
    out = buffer.getvalue()
    assert "1,234,567.50" in out and "12345" in out and "12,345" not in out  # ids without separators
    assert "2026-06-30 12:05:06" in out and ".123456" not in out and "+00:00" not in out
    lines = [line for line in out.splitlines() if "Ann" in line or "Ben" in line]
    ends = {line.index("1,234,567.50") + len("1,234,567.50") for line in lines if "Ann" in line}
    assert ends == {line.index("5.00") + len("5.00") for line in lines if "Ben" in line}  # right-aligned
    assert {line.index("12345") + 5 for line in lines if "Ann" in line} == {
        line.index(" 7 ") + 2 for line in lines if "Ben" in line}


def test_report_table_never_cuts_a_number() -> None:
    """The 17-column report drawn 120 wide cut "1,9…" before; now it is drawn row by row."""
    columns = tuple(Column(f"metric_{n}", "decimal") for n in range(17))
    result = ReportResult("service quality", columns, ((Decimal("1934567.89"),) * 17,) * 2)
    for width in (80, 120, 200):
        out = render_table(result, width=width)
        assert "…" not in out
        assert out.count("1,934,567.89") == 34, out


def test_deal_list_names_the_customer(run) -> None:
    seed(run)
    piped = run("deal", "list").stdout.splitlines()
    header = piped[0].split("\t")
    assert header[:3] == ["id", "customer_id", "customer_name"]
    assert sorted(line.split("\t")[2] for line in piped[1:]) == ["Ann", "Ben"]
    assert {d["customer_name"] for d in as_json(run("--json", "deal", "list", "--all"))} == {"Ann", "Ben"}
    drawn = run("deal", "list", env={**TERMINAL, "COLUMNS": "160"}).stdout
    assert "customer_name" in drawn and "Ann" in drawn and "1,234,567.50" in drawn and "…" not in drawn


# -- 17: progress on a terminal's stderr ----------------------------------------------------------------

def crm_process(url: str, cwd: Path, args: list[str], stderr_tty: bool) -> tuple[str, str]:
    """Run the installed ``crm`` with stdout piped and stderr on a pseudo-terminal (or piped)."""
    command = [str(Path(sys.executable).with_name("crm")), "--db", url, "--plugins", PLUGINS, *args]
    env = {k: v for k, v in os.environ.items() if not k.startswith("CRM_") and k not in ("TTY_COMPATIBLE",
                                                                                          "FORCE_COLOR")}
    if not stderr_tty:
        done = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        return done.stdout, done.stderr
    import pty

    master, slave = pty.openpty()
    process = subprocess.Popen(command, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=slave)
    os.close(slave)
    chunks: list[bytes] = []

    def drain() -> None:
        while True:
            try:
                data = os.read(master, 4096)
            except OSError:  # EIO: the child closed the terminal
                return
            if not data:
                return
            chunks.append(data)
    reader = threading.Thread(target=drain)
    reader.start()
    out, _ = process.communicate(timeout=120)
    reader.join(timeout=10)
    os.close(master)
    assert process.returncode == 0, b"".join(chunks).decode(errors="replace")
    return out.decode(), b"".join(chunks).decode(errors="replace")


@pytest.mark.parametrize("args, label, same_stdout", [
    (["--as-of", "2026-06-30", "loyalty", "run"], "loyalty run", True),
    (["export", "customers", "-o", "customers.xlsx"], "exporting customers", True),
    (["--as-of", "2026-06-30", "report", "dashboard", "-o", "dash"], "report dashboard", True),
    (["--as-of", "2026-06-30", "segment", "run", "value-tier"], "segment run value-tier", False),
])
def test_long_commands_draw_progress_on_a_terminal_only(run, crm_db_url, tmp_path, args, label,
                                                        same_stdout) -> None:
    seed(run)
    out_tty, err_tty = crm_process(crm_db_url, tmp_path, args, stderr_tty=True)
    assert label in err_tty, err_tty
    out_piped, err_piped = crm_process(crm_db_url, tmp_path, args, stderr_tty=False)
    assert label not in err_piped and "\x1b" not in err_piped  # piped: no bar, no control codes
    assert "\x1b" not in out_tty  # the bar never reaches stdout
    if same_stdout:
        assert out_tty == out_piped
    else:  # a new run each time: same segments and counts, a new run id and duration
        assert out_tty.splitlines()[1:] == out_piped.splitlines()[1:]


@pytest.mark.parametrize("flag", ["--json", "-q"])
def test_progress_is_silent_with_json_or_quiet(run, crm_db_url, tmp_path, flag) -> None:
    seed(run)
    _, err = crm_process(crm_db_url, tmp_path, [flag, "--as-of", "2026-06-30", "loyalty", "run"], stderr_tty=True)
    assert "loyalty run" not in err and "\x1b" not in err
