"""Benchmark: campaign delivery by 1, 2 and 4 ``crm worker`` processes against raw smtplib.

    .venv/bin/python bench/campaign_workers.py                       # 100,000 messages, 3 rounds
    .venv/bin/python bench/campaign_workers.py --messages 5000 --repeat 3 --workers 1,2
    .venv/bin/python bench/campaign_workers.py --db postgresql://... --broker amqp://...

1. Prepares N customers (all with marketing consent) on PostgreSQL (``--db``, default
   CRM_BENCH_POSTGRES_URL, else CRM_TEST_POSTGRES_URL: its tables are dropped first) and one
   segment ``all`` of them.
2. Starts the SMTP sink.  The sink stands for a mail provider on other machines, and issue 20's
   goal holds "wherever the sink is not the limit", so what it costs on the cores the workers share
   is kept as small as can be: by default (``--sink auto``) Postfix's ``smtp-sink``, one C process
   answering every command (it advertises PIPELINING) and counting the messages (``-c``), 0.04-0.05
   ms of CPU a message; found as ``--smtp-sink PATH``, CRM_BENCH_SMTP_SINK, on PATH or in
   /usr/sbin.  It need not be installed as a service: ``apt-get download postfix``, ``dpkg-deb -x
   postfix_*.deb DIR``, ``--smtp-sink DIR/usr/sbin/smtp-sink`` (its libraries in
   ``DIR/usr/lib/postfix`` are found).  Without it, ``--sinks`` Python processes share one port
   (SO_REUSEPORT), each answering every command and counting what it accepts: a bare asyncio
   protocol (``--sink lean``, 0.10-0.13 ms a message, mostly the system calls of the exchange) or
   ``--sink aiosmtpd`` (0.6-1.0 ms, as much as a worker).
3. Each round runs each case once, in an order that rotates from round to round:
   * **smtplib**: the N rendered messages of the last campaign sent over one connection from this
     process with ``sendmail``; the emails are built *and flattened to bytes* before each batch's
     clock starts (``send_message`` flattens inside the clock: building, not sending), so this is
     the bare SMTP exchange, the ceiling of one connection;
   * **W workers** (``--workers``, default 1,2,4): a campaign queues N messages (timed apart),
     W ``crm worker --queues notify --concurrency C`` processes start and the clock waits until
     RabbitMQ counts W consumers on the queue (start-up not timed), then runs from the relay
     (``Jobs.relay``: the due ids to RabbitMQ, ``[jobs] batch`` per job, crmcore's default 100:
     50 jobs for 5,000 messages, enough to keep 2 x 4 threads busy to the end) until the sink
     has accepted all N and every job is done.  The CPU seconds of the worker processes, of the
     sink, of the PostgreSQL backends serving the bench's database, of RabbitMQ (shared with
     whatever else uses it), of this process (the relay) and of the whole machine are read from
     /proc: the last says how much of the cores other processes took meanwhile.
4. Checks the sink accepted exactly N per case (nothing lost, nothing twice), then prints for each
   case the best and the median messages/s, the ratio of W workers to one worker and to smtplib,
   CPU milliseconds per message (workers, PostgreSQL, sink) and the load average before and after
   each run, and two speed-ups the CPU per message predicts: with a core per worker process (the
   workers' own scaling), and on this machine's cores with nothing else running (each worker
   process held to one core by the GIL; workers, sink and PostgreSQL sharing the cores).

Measured 2026-12-06 13:47, ``--messages 5000 --repeat 3 --workers 1,2`` (PostgreSQL 15 and
RabbitMQ on the same 2-core machine, two lean sink processes, load average 14-16 from other
sessions): smtplib best 841 / median 558 msg/s; 1 worker 955 / 758; 2 workers 826 / 762 (x0.86
best, x1.01 median); CPU a message: workers 0.54-0.73 ms, PostgreSQL 0.17-0.22 ms, sink 0.20-0.24
ms; estimates x1.66 with a core per worker, x1.02 on these 2 cores.  The same bench on the code
before (main 1931913, run with PYTHONPATH in the same hour): 1 worker 389 / 349, 2 workers 389 /
350 (x1.00); workers 1.81-2.39 ms, PostgreSQL 0.22-0.27 ms.  The first figures of this bench
(aiosmtpd sink, batch 200, ``send_message`` timed, load 10.6-14.8): smtplib 243 / 203; 1 worker
302 / 301; 2 workers 349 / 341 (x1.15); 4 workers 288 / 281; worker CPU 1.93-2.48 ms.

At 14:03, load 4-5 (same command): smtplib 3,393 / 3,029 (the bare exchange); 1 worker 1,050 /
982; 2 workers 1,204 / 1,070 (x1.15 best, x1.09 median); workers 0.66-0.89 ms, PostgreSQL
0.20-0.26 ms, sink 0.22-0.28 ms a message; estimates x1.77 with a core per worker, x1.09 on
these 2 cores, which is what was measured.

With SMTP pipelining (the sink advertises it; 2026-12-06 15:38-16:01, four pairs of whole runs
alternating with main e1a5057 on the same script, load 3.6-10.6): 1 worker 1,333-1,551 msg/s best,
2 workers 1,472-1,824, x1.06-1.30 (main: 1,091-1,211 and 1,159-1,306, x1.06-1.15); CPU a message
(medians): workers 0.43-0.57 ms, PostgreSQL 0.15-0.19, sink 0.11-0.14 (main 0.19-0.23), RabbitMQ
and relay 0.01 each; the machine 95-100% busy in every case, other sessions taking 0.3-1.7 ms a
message beside ours.  With a group's sent marks in one statement too (16:08-16:15, load 7.4-10.3):
1 worker 1,518-1,552, 2 workers 1,865-1,914, x1.20-1.26; PostgreSQL 0.14-0.16 ms a message, all our
processes 0.67-0.75 (main 0.94-0.98).  See docs/performance.md, "Scale-out (issue 20)".

The goal (2 workers >= 1.7x one) is not met and cannot be on 2 cores shared with the database and
the sink: it needs one worker to leave a core idle, and a worker at full speed (one core: the
GIL) drives about 0.4 ms a message of PostgreSQL and sink CPU beside its own 0.55 ms, so one
worker nearly fills both cores.  The workers themselves scale: their CPU a message hardly grows
from one to two (x1.66-1.96 with a core each).  Cutting the worker's CPU made the ratio on this
machine no better (the rest of the pipeline is now as large as the worker) but each worker 2.2-2.5
times faster.

With Postfix's smtp-sink and a delivery job's 14 statements cut to 8 (2026-12-06 18:39-19:07,
load 11-19, whole runs alternating with main 0aece90): CPU a message with 1-2 workers, PostgreSQL
0.12-0.14 ms (main 0.15-0.17), sink 0.04-0.05 (the lean one 0.11), workers 0.32-0.36 (0.37-0.39),
all our processes 0.50-0.55 (0.59-0.64).  The measured ratios (x1.04-1.08) say little at that
load; from the CPU (one worker: its CPU w plus ~0.08 ms of waits; two: 2 cores / everything a
message costs) x1.57 is to be expected on an idle machine, where 1.7x needs PostgreSQL, sink and
broker under 0.15-0.16 ms a message beside these workers: they are 0.19-0.20, about 0.1 of it the
three row versions a message writes.  Quieter (19:32-19:39, load 2.4-10.8, 7 statements a job:
customers no longer read for a campaign's round): 1 worker 2,431-2,486 msg/s best, 2 workers
2,748-3,067, x1.11-1.26 (main 2,178-2,183 and 2,339-2,429, x1.07-1.11); 100,000 messages (load
24 falling to 7): 1 worker 2,516, 2 workers 2,359.

Nothing here is a test; the figures are this machine's at its load of the moment.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import smtplib
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from email.message import EmailMessage
from pathlib import Path
from typing import Any

from sqlalchemy import select, text

import crmcore
from crmcore.config import Config
from crmcore.config.jobs import JobSettings
from crmcore.jobs import Jobs
from crmcore.store import tables
from crmcore.testing import reset_database
from segment_all import AllSegmentPlugin  # bench/ is the script's own directory

# The sink stands for a mail provider on other machines: what it costs here is taken from the cores
# the workers share, so it is kept small.  aiosmtpd (``--sink aiosmtpd``) spends 0.6-0.9 ms of CPU a
# message, as much as a worker; this one answers the same commands from a bare asyncio protocol.
LEAN_SINK = r"""
import asyncio, socket, sys

