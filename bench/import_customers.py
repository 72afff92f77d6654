"""Benchmark: `crm import customers FILE` against raw sqlite3.executemany.

    .venv/bin/python bench/import_customers.py               # 1,000,000 rows
    .venv/bin/python bench/import_customers.py --rows 200000 --workers 2

1. Generates N customer rows once (cheap synthetic values, no Faker) into
   bench/.cache/customers-N.csv, together with the normalised form of every
   row (what validation must produce: E.164 phones, lower-cased email
   domains), computed here independently of crmcore.
2. (a) raw: a fresh crmcore-migrated SQLite file; the normalised rows go in
   with sqlite3.executemany in one transaction.  Only executemany + commit are
   timed (the rows are built in chunks of 100,000 outside the clock).
3. (b) crm: another fresh migrated file; `crm --no-plugins --json import
   customers FILE` runs in a subprocess (the real CLI entry point, full
   validation).  Its wall time, peak RSS (its own and its validation workers')
   and the import's own time split are reported.
4. Checks that (b) stored exactly (a)'s values for every row, then prints
   rows/s for each, the ratio, peak memory and where (b)'s time went.

Timings are for this machine and its load at the time; nothing here is a test.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
CACHE = HERE / ".cache"
COLUMNS = ["external_id", "kind", "name", "email", "phone", "country", "region", "city", "industry", "source",
           "owner", "stage", "birthday", "consent_email", "consent_sms", "consent_marketing", "tags"]
STAMP = "2026-06-30 12:00:00.000000"  # created_at/updated_at for (a); (b) stamps its own

SURNAMES = "王李张刘陈杨黄赵吴周徐孙马朱胡郭何高林罗"
GIVEN = "伟芳娜敏静丽强磊军洋勇艳杰娟涛明超秀霞平刚桂"
LATIN_FIRST = ["James", "Mary", "Anna", "Lukas", "Sofia", "Noah", "Emma", "Liam", "Mia", "Ben"]
LATIN_LAST = ["Smith", "Müller", "Garcia", "Rossi", "Martin", "Dubois", "Kowalski", "Novak", "Silva", "Brown"]
PLACES = [("CN", "华东", "上海"), ("CN", "华南", "深圳"), ("CN", "华北", "北京"), ("US", "CA", "San Francisco"),
          ("US", "NY", "New York"), ("DE", "BE", "Berlin"), ("GB", "LND", "London"), ("JP", "13", "Tokyo")]
DOMAINS = ["example.com", "Example.COM", "mail.example.cn", "Corp.Example.org", "example.net"]
INDUSTRIES = ["retail", "manufacturing", "healthcare", "education", "logistics", "finance", ""]
SOURCES = ["web", "referral", "trade show", "cold call", "partner", ""]
OWNERS = ["alice", "bob", "wang.fang", "zhao.lei", ""]
STAGES = ["lead", "prospect", "customer", "former"]
CN_MOBILE = [f"13{d}" for d in range(10)] + ["150", "151", "152", "155", "156", "157", "158", "159"] + [
    f"18{d}" for d in range(10)]
TAGS = ["", "vip", "newsletter", "vip,newsletter", "wholesale", "offline,vip"]


def phone(rng: random.Random, country: str) -> tuple[str, str]:
    """(as typed, E.164)."""
    if country == "CN":
        digits = f"{rng.choice(CN_MOBILE)}{rng.randrange(10**8):08d}"
        shown = rng.choice([f"+86 {digits[:3]} {digits[3:7]} {digits[7:]}", f"+86{digits}",
                            f"+86 {digits[:3]}-{digits[3:7]}-{digits[7:]}"])
        return shown, f"+86{digits}"
    if country == "US":
        area = rng.choice(["415", "212", "646", "617"])
        line = f"{rng.randrange(200, 1000)}{rng.randrange(10**4):04d}"
        return f"+1 ({area}) {line[:3]}-{line[3:]}", f"+1{area}{line}"
    if country == "DE":
        rest = f"{rng.randrange(10**7, 10**8)}"
        return f"+49 151 {rest}", f"+49151{rest}"
    if country == "GB":
        rest = f"7{rng.randrange(10**3):03d}{rng.randrange(10**4):04d}"
        return f"+44 20 {rest[:4]} {rest[4:]}", f"+4420{rest}"
    rest = f"{rng.randrange(1000, 10**4)}{rng.randrange(10**4):04d}"
    return f"+81 90-{rest[:4]}-{rest[4:]}", f"+8190{rest}"


def generate_row(rng: random.Random, i: int) -> tuple[list[str], tuple]:
    """(CSV cells as a user would write them, the normalised row for the raw insert)."""
    country, region, city = PLACES[i % len(PLACES)]
    if country == "CN":
        name = rng.choice(SURNAMES) + rng.choice(GIVEN) + (rng.choice(GIVEN) if i % 3 else "")
        local = f"user{i}"
    else:
        first, last = rng.choice(LATIN_FIRST), rng.choice(LATIN_LAST)
        name = f"{first} {last}"
        local = f"{first}.{last.replace('ü', 'ue')}.{i}"
    domain = DOMAINS[i % len(DOMAINS)]
    email = f"{local}@{domain}"
    typed_phone, e164 = phone(rng, country)
    stage = STAGES[i % 4]
    birthday = f"{rng.randrange(1950, 2005)}-{rng.randrange(1, 13):02d}-{rng.randrange(1, 29):02d}" if i % 5 else ""
    flags = [rng.random() < 0.8, rng.random() < 0.6, rng.random() < 0.3]
    tags = TAGS[i % len(TAGS)]
    industry, source, owner = (INDUSTRIES[i % len(INDUSTRIES)], SOURCES[i % len(SOURCES)],
                               OWNERS[i % len(OWNERS)])
    external_id = f"B{i:08d}"
    cells = [external_id, "person", name, email, typed_phone, country, region, city, industry, source, owner, stage,
             birthday, *("true" if f else "false" for f in flags), tags]
    normalised = (external_id, "person", name, f"{local}@{domain.lower()}", e164, country, region, city,
                  industry or None, source or None, owner or None, stage, birthday or None, *(int(f) for f in flags),
                  json.dumps([t for t in tags.split(",") if t], ensure_ascii=False), "{}", STAMP, STAMP)
    return cells, normalised


def csv_path(rows: int) -> Path:
    return CACHE / f"customers-{rows}.csv"


def ensure_csv(rows: int, seed: int) -> Path:
    import csv

    path = csv_path(rows)
    if path.exists():
        return path
    CACHE.mkdir(exist_ok=True)
    (CACHE / ".gitignore").write_text("*\n")
    tmp = path.with_suffix(".tmp")
    rng = random.Random(seed)
    started = time.perf_counter()
    with open(tmp, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(COLUMNS)
        for i in range(rows):
            writer.writerow(generate_row(rng, i)[0])
    tmp.replace(path)
    print(f"generated {path} ({path.stat().st_size / 1e6:.0f} MB) in {time.perf_counter() - started:.1f}s")
    return path


def normalised_rows(rows: int, seed: int, start: int, stop: int) -> list[tuple]:
    rng = random.Random(seed)
    out = []
    for i in range(stop):
        _, norm = generate_row(rng, i)
        if i >= start:
            out.append(norm)
    return out


def normalised_chunks(rows: int, seed: int, size: int):
    rng = random.Random(seed)
    chunk = []
    for i in range(rows):
        chunk.append(generate_row(rng, i)[1])
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def fresh_db(path: Path) -> str:
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    url = f"sqlite:///{path}"
    subprocess.run([sys.executable, "-c", f"from crmcore import CRM; CRM.open({url!r}, plugins=[]).close()"],
                   check=True)
    return url


def run_raw(rows: int, seed: int, path: Path) -> tuple[float, float]:
    fresh_db(path)
    columns = COLUMNS + ["attributes", "created_at", "updated_at"]
    sql = f"INSERT INTO customers ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})"
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA foreign_keys=ON")
    elapsed = cpu = 0.0
    conn.execute("BEGIN IMMEDIATE")
    for chunk in normalised_chunks(rows, seed, 100_000):
        started, used = time.perf_counter(), time.process_time()
        conn.executemany(sql, chunk)
        elapsed += time.perf_counter() - started
        cpu += time.process_time() - used
    started, used = time.perf_counter(), time.process_time()
    conn.execute("COMMIT")
    elapsed += time.perf_counter() - started
    cpu += time.process_time() - used
    conn.close()
    return elapsed, cpu


CHILD = """
import json, os, resource, sys, threading, time
from crmcore.cli import main

