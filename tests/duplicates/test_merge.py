"""Merging duplicates on SQLite, PostgreSQL and MariaDB: every row of every table moves (the acme
plugin's too), report totals and ledger sums are the same before and after, and an unmerge puts
every row back.  Expected values come from counting rows per customer before the merge, not from
the merge's own report."""

from __future__ import annotations

from decimal import Decimal

import pytest
from sqlalchemy import func, select

from crmcore import hookimpl
from crmcore.domain.errors import MergeRefused, RecordArchived
from crmcore.store import tables
from crmcore.testing import FIXED_NOW

PLUGINS = ["acme", "loyalty", "segments", "reports", "notify"]
CONFIG = {"loyalty": {"points": {"points_per_unit": 1},
                      "rewards": {"catalogue": [{"name": "mug", "cost": 100, "code_valid_days": 30}]}}}

#: Every table with a customer_id whose rows must follow the customer: the core's, the loyalty
#: plugin's (through merge_customer_rows) and a third party's (acme).
OWNED = ("contacts", "interactions", "deals", "tasks", "notify_outbox", "loyalty_ledger", "consent_history",
         "loyalty_reward_codes", "loyalty_tier_changes", "acme_welcomes")
#: The key column of the tables whose key is not ``id``.
KEYS = {"loyalty_reward_codes": "code"}


class MergeListener:
    """A plugin listening to the merge event (and recording what it saw)."""

    def __init__(self) -> None:
        self.seen: list[tuple[int, list[int], list[bool]]] = []
        self.unmerged: list[tuple[int, str | None, list[tuple[int, str, object]]]] = []

    @hookimpl
    def on_customers_merged(self, uow, kept, merged):
        assert uow.conn.in_transaction()
        self.seen.append((kept.id, [c.id for c in merged], [c.archived_at is not None for c in merged]))

    @hookimpl
    def on_customers_unmerged(self, uow, kept, restored):
        assert uow.conn.in_transaction()
        self.unmerged.append((kept.id, kept.phone, [(c.id, c.email, c.archived_at) for c in restored]))


def rows_of(crm, customer_id):
    """Row ids per table owned by ``customer_id`` (read straight from the tables)."""
    from acme_crm.tables import acme_welcomes
    from crmcore_loyalty.tables import referrals, reward_codes, tier_changes

    known = {t.name: t for t in (acme_welcomes, reward_codes, tier_changes, *tables.metadata.tables.values())}
    found = {}
    with crm.engine.connect() as conn:
        for name in OWNED:
            table = known[name]
            key = table.c[KEYS.get(name, "id")]
            found[name] = set(conn.execute(select(key).where(table.c.customer_id == customer_id)).scalars())
        found["referrals made"] = set(conn.execute(select(referrals.c.referee_id).where(
            referrals.c.referrer_id == customer_id)).scalars())
    return found


def ledger_total(crm):
    with crm.engine.connect() as conn:
        return int(conn.execute(select(func.coalesce(func.sum(tables.loyalty_ledger.c.points), 0))).scalar_one())


def report_totals(crm):
    """The pipeline report's rows and the customer-value report's totals (as rendered: exact)."""
    pipeline = crm.reports.run("pipeline", as_of=FIXED_NOW).records()
    value = crm.reports.run("customer-value", as_of=FIXED_NOW).records()
    revenue = sum((Decimal(str(r.get("revenue") or 0)) for r in value), Decimal(0))
    return pipeline, revenue


@pytest.fixture
def merging(crm_factory):
    listener = MergeListener()
    crm = crm_factory(plugins=PLUGINS, config=CONFIG, extra_plugins=[listener])
    return crm, listener


def seed(crm):
    """Two records of one person, with history on both, and a bystander."""
    keep = crm.customers.add(name="张伟", email="zhang.wei@example.com", city="Shanghai", tags=["vip"])
    other = crm.customers.add(name="Zhang Wei", email="ZHANG.WEI@example.com", phone="+8613291417776",
                              city="Shanghai", tags=["newsletter"], consent_marketing=True, on_duplicate="add")
    bystander = crm.customers.add(name="李娜", email="li.na@example.com")
    for cid in (keep.id, other.id):
        crm.contacts.add(customer_id=cid, name=f"assistant of {cid}")
        crm.interactions.add(customer_id=cid, kind="call", direction="inbound", occurred_at=FIXED_NOW,
                             subject="hello")
        deal = crm.deals.add(customer_id=cid, title=f"deal {cid}", amount=Decimal("1200.00"), currency="CNY",
                             stage="lead")
        crm.deals.move(deal.id, "won")  # earns points (and a tier)
        crm.tasks.add(customer_id=cid, title=f"call {cid} back", deal_id=deal.id)
    crm.deals.add(customer_id=bystander.id, title="bystander", amount=Decimal("300"), currency="CNY", stage="won")
    crm.loyalty.redeem(other.id, 100, "points", reason="coffee")
    crm.loyalty.redeem_reward(other.id, "mug")  # a reward code (and its ledger entry)
    friend = crm.customers.add(name="王芳", email="wang.fang@example.com")
    crm.loyalty.refer(friend.id, other.id)  # a referral the other made
    with crm.unit() as uow:
        uow.outbox.enqueue("console", customer_id=other.id, subject="hi", body="x", key="m1")
    crm.segments.run("lifecycle", as_of=FIXED_NOW)
    return keep, other, bystander