class Count:
    accepted = 0

# PIPELINING (RFC 2920): the commands of a message come in one read and are answered in one write.
REPLIES = {b"EHLO": b"250-sink\r\n250-PIPELINING\r\n250-8BITMIME\r\n250-SMTPUTF8\r\n250 HELP\r\n", b"HELO": b"250 sink\r\n",
           b"MAIL": b"250 OK\r\n", b"RCPT": b"250 OK\r\n", b"RSET": b"250 OK\r\n", b"NOOP": b"250 OK\r\n",
           b"DATA": b"354 End data with <CR><LF>.<CR><LF>\r\n"}

class Smtp(asyncio.Protocol):
    def connection_made(self, transport):
        self.transport, self.buffer, self.in_data = transport, b"", False
        transport.write(b"220 sink ESMTP\r\n")

    def data_received(self, data):
        buffer, out = self.buffer + data, []
        while buffer:
            if self.in_data:  # the content ends with CRLF "." CRLF (smtplib ends it with a CRLF first)
                end = buffer.find(b"\r\n.\r\n")
                if end < 0:
                    break
                buffer, self.in_data = buffer[end + 5:], False
                Count.accepted += 1
                out.append(b"250 2.0.0 Ok: queued\r\n")
                continue
            end = buffer.find(b"\r\n")
            if end < 0:
                break
            verb, buffer = buffer[:4].upper(), buffer[end + 2:]
            if verb == b"QUIT":
                out.append(b"221 Bye\r\n")
                self.transport.write(b"".join(out))
                self.transport.close()
                return
            self.in_data = verb == b"DATA"
            out.append(REPLIES.get(verb, b"502 Command not implemented\r\n"))
        self.buffer = buffer
        if out:
            self.transport.write(b"".join(out))

