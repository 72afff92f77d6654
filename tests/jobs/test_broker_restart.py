"""A broker restarted mid-run loses and duplicates nothing (issue 20).

The test owns its broker: a private ``redis-server`` (tests/jobs/brokers.py) with its append-only
file synced on every write.  A ``crm worker`` process delivers a batch of outbox messages through
it to a real SMTP sink, on PostgreSQL; after ~150 messages the broker is SIGKILLed, stays down
while the worker finishes what it holds (its acknowledgements wait for the broker), and starts
again on the same port and data; the relay then hands the ids over a second time.  The worker
reconnects by itself and finishes: every message arrives once (by subject and by Message-ID).
"""

from __future__ import annotations

import signal
import subprocess
from collections import Counter

import pytest

from crmcore.jobs import Jobs
from crmcore.testing import reset_database, server_url

from .brokers import PrivateRedis
from .delivery import fill_outbox, line, open_crm, tally, wait_until, worker_command

MESSAGES = 800


@pytest.fixture
def redis():
    broker = PrivateRedis().start()
    yield broker
    broker.stop()


def test_broker_killed_and_restarted_mid_run(tmp_path, redis, smtp_sink, queue_prefix):
    url = server_url("postgresql")
    reset_database(url)
    crm = open_crm(url, smtp_sink, {"broker": redis.url, "queue_prefix": queue_prefix, "batch": 25},
                   tmp_path / "crm.toml")
    log = tmp_path / "worker.log"
    try:
        fill_outbox(crm, MESSAGES)
        smtp_sink.recorder.delay = 0.004  # spreads the batch over a few seconds
        jobs = Jobs(crm)
        with log.open("w") as err:
            worker = subprocess.Popen(worker_command(url, tmp_path / "crm.toml"), cwd=tmp_path,
                                      stdout=subprocess.DEVNULL, stderr=err)
            try:
                handed = jobs.relay()
                assert len(handed) == MESSAGES // 25
                wait_until(lambda: len(smtp_sink.envelopes) >= 150 or worker.poll() is not None, "150 messages")
                at_kill = len(smtp_sink.envelopes)
                redis.restart(down_s=1.5)
                at_restart = len(smtp_sink.envelopes)
                handed += jobs.relay()  # the relay runs again: the ids still pending, handed twice
                wait_until(lambda: all(j["status"] in ("done", "failed") for j in jobs.list(limit=1000))
                           or worker.poll() is not None, "every job finished")
                assert worker.poll() is None, log.read_text()
            finally:
                worker.send_signal(signal.SIGTERM)
                worker.wait(timeout=60)
        listed = jobs.list(limit=1000)
        counts = tally(smtp_sink, MESSAGES)
        outbox = Counter(r["status"] for r in crm.notify.outbox(limit=10_000))
        print("\n" + line(counts, accepted_before_kill=at_kill, accepted_while_down=at_restart - at_kill,
                          jobs=len(listed), broker_restarts=redis.restarts))
        assert at_kill < MESSAGES - 100, "the broker must go down mid-run"
        assert "connection error" in log.read_text().lower(), "the worker never saw the broker go"
        assert {j["status"] for j in listed} == {"done"}, [j["error"] for j in listed]
        assert counts == {"expected": MESSAGES, "delivered": MESSAGES, "duplicated": 0, "lost": 0}
        assert outbox == {"sent": MESSAGES}
    finally:
        crm.close()
