"""Triggers: core events mapped to templates by ``[notify.triggers]`` in crm.toml.

Each handler runs inside the unit of work of the event, so the message is
queued in the same transaction: a use case that rolls back queues nothing.
Idempotency keys make a replayed event queue nothing new:

===================  ===========================================  ==============================================
trigger              fires on                                     key (one message per ...)
===================  ===========================================  ==============================================
``deal_won``         a deal enters a won stage                    deal
``tier_upgraded``    a loyalty tier goes up (``tiers`` ranks       customer, scheme and tier
                     them; without it any new tier counts)
``segment_entered``  a customer enters ``strategy``/``segment``   segmentation run and customer
``birthday``         ``crm notify run-scheduled`` on the birthday  customer and year
                     (29 February: 28 February in other years)
``complaint``        an interaction of kind complaint is logged   interaction; ``due_at`` = occurred_at +
                                                                  ``response_hours``, also set as the
                                                                  complaint's ``follow_up_due`` when empty
===================  ===========================================  ==============================================

Bulk paths (imports) fire batch events, not these: importing last year's won
deals or complaints sends no thank-you or acknowledgement.
"""

from __future__ import annotations

import calendar
from collections.abc import Sequence
from datetime import date, datetime, timedelta
from typing import TYPE_CHECKING
from zoneinfo import ZoneInfo

import attrs
from sqlalchemy import and_, or_, select

import crmcore
from crmcore.store import birthday_month_day, tables

if TYPE_CHECKING:
    # Not exported from ``crmcore`` (yet): one configured ``[notify.triggers]`` entry.
    from crmcore.config.notify import Trigger

PAGE = 1000


def _triggers(uow: crmcore.UnitOfWork, event: str) -> list[Trigger]:
    return uow.crm.config.notify.triggers_for(event)


@crmcore.hookimpl
def on_deal_stage_changed(uow: crmcore.UnitOfWork, deal: crmcore.Deal, old: crmcore.Stage | None,
                          new: crmcore.Stage | None) -> None:
    """Queue the ``deal_won`` triggers' messages when a deal enters a won stage."""
    won = crmcore.StageOutcome.WON
    if new is None or new.outcome is not won or (old is not None and old.outcome is won):
        return
    for trigger in _triggers(uow, "deal_won"):
        uow.crm.messages.enqueue(uow, trigger.template, deal.customer_id, channel=trigger.channel,
                                 purpose=trigger.purpose, key=f"trigger:deal_won:{trigger.template}:{deal.id}",
                                 extra={"deal": deal})


@crmcore.hookimpl
def on_loyalty_tiers_changed(uow: crmcore.UnitOfWork, scheme: str,
                             moves: Sequence[tuple[int, str | None, str | None]]) -> None:
    """Queue the ``tier_upgraded`` triggers' messages for the moves up (the batch hook: a tier
    job's moves cost nothing here when no such trigger is configured for the scheme)."""
    triggers = [t for t in _triggers(uow, "tier_upgraded") if not t.scheme or t.scheme == scheme]
    if not triggers:
        return
    for customer_id, old, new in moves:
        for trigger in triggers:
            if not _upgrade(trigger.tiers, old, new):
                continue
            uow.crm.messages.enqueue(uow, trigger.template, customer_id, channel=trigger.channel,
                                     purpose=trigger.purpose,
                                     key=f"trigger:tier_upgraded:{trigger.template}:{scheme}:{customer_id}:{new}",
                                     extra={"tier": new, "old_tier": old, "scheme": scheme})


def _upgrade(tiers: tuple[str, ...], old: str | None, new: str | None) -> bool:
    """Is ``old`` -> ``new`` a move up?  Without a ranking, any new tier is."""
    if new is None:
        return False
    if not tiers:
        return True
    rank = {name: i for i, name in enumerate(tiers)}
    return new in rank and rank[new] > rank.get(old, -1) if old is not None else new in rank


@crmcore.hookimpl
def on_segment_membership_changed(uow: crmcore.UnitOfWork, run: crmcore.SegmentRun,
                                  changes: crmcore.MembershipChanges) -> None:
    """Queue the ``segment_entered`` triggers' messages for the customers who entered.

    Without a trigger for the run's strategy this reads no change at all; with one,
    only the ids entering its segment (one query), not a Python object per change.
    """
    for trigger in _triggers(uow, "segment_entered"):
        if trigger.strategy != run.strategy or trigger.segment is None:  # the config requires a segment
            continue
        ids = changes.entering(trigger.segment)

        def key_for(cid: int, t: Trigger = trigger) -> str:
            return f"trigger:segment_entered:{t.template}:run{run.id}:{cid}"

        def extra_for(cid: int, t: Trigger = trigger) -> dict[str, str | None]:
            return {"segment": t.segment, "strategy": t.strategy}

        for start in range(0, len(ids), PAGE):
            uow.crm.messages.enqueue_batch(
                uow, trigger.template, ids[start:start + PAGE], channel=trigger.channel, purpose=trigger.purpose,
                key_for=key_for, extra_for=extra_for)


@crmcore.hookimpl
def on_interaction_created(uow: crmcore.UnitOfWork, interaction: crmcore.Interaction) -> None:
    """Acknowledge a complaint (``complaint`` triggers) and set its follow-up deadline."""
    if interaction.kind is not crmcore.InteractionKind.COMPLAINT:
        return
    for trigger in _triggers(uow, "complaint"):
        due_at = interaction.occurred_at + timedelta(hours=trigger.response_hours)
        if interaction.follow_up_due is None:
            # The promise in the acknowledgement becomes the complaint's deadline.
            interaction = uow.interactions.update(attrs.evolve(interaction, follow_up_due=due_at), uow.now)
        uow.crm.messages.enqueue(uow, trigger.template, interaction.customer_id, channel=trigger.channel,
                                 purpose=trigger.purpose, key=f"trigger:complaint:{trigger.template}:{interaction.id}",
                                 extra={"interaction": interaction, "due_at": due_at})


@crmcore.hookimpl
def on_scheduled(uow: crmcore.UnitOfWork, as_of: datetime) -> None:
    """Queue the ``birthday`` triggers' messages for today's birthdays."""
    triggers = _triggers(uow, "birthday")
    if not triggers:
        return
    today = as_of.astimezone(ZoneInfo(uow.crm.config.timezone)).date()
    ids = birthdays(uow, today)
    for trigger in triggers:

        def key_for(cid: int, t: Trigger = trigger) -> str:
            return f"trigger:birthday:{t.template}:{cid}:{today.year}"

        for start in range(0, len(ids), PAGE):
            uow.crm.messages.enqueue_batch(
                uow, trigger.template, ids[start:start + PAGE], channel=trigger.channel, purpose=trigger.purpose,
                key_for=key_for)


def birthdays(uow: crmcore.UnitOfWork, today: date) -> list[int]:
    """Ids of customers whose birthday is ``today`` (29 February counts on 28 February
    in years without one), in one query."""
    c = tables.customers
    month, day = birthday_month_day(c.c.birthday)  # plain or sealed: the month-day is readable
    same_day = and_(month == today.month, day == today.day)
    if today.month == 2 and today.day == 28 and not calendar.isleap(today.year):
        same_day = or_(same_day, and_(month == 2, day == 29))
    return list(uow.conn.execute(select(c.c.id).where(c.c.birthday.is_not(None), same_day).order_by(c.c.id)).scalars())