"""
AIOSMTPD_SINK = r"""
import asyncio, socket, sys
from aiosmtpd.smtp import SMTP

class Count:
    accepted = 0
    async def handle_DATA(self, server, session, envelope):
        Count.accepted += 1
        return "250 2.0.0 Ok"

def protocol():
    handler = Count()
    return lambda: SMTP(handler, hostname="sink")
"""
# Both sinks share their serving loop: a port shared by every sink process (SO_REUSEPORT), "ready"
# once listening, then one line of stdin per question "how many so far?".
SERVE = r"""
async def main(port):
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind(("127.0.0.1", port))
    loop = asyncio.get_running_loop()
    server = await loop.create_server(protocol(), sock=sock)
    print("ready", flush=True)
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while await reader.readline():
        print(Count.accepted, flush=True)
    server.close()

asyncio.run(main(int(sys.argv[1])))
"""
SINKS = {"lean": LEAN_SINK + "\ndef protocol():\n    return Smtp\n" + SERVE, "aiosmtpd": AIOSMTPD_SINK + SERVE}
CRM_BIN = str(Path(sys.executable).with_name("crm"))
CLK_TCK = os.sysconf("SC_CLK_TCK")


def load() -> str:
    one, five, _ = os.getloadavg()
    return f"{one:.2f}/{five:.2f}"


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a live process (all its threads)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def machine_busy() -> float:
    """CPU seconds all cores spent busy since boot (/proc/stat: user, nice, system, irq, softirq,
    steal), whoever spent them: with the shares below it tells what the rest of the machine took."""
    fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    return sum(int(fields[i]) for i in (0, 1, 2, 5, 6, 7)) / CLK_TCK


def rabbitmq_pid() -> int | None:
    """The local RabbitMQ node (beam.smp), if it runs on this machine and can be read."""
    for stat in Path("/proc").glob("[0-9]*/comm"):
        try:
            if stat.read_text().strip() == "beam.smp":
                return int(stat.parent.name)
        except OSError:
            continue
    return None


class Sink:
    """``count`` sink processes (``kind``: lean or aiosmtpd) on one port."""

    def __init__(self, count: int, kind: str = "lean"):
        self.port = free_port()
        self.processes = [subprocess.Popen([sys.executable, "-c", SINKS[kind], str(self.port)], stdin=subprocess.PIPE,
                                           stdout=subprocess.PIPE, text=True) for _ in range(count)]
        for process in self.processes:
            assert process.stdout.readline().strip() == "ready"

    def accepted(self) -> int:
        total = 0
        for process in self.processes:
            process.stdin.write("?\n")
            process.stdin.flush()
            total += int(process.stdout.readline())
        return total

    def cpu(self) -> float:
        return sum(cpu_seconds(p.pid) for p in self.processes)

    def stop(self) -> None:
        for process in self.processes:
            process.stdin.close()
            process.wait(timeout=30)


class PostfixSink:
    """Postfix's ``smtp-sink``: one event-driven C process that answers every command (it
    advertises PIPELINING) and discards the mail.  ``-c`` writes a running count,
    ``sess=S quit=Q mesg=M`` after each message and session, to a file read from its end.

    A Debian package unpacked without installing it works: ``apt-get download postfix`` then
    ``dpkg-deb -x postfix_*.deb DIR`` and ``--smtp-sink DIR/usr/sbin/smtp-sink`` (its libraries,
    ``DIR/usr/lib/postfix``, are found next to it)."""

    def __init__(self, binary: str, folder: Path):
        self.port = free_port()
        self.counter = folder / "smtp-sink.count"
        env = dict(os.environ)
        libs = Path(binary).resolve().parent.parent / "lib" / "postfix"
        if libs.is_dir():  # an unpacked package: its shared libraries are not on the loader's path
            env["LD_LIBRARY_PATH"] = ":".join(filter(None, [str(libs), env.get("LD_LIBRARY_PATH")]))
        # As root it must be told whose privileges to drop to (-u); 256: the listen backlog.
        command = [binary, "-c", *(["-u", "nobody"] if os.geteuid() == 0 else []), f"127.0.0.1:{self.port}", "256"]
        with self.counter.open("wb") as out:
            self.process = subprocess.Popen(command, stdout=out, stderr=subprocess.PIPE, env=env)
        import socket

        deadline = time.monotonic() + 10
        while True:  # ready once it accepts a connection (it prints nothing before)
            assert self.process.poll() is None, self.process.stderr.read().decode()
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                break
            except OSError:
                assert time.monotonic() < deadline, "smtp-sink did not start listening"
                time.sleep(0.02)

    def accepted(self) -> int:
        with self.counter.open("rb") as counts:
            size = counts.seek(0, os.SEEK_END)
            counts.seek(max(0, size - 200))
            records = counts.read().split(b"\r")[:-1]  # each ends with CR; the last may be half written
        return int(records[-1].rsplit(b"mesg=", 1)[1]) if records else 0

    def cpu(self) -> float:
        return cpu_seconds(self.process.pid)

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=30)


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def find_smtp_sink(given: str | None) -> str | None:
    """The ``smtp-sink`` binary: ``given`` (``--smtp-sink``), else on PATH or in /usr/sbin."""
    for candidate in (given, shutil.which("smtp-sink"), "/usr/sbin/smtp-sink"):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    return None


class Bench:
    def __init__(self, args: argparse.Namespace, sink: Sink | PostfixSink, folder: Path):
        self.args, self.sink = args, sink
        self.prefix = f"crmbench{uuid.uuid4().hex[:8]}"
        smtp = {"host": "127.0.0.1", "port": sink.port, "sender": "shop@example.com", "timeout": 30,
                "send_group": args.send_group}
        jobs = {"broker": args.broker, "queue_prefix": self.prefix, "batch": args.batch}
        notify = {"channel": "smtp", "unsubscribe_secret": "bench-secret",
                  "unsubscribe_url": "https://shop.example/u?t={token}"}
        self.config_file = folder / "crm.toml"
        self.config_file.write_text("\n".join(
            [f"[{name}]\n" + "\n".join(f"{k} = {json.dumps(v)}" for k, v in table.items())
             for name, table in (("channels.smtp", smtp), ("jobs", jobs), ("notify", notify))]) + "\n")
        self.crm = crmcore.CRM.open(config=Config.from_mapping({
            "database_url": args.db, "plugins": ["notify"], "channels": {"smtp": smtp}, "jobs": jobs,
            "notify": notify}), extra_plugins=[AllSegmentPlugin("bench-campaign-workers")])
        self.jobs = Jobs(self.crm)
        self.campaigns = 0

    def prepare(self) -> None:
        n = self.args.messages
        for start in range(0, n, 10_000):
            self.crm.customers.add_many([{"name": f"Customer {i}", "email": f"c{i}@example.com",
                                          "consent_marketing": True} for i in range(start, min(n, start + 10_000))])
        self.crm.segments.run("all")

    def campaign(self) -> tuple[str, float]:
        self.campaigns += 1
        name = f"bench-{self.campaigns}"
        started = time.perf_counter()
        done = self.crm.campaigns.run("win-back", segment="all", name=name)
        assert done.enqueued == self.args.messages, done
        return name, time.perf_counter() - started

    def workers(self, count: int) -> dict[str, float]:
        n = self.args.messages
        _, queued_s = self.campaign()
        self.vacuum()
        command = [CRM_BIN, "--db", self.args.db, "--config", str(self.config_file), "--plugins", "notify",
                   "worker", "--queues", "notify", "--concurrency", str(self.args.concurrency)]
        # Start-up is not timed: each worker says "worker started" once it consumes.
        started = [subprocess.Popen(command, stderr=subprocess.PIPE, text=True) for _ in range(count)]
        try:
            for process in started:
                line = process.stderr.readline()
                assert "worker started" in line, line + process.stderr.read()
            self.consuming(count)
            before, sink_cpu, cpu = self.sink.accepted(), self.sink.cpu(), sum(cpu_seconds(p.pid) for p in started)
            load_before, pg_before = load(), self.database_cpu()
            rabbit = rabbitmq_pid()
            rabbit_cpu, machine, own = cpu_seconds(rabbit) if rabbit else 0.0, machine_busy(), time.process_time()
            t0 = time.perf_counter()
            job_ids = self.jobs.relay()
            while self.sink.accepted() - before < n:
                assert all(p.poll() is None for p in started), "a worker exited"
                time.sleep(0.05)
            while self.jobs.counts().get("queued", 0) + self.jobs.counts().get("running", 0):
                time.sleep(0.02)
            elapsed = time.perf_counter() - t0
            cpu = sum(cpu_seconds(p.pid) for p in started) - cpu
            sink_cpu = self.sink.cpu() - sink_cpu
            pg_cpu = sum(c - pg_before.get(pid, 0.0) for pid, c in self.database_cpu().items())  # workers' still open
            own, machine = time.process_time() - own, machine_busy() - machine
            rabbit_cpu = cpu_seconds(rabbit) - rabbit_cpu if rabbit else 0.0
            accepted = self.sink.accepted() - before
        finally:
            for process in started:
                process.send_signal(signal.SIGTERM)
            for process in started:
                process.wait(timeout=120)
        assert accepted == n, f"the sink accepted {accepted} of {n}"
        return {"rate": n / elapsed, "seconds": elapsed, "queued_s": queued_s, "jobs": len(job_ids),
                "cpu_ms": 1000 * cpu / n, "sink_cpu_ms": 1000 * sink_cpu / n, "pg_cpu_ms": 1000 * pg_cpu / n,
                "rabbit_ms": 1000 * rabbit_cpu / n, "bench_ms": 1000 * own / n, "machine_ms": 1000 * machine / n,
                "load": f"{load_before} -> {load()}"}

    def vacuum(self) -> None:
        """``VACUUM ANALYZE`` the tables delivery changes (not timed).  This machine's server runs with
        autovacuum off (test settings): without it every case would walk the dead row versions all
        the earlier cases left in the outbox's index, each case slower than the one before."""
        with self.crm.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(text("VACUUM ANALYZE notify_outbox, jobs, audit_log"))

    def database_cpu(self) -> dict[int, float]:
        """CPU seconds of each PostgreSQL backend serving the bench's database (the server runs on
        this machine; a backend that started since counts from zero)."""
        with self.crm.engine.connect() as conn:
            pids = conn.execute(text("SELECT pid FROM pg_stat_activity WHERE datname = current_database()")).scalars()
            found = {}
            for pid in pids:
                try:
                    found[pid] = cpu_seconds(pid)
                except (FileNotFoundError, PermissionError):
                    pass
            return found

    def consuming(self, count: int) -> None:
        """Wait until RabbitMQ counts ``count`` consumers on the notify queue: "worker started" is
        printed before Dramatiq's consumer threads have connected, and their start-up is not timed."""
        broker = self.jobs.queue().broker
        if not hasattr(broker, "channel"):
            return  # Redis: no consumer count to ask
        name = self.jobs.queue_name("notify")
        broker.declare_queue(name, ensure=True)  # (a passive declare of a queue not there yet closes the channel)
        deadline = time.monotonic() + 60
        while broker.channel.queue_declare(name, passive=True).method.consumer_count < count:
            assert time.monotonic() < deadline, "the workers did not start consuming"
            time.sleep(0.05)

    def smtplib(self) -> dict[str, float]:
        """A campaign's rendered messages, sent over one connection; only sending is timed.  They are
        marked sent first (bench bookkeeping) so that no worker of a later case sends them again."""
        t = tables.notify_outbox
        name, _ = self.campaign()
        with self.crm.engine.begin() as conn:
            conn.execute(t.update().where(t.c.idempotency_key.like(f"campaign:{name}:%")).values(status="sent"))
        query = select(t.c.recipient, t.c.subject, t.c.body, t.c.payload).where(
            t.c.idempotency_key.like(f"campaign:{name}:%")).order_by(t.c.id)
        before, sink_cpu, load_before = self.sink.accepted(), self.sink.cpu(), load()
        elapsed, sent = 0.0, 0
        with self.crm.engine.connect() as conn, smtplib.SMTP("127.0.0.1", self.sink.port, timeout=30) as smtp:
            rows = conn.execution_options(stream_results=True, yield_per=2000).execute(query)
            for batch in rows.partitions():
                emails: list[tuple[str, bytes]] = []
                for recipient, subject, body, payload in batch:
                    email = EmailMessage()
                    email["From"] = "shop@example.com"
                    email["To"] = recipient
                    email["Subject"] = subject
                    email.set_content(body, charset="utf-8")
                    if payload and payload.get("html"):
                        email.add_alternative(payload["html"], subtype="html", charset="utf-8")
                    # Flattened before the clock: send_message would run the generator inside it
                    # (about 0.5 ms a message), which is building, not sending.
                    emails.append((recipient, email.as_bytes(policy=email.policy.clone(linesep="\r\n"))))
                t0 = time.perf_counter()
                for recipient, data in emails:
                    smtp.sendmail("shop@example.com", [recipient], data)
                elapsed += time.perf_counter() - t0
                sent += len(emails)
        accepted = self.sink.accepted() - before
        assert accepted == sent == self.args.messages, (accepted, sent)
        return {"rate": sent / elapsed, "seconds": elapsed, "sink_cpu_ms": 1000 * (self.sink.cpu() - sink_cpu) / sent,
                "load": f"{load_before} -> {load()}"}

    def close(self) -> None:
        self.jobs.queue().delete_queues()
        self.jobs.queue().close()
        self.crm.close()


