"""Benchmark: duplicates (issue 18), in one process.

    .venv/bin/python bench/duplicates_bench.py                       # planted set + 100k + 1,000 pairs
    .venv/bin/python bench/duplicates_bench.py --customers 1000000 --pairs 10000   # the issue's figures
    .venv/bin/python bench/duplicates_bench.py --only door --customers 1000000     # the door at 1M

Three parts, each on a fresh migrated SQLite file:

1. **Precision and recall** of the defaults on generated people with planted duplicates: the
   same person again with the email in other capitals or spaces, the phone written another way
   (national, spaced, dashed, full-width digits), the name in pinyin or characters, other case
   or spacing, a company without or with another legal suffix.  The generated population has
   many namesakes (common surnames and given names, few cities) and families sharing a phone,
   the cases a careless matcher merges.  Truth is what was planted; a predicted pair is two
   customers in one cluster.  Printed at ``min_score`` (the listing) and at ``merge_score``
   (what ``crm customer merge --all-above`` merges); the goal is both >= 0.95 at the merge score
   with no distinct people merged.
2. **``crm customer duplicates`` over N customers** (1% planted): time and peak memory (RSS),
   against the baseline of comparing every pair of names with no blocking (rapidfuzz's
   ``cdist`` on one core, timed on a sample and extrapolated to N*(N-1)/2 pairs).  Also the cost
   of one door check (``crm.duplicates.check``) at that size.
3. **Bulk merge of P pairs** with history (a contact, an interaction, a won deal earning points
   each): ``crm.merges.merge_all``, seconds per pair against Odoo's merge wizard at 7.6 s a pair.
4. **What the door check costs one ``customers.add``** at N customers: ms per add with the
   check against without it (``on_duplicate="add"``), and one ``crm.duplicates.check``.
5. **What the door check costs an import** of new customers: the default keys against none.
6. **What the loyalty plugin's row moves cost a merge** (``--only rows``): the same merges with its
   ``merge_customer_rows`` hook and with that hook a no-op, alternating.
"""

from __future__ import annotations

import argparse
import random
import resource
import sys
import tempfile
import time
from datetime import datetime, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from rapidfuzz import fuzz, process  # noqa: E402
from sqlalchemy import insert  # noqa: E402

from crmcore import CRM, Config  # noqa: E402
from crmcore.domain.matching import name_forms  # noqa: E402
from crmcore.store import tables  # noqa: E402

ODOO_SECONDS_PER_PAIR = 7.6
SURNAMES = "王李张刘陈杨黄赵吴周徐孙马朱胡郭何高林罗"
GIVEN = ["伟", "芳", "娜", "敏", "静", "丽", "强", "磊", "军", "洋", "勇", "艳", "杰", "娟", "涛", "明", "超", "秀英",
         "霞", "平", "刚", "桂英", "建华", "文", "华", "玉兰", "小红", "志强", "海燕", "俊"]
LATIN = ["James Smith", "Mary Johnson", "John Brown", "Linda Davis", "Robert Miller", "Anna Wilson",
         "David Moore", "Laura Taylor", "Michael Anderson", "Sarah Thomas"]
COMPANIES = ["华为技术", "腾讯科技", "阿里巴巴网络", "Acme Trading", "Globex", "Initech Software", "字节跳动",
             "Umbrella Pharma", "Stark Industries", "美的电器"]
SUFFIXES = ["有限公司", "股份有限公司", "集团", " Co., Ltd.", " Ltd", " Inc.", " GmbH", ""]
CITIES = ["Shanghai", "Beijing", "Shenzhen", "Guangzhou", "Hangzhou", "Chengdu", "Wuhan", "Nanjing"]
FULL_WIDTH = str.maketrans("0123456789", "０１２３４５６７８９")


def person(rng: random.Random, i: int) -> dict[str, Any]:
    """A generated customer with a unique email and phone (names repeat a lot, on purpose)."""
    if rng.random() < 0.1:
        name = rng.choice(COMPANIES) + rng.choice(SUFFIXES)
        kind = "company"
    elif rng.random() < 0.15:
        name, kind = rng.choice(LATIN), "person"
    else:
        name, kind = rng.choice(SURNAMES) + rng.choice(GIVEN), "person"
    return {"name": name, "kind": kind, "email": f"user{i}.{rng.randrange(10**6)}@example.com",
            "phone": f"+86139{i:08d}", "city": rng.choice(CITIES)}


