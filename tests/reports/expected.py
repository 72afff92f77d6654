"""Independent computations of every report, in pandas, from the generated frames.

Each function follows the definition in the report's docstring, written
again from scratch over the generated values (never over the database or
the report's SQL).  Money is summed as scaled integers (exact), then turned
into Decimal at the currency's minor unit, as the documentation promises.
"""

from __future__ import annotations

from datetime import date, datetime, time, timedelta, timezone
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

import pandas as pd

from .conftest import OPEN, PROBABILITY, SCALE, World

UTC = timezone.utc
MINOR = {"USD": Decimal("0.01"), "EUR": Decimal("0.01"), "JPY": Decimal("1")}
NONE = "(none)"


# -- rules shared by the reports (as documented) ------------------------------------------------

def money(scaled: int, currency: str) -> Decimal:
    return (Decimal(int(scaled)) / SCALE).quantize(MINOR[currency])


def weighted_money(scaled_percent: int, currency: str) -> Decimal:
    """A sum of scaled amount * probability %, exact, then rounded half-up once to the minor unit."""
    return (Decimal(int(scaled_percent)) / SCALE / 100).quantize(MINOR[currency], rounding=ROUND_HALF_UP)


def average(scaled: int, count: int, currency: str) -> Decimal | None:
    if not count:
        return None
    return (Decimal(int(scaled)) / SCALE / count).quantize(MINOR[currency], rounding=ROUND_HALF_UP)


def ratio(part: Any, whole: Any) -> Decimal | None:
    if not whole:
        return None
    return (Decimal(part) / Decimal(whole)).quantize(Decimal("0.0001"), rounding=ROUND_HALF_UP)


def month(moment: datetime | date) -> int:
    return moment.year * 12 + moment.month - 1


def label(index: int) -> str:
    return f"{index // 12:04d}-{index % 12 + 1:02d}"


def window(as_of: datetime, start: date | None = None, end: date | None = None) -> tuple[datetime | None, datetime]:
    """(start, end exclusive) of the date filters, end capped just after as_of."""
    first = datetime.combine(start, time.min, tzinfo=UTC) if start else None
    stop = as_of + timedelta(microseconds=1)
    if end:
        stop = min(stop, datetime.combine(end + timedelta(days=1), time.min, tzinfo=UTC))
    return first, stop


def between(series: pd.Series, first: datetime | None, stop: datetime) -> pd.Series:
    keep = series.notna() & (series < stop)
    return keep & (series >= first) if first is not None else keep


def deals_in_scope(w: World, as_of: datetime, currency: str | None = "USD", owner: str | None = None,
                   region: str | None = None, members: set[int] | None = None) -> pd.DataFrame:
    d = w.deals[w.deals.created_at <= as_of]
    if currency is not None:
        d = d[d.currency == currency]
    if owner is not None:
        d = d[d.owner == owner]
    if region is not None:
        d = d[d.region == region]
    if members is not None:
        d = d[d.customer_id.isin(members)]
    return d


def clean(value: Any) -> Any:
    """None for a missing value (pandas may hand back NaN for None)."""
    return None if value is None or (isinstance(value, float) and pd.isna(value)) else value


def name(value: Any) -> str:
    return NONE if value is None or (isinstance(value, float) and pd.isna(value)) else value


def by_name(rows: list[tuple]) -> list[tuple]:
    """Rows sorted by their first cell, "(none)" (no value) last: how the reports sort groups."""
    return sorted(rows, key=lambda r: (r[0] == NONE, r[0]))


def days(delta: timedelta) -> float:
    return delta.total_seconds() / 86400


# -- deals -----------------------------------------------------------------------------------

def stage_then(w: World, as_of: datetime) -> dict[int, str]:
    """deal id -> the stage it was in at as_of: its last generated event by then."""
    events = w.history[w.history.changed_at <= as_of].sort_values("changed_at", kind="stable")
    return dict(zip(events.deal_id, events.to_stage))  # later events overwrite earlier ones


