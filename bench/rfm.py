"""RFM on 1,000,000 customers / 5,000,000 deals: ``crm segment run rfm`` against pandas.

    .venv/bin/python bench/rfm.py                          # SQLite (the shared database from bench/bigdb.py)
    .venv/bin/python bench/rfm.py --postgres URL           # also on PostgreSQL (loads the data there first)
    .venv/bin/python bench/rfm.py --customers 10000 --deals 50000   # a quick small run

Both paths do the same job on the same data, in this one process:

ours      ``crm.segments.run("rfm")`` (what ``crm segment run rfm`` calls):
          R/F/M per customer from the won deals, quintile scores with the
          documented tie rule, the named segment, and one membership per
          customer stored with score and details, the run recorded and diffed.
pandas    read the won deals (``read_sql``), ``groupby`` + ``qcut`` for the
          R/F/M quintiles, the same segment grid, and ``(customer_id,
          segment)`` for every customer written back with ``executemany``.

Printed: both wall times, the ratio (pandas / ours: above 1 means we are
faster) and each path's peak resident memory (VmHWM, reset before each path).
The benchmark works on a copy of the cached database, so the shared file is
never modified.  Afterwards it checks that our segments equal the segments
pandas computes with our tie rule (``rank(method="min")``), as a sanity check.
Timings are wall-clock and noisy on a shared machine: the load average is
printed with them.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sqlite3
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path

import numpy as np
import pandas as pd

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from bigdb import AS_OF as DATA_AS_OF  # noqa: E402  (bench/ is not a package)
from bigdb import build_big_db, copy_to_postgres  # noqa: E402

from crmcore import CRM  # noqa: E402
from crmcore_segments.names import NO_PURCHASES, segment_by_key  # noqa: E402

# A day after the data ends: every deal of the data set is up to as_of.
AS_OF = DATA_AS_OF + timedelta(days=1)
MONEY_SCALE = 10_000


# -- memory -------------------------------------------------------------------------

def reset_peak() -> None:
    """Reset this process's peak RSS (Linux: writing 5 to clear_refs resets VmHWM)."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass


def peak_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def measure(label: str, job) -> tuple[float, float, object]:
    reset_peak()
    started = time.perf_counter()
    result = job()
    seconds = time.perf_counter() - started
    peak = peak_mb()
    print(f"{label:<34} {seconds:8.2f} s   peak RSS {peak:7.0f} MB", flush=True)
    return seconds, peak, result


# -- our path ---------------------------------------------------------------------------

def ours(url: str) -> tuple[float, float, object]:
    """Open the CRM (untimed: connecting and the schema check), then time the run."""
    crm = CRM.open(url, plugins=["segments"])
    try:
        return measure(f"{url.partition(':')[0]}: crm segment run rfm", lambda: crm.segments.run("rfm", as_of=AS_OF))
    finally:
        crm.close()


# -- the pandas baseline ---------------------------------------------------------------

WON_DEALS = ("SELECT customer_id, closed_at, amount FROM deals "
             "WHERE pipeline = 'default' AND stage = 'won' AND closed_at <= {param}")
GRID = segment_by_key()


def quintile(values: pd.Series) -> np.ndarray:
    """pandas qcut on the rank (ties broken by order, the usual recipe): scores 1-5."""
    return pd.qcut(values.rank(method="first"), 5, labels=False).to_numpy() + 1


def pandas_scores(conn, param: str, as_of_value) -> pd.DataFrame:
    frame = pd.read_sql(WON_DEALS.format(param=param), conn, params=(as_of_value,))
    frame["closed_at"] = pd.to_datetime(frame["closed_at"], format="ISO8601")
    per = frame.groupby("customer_id").agg(last=("closed_at", "max"), frequency=("amount", "size"),
                                           monetary=("amount", "sum"))
    return per


def pandas_segments(per: pd.DataFrame, customer_ids: np.ndarray) -> pd.DataFrame:
    r, f, m = quintile(per["last"]), quintile(per["frequency"]), quintile(per["monetary"])
    keys = r * 100 + f + m
    named = pd.Series(keys).map(GRID).to_numpy()
    segments = pd.DataFrame({"customer_id": customer_ids})
    segments["segment"] = NO_PURCHASES
    segments = segments.set_index("customer_id")
    segments.loc[per.index, "segment"] = named
    return segments.reset_index()


def baseline_sqlite(path: Path) -> int:
    db = sqlite3.connect(path)
    as_of = AS_OF.replace(tzinfo=None).isoformat(sep=" ")
    per = pandas_scores(db, "?", as_of)
    ids = pd.read_sql("SELECT id FROM customers", db)["id"].to_numpy()
    segments = pandas_segments(per, ids)
    with db:
        db.execute("DROP TABLE IF EXISTS bench_rfm_pandas")
        db.execute("CREATE TABLE bench_rfm_pandas (customer_id INTEGER PRIMARY KEY, segment TEXT NOT NULL)")
        db.executemany("INSERT INTO bench_rfm_pandas VALUES (?, ?)",
                       zip(segments["customer_id"].tolist(), segments["segment"].tolist()))
    db.close()
    return len(segments)


