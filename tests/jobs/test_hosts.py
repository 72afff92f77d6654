"""Workers on several hosts: one host's workers are killed mid-run, the others finish (issue 20).

Two simulated hosts (tests/jobs/hosts.py: network namespaces on veth pairs, each with its own
hostname) run a ``crm worker`` each; they reach PostgreSQL, RabbitMQ and the SMTP sink only over
their virtual network.  After ~150 of 600 messages every process of host A is SIGKILLed.  RabbitMQ
hands A's unacknowledged delivery jobs to host B at once; B cannot see whether a process of
another host lives, so it looks at each such job again when A's lease (``[jobs] lease``, 6 s here,
renewed by A's heartbeat while it lived) runs out, then takes it over and releases A's outbox claims.  A's message in flight per thread is
*in doubt* and settled as documented (compare with what the sink got; ``crm notify retry`` the
ones it never got).  Every message arrives once, counted at the sink by subject and Message-ID.
"""

from __future__ import annotations

import json
import subprocess
from collections import Counter
from urllib.parse import urlsplit, urlunsplit

import pytest
from crmcore.jobs import Jobs
from crmcore.testing import reset_database, server_url

from .conftest import broker_url
from .delivery import CRM_BIN, PLUGINS, fill_outbox, line, open_crm, tally, wait_until
from .hosts import Network

MESSAGES = 600
LEASE_S = 6


def _via(url: str, gateway: str) -> str:
    """``url`` with its host replaced by ``gateway`` (the proxy on the host's virtual network)."""
    parts = urlsplit(url)
    credentials = parts.netloc.rpartition("@")[0]
    netloc = f"{credentials}@{gateway}" if credentials else gateway
    return urlunsplit(parts._replace(netloc=f"{netloc}:{parts.port}" if parts.port else netloc))


def test_one_hosts_workers_killed_the_other_host_finishes(tmp_path, smtp_sink, queue_prefix):
    url, amqp = server_url("postgresql"), broker_url("rabbitmq")
    network = Network(["a", "b"])
    reset_database(url)
    jobs_settings = {"broker": amqp, "queue_prefix": queue_prefix, "batch": 25, "lease": LEASE_S}
    crm = open_crm(url, smtp_sink, jobs_settings, tmp_path / "crm.toml")
    workers: dict[str, subprocess.Popen[bytes]] = {}
    try:
        hosts = network.create([urlsplit(url).port or 5432, urlsplit(amqp).port or 5672, smtp_sink.port])
        for host in hosts:
            config = tmp_path / f"{host.name}.toml"
            smtp = {"host": host.gateway, "port": smtp_sink.port, "sender": "shop@example.com", "timeout": 10}
            config.write_text("\n".join(
                ["[channels.smtp]", *(f"{k} = {json.dumps(v)}" for k, v in smtp.items()), "[jobs]",
                 *(f"{k} = {json.dumps(_via(v, host.gateway) if k == 'broker' else v)}"
                   for k, v in jobs_settings.items())]) + "\n")
            log = (tmp_path / f"{host.name}.log").open("w")
            workers[host.name] = host.start(
                [CRM_BIN, "--db", _via(url, host.gateway), "--config", str(config), "--plugins", PLUGINS,
                 "worker", "--queues", "notify", "--concurrency", "2"], stdout=subprocess.DEVNULL, stderr=log)
        for host in hosts:
            wait_until(lambda: "worker started" in (tmp_path / f"{host.name}.log").read_text()
                       or workers[host.name].poll() is not None, f"the worker on host {host.name}", 60)
            assert workers[host.name].poll() is None, (tmp_path / f"{host.name}.log").read_text()

        fill_outbox(crm, MESSAGES)
        smtp_sink.recorder.delay = 0.01  # keeps host A's kill inside the run
        jobs = Jobs(crm)
        handed = jobs.relay()
        wait_until(lambda: len(smtp_sink.envelopes) >= 150 or any(w.poll() is not None for w in workers.values()),
                   "150 messages", 60)
        killed = hosts[0].kill_all()
        workers["a"].wait(timeout=30)
        at_kill = len(smtp_sink.envelopes)
        assert killed and hosts[0].pids() == []

        wait_until(lambda: all(j["status"] in ("done", "failed") for j in jobs.list(limit=1000))
                   or workers["b"].poll() is not None, "host B finishing every job", 60)
        assert workers["b"].poll() is None, (tmp_path / "b.log").read_text()
        listed = jobs.list(limit=1000)
        assert {j["status"] for j in listed} == {"done"}, [j["error"] for j in listed]
        by_host = Counter(j["worker"].rpartition(":")[0] for j in listed)
        assert set(by_host) == {hosts[0].hostname, hosts[1].hostname}, by_host
        taken_over = [j for j in listed if j["attempts"] > 1]
        assert all(j["worker"].startswith(hosts[1].hostname) for j in taken_over)

        received = {str(m["Subject"]) for m in smtp_sink.messages}
        in_doubt = [r for r in crm.notify.outbox(limit=10_000) if r["status"] == "dead"]
        assert len(in_doubt) <= 2 and all(r["last_error"].startswith("in doubt") for r in in_doubt)
        never_got = [r["id"] for r in in_doubt if r["subject"] not in received]
        if never_got:
            crm.notify.retry(never_got)
            crm.notify.dispatch(ids=never_got)
        counts = tally(smtp_sink, MESSAGES)
        print("\n" + line(counts, accepted_before_kill=at_kill, jobs=len(handed), taken_over=len(taken_over),
                          in_doubt=len(in_doubt), resent=len(never_got),
                          jobs_by_host="/".join(str(by_host[h.hostname]) for h in hosts)))
        assert counts == {"expected": MESSAGES, "delivered": MESSAGES, "duplicated": 0, "lost": 0}
        assert at_kill < MESSAGES - 100, "host A must die mid-run"
    finally:
        for process in workers.values():
            if process.poll() is None:
                process.terminate()
                process.wait(timeout=60)
        network.close()
        Jobs(crm).queue().delete_queues()
        crm.close()
