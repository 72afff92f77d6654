"""Benchmark: a templated campaign delivered to a local SMTP server, against
smtplib sending the same rendered messages over one connection.

    .venv/bin/python bench/notify.py                      # 10,000 and 100,000 recipients
    .venv/bin/python bench/notify.py --sizes 20000 --workers 1

For each size:

1. ``--prepare`` (a subprocess): a fresh migrated SQLite CRM with N customers
   (cheap synthetic values, half of them with locale zh-CN through their
   country), 90% with marketing consent, and a segment ``all`` holding every
   customer (one INSERT ... SELECT).
2. ``--measure`` (another subprocess, so its peak memory is its own): an
   aiosmtpd server in a third process counts what it accepts.
   (a) crm: ``crm.campaigns.run("win-back", segment="all")`` (consent checked in
   SQL, Jinja2 rendering of subject/text/HTML in the customer's locale, outbox
   rows in batches) and then ``crm.notify.dispatch(workers=N)`` until nothing
   is due (the ``smtp`` channel, each worker thread with its own connection,
   outbox bookkeeping per message; ``--workers``, default 1, and
   ``--send-group``, default 50: messages marked sending per commit).  Timed from the campaign's start to the last
   delivery.
   (b) baseline: the same rendered messages (read from the outbox outside the
   clock, streamed) built into the same MIME shape (text + HTML) and sent with
   ``smtplib.SMTP.send_message`` over one connection.
   The server's counts must equal the number of eligible recipients for both.
3. Prints messages/s for (a) and (b), the ratio, and the peak RSS of the
   measuring process after (a) (before (b) runs), for each size: memory flat in
   the campaign size means about the same peak for 10k and 100k.

Timings depend on this machine and its load; nothing here is a test.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import signal
import smtplib
import socket
import subprocess
import sys
import tempfile
import time
from email.message import EmailMessage
from pathlib import Path
from typing import Any

from sqlalchemy import select

import crmcore
from crmcore.store import tables
from segment_all import AllSegmentPlugin  # bench/ is the script's own directory

HERE = Path(__file__).resolve().parent
SERVER = """
import asyncio, signal, sys
from aiosmtpd.controller import Controller

class Count:
    accepted = 0
    async def handle_DATA(self, server, session, envelope):
        Count.accepted += 1
        return "250 2.0.0 Ok"

controller = Controller(Count(), hostname="127.0.0.1", port=int(sys.argv[1]))
controller.start()
print("ready", flush=True)
for line in sys.stdin:  # one line per question: how many so far?
    print(Count.accepted, flush=True)
