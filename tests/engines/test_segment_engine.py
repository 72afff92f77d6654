"""The segmentation engine: SQL and Python strategies, run records, options,
diffs between runs and the membership-change event.

Expected memberships and changes are computed independently in Python from
the data the test wrote, never read back from the engine's own tables.
"""

from __future__ import annotations

import random
from datetime import timedelta
from decimal import Decimal
from typing import Any

import attrs
import pytest
import sqlalchemy.exc
from sqlalchemy import case, func, literal, select

import crmcore
from crmcore import Assignment, ConfigError, HookError, MembershipChange, UnknownComponent
from crmcore.store import tables
from crmcore.store.dialects import json_object
from crmcore.testing import FIXED_NOW

from .conftest import Components, row_count

deals_t, customers_t = tables.deals, tables.customers


# -- components under test ----------------------------------------------------------

@attrs.frozen
class SpendOptions:
    high: Decimal = Decimal("1000")
    include_idle: bool = False


class SpendSegmenter(crmcore.Segmenter):
    """SQL path: won revenue up to ``as_of`` per customer -> high / low (/ idle)."""

    name = "spend"
    description = "customers by won revenue"
    options_type = SpendOptions

    def select(self, ctx: crmcore.SegmentContext, options: SpendOptions) -> Any:
        won = select(deals_t.c.customer_id, func.sum(deals_t.c.amount).label("total"),
                     func.count().label("n")).where(
            deals_t.c.stage == "won", deals_t.c.closed_at <= ctx.as_of_literal()).group_by(
            deals_t.c.customer_id).subquery()
        total = func.coalesce(won.c.total, 0)
        n = func.coalesce(won.c.n, 0)
        segment = case((won.c.customer_id.is_(None), literal("idle")),
                       (total >= options.high, literal("high")), else_=literal("low"))
        query = select(customers_t.c.id.label("customer_id"), segment.label("segment"),
                       n.label("score"), json_object(ctx.dialect, deals=n).label("details")).select_from(
            customers_t.outerjoin(won, won.c.customer_id == customers_t.c.id))
        if not options.include_idle:
            query = query.where(won.c.customer_id.is_not(None))
        return query


@attrs.frozen
class InitialOptions:
    batch_size: int = 100
    split: str = "M"


class InitialSegmenter(crmcore.Segmenter):
    """Python path: customers by the first letter of their name, in batches.

    Customers tagged ``skip`` are left out; ``early`` up to ``split``, else ``late``.
    """

    name = "initial"
    description = "customers by initial"
    options_type = InitialOptions

    def __init__(self) -> None:
        self.batch_sizes: list[int] = []

    def assign(self, ctx: crmcore.SegmentContext, options: InitialOptions) -> Any:
        batch: list[Assignment] = []
        for customer in ctx.uow.customers.iter():
            if "skip" in customer.tags:
                continue
            letter = customer.name[0].upper()
            batch.append(Assignment(customer.id, "early" if letter <= options.split.upper() else "late",
                                    float(len(customer.name)), {"letter": letter}))
            if len(batch) == options.batch_size:
                self.batch_sizes.append(len(batch))
                yield batch
                batch = []
        self.batch_sizes.append(len(batch))
        yield batch  # possibly empty: the engine must cope


class Events:
    """Records every membership-change event; can be armed to raise."""

    __name__ = "segment_events"

    def __init__(self) -> None:
        self.calls: list[tuple[Any, list[MembershipChange]]] = []
        self.raise_on_next = False

    @crmcore.hookimpl
    def on_segment_membership_changed(self, uow: Any, run: Any, changes: Any) -> None:
        self.calls.append((run, list(changes)))
        if self.raise_on_next:
            raise RuntimeError("segment listener exploded")


def open_crm(crm_factory: Any, events: Events | None = None, **kwargs: Any) -> crmcore.CRM:
    plugins: list[Any] = [Components("engine_segmenters", segmenters=(SpendSegmenter(), InitialSegmenter()))]
    if events is not None:
        plugins.append(events)
    return crm_factory(extra_plugins=plugins, **kwargs)