def test_merge_moves_every_row_keeps_totals_and_unmerge_restores(merging):
    crm, listener = merging
    keep, other, _ = seed(crm)
    before_keep, before_other = rows_of(crm, keep.id), rows_of(crm, other.id)
    assert all(before_other.values()), before_other  # history on every table
    ledger, balances = ledger_total(crm), (crm.loyalty.balance(keep.id, "points"), crm.loyalty.balance(other.id, "points"))
    totals = report_totals(crm)
    memberships = crm.segments.segments_of(other.id)

    result = crm.merges.merge(keep.id, [other.id])

    after = rows_of(crm, keep.id)
    for name in after:
        assert after[name] == before_keep[name] | before_other[name], name
        assert not rows_of(crm, other.id)[name], name
    assert ledger_total(crm) == ledger  # no point created or lost
    assert crm.loyalty.balance(keep.id, "points") == sum(balances)
    assert crm.loyalty.balance(other.id, "points") == 0
    assert report_totals(crm) == totals
    assert crm.loyalty.recompute() == []  # balances agree with the ledger, allocations add up
    kept = crm.customers.get(keep.id)
    assert kept.phone == "+8613291417776"  # non-empty: taken from the other
    assert kept.email == "zhang.wei@example.com"  # the kept one's
    assert kept.tags == ("vip", "newsletter")
    assert kept.consent_marketing is True  # the other's decision is now the kept one's history
    assert crm.customers.get(other.id).archived_at is not None
    assert listener.seen == [(keep.id, [other.id], [True])]
    assert result.moved["acme_welcomes"] == 1 and result.moved["loyalty_ledger"] == len(before_other["loyalty_ledger"])
    with crm.engine.connect() as conn:
        actions = list(conn.execute(select(tables.audit_log.c.action, tables.audit_log.c.changes).where(
            tables.audit_log.c.action == "customer.merge", tables.audit_log.c.entity_id == str(keep.id))))
    assert actions and actions[0].changes["before"][0][str(other.id)]["email"] == "ZHANG.WEI@example.com"

    crm.merges.unmerge(result.merge_id)

    assert rows_of(crm, keep.id) == before_keep
    assert rows_of(crm, other.id) == before_other
    assert (crm.loyalty.balance(keep.id, "points"), crm.loyalty.balance(other.id, "points")) == balances
    assert ledger_total(crm) == ledger and crm.loyalty.recompute() == []
    assert report_totals(crm) == totals
    restored = crm.customers.get(other.id)
    assert restored.archived_at is None and restored.email == "ZHANG.WEI@example.com"
    assert crm.customers.get(keep.id).phone is None and crm.customers.get(keep.id).tags == ("vip",)
    assert crm.segments.segments_of(other.id) == memberships
    # on_customers_unmerged saw the kept customer as restored and the others live again
    assert listener.unmerged == [(keep.id, None, [(other.id, "ZHANG.WEI@example.com", None)])]
    with pytest.raises(MergeRefused, match="already undone"):
        crm.merges.unmerge(result.merge_id)


def test_unmerge_refused_once_newer_work_depends_on_it(merging):
    crm, _ = merging
    keep, other, bystander = seed(crm)
    first = crm.merges.merge(keep.id, [other.id])
    # The next segmentation run reflects the merge: the merged customer is archived, so in no segment.
    crm.segments.run("lifecycle", as_of=FIXED_NOW)
    assert crm.segments.segments_of(other.id) == {} and "lifecycle" in crm.segments.segments_of(keep.id)
    # Points the merged customer brought are spent after the merge: undoing would take them back twice.
    crm.loyalty.redeem(keep.id, crm.loyalty.balance(keep.id, "points"), "points", reason="all of it")
    with pytest.raises(MergeRefused, match="spent or expired"):
        crm.merges.unmerge(first.merge_id)
    second = crm.merges.merge(keep.id, [bystander.id])
    with pytest.raises(MergeRefused, match=f"newer merge {second.merge_id}"):
        crm.merges.unmerge(first.merge_id)
    with pytest.raises(RecordArchived):
        crm.merges.merge(keep.id, [other.id])  # archived by the first merge


def test_referrals_follow_the_merge_without_a_self_referral(crm_factory):
    """The referral that brought a merged customer in becomes the kept one's (it has none); a
    referral between the kept and a merged customer stays as it was (nobody refers itself)."""
    from crmcore_loyalty.tables import referrals

    crm = crm_factory(plugins=["loyalty"], config={"loyalty": {"referral": {"referrer_bonus": 10}}})
    friend = crm.customers.add(name="李娜", email="li.na@example.com")
    keep = crm.customers.add(name="张伟", email="zhang.wei@example.com")
    other = crm.customers.add(name="Zhang Wei", email="ZHANG.WEI@example.com", on_duplicate="add")
    third = crm.customers.add(name="Wei Zhang", email="Zhang.Wei@example.com", on_duplicate="add")
    crm.loyalty.refer(other.id, friend.id)  # the friend brought the other record in
    crm.loyalty.refer(third.id, keep.id)    # the kept record "referred" the third one

    def pairs():
        with crm.engine.connect() as conn:
            return set(conn.execute(select(referrals.c.referee_id, referrals.c.referrer_id)).all())

    before = pairs()
    merge = crm.merges.merge(keep.id, [other.id, third.id])
    assert pairs() == {(keep.id, friend.id), (third.id, keep.id)}
    crm.merges.unmerge(merge.merge_id)
    assert pairs() == before
