"""Simultaneous first posts of one new address make one lead (issue 18), on SQLite, PostgreSQL and
MariaDB: threads capture the same new email at once, directly and through a webhook's idempotency
unit.  A listener slows each new customer's creation, so the posts overlap between their look and
their commit; without the door's locks (``crm.duplicates.hold``) every thread adds its own lead."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from sqlalchemy import func, select

from crmcore import hookimpl
from crmcore.application.idempotency import once
from crmcore.store import tables

POSTS = 5


class SlowLeads:
    """Holds each new customer's unit open a moment after the customer is written."""

    @hookimpl
    def on_customer_created(self, uow, customer):
        time.sleep(0.2)


def together(post: Callable[[int], Any]) -> tuple[list[Any], list[BaseException]]:
    """Run ``post(i)`` in POSTS threads released at the same moment; their results and errors."""
    barrier = threading.Barrier(POSTS)
    results: list[Any] = []
    errors: list[BaseException] = []

    def run(i: int) -> None:
        barrier.wait()
        try:
            results.append(post(i))
        except BaseException as exc:  # noqa: BLE001 - reported by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(POSTS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    return results, errors


def counts(crm: Any) -> tuple[int, int]:
    """Customers and interactions stored, read straight from the tables."""
    with crm.engine.connect() as conn:
        return (conn.execute(select(func.count()).select_from(tables.customers)).scalar_one(),
                conn.execute(select(func.count()).select_from(tables.interactions)).scalar_one())


def test_simultaneous_first_posts_of_one_address_make_one_lead(crm_factory: Any) -> None:
    crm = crm_factory(config={"phone_region": "CN"}, extra_plugins=[SlowLeads()])

    def post(i: int) -> Any:  # the same address, in other capitals every other time
        email = "New.Lead@Example.com" if i % 2 else "new.lead@example.com"
        return crm.leads.capture("form:contact", {"email": email, "name": f"visitor {i}"}, {"subject": f"hi {i}"})

    results, errors = together(post)
    assert not errors, errors
    assert counts(crm) == (1, POSTS)  # one lead, every post recorded on it
    assert len({r.customer_id for r in results}) == 1
    assert sorted(r.created for r in results) == [False] * (POSTS - 1) + [True]


def test_simultaneous_webhook_deliveries_make_one_lead(crm_factory: Any) -> None:
    """A webhook delivery reads its idempotency key before capturing: the door's locks come first
    (on MariaDB a snapshot taken by that read would not see the other delivery's lead)."""
    crm = crm_factory(config={"phone_region": "CN"}, extra_plugins=[SlowLeads()])
    lead = {"phone": "+86 139 0000 7777"}

    def deliver(i: int) -> Any:
        def work() -> tuple[int, Any]:
            return 201, crm.leads.capture("webhook:shop", dict(lead), {"subject": f"order {i}"}).as_json()

        stored, _ = once(crm, f"event-{i}", "POST /webhooks/shop", f"digest-{i}", work,
                         prepare=lambda uow: crm.leads.hold(uow, lead))
        return stored.body

    results, errors = together(deliver)
    assert not errors, errors
    assert counts(crm) == (1, POSTS)
    assert len({r["customer_id"] for r in results}) == 1 and sum(r["created"] for r in results) == 1
