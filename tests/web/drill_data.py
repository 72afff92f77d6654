"""Records for the report drill-down tests, and the customers behind each chart element computed
independently: plain SELECTs of the raw tables and the rules of each report's docstring in Python,
sharing no code with the reports."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from datetime import date, datetime, timedelta, timezone
from typing import Any

from sqlalchemy import select

from crmcore import CRM
from crmcore.store import tables

#: Every report chart element is checked as of this day's end (the console's report page default).
START = datetime(2026, 7, 1, 9, tzinfo=timezone.utc)


def seed(crm: CRM) -> None:
    """Two reps' customers with deals moved through the stages over five months, complaints and
    feedback, points and two segmentation runs.  ``crm.clock`` is moved to date the moves."""
    real = crm.clock
    try:
        owners = ("rita", "max", None)
        people = []
        for n in range(18):
            owner = owners[n % 3]
            at = START + timedelta(days=9 * n)
            crm.clock = lambda at=at: at
            people.append(crm.customers.add(name=f"Drill {n:02d}", owner=owner, region=("华东", "华北")[n % 2]))
        for n, person in enumerate(people):
            for k in range(1 + n % 3):
                at = START + timedelta(days=11 * n + 17 * k)
                crm.clock = lambda at=at: at
                deal = crm.deals.add(customer_id=person.id, title=f"d{n}-{k}", amount=f"{100 + 37 * n + k}.50",
                                     currency="USD", stage=("lead", "qualified", "proposal")[(n + k) % 3],
                                     owner=person.owner, expected_close=(at + timedelta(days=40)).date())
                later = at + timedelta(days=6 + k)
                crm.clock = lambda later=later: later
                if (n + k) % 4 == 0:
                    crm.deals.move(deal.id, "won")
                elif (n + k) % 4 == 1:
                    crm.deals.move(deal.id, "lost", lost_reason=("price", None)[k % 2])
                elif (n + k) % 4 == 2:
                    crm.deals.move(deal.id, "negotiation")
            for k in range(n % 4):
                at = START + timedelta(days=10 * n + 5 * k)
                crm.clock = lambda at=at: at
                kind = ("complaint", "feedback", "call")[k % 3]
                crm.interactions.add(customer_id=person.id, kind=kind, direction="inbound", channel="phone",
                                     owner=person.owner, occurred_at=at, satisfaction=1 + (n + k) % 5,
                                     resolved_at=at + timedelta(hours=5 * n) if kind == "complaint" and n % 2 else None)
                crm.interactions.add(customer_id=person.id, kind="email", direction="outbound", channel="email",
                                     owner=person.owner, occurred_at=at + timedelta(hours=3 + n))
        crm.clock = lambda: START + timedelta(days=100)
        crm.segments.run("rfm")
        crm.clock = lambda: START + timedelta(days=150)
        crm.segments.run("rfm")
    finally:
        crm.clock = real


def _rows(crm: CRM, table: Any) -> list[Any]:
    with crm.unit(readonly=True) as uow:  # scoped like every read: the acting user's records only
        return list(uow.conn.execute(select(table)).mappings())


def _utc(value: Any) -> Any:
    if isinstance(value, datetime) and value.tzinfo is None:
        return value.replace(tzinfo=timezone.utc)
    return value


def _month(moment: Any) -> str:
    return f"{moment.year:04d}-{moment.month:02d}"


class Expected:
    """The customers behind each chart element, from the raw rows the acting user may see."""

    def __init__(self, crm: CRM, as_of: datetime):
        self.crm, self.as_of = crm, as_of
        self.customers = {r["id"]: r for r in _rows(crm, tables.customers) if r["archived_at"] is None}
        self.deals = [dict(r, created_at=_utc(r["created_at"]), closed_at=_utc(r["closed_at"]))
                      for r in _rows(crm, tables.deals) if r["created_at"] and _utc(r["created_at"]) <= as_of]
        self.history = [dict(r, changed_at=_utc(r["changed_at"])) for r in _rows(crm, tables.deal_stage_history)]
        self.interactions = [dict(r, occurred_at=_utc(r["occurred_at"]), resolved_at=_utc(r["resolved_at"]))
                             for r in _rows(crm, tables.interactions)]
        self.members = _rows(crm, tables.segment_memberships)
        self.runs = sorted(_rows(crm, tables.segment_runs), key=lambda r: r["id"])
        self.ledger = [dict(r, occurred_at=_utc(r["occurred_at"]), expires_at=_utc(r["expires_at"]))
                       for r in _rows(crm, tables.loyalty_ledger)]
        self.accounts = _rows(crm, tables.loyalty_accounts)
        self.allocations = _rows(crm, tables.loyalty_allocations)
        pipeline = crm.config.pipelines["default"]
        self.outcome = {s.name: s.outcome.value for s in pipeline.stages}
        self.probability = {s.name: s.probability for s in pipeline.stages}
        self.order = [s.name for s in sorted(pipeline.stages, key=lambda s: s.order)]

    def live(self, ids: Any) -> set[int]:
        return {i for i in ids if i in self.customers}

    # -- deals ---------------------------------------------------------------------------------
    def stage_then(self, deal: dict[str, Any]) -> str:
        moves = [h for h in self.history if h["deal_id"] == deal["id"] and h["changed_at"] <= self.as_of]
        return max(moves, key=lambda h: h["id"])["to_stage"] if moves else deal["stage"]

    def in_currency(self) -> list[dict[str, Any]]:
        return [d for d in self.deals if d["currency"] == "USD"]

    def won(self) -> list[dict[str, Any]]:
        return [d for d in self.in_currency() if self.outcome.get(self.stage_then(d)) == "won" and d["closed_at"]
                and d["closed_at"] <= self.as_of]

    def closed(self, outcome: str) -> list[dict[str, Any]]:
        return [d for d in self.in_currency() if self.outcome.get(d["stage"]) == outcome and d["closed_at"]
                and d["closed_at"] <= self.as_of]

    def pipeline(self, x: str, series: str) -> set[int]:
        return self.live(d["customer_id"] for d in self.in_currency() if self.stage_then(d) == x)

    def forecast(self, x: str, series: str) -> set[int]:
        def open_then(d: dict[str, Any]) -> bool:
            if self.outcome.get(self.stage_then(d)) != "open":
                return False
            month = d["expected_close"]
            if (x == "(no date)") != (month is None) or (month is not None and _month(month) != x):
                return False
            if series == "worst_case":
                stage = self.stage_then(d)
                chance = d["probability"] if stage == d["stage"] else self.probability[stage]
                return chance is not None and chance >= 75
            return True
        won = {d["customer_id"] for d in self.won() if _month(d["closed_at"]) == x}
        open_ = {d["customer_id"] for d in self.in_currency() if open_then(d)}
        return self.live({"won": won, "weighted": open_}.get(series, won | open_))

    def funnel(self, x: str, series: str) -> set[int]:
        steps = [s for s in self.order if self.outcome[s] != "lost"]
        later = set(steps[steps.index(x):])
        reached = {h["deal_id"] for h in self.history if h["to_stage"] in later and h["changed_at"] <= self.as_of}
        return self.live(d["customer_id"] for d in self.deals if d["id"] in reached)

    def win_loss(self, x: str, series: str) -> set[int]:
        outcomes = {"won": ("won",), "lost": ("lost",)}.get(series, ("won", "lost"))
        return self.live(d["customer_id"] for o in outcomes for d in self.closed(o) if (d["owner"] or "(none)") == x)

    def lost_reasons(self, x: str, series: str) -> set[int]:
        return self.live(d["customer_id"] for d in self.closed("lost") if (d["lost_reason"] or "(none)") == x)

    def performance(self, x: str, series: str) -> set[int]:
        return self.live(d["customer_id"] for d in self.closed("won")
                         if _month(d["closed_at"]) == x and (d["owner"] or "(none)") == series)

    # -- customers' purchases ------------------------------------------------------------------
    def purchases(self) -> dict[int, set[str]]:
        found: dict[int, set[str]] = defaultdict(set)
        for d in self.closed("won"):
            found[d["customer_id"]].add(_month(d["closed_at"]))
        return found

    @staticmethod
    def _shift(label: str, months: int) -> str:
        year, month = divmod(int(label[:4]) * 12 + int(label[5:]) - 1 + months, 12)
        return f"{year:04d}-{month + 1:02d}"

    def cohorts(self, x: str, series: str) -> set[int]:
        target = self._shift(x, int(series[1:]))
        return self.live(c for c, months in self.purchases().items() if min(months) == x and target in months)

    def churn(self, x: str, series: str) -> set[int]:
        before = self._shift(x, -1)
        bought = self.purchases()
        rule: Callable[[set[str]], bool] = {
            "new": lambda m: min(m) == x, "retained": lambda m: x in m and before in m,
            "churn_rate": lambda m: before in m and x not in m}[series]
        return self.live(c for c, months in bought.items() if rule(months))

    def pareto(self, x: str, series: str) -> set[int]:
        revenue: dict[int, int] = defaultdict(int)
        for d in self.closed("won"):
            revenue[d["customer_id"]] += int(d["amount"] * 10000)
        ranked = sorted(revenue, key=lambda c: (-revenue[c], c))
        decile = int(x.rstrip("%")) // 10
        return self.live(c for r, c in enumerate(ranked, 1) if (r - 1) * 10 // len(ranked) + 1 <= decile)

    def orders(self, x: str, series: str) -> set[int]:
        count: dict[int, int] = defaultdict(int)
        for d in self.closed("won"):
            count[d["customer_id"]] += 1
        return self.live(c for c, n in count.items() if str(min(n, 5)) + ("+" if n >= 5 else "") == x)

    # -- interactions --------------------------------------------------------------------------
    def service(self, x: str, series: str) -> set[int]:
        found = set()
        for i in self.interactions:
            if i["kind"] not in ("complaint", "feedback") or i["occurred_at"] > self.as_of or (i["channel"] or "(none)") != x:
                continue
            if series == "avg_response_h":
                ok = i["kind"] == "complaint" and any(
                    o["customer_id"] == i["customer_id"] and o["direction"] == "outbound"
                    and (o["occurred_at"], o["id"]) > (i["occurred_at"], i["id"]) and o["occurred_at"] <= self.as_of
                    for o in self.interactions)
            elif series == "avg_resolution_h":
                ok = i["kind"] == "complaint" and i["resolved_at"] is not None and i["resolved_at"] <= self.as_of
            else:
                ok = i["satisfaction"] == int(series[-1])
            if ok:
                found.add(i["customer_id"])
        return self.live(found)

    def activity(self, x: str, series: str) -> set[int]:
        return self.live(i["customer_id"] for i in self.interactions if i["occurred_at"] <= self.as_of
                         and _month(i["occurred_at"]) == x and (i["kind"] or "(none)") == series)

    # -- segments ------------------------------------------------------------------------------
    def in_run(self, run: int) -> dict[int, str]:
        return {m["customer_id"]: m["segment"] for m in self.members if m["run_id"] == run}

    def segments(self, x: str, series: str) -> set[int]:
        latest = self.in_run(self.runs[-1]["id"])
        members = {c for c, s in latest.items() if s == x}
        if series == "revenue":
            members &= {d["customer_id"] for d in self.closed("won")}
        return self.live(members)

    def movement(self, x: str, series: str) -> set[int]:
        before, after = self.in_run(self.runs[-2]["id"]), self.in_run(self.runs[-1]["id"])
        everyone = set(before) | set(after)
        return self.live(c for c in everyone if before.get(c, "(none)") == x and after.get(c, "(none)") == series)

    # -- loyalty -------------------------------------------------------------------------------
    def liability(self, x: str, series: str) -> set[int]:
        used: dict[int, int] = defaultdict(int)
        for a in self.allocations:
            used[a["batch_id"]] += a["points"]
        return self.live(e["customer_id"] for e in self.ledger
                         if e["scheme"] == "points" and e["points"] > 0 and e["points"] - used[e["id"]] > 0
                         and e["occurred_at"] <= self.as_of
                         and ((e["expires_at"] is None) if x == "never" else
                              e["expires_at"] is not None and _month(e["expires_at"]) == x))

    def tiers(self, x: str, series: str) -> set[int]:
        return self.live(a["customer_id"] for a in self.accounts if a["scheme"] == "tiers" and a["tier"] == x)

    def earn_burn(self, x: str, series: str) -> set[int]:
        kinds = {"earned": ("earn", "bonus"), "redeemed": ("redeem",), "expired": ("expire",)}[series]
        return self.live(e["customer_id"] for e in self.ledger if e["scheme"] == "points" and e["kind"] in kinds
                         and e["occurred_at"] <= self.as_of and _month(e["occurred_at"]) == x)

    def top(self, x: str, series: str) -> set[int]:
        ranked = sorted((a for a in self.accounts if a["scheme"] == "points" and a["balance"] > 0
                         and a["customer_id"] in self.customers),
                        key=lambda a: (-a["balance"], a["customer_id"]))[:20]
        return {a["customer_id"] for a in ranked if self.customers[a["customer_id"]]["name"] == x}


#: (report, chart title start) -> the independent computation of its elements.
CHECKS: dict[tuple[str, str], Callable[[Expected, str, str], set[int]]] = {
    ("pipeline", "Amount by stage"): Expected.pipeline,
    ("forecast", "Won and weighted"): Expected.forecast,
    ("forecast", "Worst and best"): Expected.forecast,
    ("funnel", "Deals reaching"): Expected.funnel,
    ("win-loss", "Win rate by"): Expected.win_loss,
    ("win-loss", "Won and lost deals"): Expected.win_loss,
    ("win-loss", "Lost deals by reason"): Expected.lost_reasons,
    ("sales-performance", "Won revenue by"): Expected.performance,
    ("sales-performance", "Attainment"): Expected.performance,
    ("retention-cohorts", "Share of each cohort"): Expected.cohorts,
    ("retention-cohorts", "Churn rate"): Expected.churn,
    ("retention-cohorts", "Active customers"): Expected.churn,
    ("customer-value", "Pareto"): Expected.pareto,
    ("customer-value", "Customers by number"): Expected.orders,
    ("service-quality", "Average hours"): Expected.service,
    ("service-quality", "Satisfaction"): Expected.service,
    ("activity", "Interactions per month"): Expected.activity,
    ("segments", "Members per segment"): Expected.segments,
    ("segments", "Revenue per segment"): Expected.segments,
    ("segments", "Customers moving"): Expected.movement,
    ("loyalty-liability", "Outstanding points"): Expected.liability,
    ("loyalty-tiers", "Members per tier"): Expected.tiers,
    ("loyalty-earn-burn", "Earn and burn"): Expected.earn_burn,
    ("loyalty-top-members", "Top balances"): Expected.top,
}


def as_of_end(day: date) -> datetime:
    """The moment a report page as of ``day`` is run at (the next midnight, UTC in the tests)."""
    return datetime(day.year, day.month, day.day, tzinfo=timezone.utc) + timedelta(days=1)