controller.stop()
"""
NAMES_ZH = "王李张刘陈杨黄赵吴周"
GIVEN_ZH = "伟芳娜敏静丽强磊军洋"
NAMES_EN = ["James", "Mary", "Anna", "Lukas", "Sofia", "Noah", "Emma", "Liam", "Mia", "Ben"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def config(db: Path, port: int, send_group: int = 1) -> dict[str, Any]:
    return {"database_url": f"sqlite:///{db}", "plugins": ["notify"],
            "channels": {"smtp": {"host": "127.0.0.1", "port": port, "sender": "shop@example.com",
                                  "sender_name": "示例商店", "timeout": 30, "send_group": send_group}},
            "notify": {"channel": "smtp", "unsubscribe_secret": "bench-secret",
                       "unsubscribe_url": "https://shop.example/u?t={token}", "locales": {"CN": "zh-CN"}}}


def open_crm(db: Path, port: int, send_group: int = 1) -> crmcore.CRM:
    from crmcore.config import Config

    return crmcore.CRM.open(config=Config.from_mapping(config(db, port, send_group)), extra_plugins=[AllSegmentPlugin("bench-notify")])


def prepare(db: Path, n: int) -> None:
    """N customers in batches of 10,000, then the ``all`` segment."""
    rng = random.Random(n)
    crm = open_crm(db, 25)
    for start in range(0, n, 10_000):
        rows = []
        for i in range(start, min(n, start + 10_000)):
            zh = i % 2 == 0
            name = rng.choice(NAMES_ZH) + rng.choice(GIVEN_ZH) if zh else f"{rng.choice(NAMES_EN)} {i}"
            rows.append({"name": name, "email": f"c{i}@example.com", "country": "CN" if zh else "GB",
                         "consent_marketing": rng.random() < 0.9})
        crm.customers.add_many(rows)
    crm.segments.run("all")
    crm.close()


def ask(server: subprocess.Popen) -> int:
    server.stdin.write("?\n")
    server.stdin.flush()
    return int(server.stdout.readline())


def measure(db: Path, workers: int, send_group: int) -> dict[str, Any]:
    port = free_port()
    server = subprocess.Popen([sys.executable, "-c", SERVER, str(port)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    try:
        assert server.stdout.readline().strip() == "ready"
        crm = open_crm(db, port, send_group)
        started = time.perf_counter()
        campaign = crm.campaigns.run("win-back", segment="all")
        queued_s = time.perf_counter() - started
        while True:
            result = crm.notify.dispatch(limit=2000, workers=workers)
            if not (result.sent or result.retried or result.dead or result.suppressed):
                break
        ours_s = time.perf_counter() - started
        ours_peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        ours_count = ask(server)
        status = crm.notify.status_counts()

        baseline_s, sent = baseline(crm, port)
        baseline_count = ask(server) - ours_count
        crm.close()
    finally:
        server.stdin.close()
        server.wait(timeout=30)
    return {"eligible": campaign.eligible, "skipped_consent": campaign.skipped_consent, "queued_s": queued_s,
            "ours_s": ours_s, "ours_count": ours_count, "status": status, "baseline_s": baseline_s,
            "baseline_sent": sent, "baseline_count": baseline_count, "ours_peak_mb": ours_peak_mb}


def baseline(crm: Any, port: int) -> tuple[float, int]:
    """smtplib over one connection, the same rendered messages (streamed from the outbox)."""
    t = tables.notify_outbox
    query = select(t.c.recipient, t.c.subject, t.c.body, t.c.payload).where(t.c.status == "sent").order_by(t.c.id)
    elapsed, sent = 0.0, 0
    with crm.engine.connect() as conn:
        rows = conn.execution_options(stream_results=True, yield_per=2000).execute(query)
        smtp = smtplib.SMTP("127.0.0.1", port, timeout=30)
        for batch in rows.partitions():
            start = time.perf_counter()
            for recipient, subject, body, payload in batch:
                email = EmailMessage()
                email["From"] = "示例商店 <shop@example.com>"
                email["To"] = recipient
                email["Subject"] = subject
                email.set_content(body, charset="utf-8")
                email.add_alternative(payload["html"], subtype="html", charset="utf-8")
                smtp.send_message(email)
                sent += 1
            elapsed += time.perf_counter() - start
        smtp.quit()
    return elapsed, sent


def child(args: list[str]) -> dict[str, Any] | None:
    out = subprocess.run([sys.executable, __file__, *args], check=True, capture_output=True, text=True)
    return json.loads(out.stdout) if out.stdout.strip() else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="10000,100000", help="Campaign sizes (comma-separated).")
    parser.add_argument("--workers", type=int, default=1,
                        help="Dispatcher threads, as `crm notify dispatch --workers N` (default 1).")
    parser.add_argument("--send-group", type=int, default=50,
                        help="[channels.smtp] send_group: messages marked sending per commit (default 50).")
    parser.add_argument("--prepare", nargs=2, metavar=("DB", "N"), help=argparse.SUPPRESS)
    parser.add_argument("--measure", metavar="DB", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.prepare:
        prepare(Path(args.prepare[0]), int(args.prepare[1]))
        return
    if args.measure:
        print(json.dumps(measure(Path(args.measure), args.workers, args.send_group)))
        return
    print(f"dispatcher workers: {args.workers}, send_group: {args.send_group}")
    print(f"load: {os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f} {os.getloadavg()[2]:.2f} "
          f"on {os.cpu_count()} cores")
    with tempfile.TemporaryDirectory() as tmp:
        for n in (int(s) for s in args.sizes.split(",")):
            db = Path(tmp) / f"notify-{n}.db"
            start = time.perf_counter()
            child(["--prepare", str(db), str(n)])
            print(f"\n{n:,} customers prepared in {time.perf_counter() - start:.1f} s")
            r = child(["--measure", str(db), "--workers", str(args.workers), "--send-group", str(args.send_group)])
            ours = r["ours_count"] / r["ours_s"]
            base = r["baseline_sent"] / r["baseline_s"]
            print(f"  campaign: {r['eligible']:,} eligible, {r['skipped_consent']:,} skipped for consent; "
                  f"queued in {r['queued_s']:.1f} s; outbox {r['status']}")
            print(f"  server accepted: crm {r['ours_count']:,}, baseline {r['baseline_count']:,}")
            assert r["ours_count"] == r["eligible"] == r["baseline_count"], "a message was lost or sent twice"
            print(f"  (a) crm campaign + dispatch: {ours:8,.0f} messages/s ({r['ours_s']:.1f} s; of which queueing "
                  f"{r['queued_s']:.1f} s = {r['eligible'] / r['queued_s']:,.0f} messages/s)")
            print(f"  (b) smtplib, one connection:  {base:8,.0f} messages/s ({r['baseline_s']:.1f} s)")
            print(f"  ratio (a)/(b): {ours / base:.2f}   peak RSS of the measuring process after (a): "
                  f"{r['ours_peak_mb']:.0f} MiB")
    print(f"\nload after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    main()
