"""Bounded load test of the HTTP API on PostgreSQL (issue 16): no errors, no duplicates, no debt.

    .venv/bin/python bench/api_load.py                                   # crm_bench, 10 s, 16 clients
    .venv/bin/python bench/api_load.py postgresql://postgres@127.0.0.1:5432/crm_bench --seconds 30 --clients 32

The database is created if missing and emptied (every table dropped) first: point it at a database
of its own.  Builds an admin ``boss`` with an API token, 500 customers, and 200 of them with 1,000
loyalty points each (``crm.loyalty.adjust`` on the ``points`` scheme), then starts
``crm serve --workers 2`` and runs N asyncio + httpx clients for T seconds, each picking at random:

* ``read`` (50%): ``GET /customers/{id}`` or a 50-row page;
* ``create`` (25%): ``POST /customers`` with a fresh ``Idempotency-Key``, sent twice at once (the
  retry of a client that timed out): both answers must be 201 with the same record;
* ``redeem`` (25%): ``POST /customers/{id}/loyalty/redeem`` of 1-300 points with a fresh key, also
  sent twice at once: 201 (both the same entry) or 409 insufficient points (both).  When the
  loyalty routes are not on this branch yet (not in ``/openapi.json``), redemptions are skipped
  and said so; the balance check still runs.

At the end, in SQL: zero 5xx and transport errors; each create key made exactly one customer
(the key is stored in ``source``, a column without a unique constraint, so a duplicate would show);
no customer's ledger sums below zero.  Prints throughput and p50/p99 per operation and the load
average.  Not a test (not run in CI): a figure and a check to run by hand.

Figures (issue 16, 2026-12-06, load average 2; client, server and PostgreSQL on the same two cores; 16
clients, 10 s, ``--workers 2``, with redemptions): 83 operations/s; create (x2) 19/s, p50 203 ms, p99 779 ms
(390 answers 201, 195 customers for 195 keys); redeem (x2) 21/s, p50 247 ms, p99 711 ms (211 redemptions in
the ledger); read one 31/s, p50 99 ms; read page 12/s, p50 105 ms; zero errors, zero duplicates, no negative
balance.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections import defaultdict
from pathlib import Path
from typing import Any

import httpx

DEFAULT_URL = "postgresql://postgres@127.0.0.1:5432/crm_bench"
SCHEME = "points"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def fresh_database(url: str) -> None:
    """Create the database if it is missing, then drop every table in it."""
    import psycopg

    from crmcore.testing import reset_database

    plain = url.replace("postgresql+psycopg://", "postgresql://")
    server, _, name = plain.rpartition("/")
    with psycopg.connect(f"{server}/postgres", autocommit=True) as conn:
        if conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone() is None:
            conn.execute(f'CREATE DATABASE "{name}"')
    reset_database(url)


def build(directory: Path, url: str, customers: int, with_points: int) -> tuple[Path, str, list[int], list[int]]:
    """crm.toml, boss's token, the customer ids and those holding points."""
    from crmcore import CRM
    from crmcore.config import Config

    config = directory / "crm.toml"
    config.write_text(f'database_url = "{url}"\ndefault_user = "boss"\n')
    crm = CRM.open(config=Config.load(config))
    crm.users.add("boss", role="admin")
    crm.customers.add_many({"name": f"Load {i}", "email": f"load{i}@example.com"} for i in range(customers))
    ids = sorted(c.id for c in crm.customers.list())
    holders = ids[:with_points]
    for customer_id in holders:
        crm.loyalty.adjust(customer_id, 1000, SCHEME, "bench seed")
    token = crm.tokens.create("boss", "load")[1]
    crm.close()
    return config, token, ids, holders


class Tally:
    """Latencies and outcomes per operation, and what the end checks need."""

    def __init__(self) -> None:
        self.latency: dict[str, list[float]] = defaultdict(list)
        self.status: dict[str, dict[int, int]] = defaultdict(lambda: defaultdict(int))
        self.errors: list[str] = []
        self.create_keys: set[str] = set()

    def note(self, op: str, started: float, response: httpx.Response) -> None:
        self.latency[op].append((time.perf_counter() - started) * 1000)
        self.status[op][response.status_code] += 1
        if response.status_code >= 500:
            self.errors.append(f"{op}: {response.status_code} {response.text[:200]}")