def expected_changes(before: dict[int, str], after: dict[int, str]) -> set[MembershipChange]:
    """The changes between two memberships, by plain set arithmetic."""
    entered = {MembershipChange(c, None, after[c]) for c in after.keys() - before.keys()}
    left = {MembershipChange(c, before[c], None) for c in before.keys() - after.keys()}
    moved = {MembershipChange(c, before[c], after[c]) for c in after.keys() & before.keys()
             if before[c] != after[c]}
    return entered | left | moved


def spend_expectation(won: dict[int, list[Decimal]], high: Decimal = Decimal("1000")) -> dict[int, str]:
    return {c: ("high" if sum(amounts) >= high else "low") for c, amounts in won.items() if amounts}


def members_map(crm: crmcore.CRM, strategy: str, run_id: int | None = None) -> dict[int, str]:
    return {m["customer_id"]: m["segment"] for m in crm.segments.members(strategy, run_id=run_id)}


def check_diff(run: crmcore.SegmentRun, expected: set[MembershipChange]) -> None:
    kinds = [c.change for c in expected]
    assert (run.entered, run.left, run.moved) == (kinds.count("entered"), kinds.count("left"),
                                                  kinds.count("moved"))


# -- the SQL path ---------------------------------------------------------------------

def seed_spend(crm: crmcore.CRM) -> tuple[list[int], dict[int, list[Decimal]]]:
    """Five customers with won, lost and no deals; returns ids and won amounts."""
    ids = [crm.customers.add(name=n, email=f"{n.lower()}@example.com").id
           for n in ("Ada", "Bo", "Cy", "Di", "Ed")]
    won: dict[int, list[Decimal]] = {i: [] for i in ids}
    plan = {ids[0]: ["1500.00"], ids[1]: ["200.00", "300.00"], ids[2]: ["999.99"]}
    for cid, amounts in plan.items():
        for amount in amounts:
            crm.deals.add(customer_id=cid, title=f"deal {amount}", amount=Decimal(amount), stage="won")
            won[cid].append(Decimal(amount))
    crm.deals.add(customer_id=ids[4], title="lost one", amount=Decimal("5000"), stage="lost")
    crm.deals.add(customer_id=ids[3], title="open one", amount=Decimal("7000"), stage="proposal")
    return ids, won


def test_sql_segmenter_run_is_recorded(crm_factory: Any) -> None:
    crm = open_crm(crm_factory)
    ids, won = seed_spend(crm)
    as_of = FIXED_NOW + timedelta(days=1)

    run = crm.segments.run("spend", as_of=as_of)

    expected = spend_expectation(won)
    assert expected == {ids[0]: "high", ids[1]: "low", ids[2]: "low"}
    assert run.strategy == "spend"
    assert run.options == {"high": "1000", "include_idle": False}
    assert run.as_of == as_of
    assert run.counts == {"high": 1, "low": 2}
    assert run.members == 3
    assert run.duration_s is not None and run.duration_s >= 0
    assert (run.entered, run.left, run.moved) == (3, 0, 0)  # a first run: everyone entered
    assert crm.segments.latest_run("spend") == run
    assert crm.segments.runs() == [run]

    members = crm.segments.members("spend")
    assert {m["customer_id"]: m["segment"] for m in members} == expected
    by_id = {m["customer_id"]: m for m in members}
    for cid, amounts in won.items():
        if amounts:
            assert by_id[cid]["score"] == len(amounts)
            assert by_id[cid]["details"] == {"deals": len(amounts)}
    assert [m["customer_id"] for m in crm.segments.members("spend", "low")] == [ids[1], ids[2]]
    assert crm.segments.members("spend", "high", run_id=run.id) == [by_id[ids[0]]]
    assert crm.segments.members("spend", "nobody") == []
    assert crm.segments.members("initial") == []  # never run

    assert crm.segments.segments_of(ids[0]) == {"spend": "high"}
    assert crm.segments.segments_of(ids[3]) == {}


