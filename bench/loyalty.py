"""Benchmark: the loyalty batch earn job and the expiry job against raw SQL.

    .venv/bin/python bench/loyalty.py                  # 1,000,000 won deals
    .venv/bin/python bench/loyalty.py --deals 100000

1. Builds a template SQLite database once (bench/.cache/loyalty-N.sqlite): the
   schema migrated by the CRM with the loyalty plugin, then N/10 customers and
   N won deals written with raw sqlite3 (cheap synthetic values).
2. Copies the template twice.  On copy (a), ours: ``crm.loyalty.earn_won_deals``
   (the ``points`` scheme with its default options: 1 point per unit rounded
   down, 365-day expiry, tier multipliers looked up) and then
   ``crm.loyalty.expire`` as of a date after every batch has expired.  On copy
   (b), the baseline: hand-written sqlite3 statements that insert the same
   ledger rows, accounts and allocations (no idempotency checks, no tiers).
3. Checks that both wrote the same rows (count, points, keys, expiry dates,
   balances) and prints entries/s for each job, the ratio, and the load.

Timings are for this machine and its load at the time; nothing here is a test.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import sqlite3
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

HERE = Path(__file__).resolve().parent
CACHE = HERE / ".cache"
STAMP = "2026-06-30 12:00:00.000000"
AS_OF = datetime(2026, 12, 31, tzinfo=timezone.utc)      # every deal closed before this
EXPIRE_AS_OF = datetime(2028, 1, 1, tzinfo=timezone.utc)  # every batch (365 days) has expired by this


def build_template(deals: int) -> Path:
    """A migrated database with deals/10 customers and ``deals`` won deals (built once, cached)."""
    path = CACHE / f"loyalty-{deals}.sqlite"
    if path.exists():
        return path
    CACHE.mkdir(exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.unlink(missing_ok=True)
    from crmcore import CRM

    CRM.open(f"sqlite:///{tmp}", plugins=["loyalty"]).close()
    rng = random.Random(1)
    customers = max(deals // 10, 1)
    conn = sqlite3.connect(tmp)
    conn.execute("PRAGMA journal_mode=DELETE")
    conn.executemany(
        "INSERT INTO customers (id, kind, name, stage, consent_email, consent_sms, consent_marketing, tags, "
        "attributes, created_at, updated_at) VALUES (?, 'person', ?, 'customer', 1, 1, 0, '[]', '{}', ?, ?)",
        ((i, f"Member {i}", STAMP, STAMP) for i in range(1, customers + 1)))
    conn.executemany(
        "INSERT INTO deals (id, customer_id, title, amount, currency, pipeline, stage, probability, closed_at, "
        "attributes, created_at, updated_at) VALUES (?, ?, 'deal', ?, 'USD', 'default', 'won', 100, ?, '{}', ?, ?)",
        ((i, rng.randint(1, customers), rng.randint(0, 5_000_000) * 100,
          f"2026-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d} {rng.randint(0, 23):02d}:00:00.000000",
          STAMP, STAMP) for i in range(1, deals + 1)))
    conn.commit()
    conn.execute("ANALYZE")
    conn.close()
    tmp.rename(path)
    return path


def copy(template: Path, name: str) -> Path:
    target = CACHE / name
    for suffix in ("", "-wal", "-shm"):
        Path(f"{target}{suffix}").unlink(missing_ok=True)
    shutil.copyfile(template, target)
    return target


def ours(path: Path) -> dict[str, float]:
    from crmcore import CRM

    crm = CRM.open(f"sqlite:///{path}", plugins=["loyalty"], migrate=False, clock=lambda: AS_OF)
    start = time.perf_counter()
    earned = crm.loyalty.earn_won_deals(as_of=AS_OF, scheme="points")["points"]
    earn_s = time.perf_counter() - start
    start = time.perf_counter()
    expired = crm.loyalty.expire(as_of=EXPIRE_AS_OF, scheme="points")
    expire_s = time.perf_counter() - start
    crm.close()
    return {"earn_entries": earned, "earn_s": earn_s, "expire_entries": expired, "expire_s": expire_s}


BASELINE_EARN = """
INSERT INTO loyalty_ledger (customer_id, scheme, kind, points, idempotency_key, deal_id, expires_at, reason,
                            actor, occurred_at, details)
SELECT customer_id, 'points', 'earn', amount / 10000, 'points:deal:' || id || ':earn:batch', id,
       datetime(closed_at, '+365 days') || substr(closed_at, 20), 'deal ' || id || ' won', NULL, closed_at, NULL