async def client_loop(client: httpx.AsyncClient, stop: float, ids: list[int], holders: list[int],
                      redeem: bool, tally: Tally, rng: random.Random) -> None:
    while time.perf_counter() < stop:
        roll = rng.random()
        try:
            if roll < 0.5 or (roll >= 0.75 and not redeem):
                started = time.perf_counter()
                if rng.random() < 0.7:
                    response = await client.get(f"/customers/{rng.choice(ids)}")
                    op = "read one"
                else:
                    response = await client.get("/customers", params={"limit": 50})
                    op = "read page"
                tally.note(op, started, response)
                if response.status_code != 200:
                    tally.errors.append(f"{op}: {response.status_code} {response.text[:200]}")
            elif roll < 0.75:
                key = f"load-{uuid.uuid4().hex}"
                body = {"name": f"Created {key[-6:]}", "source": key}
                started = time.perf_counter()
                first, retry = await asyncio.gather(*(client.post("/customers", json=body,
                                                                  headers={"Idempotency-Key": key})
                                                      for _ in range(2)))
                tally.note("create (x2)", started, first)
                tally.status["create (x2)"][retry.status_code] += 1
                tally.create_keys.add(key)
                if not (first.status_code == retry.status_code == 201 and first.json()["id"] == retry.json()["id"]):
                    tally.errors.append(f"create {key}: {first.status_code}/{retry.status_code} "
                                        f"{first.text[:120]} {retry.text[:120]}")
            else:
                key = f"redeem-{uuid.uuid4().hex}"
                customer = rng.choice(holders)
                body = {"points": rng.randint(1, 300), "scheme": SCHEME, "reason": "load test"}
                started = time.perf_counter()
                first, retry = await asyncio.gather(*(client.post(f"/customers/{customer}/loyalty/redeem", json=body,
                                                                  headers={"Idempotency-Key": key})
                                                      for _ in range(2)))
                tally.note("redeem (x2)", started, first)
                tally.status["redeem (x2)"][retry.status_code] += 1
                same = first.status_code == retry.status_code and (first.status_code != 201
                                                                  or first.json() == retry.json())
                if first.status_code not in (201, 409) or not same:
                    tally.errors.append(f"redeem {key}: {first.status_code}/{retry.status_code} "
                                        f"{first.text[:120]} {retry.text[:120]}")
        except httpx.HTTPError as exc:
            tally.errors.append(f"transport: {exc!r}")


async def drive(base: str, token: str, seconds: float, clients: int, ids: list[int], holders: list[int],
                redeem: bool) -> tuple[Tally, float]:
    tally = Tally()
    limits = httpx.Limits(max_connections=clients * 2, max_keepalive_connections=clients * 2)
    async with httpx.AsyncClient(base_url=base, headers={"Authorization": f"Bearer {token}"}, limits=limits,
                                 timeout=60) as client:
        began = time.perf_counter()
        stop = began + seconds
        await asyncio.gather(*(client_loop(client, stop, ids, holders, redeem, tally, random.Random(n))
                               for n in range(clients)))
        return tally, time.perf_counter() - began


def check_database(url: str, keys: set[str]) -> list[str]:
    """Duplicate creates and negative balances, in SQL."""
    from sqlalchemy import create_engine, text

    from crmcore.store.engine import normalize_url

    problems = []
    engine = create_engine(normalize_url(url))
    with engine.connect() as conn:
        counts = dict(conn.execute(text("SELECT source, COUNT(*) FROM customers WHERE source LIKE 'load-%' "
                                        "GROUP BY source")).all())
        duplicated = {k: n for k, n in counts.items() if n != 1}
        missing = keys - set(counts)
        if duplicated:
            problems.append(f"{len(duplicated)} create keys made more than one customer: {list(duplicated)[:5]}")
        if missing:
            problems.append(f"{len(missing)} acknowledged create keys made no customer")
        negative = conn.execute(text("SELECT customer_id, scheme, SUM(points) FROM loyalty_ledger "
                                     "GROUP BY customer_id, scheme HAVING SUM(points) < 0")).all()
        if negative:
            problems.append(f"{len(negative)} negative balances: {negative[:5]}")
        spent = conn.execute(text("SELECT COUNT(*) FROM loyalty_ledger WHERE points < 0")).scalar()
    engine.dispose()
    print(f"database: {len(counts)} created customers for {len(keys)} keys, {spent} redemptions in the ledger, "
          f"{len(negative)} negative balances")
    return problems


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * share))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("url", nargs="?", default=DEFAULT_URL, help=f"PostgreSQL URL (default {DEFAULT_URL})")
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()

    directory = Path(tempfile.mkdtemp(prefix="crm-api-load-"))
    fresh_database(args.url)
    config, token, ids, holders = build(directory, args.url, 500, 200)
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "crmcore.cli", "--config", str(config), "serve", "--port",
                               str(port), "--workers", str(args.workers), "--log-level", "warning"],
                              env={**os.environ, "CRM_USER": "boss"}, cwd=directory)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(base + "/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline or server.poll() is not None:
                raise SystemExit("crm serve did not start")
            time.sleep(0.2)
        paths = httpx.get(base + "/openapi.json").json()["paths"]
        redeem = "/customers/{id}/loyalty/redeem" in paths
        if not redeem:
            print("no loyalty routes on this branch: redemptions skipped (reads take their share)")
        tally, elapsed = asyncio.run(drive(base, token, args.seconds, args.clients, ids, holders, redeem))
    finally:
        server.terminate()
        server.wait(timeout=30)
    load = os.getloadavg()
    total = sum(len(v) for v in tally.latency.values())
    print(f"\n{args.clients} clients, {args.seconds:.0f} s, crm serve --workers {args.workers}, "
          f"load average {load[0]:.1f} {load[1]:.1f} {load[2]:.1f} ({os.cpu_count()} CPUs)")
    print(f"{total / elapsed:.0f} operations/s in all (a create or redeem operation is two requests)")
    for op, values in sorted(tally.latency.items()):
        statuses = ", ".join(f"{s}: {n}" for s, n in sorted(tally.status[op].items()))
        print(f"  {op:12} {len(values) / elapsed:7.1f}/s  p50 {percentile(values, 0.5):7.1f} ms  "
              f"p99 {percentile(values, 0.99):7.1f} ms  ({statuses})")
    problems = tally.errors + check_database(args.url, tally.create_keys)
    for problem in problems[:20]:
        print("PROBLEM:", problem)
    print("OK: zero errors, zero duplicate creates, no negative balance" if not problems
          else f"FAILED: {len(problems)} problems")
    sys.exit(1 if problems else 0)


if __name__ == "__main__":
    main()