class AuditedSpend(SpendSegmenter):
    """The SQL path, recording what is true of the whole run (as a model's fitted parameters would be)."""

    name = "audited"

    def select(self, ctx: crmcore.SegmentContext, options: SpendOptions) -> Any:
        ctx.record_run_details({"threshold": str(options.high), "note": "first"})
        ctx.record_run_details({"note": "second"})  # later calls add to and overwrite earlier ones
        return super().select(ctx, options)

    def explain(self, ctx: crmcore.SegmentContext, options: SpendOptions, membership: Any) -> dict[str, Any]:
        return {"seen": dict(ctx.run_details)}


def test_run_details_are_stored_with_the_run_and_given_to_explain(crm_factory: Any) -> None:
    events = Events()
    crm = crm_factory(extra_plugins=[Components("audited_segmenters", segmenters=(AuditedSpend(),
                                                                                 SpendSegmenter())), events])
    ids, _ = seed_spend(crm)
    first = crm.segments.run("audited")
    second = crm.segments.run("audited", options={"high": "100"})
    assert first.details == {"threshold": "1000", "note": "second"}
    assert second.details == {"threshold": "100", "note": "second"}
    assert [r.details for r in crm.segments.runs("audited")] == [second.details, first.details]
    assert events.calls[0][0].details == first.details  # the change event's run carries them
    assert crm.segments.run("spend").details is None  # a strategy that records nothing

    found = crm.segments.explain("audited", ids[0], run_id=first.id)  # a past run: its own details
    assert found["run_details"] == first.details and found["explanation"] == {"seen": first.details}
    assert crm.segments.explain("spend", ids[0])["run_details"] is None


def test_as_of_is_respected(crm_factory: Any) -> None:
    crm = open_crm(crm_factory)
    seed_spend(crm)  # every deal closes at FIXED_NOW (the test clock)
    before = crm.segments.run("spend", as_of=FIXED_NOW - timedelta(seconds=1))
    assert before.members == 0 and before.counts == {}
    assert crm.segments.run("spend", as_of="2026-06-30").members == 3  # a date is the end of that day


def test_options_from_config_overridden_per_call(crm_factory: Any) -> None:
    crm = open_crm(crm_factory, config={"segments": {"spend": {"high": "500", "include_idle": True}}})
    ids, won = seed_spend(crm)

    configured = crm.segments.run("spend")
    assert configured.options == {"high": "500", "include_idle": True}
    expected = spend_expectation(won, Decimal("500")) | {ids[3]: "idle", ids[4]: "idle"}
    assert members_map(crm, "spend") == expected
    assert configured.counts == {"high": 3, "idle": 2}  # Bo's 500 is exactly the threshold

    overridden = crm.segments.run("spend", options={"high": 2000})
    assert overridden.options == {"high": "2000", "include_idle": True}  # include_idle still from config
    assert members_map(crm, "spend") == {i: ("idle" if not won[i] else "low") for i in ids}
    assert (overridden.entered, overridden.left, overridden.moved) == (0, 0, 3)  # high -> low


@pytest.mark.parametrize("given, key", [({"high": "lots"}, "high"), ({"include_idle": "perhaps"}, "include_idle"),
                                        ({"hihg": 5}, "hihg")])
def test_bad_option_names_the_key(crm_factory: Any, given: dict, key: str) -> None:
    crm = open_crm(crm_factory)
    with pytest.raises(ConfigError) as info:
        crm.segments.run("spend", options=given)
    assert "[segments.spend]" in str(info.value) and key in str(info.value)
    assert crm.segments.runs() == []


def test_bad_configured_option_names_the_key(crm_factory: Any) -> None:
    # Configured options are checked when the CRM opens, not at the first run.
    with pytest.raises(ConfigError, match=r"\[segments\.initial\] batch_size"):
        open_crm(crm_factory, config={"segments": {"initial": {"batch_size": "many"}}})


