"""A generated CRM for the report tests, loaded once per database, plus the same
data as pandas frames for the independent computations.

Everything the reports read is replayed through the public API at known
moments (a hand-moved clock): customers in CJK and Latin regions, deals in
three currencies moving through the stages (some never dated, some closing
after the as-of moments the tests use), interactions of every kind with
responses, resolutions, ratings and follow-ups, and two runs of a test
segmenter whose memberships the test decides.  The frames are built from the
generated values, never read back from the database.
"""

from __future__ import annotations

import random
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import attrs
import pandas as pd
import pytest

import crmcore
from crmcore.config import Config
from crmcore.testing import FIXED_NOW, reset_database, server_url

UTC = timezone.utc
T0 = datetime(2025, 1, 1, 8, 0, tzinfo=UTC)
OPEN = ["lead", "qualified", "proposal", "negotiation"]
PROBABILITY = {"lead": 10, "qualified": 25, "proposal": 50, "negotiation": 75, "won": 100, "lost": 0}
REGIONS = ["华东", "华北", "West", None]
OWNERS = ["alice", "bob", "王芳", None]
SCALE = 10_000  # amounts in the frames are scaled integers: exact sums, like the database

# Memberships of the two runs of the "fixed" test segmenter: customer index -> segment.
SEGMENT_RUNS: dict[int, dict[int, str]] = {}


@attrs.frozen
class FixedOptions:
    round: int = 1


class FixedSegmenter(crmcore.Segmenter):
    """Assigns the memberships the test decided (SEGMENT_RUNS[round]) to the generated customers."""

    name = "fixed"
    description = "memberships decided by the test"
    options_type = FixedOptions

    def __init__(self, ids: list[int]):
        self.ids = ids

    def assign(self, ctx: Any, options: FixedOptions) -> Any:
        yield [crmcore.Assignment(self.ids[i], segment) for i, segment in SEGMENT_RUNS[options.round].items()]


class SegmenterPlugin:
    __name__ = "report_test_segmenter"

    def __init__(self) -> None:
        self.segmenter = FixedSegmenter([])

    @crmcore.hookimpl
    def register_segmenters(self, register: Any) -> None:
        register(self.segmenter)


class Clock:
    def __init__(self) -> None:
        self.now = FIXED_NOW

    def __call__(self) -> datetime:
        return self.now


@attrs.define
class World:
    """The CRM and what was put in it (frames of the generated values)."""

    crm: Any
    customers: pd.DataFrame
    deals: pd.DataFrame
    history: pd.DataFrame
    interactions: pd.DataFrame
    runs: list[int]
    memberships: dict[int, dict[int, str]]  # run id -> customer id -> segment
    url: str


def _moment(rng: random.Random, start: datetime, days: int) -> datetime:
    return start + timedelta(days=rng.randint(0, days), seconds=rng.randint(0, 86399))


def generate_deals(rng: random.Random, n_customers: int, count: int) -> list[dict]:
    deals = []
    for _ in range(count):
        currency = rng.choices(["USD", "EUR", "JPY"], [7, 2, 1])[0]
        amount = (Decimal(rng.randint(100, 500_000)) if currency == "JPY"
                  else Decimal(rng.randint(100, 2_000_000)) / 100)
        created = _moment(rng, T0, 520)
        if rng.random() < 0.05:
            events = [(created, "won")]
        else:
            stage = "lead" if rng.random() < 0.6 else rng.choice(OPEN)
            events = [(created, stage)]
            for _ in range(rng.choice([0, 1, 1, 2, 3])):
                later = [s for s in OPEN if OPEN.index(s) > OPEN.index(events[-1][1])]
                if not later:
                    break
                events.append((events[-1][0] + timedelta(days=rng.randint(1, 40), seconds=rng.randint(0, 86399)),
                               rng.choice(later)))
            if rng.random() < 0.6:
                closing = "won" if rng.random() < 0.65 else "lost"
                events.append((events[-1][0] + timedelta(days=rng.randint(0, 60), seconds=rng.randint(1, 86399)),
                               closing))
        final = events[-1][1]
        deals.append({
            "customer": rng.randrange(n_customers), "owner": rng.choice(OWNERS), "currency": currency,
            "amount": amount, "events": events,
            "expected_close": None if rng.random() < 0.25 else created.date() + timedelta(days=rng.randint(10, 200)),
            "custom_probability": rng.randint(0, 100) if rng.random() < 0.3 else None,
            "lost_reason": rng.choice(["price", "timing", "competitor", None]) if final == "lost" else None,
        })
    return deals