FROM deals WHERE pipeline = 'default' AND stage = 'won' AND amount >= 10000
"""
BASELINE_EARN_ACCOUNTS = """
INSERT INTO loyalty_accounts (customer_id, scheme, balance, updated_at)
SELECT customer_id, 'points', SUM(points), :now FROM loyalty_ledger WHERE scheme = 'points' GROUP BY customer_id
"""
BASELINE_EXPIRE = """
INSERT INTO loyalty_ledger (customer_id, scheme, kind, points, idempotency_key, reason, actor, occurred_at, batch_id)
SELECT customer_id, scheme, 'expire', -points, 'points:expire:' || id, 'points expired', NULL, expires_at, id
FROM loyalty_ledger WHERE scheme = 'points' AND points > 0 AND expires_at <= :as_of
"""
BASELINE_ALLOCATE = """
INSERT INTO loyalty_allocations (debit_id, batch_id, points)
SELECT id, batch_id, -points FROM loyalty_ledger WHERE kind = 'expire'
"""
BASELINE_EXPIRE_ACCOUNTS = """
UPDATE loyalty_accounts SET balance = balance + t.total, updated_at = :now
FROM (SELECT customer_id, SUM(points) AS total FROM loyalty_ledger WHERE kind = 'expire' GROUP BY customer_id) AS t
WHERE loyalty_accounts.customer_id = t.customer_id AND loyalty_accounts.scheme = 'points'
"""


def baseline(path: Path) -> dict[str, float]:
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA foreign_keys=ON")
    now = AS_OF.strftime("%Y-%m-%d %H:%M:%S.%f")
    start = time.perf_counter()
    conn.execute("BEGIN IMMEDIATE")
    earned = conn.execute(BASELINE_EARN).rowcount
    conn.execute(BASELINE_EARN_ACCOUNTS, {"now": now})
    conn.execute("COMMIT")
    earn_s = time.perf_counter() - start
    start = time.perf_counter()
    conn.execute("BEGIN IMMEDIATE")
    expired = conn.execute(BASELINE_EXPIRE, {"as_of": EXPIRE_AS_OF.strftime("%Y-%m-%d %H:%M:%S.%f")}).rowcount
    conn.execute(BASELINE_ALLOCATE)
    conn.execute(BASELINE_EXPIRE_ACCOUNTS, {"now": now})
    conn.execute("COMMIT")
    expire_s = time.perf_counter() - start
    conn.close()
    return {"earn_entries": earned, "earn_s": earn_s, "expire_entries": expired, "expire_s": expire_s}


def fingerprint(path: Path) -> tuple:
    """What both runs must agree on."""
    conn = sqlite3.connect(path)
    ledger = conn.execute("SELECT kind, COUNT(*), SUM(points), COUNT(DISTINCT idempotency_key), "
                          "SUM(CAST(strftime('%s', expires_at) AS INTEGER)), SUM(batch_id) FROM loyalty_ledger "
                          "GROUP BY kind ORDER BY kind").fetchall()
    accounts = conn.execute("SELECT COUNT(*), SUM(balance) FROM loyalty_accounts").fetchone()
    allocations = conn.execute("SELECT COUNT(*), SUM(points) FROM loyalty_allocations").fetchone()
    conn.close()
    return ledger, accounts, allocations


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--deals", type=int, default=1_000_000)
    args = parser.parse_args()
    sys.path.insert(0, str(HERE.parent))
    started = time.perf_counter()
    template = build_template(args.deals)
    print(f"template: {template} ({template.stat().st_size / 1e6:.0f} MB, built/reused in "
          f"{time.perf_counter() - started:.1f} s)")
    a, b = copy(template, "loyalty-ours.sqlite"), copy(template, "loyalty-baseline.sqlite")
    mine = ours(a)
    raw = baseline(b)
    same = fingerprint(a) == fingerprint(b)
    print(f"load: {os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f} {os.getloadavg()[2]:.2f} "
          f"(1/5/15 min) on {os.cpu_count()} cores")
    for job in ("earn", "expire"):
        ours_rate = mine[f"{job}_entries"] / mine[f"{job}_s"]
        raw_rate = raw[f"{job}_entries"] / raw[f"{job}_s"]
        print(f"{job:>6}: crmcore {mine[f'{job}_entries']:,} entries in {mine[f'{job}_s']:.2f} s = "
              f"{ours_rate:,.0f}/s | raw sqlite3 {raw[f'{job}_entries']:,} in {raw[f'{job}_s']:.2f} s = "
              f"{raw_rate:,.0f}/s | ratio {ours_rate / raw_rate:.0%}")
    print(f"same ledger, accounts and allocations: {same}")
    if not same:
        print("ours:    ", fingerprint(a))
        print("baseline:", fingerprint(b))
        raise SystemExit(1)
    for path in (a, b):
        for suffix in ("", "-wal", "-shm"):
            Path(f"{path}{suffix}").unlink(missing_ok=True)


if __name__ == "__main__":
    main()
