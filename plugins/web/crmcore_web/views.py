"""What each page shows, read through the CRM's services (authorize, visibility, audit apply).

Where a page needs a figure no service gives (the dashboard's KPIs, a deal's stage moves), it
runs one set-based query in a read-only unit of work, which the core scopes to the acting
user's visible records like every read.
"""

from __future__ import annotations

import base64
import calendar
import json
from collections.abc import Mapping
from datetime import date, datetime, time, timedelta
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from sqlalchemy import BigInteger, and_, case, false, func, or_, select, type_coerce

import crmcore
from crmcore.store import money_from_scaled, tables

if TYPE_CHECKING:
    from crmcore import CRM

#: The sorts the customer list offers (keyset paging needs a column without NULLs).  The first,
#: the default, follows the primary key: a page costs the same at any depth of a million rows.
#: Name and creation time have no index of their own: sorted over the matching rows (quick once
#: a search or filter narrows them; a full scan over every customer).
SORTS = ("-id", "id", "name", "-name", "-created_at", "created_at")
#: Rows per page of the customer list.
PAGE_SIZE = 50
#: The customer fields the 360 page edits in place (custom fields come on top).
EDITABLE = ("name", "email", "phone", "city", "region", "industry", "stage", "birthday")


# -- customers list -------------------------------------------------------------------------