def forecast(w: World, as_of: datetime, currency: str = "USD", commit: int = 75, **scope: Any) -> list[tuple]:
    d = deals_in_scope(w, as_of, currency, **scope).copy()
    d["then"] = d.id.map(stage_then(w, as_of))
    # The deal's own probability while it is still in that stage, else the stage's configured one.
    d["p_then"] = [p if then == now else PROBABILITY[then] for p, then, now in zip(d.probability, d.then, d.stage)]
    first, stop = window(as_of)
    won = d[(d.then == "won") & between(d.closed_at, first, stop)]
    open_ = d[d.then.isin(OPEN)]
    months: dict[Any, list[int]] = {}
    for _, deal in won.iterrows():
        months.setdefault(month(deal.closed_at), [0, 0, 0, 0, 0])[0] += deal.scaled
    for _, deal in open_.iterrows():
        key = None if deal.expected_close is None or pd.isna(deal.expected_close) else month(deal.expected_close)
        totals = months.setdefault(key, [0, 0, 0, 0, 0])
        totals[1] += 1
        totals[2] += deal.scaled
        totals[3] += deal.scaled * deal.p_then
        totals[4] += deal.scaled if deal.p_then >= commit else 0
    rows = []
    for key in sorted(months, key=lambda k: (k is None, k or 0)):
        won_s, n, amount, weighted, committed = months[key]
        rows.append(("(no date)" if key is None else label(key), money(won_s, currency), n, money(amount, currency),
                     weighted_money(weighted, currency), money(won_s + committed, currency),
                     money(won_s + amount, currency)))
    return rows


def funnel(w: World, as_of: datetime, start: date | None = None, end: date | None = None,
           **scope: Any) -> list[tuple]:
    d = deals_in_scope(w, as_of, None, **scope)
    first, stop = window(as_of, start, end)
    d = d[between(d.created_at, first, stop)]
    h = w.history[w.history.deal_id.isin(d.id) & (w.history.changed_at <= as_of)]
    steps = [*OPEN, "won"]
    entries = h.groupby(["deal_id", "to_stage"]).changed_at.min().unstack()
    entries = entries.reindex(columns=steps)
    reached = [int(entries[steps[i:]].notna().any(axis=1).sum()) for i in range(len(steps))]
    rows = []
    for i, step in enumerate(steps):
        avg, timed = None, None
        if i:
            both = entries[entries[steps[i - 1]].notna() & entries[step].notna()]
            gaps = [days(b - a) for a, b in zip(both[steps[i - 1]], both[step]) if b >= a]
            avg, timed = (round(sum(gaps) / len(gaps), 1) if gaps else None), len(gaps)
        rows.append((step, reached[i], ratio(reached[i], reached[i - 1]) if i else None,
                     ratio(reached[i], reached[0]), avg, timed))
    return rows


def closed_deals(w: World, as_of: datetime, currency: str, start: date | None, end: date | None,
                 **scope: Any) -> pd.DataFrame:
    d = deals_in_scope(w, as_of, currency, **scope)
    first, stop = window(as_of, start, end)
    return d[d.stage.isin(["won", "lost"]) & between(d.closed_at, first, stop)]


def win_loss(w: World, as_of: datetime, currency: str = "USD", by: str = "owner", start: date | None = None,
             end: date | None = None, **scope: Any) -> tuple[list[tuple], list[tuple]]:
    d = closed_deals(w, as_of, currency, start, end, **scope)

    def row(key: str, g: pd.DataFrame) -> tuple:
        won, lost = g[g.stage == "won"], g[g.stage == "lost"]
        cycles = [days(c - o) for o, c in zip(won.created_at, won.closed_at) if c >= o]
        return (key, len(won), len(lost), ratio(len(won), len(won) + len(lost)),
                money(won.scaled.sum(), currency), average(won.scaled.sum(), len(won), currency),
                average(lost.scaled.sum(), len(lost), currency),
                round(sum(cycles) / len(cycles), 1) if cycles else None)

    keys = d[by].map(name)
    rows = by_name([row(k, g) for k, g in d.groupby(keys)]) + [row("(all)", d)]
    lost = d[d.stage == "lost"]
    reasons = lost.lost_reason.map(name)
    total = len(lost)
    lost_rows = sorted(((r, len(g), ratio(len(g), total), money(g.scaled.sum(), currency))
                        for r, g in lost.groupby(reasons)), key=lambda r: (-r[1], r[0]))
    return rows, lost_rows


