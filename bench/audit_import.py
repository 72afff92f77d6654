"""Benchmark: our customer import with and without the audit trail, in one process.

    .venv/bin/python bench/audit_import.py                  # 100,000 rows
    .venv/bin/python bench/audit_import.py --rows 1000000   # the issue's 1M rows (long)

The audit trail writes one record per import batch with the batch's row ids
(issue 15 point 5: at most 15% more time than without auditing).  Both runs
import the same generated CSV into fresh migrated SQLite files through
``crmcore.io.import_file`` (full validation, owners mapped to users); "without"
disables the trail by making ``AuditTrail.record`` a no-op for that run.  Each
side runs ``--repeat`` times, alternating, and the best time of each counts
(less noise from the machine's other load).  Prints rows/s and the ratio.
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from crmcore import CRM, Config  # noqa: E402
from crmcore.application.audit import AuditTrail  # noqa: E402
from crmcore.io.importer import ImportOptions, import_file  # noqa: E402

OWNERS = ["alice", "bob", "wang.fang", "zhao.lei"]
REGIONS = ["华东", "华南", "华北", "CA", "NY"]


def generate(path: Path, rows: int) -> None:
    """Cheap synthetic rows (no Faker: 200 µs a row would dominate)."""
    rng = random.Random(15)
    with path.open("w", encoding="utf-8") as out:
        out.write("external_id,name,email,region,owner\n")
        for i in range(rows):
            out.write(f"C{i},客户 {i},c{i}@example.com,{rng.choice(REGIONS)},{rng.choice(OWNERS)}\n")


def run_once(csv: Path, workdir: Path, audited: bool, label: str, batch: int) -> float:
    db = workdir / f"{label}.db"
    crm = CRM.open(config=Config.from_mapping({"database_url": f"sqlite:///{db}", "plugins": []}))
    try:
        for login in OWNERS:  # a configured CRM: owners are users added beforehand
            crm.users.add(login)
        original = AuditTrail.record
        if not audited:
            AuditTrail.record = lambda self, *a, **k: None  # type: ignore[method-assign]
        try:
            started = time.perf_counter()
            report = import_file(crm, "customers", csv, ImportOptions(batch_size=batch))
            elapsed = time.perf_counter() - started
        finally:
            AuditTrail.record = original  # type: ignore[method-assign]
        assert report.inserted == report.rows, report.summary()
    finally:
        crm.close()
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--batch", type=int, default=5000, help="import batch size (one audit record each)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        csv = workdir / "customers.csv"
        generate(csv, args.rows)
        best = {True: float("inf"), False: float("inf")}
        for n in range(args.repeat):
            for audited in (n % 2 == 0, n % 2 != 0):  # alternate which side goes first
                label = f"{'audited' if audited else 'plain'}-{n}"
                best[audited] = min(best[audited], run_once(csv, workdir, audited, label, args.batch))
                (workdir / f"{label}.db").unlink()
    rows = args.rows
    print(f"import of {rows:,} customers (batches of {args.batch:,}), best of {args.repeat}:")
    print(f"  without auditing: {best[False]:.2f}s  {rows / best[False]:,.0f} rows/s")
    print(f"  with auditing:    {best[True]:.2f}s  {rows / best[True]:,.0f} rows/s")
    print(f"  ratio with/without: {best[True] / best[False]:.3f} (budget 1.15)")


if __name__ == "__main__":
    main()
