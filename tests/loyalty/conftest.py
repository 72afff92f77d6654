"""Helpers for the loyalty scheme tests.

``fifo_model`` replays the raw ledger rows in plain Python by the documented
rules (credits are batches; debits take the oldest batch first, a reversal
its own deal's batch first; an expiry takes what is left of its batch).  The
tests compare the stored balances and the database's FIFO allocations with
it, so the SQL is never checked against itself.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import func, select

from crmcore.store import tables

START = datetime(2026, 1, 15, 10, 0, tzinfo=timezone.utc)


class Clock:
    """A clock the test moves: ``clock.now``, ``clock.advance(days=...)``, ``clock.at(...)``."""

    def __init__(self, now: datetime = START):
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: Any) -> datetime:
        self.now += timedelta(**delta)
        return self.now

    def at(self, moment: datetime) -> datetime:
        self.now = moment
        return moment


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def open_loyalty(crm_factory, clock):
    """open_loyalty(config) -> a CRM with the loyalty plugin on the test database and the movable clock."""
    def factory(config: dict | None = None, **kwargs: Any):
        return crm_factory(plugins=["loyalty"], config={"loyalty": config or {}}, clock=clock, **kwargs)
    return factory


def won(crm: Any, customer_id: int, amount: str, **fields: Any) -> Any:
    return crm.deals.add(customer_id=customer_id, title=fields.pop("title", "deal"), amount=Decimal(amount),
                         currency="USD", stage="won", **fields)


def ledger_rows(crm: Any) -> list[dict[str, Any]]:
    with crm.unit(readonly=True) as uow:
        return [dict(r._mapping) for r in uow.conn.execute(select(tables.loyalty_ledger).order_by(
            tables.loyalty_ledger.c.id))]


def fifo_model(rows: list[dict[str, Any]]) -> tuple[dict[tuple[int, str], int], dict[int, int]]:
    """(balance per (customer, scheme), remaining per batch id) from raw ledger rows."""
    balance: dict[tuple[int, str], int] = defaultdict(int)
    remaining: dict[int, int] = {}
    batches: dict[tuple[int, str], list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        account = (row["customer_id"], row["scheme"])
        points = int(row["points"])
        balance[account] += points
        if points > 0:
            remaining[row["id"]] = points
            batches[account].append(row)
            continue
        take = -points
        if row["kind"] == "expire":
            assert remaining[row["batch_id"]] == take, f"expiry {row['id']} took {take}, batch had " \
                                                       f"{remaining[row['batch_id']]}"
            remaining[row["batch_id"]] = 0
            continue
        queue = sorted(batches[account], key=lambda b: (b["occurred_at"], b["id"]))
        if row["kind"] == "reverse":
            queue.sort(key=lambda b: b["deal_id"] != row["deal_id"])
        for batch in queue:
            used = min(take, remaining[batch["id"]])
            remaining[batch["id"]] -= used
            take -= used
        assert take == 0, f"debit {row['id']} took more than the batches held"
    return dict(balance), remaining


def stored_balances(crm: Any) -> dict[tuple[int, str], int]:
    with crm.unit(readonly=True) as uow:
        a = tables.loyalty_accounts
        return {(c, s): int(b) for c, s, b in uow.conn.execute(select(a.c.customer_id, a.c.scheme, a.c.balance))}


def stored_remaining(crm: Any) -> dict[int, int]:
    """Remaining points per batch according to the database's allocations."""
    ledger, alloc = tables.loyalty_ledger, tables.loyalty_allocations
    with crm.unit(readonly=True) as uow:
        used = dict(uow.conn.execute(select(alloc.c.batch_id, func.sum(alloc.c.points)).group_by(
            alloc.c.batch_id)).all())
        return {i: int(p) - int(used.get(i, 0)) for i, p in uow.conn.execute(
            select(ledger.c.id, ledger.c.points).where(ledger.c.points > 0))}


def assert_matches_model(crm: Any) -> dict[tuple[int, str], int]:
    """Stored balances and FIFO remainders equal the Python replay of the raw ledger; returns the balances."""
    balance, remaining = fifo_model(ledger_rows(crm))
    stored = stored_balances(crm)
    assert {k: v for k, v in stored.items() if v} == {k: v for k, v in balance.items() if v}
    assert stored_remaining(crm) == remaining
    assert min(stored.values(), default=0) >= 0
    assert crm.loyalty.recompute() == []
    return balance
