"""The shared benchmark database: 1,000,000 customers, 5,000,000 deals.

    .venv/bin/python bench/bigdb.py                      # build (once) and print its path
    .venv/bin/python bench/bigdb.py --postgres URL       # also load it into a PostgreSQL database

Used by bench/rfm.py and bench/reports.py.  The file is built once into
bench/.cache/big-<customers>-<deals>.sqlite (about 1.5 GB) and reused; delete it
to rebuild.  The schema comes from crmcore's own migrations; the rows go in
with raw sqlite3 (the bench measures segmenting and reporting, not importing).

The data, from a fixed seed:
- customers in 8 regions of 5 countries, 5 owners, 4 customer stages;
- deals spread over the 3 years before AS_OF: about 60% won (closed_at set),
  15% lost (with a reason), 25% open in the four open stages with an expected
  close date in the next 6 months (10% of them without one); amounts are
  lognormal CNY with 2 decimals; about 5% of deals are in USD;
- deal_stage_history: a "lead" entry when the deal was created and, for
  closed deals, the move to won/lost;
- 1,000,000 interactions (calls, emails, meetings, complaints, feedback) with
  satisfaction, follow-up due dates and resolution times.
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
# CRM_BENCH_CACHE: another directory, so two checkouts (a branch and main) can run side by side.
CACHE = Path(os.environ.get("CRM_BENCH_CACHE") or HERE / ".cache")
AS_OF = datetime(2026, 6, 30, tzinfo=timezone.utc)
SEED = 20261122
CHUNK = 200_000

PLACES = [("CN", "华东", "上海"), ("CN", "华南", "深圳"), ("CN", "华北", "北京"), ("US", "CA", "San Francisco"),
          ("US", "NY", "New York"), ("DE", "BE", "Berlin"), ("GB", "LND", "London"), ("JP", "13", "Tokyo")]
OWNERS = ["alice", "bob", "wang.fang", "zhao.lei", "li.na"]
CUSTOMER_STAGES = ["lead", "prospect", "customer", "former"]
OPEN_STAGES = [("lead", 10), ("qualified", 25), ("proposal", 50), ("negotiation", 75)]
LOST_REASONS = ["price", "competitor", "no budget", "timing", "no decision"]
INTERACTION_KINDS = ["call", "email", "meeting", "note", "complaint", "feedback"]
CHANNELS = ["phone", "email", "wechat", "web", "store"]


def _stamp(seconds: np.ndarray) -> list[str]:
    """SQLite text timestamps, exactly as SQLAlchemy's DateTime stores them, for epoch seconds.

    The separator must be a space, not numpy's "T": SQLite compares timestamps
    as text, and "2026-06-30T..." sorts after "2026-06-30 23:59:59".
    """
    text = np.datetime_as_string(seconds.astype("datetime64[s]").astype("datetime64[us]"), unit="us")
    return np.char.replace(text, "T", " ").tolist()


def _day(seconds: np.ndarray) -> list[str]:
    return np.datetime_as_string(seconds.astype("datetime64[s]").astype("datetime64[D]"), unit="D").tolist()


def default_path(customers: int, deals: int) -> Path:
    # v2: timestamps with a space, as crmcore stores them; v3: owners are users
    return CACHE / f"big-v3-{customers}-{deals}.sqlite"


def _migrate(path: Path) -> None:
    url = f"sqlite:///{path}"
    subprocess.run([sys.executable, "-c", f"from crmcore import CRM; CRM.open({url!r}, plugins=[]).close()"],
                   check=True)


def _users(db: sqlite3.Connection) -> None:
    """The owners are users (customers.owner and deals.owner refer to users.login, revision 0008)."""
    stamp = _stamp(np.array([int(AS_OF.timestamp())]))[0]
    db.executemany("INSERT INTO users (login, display_name, active, source, created_at, updated_at)"
                   " VALUES (?, ?, 1, 'added', ?, ?)", [(o, o, stamp, stamp) for o in OWNERS])


def _customers(db: sqlite3.Connection, rng: np.random.Generator, n: int) -> None:
    created = int(AS_OF.timestamp()) - rng.integers(0, 4 * 365 * 86400, n)
    place = rng.integers(0, len(PLACES), n)
    owner = rng.integers(0, len(OWNERS), n)
    stage = rng.choice(len(CUSTOMER_STAGES), n, p=[0.15, 0.15, 0.6, 0.1])
    stamps = _stamp(created)
    rows = ((i + 1, "company" if i % 5 == 0 else "person", f"Customer {i + 1}", f"c{i + 1}@example.com",
             *PLACES[place[i]], OWNERS[owner[i]], CUSTOMER_STAGES[stage[i]], stamps[i], stamps[i])
            for i in range(n))
    db.executemany(
        "INSERT INTO customers (id, kind, name, email, country, region, city, owner, stage, consent_email,"
        " consent_sms, consent_marketing, tags, attributes, created_at, updated_at)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, 1, 0, 1, '[]', '{}', ?, ?)", rows)


def _deal_chunk(rng: np.random.Generator, start: int, size: int, customers: int) -> tuple[list, list]:
    now = int(AS_OF.timestamp())
    ids = np.arange(start + 1, start + size + 1)
    customer = rng.zipf(1.3, size) % customers + 1  # some customers buy a lot, most rarely
    created = now - rng.integers(0, 3 * 365 * 86400, size)
    kind = rng.choice(3, size, p=[0.60, 0.15, 0.25])  # won, lost, open
    cycle = rng.integers(1, 120, size) * 86400
    closed = np.minimum(created + cycle, now)
    amount = np.round(rng.lognormal(7.5, 1.0, size), 2)
    usd = rng.random(size) < 0.05
    open_stage = rng.integers(0, len(OPEN_STAGES), size)
    expected = now + rng.integers(1, 180, size) * 86400
    no_expected = rng.random(size) < 0.10
    owner = rng.integers(0, len(OWNERS), size)
    reason = rng.integers(0, len(LOST_REASONS), size)
    created_s, closed_s, expected_d = _stamp(created), _stamp(closed), _day(expected)
    deals, history = [], []
    for j in range(size):
        k = kind[j]
        if k == 0:
            stage, prob, closed_at, exp, lost = "won", 100, closed_s[j], None, None
        elif k == 1:
            stage, prob, closed_at, exp, lost = "lost", 0, closed_s[j], None, LOST_REASONS[reason[j]]
        else:
            stage, prob = OPEN_STAGES[open_stage[j]]
            closed_at, lost = None, None
            exp = None if no_expected[j] else expected_d[j]
        updated = closed_at or created_s[j]
        deals.append((int(ids[j]), int(customer[j]), f"Deal {ids[j]}", int(round(amount[j] * 10000)),
                      "USD" if usd[j] else "CNY", stage, prob, exp, closed_at, OWNERS[owner[j]], lost,
                      created_s[j], updated))
        history.append((int(ids[j]), None, "lead", created_s[j]))
        if closed_at is not None:
            history.append((int(ids[j]), "lead", stage, closed_at))
    return deals, history


def _deals(db: sqlite3.Connection, rng: np.random.Generator, n: int, customers: int) -> None:
    for start in range(0, n, CHUNK):
        deals, history = _deal_chunk(rng, start, min(CHUNK, n - start), customers)
        db.executemany(
            "INSERT INTO deals (id, customer_id, title, amount, currency, pipeline, stage, probability,"
            " expected_close, closed_at, owner, lost_reason, attributes, created_at, updated_at)"
            " VALUES (?, ?, ?, ?, ?, 'default', ?, ?, ?, ?, ?, ?, '{}', ?, ?)", deals)
        db.executemany("INSERT INTO deal_stage_history (deal_id, from_stage, to_stage, changed_at)"
                       " VALUES (?, ?, ?, ?)", history)


def _interactions(db: sqlite3.Connection, rng: np.random.Generator, n: int, customers: int) -> None:
    now = int(AS_OF.timestamp())
    for start in range(0, n, CHUNK):
        size = min(CHUNK, n - start)
        customer = rng.integers(1, customers + 1, size)
        occurred = now - rng.integers(0, 2 * 365 * 86400, size)
        kind = rng.choice(len(INTERACTION_KINDS), size, p=[0.3, 0.3, 0.1, 0.15, 0.08, 0.07])
        channel = rng.integers(0, len(CHANNELS), size)
        owner = rng.integers(0, len(OWNERS), size)
        satisfaction = rng.integers(1, 6, size)
        resolve = occurred + rng.integers(600, 5 * 86400, size)
        follow = occurred + rng.integers(1, 30, size) * 86400
        occ_s, res_s, fol_s = _stamp(occurred), _stamp(resolve), _stamp(follow)
        rows = []
        for j in range(size):
            k = INTERACTION_KINDS[kind[j]]
            service = k in ("complaint", "feedback")
            rows.append((int(customer[j]), k, "inbound" if service else "outbound", CHANNELS[channel[j]], occ_s[j],
                         int(satisfaction[j]) if service else None, fol_s[j] if j % 4 == 0 else None,
                         res_s[j] if k == "complaint" and j % 10 else None, OWNERS[owner[j]], occ_s[j], occ_s[j]))
        db.executemany(
            "INSERT INTO interactions (customer_id, kind, direction, channel, occurred_at, satisfaction,"
            " follow_up_due, resolved_at, owner, attributes, created_at, updated_at)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, '{}', ?, ?)", rows)


def build_big_db(path: Path | None = None, customers: int = 1_000_000, deals: int = 5_000_000,
                 interactions: int = 1_000_000, quiet: bool = False) -> Path:
    """The benchmark database at ``path`` (default under bench/.cache), built once and reused."""
    path = Path(path) if path else default_path(customers, deals)
    if path.exists():
        return path
    CACHE.mkdir(exist_ok=True)
    partial = path.with_suffix(".partial")
    for suffix in ("", "-wal", "-shm"):
        Path(f"{partial}{suffix}").unlink(missing_ok=True)
    started = time.perf_counter()
    _migrate(partial)
    rng = np.random.default_rng(SEED)
    db = sqlite3.connect(partial)
    db.execute("PRAGMA journal_mode=OFF")
    db.execute("PRAGMA synchronous=OFF")
    with db:
        _users(db)
        _customers(db, rng, customers)
        _deals(db, rng, deals, customers)
        _interactions(db, rng, interactions, customers)
    db.execute("ANALYZE")
    db.close()
    partial.rename(path)
    if not quiet:
        print(f"built {path} in {time.perf_counter() - started:.0f} s", file=sys.stderr)
    return path


TABLES = ["users", "customers", "deals", "deal_stage_history", "interactions"]


def copy_to_postgres(path: Path, url: str) -> None:
    """Load the SQLite benchmark database into PostgreSQL at ``url`` (replacing crmcore's tables there)."""
    import psycopg

    from crmcore import CRM
    from crmcore.store.maintenance import drop_all_tables

    drop_all_tables(url)
    CRM.open(url, plugins=[]).close()  # migrate afresh
    source = sqlite3.connect(path)
    conninfo = url.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(conninfo) as pg:
        for table in TABLES:
            columns = [r[1] for r in source.execute(f"PRAGMA table_info({table})")]
            names = ", ".join(columns)
            with pg.cursor().copy(f"COPY {table} ({names}) FROM STDIN") as copy:
                for row in source.execute(f"SELECT {names} FROM {table}"):
                    copy.write_row(row)
            pg.execute(f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), (SELECT max(id) FROM {table}))")
        pg.execute("ANALYZE")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--customers", type=int, default=1_000_000)
    parser.add_argument("--deals", type=int, default=5_000_000)
    parser.add_argument("--interactions", type=int, default=1_000_000)
    parser.add_argument("--postgres", metavar="URL", help="also load the database into this PostgreSQL database")
    args = parser.parse_args()
    path = build_big_db(None, args.customers, args.deals, args.interactions)
    print(path)
    if args.postgres:
        started = time.perf_counter()
        copy_to_postgres(path, args.postgres)
        print(f"copied to {args.postgres} in {time.perf_counter() - started:.0f} s", file=sys.stderr)


if __name__ == "__main__":
    main()
