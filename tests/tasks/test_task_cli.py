"""``crm task`` (add with relative due times, list --mine/--due/--json, done, cancel, remind once a
day) through the command line, on SQLite: the use cases below are tested on every database in
test_tasks.py."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from crmcore.cli import cli

AS_OF = "2026-12-06T09:00:00+08:00"


@pytest.fixture
def run(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for var in ("CRM_PLUGINS", "CRM_DATABASE_URL", "CRM_PLUGINS_DIR", "CRM_PLUGINS_BLOCK", "CRM_USER"):
        monkeypatch.delenv(var, raising=False)
    (tmp_path / "crm.toml").write_text(f'''
database_url = "sqlite:///{tmp_path / 'crm.db'}"
timezone = "Asia/Shanghai"
[plugins]
enabled = ["notify"]
[channels.file]
path = "{tmp_path / 'out.jsonl'}"
[tasks]
reminder_channel = "file"
complaint_sla_hours = 8
''', encoding="utf-8")

    def invoke(*args: str):
        result = CliRunner().invoke(cli, ["--config", str(tmp_path / "crm.toml"), *args])
        return result
    return invoke


def ok(result) -> str:
    assert result.exit_code == 0, result.output
    return result.output


def test_task_commands(run, tmp_path) -> None:
    ok(run("user", "add", "li.wei", "--locale", "zh-CN"))
    ok(run("--as", "li.wei", "user", "add", "ann"))
    ok(run("--as", "li.wei", "customer", "add", "--name", "张伟", "--email", "zw@example.com", "--owner", "li.wei"))
    added = json.loads(ok(run("--as", "li.wei", "--as-of", AS_OF, "--json", "task", "add", "--customer",
                              "zw@example.com", "--title", "回访", "--due", "+3d", "--priority", "high")))
    assert (added["assignee"], added["due"], added["priority"]) == ("li.wei", "2026-12-09T15:59:59+00:00", "high")
    assert ok(run("--as", "li.wei", "--as-of", AS_OF, "task", "add", "--customer", "1", "--title", "today",
                  "--due", "today", "--assignee", "ann")).startswith("task 2 added, due 2026-12-06T15:59:59+00:00")
    ok(run("--as", "li.wei", "--as-of", AS_OF, "task", "add", "--customer", "1", "--title", "late", "--due",
           "2026-12-01"))
    ok(run("--as", "li.wei", "--as-of", AS_OF, "interaction", "add", "--customer", "1", "--kind", "complaint",
           "--subject", "坏了"))

    def listed(*args: str) -> list[tuple[int, bool]]:
        rows = json.loads(ok(run("--as", "li.wei", "--as-of", AS_OF, "task", "list", "--json", *args)))
        return [(r["id"], r["overdue"]) for r in rows]

    assert listed() == [(3, True), (4, False), (2, False), (1, False)]  # soonest first; the complaint due +8h
    assert listed("--mine", "--due", "today") == [(3, True), (4, False)]
    assert listed("--due", "overdue") == [(3, True)]
    assert listed("--due", "week", "--assignee", "ann") == [(2, False)]
    assert "张伟" in ok(run("--as", "li.wei", "--as-of", AS_OF, "task", "list"))
    shown = json.loads(ok(run("--as", "li.wei", "--json", "customer", "show", "1")))
    assert [t["title"] for t in shown["open_tasks"]] == ["late", "Complaint: 坏了", "today", "回访"]
    assert ok(run("--as", "li.wei", "task", "done", "3")).strip() == "task 3 done"
    assert ok(run("--as", "li.wei", "task", "cancel", "1")).strip() == "task 1 cancelled"
    assert listed("--status", "all", "--mine") == [(3, False), (4, False), (1, False)]

    refused = run("--as", "li.wei", "task", "done", "3")
    assert refused.exit_code == 1 and "task 3 is already done" in refused.output and "Traceback" not in refused.output
    bad = run("--as", "li.wei", "task", "add", "--customer", "1", "--title", "x", "--due", "someday")
    assert bad.exit_code == 1 and "'someday' is not a due time" in bad.output and "Traceback" not in bad.output

    first = ok(run("--as", "li.wei", "--as-of", "2026-12-06T12:00:00+08:00", "task", "remind"))
    assert "2 reminder(s) queued, 2 sent" in first
    again = ok(run("--as", "li.wei", "--as-of", "2026-12-06T18:00:00+08:00", "task", "remind"))
    assert "0 reminder(s) queued; 2 already queued today" in again
    sent = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text(encoding="utf-8").splitlines()]
    assert sorted(m["payload"]["assignee"] for m in sent) == ["ann", "li.wei"]
    mine = next(m for m in sent if m["payload"]["assignee"] == "li.wei")
    assert mine["subject"] == "2026-12-06 待办：今日到期 1 项，已逾期 0 项" and "Complaint: 坏了" in mine["body"]


def test_import_and_export_tasks(run, tmp_path) -> None:
    ok(run("user", "add", "li.wei", "--email", "li@example.com"))
    ok(run("--as", "li.wei", "customer", "add", "--name", "张伟", "--external-id", "c1"))
    (tmp_path / "tasks.csv").write_text("customer,title,assignee,due,priority,external_id\n"
                                        "c1,回访一,li@example.com,2026-12-08T10:00:00+08:00,high,T1\n"
                                        "c1,回访二,nobody,,normal,T2\n", encoding="utf-8")
    out = run("--as", "li.wei", "import", "tasks", str(tmp_path / "tasks.csv"))
    assert out.exit_code == 1 and 'tasks.csv:3: column "assignee": unknown owner \'nobody\'' in out.output
    assert "nothing written" in out.output and "Traceback" not in out.output
    ok(run("--as", "li.wei", "import", "tasks", str(tmp_path / "tasks.csv"), "--on-error", "skip"))
    exported = ok(run("--as", "li.wei", "export", "tasks", "--format", "jsonl"))
    [row] = [json.loads(line) for line in exported.splitlines()]
    assert (row["title"], row["assignee"], row["due"], row["priority"], row["external_id"], row["customer"]) == (
        "回访一", "li.wei", "2026-12-08T02:00:00+00:00", "high", "T1", "c1")
