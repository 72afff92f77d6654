"""Campaigns: counts checked against an independent pandas computation over
the raw tables, batches, idempotent reruns, dry runs, segment choice, CLI."""

from __future__ import annotations

import json
import random
from datetime import timedelta

import pandas as pd
import pytest
from click.testing import CliRunner

from crmcore import NotFound, ValidationError
from crmcore.notify import consent
from crmcore.notify import campaigns as campaigns_module
from crmcore.cli import cli
from crmcore.testing import FIXED_NOW

from .campaign_fixtures import (
    Components,
    RecordingChannel,
    TagSegmenter,
    open_crm,
    outbox_rows,
)


def seed(crm, n: int = 240, seed_value: int = 7) -> None:
    """Customers with random flags, tags, missing emails and recorded decisions."""
    rng = random.Random(seed_value)
    rows = [{"name": f"Customer {i}", "email": None if rng.random() < 0.1 else f"c{i}@example.com",
             "consent_marketing": rng.random() < 0.5, "consent_email": rng.random() < 0.8,
             "tags": rng.choice([["vip"], ["vip"], ["churn"], []])} for i in range(n)]
    crm.customers.add_many(rows)
    ids = [c.id for c in crm.customers.list(limit=None)]
    with crm.unit() as uow:
        for cid in rng.sample(ids, n // 4):
            when = FIXED_NOW - timedelta(days=rng.randint(1, 30))
            channel = rng.choice(["*", "mail", "sms"])
            consent.record(uow, cid, rng.random() < 0.5, channel, "marketing", source="seed", at=when)


def expected_counts(crm, segment: str, policy: str = "opt-in") -> dict[str, set[int]]:
    """Eligible / refused members by the consent rule, computed with pandas from the raw tables."""
    with crm.engine.connect() as conn:
        customers = pd.read_sql("SELECT id, email, consent_marketing, consent_email FROM customers", conn)
        decisions = pd.read_sql("SELECT customer_id, channel, purpose, granted, recorded_at FROM customer_consents",
                                conn)
        members = pd.read_sql("SELECT customer_id, segment, run_id FROM segment_memberships", conn)
    members = members[(members.run_id == members.run_id.max()) & (members.segment == segment)]
    marketing = decisions[decisions.purpose == "marketing"]
    exact = marketing[marketing.channel == "mail"].set_index("customer_id")
    every = marketing[marketing.channel == "*"].set_index("customer_id")
    frame = members.merge(customers, left_on="customer_id", right_on="id")
    frame = frame.join(exact[["granted", "recorded_at"]], on="customer_id").join(
        every[["granted", "recorded_at"]].add_suffix("_every"), on="customer_id")

    def allowed(row) -> bool:
        has_exact, has_every = pd.notna(row.granted), pd.notna(row.granted_every)
        if has_exact and (not has_every or row.recorded_at >= row.recorded_at_every):
            return bool(row.granted)
        if has_every and not row.granted_every:
            return False
        if not row.consent_email:  # opted out of email: beats a grant for every channel
            return False
        if has_every:
            return True
        return policy == "opt-out" or bool(row.consent_marketing)

    frame["allowed"] = frame.apply(allowed, axis=1)
    ok = frame[frame.allowed]
    return {"members": set(frame.customer_id), "eligible": set(ok.customer_id),
            "refused": set(frame[~frame.allowed].customer_id),
            "no_email": set(ok[ok.email.isna()].customer_id)}


@pytest.mark.parametrize("policy", ["opt-in", "opt-out"])
def test_campaign_counts_match_an_independent_computation(crm_factory, monkeypatch, policy):
    monkeypatch.setattr(campaigns_module, "PAGE", 17)  # several keyset pages
    crm = open_crm(crm_factory, consent={"default": policy})
    seed(crm)
    crm.segments.run("tags")
    want = expected_counts(crm, "vip", policy)
    assert len(want["eligible"]) > 10 and len(want["refused"]) > 10 and want["no_email"]  # the data is mixed

    plan = crm.campaigns.plan("win-back", segment="vip")
    assert (plan.members, plan.eligible, plan.skipped_consent, plan.duplicates) == (
        len(want["members"]), len(want["eligible"]), len(want["refused"]), 0)
    assert outbox_rows(crm) == []  # planning writes nothing

    result = crm.campaigns.run("win-back", segment="vip")
    assert (result.enqueued, result.dead) == (len(want["eligible"] - want["no_email"]), len(want["no_email"]))
    rows = outbox_rows(crm)
    assert {r["customer_id"] for r in rows} == want["eligible"]
    assert {r["customer_id"] for r in rows if r["status"] == "dead"} == want["no_email"]
    sample = next(r for r in rows if r["status"] == "pending")
    assert sample["idempotency_key"] == f"campaign:{plan.name}:{plan.channel}:{sample['customer_id']}"
    assert sample["recipient"] == f"c{sample['customer_id'] - 1}@example.com"
    assert sample["subject"] == f"We miss you, Customer {sample['customer_id'] - 1}"
    assert sample["purpose"] == "marketing" and sample["payload"]["unsubscribe_url"].startswith("https://crm.example/u?t=")
    token = sample["payload"]["unsubscribe_url"].split("t=", 1)[1]
    assert consent.read_token("test-secret", token) == (sample["customer_id"], "*", "marketing")

    again = crm.campaigns.run("win-back", segment="vip")  # a rerun queues nothing new
    assert (again.eligible, again.duplicates, again.enqueued, again.dead) == (0, len(want["eligible"]), 0, 0)
    assert len(outbox_rows(crm)) == len(rows)


def test_named_campaign_spans_segment_runs_and_default_name_follows_the_run(crm_factory):
    crm = open_crm(crm_factory)
    first = crm.customers.add(name="A", email="a@example.com", consent_marketing=True, tags=["vip"])
    crm.segments.run("tags")
    assert crm.campaigns.run("win-back", segment="vip", name="spring").enqueued == 1
    second = crm.customers.add(name="B", email="b@example.com", consent_marketing=True, tags=["vip"])
    run = crm.segments.run("tags")
    named = crm.campaigns.run("win-back", segment="vip", name="spring")
    assert (named.enqueued, named.duplicates) == (1, 1)
    assert {r["customer_id"] for r in outbox_rows(crm)} == {first.id, second.id}
    fresh = crm.campaigns.run("win-back", segment="vip")  # default name: a campaign per segment run
    assert fresh.name == f"win-back:tags:vip:run{run.id}" and fresh.enqueued == 2


def test_dry_run_and_as_of_pick_the_run(crm_factory):
    crm = open_crm(crm_factory)
    crm.customers.add(name="A", email="a@example.com", consent_marketing=True, tags=["vip"])
    old = crm.segments.run("tags", as_of="2026-01-31")
    crm.customers.add(name="B", email="b@example.com", consent_marketing=True, tags=["vip"])
    crm.segments.run("tags", as_of="2026-06-30")
    dry = crm.campaigns.run("win-back", segment="vip", dry_run=True)
    assert (dry.members, dry.eligible, dry.enqueued, dry.dry_run) == (2, 2, 0, True)
    assert outbox_rows(crm) == []
    early = crm.campaigns.plan("win-back", segment="vip", as_of="2026-02-01")
    assert (early.run_id, early.members) == (old.id, 1)


def test_segment_choice_errors(crm_factory):
    crm = open_crm(crm_factory)
    crm.customers.add(name="A", tags=["vip"])
    with pytest.raises(ValidationError, match=r"no segment 'vip' in the latest run of any strategy; "
                                              r"known: none \(no segmentation run yet\)"):
        crm.campaigns.plan("win-back", segment="vip")
    crm.segments.run("tags")
    with pytest.raises(ValidationError, match="no segment 'gold' in the latest run of any strategy; known: tags:vip"):
        crm.campaigns.plan("win-back", segment="gold")
    assert crm.campaigns.plan("win-back", segment="tags:vip").members == 1


def test_ambiguous_segment_needs_a_strategy(crm_factory):

    class SecondTags(TagSegmenter):
        name = "tags2"

    crm = crm_factory(plugins=["notify"], extra_plugins=[Components(
        channels=(RecordingChannel(),), segmenters=(TagSegmenter(), SecondTags()))],
        config={"notify": {"channel": "mail", "unsubscribe_secret": "s"}})
    crm.customers.add(name="A", tags=["vip"])
    crm.segments.run("tags")
    crm.segments.run("tags2")
    with pytest.raises(ValidationError, match=r"several strategies \(tags, tags2\): use STRATEGY:vip"):
        crm.campaigns.plan("win-back", segment="vip")
    assert crm.campaigns.plan("win-back", segment="vip", strategy="tags2").strategy == "tags2"


def test_cli_campaign_shows_counts_first(crm_factory, crm_db_url, tmp_path, monkeypatch):
    crm = open_crm(crm_factory)
    crm.customers.add(name="A", email="a@example.com", consent_marketing=True, tags=["vip"])
    crm.customers.add(name="B", email="b@example.com", consent_marketing=False, tags=["vip"])
    crm.segments.run("tags")
    monkeypatch.chdir(tmp_path)
    (tmp_path / "crm.toml").write_text('[notify]\nunsubscribe_secret = "s"\n', encoding="utf-8")
    runner = CliRunner()
    base = ["--db", crm_db_url, "--plugins", "notify"]
    args = ["notify", "campaign", "win-back", "--segment", "vip", "--channel", "console"]
    out = runner.invoke(cli, [*base, *args, "--dry-run"])
    assert out.exit_code == 0, out.output
    assert out.output.splitlines()[0].endswith(
        "2 members, 1 eligible, 1 skipped for consent, 0 already queued")
    assert outbox_rows(crm) == []
    out = runner.invoke(cli, [*base, "--json", *args])
    assert json.loads(out.output)[0] | {"name": None} == {
        "name": None, "template": "win-back", "strategy": "tags", "segment": "vip", "run_id": 1,
        "channel": "console", "purpose": "marketing", "members": 2, "eligible": 1, "skipped_consent": 1,
        "duplicates": 0, "enqueued": 1, "dead": 0, "dry_run": False}
    out = runner.invoke(cli, [*base, *args])
    assert "0 eligible, 1 skipped for consent, 1 already queued" in out.output
    out = runner.invoke(cli, [*base, "notify", "campaign", "nope", "--segment", "vip"])
    assert out.exit_code == 1 and "no template 'nope'" in out.output and "Traceback" not in out.output


def test_campaign_key_includes_the_channel(crm_factory):
    """Sent on one channel is not "already queued" on another; the same channel still is."""
    crm = open_crm(crm_factory)
    fan = crm.customers.add(name="A", email="a@example.com", consent_marketing=True, tags=["vip"])
    crm.segments.run("tags")
    mailed = crm.campaigns.run("win-back", segment="vip", name="spring", channel="mail")
    assert (mailed.enqueued, mailed.duplicates) == (1, 0)
    planned = crm.campaigns.plan("win-back", segment="vip", name="spring", channel="console")
    assert (planned.eligible, planned.duplicates) == (1, 0)
    consoled = crm.campaigns.run("win-back", segment="vip", name="spring", channel="console")
    assert (consoled.enqueued, consoled.duplicates) == (1, 0)
    again = crm.campaigns.run("win-back", segment="vip", name="spring", channel="mail")
    assert (again.eligible, again.enqueued, again.duplicates) == (0, 0, 1)
    rows = outbox_rows(crm)
    assert sorted((r["channel"], r["idempotency_key"]) for r in rows) == [
        ("console", f"campaign:spring:console:{fan.id}"), ("mail", f"campaign:spring:mail:{fan.id}")]