def encode_cursor(value: Any, last_id: int) -> str:
    """The next page's cursor: the last row's sort value and id."""
    if isinstance(value, datetime):
        value = {"t": value.isoformat()}
    return base64.urlsafe_b64encode(json.dumps([value, last_id]).encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[Any, int]:
    """What :func:`encode_cursor` made; a damaged cursor is a ValidationError naming it."""
    try:
        value, last_id = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
        if isinstance(value, dict):
            value = datetime.fromisoformat(value["t"])
        if not isinstance(last_id, int):
            raise ValueError(last_id)
    except (ValueError, TypeError, KeyError) as exc:
        raise crmcore.ValidationError.single("cursor", f"not a page cursor ({exc})", "customer") from None
    return value, last_id


def customer_filters(stage: str | None, owner: str | None, region: str | None) -> dict[str, Any]:
    """The list's filters (blank ones left out)."""
    given = {"stage": stage, "owner": owner, "region": region}
    return {k: v.strip() for k, v in given.items() if v and v.strip()}


def customers_page(crm: "CRM", q: str | None, filters: Mapping[str, Any], sort: str,
                   cursor: str | None) -> dict[str, Any]:
    """One keyset page of customers: ``rows`` and the ``next`` page's cursor (None at the end)."""
    if sort not in SORTS:
        raise crmcore.ValidationError.single("sort", f"one of {', '.join(SORTS)}", "customer")
    after = decode_cursor(cursor) if cursor else None
    rows = crm.customers.page(filters, sort, PAGE_SIZE + 1, after, (q or "").strip() or None)
    following = None
    if len(rows) > PAGE_SIZE:
        rows = rows[:PAGE_SIZE]
        last = rows[-1]
        assert last.id is not None
        following = encode_cursor(getattr(last, sort.lstrip("-")), last.id)
    return {"rows": rows, "next": following}


# -- customer 360 ---------------------------------------------------------------------------

def _optional(call: Any, default: Any) -> Any:
    """``call()``, or ``default`` when the user may not see that part (the rest of the page shows)."""
    try:
        return call()
    except (crmcore.NotAuthorized, crmcore.NotFound):
        return default


def customer_360(crm: "CRM", customer_id: int) -> dict[str, Any]:
    """Everything about one customer the acting user may see."""
    customer = crm.customers.get(customer_id)  # NotFound when not visible: the page is a 404
    contacts = _optional(lambda: crm.contacts.list({"customer_id": customer_id}, limit=200), [])
    interactions = _optional(lambda: crm.interactions.list({"customer_id": customer_id}, "-occurred_at",
                                                           limit=200), [])
    deals = _optional(lambda: crm.deals.list({"customer_id": customer_id}, "-id", limit=200), [])
    timeline: list[dict[str, Any]] = []
    for item in interactions:
        timeline.append({"at": item.occurred_at, "kind": "interaction", "what": str(item.kind.value),
                         "title": item.subject or "", "detail": item.outcome or ""})
    for deal in deals:
        timeline.append({"at": deal.created_at, "kind": "deal", "what": deal.stage,
                         "title": deal.title, "detail": f"{deal.amount} {deal.currency}"})
    if deals:
        history = tables.deal_stage_history
        titles = {d.id: d.title for d in deals}
        with crm.unit(readonly=True) as uow:  # scoped to the user's visible deals
            for row in uow.conn.execute(select(history).where(history.c.deal_id.in_(list(titles)))
                                        .order_by(history.c.id)):
                timeline.append({"at": row.changed_at, "kind": "stage", "what": row.to_stage,
                                 "title": titles[row.deal_id],
                                 "detail": f"{row.from_stage or '–'} → {row.to_stage}"})
    for entry in _optional(lambda: crm.loyalty.history(customer_id), []):
        timeline.append({"at": entry.occurred_at, "kind": "points", "what": entry.kind,
                         "title": f"{entry.points:+d} ({entry.scheme})", "detail": entry.reason or ""})
    for message in _optional(lambda: crm.notify.outbox(customer_id=customer_id, limit=50), []):
        timeline.append({"at": message.get("created_at"), "kind": "message", "what": message.get("status", ""),
                         "title": message.get("template") or message.get("subject") or "",
                         "detail": message.get("channel", "")})
    for decision in _optional(lambda: crm.messages.consent_history(customer_id), []):
        timeline.append({"at": decision.recorded_at, "kind": "consent",
                         "what": "granted" if decision.granted else "withdrawn",
                         "title": f"{decision.purpose} / {decision.channel}", "detail": decision.source})
    epoch = datetime.min.replace(tzinfo=None)
    timeline.sort(key=lambda e: e["at"].replace(tzinfo=None) if e["at"] else epoch, reverse=True)
    segments = []
    for strategy, segment in sorted(_optional(lambda: crm.segments.segments_of(customer_id), {}).items()):
        explained = _optional(lambda s=strategy: crm.segments.explain(s, customer_id), {})
        segments.append({"strategy": strategy, "segment": segment, "explanation": explained.get("explanation")})
    loyalty = _optional(lambda: crm.loyalty.status(customer_id), [])
    tasks = _optional(lambda: crm.tasks.list({"customer_id": customer_id, "status": "open"}, "due", limit=100), [])
    return {"customer": customer, "contacts": contacts, "timeline": timeline[:300], "segments": segments,
            "loyalty": loyalty, "deals": deals, "custom_fields": custom_fields(crm), "tasks": tasks}


def custom_fields(crm: "CRM") -> list[Any]:
    """The customer's custom fields as configured (name, type, label)."""
    return list(crm.custom_fields.get("customer", {}).values())


def field_value(customer: crmcore.Customer, name: str) -> Any:
    """A field's current value (``attributes.NAME`` for a custom field)."""
    if name.startswith("attributes."):
        return customer.attributes.get(name.split(".", 1)[1])
    if name not in EDITABLE:  # never getattr() a name from the URL
        raise crmcore.ValidationError.single(name, f"is not a field the console edits ({', '.join(EDITABLE)})",
                                             "customer")
    value = getattr(customer, name)
    return value.value if hasattr(value, "value") else value


def update_field(crm: "CRM", customer_id: int, name: str, value: str) -> crmcore.Customer:
    """Change one field through ``crm.customers.update`` (validation, authorize, audit, events).

    A blank value clears an optional field."""
    given: Any = value.strip() or None
    if name.startswith("attributes."):
        current = crm.customers.get(customer_id)
        attributes = dict(current.attributes)
        key = name.split(".", 1)[1]
        if given is None:
            attributes.pop(key, None)
        else:
            attributes[key] = given
        return crm.customers.update(customer_id, attributes=attributes)
    if name not in EDITABLE:
        raise crmcore.ValidationError.single(name, "this field cannot be edited here", "customer")
    if name == "name" and given is None:
        raise crmcore.ValidationError.single("name", "must not be empty", "customer")
    return crm.customers.update(customer_id, **{name: given})


def issue_for(error: crmcore.ValidationError, name: str) -> str:
    """The message of ``error`` about field ``name`` (all of them when none names it)."""
    short = name.split(".", 1)[-1]
    found = [message for field, message in error.issues
             if field in (name, short) or field.endswith("." + short)]
    return "; ".join(found or [message for _, message in error.issues])


# -- pipeline board -------------------------------------------------------------------------

#: Cards per stage column: the newest deals of each stage (the board stays quick at millions of deals).
CARDS_PER_STAGE = 100


def board(crm: "CRM", pipeline_name: str) -> dict[str, Any]:
    """The pipeline's stages, each with its newest deals (the user's visible ones)."""
    pipelines = crm.config.pipelines
    if pipeline_name not in pipelines:
        raise crmcore.NotFound("pipeline", pipeline_name)
    pipeline = pipelines[pipeline_name]
    columns = []
    shown: list[crmcore.Deal] = []
    for stage in sorted(pipeline.stages, key=lambda s: s.order):
        # One query per stage, newest first by primary key, LIMIT: no stage can crowd out another.
        cards = crm.deals.list({"pipeline": pipeline_name, "stage": stage.name}, "-id", limit=CARDS_PER_STAGE)
        shown.extend(cards)
        columns.append({"stage": stage, "deals": cards, "total": sum((d.amount for d in cards), Decimal(0)),
                        "more": len(cards) == CARDS_PER_STAGE})
    ids = sorted({d.customer_id for d in shown})
    names = {c.id: c.name for c in crm.customers.list({"id__in": ids}, limit=len(ids))} if ids else {}
    return {"pipeline": pipeline, "pipelines": sorted(pipelines), "columns": columns, "names": names}


def points_earned(crm: "CRM", deal_id: int, customer_id: int) -> int:
    """The points the deal earned its customer (ledger entries of that deal)."""
    entries = _optional(lambda: crm.loyalty.history(customer_id), [])
    return sum(e.points for e in entries if e.deal_id == deal_id)


# -- dashboard ------------------------------------------------------------------------------

def month_start(day: date) -> date:
    return day.replace(day=1)


def dashboard(crm: "CRM", start: date, end: date, now: datetime | None = None) -> dict[str, Any]:
    """The KPI tiles and chart data for ``start``..``end`` (inclusive days, in the CRM's zone);
    "this month" is the month of ``now`` (default: the CRM's clock)."""
    crm.authorize("report.run", "dashboard")
    zone = crm.as_of().tzinfo
    now = (now or crm.as_of()).astimezone(zone)
    lo = datetime.combine(start, time.min, tzinfo=zone)
    hi = datetime.combine(end + timedelta(days=1), time.min, tzinfo=zone)
    this_month = month_start(now.date())
    last_month = month_start(this_month - timedelta(days=1))
    month_end = this_month.replace(day=calendar.monthrange(this_month.year, this_month.month)[1]) + timedelta(days=1)
    d, c = tables.deals, tables.customers
    outcomes = {p: {s.name: s for s in pipe.stages} for p, pipe in crm.config.pipelines.items()}
    won_stages = [(p, s) for p, st in outcomes.items() for s, stage in st.items() if stage.outcome.value == "won"]
    lost_stages = [(p, s) for p, st in outcomes.items() for s, stage in st.items() if stage.outcome.value == "lost"]
    open_stages = [(p, s, stage.probability) for p, st in outcomes.items() for s, stage in st.items()
                   if stage.outcome.value == "open"]

    def within(column: Any, a: datetime, b: datetime) -> Any:
        return and_(column >= a, column < b)

    def in_stages(pairs: list[Any]) -> Any:
        return or_(*[and_(d.c.pipeline == p, d.c.stage == s) for p, s, *_ in pairs]) if pairs else false()

    def at(day: date) -> datetime:
        return datetime.combine(day, time.min, tzinfo=zone)

    with crm.unit(readonly=True) as uow:  # every select scoped to the user's visible records
        def revenue(a: datetime, b: datetime) -> dict[str, Decimal]:
            rows = uow.conn.execute(select(d.c.currency, func.sum(d.c.amount)).where(
                in_stages(won_stages), within(d.c.closed_at, a, b), d.c.archived_at.is_(None)).group_by(d.c.currency))
            return {cur: Decimal(total or 0) for cur, total in rows}

        this_rev = revenue(at(this_month), at(month_end))
        last_rev = revenue(at(last_month), at(this_month))
        probability = case(*[(and_(d.c.pipeline == p, d.c.stage == s), prob) for p, s, prob in open_stages],
                           else_=0) if open_stages else 0
        weight = func.coalesce(d.c.probability, probability)
        # amount (scaled integers) x percent, summed exactly in SQL; scaled back in Python.
        weighted = {cur: money_from_scaled(raw or 0) / 100 for cur, raw in uow.conn.execute(
            select(d.c.currency, func.sum(type_coerce(d.c.amount, BigInteger) * weight)).where(
                in_stages(open_stages), d.c.archived_at.is_(None)).group_by(d.c.currency))}
        # Archived deals count nowhere on the dashboard (as in the revenue tile and the pipeline).
        won = uow.conn.execute(select(func.count()).select_from(d).where(
            in_stages(won_stages), within(d.c.closed_at, lo, hi), d.c.archived_at.is_(None))).scalar() or 0
        lost = uow.conn.execute(select(func.count()).select_from(d).where(
            in_stages(lost_stages), within(d.c.closed_at, lo, hi), d.c.archived_at.is_(None))).scalar() or 0
        new_customers = uow.conn.execute(select(func.count()).select_from(c).where(
            within(c.c.created_at, lo, hi), c.c.archived_at.is_(None))).scalar() or 0
        ledger = tables.loyalty_ledger
        liability = uow.conn.execute(select(func.coalesce(func.sum(ledger.c.points), 0))).scalar() or 0
        # Revenue by month over the range (the revenue chart), summed per currency.
        closed = uow.conn.execute(select(d.c.closed_at, d.c.amount, d.c.currency).where(
            in_stages(won_stages), within(d.c.closed_at, lo, hi), d.c.archived_at.is_(None))).all()
        by_stage = uow.conn.execute(select(d.c.stage, func.count(), func.coalesce(func.sum(d.c.amount), 0)).where(
            in_stages(open_stages), d.c.archived_at.is_(None)).group_by(d.c.stage)).all()
    months: dict[str, dict[str, Decimal]] = {}
    for closed_at, amount, currency in closed:
        label = closed_at.astimezone(zone).strftime("%Y-%m")
        months.setdefault(currency, {})
        months[currency][label] = months[currency].get(label, Decimal(0)) + Decimal(amount)
    return {
        "revenue_this": this_rev, "revenue_last": last_rev, "weighted": weighted,
        "won": won, "lost": lost, "win_rate": won / (won + lost) if won + lost else None,
        "new_customers": new_customers, "liability": int(liability),
        "months": {cur: sorted(values.items()) for cur, values in months.items()},
        "by_stage": [(stage, count, Decimal(total)) for stage, count, total in by_stage],
        # The charts' data (JSON for plotly): amounts as numbers, months as YYYY-MM.
        "months_json": {cur: {"x": [m for m, _ in sorted(values.items())],
                              "y": [float(v) for _, v in sorted(values.items())],
                              "drill": [_month_drill(m, start, end, cur) for m, _ in sorted(values.items())]}
                        for cur, values in months.items()},
        "stage_names": [stage for stage, _, _ in by_stage],
        "stage_drills": [drill_for_stage(stage) for stage, _, _ in by_stage],
        "stage_counts": [int(count) for _, count, _ in by_stage],
        "stage_amounts": [float(total or 0) for _, _, total in by_stage],
    }


# The drill keys the charts carry (drill.py lists the customers behind them).

#: A report chart's point: a customers filter in the ``--where`` language (``Chart.drill``).
WHERE = "where:"


#: A report chart's element: the report says which customers are behind it (``Chart.behind``).
REPORT = "report:"


def drill_for_report(report: str, as_of: date, chart: str, x: str, series: str) -> str:
    """A report chart's element as of the end of ``as_of``: the report, the chart's ``behind``
    name, the category and the series, packed into one URL-safe key."""
    packed = json.dumps([report, as_of.isoformat(), chart, x, series], ensure_ascii=False, separators=(",", ":"))
    return REPORT + base64.urlsafe_b64encode(packed.encode()).decode().rstrip("=")


def read_report_drill(key: str) -> tuple[str, date, str, str, str]:
    """What :func:`drill_for_report` packed; a damaged key is a ValidationError naming it."""
    packed = key.removeprefix(REPORT)
    try:
        report, day, chart, x, series = json.loads(base64.urlsafe_b64decode(packed + "=" * (-len(packed) % 4)))
        if not all(isinstance(v, str) for v in (report, day, chart, x, series)):
            raise ValueError("not text")
        return report, date.fromisoformat(day), chart, x, series
    except (ValueError, TypeError) as exc:
        raise crmcore.ValidationError.single("drill", f"not a chart's drill-down ({exc})", "customer") from None


def drill_for_won(start: date, end: date, currency: str) -> str:
    """A revenue bar: won deals closed ``start``..``end`` (inclusive days) in ``currency``."""
    return f"won:{start.isoformat()}:{end.isoformat()}:{currency}"


def drill_for_stage(stage: str) -> str:
    """An open-deals bar: open deals in ``stage`` (of any pipeline that has it)."""
    return f"stage:{stage}"


def _month_drill(label: str, start: date, end: date, currency: str) -> str:
    """The drill key of one month's revenue bar: the month's days within the dashboard's range."""
    first = date.fromisoformat(label + "-01")
    last = first.replace(day=calendar.monthrange(first.year, first.month)[1])
    return drill_for_won(max(first, start), min(last, end), currency)


# -- my day --------------------------------------------------------------------------------

def my_day(crm: "CRM", login: str) -> dict[str, Any]:
    """The signed-in user's open tasks due today (in the CRM's zone), overdue ones first."""
    now = crm.as_of()
    tasks = crm.tasks.due("today", assignee=login)
    names = {c.id: c.name for c in crm.customers.list({"id__in": sorted({t.customer_id for t in tasks})},
                                                      limit=len(tasks) or 1)} if tasks else {}
    return {"overdue": [t for t in tasks if t.due is not None and t.due < now],
            "today": [t for t in tasks if t.due is None or t.due >= now], "names": names, "now": now}


def task_counts(crm: "CRM", as_of: datetime | None = None) -> dict[str, int | None]:
    """The dashboard's follow-up tiles: open tasks past due and complaints past their SLA at
    ``as_of`` (one COUNT each, scoped to what the user may see); None for a user who may not list tasks."""
    return {"overdue_tasks": _optional(lambda: crm.tasks.overdue_count(as_of), None),
            "complaints_late": _optional(lambda: crm.tasks.complaints_past_sla(as_of), None)}


# -- reports --------------------------------------------------------------------------------

def _number(value: Any) -> float | None:
    return None if value is None else float(value)


def chart_spec(result: Any, chart: Any, report: str | None = None, as_of: date | None = None) -> dict[str, Any]:
    """A report's :class:`crmcore.Chart` as plotly traces and layout (JSON for the page).

    With ``report`` and ``as_of`` (the report page), each point of a chart that declares
    ``behind`` carries the drill key of the customers behind it (:func:`drill_for_report`)."""
    names = [c.name for c in result.columns]

    def behind(xs: list[str], series: str) -> dict[str, Any]:
        if not chart.behind or report is None or as_of is None:
            return {}
        return {"customdata": [drill_for_report(report, as_of, chart.behind, x, series) for x in xs]}

    rows = [dict(zip(names, row)) for row in result.rows if row[names.index(chart.x)] not in chart.exclude]
    layout: dict[str, Any] = {"title": {"text": chart.title}, "separators": ".,", "yaxis": {"tickformat": ",~f"},
                              "xaxis": {"type": "category"}, "legend": {"orientation": "h"}}
    hover = "%{x}: %{y:,~f}<extra>%{fullData.name}</extra>"
    traces: list[dict[str, Any]] = []
    if chart.kind == "funnel":
        bands = [str(r[chart.x]) for r in rows]
        traces.append({"type": "funnel", "y": bands, "x": [_number(r[chart.y[0]]) for r in rows],
                       "textinfo": "value+percent initial", **behind(bands, chart.y[0])})
        layout.pop("xaxis")
        layout["yaxis"] = {"type": "category"}
    elif chart.kind == "heatmap":
        labels = [str(r[chart.x]) for r in rows]
        if chart.group:
            cells = sorted({str(r[chart.group]) for r in rows})
            seen: dict[str, dict[str, float | None]] = {}
            for r in rows:
                seen.setdefault(str(r[chart.x]), {})[str(r[chart.group])] = _number(r[chart.y[0]])
            labels = list(seen)
            z = [[seen[label].get(cell) for cell in cells] for label in labels]
        else:
            cells = list(chart.y)
            z = [[_number(r[c]) for c in cells] for r in rows]
        # A cell's drill key: its row is the category, its column the series.
        keys = {"customdata": [behind(labels, cell)["customdata"] for cell in cells]} if behind([], "") else {}
        if keys:  # plotly wants customdata shaped like z: one list per row
            keys["customdata"] = [list(row) for row in zip(*keys["customdata"])] if labels else []
        traces.append({"type": "heatmap", "x": cells, "y": labels, "z": z,
                       "hovertemplate": "%{y} / %{x}: %{z:,~f}<extra></extra>", **keys})
        layout["yaxis"] = {"type": "category", "autorange": "reversed"}
    else:
        kind = {"type": "scatter", "mode": "lines+markers"} if chart.kind == "line" else {"type": "bar"}
        if chart.group:
            series: dict[str, dict[str, float]] = {}
            order: list[str] = []
            for r in rows:
                x = str(r[chart.x])
                if x not in order:
                    order.append(x)
                bucket = series.setdefault(str(r[chart.group]), {})
                bucket[x] = bucket.get(x, 0.0) + (_number(r[chart.y[0]]) or 0.0)
            for name, values in series.items():
                traces.append({**kind, "name": name, "x": order, "y": [values.get(x) for x in order],
                               "hovertemplate": hover, **behind(order, name)})
        else:
            label = {c.name: c.label for c in result.columns}
            xs = [str(r[chart.x]) for r in rows]
            # A chart declaring its drill-down: each point carries the customers filter behind it,
            # or the key the report answers for (``Chart.behind``).
            drills = {"customdata": [WHERE + chart.drill.replace("{x}", x) for x in xs]} if chart.drill else {}
            for column in chart.y:
                traces.append({**kind, "name": label[column], "x": xs, "y": [_number(r[column]) for r in rows],
                               "hovertemplate": hover, **(drills or behind(xs, column))})
        if chart.kind == "stacked-bar":
            layout["barmode"] = "stack"
    return {"data": traces, "layout": layout}


def report_page(crm: "CRM", name: str, as_of: date) -> dict[str, Any]:
    """A report run as of the end of ``as_of`` (its table, sections and charts as plotly specs)."""
    zone = crm.as_of().tzinfo
    result = crm.reports.run(name, as_of=datetime.combine(as_of + timedelta(days=1), time.min, tzinfo=zone))
    tables = [{"result": table, "charts": [chart_spec(table, chart, name, as_of) for chart in table.charts]}
              for table in result.tables()]
    return {"result": result, "tables": tables}
