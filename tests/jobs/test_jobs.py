"""Jobs without a broker (inline, as before issue 20), the scheduler's once-per-period runs with two
schedulers racing, the CLI, and a real worker over Redis."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sqlalchemy import func, select

import crmcore
from crmcore.domain.errors import ConfigError, NotFound, ValidationError
from crmcore.jobs import Jobs
from crmcore.store import tables

from .conftest import broker_url

CRM_BIN = str(Path(sys.executable).with_name("crm"))


def _count(crm, table, *where) -> int:
    with crm.engine.connect() as conn:
        return conn.execute(select(func.count()).select_from(table).where(*where)).scalar_one()


def test_inline_jobs_run_once_record_and_audit(crm_factory):
    crm = crm_factory(plugins=["segments", "loyalty"])
    for name in ("A", "B", "C"):
        crm.customers.add(name=name)
    jobs = Jobs(crm)
    assert not jobs.background

    job = jobs.submit("segments.run", {"strategy": "lifecycle"})
    assert job["status"] == "done" and job["attempts"] == 1 and job["error"] is None
    assert job["result"]["members"] == _count(crm, tables.customers) == 3
    assert job["result"]["run_id"] == crm.segments.latest_run("lifecycle").id
    assert jobs.execute(job["id"]) == "skipped"  # the same job twice: it ran once
    assert _count(crm, tables.segment_runs) == 1
    assert jobs.get(job["id"])["attempts"] == 1

    expired = jobs.submit("loyalty.expire", {"as_of": "2026-07-01"})
    assert expired["status"] == "done" and expired["result"] == {"expired_entries": 0}
    failed = jobs.submit("segments.run", {"strategy": "no-such-strategy"})
    assert failed["status"] == "failed" and "no-such-strategy" in failed["error"]

    audit = tables.audit_log
    with crm.engine.connect() as conn:
        actions = conn.execute(select(audit.c.action, audit.c.entity_id).where(audit.c.entity == "job")).all()
    assert sorted(actions) == sorted([("job.submit", str(i)) for i in (1, 2, 3)]
                                     + [("job.done", "1"), ("job.done", "2"), ("job.failed", "3")])
    assert [j["id"] for j in jobs.list()] == [3, 2, 1]
    assert [j["id"] for j in jobs.list(status="failed")] == [3]
    assert jobs.counts() == {"done": 2, "failed": 1}


@pytest.fixture
def sqlite_crm(crm_sqlite_url):
    """A CRM on a SQLite file of this test's own (the tests below drive processes; one database is enough)."""
    opened = []

    def factory(config=None):
        values = {"database_url": crm_sqlite_url, "plugins": ["segments"], **(config or {})}
        crm = crmcore.CRM.open(config=crmcore.Config.from_mapping(values))
        opened.append(crm)
        return crm

    yield factory
    for crm in opened:
        crm.close()


def test_bad_submissions_are_clear_errors(sqlite_crm):
    jobs = Jobs(sqlite_crm())
    with pytest.raises(ValidationError, match="unknown job kind 'nope'"):
        jobs.submit("nope")
    with pytest.raises(ValidationError, match="strategy"):
        jobs.submit("segments.run", {})
    with pytest.raises(ConfigError, match=r"no broker configured: set \[jobs\] broker"):
        jobs.submit("segments.run", {"strategy": "lifecycle"}, background=True)
    with pytest.raises(ValidationError, match="status"):
        jobs.list(status="bogus")
    with pytest.raises(NotFound):
        jobs.get(99)
    assert jobs.list() == []  # nothing was recorded by the refused submissions


class NoReadAll:
    """An authorize policy: only ann may read every job."""

    @crmcore.hookimpl
    def authorize(self, actor, action, resource, crm):
        return action != "job.read_all" or actor == "ann"


def test_users_see_their_own_jobs(crm_factory):
    crm = crm_factory(plugins=["segments"], extra_plugins=[NoReadAll()])
    for login in ("ann", "bob", "cy"):
        crm.users.add(login)
    jobs = Jobs(crm)
    with crm.acting("bob"):
        mine = jobs.submit("segments.run", {"strategy": "lifecycle"})
    assert mine["actor"] == "bob" and mine["status"] == "done"
    with crm.acting("cy"):
        assert jobs.list() == []
        with pytest.raises(NotFound):
            jobs.get(mine["id"])
    with crm.acting("ann"):
        assert [j["id"] for j in jobs.list()] == [mine["id"]]
    with crm.acting("bob"):
        assert jobs.get(mine["id"])["actor"] == "bob"


def _crm(url: str, cwd: Path, *args: str, stderr=subprocess.PIPE) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if k != "CRM_JOBS_BROKER"}
    plugins = () if "--plugins" in args else ("--no-plugins",)
    return subprocess.Popen([CRM_BIN, "--db", url, *plugins, *args], cwd=cwd, env=env,
                            stdout=subprocess.PIPE, stderr=stderr, text=True)