def baseline_postgres(url: str) -> int:
    import psycopg

    conninfo = url.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(conninfo) as pg:
        # pandas wants an SQLAlchemy connectable for anything but sqlite3; read via a cursor instead.
        with pg.cursor() as cur:
            cur.execute(WON_DEALS.format(param="%s"), (AS_OF.replace(tzinfo=None),))
            frame = pd.DataFrame(cur.fetchall(), columns=["customer_id", "closed_at", "amount"])
            cur.execute("SELECT id FROM customers")
            ids = np.array([row[0] for row in cur.fetchall()])
        frame["amount"] = frame["amount"].astype("int64")
        per = frame.groupby("customer_id").agg(last=("closed_at", "max"), frequency=("amount", "size"),
                                               monetary=("amount", "sum"))
        segments = pandas_segments(per, ids)
        with pg.cursor() as cur:
            cur.execute("DROP TABLE IF EXISTS bench_rfm_pandas")
            cur.execute("CREATE TABLE bench_rfm_pandas (customer_id INTEGER PRIMARY KEY, segment TEXT NOT NULL)")
            cur.executemany("INSERT INTO bench_rfm_pandas VALUES (%s, %s)",
                            list(zip(segments["customer_id"].tolist(), segments["segment"].tolist())))
        pg.commit()
    return len(segments)


# -- the sanity check ----------------------------------------------------------------

def check_agreement(path: Path, run_id: int) -> None:
    """Our stored segments against pandas with our tie rule (rank min), outside the timings."""
    db = sqlite3.connect(path)
    as_of = AS_OF.replace(tzinfo=None).isoformat(sep=" ")
    per = pandas_scores(db, "?", as_of)
    n = len(per)
    scores = {}
    for column, axis in (("last", "r"), ("frequency", "f"), ("monetary", "m")):
        rank = per[column].rank(method="min").astype("int64")
        scores[axis] = 1 + (5 * (rank - 1)) // n
    expected = (scores["r"] * 100 + scores["f"] + scores["m"]).map(GRID)
    stored = pd.read_sql("SELECT customer_id, segment FROM segment_memberships WHERE run_id = ?", db,
                         params=(run_id,)).set_index("customer_id")["segment"]
    buyers = stored.loc[expected.index]
    agree = (buyers == expected).mean()
    others = stored.drop(expected.index)
    print(f"check: {agree:.4%} of {n} buyers in the same segment as pandas rank(min); "
          f"{(others == NO_PURCHASES).mean():.2%} of {len(others)} others are {NO_PURCHASES!r}")
    db.close()


# -- main ------------------------------------------------------------------------------

def report(name: str, ours_s: float, ours_mb: float, base_s: float, base_mb: float) -> None:
    print(f"{name}: ours {ours_s:.2f} s / {ours_mb:.0f} MB, pandas {base_s:.2f} s / {base_mb:.0f} MB, "
          f"ratio pandas/ours {base_s / ours_s:.2f}x", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--customers", type=int, default=1_000_000)
    parser.add_argument("--deals", type=int, default=5_000_000)
    parser.add_argument("--postgres", metavar="URL", help="also run on this PostgreSQL database (its tables are replaced)")
    parser.add_argument("--skip-load", action="store_true", help="the PostgreSQL database already holds the data")
    parser.add_argument("--no-check", action="store_true", help="skip the agreement check")
    args = parser.parse_args()

    source = build_big_db(None, args.customers, args.deals, interactions=args.customers)
    print(f"data: {source} ({args.customers:,} customers, {args.deals:,} deals); as_of {AS_OF:%Y-%m-%d}")
    print(f"load: {os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f} {os.getloadavg()[2]:.2f} on {os.cpu_count()} cpus")
    with tempfile.TemporaryDirectory(prefix="crm-bench-rfm-") as work:
        path = Path(work) / "rfm.sqlite"
        shutil.copyfile(source, path)  # never write into the shared cached file
        with sqlite3.connect(path) as db:  # warm the page cache for both paths alike
            db.execute("SELECT count(*), sum(amount) FROM deals").fetchone()
        ours_s, ours_mb, run = ours(f"sqlite:///{path}")
        base_s, base_mb, rows = measure("sqlite: pandas baseline", lambda: baseline_sqlite(path))
        _, _, again = ours(f"sqlite:///{path}")  # a second run: diffed against the first
        report("sqlite", ours_s, ours_mb, base_s, base_mb)
        print(f"  our runs: {run.members:,} members, then {again.members:,} ({again.entered} entered, "
              f"{again.left} left, {again.moved} moved); pandas wrote {rows:,} rows")
        if not args.no_check:
            check_agreement(path, run.id)
        if args.postgres:
            if not args.skip_load:
                started = time.perf_counter()
                copy_to_postgres(source, args.postgres)
                print(f"postgres: loaded in {time.perf_counter() - started:.0f} s")
            pg_s, pg_mb, pg_run = ours(args.postgres)
            pb_s, pb_mb, _ = measure("postgres: pandas baseline", lambda: baseline_postgres(args.postgres))
            report("postgres", pg_s, pg_mb, pb_s, pb_mb)
            print(f"  our run: {pg_run.members:,} members")
    print(f"load after: {os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f} {os.getloadavg()[2]:.2f}")


if __name__ == "__main__":
    main()
