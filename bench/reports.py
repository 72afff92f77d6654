"""Each report's data step against the same aggregation in pandas, on the big database.

    .venv/bin/python bench/reports.py                 # 1M customers / 5M deals (bench/bigdb.py, built once)
    .venv/bin/python bench/reports.py --small         # 10k / 50k, a quick check
    .venv/bin/python bench/reports.py --only funnel,forecast
    .venv/bin/python bench/reports.py --url postgresql://postgres@127.0.0.1:5432/bench_big   # ours only

Each measurement runs in its own child process, so the peak memory printed
(the child's maximum resident set size) belongs to that step alone:

* ours: ``crm.reports.run(NAME, as_of=AS_OF)`` -- the SQL aggregation and
  the rows it returns (rendering is not part of the data step);
* pandas: read the columns the report needs from the same SQLite file
  (``pandas.read_sql_query``) and aggregate them in pandas, end to end.

``segments`` needs segmentation runs: it runs on a copy of the database
holding two RFM runs 90 days apart, made once next to the cached file (the
shared file itself is never written).

It prints seconds for both, the ratio ours / pandas (below 1: we are faster)
and both peaks, plus one figure from each side (a total the two must agree
on) so a baseline that computes something else would show.
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path
from typing import Any, Callable

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from bigdb import AS_OF, build_big_db  # noqa: E402

REPORTS = ["pipeline", "forecast", "funnel", "win-loss", "sales-performance", "retention-cohorts",
           "customer-value", "service-quality", "activity", "segments"]
CURRENCY = "CNY"
OPEN = {"lead": 10, "qualified": 25, "proposal": 50, "negotiation": 75}
PROBABILITY = {**OPEN, "won": 100, "lost": 0}
AS_OF_TEXT = AS_OF.strftime("%Y-%m-%d %H:%M:%S.%f")


# -- ours ------------------------------------------------------------------------------------------

def database_url(db: str) -> str:
    """A SQLite file path or a database URL (``--url``), as a URL."""
    return db if "://" in db else f"sqlite:///{db}"


def run_ours(db: str, name: str) -> tuple[float, Any]:
    from crmcore import CRM, Config

    config = Config.from_mapping({"database_url": database_url(db), "plugins": ["reports"],
                                  "default_currency": CURRENCY})
    crm = CRM.open(config=config, migrate=False)  # the shared file is read, never changed
    try:
        started = time.perf_counter()
        result = crm.reports.run(name, as_of=AS_OF)
        seconds = time.perf_counter() - started
    finally:
        crm.close()
    return seconds, check_figure(name, result)


def check_figure(name: str, result: Any) -> Any:
    """One number from the report that the pandas baseline computes too."""
    rows = result.records()
    if not rows:
        return None
    if name == "pipeline":
        return str(sum(r["amount"] for r in rows))
    if name == "forecast":
        return str(sum(r["weighted"] for r in rows).normalize())
    if name == "funnel":
        return [r["reached"] for r in rows]
    if name == "win-loss":
        return [rows[-1]["won"], rows[-1]["lost"], str(rows[-1]["won_amount"])]
    if name == "sales-performance":
        return [sum(r["won_deals"] for r in rows), sum(r["activities"] for r in rows)]
    if name == "retention-cohorts":
        return sum(r["customers"] for r in rows)
    if name == "customer-value":
        return str(rows[0]["revenue"])
    if name == "service-quality":
        return [rows[-1]["complaints"], rows[-1]["responded"], rows[-1]["overdue"]]
    if name == "activity":
        return [sum(r["interactions"] for r in rows), len(result.sections[0].rows)]
    if name == "segments":
        moved = sum(r["customers"] for r in result.sections[0].records()) if result.sections else 0
        return [sum(r["members"] for r in rows), str(sum(r["revenue"] for r in rows)), moved]
    return len(rows)


# -- pandas ------------------------------------------------------------------------------------------

def run_pandas(path: Path, name: str) -> tuple[float, Any]:
    import sqlite3

    import pandas as pd

    db = sqlite3.connect(path)

    def query(sql: str, dates: tuple[str, ...] = ()) -> pd.DataFrame:
        frame = pd.read_sql_query(sql, db, params={"as_of": AS_OF_TEXT})
        for column in dates:
            frame[column] = pd.to_datetime(frame[column], format="ISO8601", utc=True)
        return frame

    started = time.perf_counter()
    figure = BASELINES[name](query, pd)
    return time.perf_counter() - started, figure


def _money(scaled: Any) -> str:
    from decimal import Decimal

    return str((Decimal(int(scaled)) / 10_000).quantize(Decimal("0.01")))


def pandas_pipeline(query: Callable, pd: Any) -> Any:
    d = query("SELECT id, stage, probability, amount, created_at FROM deals WHERE pipeline = 'default'"
              f" AND currency = '{CURRENCY}' AND created_at <= :as_of", ("created_at",))
    h = query("SELECT deal_id, id AS change, to_stage, changed_at FROM deal_stage_history"
              " WHERE changed_at <= :as_of", ("changed_at",))
    last = h.sort_values("change").groupby("deal_id").last()
    d = d.join(last, on="id")
    d["then"] = d.to_stage.fillna(d.stage)
    entered = d.changed_at.fillna(d.created_at)
    probability = d.probability.where(d.then == d.stage, d.then.map(PROBABILITY))
    d["weighted"] = d.amount * probability
    d["age"] = (pd.Timestamp(AS_OF) - entered).dt.total_seconds() / 86400
    g = d.groupby("then").agg(count=("id", "size"), amount=("amount", "sum"), weighted=("weighted", "sum"),
                              avg=("age", "mean"), max=("age", "max"))
    return _money(g.amount.sum())


def pandas_forecast(query: Callable, pd: Any) -> Any:
    d = query("SELECT id, stage, amount, probability, expected_close, closed_at FROM deals"
              f" WHERE currency = '{CURRENCY}' AND created_at <= :as_of")
    # Each deal in its stage at as_of (the latest change by then), as the report does.
    h = query("SELECT deal_id, id AS change, to_stage FROM deal_stage_history WHERE changed_at <= :as_of")
    last = h.sort_values("change").groupby("deal_id").to_stage.last()
    d["then"] = d.id.map(last).fillna(d.stage)
    d["probability"] = d.probability.where(d.then == d.stage, d.then.map(PROBABILITY))
    won = d[(d.then == "won") & d.closed_at.notna() & (d.closed_at <= AS_OF_TEXT)]
    open_ = d[d.then.isin(list(OPEN))]
    won_by = won.groupby(won.closed_at.str[:7]).amount.sum()
    months = open_.expected_close.str[:7].fillna("(no date)")
    by = open_.assign(month=months, weighted=open_.amount * open_.probability,
                      committed=open_.amount.where(open_.probability >= 75, 0))
    g = by.groupby("month").agg(n=("amount", "size"), amount=("amount", "sum"), weighted=("weighted", "sum"),
                                committed=("committed", "sum"))
    g = g.join(won_by.rename("won"), how="outer").fillna(0)
    from decimal import Decimal

    return str((Decimal(int(g.weighted.sum())) / 10_000 / 100).normalize())


def pandas_funnel(query: Callable, pd: Any) -> Any:
    h = query("SELECT h.deal_id, h.to_stage, h.changed_at FROM deal_stage_history h WHERE h.changed_at <= :as_of"
              " AND h.deal_id IN (SELECT id FROM deals WHERE pipeline = 'default' AND created_at <= :as_of)",
              ("changed_at",))
    steps = [*OPEN, "won"]
    first = h.groupby(["deal_id", "to_stage"]).changed_at.min().unstack().reindex(columns=steps)
    first = first.astype("datetime64[us, UTC]")  # steps nobody reached are all-NaN columns otherwise
    reached = [int(first[steps[i:]].notna().any(axis=1).sum()) for i in range(len(steps))]
    for a, b in zip(steps, steps[1:]):
        gap = (first[b] - first[a]).dt.total_seconds() / 86400
        gap[gap >= 0].mean()
    return reached


def pandas_win_loss(query: Callable, pd: Any) -> Any:
    d = query("SELECT owner, stage, amount, lost_reason, created_at, closed_at FROM deals"
              f" WHERE currency = '{CURRENCY}' AND created_at <= :as_of AND closed_at <= :as_of"
              " AND stage IN ('won', 'lost')", ("created_at", "closed_at"))
    d["won"] = d.stage == "won"
    d["cycle"] = ((d.closed_at - d.created_at).dt.total_seconds() / 86400).where(d.won & (d.closed_at >= d.created_at))
    d["won_amount"] = d.amount.where(d.won, 0)
    by = d.groupby("owner").agg(won=("won", "sum"), n=("won", "size"), amount=("won_amount", "sum"),
                                cycle=("cycle", "mean"))
    lost = d[~d.won]
    lost.groupby(lost.lost_reason.fillna("(none)")).agg(n=("amount", "size"), amount=("amount", "sum"))
    return [int(by.won.sum()), int(by.n.sum() - by.won.sum()), _money(by.amount.sum())]


def pandas_sales_performance(query: Callable, pd: Any) -> Any:
    d = query("SELECT owner, amount, closed_at FROM deals WHERE stage = 'won'"
              f" AND currency = '{CURRENCY}' AND created_at <= :as_of AND closed_at <= :as_of")
    won = d.groupby([d.closed_at.str[:7], "owner"]).agg(revenue=("amount", "sum"), deals=("amount", "size"))
    i = query("SELECT owner, occurred_at FROM interactions WHERE occurred_at <= :as_of")
    acts = i.groupby([i.occurred_at.str[:7], "owner"]).size()
    return [int(won.deals.sum()), int(acts.sum())]


def pandas_retention_cohorts(query: Callable, pd: Any) -> Any:
    d = query("SELECT customer_id, closed_at FROM deals WHERE stage = 'won' AND created_at <= :as_of"
              " AND closed_at <= :as_of", ("closed_at",))
    d["month"] = d.closed_at.dt.year * 12 + d.closed_at.dt.month - 1
    active = d[["customer_id", "month"]].drop_duplicates().sort_values(["customer_id", "month"])
    active["cohort"] = active.groupby("customer_id").month.transform("min")
    active["offset"] = active.month - active.cohort
    matrix = active[active.offset < 12].groupby(["cohort", "offset"]).size().unstack(fill_value=0)
    following = active.groupby("customer_id").month.shift(-1)
    active["retained"] = following == active.month + 1
    active.groupby(active.month + 1).agg(previous=("retained", "size"), retained=("retained", "sum"))
    return int(matrix[0].sum())


def pandas_customer_value(query: Callable, pd: Any) -> Any:
    d = query("SELECT customer_id, amount FROM deals WHERE stage = 'won'"
              f" AND currency = '{CURRENCY}' AND created_at <= :as_of AND closed_at <= :as_of")
    per = d.groupby("customer_id").amount.agg(["sum", "size"]).reset_index()
    per = per.sort_values(["sum", "customer_id"], ascending=[False, True])
    n = len(per)
    per["decile"] = (pd.RangeIndex(n) * 10) // n + 1
    deciles = per.groupby("decile")["sum"].agg(["size", "sum"])
    per["size"].clip(upper=5).value_counts()
    return _money(deciles["sum"].iloc[0])


def pandas_service_quality(query: Callable, pd: Any) -> Any:
    i = query("SELECT id, customer_id, kind, direction, channel, occurred_at, resolved_at, satisfaction"
              " FROM interactions WHERE occurred_at <= :as_of AND customer_id IN"
              " (SELECT customer_id FROM interactions WHERE kind IN ('complaint', 'feedback')"
              " AND occurred_at <= :as_of)", ("occurred_at", "resolved_at"))
    i = i.sort_values(["customer_id", "occurred_at", "id"], ascending=False)  # reversed: "later" comes first
    outbound = i.occurred_at.where(i.direction == "outbound")
    shifted = outbound.groupby(i.customer_id).shift(1)
    # cummin leaves NaT where the row itself has none: carry the running minimum over those rows.
    i["responded_at"] = shifted.groupby(i.customer_id).cummin().groupby(i.customer_id).ffill()
    cases = i[i.kind.isin(["complaint", "feedback"])].copy()
    complaint = cases.kind == "complaint"
    cases["response_h"] = ((cases.responded_at - cases.occurred_at).dt.total_seconds() / 3600).where(complaint)
    resolved = complaint & cases.resolved_at.notna() & (cases.resolved_at <= pd.Timestamp(AS_OF))
    cases["resolution_h"] = ((cases.resolved_at - cases.occurred_at).dt.total_seconds() / 3600).where(resolved)
    age_h = (pd.Timestamp(AS_OF) - cases.occurred_at).dt.total_seconds() / 3600
    cases["overdue"] = complaint & ~resolved & (age_h > 24)
    cases["complaint"] = complaint
    g = cases.groupby("channel").agg(complaints=("complaint", "sum"), responded=("response_h", "count"),
                                     response=("response_h", "mean"), resolution=("resolution_h", "mean"),
                                     overdue=("overdue", "sum"), satisfaction=("satisfaction", "mean"))
    pd.crosstab(cases.channel, cases.satisfaction)
    return [int(g.complaints.sum()), int(g.responded.sum()), int(g.overdue.sum())]


def pandas_activity(query: Callable, pd: Any) -> Any:
    i = query("SELECT customer_id, kind, direction, occurred_at, follow_up_due FROM interactions"
              " WHERE occurred_at <= :as_of", ("occurred_at", "follow_up_due"))
    g = i.groupby([i.occurred_at.dt.strftime("%Y-%m"), "kind"]).direction.value_counts().unstack(fill_value=0)
    last = i.groupby("customer_id").occurred_at.transform("max")
    due = i[i.follow_up_due.notna() & (i.follow_up_due < pd.Timestamp(AS_OF)) & (i.occurred_at >= last)]
    per = due.groupby("customer_id").follow_up_due.agg(["size", "min"]).sort_values("min").head(50)
    return [int(g.to_numpy().sum()), len(per)]


def pandas_segments(query: Callable, pd: Any) -> Any:
    runs = query("SELECT id, strategy FROM segment_runs ORDER BY id")
    if not len(runs):
        return None
    run = runs.iloc[-1]
    before = runs[(runs.strategy == run.strategy) & (runs.id < run.id)].id
    m = query(f"SELECT customer_id, segment FROM segment_memberships WHERE run_id = {int(run.id)}")
    d = query("SELECT customer_id, amount FROM deals WHERE stage = 'won' AND pipeline = 'default'"
              f" AND currency = '{CURRENCY}' AND created_at <= :as_of AND closed_at <= :as_of")
    m["revenue"] = m.customer_id.map(d.groupby("customer_id").amount.sum()).fillna(0)
    sizes = m.groupby("segment").agg(members=("customer_id", "size"), revenue=("revenue", "sum"))
    moved = 0
    if len(before):
        p = query(f"SELECT customer_id, segment FROM segment_memberships WHERE run_id = {int(before.iloc[-1])}")
        pairs = p.merge(m[["customer_id", "segment"]], on="customer_id", how="outer", suffixes=("_before", "_after"))
        moved = int(pairs.fillna("(none)").groupby(["segment_before", "segment_after"]).size().sum())
    return [int(sizes.members.sum()), _money(sizes.revenue.sum()), moved]


BASELINES: dict[str, Callable] = {name: globals()["pandas_" + name.replace("-", "_")] for name in REPORTS}


# -- driver ----------------------------------------------------------------------------------------------

def child(side: str, db: str, name: str) -> None:
    seconds, figure = run_ours(db, name) if side == "ours" else run_pandas(Path(db), name)
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"seconds": seconds, "peak_mb": peak_mb, "figure": figure}, default=str))


def measure(side: str, db: Path | str, name: str) -> dict[str, Any]:
    done = subprocess.run([sys.executable, __file__, "--child", side, "--db", str(db), name],
                          capture_output=True, text=True)
    if done.returncode:
        return {"error": (done.stderr.strip().splitlines() or ["failed"])[-1]}
    return json.loads(done.stdout.strip().splitlines()[-1])


def with_segment_runs(path: Path) -> Path:
    """A copy of the big database holding two RFM runs 90 days apart, made once, for ``segments``.

    A copy because the shared file stays read-only for every other benchmark.
    """
    target = path.with_name(path.stem + "-rfm-runs.sqlite")
    if target.exists():
        return target
    partial = target.with_suffix(".partial")
    shutil.copyfile(path, partial)
    add_rfm_runs(database_url(str(partial)))
    partial.rename(target)
    return target


def add_rfm_runs(url: str) -> None:
    """Two RFM runs 90 days apart, unless the database has RFM runs already."""
    from crmcore import CRM, Config

    config = Config.from_mapping({"database_url": url, "plugins": ["segments"], "default_currency": CURRENCY})
    crm = CRM.open(config=config, migrate=False)
    try:
        if not crm.segments.runs("rfm", limit=1):
            for as_of in (AS_OF - timedelta(days=90), AS_OF):
                crm.segments.run("rfm", as_of=as_of)
    finally:
        crm.close()


def main_url(url: str, names: list[str]) -> None:
    """``--url``: our side only, on a server database loaded by ``bench/bigdb.py --postgres URL``."""
    print(f"database {url.rpartition('@')[2]}, as of {AS_OF:%Y-%m-%d} (ours only: the baselines read SQLite)")
    print(f"{'report':<18} {'ours s':>8} {'ours MB':>8}")
    for name in names:
        if name == "segments":
            add_rfm_runs(url)  # writes into that database: it is a benchmark copy
        ours = measure("ours", url, name)
        if "error" in ours:
            print(f"{name:<18} error: {ours['error']}")
            continue
        print(f"{name:<18} {ours['seconds']:8.2f} {ours['peak_mb']:8.0f}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--small", action="store_true", help="10k customers / 50k deals")
    parser.add_argument("--only", help="comma-separated report names")
    parser.add_argument("--url", help="time our side only, on this database (bench/bigdb.py --postgres URL)")
    parser.add_argument("--child", choices=["ours", "pandas"], help=argparse.SUPPRESS)
    parser.add_argument("--db", help=argparse.SUPPRESS)
    parser.add_argument("name", nargs="?", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.db, args.name)
        return
    names = args.only.split(",") if args.only else REPORTS
    if args.url:
        main_url(args.url, names)
        return
    path = build_big_db(customers=10_000, deals=50_000, interactions=100_000) if args.small else build_big_db()
    print(f"database {path} ({path.stat().st_size / 1e9:.2f} GB), as of {AS_OF:%Y-%m-%d}")
    print(f"{'report':<18} {'ours s':>8} {'pandas s':>9} {'ratio':>6} {'ours MB':>8} {'pandas MB':>10}  agree")
    for name in names:
        db = with_segment_runs(path) if name == "segments" else path
        ours, base = measure("ours", db, name), measure("pandas", db, name)
        if "error" in ours or "error" in base:
            print(f"{name:<18} error: {ours.get('error') or base.get('error')}")
            continue
        agree = "yes" if ours["figure"] == base["figure"] else f"NO ({ours['figure']} vs {base['figure']})"
        if ours["figure"] is None:
            agree = "n/a (no data: e.g. no segmentation run)"
        print(f"{name:<18} {ours['seconds']:8.2f} {base['seconds']:9.2f} {ours['seconds'] / base['seconds']:6.2f}"
              f" {ours['peak_mb']:8.0f} {base['peak_mb']:10.0f}  {agree}", flush=True)


if __name__ == "__main__":
    main()