def test_unknown_strategy_lists_known(crm_factory: Any) -> None:
    crm = open_crm(crm_factory)
    with pytest.raises(UnknownComponent) as info:
        crm.segments.run("rfm")
    message = str(info.value)
    assert "'rfm'" in message and "initial" in message and "spend" in message
    assert [s.name for s in crm.segments.strategies()] == ["initial", "spend"]


# -- the Python batch path ----------------------------------------------------------------

NAMES = ["Alice", "bob", "Carol", "Mallory", "Niaj", "Oscar", "Peggy", "Trent", "Zoe", "Mike"]


def test_batch_segmenter_writes_every_batch(crm_factory: Any) -> None:
    crm = open_crm(crm_factory, config={"segments": {"initial": {"batch_size": 3}}})
    ids = {crm.customers.add(name=n).id: n for n in NAMES}
    segmenter = crm.segments.registry.get("initial")

    run = crm.segments.run("initial")

    assert segmenter.batch_sizes == [3, 3, 3, 1]
    expected = {cid: ("early" if n[0].upper() <= "M" else "late") for cid, n in ids.items()}
    assert members_map(crm, "initial") == expected
    assert run.members == len(NAMES)
    assert run.counts == {"early": 5, "late": 5}
    assert run.options == {"batch_size": 3, "split": "M"}
    for m in crm.segments.members("initial"):
        assert m["score"] == float(len(ids[m["customer_id"]]))
        assert m["details"] == {"letter": ids[m["customer_id"]][0].upper()}


def test_batch_segmenter_with_no_customers(crm_factory: Any) -> None:
    crm = open_crm(crm_factory)
    run = crm.segments.run("initial")
    assert (run.members, run.counts, run.entered, run.left, run.moved) == (0, {}, 0, 0, 0)


# -- diffs between runs and the change event -------------------------------------------

def test_second_run_diff_and_event(crm_factory: Any) -> None:
    events = Events()
    crm = open_crm(crm_factory, events)
    ids, won = seed_spend(crm)

    first = crm.segments.run("spend")
    assert len(events.calls) == 1  # the first run: everyone entered
    run, changes = events.calls[0]
    assert run.id == first.id and run.entered == 3
    assert set(changes) == expected_changes({}, spend_expectation(won)) and len(changes) == 3

    before = members_map(crm, "spend")
    # Bo's deals are lost -> Bo leaves; Cy wins more -> moves low -> high;
    # Di's open deal is won -> Di enters low; a new customer enters high.
    for deal in crm.deals.list({"customer_id": ids[1]}):
        crm.deals.move(deal.id, "lost")
    won[ids[1]] = []
    crm.deals.add(customer_id=ids[2], title="upsell", amount=Decimal("0.01"), stage="won")
    won[ids[2]].append(Decimal("0.01"))
    (open_deal,) = crm.deals.list({"customer_id": ids[3]})
    crm.deals.move(open_deal.id, "won")
    won[ids[3]].append(open_deal.amount)
    newcomer = crm.customers.add(name="Fay").id
    crm.deals.add(customer_id=newcomer, title="big", amount=Decimal("10000"), stage="won")
    won[newcomer] = [Decimal("10000")]

    second = crm.segments.run("spend")

    after = spend_expectation(won)
    assert members_map(crm, "spend") == after
    assert members_map(crm, "spend", run_id=first.id) == before  # the old run is kept
    expected = expected_changes(before, after)
    assert expected == {MembershipChange(ids[1], "low", None), MembershipChange(ids[2], "low", "high"),
                        MembershipChange(ids[3], None, "high"), MembershipChange(newcomer, None, "high")}
    check_diff(second, expected)
    assert len(events.calls) == 2
    run, changes = events.calls[1]
    assert run.id == second.id and (run.entered, run.left, run.moved) == (second.entered, second.left, second.moved)
    assert len(changes) == len(expected) and set(changes) == expected
    assert {c.customer_id: c.change for c in changes} == {ids[1]: "left", ids[2]: "moved", ids[3]: "entered",
                                                          newcomer: "entered"}
    assert crm.segments.segments_of(ids[1]) == {}
    assert crm.segments.segments_of(ids[2]) == {"spend": "high"}

    third = crm.segments.run("spend")
    assert len(events.calls) == 2  # nothing changed: no event
    assert (third.entered, third.left, third.moved) == (0, 0, 0)
    assert third.members == second.members


