"""Dispatching: worker threads, concurrent dispatcher processes (SKIP LOCKED on
PostgreSQL/MariaDB, the write lock on SQLite), the dead-letter CLI, and the
delivery state shown per message and per customer."""

from __future__ import annotations

import json
import subprocess
from collections import Counter
from pathlib import Path

from click.testing import CliRunner

from crmcore.cli import cli

from .conftest import smtp_options
from .test_reliability_smtp import (
    _crm_command,
    _write_config,
    assert_each_accepted_once,
    enqueue,
    rows,
)

WAIT_S = 300


def test_workers_share_the_batch_each_message_once(crm_factory, smtp_server):
    crm = crm_factory(plugins=["notify"], config={"channels": {"smtp": smtp_options(smtp_server)}})
    enqueue(crm, 300)
    result = crm.notify.dispatch(workers=4)
    assert result.sent == 300
    received = assert_each_accepted_once(smtp_server, crm)
    assert len(received) == 300 and {r["status"] for r in rows(crm)} == {"sent"}
    assert 1 <= smtp_server.connections() <= 4  # one connection per worker thread, reused


def test_limit_is_shared_by_workers(crm_factory, smtp_server):
    crm = crm_factory(plugins=["notify"], config={"channels": {"smtp": smtp_options(smtp_server)}})
    enqueue(crm, 250)
    assert crm.notify.dispatch(limit=130, workers=3).sent == 130
    assert Counter(r["status"] for r in rows(crm)) == {"sent": 130, "pending": 120}
    assert len(smtp_server.messages) == 130


def test_two_dispatcher_processes_never_take_the_same_message(crm_factory, crm_db_url, smtp_server, tmp_path):
    crm = crm_factory(plugins=["notify"], config={"channels": {"smtp": smtp_options(smtp_server)}})
    enqueue(crm, 1000)
    config = _write_config(tmp_path, smtp_server)
    processes = [subprocess.Popen(_crm_command(crm_db_url, config, "--json", "notify", "dispatch", "--workers", "2"),
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE) for _ in range(2)]
    outputs = [p.communicate(timeout=WAIT_S) for p in processes]
    for process, (_, err) in zip(processes, outputs):
        assert process.returncode == 0, err.decode()
    sent_by = [json.loads(out)["sent"] for out, _ in outputs]
    assert sum(sent_by) == 1000
    received = assert_each_accepted_once(smtp_server, crm)
    assert len(received) == 1000 and {r["status"] for r in rows(crm)} == {"sent"}
    assert all(r["attempts"] == 1 for r in rows(crm))


def invoke(url: str, config: Path, *args: str):
    result = CliRunner().invoke(cli, ["--db", url, "--config", str(config), "--plugins", "notify", *args])
    assert result.exit_code == 0, result.output
    return result.output


def test_dead_letters_listed_and_requeued_from_the_cli(crm_factory, crm_db_url, smtp_server, tmp_path):
    crm = crm_factory(plugins=["notify"], config={"channels": {"smtp": smtp_options(smtp_server)}})
    customer = crm.customers.add(name="李雷", email="li.lei@example.com")
    bad = crm.notify.enqueue("smtp", customer_id=customer.id, recipient="li.lei@", subject="x", body="x")
    good = crm.notify.enqueue("smtp", customer_id=customer.id, subject="订单确认", body="谢谢")
    config = _write_config(tmp_path, smtp_server)

    dispatched = json.loads(invoke(crm_db_url, config, "--json", "notify", "dispatch"))
    assert dispatched == {"sent": 1, "retried": 0, "dead": 1, "suppressed": 0, "deferred": 0}
    dead = json.loads(invoke(crm_db_url, config, "--json", "notify", "outbox", "--status", "dead"))
    assert [(d["id"], d["status"], d["attempts"]) for d in dead] == [(bad, "dead", 1)]
    assert "invalid recipient" in dead[0]["last_error"]

    [sent] = json.loads(invoke(crm_db_url, config, "--json", "notify", "outbox", "--id", str(good)))
    assert sent["provider_id"] == smtp_server.message_ids()[0]
    assert sent["sent_at"] and sent["last_attempt_at"] and sent["attempts"] == 1
    assert sent["delivery"] == {"smtp_reply": "250 2.0.0 Ok: queued as Q1"}

    shown = json.loads(invoke(crm_db_url, config, "--json", "customer", "show", str(customer.id)))
    recent = {m["id"]: m for m in shown["recent_messages"]}
    assert recent[good]["status"] == "sent" and recent[good]["provider_id"] == sent["provider_id"]
    assert recent[bad]["status"] == "dead" and "invalid recipient" in recent[bad]["last_error"]

    with crm.unit() as uow:  # the address is fixed by hand, then the dead letter requeued
        from crmcore.store import tables
        uow.conn.execute(tables.notify_outbox.update().where(tables.notify_outbox.c.id == bad).values(
            recipient="li.lei@example.com"))
    assert json.loads(invoke(crm_db_url, config, "--json", "notify", "retry", str(bad))) == {"requeued": 1}
    assert json.loads(invoke(crm_db_url, config, "--json", "notify", "dispatch"))["sent"] == 1
    assert json.loads(invoke(crm_db_url, config, "--json", "notify", "outbox", "--status", "dead")) == []
    assert len(assert_each_accepted_once(smtp_server, crm)) == 2


def test_outbox_table_shows_delivery_columns(crm_factory, crm_db_url, smtp_server, tmp_path):
    crm = crm_factory(plugins=["notify"], config={"channels": {"smtp": smtp_options(smtp_server)}})
    crm.notify.enqueue("smtp", recipient="a@example.com", subject="hello", body="x")
    config = _write_config(tmp_path, smtp_server)
    invoke(crm_db_url, config, "notify", "dispatch")
    header, line = invoke(crm_db_url, config, "notify", "outbox").splitlines()[:2]
    assert header.split("\t") == ["id", "channel", "recipient", "purpose", "status", "attempts", "next_attempt_at",
                                  "sent_at", "provider_id", "subject", "last_error"]
    assert "\tsent\t1\t" in line and smtp_server.message_ids()[0] in line


def test_bad_workers_option_is_a_usage_error(crm_sqlite_url, tmp_path, smtp_server):
    config = _write_config(tmp_path, smtp_server)
    result = CliRunner().invoke(cli, ["--db", crm_sqlite_url, "--config", str(config), "notify", "dispatch",
                                      "--workers", "0"])
    assert result.exit_code == 2 and "must be at least 1" in result.output
    assert "Traceback" not in result.output
