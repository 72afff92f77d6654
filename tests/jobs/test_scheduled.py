"""``crm import ... --background`` and scheduled reports (``[jobs.reports.NAME]``), run by a real
``crm worker`` over Redis: the import's job imports the file once (the CLI made its paths
absolute), and two schedulers racing on two days of one ISO week fire the daily report twice (once
a day) and the weekly report once, written whole to its file and queued once on its channel."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy import func, select

import crmcore
from crmcore.config.jobs import parse_jobs
from crmcore.domain.errors import ConfigError
from crmcore.jobs import Jobs
from crmcore.cli import cli as cli_group
from crmcore.cli import load_plugin_commands
from crmcore.jobs.scheduler import fire, period_key
from crmcore.store import tables

from .conftest import broker_url
from .delivery import CRM_BIN

PLUGINS = "reports,notify"


def _crm(url: str, cwd: Path, config: Path, *args: str, stderr=subprocess.PIPE) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if k != "CRM_JOBS_BROKER"}
    return subprocess.Popen([CRM_BIN, "--db", url, "--config", str(config), "--plugins", PLUGINS, *args],
                            cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=stderr, text=True)


def _done(process: subprocess.Popen) -> str:
    out, err = process.communicate(timeout=120)
    assert process.returncode == 0, err
    return out


def test_import_background_and_scheduled_reports_run_once(crm_sqlite_url, tmp_path, queue_prefix, monkeypatch):
    redis = broker_url("redis")
    work = tmp_path / "work"
    work.mkdir()
    config = tmp_path / "crm.toml"
    config.write_text(f"""