def test_random_runs_match_set_computation(crm_factory: Any) -> None:
    """Several runs of the batch strategy over random edits, each diff checked."""
    events = Events()
    crm = open_crm(crm_factory, events, config={"segments": {"initial": {"batch_size": 4}}})
    rng = random.Random(20260630)
    letters = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
    people: dict[int, tuple[str, bool]] = {}  # id -> (name, skipped)
    for _ in range(12):
        name, skip = rng.choice(letters) + "x", rng.random() < 0.2
        people[crm.customers.add(name=name, tags=["skip"] if skip else []).id] = (name, skip)

    def model() -> dict[int, str]:
        return {cid: ("early" if n[0] <= "M" else "late") for cid, (n, skip) in people.items() if not skip}

    previous: dict[int, str] = {}
    fired = 0
    for round_no in range(6):
        run = crm.segments.run("initial", as_of=FIXED_NOW + timedelta(hours=round_no))
        current = model()
        assert members_map(crm, "initial", run.id) == current
        expected = expected_changes(previous, current)
        check_diff(run, expected)
        if expected:
            fired += 1
            run_seen, changes = events.calls[-1]
            assert run_seen.id == run.id
            assert len(changes) == len(expected) and set(changes) == expected
        assert len(events.calls) == fired
        previous = current
        for cid in rng.sample(sorted(people), 4):  # rename, (un)skip, or add someone
            name, skip = people[cid]
            action = rng.choice(["rename", "skip", "same"])
            if action == "rename":
                name = rng.choice(letters) + "y"
                crm.customers.update(cid, name=name)
            elif action == "skip":
                skip = not skip
                crm.customers.update(cid, tags=["skip"] if skip else [])
            people[cid] = (name, skip)
        if rng.random() < 0.5:
            name = rng.choice(letters) + "z"
            people[crm.customers.add(name=name).id] = (name, False)


def test_strategies_are_diffed_separately(crm_factory: Any) -> None:
    events = Events()
    crm = open_crm(crm_factory, events)
    seed_spend(crm)
    crm.segments.run("spend")
    initial = crm.segments.run("initial")
    assert initial.entered == 5 and initial.left == 0  # not diffed against the spend run
    again = crm.segments.run("spend")
    assert (again.entered, again.left, again.moved) == (0, 0, 0)
    assert [r.strategy for r in crm.segments.runs()] == ["spend", "initial", "spend"]
    assert [r.id for r in crm.segments.runs("spend")] == [again.id, again.id - 2]
    assert crm.segments.segments_of(1) == {"spend": "high", "initial": "early"}


def test_raising_handler_rolls_back_the_whole_run(crm_factory: Any) -> None:
    events = Events()
    crm = open_crm(crm_factory, events)
    ids, won = seed_spend(crm)

    events.raise_on_next = True
    with pytest.raises(HookError) as info:
        crm.segments.run("spend")
    assert info.value.plugin == "segment_events" and info.value.hook == "on_segment_membership_changed"
    assert crm.segments.runs() == []
    assert row_count(crm, tables.segment_runs) == 0
    assert row_count(crm, tables.segment_memberships) == 0

    events.raise_on_next = False
    first = crm.segments.run("spend")
    before = members_map(crm, "spend")
    crm.deals.add(customer_id=ids[3], title="now won", amount=Decimal("5"), stage="won")

    events.raise_on_next = True
    with pytest.raises(HookError, match="segment listener exploded"):
        crm.segments.run("spend")
    assert crm.segments.runs() == [first]
    assert row_count(crm, tables.segment_runs) == 1
    assert row_count(crm, tables.segment_memberships) == first.members == len(before)
    assert members_map(crm, "spend") == before
    assert crm.segments.segments_of(ids[3]) == {}