def test_two_schedulers_fire_each_daily_job_once(crm_factory, crm_db_url, tmp_path):
    crm = crm_factory()  # migrated
    racing = [_crm(crm_db_url, tmp_path, "--json", "--as-of", "2026-07-01", "scheduler", "--once") for _ in range(2)]
    outputs = []
    for process in racing:
        out, err = process.communicate(timeout=120)
        assert process.returncode == 0, err
        outputs.append(json.loads(out))
    fired = [row["job"] for rows in outputs for row in rows if row["fired"]]
    assert sorted(fired) == ["birthday-greetings", "points-expiry", "tier-evaluation"]
    jobs = tables.jobs
    with crm.engine.connect() as conn:
        rows = conn.execute(select(jobs.c.run_key, jobs.c.status).order_by(jobs.c.id)).all()
    assert sorted(rows) == [(f"schedule:{name}:2026-07-01", "done")
                            for name in ("birthday-greetings", "points-expiry", "tier-evaluation")]
    from crmcore.jobs.scheduler import fire

    assert not any(row["fired"] for row in fire(Jobs(crm), crm.as_of("2026-07-01")))
    assert _count(crm, jobs) == 3
    assert all(row["fired"] for row in fire(Jobs(crm), crm.as_of("2026-07-02")))
    assert _count(crm, jobs) == 6


def test_cli_list_show_and_errors(crm_sqlite_url, sqlite_crm, tmp_path, monkeypatch):
    from click.testing import CliRunner

    from crmcore.cli import cli, load_plugin_commands

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("CRM_JOBS_BROKER", raising=False)
    load_plugin_commands(["--plugins", "segments"])
    crm = sqlite_crm()

    def run(*args: str):
        return CliRunner().invoke(cli, ["--db", crm_sqlite_url, "--plugins", "segments", *args])

    refused = run("segment", "run", "lifecycle", "--background")
    assert refused.exit_code == 1 and "no broker configured" in refused.output and "Traceback" not in refused.output
    job = Jobs(crm).submit("segments.run", {"strategy": "lifecycle"})
    assert [j["id"] for j in json.loads(run("--json", "jobs", "list").stdout)] == [job["id"]]
    record = json.loads(run("--json", "jobs", "show", str(job["id"])).stdout)
    assert record["kind"] == "segments.run" and record["status"] == "done" and record["result"]["members"] == 0
    missing = run("jobs", "show", "99")
    assert missing.exit_code == 1 and "job 99" in missing.output and "Traceback" not in missing.output
    assert run("worker", "--queues", "nope").exit_code == 2
    down = Jobs(sqlite_crm({"jobs": {"broker": "redis://user:pw@127.0.0.1:1/0"}}))
    with pytest.raises(ConfigError, match=r"redis://user:\*\*\*@127.0.0.1:1/0 did not take job 2"):
        down.submit("segments.run", {"strategy": "lifecycle"})
    assert down.get(2)["status"] == "queued"


def test_worker_over_redis_runs_queued_jobs_once(crm_sqlite_url, sqlite_crm, tmp_path, queue_prefix):
    redis = broker_url("redis")
    crm = sqlite_crm({"jobs": {"broker": redis, "queue_prefix": queue_prefix}})
    crm.customers.add(name="A")
    config = tmp_path / "crm.toml"
    config.write_text(f'[jobs]\nbroker = "{redis}"\nqueue_prefix = "{queue_prefix}"\n')
    queued = _crm(crm_sqlite_url, tmp_path, "--config", str(config), "--plugins", "segments", "--json",
                  "segment", "run", "lifecycle", "--background")
    out, err = queued.communicate(timeout=60)
    assert queued.returncode == 0, err
    first = json.loads(out)
    jobs = Jobs(crm)
    assert jobs.get(first["job"])["status"] == "queued"
    jobs.queue().send(first["queue"], first["job"])  # the same job delivered twice
    second = jobs.submit("segments.run", {"strategy": "lifecycle"})
    assert second["status"] == "queued"

    log = tmp_path / "worker.log"
    with log.open("w") as stderr:
        worker = _crm(crm_sqlite_url, tmp_path, "--config", str(config), "--plugins", "segments", "worker",
                      "--queues", "segments", "--concurrency", "1", stderr=stderr)
        try:
            deadline = time.monotonic() + 60
            while jobs.get(second["id"])["status"] not in ("done", "failed"):
                assert time.monotonic() < deadline and worker.poll() is None, log.read_text()
                time.sleep(0.05)
        finally:
            worker.send_signal(signal.SIGTERM)
            worker.communicate(timeout=60)
    assert worker.returncode == 0, log.read_text()
    assert jobs.get(second["id"])["status"] == "done", jobs.get(second["id"])["error"]
    assert jobs.get(first["job"])["status"] == "done" and jobs.get(first["job"])["attempts"] == 1
    assert _count(crm, tables.segment_runs) == 2
    jobs.queue().delete_queues()
    jobs.queue().close()