def variant(rng: random.Random, original: dict[str, Any]) -> dict[str, Any]:
    """The same person typed in again: one or two of the planted variations, an exact key kept."""
    dup = dict(original)
    keep_email = rng.random() < 0.6
    if keep_email:
        email = original["email"]
        dup["email"] = rng.choice([email.upper(), email.title(), email.capitalize(), email])
        dup["phone"] = None if rng.random() < 0.5 else original["phone"]
    else:
        digits = original["phone"][3:]
        dup["phone"] = rng.choice([digits, f"{digits[:3]} {digits[3:7]} {digits[7:]}",
                                   f"{digits[:3]}-{digits[3:7]}-{digits[7:]}", digits.translate(FULL_WIDTH),
                                   f"+86 {digits}"])
        dup["email"] = None
    name = original["name"]
    if original["kind"] == "company":
        base = name
        for suffix in sorted(SUFFIXES, key=len, reverse=True):
            if suffix and name.endswith(suffix):
                base = name[: -len(suffix)]
                break
        dup["name"] = base + rng.choice(SUFFIXES)
    elif any("\u4e00" <= c <= "\u9fff" for c in name):
        roman = name_forms(name)[1].split()
        dup["name"] = rng.choice([" ".join(w.title() for w in reversed(roman)), " ".join(roman).upper(),
                                  name, " ".join(name)])
    else:
        dup["name"] = rng.choice([name.upper(), name.lower(), "  ".join(name.split()), " ".join(reversed(name.split()))])
    return dup


def open_crm(path: Path, plugins: list[str] | None = None, **config: Any) -> CRM:
    values = {"database_url": f"sqlite:///{path}", "plugins": plugins or [], "phone_region": "CN", **config}
    return CRM.open(config=Config.from_mapping(values))