def generate_interactions(rng: random.Random, n_customers: int, count: int) -> list[dict]:
    kinds = ["call", "email", "meeting", "visit", "message", "note", "complaint", "feedback"]
    rows = []
    for _ in range(count):
        kind = rng.choices(kinds, [3, 3, 1, 1, 2, 1, 3, 2])[0]
        occurred = _moment(rng, T0, 540)
        case = kind in ("complaint", "feedback")
        direction = ("inbound" if rng.random() < 0.8 else "outbound") if case else rng.choice(
            ["inbound", "outbound", "outbound", "internal"])
        resolved = (occurred + timedelta(hours=rng.randint(1, 96), minutes=rng.randint(0, 59))
                    if kind == "complaint" and rng.random() < 0.7 else None)
        follow_up = (occurred + timedelta(days=rng.randint(1, 30)) if not case and rng.random() < 0.25 else None)
        rows.append({
            "customer": rng.randrange(n_customers), "kind": kind, "direction": direction,
            "channel": rng.choice(["phone", "email", "wechat", None]), "owner": rng.choice(OWNERS),
            "occurred_at": occurred, "satisfaction": rng.randint(1, 5) if case and rng.random() < 0.7 else None,
            "resolved_at": resolved, "follow_up_due": follow_up,
        })
    return rows


def load_world(url: str, seed: int = 7, n_customers: int = 40, n_deals: int = 150,
               n_interactions: int = 320) -> World:
    rng = random.Random(seed)
    clock = Clock()
    plugin = SegmenterPlugin()
    crm = crmcore.CRM.open(config=Config.from_mapping({"database_url": url, "plugins": ["reports"]}),
                           extra_plugins=[plugin], clock=clock)
    customers = []
    for i in range(n_customers):
        region, owner = rng.choice(REGIONS), rng.choice(OWNERS[:3])
        stored = crm.customers.add(name=f"客户 {i}", region=region, owner=owner)
        customers.append({"id": stored.id, "region": region, "owner": owner})
    ids = [c["id"] for c in customers]

    deals, history = [], []
    for n, deal in enumerate(generate_deals(rng, n_customers, n_deals)):
        (created, first), *moves = deal["events"]
        clock.now = created
        stored = crm.deals.add(customer_id=ids[deal["customer"]], title=f"Deal {n}", amount=deal["amount"],
                               currency=deal["currency"], stage=first, owner=deal["owner"],
                               probability=deal["custom_probability"], expected_close=deal["expected_close"])
        for moment, stage in moves:
            clock.now = moment
            crm.deals.move(stored.id, stage, lost_reason=deal["lost_reason"] if stage == "lost" else None)
        final = deal["events"][-1]
        closed = final[1] in ("won", "lost")
        probability = (deal["custom_probability"] if deal["custom_probability"] is not None and not moves
                       else PROBABILITY[final[1]])
        deals.append({
            "id": stored.id, "customer_id": ids[deal["customer"]], "owner": deal["owner"],
            "region": customers[deal["customer"]]["region"], "currency": deal["currency"],
            "scaled": int(deal["amount"] * SCALE), "amount": deal["amount"], "created_at": created,
            "stage": final[1], "closed_at": final[0] if closed else None, "probability": probability,
            "expected_close": deal["expected_close"], "lost_reason": deal["lost_reason"],
        })
        history += [{"deal_id": stored.id, "to_stage": stage, "changed_at": moment} for moment, stage in deal["events"]]
    clock.now = FIXED_NOW

    interactions = []
    generated = generate_interactions(rng, n_customers, n_interactions)
    crm.interactions.add_many([{**{k: v for k, v in row.items() if k != "customer"},
                                "customer_id": ids[row["customer"]]} for row in generated])
    for row in generated:
        interactions.append({**row, "customer_id": ids[row["customer"]],
                             "region": customers[row["customer"]]["region"]})

    # Two segmentation runs: the second moves some customers, drops some, adds others.
    SEGMENT_RUNS[1] = {i: rng.choice("ABC") for i in range(n_customers) if rng.random() < 0.8}
    SEGMENT_RUNS[2] = {i: (rng.choice("ABC") if rng.random() < 0.4 else SEGMENT_RUNS[1].get(i, "C"))
                       for i in range(n_customers) if rng.random() < 0.85}
    plugin.segmenter.ids = ids
    runs = [crm.segments.run("fixed", as_of=FIXED_NOW - timedelta(days=30), options={"round": 1}).id,
            crm.segments.run("fixed", as_of=FIXED_NOW, options={"round": 2}).id]
    memberships = {run: {ids[i]: s for i, s in SEGMENT_RUNS[k].items()} for k, run in zip((1, 2), runs)}

    frame = pd.DataFrame
    return World(crm, frame(customers), frame(deals), frame(history), frame(interactions), runs, memberships, url)


@pytest.fixture(scope="module", params=["sqlite", "postgresql", "mariadb"])
def world(request: Any, tmp_path_factory: Any) -> Any:
    """The generated CRM on each database (module scope: loaded once per test module and database)."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path_factory.mktemp('reports') / 'crm.db'}"
    else:
        url = server_url(request.param)
        reset_database(url)
    loaded = load_world(url)
    yield loaded
    loaded.crm.close()


def utc_day(text: str) -> date:
    return date.fromisoformat(text)
