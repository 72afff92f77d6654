"""Record visibility: a plugin's ``visibility`` conditions hold on every read path, in SQL.

The expected rows are computed here in Python from every row (read as the
unrestricted ``system`` actor), independently of the SQL rewrite under test.
"""

from __future__ import annotations

import io
import json
from decimal import Decimal

import pytest
from sqlalchemy import and_, select

from crmcore import NotFound, ValidationError, hookimpl
from crmcore.io.exporter import export_entities
from crmcore.store import tables

AS_OF = "2030-01-01"
REPS = ("alice", "bob", "carol")


class OwnersSee:
    """A rep sees the customers they own, and the deals they own among those customers' deals
    (the deal condition narrows what follows the customer); ``boss`` sees all."""

    @hookimpl
    def visibility(self, actor, entity):
        if actor in ("system", "boss"):
            return None
        if entity == "customer":
            return tables.customers.c.owner == actor
        deals = tables.deals
        return and_(deals.c.owner == actor, deals.c.customer_id.in_(
            select(tables.customers.c.id).where(tables.customers.c.owner == actor)))


class RegionOnly:
    """A second plugin: its condition applies too (AND)."""

    @hookimpl
    def visibility(self, actor, entity):
        return tables.customers.c.region != "hidden" if actor == "alice" and entity == "customer" else None


@pytest.fixture
def crm(crm_factory):
    crm = crm_factory(plugins=["reports", "segments"], extra_plugins=[OwnersSee()],
                      config={"default_currency": "CNY"})
    owners = ["alice", "bob", None, "alice", "carol", "bob", "alice", None, "carol", "alice"]
    for n, owner in enumerate(owners):
        customer = crm.customers.add(name=f"客户{n}", email=f"c{n}@example.com", owner=owner,
                                     region="hidden" if n == 9 else "华东")
        crm.contacts.add(customer_id=customer.id, name=f"联系人{n}")
        crm.interactions.add(customer_id=customer.id, kind="call", occurred_at="2026-01-02T03:04:05Z")
        for m, stage in enumerate(("lead", "proposal", "won")[: 1 + n % 3]):
            # Every third deal is owned by the next rep, so deals and customers disagree.
            deal_owner = REPS[(n + m) % 3] if m == 1 else owner
            deal = crm.deals.add(customer_id=customer.id, title=f"d{n}.{m}", amount=Decimal(100 * n + m) + Decimal("0.5"),
                                 currency="CNY", stage="lead", owner=deal_owner)
            if stage != "lead":
                crm.deals.move(deal.id, stage)
    return crm


def everything(crm):
    """Every row of the four entities, read as system."""
    return {kind: getattr(crm, kind).list() for kind in ("customers", "contacts", "interactions", "deals")}


def expected(crm, actor):
    """What ``actor`` may see under OwnersSee, computed from all rows in Python."""
    rows = everything(crm)
    customers = {c.id for c in rows["customers"] if c.owner == actor}
    return {
        "customers": customers,
        "contacts": {c.id for c in rows["contacts"] if c.customer_id in customers},
        "interactions": {i.id for i in rows["interactions"] if i.customer_id in customers},
        "deals": {d.id for d in rows["deals"] if d.owner == actor and d.customer_id in customers},
    }


@pytest.mark.parametrize("actor", REPS)
def test_lists_counts_and_gets_show_only_visible_records(crm, actor) -> None:
    want = expected(crm, actor)
    assert all(want.values())  # the data gives every rep something to see
    customers = everything(crm)["customers"]
    hidden = min(c.id for c in customers if c.id not in want["customers"])
    in_region = {c.id for c in customers if c.region == "华东"}
    with crm.acting_as(actor):
        for kind, ids in want.items():
            service = getattr(crm, kind)
            assert {e.id for e in service.list()} == ids, kind
            assert {e.id for e in service.iter()} == ids, kind
            assert service.count() == len(ids), kind
        with pytest.raises(NotFound):
            crm.customers.get(hidden)
        assert {c.id for c in crm.customers.search("example.com")} == want["customers"]
        assert {c.id for c in crm.customers.list({"region": "华东"})} == want["customers"] & in_region


