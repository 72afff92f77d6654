"""What ix_deals_purchases (revision 0027_rfm) costs deal writes, against ix_deals_stage it replaced.

    .venv/bin/python bench/deal_index_writes.py                 # 50,000 inserts + 20,000 moves, 3 rounds
    .venv/bin/python bench/deal_index_writes.py --deals 20000 --repeats 5

Two SQLite files with the deals table of the 0022 schema (``ix_deals_stage``, ``ix_deals_customer_id``,
``ix_deals_owner``, ``ix_deals_archived_at``, the external id's unique index); on one of them
``ix_deals_stage`` is replaced by ``ix_deals_purchases (stage, pipeline, customer_id, closed_at,
amount)`` as the migration does.  Each round, alternating which file goes first: insert ``--deals``
deals with ``executemany`` (one transaction) and then move ``--deals // 2.5`` of them to ``won``
one ``UPDATE`` (stage, closed_at) and one commit each, as a stage move does.  Prints CPU and wall
per side, best and median, the ratio new / old and the load average; nothing here is a test.
"""

from __future__ import annotations

import argparse
import os
import random
import sqlite3
import statistics
import tempfile
import time
from pathlib import Path

DEALS = """CREATE TABLE deals (
    id INTEGER NOT NULL PRIMARY KEY, customer_id INTEGER NOT NULL, title VARCHAR(200) NOT NULL,
    amount BIGINT NOT NULL, currency VARCHAR(3) NOT NULL, pipeline VARCHAR(50) NOT NULL,
    stage VARCHAR(50) NOT NULL, probability SMALLINT NOT NULL, expected_close DATE, closed_at DATETIME,
    owner VARCHAR(100), lost_reason VARCHAR(200), attributes JSON NOT NULL, external_id VARCHAR(100) UNIQUE,
    created_at DATETIME NOT NULL, updated_at DATETIME NOT NULL, archived_at DATETIME)"""
COMMON = ["CREATE INDEX ix_deals_customer_id ON deals (customer_id)",
          "CREATE INDEX ix_deals_owner ON deals (owner)",
          "CREATE INDEX ix_deals_archived_at ON deals (archived_at)"]
OLD = ["CREATE INDEX ix_deals_stage ON deals (stage)"]
NEW = ["CREATE INDEX ix_deals_purchases ON deals (stage, pipeline, customer_id, closed_at, amount)"]


def make(path: Path, indexes: list[str]) -> sqlite3.Connection:
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    for sql in [DEALS, *COMMON, *indexes]:
        db.execute(sql)
    return db


def round_(db: sqlite3.Connection, start: int, deals: int, seed: int) -> tuple[float, float]:
    """Insert ``deals`` deals, then move 40% of them to won one transaction each: (cpu, wall)."""
    rnd = random.Random(seed)
    rows = [(start + i, rnd.randrange(1, 100_000), f"deal {start + i}", rnd.randrange(1, 10**9), "CNY", "default",
             rnd.choice(("lead", "qualified", "proposal", "negotiation")), 50, None, None, "rep1", None, "{}",
             f"x{start + i}", "2026-01-01 00:00:00.000000", "2026-01-01 00:00:00.000000", None)
            for i in range(deals)]
    moves = rnd.sample(range(start, start + deals), int(deals / 2.5))
    cpu, wall = time.process_time(), time.perf_counter()
    db.execute("BEGIN")
    db.executemany(f"INSERT INTO deals VALUES ({', '.join('?' * 17)})", rows)
    db.execute("COMMIT")
    for deal in moves:
        db.execute("BEGIN IMMEDIATE")
        db.execute("UPDATE deals SET stage = 'won', closed_at = '2026-02-01 00:00:00.000000', "
                   "updated_at = '2026-02-01 00:00:00.000000' WHERE id = ?", (deal,))
        db.execute("COMMIT")
    return time.process_time() - cpu, time.perf_counter() - wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--deals", type=int, default=50_000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    results: dict[str, list[tuple[float, float]]] = {"old": [], "new": []}
    with tempfile.TemporaryDirectory(prefix="crm-bench-dealidx-") as work:
        dbs = {"old": make(Path(work) / "old.sqlite", OLD), "new": make(Path(work) / "new.sqlite", NEW)}
        for i in range(args.repeats):
            for side in (("old", "new") if i % 2 == 0 else ("new", "old")):
                cpu, wall = round_(dbs[side], 1 + i * args.deals, args.deals, seed=i)
                results[side].append((cpu, wall))
                print(f"#{i + 1} {side:<4} cpu {cpu:6.2f} s  wall {wall:6.2f} s", flush=True)
    for what, k in (("cpu", 0), ("wall", 1)):
        old = sorted(r[k] for r in results["old"])
        new = sorted(r[k] for r in results["new"])
        print(f"{what}: ix_deals_stage best {old[0]:.2f} s median {statistics.median(old):.2f} s; "
              f"ix_deals_purchases best {new[0]:.2f} s median {statistics.median(new):.2f} s; "
              f"new/old best {new[0] / old[0]:.2f}x median {statistics.median(new) / statistics.median(old):.2f}x")
    print(f"load {' '.join(f'{x:.2f}' for x in os.getloadavg())} on {os.cpu_count()} cpus")


if __name__ == "__main__":
    main()
