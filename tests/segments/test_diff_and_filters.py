"""Engine additions: diff between any two runs, change counts after deletions,
streamed members with customer fields, and the segment filter - by hand-worked cases."""

from __future__ import annotations

import pytest

from crmcore import MembershipChange, NotFound, ValidationError


def test_diff_entered_left_moved_and_counts_after_delete(crm_factory):
    crm = crm_factory(plugins=["segments"])
    a = crm.customers.add(name="A", region="华东").id
    b = crm.customers.add(name="B", region="华北").id
    c = crm.customers.add(name="C", region="华南").id
    first = crm.segments.run("geo")
    crm.customers.update(a, region="华北")     # moved 华东 -> 华北
    crm.customers.delete(b, purge=True)        # gone: its memberships go too, so not "left"
    d = crm.customers.add(name="D", region="西北").id  # entered
    second = crm.segments.run("geo", options={"level": "country"})  # everyone -> Unknown
    assert crm.segments.diff(first.id, second.id) == [
        MembershipChange(a, "华东", "Unknown"), MembershipChange(c, "华南", "Unknown"),
        MembershipChange(d, None, "Unknown")]
    assert (second.entered, second.left, second.moved) == (1, 0, 2)
    crm.customers.delete(c, purge=True)
    third = crm.segments.run("geo", options={"level": "country", "territories": {"": {"territory": "x"}}})
    assert (third.entered, third.left, third.moved) == (0, 0, 2)  # '' -> no match: Unassigned
    # Backwards: D was not in the first run (left); B and C are deleted, so in neither.
    assert crm.segments.diff(third.id, first.id) == [MembershipChange(a, "Unassigned", "华东"),
                                                     MembershipChange(d, "Unassigned", None)]


def test_diff_errors(crm_factory):
    crm = crm_factory(plugins=["segments"])
    crm.customers.add(name="A")
    geo, life = crm.segments.run("geo"), crm.segments.run("lifecycle")
    with pytest.raises(ValidationError, match="same strategy"):
        crm.segments.diff(geo.id, life.id)
    with pytest.raises(NotFound, match="segment run 42"):
        crm.segments.diff(geo.id, 42)
    with pytest.raises(ValidationError, match="not of 'geo'"):
        crm.segments.explain("geo", 1, run_id=life.id)


def test_members_with_customer_fields_and_filter(crm_factory):
    crm = crm_factory(plugins=["segments"])
    ids = [crm.customers.add(name=n, email=f"{n.lower()}@example.com", region=r).id
           for n, r in (("Ann", "华东"), ("Bob", "华北"), ("Cy", "华东"))]
    crm.segments.run("geo")
    rows = crm.segments.members("geo", "华东", customer_fields=True)
    assert [(r["customer_id"], r["name"], r["email"]) for r in rows] == [(ids[0], "Ann", "ann@example.com"),
                                                                          (ids[2], "Cy", "cy@example.com")]
    assert "name" not in crm.segments.members("geo")[0]  # the old shape unless asked
    assert [c.name for c in crm.customers.list({"segment.geo": "华东"})] == ["Ann", "Cy"]
    assert [c.name for c in crm.customers.list({"segment.geo__in": "华北,华南"})] == ["Bob"]
    assert [c.name for c in crm.customers.list({"segment.geo__ne": "华东"})] == ["Bob"]
    assert crm.customers.count({"segment.nothing": "x"}) == 0
    with pytest.raises(ValidationError, match="does not apply"):
        crm.customers.list({"segment.geo__gt": "a"})