def sales_performance(w: World, as_of: datetime, currency: str = "USD", period: str = "month", by: str = "owner",
                      targets: tuple = (), start: date | None = None, end: date | None = None) -> list[tuple]:
    d = deals_in_scope(w, as_of, currency)
    first, stop = window(as_of, start, end)
    won = d[(d.stage == "won") & between(d.closed_at, first, stop)]
    acts = w.interactions[between(w.interactions.occurred_at, first, stop)]

    def bucket(moment: Any) -> int:
        return month(moment) if period == "month" else month(moment) // 3

    data: dict[tuple, list] = {}
    for _, deal in won.iterrows():
        entry = data.setdefault((bucket(deal.closed_at), clean(deal[by])), [0, 0, 0, None])
        entry[0] += deal.scaled
        entry[1] += 1
    for _, act in acts.iterrows():
        data.setdefault((bucket(act.occurred_at), clean(act[by])), [0, 0, 0, None])[2] += 1
    last = bucket(stop - timedelta(microseconds=1))
    for target in targets:
        key = (target["bucket"], target[by])
        if key[0] <= last and (first is None or key[0] >= bucket(first)):
            entry = data.setdefault(key, [0, 0, 0, None])
            entry[3] = (entry[3] or 0) + Decimal(target["amount"])
    rows = []
    for (b, who), (scaled, n, activities, target) in sorted(
            data.items(), key=lambda kv: (kv[0][0], kv[0][1] is None, kv[0][1] or "")):
        text = label(b) if period == "month" else f"{b // 4:04d}-Q{b % 4 + 1}"
        revenue = money(scaled, currency)
        rows.append((text, name(who), revenue, n, activities, target, ratio(revenue, target) if target else None))
    return rows


# -- customers --------------------------------------------------------------------------------

def purchases(w: World, as_of: datetime, end: date | None = None, currency: str | None = None) -> pd.DataFrame:
    d = deals_in_scope(w, as_of, currency)
    _, stop = window(as_of, None, end)
    won = d[(d.stage == "won") & between(d.closed_at, None, stop)]
    return won.assign(month=won.closed_at.map(month))


def cohorts(w: World, as_of: datetime, months: int = 12, start: date | None = None, end: date | None = None,
            currency: str | None = None) -> tuple[list[tuple], list[tuple]]:
    won = purchases(w, as_of, end, currency)
    _, stop = window(as_of, None, end)
    last = month(stop - timedelta(microseconds=1))
    low = month(start) if start else None
    active = won[["customer_id", "month"]].drop_duplicates()
    first = active.groupby("customer_id").month.min()
    active = active.assign(cohort=active.customer_id.map(first))
    rows = []
    for cohort, g in sorted(active.groupby("cohort"), key=lambda kv: kv[0]):
        if cohort > last or (low is not None and cohort < low):
            continue
        size = int((g.month == cohort).sum())
        shares = [ratio(int((g.month == cohort + k).sum()), size) if cohort + k <= last else None
                  for k in range(months)]
        rows.append((label(cohort), size, *shares))
    pairs = set(zip(active.customer_id, active.month))
    per_month = active.groupby("month").customer_id.apply(set).to_dict()
    churn = []
    for m in sorted(set(per_month) | {m + 1 for m in per_month}):
        if m > last or (low is not None and m < low):
            continue
        before, now = per_month.get(m - 1, set()), per_month.get(m, set())
        retained = len(before & now)
        churn.append((label(m), len(now), int((first == m).sum()), len(before), retained, len(before) - retained,
                      ratio(len(before) - retained, len(before))))
    assert pairs  # the data has purchases
    return rows, churn