[jobs]
broker = "{redis}"
queue_prefix = "{queue_prefix}"
[jobs.reports.daily-value]
report = "customer-value"
every = "day"
output = "{tmp_path}/value-{{period}}.csv"
[jobs.reports.weekly]
report = "customer-value"
every = "week"
format = "table"
output = "{tmp_path}/weekly-{{period}}.txt"
channel = "file"
to = "lead@example.com"
[channels.file]
path = "{tmp_path}/sent.jsonl"
""")
    crm = crmcore.CRM.open(config=crmcore.Config.load(config, database_url=crm_sqlite_url, plugins=PLUGINS.split(",")))
    jobs = Jobs(crm)
    rows = [{"name": f"客户 {n}", "email": f"c{n}@example.com", "external_id": f"x{n}"} for n in range(40)]
    rows.append({"name": "Bad", "email": "not an email", "external_id": "bad"})
    with (work / "customers.csv").open("w", newline="", encoding="utf-8") as out:
        writer = csv.DictWriter(out, ["name", "email", "external_id"])
        writer.writeheader()
        writer.writerows(rows)

    def cli(*args: str):
        return CliRunner().invoke(cli_group, ["--db", crm_sqlite_url, "--config", str(config), "--plugins", PLUGINS,
                                              *args])

    monkeypatch.chdir(work)  # relative paths: the CLI makes them absolute for the worker
    monkeypatch.delenv("CRM_JOBS_BROKER", raising=False)
    load_plugin_commands(["--plugins", PLUGINS])
    refused = cli("import", "customers", "-", "--background")
    assert refused.exit_code == 2 and "not - (standard input)" in refused.output
    missing = cli("import", "customers", "nope.csv", "--background")
    assert missing.exit_code == 2 and "nope.csv does not exist" in missing.output
    answer = cli("--json", "import", "customers", "customers.csv", "--on-error", "skip", "--reject-file", "rejects.csv",
                 "--background")
    assert answer.exit_code == 0, answer.output
    submitted = json.loads(answer.stdout)
    job = jobs.get(submitted["job"])
    assert job["status"] == "queued" and job["args"]["path"] == str(work / "customers.csv")
    assert job["args"]["options"]["reject_file"] == str(work / "rejects.csv")

    # Two scheduler processes race on Monday of ISO week 2026-W27; on Tuesday two more rounds fire.
    racing = [_crm(crm_sqlite_url, work, config, "--json", "--as-of", "2026-06-29", "scheduler", "--once")
              for _ in range(2)]
    fired = [(row["job"], row["period"]) for p in racing for row in json.loads(_done(p)) if row["fired"]]
    for _ in range(2):
        fired += [(row["job"], row["period"]) for row in fire(jobs, crm.as_of("2026-06-30")) if row["fired"]]
    reports = sorted(f for f in fired if f[0].startswith("report:"))
    assert reports == [("report:daily-value", "2026-06-29"), ("report:daily-value", "2026-06-30"),
                       ("report:weekly", "2026-W27")]
    assert len(fired) == 3 + 2 * 3  # and each day's three daily jobs once

    log = tmp_path / "worker.log"
    with log.open("w") as stderr:
        worker = _crm(crm_sqlite_url, work, config, "worker", "--queues", "imports,reports", "--concurrency", "2",
                      stderr=stderr)
        try:
            deadline = time.monotonic() + 60
            while any(j["status"] in ("queued", "running") for j in jobs.list(limit=100)
                      if j["kind"] in ("import", "reports.scheduled")):
                assert time.monotonic() < deadline and worker.poll() is None, log.read_text()
                time.sleep(0.05)
        finally:
            worker.send_signal(signal.SIGTERM)
            worker.wait(timeout=60)
    done = jobs.get(submitted["job"])
    assert done["status"] == "done", done["error"]
    assert (done["result"]["inserted"], done["result"]["rejected"], done["result"]["committed"]) == (40, 1, True)
    with crm.engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(tables.customers)).scalar_one() == 40
    assert "not an email" in (work / "rejects.csv").read_text(encoding="utf-8-sig")

    for day in ("2026-06-29", "2026-06-30"):
        expected = crm.reports.render("customer-value", "csv", crm.as_of(day))
        assert (tmp_path / f"value-{day}.csv").read_text(encoding="utf-8") == expected
    weekly = crm.reports.render("customer-value", "table", crm.as_of("2026-06-29"))
    assert (tmp_path / "weekly-2026-W27.txt").read_text(encoding="utf-8") == weekly
    assert not list(tmp_path.glob("*.part"))
    outbox = crm.notify.outbox(limit=100)
    assert [(m["idempotency_key"], m["recipient"], m["body"]) for m in outbox] == \
        [("report:weekly:2026-W27", "lead@example.com", weekly)]
    assert all(j["status"] == "done" for j in jobs.list(kind="reports.scheduled"))
    Jobs(crm).queue().delete_queues()
    crm.close()


def test_period_keys_and_bad_schedules():
    from datetime import date

    assert [period_key(date(2026, 1, 1), every) for every in ("day", "week", "month")] == \
        ["2026-01-01", "2026-W01", "2026-01"]
    assert period_key(date(2027, 1, 3), "week") == "2026-W53"  # ISO: the Sunday ends 2026's last week
    with pytest.raises(ConfigError, match=r"\[jobs.reports.x\] every must be one of day, week, month"):
        parse_jobs({"reports": {"x": {"every": "hour", "output": "a"}}}, "crm.toml")
    with pytest.raises(ConfigError, match=r"\[jobs.reports.x\] needs an output file, a channel"):
        parse_jobs({"reports": {"x": {}}}, "crm.toml")
    with pytest.raises(ConfigError, match="channel and to go together"):
        parse_jobs({"reports": {"x": {"channel": "smtp"}}}, "crm.toml")
    with pytest.raises(ConfigError, match=r"unknown key\(s\): evry \(did you mean 'every'\?\)"):
        parse_jobs({"reports": {"x": {"evry": "day", "output": "a"}}}, "crm.toml")


def test_scheduler_refuses_a_schedule_naming_an_unknown_report(crm_sqlite_url, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    config = tmp_path / "crm.toml"
    config.write_text('[jobs.reports.typo]\nreport = "pipelin"\noutput = "out.csv"\n')
    process = _crm(crm_sqlite_url, tmp_path, config, "--as-of", "2026-07-01", "scheduler", "--once")
    out, err = process.communicate(timeout=60)
    assert process.returncode == 1 and "pipelin" in err and "pipeline" in err and "Traceback" not in err
    with crmcore.CRM.open(crm_sqlite_url, plugins=[]) as crm:
        assert Jobs(crm).list() == []  # nothing fired