def cores_estimate(results: dict[Any, list[dict[str, float]]], case: int, one: int) -> float:
    """The speed-up of ``case`` workers over ``one`` that the CPU per message predicts on this machine's
    cores when nothing else runs: each worker process is held to a core (the GIL), and the workers,
    the sink, PostgreSQL, RabbitMQ and the bench's relay together to all the cores."""
    cores = os.cpu_count() or 1

    def rate(workers: int) -> float:
        runs = results[workers]
        worker = statistics.median(r["cpu_ms"] for r in runs)
        total = worker + statistics.median(r["sink_cpu_ms"] + r["pg_cpu_ms"] + r["rabbit_ms"] + r["bench_ms"] for r in runs)
        return min(min(workers, cores) * 1000 / worker, cores * 1000 / total)

    return rate(case) / rate(one)


def breakdown(runs: list[dict[str, float]]) -> str:
    """The medians of where a message's CPU went, and how much of the machine others took meanwhile."""
    def median(key: str) -> float:
        return statistics.median(r[key] for r in runs)

    ours = statistics.median(r["cpu_ms"] + r["pg_cpu_ms"] + r["sink_cpu_ms"] + r["rabbit_ms"] + r["bench_ms"] for r in runs)
    had = statistics.median((os.cpu_count() or 1) * r["seconds"] * 1000 / (r["rate"] * r["seconds"]) for r in runs)
    return (f"{'':22} CPU ms/msg (medians): workers {median('cpu_ms'):.2f}, PostgreSQL {median('pg_cpu_ms'):.2f}, "
            f"sink {median('sink_cpu_ms'):.2f}, RabbitMQ {median('rabbit_ms'):.2f} (shared), bench {median('bench_ms'):.2f}: "
            f"{ours:.2f} in all; whole machine busy {median('machine_ms'):.2f} of the {had:.2f} the cores had "
            f"(others: {median('machine_ms') - ours:.2f})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=100_000)
    parser.add_argument("--workers", default="1,2,4", help="worker process counts (comma-separated)")
    parser.add_argument("--concurrency", type=int, default=4, help="threads per worker process")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--batch", type=int, default=JobSettings().batch,
                        help="[jobs] batch: message ids per delivery job (default: crmcore's)")
    parser.add_argument("--send-group", type=int, default=50, help="[channels.smtp] send_group")
    parser.add_argument("--sinks", type=int, default=2, help="sink processes on the sink's port (lean, aiosmtpd)")
    parser.add_argument("--sink", choices=["auto", "smtp-sink", *sorted(SINKS)], default="auto",
                        help="the SMTP sink: Postfix's smtp-sink (C, one process), a bare asyncio protocol (lean) "
                             "or aiosmtpd (0.6-0.9 ms of CPU a message); auto: smtp-sink if found, else lean")
    parser.add_argument("--smtp-sink", metavar="PATH", default=os.environ.get("CRM_BENCH_SMTP_SINK"),
                        help="the smtp-sink binary (default: CRM_BENCH_SMTP_SINK, PATH, /usr/sbin/smtp-sink)")
    parser.add_argument("--db", default=os.environ.get("CRM_BENCH_POSTGRES_URL") or os.environ.get("CRM_TEST_POSTGRES_URL"))
    parser.add_argument("--broker", default=os.environ.get("CRM_TEST_RABBITMQ_URL", "amqp://guest:guest@127.0.0.1:5672/%2F"))
    args = parser.parse_args()
    if not args.db or not args.db.startswith("postgres"):
        parser.error("--db must be a PostgreSQL URL (several worker processes write at once); "
                     "or set CRM_BENCH_POSTGRES_URL / CRM_TEST_POSTGRES_URL")
    counts = [int(w) for w in args.workers.split(",")]
    smtp_sink = find_smtp_sink(args.smtp_sink) if args.sink in ("auto", "smtp-sink") else None
    if args.sink == "smtp-sink" and smtp_sink is None:
        parser.error("no smtp-sink binary (give --smtp-sink PATH; see PostfixSink)")
    kind = "smtp-sink" if smtp_sink else "lean" if args.sink == "auto" else args.sink
    sinks = f"smtp-sink ({smtp_sink})" if smtp_sink else f"{args.sinks} {kind} sink processes"
    print(f"{args.messages:,} messages, workers {counts} x {args.concurrency} threads, batch {args.batch}, "
          f"send_group {args.send_group}, {sinks}; {os.cpu_count()} cores, load {load()}")
    reset_database(args.db)
    with tempfile.TemporaryDirectory() as folder:
        sink = PostfixSink(smtp_sink, Path(folder)) if smtp_sink else Sink(args.sinks, kind)
        bench = Bench(args, sink, Path(folder))
        try:
            started = time.perf_counter()
            bench.prepare()
            print(f"prepared {args.messages:,} customers in {time.perf_counter() - started:.1f} s")
            cases: list[Any] = ["smtplib", *counts]
            results: dict[Any, list[dict[str, float]]] = {case: [] for case in cases}
            for round_ in range(args.repeat):
                order = cases[round_ % len(cases):] + cases[:round_ % len(cases)]
                for case in order:
                    result = bench.smtplib() if case == "smtplib" else bench.workers(case)
                    results[case].append(result)
                    extra = "" if case == "smtplib" else \
                        f", {result['jobs']} jobs, campaign queued in {result['queued_s']:.1f} s, " \
                        f"CPU ms/msg: workers {result['cpu_ms']:.2f}, PostgreSQL {result['pg_cpu_ms']:.2f}, " \
                        f"RabbitMQ {result['rabbit_ms']:.2f}, bench {result['bench_ms']:.2f}, " \
                        f"whole machine {result['machine_ms']:.2f} (of {os.cpu_count() * result['seconds'] * 1000 / args.messages:.2f} " \
                        f"the cores had)"
                    print(f"  round {round_ + 1} {str(case) + ' worker(s)' if case != 'smtplib' else 'smtplib':12} "
                          f"{result['rate']:8,.0f} msg/s ({result['seconds']:.1f} s{extra}, "
                          f"sink CPU {result['sink_cpu_ms']:.2f} ms/msg, load {result['load']})", flush=True)
        finally:
            bench.close()
            sink.stop()
    print()
    best = {case: max(r["rate"] for r in runs) for case, runs in results.items()}
    median = {case: statistics.median(r["rate"] for r in runs) for case, runs in results.items()}
    one = counts[0]
    for case in cases:
        line = f"{str(case) + ' worker(s)' if case != 'smtplib' else 'smtplib, 1 connection':22} best " \
               f"{best[case]:8,.0f}  median {median[case]:8,.0f} msg/s"
        if case != "smtplib":
            cpu = statistics.median(r["cpu_ms"] for r in results[case])
            cpu_one = statistics.median(r["cpu_ms"] for r in results[one])
            line += (f"   x{one} worker: {best[case] / best[one]:.2f} (median {median[case] / median[one]:.2f})"
                     f"   / smtplib: {best[case] / best['smtplib']:.2f}"
                     f"   worker CPU {cpu:.2f} ms/msg (CPU-bound estimate x{case / one * cpu_one / cpu:.2f};"
                     f" on {os.cpu_count()} cores x{cores_estimate(results, case, one):.2f})")
            line += "\n" + breakdown(results[case])
        print(line)
    print("CPU-bound estimate: the speed-up with a core per worker process, from the CPU each message costs "
          "(N x CPU per message with one worker / with N); the measured ratio is lower when the cores are shared")
    print(f"on {os.cpu_count()} cores: the same, with the workers, the sink and PostgreSQL sharing this machine's "
          "cores and nothing else running (a worker process uses at most one core: the GIL)")
    print(f"load after: {load()}")


if __name__ == "__main__":
    main()