# -- columns (Assignments) and EveryoneElse -----------------------------------------------

class ColumnSegmenter(crmcore.Segmenter):
    """Python path in columns: customers whose name starts with a vowel as numpy
    columns (score = name length, details = the letter), everybody else "rest"."""

    name = "columns"
    description = "vowel initials as columns, the rest in SQL"

    def __init__(self) -> None:
        self.extra: list[Any] = []  # batches yielded after EveryoneElse

    def assign(self, ctx: crmcore.SegmentContext, options: Any) -> Any:
        import numpy as np

        chosen = [c for c in ctx.uow.customers.iter() if c.name[0] in "AEIOU"]
        half = len(chosen) // 2
        for part in (chosen[:half], chosen[half:]):
            yield crmcore.Assignments(np.array([c.id for c in part], dtype=np.int64),
                                      np.array(["vowel"] * len(part), dtype=object),
                                      np.array([float(len(c.name)) for c in part]),
                                      [{"letter": c.name[0]} for c in part])
        yield crmcore.Assignments([], "unused")  # an empty batch is fine
        yield crmcore.EveryoneElse("rest")
        yield from self.extra


def test_assignments_columns_and_everyone_else(crm_factory: Any) -> None:
    segmenter = ColumnSegmenter()
    crm = crm_factory(extra_plugins=[Components("column_segmenters", segmenters=(segmenter,))])
    names = {crm.customers.add(name=n).id: n for n in NAMES}

    run = crm.segments.run("columns")

    expected = {cid: ("vowel" if n[0] in "AEIOU" else "rest") for cid, n in names.items()}
    assert members_map(crm, "columns") == expected
    assert run.counts == {seg: list(expected.values()).count(seg) for seg in set(expected.values())}
    for m in crm.segments.members("columns"):
        name = names[m["customer_id"]]
        if name[0] in "AEIOU":
            assert (m["score"], m["details"]) == (float(len(name)), {"letter": name[0]})
        else:  # everyone else: no score, no details
            assert (m["score"], m["details"]) == (None, None)
    # A second run changes nothing: diffed like any other.
    again = crm.segments.run("columns")
    assert (again.entered, again.left, again.moved) == (0, 0, 0)


def test_everyone_else_with_no_other_batches_and_misuse(crm_factory: Any) -> None:
    segmenter = ColumnSegmenter()
    crm = crm_factory(extra_plugins=[Components("column_segmenters", segmenters=(segmenter,))])
    run = crm.segments.run("columns")  # no customers at all
    assert (run.members, run.counts) == (0, {})
    ids = [crm.customers.add(name=n).id for n in ("Bo", "Cy")]
    assert members_map(crm, "columns", crm.segments.run("columns").id) == {i: "rest" for i in ids}
    segmenter.extra = [[Assignment(ids[0], "late")]]
    with pytest.raises(ValueError, match="after EveryoneElse"):
        crm.segments.run("columns")
    assert len(crm.segments.runs("columns")) == 2  # the failed run left nothing behind
    # A customer that does not exist is refused by the foreign key, as on every path.
    segmenter.extra = []
    original = segmenter.assign
    segmenter.assign = lambda ctx, options: iter([[Assignment(max(ids) + 100, "ghost")], crmcore.EveryoneElse("rest")])
    with pytest.raises(sqlalchemy.exc.IntegrityError):
        crm.segments.run("columns")
    segmenter.assign = original
    assert len(crm.segments.runs("columns")) == 2
    with pytest.raises(ValueError, match="different lengths"):
        crmcore.Assignments([1, 2], ["a"]).columns()