def pss_kb(pid):
    try:
        with open(f"/proc/{pid}/smaps_rollup") as fh:
            return next(int(line.split()[1]) for line in fh if line.startswith("Pss:"))
    except (OSError, StopIteration):
        return 0

def children(pid):
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as fh:
            return [int(p) for p in fh.read().split()]
    except OSError:
        return []

peak = {"pss_kb": 0}
done = threading.Event()

def sample():
    # PSS shares copy-on-write pages between the process and its forked
    # workers, so the sum is the memory the import really holds.
    me = os.getpid()
    while not done.wait(0.1):
        total = pss_kb(me) + sum(pss_kb(c) for c in children(me))
        peak["pss_kb"] = max(peak["pss_kb"], total)

threading.Thread(target=sample, daemon=True).start()
started = time.perf_counter()
try:
    main(sys.argv[1:])
except SystemExit as exc:
    code = exc.code or 0
else:
    code = 0
wall = time.perf_counter() - started
done.set()
me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
print(json.dumps({"wall": wall, "rss_kb": me.ru_maxrss, "worker_rss_kb": kids.ru_maxrss, "pss_kb": peak["pss_kb"],
                  "cpu_main": me.ru_utime + me.ru_stime, "cpu_workers": kids.ru_utime + kids.ru_stime,
                  "code": code}), file=sys.stderr)