def planted(workdir: Path, people: int, duplicates: int) -> None:
    rng = random.Random(18)
    base = [person(rng, i) for i in range(people)]
    rows, truth = list(base), []
    for index in rng.sample(range(people), duplicates):
        rows.append(variant(rng, base[index]))
        truth.append((index, len(rows) - 1))
    # Families: another person sharing a phone (distinct people that must not be merged).
    for index in rng.sample(range(people), duplicates // 4):
        other = person(rng, people + len(rows))
        other["phone"] = base[index]["phone"]
        rows.append(other)
    crm = open_crm(workdir / "planted.db")
    try:
        crm.customers.add_many(rows, on_duplicate="add")  # the duplicates go in past the door
        ids = [c.id for c in crm.customers.list(limit=len(rows), order_by="id")]
        truth_pairs = {tuple(sorted((ids[a], ids[b]))) for a, b in truth}
        settings = crm.config.duplicates
        print(f"planted: {people:,} people, {duplicates:,} duplicates, {duplicates // 4:,} families sharing a phone")
        started = time.perf_counter()
        for label, score in (("min_score", settings.min_score), ("merge_score", settings.merge_score)):
            found = crm.duplicates.find(score)
            predicted = {(a, b) for c in found for i, a in enumerate(c.ids) for b in c.ids[i + 1:]}
            hits = len(predicted & truth_pairs)
            precision = hits / len(predicted) if predicted else 1.0
            recall = hits / len(truth_pairs)
            wrong = len(predicted - truth_pairs)
            print(f"  at {label} {score}: precision {precision:.4f}  recall {recall:.4f}  "
                  f"({len(predicted):,} pairs predicted, {wrong:,} of distinct people)")
        print(f"  (two searches in {time.perf_counter() - started:.1f} s)")
    finally:
        crm.close()


def population(workdir: Path, count: int) -> Path:
    """``count`` customers (1% planted duplicates) written with executemany (Faker-free)."""
    path = workdir / "big.db"
    crm = open_crm(path)
    now = datetime(2026, 12, 1, tzinfo=timezone.utc)
    base = {"stage": "lead", "consent_email": True, "consent_sms": True, "consent_marketing": False, "tags": [],
            "attributes": {}, "created_at": now, "updated_at": now}
    try:
        with crm.engine.begin() as conn:
            batch: list[dict[str, Any]] = []
            for i in range(count):
                row = person(random.Random(i), i)  # each row from its own seed: a duplicate can remake it
                if i % 100 == 99:  # a duplicate of an earlier customer, normalised as a write stores it
                    row = dict(person(random.Random(i - 50), i - 50))
                    row["email"] = row["email"].upper()
                    row["phone"] = None
                batch.append({**base, **row})
                if len(batch) == 10_000:
                    conn.execute(insert(tables.customers), batch)
                    batch = []
            if batch:
                conn.execute(insert(tables.customers), batch)
    finally:
        crm.close()
    return path


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def big(workdir: Path, count: int) -> None:
    started = time.perf_counter()
    path = population(workdir, count)
    print(f"\n{count:,} customers generated in {time.perf_counter() - started:.1f} s")
    crm = open_crm(path)
    try:
        rss_before = peak_rss_mb()
        started = time.perf_counter()
        found = crm.duplicates.find()
        ours = time.perf_counter() - started
        pairs = sum(len(c.pairs) for c in found)
        print(f"crm customer duplicates: {ours:.1f} s, {len(found):,} clusters, {pairs:,} pairs at min_score; "
              f"peak RSS {peak_rss_mb():.0f} MB (was {rss_before:.0f} MB before the search)")
        started = time.perf_counter()
        crm.duplicates.check(email="USER5.1@EXAMPLE.COM", phone="+8613900000005")
        print(f"one door check at {count:,} customers: {(time.perf_counter() - started) * 1000:.0f} ms")
        rows = crm.customers.list(limit=4000, order_by="id")
        names = [name_forms(c.name, c.kind.value == "company")[1] for c in rows]
        started = time.perf_counter()
        process.cdist(names, names, scorer=fuzz.token_sort_ratio, score_cutoff=85, workers=1)
        sample = time.perf_counter() - started
        per_pair = sample / (len(names) * (len(names) - 1) / 2)
        baseline = per_pair * count * (count - 1) / 2
        print(f"baseline, every pair of names compared (no blocking): {per_pair * 1e9:.0f} ns a pair, "
              f"{baseline / 3600:.1f} h estimated for {count:,}; ours is {baseline / ours:,.0f}x faster")
    finally:
        crm.close()


def door(workdir: Path, count: int, adds: int) -> None:
    """What the door check costs one ``customers.add`` at ``count`` customers: ``adds`` new
    customers (an address and a number no one has) added one by one with the check (the default,
    ``on_duplicate="refuse"``) and without it (``"add"``), alternating, each its own transaction."""
    started = time.perf_counter()
    path = population(workdir, count)
    print(f"\n{count:,} customers generated in {time.perf_counter() - started:.1f} s")
    crm = open_crm(path)
    try:
        rng = random.Random(99)
        spent = {"refuse": 0.0, "add": 0.0}
        for i in range(adds):
            for rule in ("refuse", "add"):
                row = person(rng, count + 2 * i + (rule == "add"))
                row["email"] = f"door.{rule}.{i}@example.org"
                row["phone"] = f"+86137{rng.randrange(10**7, 10**8)}"
                started = time.perf_counter()
                crm.customers.add(on_duplicate=rule, **row)
                spent[rule] += time.perf_counter() - started
        check, without = spent["refuse"] / adds * 1000, spent["add"] / adds * 1000
        started = time.perf_counter()
        crm.duplicates.check(email="USER5.1@EXAMPLE.COM", phone="+8613900000005")
        print(f"one door check (crm.duplicates.check) at {count:,} customers: "
              f"{(time.perf_counter() - started) * 1000:.1f} ms")
        print(f"customers.add at {count:,} customers, mean of {adds}: {check:.1f} ms with the door check, "
              f"{without:.1f} ms without (on_duplicate='add'): the check costs {check - without:.1f} ms")
    finally:
        crm.close()


def bulk_merge(workdir: Path, pairs: int) -> None:
    crm = open_crm(workdir / "merge.db", plugins=["loyalty"], loyalty={"points": {"points_per_unit": 1}})
    try:
        rng = random.Random(7)
        people = [person(rng, i) for i in range(pairs)]
        copies = [{**p, "email": p["email"].upper(), "phone": None} for p in people]
        started = time.perf_counter()
        crm.customers.add_many(people + copies, on_duplicate="add")
        ids = [c.id for c in crm.customers.list(limit=2 * pairs, order_by="id")]
        crm.contacts.add_many([{"customer_id": cid, "name": "assistant"} for cid in ids])
        crm.interactions.add_many([{"customer_id": cid, "kind": "call", "direction": "inbound",
                                    "occurred_at": "2026-11-01T10:00:00Z", "subject": "hello"} for cid in ids])
        crm.deals.add_many([{"customer_id": cid, "title": "order", "amount": Decimal("100"), "currency": "CNY",
                             "stage": "won"} for cid in ids])
        print(f"\n{pairs:,} pairs with history set up in {time.perf_counter() - started:.1f} s")
        started = time.perf_counter()
        plan, done, refused = crm.merges.merge_all()
        assert not refused, refused[:3]
        elapsed = time.perf_counter() - started
        per_pair = elapsed / max(len(done), 1)
        print(f"bulk merge: {len(done):,} merges (clusters found: {len(plan):,}) in {elapsed:.1f} s, "
              f"{per_pair * 1000:.1f} ms a pair; Odoo's wizard {ODOO_SECONDS_PER_PAIR} s a pair: "
              f"{ODOO_SECONDS_PER_PAIR / per_pair:,.0f}x faster ({pairs * ODOO_SECONDS_PER_PAIR / 3600:.1f} h there)")
        assert crm.loyalty.recompute() == [], "balances drifted from the ledger"
    finally:
        crm.close()


def plugin_rows_cost(workdir: Path, pairs: int, rounds: int = 4) -> None:
    """What the loyalty plugin's ``merge_customer_rows`` (reward codes, tier changes, referrals,
    grace periods) costs a merge: the same merges on two databases, one with the plugin's hook made
    a no-op, alternating in chunks; best and median ms a pair of each side."""
    sides = {}
    for label in ("hook", "no hook"):
        crm = open_crm(workdir / f"rows-{label}.db", plugins=["loyalty"], loyalty={"points": {"points_per_unit": 1}})
        rng = random.Random(7)
        people = [person(rng, i) for i in range(pairs)]
        crm.customers.add_many(people + [{**p, "email": p["email"].upper(), "phone": None} for p in people],
                               on_duplicate="add")
        crm.deals.add_many([{"customer_id": cid, "title": "order", "amount": Decimal("100"), "currency": "CNY",
                             "stage": "won"} for cid in range(1, 2 * pairs + 1)])
        if label == "no hook":
            for impl in crm.plugins.pm.hook.merge_customer_rows.get_hookimpls():
                if impl.plugin_name == "loyalty":
                    impl.function = lambda *args: None
        sides[label] = crm
    chunk = pairs // rounds
    times: dict[str, list[float]] = {"hook": [], "no hook": []}
    try:
        for r in range(rounds):
            for label in (("hook", "no hook") if r % 2 == 0 else ("no hook", "hook")):
                crm = sides[label]
                started = time.perf_counter()
                for i in range(r * chunk + 1, (r + 1) * chunk + 1):
                    crm.merges.merge(i, [pairs + i])
                times[label].append((time.perf_counter() - started) / chunk * 1000)
    finally:
        for crm in sides.values():
            crm.close()
    hook, bare = sorted(times["hook"]), sorted(times["no hook"])
    print(f"\nmerge with the loyalty plugin's rows hook: best {hook[0]:.1f} ms, median "
          f"{hook[len(hook) // 2]:.1f} ms a pair; with it a no-op: best {bare[0]:.1f}, median "
          f"{bare[len(bare) // 2]:.1f} ms; ratio (best) {hook[0] / bare[0]:.2f}")


def import_cost(workdir: Path, rows: int) -> None:
    """What the door check costs an import of ``rows`` new customers: the default keys against
    ``[duplicates] exact = []`` (no check), best of two runs each, alternating."""
    from crmcore.io.importer import ImportOptions, import_file

    csv = workdir / "import.csv"
    with csv.open("w", encoding="utf-8") as out:
        out.write("external_id,name,email,phone,city\n")
        for i in range(rows):
            out.write(f"C{i},客户 {i},c{i}@example.com,+86139{i:08d},Shanghai\n")
    best: dict[str, float] = {}
    for attempt in range(2):
        for label, exact in (("door", None), ("no door", [])):
            path = workdir / f"import-{label}-{attempt}.db"
            crm = open_crm(path, **({} if exact is None else {"duplicates": {"exact": exact}}))
            try:
                started = time.perf_counter()
                report = import_file(crm, "customers", csv, ImportOptions(workers=0))
                elapsed = time.perf_counter() - started
                assert report.inserted == rows, report.summary()
            finally:
                crm.close()
            best[label] = min(best.get(label, elapsed), elapsed)
    print(f"\nimport of {rows:,} new customers: {best['door']:.1f} s with the door check, "
          f"{best['no door']:.1f} s without ({best['door'] / best['no door']:.2f}x)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--people", type=int, default=20_000, help="people in the planted set")
    parser.add_argument("--planted", type=int, default=2_000, help="duplicates planted among them")
    parser.add_argument("--customers", type=int, default=100_000, help="customers for the search benchmark")
    parser.add_argument("--pairs", type=int, default=1_000, help="pairs for the bulk merge benchmark")
    parser.add_argument("--import-rows", type=int, default=100_000, help="rows for the import cost of the door")
    parser.add_argument("--door-adds", type=int, default=200, help="customers added one by one for the door's cost")
    parser.add_argument("--only", choices=["planted", "big", "door", "merge", "rows", "import"], help="run one part only")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        if args.only in (None, "planted"):
            planted(workdir, args.people, args.planted)
        if args.only in (None, "big"):
            big(workdir, args.customers)
        if args.only in (None, "door"):
            door(workdir, args.customers, args.door_adds)
        if args.only in (None, "merge"):
            bulk_merge(workdir, args.pairs)
        if args.only in (None, "rows"):
            plugin_rows_cost(workdir, min(args.pairs, 1_000))
        if args.only in (None, "import"):
            import_cost(workdir, args.import_rows)


if __name__ == "__main__":
    main()
