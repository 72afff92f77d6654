"""Helpers for the template, consent, campaign and trigger tests.

Components are real: a channel that records what it delivers (with an email
address, so consent flags apply), a segmenter that puts customers in the
segment named by their first tag, and a loyalty scheme with tiers.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import select

import crmcore
from crmcore.store import tables
from crmcore.testing import FIXED_NOW

SECRET = "test-secret"


class RecordingChannel(crmcore.Channel):
    """Delivers into a list; ``address="email"`` like an email channel."""

    description = "records deliveries"

    def __init__(self, name: str = "mail", address: str | None = "email"):
        self.name, self.address = name, address
        self.delivered: list[crmcore.Message] = []

    def send(self, message: crmcore.Message, options: Any) -> str | None:
        self.delivered.append(message)
        return None


class TagSegmenter(crmcore.Segmenter):
    """Segment = the customer's first tag (customers without tags are in no segment)."""

    name = "tags"
    description = "first tag"

    def assign(self, ctx: Any, options: Any):
        batch = []
        for customer in ctx.uow.customers.iter():
            if customer.tags:
                batch.append(crmcore.Assignment(customer.id, customer.tags[0]))
        yield batch


class TieredScheme(crmcore.LoyaltyScheme):
    """One point per unit of a won deal; silver from 100, gold from 1000 points."""

    name = "stars"
    description = "tiers by balance"

    def points_for_deal(self, uow: Any, deal: crmcore.Deal, options: Any) -> int:
        return int(deal.amount)

    def tier_for(self, uow: Any, customer_id: int, balance: int, options: Any) -> str | None:
        return "gold" if balance >= 1000 else "silver" if balance >= 100 else None


class Components:
    """A test plugin registering the components above."""

    def __init__(self, channels=(), segmenters=(), schemes=()):
        self.__name__ = "campaign-test-components"
        self.channels, self.segmenters, self.schemes = channels, segmenters, schemes

    @crmcore.hookimpl
    def register_channels(self, register: Any) -> None:
        for channel in self.channels:
            register(channel)

    @crmcore.hookimpl
    def register_segmenters(self, register: Any) -> None:
        for segmenter in self.segmenters:
            register(segmenter)

    @crmcore.hookimpl
    def register_loyalty_schemes(self, register: Any) -> None:
        for scheme in self.schemes:
            register(scheme)


def notify_config(**notify: Any) -> dict[str, Any]:
    """A configuration with a [notify] table (secret and channel ``mail`` by default)."""
    table = {"unsubscribe_secret": SECRET, "unsubscribe_url": "https://crm.example/u?t={token}",
             "channel": "mail", "locales": {"CN": "zh-CN"}}
    table.update(notify)
    return {"notify": {k: v for k, v in table.items() if v is not None}}


def open_crm(crm_factory, recorder: RecordingChannel | None = None, clock=None, config: dict | None = None,
             plugins: tuple[str, ...] = ("notify",), **notify: Any) -> crmcore.CRM:
    """A CRM with the notify plugin, a recording ``mail`` channel, the tag segmenter
    and the tiered scheme."""
    components = Components(channels=(recorder or RecordingChannel(),), segmenters=(TagSegmenter(),),
                            schemes=(TieredScheme(),))
    values = notify_config(**notify) | (config or {})
    return crm_factory(plugins=list(plugins), extra_plugins=[components], config=values,
                       clock=clock or (lambda: FIXED_NOW))


def outbox_rows(crm: crmcore.CRM, **where: Any) -> list[dict[str, Any]]:
    """Outbox rows (oldest first), straight from the table."""
    t = tables.notify_outbox
    query = select(t).where(*(t.c[k] == v for k, v in where.items())).order_by(t.c.id)
    with crm.unit(readonly=True) as uow:
        return [dict(r._mapping) for r in uow.conn.execute(query)]


class Clock:
    """A clock the test moves."""

    def __init__(self, now: datetime = FIXED_NOW):
        self.now = now

    def __call__(self) -> datetime:
        return self.now
