"""Benchmark: field encryption at rest, on vs off, in one process (issue 19, point 4).

    .venv/bin/python bench/encryption.py                 # 100,000 rows, 5,000 look-ups
    .venv/bin/python bench/encryption.py --rows 20000    # quicker
    .venv/bin/python bench/encryption.py --fields email,phone   # birthday not sealed

Both sides import the same generated CSV (email, phone and birthday per row) into fresh migrated SQLite
files through ``crmcore.io.import_file`` (full validation), then look customers up by exact
email and by exact phone through ``crm.customers.find`` (the service path: authorize,
visibility, one SELECT).  "on" seals email, phone and birthday with AES-256-GCM and finds them through
the keyed blind index (:mod:`crmcore.store.sealed`); "off" stores them as they are.  Each side
runs ``--repeat`` times, alternating, and the best time counts (wall time, and the process's
CPU time, steadier on a shared machine).  Prints rows/s, look-ups/s and
the ratios against the goals; and the load average before and after (import >= 70% of the unencrypted throughput, look-ups <= 2x the
unencrypted time).
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from crmcore import CRM, Config  # noqa: E402
from crmcore.io.importer import ImportOptions, import_file  # noqa: E402
from crmcore.store.sealed import new_key  # noqa: E402


def generate(path: Path, rows: int) -> None:
    """Cheap synthetic rows (no Faker)."""
    with path.open("w", encoding="utf-8") as out:
        out.write("external_id,name,email,phone,birthday\n")
        for i in range(rows):
            out.write(f"C{i},客户 {i},c{i}@example.com,+86139{i:08d},{1950 + i % 50}-{1 + i % 12:02d}-{1 + i % 28:02d}\n")


FIELDS = ["email", "phone", "birthday"]


def open_crm(db: Path, encrypted: bool) -> CRM:
    values: dict[str, object] = {"database_url": f"sqlite:///{db}", "plugins": []}
    if encrypted:
        values["privacy"] = {"encryption": {"fields": FIELDS, "key_env": "BENCH_CRM_KEY"}}
    return CRM.open(config=Config.from_mapping(values))


def cpu_time() -> float:
    """CPU seconds of this process and of its finished children (the import's validation workers,
    which seal the values when the file is big enough to validate in parallel)."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def run_once(csv: Path, workdir: Path, encrypted: bool, label: str, rows: int, lookups: int,
             batch: int) -> tuple[float, float, float, float]:
    """Wall and CPU (this process and its workers) seconds of the import and of the look-ups."""
    db = workdir / f"{label}.db"
    crm = open_crm(db, encrypted)
    try:
        started, cpu = time.perf_counter(), cpu_time()
        report = import_file(crm, "customers", csv, ImportOptions(batch_size=batch))
        imported, imported_cpu = time.perf_counter() - started, cpu_time() - cpu
        assert report.inserted == rows, report.summary()
        rng = random.Random(19)
        picks = [rng.randrange(rows) for _ in range(lookups)]
        started, cpu = time.perf_counter(), cpu_time()
        for i in picks:
            assert crm.customers.find(email=f"c{i}@example.com") is not None
            assert crm.customers.find(phone=f"+86139{i:08d}") is not None
        looked, looked_cpu = time.perf_counter() - started, cpu_time() - cpu
    finally:
        crm.close()
        for path in workdir.glob(f"{label}.db*"):
            path.unlink()
    return imported, looked, imported_cpu, looked_cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--lookups", type=int, default=5_000)
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--batch", type=int, default=10_000)
    parser.add_argument("--fields", default=",".join(FIELDS), help="the fields sealed (default: %(default)s)")
    args = parser.parse_args()
    FIELDS[:] = args.fields.split(",")
    os.environ["BENCH_CRM_KEY"] = new_key()
    print(f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        csv = work / "customers.csv"
        generate(csv, args.rows)
        best: dict[bool, list[float]] = {False: [float("inf")] * 4, True: [float("inf")] * 4}
        for round_ in range(args.repeat):
            for encrypted in (False, True):
                times = run_once(csv, work, encrypted, f"{'on' if encrypted else 'off'}{round_}",
                                 args.rows, args.lookups, args.batch)
                best[encrypted] = [min(b, t) for b, t in zip(best[encrypted], times)]
    n = 2 * args.lookups
    print(f"{args.rows:,} customers (email, phone, birthday; sealed: {', '.join(FIELDS)}), {n:,} exact look-ups "
          f"(email and phone), best of {args.repeat}")
    # Wall time, and the CPU time of this process and its validation workers: on a machine shared
    # with other work the CPU time is the steadier measure of what sealing costs.
    for what, i in (("wall", 0), ("cpu ", 2)):
        (imp_off, look_off), (imp_on, look_on) = best[False][i:i + 2], best[True][i:i + 2]
        print(f"{what} import   off {args.rows / imp_off:>10,.0f} rows/s   on {args.rows / imp_on:>10,.0f} rows/s   "
              f"on/off throughput {imp_off / imp_on:.2f}  (goal >= 0.70)")
        print(f"{what} look-up  off {look_off / n * 1e6:>10,.1f} us      on {look_on / n * 1e6:>10,.1f} us      "
              f"on/off time {look_on / look_off:.2f}x  (goal <= 2x)")
    print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")

if __name__ == "__main__":
    main()
