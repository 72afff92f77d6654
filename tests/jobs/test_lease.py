"""The lease of a running job measures silence: its worker renews ``heartbeat_at`` while the job
runs (crmcore.jobs.heartbeat); a job whose worker beat recently is another's, one silent for a
whole lease is taken over, with the silent worker's outbox claims released at once."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select, update

import crmcore
from crmcore.jobs import KINDS, JobKind, Jobs
from crmcore.jobs.engine import LEASE_MARGIN, _Busy, worker_name
from crmcore.store import tables

jobs_table, outbox = tables.jobs, tables.notify_outbox
ELSEWHERE = "another-host:4242"


@pytest.fixture
def crm(crm_sqlite_url, tmp_path):
    opened = crmcore.CRM.open(config=crmcore.Config.from_mapping({
        "database_url": crm_sqlite_url, "plugins": ["notify"], "jobs": {"lease": 2},
        "channels": {"file": {"path": str(tmp_path / "sent.jsonl")}}}), clock=lambda: datetime.now(UTC))
    yield opened
    opened.close()


def _row(crm, job_id):
    with crm.engine.connect() as conn:
        return conn.execute(select(jobs_table).where(jobs_table.c.id == job_id)).one()


def test_a_running_job_beats_while_it_runs(crm, monkeypatch):
    seen = []

    def sleeper(crm_, args, ctx):
        for _ in range(6):  # 1.8 s: beats every 2/3 s
            time.sleep(0.3)
            seen.append(_row(crm_, ctx.job_id).heartbeat_at)
        return {"slept": True}

    monkeypatch.setitem(KINDS, "test.sleep", JobKind("test.sleep", "segments", sleeper))
    job = Jobs(crm).submit("test.sleep")
    assert job["status"] == "done" and job["result"] == {"slept": True}
    beats = sorted(set(seen))
    assert beats[0] == job["started_at"] and len(beats) >= 2, beats  # renewed at least once
    assert beats[-1] - beats[0] >= timedelta(seconds=0.5)


def _running_elsewhere(crm, heartbeat_age: float) -> int:
    """A delivery job of three claimed messages, running on another host whose last beat was
    ``heartbeat_age`` seconds ago (started an hour ago)."""
    now = datetime.now(UTC)
    with crm.unit() as uow:
        ids = [uow.outbox.enqueue("file", recipient=f"r{n}@example.com", subject=f"#{n}", body="b") for n in range(3)]
        uow.conn.execute(update(outbox).where(outbox.c.id.in_(ids)).values(
            status="claimed", claimed_at=now, claimed_by=f"{ELSEWHERE}:claim"))
    jobs = Jobs(crm)
    job_id = jobs._record([(KINDS["notify.deliver"], {"ids": ids})], None)[0]
    with crm.engine.begin() as conn:
        conn.execute(update(jobs_table).where(jobs_table.c.id == job_id).values(
            status="running", attempts=1, worker=ELSEWHERE, started_at=now - timedelta(hours=1),
            heartbeat_at=now - timedelta(seconds=heartbeat_age)))
    return job_id


def test_a_beating_job_elsewhere_is_looked_at_again_when_its_lease_ends(crm):
    job_id = _running_elsewhere(crm, heartbeat_age=0.5)
    beat = _row(crm, job_id).heartbeat_at
    before = datetime.now(UTC)
    busy = Jobs(crm)._execute(job_id)
    after = datetime.now(UTC)
    assert isinstance(busy, _Busy) and busy.worker == ELSEWHERE and busy.queue == "crm-notify"
    # Looked at again one margin after the lease (2 s from the last beat) runs out, measured from
    # the moment of the claim, which lies between `before` and `after` however slow the machine.
    runs_out = beat + timedelta(seconds=2) + LEASE_MARGIN
    assert runs_out - after <= busy.wait <= runs_out - before
    assert Jobs(crm).execute(job_id) == "skipped"
    row = _row(crm, job_id)
    assert (row.status, row.attempts, row.worker) == ("running", 1, ELSEWHERE)


def test_a_silent_job_elsewhere_is_taken_over_and_its_claims_released(crm):
    job_id = _running_elsewhere(crm, heartbeat_age=3)
    assert Jobs(crm).execute(job_id) == "done"
    row = _row(crm, job_id)
    assert (row.status, row.attempts, row.worker) == ("done", 2, worker_name())
    assert row.result["sent"] == 3  # the claims (10 minutes' lease) were released at once
    assert {r["status"] for r in crm.notify.outbox(limit=10)} == {"sent"}