"""


def run_crm(file: Path, path: Path, workers: int | None, batch: int | None) -> dict:
    url = fresh_db(path)
    args = [sys.executable, "-c", CHILD, "--db", url, "--no-plugins", "--json", "-q", "import", "customers",
            str(file)]
    if workers is not None:
        args += ["--workers", str(workers)]
    if batch is not None:
        args += ["--batch-size", str(batch)]
    env = dict(os.environ, CRM_PLUGINS="")
    started = time.perf_counter()
    proc = subprocess.run(args, capture_output=True, text=True, env=env)
    outside = time.perf_counter() - started
    if proc.returncode != 0:
        sys.exit(f"crm import failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    measured = json.loads(proc.stderr.strip().splitlines()[-1])
    report = json.loads(proc.stdout)
    return {"report": report, "outside": outside, **measured}


def compare(rows: int, seed: int, raw: Path, crm: Path) -> int:
    """Rows where (b) stored something other than (a)'s normalised values (all columns but time stamps)."""
    columns = ", ".join(COLUMNS + ["attributes"])
    a = sqlite3.connect(raw)
    b = sqlite3.connect(crm)
    differ = 0
    query = f"SELECT {columns} FROM customers ORDER BY external_id"
    for x, y in zip(a.execute(query), b.execute(query)):
        if x != y:
            differ += 1
            if differ <= 3:
                print(f"  differs: raw {x}\n           crm {y}")
    count_a = a.execute("SELECT count(*) FROM customers").fetchone()[0]
    count_b = b.execute("SELECT count(*) FROM customers").fetchone()[0]
    if count_a != count_b:
        print(f"  row counts differ: raw {count_a}, crm {count_b}")
        differ += abs(count_a - count_b)
    return differ


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--workers", type=int, default=None, help="crm import --workers (default: automatic)")
    parser.add_argument("--batch-size", type=int, default=None)
    parser.add_argument("--keep", action="store_true", help="keep the two database files")
    args = parser.parse_args()

    file = ensure_csv(args.rows, args.seed)
    raw_db, crm_db = CACHE / "raw.db", CACHE / "crm.db"
    print(f"rows: {args.rows:,}  file: {file.name} ({file.stat().st_size / 1e6:.0f} MB)  cpus: {os.cpu_count()}  "
          f"load: {', '.join(f'{x:.2f}' for x in os.getloadavg())}")

    raw_seconds, raw_cpu = run_raw(args.rows, args.seed, raw_db)
    crm = run_crm(file, crm_db, args.workers, args.batch_size)
    report = crm["report"]
    if crm["code"] or report["inserted"] != args.rows or report["rejected"]:
        sys.exit(f"crm import inserted {report['inserted']} and rejected {report['rejected']} of {args.rows}: "
                 f"{report['errors'][:3]}")
    differ = compare(args.rows, args.seed, raw_db, crm_db)

    raw_rate = args.rows / raw_seconds
    crm_rate = args.rows / crm["wall"]
    timings = report["timings"]
    print()
    print(f"(a) raw sqlite3.executemany : {raw_seconds:8.2f} s  {raw_rate:10,.0f} rows/s  (CPU {raw_cpu:.2f} s)")
    print(f"(b) crm import customers    : {crm['wall']:8.2f} s  {crm_rate:10,.0f} rows/s  "
          f"(process incl. start-up {crm['outside']:.2f} s; workers: {report['workers']})")
    print(f"ratio (b)/(a)               : {crm_rate / raw_rate:8.1%}   (goal >= 20%)")
    own, workers = crm["rss_kb"] / 1024, crm["worker_rss_kb"] / 1024
    print(f"peak memory of (b)          : {crm['pss_kb'] / 1024:8.0f} MB (PSS of the process and its workers, "
          f"sampled every 0.1 s; goal < 300 MB)")
    print(f"                              peak RSS {own:.0f} MB main process, {workers:.0f} MB largest worker "
          f"(RSS counts shared pages in each)")
    print("where (b)'s time went (main process, seconds):")
    print(f"  read + parse CSV          : {timings['read']:8.2f}")
    if report["workers"]:
        print(f"  validate (CPU in workers) : {timings['validate']:8.2f}   "
              f"(main waited {timings['validate_wait']:.2f} s for it)")
    else:
        print(f"  validate                  : {timings['validate']:8.2f}")
    print(f"  write (look-ups, insert)  : {timings['write']:8.2f}")
    other = report["seconds"] - timings["read"] - timings["write"] - timings["validate_wait"] - (
        0 if report["workers"] else timings["validate"])
    print(f"  other (start-up, pool)    : {other + crm['wall'] - report['seconds']:8.2f}")
    print(f"CPU time of (b)             : {crm['cpu_main']:8.2f} s main process (all threads), "
          f"{crm['cpu_workers']:.2f} s validation workers; wall {crm['wall']:.2f} s on {os.cpu_count()} CPUs")
    print(f"stored rows equal to (a)'s normalised rows: {'yes' if not differ else f'NO ({differ} differ)'}")
    if not args.keep:
        for path in (raw_db, crm_db):
            for suffix in ("", "-wal", "-shm"):
                Path(f"{path}{suffix}").unlink(missing_ok=True)


if __name__ == "__main__":
    main()
