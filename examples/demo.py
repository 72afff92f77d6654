"""A small end-to-end demo of the Python API on an embedded SQLite file.

    python examples/demo.py [--customers N] [--seed S] [--out DIR]

Creates DIR/demo.db (replacing it), adds customers and deals, wins some deals
(the points scheme earns in the same transaction), runs the RFM segmenter,
queues and dispatches thank-you messages to the file channel, and renders the
pipeline report.  Deterministic for a given seed.
"""

from __future__ import annotations

import argparse
import random
from collections import Counter
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path

from crmcore import CRM, Config

PLUGINS = ["segments", "loyalty", "notify", "reports"]
SURNAMES = ["张", "王", "李", "赵", "陈", "刘", "杨", "黄", "周", "吴"]
GIVEN = ["伟", "芳", "娜", "敏", "静", "磊", "洋", "艳", "勇", "军"]
WESTERN = ["Alice Smith", "Bob Jones", "Carol White", "Dan Brown", "Eve Black", "Frank Green"]
REGIONS = ["华东", "华北", "华南", "西南", "东北"]
STAGES = ["lead", "qualified", "proposal", "negotiation"]
AS_OF = datetime(2026, 6, 30, 23, 59, tzinfo=timezone.utc)


def customer_rows(rng: random.Random, count: int) -> list[dict]:
    rows = []
    for i in range(count):
        chinese = rng.random() < 0.7
        name = rng.choice(SURNAMES) + rng.choice(GIVEN) + rng.choice(GIVEN) if chinese else rng.choice(WESTERN)
        rows.append({
            "name": name,
            "email": f"customer{i}@example.com",
            "phone": f"+86 139 {rng.randrange(1000, 9999)} {rng.randrange(1000, 9999)}",
            "country": "CN" if chinese else "US",
            "region": rng.choice(REGIONS) if chinese else None,
            "stage": "customer",
            "consent_marketing": rng.random() < 0.6,
            "external_id": f"demo-{i}",
        })
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=300)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--out", default="demo-output")
    args = parser.parse_args()
    rng = random.Random(args.seed)
    out = Path(args.out)
    out.mkdir(exist_ok=True)
    for suffix in ("", "-wal", "-shm"):
        Path(f"{out / 'demo.db'}{suffix}").unlink(missing_ok=True)
    (out / "outbox.jsonl").unlink(missing_ok=True)

    clock = [AS_OF - timedelta(days=720)]
    config = Config.from_mapping({
        "database_url": f"sqlite:///{out / 'demo.db'}",
        "plugins": PLUGINS,
        "default_currency": "CNY",
        "phone_region": "CN",
        "channels": {"file": {"path": str(out / "outbox.jsonl")}},
    })
    crm = CRM.open(config=config, clock=lambda: clock[0])
    crm.customers.add_many(customer_rows(rng, args.customers), on_duplicate="add")  # random numbers may repeat
    customers = crm.customers.list()

    won = 0
    for day in range(0, 720, 3):  # two years of deals, in time order
        clock[0] = AS_OF - timedelta(days=720 - day)
        for customer in rng.sample(customers, k=min(len(customers), 4)):
            amount = Decimal(rng.choice([980, 1500, 2999, 5000, 12000, 36000])) + Decimal(rng.randrange(100)) / 100
            deal = crm.deals.add(customer_id=customer.id, title=f"订单 #{day}-{customer.id}",
                                 amount=amount, stage=rng.choice(STAGES))
            if rng.random() < 0.6:
                crm.deals.move(deal.id, "won")
                won += 1
                crm.notify.enqueue("file", customer_id=customer.id, recipient=customer.email,
                                   subject=f"谢谢, {customer.name}!", body=f"Thank you for order {deal.id}.",
                                   key=f"thanks:deal:{deal.id}")
            elif rng.random() < 0.3:
                crm.deals.move(deal.id, "lost", lost_reason="price")
    clock[0] = AS_OF

    run = crm.segments.run("rfm", as_of=AS_OF)
    balances = crm.loyalty.balances("points")
    dispatched = crm.notify.dispatch()
    report = crm.reports.render("pipeline", format="table", as_of=AS_OF)
    (out / "pipeline.csv").write_text(crm.reports.render("pipeline", format="csv", as_of=AS_OF), encoding="utf-8")

    print(f"database:      {out / 'demo.db'}")
    print(f"customers:     {len(customers)}; deals won: {won}")
    print(f"rfm run {run.id}:     " + ", ".join(f"{k} {v}" for k, v in Counter(run.counts).most_common()))
    print(f"points:        {sum(balances.values())} outstanding across {len(balances)} members")
    print(f"notifications: {dispatched.sent} sent to {out / 'outbox.jsonl'}")
    print(f"report:        {out / 'pipeline.csv'}")
    print(report)
    crm.close()


if __name__ == "__main__":
    main()
