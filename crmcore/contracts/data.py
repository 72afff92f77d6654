"""Deterministic test data for the contract classes, written through the public API.

:func:`generate` adds customers (people and companies, in several regions,
with emails, phones, tags, birthdays and lifecycle stages), their won, lost
and open deals in the default pipeline (closed over the two years before
:data:`FIXED_NOW`) and their interactions.  The same seed always gives the
same data, so a contract failure can be reproduced.
"""

from __future__ import annotations

import random
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import attrs

FIXED_NOW = datetime(2026, 6, 30, 12, 0, tzinfo=timezone.utc)
"""The fixed "now" of ``crm_factory`` CRMs and of the contract runs (aware UTC)."""
BEFORE_ANY_DATA = FIXED_NOW - timedelta(days=3650)
"""A moment before any data :func:`generate` writes: a report as of it sees none of that data."""

REGIONS = ("华东", "华北", "华南", "西北", None)
TAGS = ("vip", "gold", "wholesale", "newsletter")
STAGES = ("lead", "prospect", "customer", "former")
OPEN_STAGES = ("lead", "qualified", "proposal", "negotiation")
KINDS = ("call", "email", "meeting", "complaint", "feedback")


@attrs.frozen
class Generated:
    """What :func:`generate` wrote: the ids of the customers, deals and won deals."""

    customers: tuple[int, ...]
    deals: tuple[int, ...]
    won_deals: tuple[int, ...]


def generate(crm: Any, seed: int = 7, customers: int = 12, now: datetime = FIXED_NOW) -> Generated:
    """Add ``customers`` customers with deals and interactions to ``crm``.

    Every customer but the first has at least one deal; about half the deals
    are won (closed 1 to 700 days before ``now``), some lost, the rest open.
    The first customer has nothing but a name (a customer with no history).
    """
    rng = random.Random(seed)
    customer_ids, deal_ids, won = [], [], []
    for n in range(customers):
        person = n % 4 != 3
        customer = crm.customers.add(
            name=f"Contract {'Person' if person else 'Company'} {n}",
            kind="person" if person else "company",
            email=None if n % 5 == 4 else f"contract{n}@example.com",
            phone=None if n % 3 == 2 else f"+86138001380{n % 100:02d}",
            region=REGIONS[n % len(REGIONS)],
            city=None, owner=("alice", "bob", None)[n % 3],
            stage=STAGES[n % len(STAGES)],
            birthday=date(1970 + n % 30, 1 + n % 12, 1 + n % 28),
            tags=[t for i, t in enumerate(TAGS) if rng.random() < 0.3 + 0.1 * i],
            consent_marketing=n % 2 == 0,
            on_duplicate="add",  # generated data: generating twice into one CRM is allowed
        )
        customer_ids.append(customer.id)
        if n == 0:
            continue
        for d in range(1 + rng.randrange(3)):
            roll = rng.random()
            amount = Decimal(rng.randrange(100, 500_000)) / 100
            closed = now - timedelta(days=rng.randrange(1, 700), hours=rng.randrange(24))
            if roll < 0.55:
                stage, closed_at, reason = "won", closed, None
            elif roll < 0.75:
                stage, closed_at, reason = "lost", closed, "price"
            else:
                stage, closed_at, reason = rng.choice(OPEN_STAGES), None, None
            deal = crm.deals.add(customer_id=customer.id, title=f"Deal {n}.{d}", amount=amount, currency="USD",
                                 stage=stage, closed_at=closed_at, lost_reason=reason,
                                 owner=("alice", "bob")[d % 2])
            deal_ids.append(deal.id)
            if stage == "won":
                won.append(deal.id)
        for i in range(rng.randrange(3)):
            crm.interactions.add(customer_id=customer.id, kind=KINDS[(n + i) % len(KINDS)],
                                 direction="inbound" if i % 2 else "outbound",
                                 occurred_at=now - timedelta(days=rng.randrange(1, 400)),
                                 satisfaction=1 + rng.randrange(5) if i % 2 else None, owner="alice")
    return Generated(tuple(customer_ids), tuple(deal_ids), tuple(won))
