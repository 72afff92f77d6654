"""Benchmark: single stage moves that earn points against raw SQL writing the same rows (issue 21, point 2).

    .venv/bin/python bench/single_writes.py                     # 2,000 moves in 4 rounds
    .venv/bin/python bench/single_writes.py --deals 400 --repeat 4
    .venv/bin/python bench/single_writes.py --baseline-sync NORMAL

Builds a SQLite database with the CRM (every installed plugin loaded: the loyalty plugin's schemes
earn on won deals, the access plugin authorizes): a user ``boss`` (role admin), customers in the
lifecycle stage ``lead`` and one open deal each (stage ``negotiation``), then copies the file.

Each round moves the next slice of deals to ``won``, one call and so one transaction each:

(a) ours, on copy A: ``crm.deals.move(id, "won")`` acting as ``boss``: authorize, the deal row,
    its stage history, the buyer promoted to ``customer``, loyalty points earned (ledger entry,
    account balance, tiers), the audit records (hash chain), events;
(b) the baseline, on copy B: ``sqlite3`` writing, deal by deal, exactly the rows (a) wrote for that
    deal (captured after each call of (a), outside its timing), each deal in its own
    ``BEGIN IMMEDIATE ... COMMIT``, statements prepared once.

The sides alternate round by round.  At the end every table of A and B must hold the same rows
(checked), so the baseline wrote no less than ours.  Prints moves/s for each side, best and median
of the rounds, ours as a share of the baseline (goal: at least 25%), the ``synchronous`` setting of
each side, the CPU time per move of this process (on a loaded machine waiting for a CPU inflates
wall times, CPU times much less), and the load average.  Timings are for this machine and its load
at the time; nothing here is a test.

Figures (issue 21, 2026-12-05, ``--deals 60 --repeat 3``, load average 21; before = commit 7d1ecbf):
ours 4-5 -> 5 moves/s wall, CPU 19.6 -> 18.5 ms a move; baseline 273 moves/s (synchronous=FULL),
724 moves/s (NORMAL), CPU 0.2-0.4 ms; 11 rows a move.

2026-12-06 (``--deals 60 --repeat 3``, four pairs of runs alternating the code before, 2dc84c9, and
after, load average 11-14): before 18-35 moves/s, 4-10% of the baseline at best, CPU 14.7-17.0 ms
a move; after 54-102 moves/s, 10-30% at best (19-29% median; the goal reached in 2 of 4 runs),
CPU 4.5-5.2 ms a move; the baseline (synchronous FULL, 12 rows) 260-740 moves/s in the same runs,
its fsync varying with the load.  What changed (cProfile, statements counted with a
``before_cursor_execute`` listener: about 27 -> 20 a move): the loyalty plugin's reaction (54%
before) evaluates the one customer's tier with a statement built once and writes only on a
change, looks the referral up by primary key before any referral work, and earns with a one-deal
select built once; a credit is one prebuilt UPDATE of the balance; the audit chain and the
buyer's promotion use statements built once.  What is left is the core's own path (unit of work,
the deal's read, validation with the customer and owner look-ups, update, history, promotion,
audit) and the fsync.  SQLite synchronous stays FULL (the baseline pays the same fsync; WAL +
NORMAL loses no commit on a process crash, but can on an OS crash or power cut).

Second pass (2026-12-06, nine whole runs alternating with main e1a5057, load 6.3-10.3): main CPU
3.9-5.8 ms a move, 8-36% of the baseline at best (25% in 4 of 9); this code 1.4-2.4 ms, 28-58% at
best in 8 of 9 runs (11% in one whose baseline had a 1,007 moves/s round); callgrind 14.45M ->
4.36M instructions a move.  Statements built once, no IN lists expanded per execution, upserts for the balance and a
new tier account, no owner look-up for a kept owner: 20 -> 17 statements; on SQLite 14 of them
run on the unit's driver connection (``crmcore.store.direct``).  The per-round ratio (printed)
shows how much the baseline's fsync moves between rounds.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

GOAL = 0.25
SYNC_NAMES = {0: "OFF", 1: "NORMAL", 2: "FULL", 3: "EXTRA"}


def build(path: str, deals: int) -> list[int]:
    """The template database; returns the deal ids."""
    import crmcore
    with crmcore.CRM.open(f"sqlite:///{path}") as crm:
        crm.users.add("boss", role="admin")
        crm.customers.add_many([{"name": f"Customer {i}", "email": f"c{i}@example.com", "stage": "lead",
                                 "owner": "boss"} for i in range(deals)])
        ids = [c.id for c in crm.customers.iter(order_by="id")]
        crm.deals.add_many([{"customer_id": cid, "title": f"Deal {cid}", "amount": f"{100 + cid % 900}.50",
                             "currency": "CNY", "stage": "negotiation", "owner": "boss"} for cid in ids])
        return [d.id for d in crm.deals.iter(order_by="id")]


class Capture:
    """What one move wrote to copy A: new rows of every table, changed rows of the updated ones."""

    def __init__(self, path: str):
        self.conn = sqlite3.connect(path)
        self.tables = [r[0] for r in self.conn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'")]
        self.columns = {t: [r[1] for r in self.conn.execute(f'PRAGMA table_info("{t}")')] for t in self.tables}
        self.top = {t: self._max(t) for t in self.tables}
        self.before: dict[str, dict[int, tuple[Any, ...]]] = {}

    def _max(self, table: str) -> int:
        return self.conn.execute(f'SELECT coalesce(max(rowid), 0) FROM "{table}"').fetchone()[0]

    def _rows(self, table: str, where: str, args: tuple[Any, ...]) -> dict[int, tuple[Any, ...]]:
        cols = ", ".join(f'"{c}"' for c in self.columns[table])
        return {r[0]: tuple(r[1:]) for r in self.conn.execute(
            f'SELECT rowid, {cols} FROM "{table}" WHERE {where}', args)}

    def watched(self, deal_id: int) -> dict[str, dict[int, tuple[Any, ...]]]:
        customer = self.conn.execute("SELECT customer_id FROM deals WHERE id = ?", (deal_id,)).fetchone()[0]
        found = {"deals": self._rows("deals", "id = ?", (deal_id,)),
                 "customers": self._rows("customers", "id = ?", (customer,)),
                 "audit_head": self._rows("audit_head", "1 = ?", (1,))}
        for table in self.tables:  # the plugins' per-customer tables (accounts, tiers, ...)
            if table not in found and "customer_id" in self.columns[table] and table != "loyalty_ledger":
                found[table] = self._rows(table, "customer_id = ? AND rowid <= ?", (customer, self.top[table]))
        return found

    def start(self, deal_id: int) -> None:
        self.conn.commit()  # a fresh read snapshot
        self.before = self.watched(deal_id)

    def finish(self, deal_id: int) -> list[tuple[str, str, tuple[Any, ...]]]:
        """The statements writing what the move wrote: (kind, table, values)."""
        self.conn.commit()
        writes: list[tuple[str, str, tuple[Any, ...]]] = []
        after = self.watched(deal_id)
        for table, rows in after.items():
            for rowid, values in rows.items():
                if self.before[table].get(rowid) != values:
                    writes.append(("update", table, (*values, rowid)))
        for table in self.tables:
            top = self._max(table)
            if top > self.top[table]:
                for rowid, values in self._rows(table, "rowid > ?", (self.top[table],)).items():
                    writes.append(("insert", table, (rowid, *values)))
                self.top[table] = top
        order = {"deals": 0, "customers": 1}
        return sorted(writes, key=lambda w: (w[0] == "update" and w[1] == "audit_head",
                                             order.get(w[1], 2) if w[0] == "update" else 3))


class Baseline:
    """Raw sqlite3 on copy B: one transaction per move, statements prepared once (sqlite3's cache)."""

    def __init__(self, path: str, columns: dict[str, list[str]], sync: str | None):
        self.conn = sqlite3.connect(path, isolation_level=None)
        self.conn.execute("PRAGMA foreign_keys=ON")
        if sync:
            self.conn.execute(f"PRAGMA synchronous={sync}")
        self.sync = SYNC_NAMES[self.conn.execute("PRAGMA synchronous").fetchone()[0]]
        self.sql: dict[tuple[str, str], str] = {}
        for table, cols in columns.items():
            quoted = ", ".join(f'"{c}"' for c in cols)
            self.sql["insert", table] = (f'INSERT INTO "{table}" (rowid, {quoted}) '
                                         f'VALUES (?, {", ".join("?" for _ in cols)})')
            self.sql["update", table] = (f'UPDATE "{table}" SET {", ".join(f"{q} = ?" for q in quoted.split(", "))} '
                                         f'WHERE rowid = ?')

    def move(self, writes: list[tuple[str, str, tuple[Any, ...]]]) -> None:
        execute = self.conn.execute
        execute("BEGIN IMMEDIATE")
        for kind, table, values in writes:
            execute(self.sql[kind, table], values)
        execute("COMMIT")


def dump(path: str, tables: list[str]) -> dict[str, list[tuple[Any, ...]]]:
    conn = sqlite3.connect(path)
    try:
        return {t: conn.execute(f'SELECT rowid, * FROM "{t}" ORDER BY rowid').fetchall() for t in tables}
    finally:
        conn.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--deals", type=int, default=500, help="moves per round")
    parser.add_argument("--repeat", type=int, default=4, help="rounds")
    parser.add_argument("--baseline-sync", choices=("FULL", "NORMAL"), default=None,
                        help="the baseline's PRAGMA synchronous (default: SQLite's default, FULL)")
    parser.add_argument("--profile", help="write a cProfile of ours to this file")
    args = parser.parse_args(argv)
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    import crmcore

    tmp = tempfile.TemporaryDirectory()
    template = os.path.join(tmp.name, "template.sqlite")
    ids = build(template, args.deals * args.repeat)
    path_a, path_b = os.path.join(tmp.name, "a.sqlite"), os.path.join(tmp.name, "b.sqlite")
    shutil.copy(template, path_a)
    shutil.copy(template, path_b)

    crm = crmcore.CRM.open(f"sqlite:///{path_a}")
    print(f"plugins: {', '.join(p.name for p in crm.plugin_info())}; loyalty schemes: "
          f"{', '.join(crm.loyalty.registry.names())}")
    with crm.engine.connect() as conn:
        ours_sync = SYNC_NAMES[conn.exec_driver_sql("PRAGMA synchronous").scalar_one()]
    capture = Capture(path_a)
    baseline = Baseline(path_b, capture.columns, args.baseline_sync)
    profiler = None
    if args.profile:
        import cProfile
        profiler = cProfile.Profile()
    rates: dict[str, list[float]] = {"ours": [], "baseline": []}
    cpu: dict[str, list[float]] = {"ours": [], "baseline": []}  # CPU ms of this process per move
    statements = 0.0
    with crm.acting_as("boss"):
        for round_ in range(args.repeat):
            chunk = ids[round_ * args.deals:(round_ + 1) * args.deals]
            spent, used, writes = 0.0, 0.0, []
            for deal_id in chunk:
                capture.start(deal_id)
                if profiler:
                    profiler.enable()
                start, cpu_start = time.perf_counter(), time.process_time()
                crm.deals.move(deal_id, "won")
                spent += time.perf_counter() - start
                used += time.process_time() - cpu_start
                if profiler:
                    profiler.disable()
                writes.append(capture.finish(deal_id))
            rates["ours"].append(len(chunk) / spent)
            cpu["ours"].append(used / len(chunk) * 1000)
            start, cpu_start = time.perf_counter(), time.process_time()
            for deal_writes in writes:
                baseline.move(deal_writes)
            rates["baseline"].append(len(chunk) / (time.perf_counter() - start))
            cpu["baseline"].append((time.process_time() - cpu_start) / len(chunk) * 1000)
            statements = sum(len(w) for w in writes) / len(writes)
            print(f"round {round_ + 1}: ours {rates['ours'][-1]:8.0f} moves/s, baseline "
                  f"{rates['baseline'][-1]:8.0f} moves/s")
    if profiler:
        profiler.dump_stats(args.profile)
    crm.close()
    capture.conn.close()
    baseline.conn.close()
    same = dump(path_a, capture.tables) == dump(path_b, capture.tables)
    best = {k: max(v) for k, v in rates.items()}
    median = {k: statistics.median(v) for k, v in rates.items()}
    print(f"{args.deals} moves per round, {args.repeat} rounds; the baseline writes {statements:.1f} rows a move; "
          f"A and B hold the same rows: {same}")
    print(f"ours     best {best['ours']:8.0f} moves/s  median {median['ours']:8.0f} moves/s  "
          f"(synchronous={ours_sync})")
    print(f"baseline best {best['baseline']:8.0f} moves/s  median {median['baseline']:8.0f} moves/s  "
          f"(synchronous={baseline.sync})")
    print(f"CPU per move (best round): ours {min(cpu['ours']):.2f} ms, baseline {min(cpu['baseline']):.2f} ms "
          f"(baseline / ours = {min(cpu['baseline']) / min(cpu['ours']):.1%}; fsync waits are not CPU)")
    paired = [o / b for o, b in zip(rates["ours"], rates["baseline"])]  # the two sides in the same minute
    print("ours / baseline per round: " + ", ".join(f"{p:.1%}" for p in paired))
    share_best, share_median = best["ours"] / best["baseline"], median["ours"] / median["baseline"]
    print(f"ours / baseline: best {share_best:.1%}, median {share_median:.1%} "
          f"(goal >= {GOAL:.0%}: {'met' if share_best >= GOAL else 'NOT met'})")
    print(f"load average: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    tmp.cleanup()
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