def customer_value(w: World, as_of: datetime, currency: str = "USD", start: date | None = None,
                   end: date | None = None, **scope: Any) -> tuple[list[tuple], tuple, list[tuple]]:
    d = deals_in_scope(w, as_of, currency, **scope)
    first, stop = window(as_of, start, end)
    won = d[(d.stage == "won") & between(d.closed_at, first, stop)]
    per = won.groupby("customer_id").agg(revenue=("scaled", "sum"), orders=("id", "count")).reset_index()
    per = per.sort_values(["revenue", "customer_id"], ascending=[False, True]).reset_index(drop=True)
    n = len(per)
    per["decile"] = [(r * 10) // n + 1 for r in range(n)]  # rank r is 0-based here
    total = int(per.revenue.sum())
    rows, cumulative = [], 0
    for dec in range(1, 11):
        g = per[per.decile == dec]
        cumulative += int(g.revenue.sum())
        rows.append((f"{dec * 10}%", len(g), money(g.revenue.sum(), currency), ratio(int(g.revenue.sum()), total),
                     ratio(cumulative, total)))
    orders = int(per.orders.sum())
    top = [int(per[per.decile <= k].revenue.sum()) for k in (1, 2)]
    summary = (n, orders, money(total, currency), average(total, orders, currency), ratio(orders, n),
               ratio(top[0], total), ratio(top[1], total))
    capped = per.orders.clip(upper=5)
    frequency = [(lab, int((capped == k).sum()), ratio(int((capped == k).sum()), n))
                 for k, lab in enumerate(["1", "2", "3", "4", "5+"], 1)]
    return rows, summary, frequency


def segments(w: World, as_of: datetime, run: int, compare: int | None, currency: str = "USD"
             ) -> tuple[list[tuple], list[tuple]]:
    members = w.memberships[run]
    d = deals_in_scope(w, as_of, currency)
    _, stop = window(as_of)
    won = d[(d.stage == "won") & between(d.closed_at, None, stop)]
    revenue = won.groupby("customer_id").scaled.sum().to_dict()
    everyone = len(members)
    rows = []
    for segment in sorted(set(members.values())):
        ids = [c for c, s in members.items() if s == segment]
        scaled = sum(int(revenue.get(c, 0)) for c in ids)
        rows.append((segment, len(ids), ratio(len(ids), everyone), money(scaled, currency),
                     average(scaled, len(ids), currency)))
    moves: dict[tuple, int] = {}
    if compare is not None:
        before = w.memberships[compare]
        for customer in set(before) | set(members):
            key = (before.get(customer, NONE), members.get(customer, NONE))
            moves[key] = moves.get(key, 0) + 1
    return rows, sorted((b, a, n) for (b, a), n in moves.items())


# -- interactions -----------------------------------------------------------------------------

def service_quality(w: World, as_of: datetime, by: str = "channel", response_sla: float = 4,
                    resolution_sla: float = 24, start: date | None = None, end: date | None = None) -> list[tuple]:
    i = w.interactions[w.interactions.occurred_at <= as_of]
    first, stop = window(as_of, start, end)
    cases = i[i.kind.isin(["complaint", "feedback"]) & between(i.occurred_at, first, stop)]
    outbound = i[i.direction == "outbound"]

    def response(row: Any) -> datetime | None:
        later = outbound[(outbound.customer_id == row.customer_id) & (outbound.occurred_at > row.occurred_at)]
        return later.occurred_at.min() if len(later) else None

    def hours(a: datetime, b: datetime) -> float:
        return (b - a).total_seconds() / 3600

    def row(key: str, g: pd.DataFrame) -> tuple:
        complaints = g[g.kind == "complaint"]
        response_h = [hours(c.occurred_at, r) for c in complaints.itertuples() if (r := response(c)) is not None]
        resolution_h = [hours(c.occurred_at, c.resolved_at) for c in complaints.itertuples()
                        if c.resolved_at is not None and not pd.isna(c.resolved_at) and c.resolved_at <= as_of]
        overdue = sum(1 for c in complaints.itertuples()
                      if not (c.resolved_at is not None and not pd.isna(c.resolved_at) and c.resolved_at <= as_of)
                      and hours(c.occurred_at, as_of) > resolution_sla)
        rated = g.satisfaction.dropna().astype(int)
        return (key, len(complaints), int((g.kind == "feedback").sum()), len(response_h),
                round(sum(response_h) / len(response_h), 1) if response_h else None,
                ratio(sum(1 for h in response_h if h <= response_sla), len(complaints)), len(resolution_h),
                round(sum(resolution_h) / len(resolution_h), 1) if resolution_h else None,
                ratio(sum(1 for h in resolution_h if h <= resolution_sla), len(complaints)), overdue, len(rated),
                (Decimal(int(rated.sum())) / len(rated)).quantize(Decimal("0.01"), ROUND_HALF_UP) if len(rated)
                else None, *(int((rated == n).sum()) for n in range(1, 6)))

    keys = cases[by].map(name)
    return by_name([row(k, g) for k, g in cases.groupby(keys)]) + [row("(all)", cases)]


def activity(w: World, as_of: datetime, by: str = "kind", start: date | None = None,
             end: date | None = None) -> list[tuple]:
    first, stop = window(as_of, start, end)
    i = w.interactions[between(w.interactions.occurred_at, first, stop)]
    i = i.assign(month=i.occurred_at.map(month), grp=i[by].map(name))
    rows = [(label(m), g, len(x), int((x.direction == "inbound").sum()), int((x.direction == "outbound").sum()))
            for (m, g), x in i.groupby(["month", "grp"])]
    return sorted(rows, key=lambda r: (r[0], r[1] == NONE, r[1]))


def overdue_follow_ups(w: World, as_of: datetime) -> list[tuple]:
    i = w.interactions[w.interactions.occurred_at <= as_of]
    last = i.groupby("customer_id").occurred_at.max()
    due = i[i.follow_up_due.notna()]
    due = due[(due.follow_up_due < as_of) & (due.occurred_at >= due.customer_id.map(last))]
    per = due.groupby("customer_id").follow_up_due.agg(["count", "min"]).reset_index()
    rows = [(int(r.customer_id), int(r["count"]), r["min"], round(days(as_of - r["min"]), 1))
            for _, r in per.iterrows()]
    return sorted(rows, key=lambda r: (r[2], r[0]))
