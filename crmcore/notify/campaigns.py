"""Campaigns: one templated message to every eligible member of a segment.

``crm.campaigns.plan(...)`` counts, in one SQL query over the segment's latest
run: members, eligible, skipped for consent and duplicates (already queued by
an earlier run of the same campaign).  ``crm.campaigns.run(...)`` then queues
the eligible ones in batches: customer ids are read a page at a time (keyset
pagination, so memory stays flat in the campaign size), each page is rendered
and inserted with one executemany, and each page commits on its own.

The idempotency key of a message is ``campaign:<name>:<channel>:<customer id>``
(the same campaign on another channel is another message); the
name defaults to ``<template>:<strategy>:<segment>:run<run id>``, so rerunning
a campaign (after a crash, or by mistake) queues nothing new, and the next
segmentation run makes a new campaign.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date, datetime
from typing import TYPE_CHECKING, Any

import attrs
from sqlalchemy import String, and_, case, cast, exists, func, literal, select

from ..store import tables
from . import consent

if TYPE_CHECKING:
    from ..app import CRM

m = tables.segment_memberships
runs = tables.segment_runs
outbox = tables.notify_outbox
PAGE = 1000


def campaign_key(name: str, channel: str, customer_id: int | str) -> str:
    """The idempotency key of campaign ``name``'s message to a customer through ``channel``."""
    return f"campaign:{name}:{channel}:{customer_id}"


@attrs.frozen
class Campaign:
    """What a campaign targets and its counts (before or after queueing)."""

    name: str
    template: str
    strategy: str
    segment: str
    run_id: int
    channel: str
    purpose: str
    members: int
    eligible: int
    skipped_consent: int
    duplicates: int
    enqueued: int = 0
    dead: int = 0
    dry_run: bool = True


class CampaignEngine:
    """``crm.campaigns``: plan and run campaigns to segments."""

    def __init__(self, crm: CRM):
        self.crm = crm

    def plan(self, template: str, segment: str, strategy: str | None = None, channel: str | None = None,
             purpose: str = "marketing", name: str | None = None,
             as_of: str | date | datetime | None = None) -> Campaign:
        """The counts of a campaign, without queueing anything.

        ``segment`` is a reference, ``STRATEGY:SEGMENT`` or ``SEGMENT`` alone when
        only one strategy's latest run has it (:meth:`crmcore.segments.SegmentEngine.resolve`);
        ``strategy`` may be given apart instead.
        """
        consent.check_purpose(purpose)
        channel = channel or self.crm.config.notify.channel
        self.crm.notify.registry.get(channel)
        self.crm.messages.catalog.check(template)
        found = self.crm.segments.resolve(f"{strategy}:{segment}" if strategy else segment, as_of)
        run, segment = self.crm.segments.run_info(found.run_id), found.segment
        name = name or f"{template}:{run.strategy}:{segment}:run{run.id}"
        with self.crm.unit(readonly=True) as uow:
            refusal = self._refusal(channel, purpose)
            queued = exists().where(outbox.c.idempotency_key == self._key_expr(name, channel))
            ok = refusal.is_(None)
            row = uow.conn.execute(select(
                func.count(),
                func.coalesce(func.sum(case((ok, 1), else_=0)), 0),
                func.coalesce(func.sum(case((and_(ok, queued), 1), else_=0)), 0),
            ).where(m.c.run_id == run.id, m.c.segment == segment)).one()
        members, allowed, duplicates = (int(v) for v in row)
        return Campaign(name, template, run.strategy, segment, run.id, channel, purpose, members,
                        allowed - duplicates, members - allowed, duplicates)

    def run(self, template: str, segment: str, strategy: str | None = None, channel: str | None = None,
            purpose: str = "marketing", name: str | None = None, as_of: str | date | datetime | None = None,
            dry_run: bool = False) -> Campaign:
        """Queue one message per eligible member; returns the plan with what was queued."""
        plan = self.plan(template, segment, strategy, channel, purpose, name, as_of)
        if dry_run:
            return plan
        self.crm.authorize("notify.campaign", plan.name)
        enqueued = dead = 0
        for page in self._pages(plan):
            with self.crm.unit() as uow:
                counts = self.crm.messages.enqueue_batch(
                    uow, template, page, key_for=lambda cid: campaign_key(plan.name, plan.channel, cid), channel=plan.channel,
                    purpose=purpose, extra_for=lambda cid: {"campaign": plan.name, "segment": plan.segment})
                uow.audit.batch("campaign.queue", "customer", page, campaign=plan.name, enqueued=counts.enqueued)
            enqueued += counts.enqueued
            dead += counts.dead
        return attrs.evolve(plan, enqueued=enqueued, dead=dead, dry_run=False)

    # -- helpers ---------------------------------------------------------------------------------
    def _pages(self, plan: Campaign) -> Iterator[list[int]]:
        """Eligible, not yet queued member ids, a page at a time (keyset pagination)."""
        refusal = self._refusal(plan.channel, plan.purpose)
        queued = exists().where(outbox.c.idempotency_key == self._key_expr(plan.name, plan.channel))
        last = 0
        while True:
            query = select(m.c.customer_id).where(
                m.c.run_id == plan.run_id, m.c.segment == plan.segment, m.c.customer_id > last,
                refusal.is_(None), ~queued).order_by(m.c.customer_id).limit(PAGE)
            with self.crm.unit(readonly=True) as uow:
                page = list(uow.conn.execute(query).scalars())
            if not page:
                return
            yield page
            last = page[-1]

    def _refusal(self, channel: str, purpose: str) -> Any:
        chan = self.crm.notify.registry.get(channel)
        return consent.refusal_column(channel, chan.address, purpose, self.crm.config.notify.policy(channel),
                                      m.c.customer_id)

    @staticmethod
    def _key_expr(name: str, channel: str) -> Any:
        """:func:`campaign_key` in SQL, for the member rows of a query."""
        return literal(campaign_key(name, channel, "")) + cast(m.c.customer_id, String)