def test_system_and_an_unrestricted_actor_see_everything(crm) -> None:
    total = {kind: len(rows) for kind, rows in everything(crm).items()}
    with crm.acting_as("boss"):
        assert {kind: getattr(crm, kind).count() for kind in total} == total


def test_exports_hold_only_visible_records(crm) -> None:
    want = expected(crm, "alice")
    for kind in ("customers", "deals", "contacts"):
        out = io.BytesIO()
        with crm.acting_as("alice"):
            export_entities(crm, kind, out, format="jsonl")
        ids = {json.loads(line)["id"] for line in out.getvalue().decode().splitlines()}
        assert ids == want[kind], kind


def test_segment_members_show_only_visible_customers(crm) -> None:
    crm.segments.run("value-tier", as_of=AS_OF)  # the run itself covers every customer
    everyone = {m["customer_id"]: m["segment"] for m in crm.segments.members("value-tier")}
    assert len(everyone) == len(everything(crm)["customers"])
    want = expected(crm, "bob")["customers"]
    with crm.acting_as("bob"):
        members = crm.segments.members("value-tier", customer_fields=True)
    assert {m["customer_id"]: m["segment"] for m in members} == {i: s for i, s in everyone.items() if i in want}


@pytest.mark.parametrize("actor", REPS)
def test_a_reps_pipeline_report_totals_equal_a_sum_over_their_deals(crm, actor) -> None:
    visible = expected(crm, actor)["deals"]
    deals = [d for d in everything(crm)["deals"] if d.id in visible]
    with crm.acting_as(actor):
        report = crm.reports.run("pipeline", as_of=AS_OF, options={"currency": "CNY"})
    got = {r["stage"]: (r["count"], r["amount"]) for r in report.records()}
    for stage, (count, amount) in got.items():
        mine = [d for d in deals if d.stage == stage]
        assert count == len(mine), stage
        assert amount == sum((d.amount for d in mine), Decimal("0.00")), stage
    assert sum(c for c, _ in got.values()) == len(deals)


def test_writes_to_invisible_records_fail_as_not_found_and_change_nothing(crm) -> None:
    rows = everything(crm)
    bobs = next(c for c in rows["customers"] if c.owner == "bob")
    bobs_deal = next(d for d in rows["deals"] if d.customer_id == bobs.id and d.owner == "bob")
    with crm.acting_as("alice"):
        with pytest.raises(NotFound):
            crm.customers.update(bobs.id, name="taken")
        with pytest.raises(NotFound):
            crm.deals.move(bobs_deal.id, "won")
        with pytest.raises(NotFound):
            crm.customers.delete(bobs.id)
        with pytest.raises(ValidationError, match="does not exist"):
            crm.contacts.add(customer_id=bobs.id, name="spy")
        with pytest.raises(ValidationError, match="does not exist"):
            crm.deals.move_many([{"deal_id": bobs_deal.id, "stage": "won"}])
        with pytest.raises(NotFound):
            crm.messages.unsubscribe_url(bobs.id)
    assert everything(crm) == rows


def test_conditions_of_several_plugins_all_apply(crm_factory) -> None:
    crm = crm_factory(extra_plugins=[OwnersSee(), RegionOnly()])
    shown = crm.customers.add(name="shown", owner="alice", region="华东")
    crm.customers.add(name="hidden", owner="alice", region="hidden")
    crm.customers.add(name="bob's", owner="bob", region="华东")
    with crm.acting_as("alice"):
        assert [c.id for c in crm.customers.list()] == [shown.id]


def test_without_a_visibility_plugin_no_statement_is_rewritten(crm_factory) -> None:
    crm = crm_factory()
    crm.customers.add(name="a", owner="alice")
    crm.customers.add(name="b", owner="bob")
    with crm.acting_as("alice"), crm.unit(readonly=True) as uow:
        assert uow.visibility is None
        assert uow.customers.count() == 2
