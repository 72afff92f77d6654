"""Benchmark: `kmeans` and `clv` segmenter runs against pandas + scikit-learn/scipy.

    .venv/bin/python bench/contrib_segmenters.py                       # the 1M-customer database
    .venv/bin/python bench/contrib_segmenters.py --customers 10000 --deals 50000
    .venv/bin/python bench/contrib_segmenters.py --only clv

Uses the shared benchmark database bench/.cache/big-v3-<customers>-<deals>.sqlite
(``bigdb.default_path``; built by bench/bigdb.py, this script does not build
it).  Both sides write (runs, memberships, a scratch table), so the script
copies the database to a scratch file next to it first (outside every clock),
works on the copy and deletes it at the end: the shared file is only read.
For each strategy, in one run of this script, two child processes each do the
whole job on the copy and report their wall time and peak RSS:

(a) ours: ``crm.segments.run(name, as_of=AS_OF, options=...)`` -- features in
    SQL, the model, every membership (with its JSON details) stored, the run
    recorded and diffed.  The run is deleted again afterwards, outside the clock.
(b) baseline, the obvious way: ``pandas.read_sql`` of the won deals, pandas
    groupby for the features, scikit-learn ``KMeans`` (same k, seed and
    n_init) or the same scipy maximum-likelihood fits (crmcore_clv's model
    functions: the model costs the same either way, so the comparison is data
    access and storage), then ``(customer_id, segment)`` for every customer
    written with sqlite3 ``executemany`` into a scratch table (dropped after).

Each side runs ``--repeat`` times (default 3), alternating which goes first;
the script checks that both produced the same segment sizes and prints every
time, the best of each, the ratio of the bests and peak memory.  Timings are for this machine and its load
at the time; nothing here is a test.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sqlite3
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

HERE = Path(__file__).resolve().parent
AS_OF = datetime(2026, 6, 30, 23, 59, 59, tzinfo=timezone.utc)
OPTIONS = {"kmeans": {"k": 4, "seed": 0}, "clv": {}}


def scratch_copy(path: Path) -> Path:
    """A private copy of ``path`` (and its WAL, if any) to write into."""
    copy = path.with_name(path.stem + ".scratch.sqlite")
    for suffix in ("", "-wal", "-shm"):
        Path(str(copy) + suffix).unlink(missing_ok=True)
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as source, sqlite3.connect(copy) as target:
        source.backup(target)  # a consistent snapshot even if the WAL holds pages
    return copy


# -- (a) ours ------------------------------------------------------------------------

def run_ours(path: Path, strategy: str) -> dict:
    from crmcore import CRM, Config

    crm = CRM.open(config=Config.from_mapping({"database_url": f"sqlite:///{path}", "plugins": [strategy]}))
    started = time.perf_counter()
    run = crm.segments.run(strategy, as_of=AS_OF, options=OPTIONS[strategy])
    seconds = time.perf_counter() - started
    crm.close()
    with sqlite3.connect(path) as con:  # leave the copy as it was for the baseline
        con.execute("PRAGMA foreign_keys = ON")
        con.execute("DELETE FROM segment_memberships WHERE run_id = ?", (run.id,))
        con.execute("DELETE FROM segment_runs WHERE id = ?", (run.id,))
    return {"seconds": seconds, "counts": run.counts}


# -- (b) baseline --------------------------------------------------------------------

def won_deals(con: sqlite3.Connection):
    import pandas as pd

    # SQLAlchemy's text form of AS_OF, compared as text like the stored values.
    as_of = AS_OF.replace(tzinfo=None).isoformat(sep=" ", timespec="microseconds")
    frame = pd.read_sql("SELECT customer_id, closed_at, amount FROM deals WHERE stage = 'won' AND closed_at <= ?",
                        con, params=[as_of])
    frame["amount"] = frame["amount"] / 10_000  # Money is stored scaled
    return frame


def baseline_kmeans(con: sqlite3.Connection) -> dict[int, str]:
    import numpy as np
    import pandas as pd
    from sklearn.cluster import KMeans
    from sklearn.preprocessing import StandardScaler

    frame = won_deals(con)
    frame["closed_at"] = pd.to_datetime(frame["closed_at"], format="ISO8601", utc=True)
    rfm = frame.groupby("customer_id").agg(last=("closed_at", "max"), f=("amount", "size"), m=("amount", "sum"))
    recency = (pd.Timestamp(AS_OF) - rfm["last"]).dt.total_seconds() / 86400
    scaled = StandardScaler().fit_transform(np.log1p(np.column_stack([recency, rfm["f"], rfm["m"]])))
    labels = KMeans(n_clusters=OPTIONS["kmeans"]["k"], n_init=10, random_state=OPTIONS["kmeans"]["seed"]).fit(
        scaled).labels_
    return dict(zip(rfm.index.tolist(), [f"cluster {n}" for n in labels]))


def baseline_clv(con: sqlite3.Connection) -> dict[int, str]:
    import numpy as np
    import pandas as pd
    from crmcore_clv import bgnbd, gamma_gamma
    from crmcore_clv.value import discounted_purchases, weekly_rate

    frame = won_deals(con)
    frame["day"] = pd.to_datetime(frame["closed_at"].str[:10])
    days = frame.groupby(["customer_id", "day"], sort=True)["amount"].sum().reset_index()
    per = days.groupby("customer_id").agg(first=("day", "min"), last=("day", "max"), n=("day", "size"),
                                          total=("amount", "sum"), first_amount=("amount", "first"))
    x = (per["n"] - 1).to_numpy(float)
    t_x = (per["last"] - per["first"]).dt.days.to_numpy(float) / 7
    T = (pd.Timestamp(AS_OF.date()) - per["first"]).dt.days.to_numpy(float) / 7
    m = np.where(x > 0, (per["total"] - per["first_amount"]).to_numpy() / np.maximum(x, 1), 0.0)
    params = bgnbd.fit(x, t_x, T)
    spend = gamma_gamma.fit(x[(x > 0) & (m > 0)], m[(x > 0) & (m > 0)])
    p_alive = bgnbd.probability_alive(params, x, t_x, T)
    clv = gamma_gamma.expected_spend(spend, x, m) * discounted_purchases(params, 52, weekly_rate(0.1, "year"),
                                                                        x, t_x, T)
    higher = pd.Series(clv).rank(ascending=False, method="min").to_numpy() - 1
    segment = np.where(p_alive < 0.3, "Likely churned", np.where(higher < 0.2 * len(clv), "Top value", "Standard"))
    return dict(zip(per.index.tolist(), segment.tolist()))


def run_baseline(path: Path, strategy: str) -> dict:
    # Imported before the clock starts, as ours are (by loading the plugin).
    import crmcore_clv  # noqa: F401
    import pandas  # noqa: F401
    import sklearn.cluster  # noqa: F401

    started = time.perf_counter()
    con = sqlite3.connect(path)
    segments = (baseline_kmeans if strategy == "kmeans" else baseline_clv)(con)
    ids = [row[0] for row in con.execute("SELECT id FROM customers")]
    con.execute("CREATE TABLE bench_memberships (customer_id INTEGER PRIMARY KEY, segment TEXT NOT NULL)")
    con.executemany("INSERT INTO bench_memberships VALUES (?, ?)",
                    ((cid, segments.get(cid, "No purchases")) for cid in ids))
    con.commit()
    seconds = time.perf_counter() - started
    counts = dict(con.execute("SELECT segment, COUNT(*) FROM bench_memberships GROUP BY segment").fetchall())
    con.execute("DROP TABLE bench_memberships")
    con.close()
    return {"seconds": seconds, "counts": counts}


# -- driver --------------------------------------------------------------------------

def child(path: Path, strategy: str, which: str) -> None:
    result = (run_ours if which == "ours" else run_baseline)(path, strategy)
    result["peak_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps(result))


def measure(path: Path, strategy: str, which: str) -> dict:
    out = subprocess.run([sys.executable, __file__, "--child", which, "--strategy", strategy, "--db", str(path)],
                         check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--customers", type=int, default=1_000_000)
    parser.add_argument("--deals", type=int, default=5_000_000)
    parser.add_argument("--db", type=Path, help="Database file (default: the bench/.cache file for the sizes).")
    parser.add_argument("--only", choices=sorted(OPTIONS))
    parser.add_argument("--repeat", type=int, default=3, help="Runs of each side per strategy (default 3).")
    parser.add_argument("--child", choices=["ours", "baseline"], help=argparse.SUPPRESS)
    parser.add_argument("--strategy", choices=sorted(OPTIONS), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.db, args.strategy, args.child)
        return
    sys.path.insert(0, str(HERE))
    from bigdb import default_path

    shared = args.db or default_path(args.customers, args.deals)
    if not shared.exists():
        sys.exit(f"{shared} does not exist: build it with bench/bigdb.py")
    path = scratch_copy(shared)
    print(f"database: {shared} (working on the copy {path.name}); load average {os.getloadavg()}")
    try:
        for strategy in [args.only] if args.only else sorted(OPTIONS):
            compare(path, strategy, args.repeat)
    finally:
        for suffix in ("", "-wal", "-shm"):
            Path(str(path) + suffix).unlink(missing_ok=True)
    print(f"load average {os.getloadavg()}")


def compare(path: Path, strategy: str, repeat: int) -> None:
    """Time ours and the baseline on ``path`` ``repeat`` times each, alternating
    which goes first (the machine is shared: one pair alone is noise), and print
    every time, the best of each and the ratio of the bests."""
    ours, base = [], []
    for n in range(repeat):
        order = ("ours", "baseline") if n % 2 == 0 else ("baseline", "ours")
        for which in order:
            (ours if which == "ours" else base).append(measure(path, strategy, which))
    sizes = all(sorted(o["counts"].values()) == sorted(b["counts"].values()) for o, b in zip(ours, base))
    best_ours, best_base = (min(r["seconds"] for r in results) for results in (ours, base))
    print(f"{strategy} {OPTIONS[strategy]}:")
    for name, results in (("ours", ours), ("baseline", base)):
        times = " ".join(f"{r['seconds']:.2f}" for r in results)
        print(f"  {name:9} best {min(r['seconds'] for r in results):7.2f} s  (runs: {times})  "
              f"peak {max(r['peak_mb'] for r in results):6.0f} MB  {results[0]['counts']}")
    print(f"  ratio ours/baseline (bests) {best_ours / best_base:.2f}; same segment sizes: {sizes}; "
          f"load average {os.getloadavg()[0]:.2f}", flush=True)


if __name__ == "__main__":
    main()
