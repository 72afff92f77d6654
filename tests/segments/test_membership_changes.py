"""The ``changes`` of ``on_segment_membership_changed``: a lazy view (``crmcore.MembershipChanges``).

A listener that reads nothing costs no query per change; ``len()`` is known from the run's
counts; ``entering(segment)`` answers in SQL.  Every answer is checked against the changes
computed here in Python from the names the test gave, never from the engine's tables.
"""

from __future__ import annotations

from typing import Any

import attrs
from sqlalchemy import case, literal, select

import crmcore
from crmcore import MembershipChange, MembershipChanges
from crmcore.store import tables

customers_t = tables.customers


@attrs.frozen
class NoOptions:
    pass


class InitialSegmenter(crmcore.Segmenter):
    """SQL path: ``early`` for names before "M", ``late`` from "M" on; names starting with "_" are left out."""

    name = "initials"
    description = "customers by initial (SQL)"
    options_type = NoOptions

    def select(self, ctx: crmcore.SegmentContext, options: NoOptions) -> Any:
        segment = case((customers_t.c.name < "M", literal("early")), else_=literal("late"))
        return select(customers_t.c.id.label("customer_id"), segment.label("segment"),
                      literal(None).label("score"), literal(None).label("details")).where(
            customers_t.c.name >= "A")


class Components:
    __name__ = "membership_changes_components"

    @crmcore.hookimpl
    def register_segmenters(self, register: Any) -> None:
        register(InitialSegmenter())


class Listener:
    """Asks the view its length and entries first (before it is read), then reads it."""

    __name__ = "membership_changes_listener"

    def __init__(self) -> None:
        self.seen: list[dict[str, Any]] = []
        self.read = True

    @crmcore.hookimpl
    def on_segment_membership_changed(self, uow: Any, run: Any, changes: Any) -> None:
        assert isinstance(changes, MembershipChanges)
        seen = {"run": run.id, "len": len(changes), "early": changes.entering("early"),
                "late": changes.entering("late")}
        if self.read:
            items = list(changes)
            seen.update(items=items, again=list(changes), first=changes[0] if items else None,
                        after_read_early=changes.entering("early"))
        self.seen.append(seen)


def expected(before: dict[int, str], after: dict[int, str]) -> set[MembershipChange]:
    entered = {MembershipChange(c, None, after[c]) for c in after.keys() - before.keys()}
    left = {MembershipChange(c, before[c], None) for c in before.keys() - after.keys()}
    moved = {MembershipChange(c, before[c], after[c]) for c in after.keys() & before.keys() if before[c] != after[c]}
    return entered | left | moved


def entering(before: dict[int, str], after: dict[int, str], segment: str) -> list[int]:
    return sorted(c for c, s in after.items() if s == segment and before.get(c) != segment)


def test_lazy_changes_match_set_computation(crm_factory: Any) -> None:
    listener = Listener()
    crm = crm_factory(extra_plugins=[Components(), listener])
    names: dict[int, str] = {}
    for name in ["Ann", "Bo", "Max", "Zoe", "_x", "Cy"]:
        names[crm.customers.add(name=name).id] = name

    def model() -> dict[int, str]:
        return {c: ("early" if n < "M" else "late") for c, n in names.items() if n >= "A"}

    before: dict[int, str] = {}
    edits = [
        # Bo moves late, Zoe leaves, _x enters early, a newcomer enters late
        [("Bo", "Nia"), ("Zoe", "_z"), ("_x", "Eve")],
        # Max moves early, Nia moves back early
        [("Max", "Abe"), ("Nia", "Bea")],
    ]
    for round_no in range(len(edits) + 1):
        run = crm.segments.run("initials")
        after = model()
        want = expected(before, after)
        seen = listener.seen[-1]
        assert seen["run"] == run.id
        assert seen["len"] == len(want) == run.entered + run.left + run.moved
        assert seen["early"] == entering(before, after, "early")
        assert seen["late"] == entering(before, after, "late")
        assert set(seen["items"]) == want and len(seen["items"]) == len(want)
        assert seen["again"] == seen["items"] and seen["first"] == seen["items"][0]
        assert seen["after_read_early"] == seen["early"]
        kinds = [c.change for c in seen["items"]]
        assert kinds == sorted(kinds, key=["entered", "left", "moved"].index)  # entered, then left, then moved
        before = after
        if round_no < len(edits):
            by_name = {n: c for c, n in names.items()}
            for old, new in edits[round_no]:
                crm.customers.update(by_name[old], name=new)
                names[by_name[old]] = new
            if round_no == 0:
                names[crm.customers.add(name="Olga").id] = "Olga"
    assert len(listener.seen) == 3


def test_a_listener_that_reads_nothing_gets_the_count(crm_factory: Any) -> None:
    listener = Listener()
    listener.read = False
    crm = crm_factory(extra_plugins=[Components(), listener])
    ids = [crm.customers.add(name=name).id for name in ["Ann", "Max", "Zed"]]
    run = crm.segments.run("initials")
    assert run.entered == 3
    assert listener.seen == [{"run": run.id, "len": 3, "early": [ids[0]], "late": [ids[1], ids[2]]}]
    assert crm.segments.run("initials").entered == 0 and len(listener.seen) == 1  # nothing changed: no event
