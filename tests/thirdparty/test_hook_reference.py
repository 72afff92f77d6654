"""The entity events behave as docs/hooks.md says: what fires, in which order,
with which arguments, inside the unit of work (rollback on raise, after_commit
only on commit), and what a customer's cascade does *not* fire."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest

from crmcore import HasHistory, HookError, StageOutcome, hookimpl
from crmcore.testing import FIXED_NOW


class Recorder:
    """Implements every per-entity event and records (hook, summary)."""

    def __init__(self) -> None:
        self.calls: list[tuple] = []
        self.fail_on: str | None = None
        self.committed: list[str] = []

    def _record(self, hook, uow, *summary):
        assert uow.conn.in_transaction()  # fired inside the unit of work
        self.calls.append((hook, *summary))
        if self.fail_on == hook:
            raise RuntimeError(f"refusing in {hook}")

    @hookimpl
    def on_customer_updated(self, uow, customer, previous):
        uow.after_commit(lambda: self.committed.append(f"customer {customer.id} updated"))
        self._record("on_customer_updated", uow, customer.id, previous.name, customer.name)

    @hookimpl
    def on_customer_deleted(self, uow, customer):
        self._record("on_customer_deleted", uow, customer.id)

    @hookimpl
    def on_contact_created(self, uow, contact):
        self._record("on_contact_created", uow, contact.id, contact.customer_id)

    @hookimpl
    def on_contact_updated(self, uow, contact, previous):
        self._record("on_contact_updated", uow, contact.id, previous.title, contact.title)

    @hookimpl
    def on_contact_deleted(self, uow, contact):
        self._record("on_contact_deleted", uow, contact.id)

    @hookimpl
    def on_interaction_updated(self, uow, interaction, previous):
        self._record("on_interaction_updated", uow, interaction.id, previous.resolved_at, interaction.resolved_at)

    @hookimpl
    def on_interaction_deleted(self, uow, interaction):
        self._record("on_interaction_deleted", uow, interaction.id)

    @hookimpl
    def on_deal_created(self, uow, deal):
        self._record("on_deal_created", uow, deal.id, deal.stage)

    @hookimpl
    def on_deal_updated(self, uow, deal, previous):
        self._record("on_deal_updated", uow, deal.id, previous.stage, deal.stage)

    @hookimpl
    def on_deal_stage_changed(self, uow, deal, old, new, transition_id):
        self._record("on_deal_stage_changed", uow, deal.id, old and old.name, new.name, new.outcome, transition_id)

    @hookimpl
    def on_deal_deleted(self, uow, deal):
        self._record("on_deal_deleted", uow, deal.id)

    def names(self) -> list[str]:
        return [c[0] for c in self.calls]


@pytest.fixture
def rec():
    return Recorder()


@pytest.fixture
def crm(crm_factory, rec):
    return crm_factory(plugins=[], extra_plugins=[rec])


def test_customer_update_and_after_commit(crm, rec):
    ada = crm.customers.add(name="Ada")
    crm.customers.update(ada.id, name="Ada King")
    assert rec.calls == [("on_customer_updated", ada.id, "Ada", "Ada King")]
    assert rec.committed == [f"customer {ada.id} updated"]


def test_raising_handler_rolls_back_and_skips_after_commit(crm, rec):
    ada = crm.customers.add(name="Ada")
    rec.fail_on = "on_customer_updated"
    with pytest.raises(HookError) as caught:
        crm.customers.update(ada.id, name="Ada King")
    assert (caught.value.plugin, caught.value.hook) == ("Recorder", "on_customer_updated")
    assert crm.customers.get(ada.id).name == "Ada"
    assert rec.committed == []


def test_contact_events(crm, rec):
    ada = crm.customers.add(name="Ada")
    contact = crm.contacts.add(customer_id=ada.id, name="Charles", title="engineer")
    crm.contacts.update(contact.id, title="partner")
    crm.contacts.delete(contact.id)
    assert rec.calls == [
        ("on_contact_created", contact.id, ada.id),
        ("on_contact_updated", contact.id, "engineer", "partner"),
        ("on_contact_deleted", contact.id),
    ]
    assert crm.contacts.count() == 0


def test_contact_handler_failure_keeps_the_old_contact(crm, rec):
    ada = crm.customers.add(name="Ada")
    contact = crm.contacts.add(customer_id=ada.id, name="Charles", title="engineer")
    rec.fail_on = "on_contact_updated"
    with pytest.raises(HookError, match="plugin 'Recorder' failed in hook 'on_contact_updated'"):
        crm.contacts.update(contact.id, title="partner")
    assert crm.contacts.get(contact.id).title == "engineer"


def test_interaction_update_and_delete(crm, rec):
    ada = crm.customers.add(name="Ada")
    complaint = crm.interactions.add(customer_id=ada.id, kind="complaint", occurred_at=FIXED_NOW, body="late")
    resolved = FIXED_NOW + timedelta(hours=5)
    crm.interactions.update(complaint.id, resolved_at=resolved)
    crm.interactions.delete(complaint.id)
    assert rec.calls == [
        ("on_interaction_updated", complaint.id, None, resolved),
        ("on_interaction_deleted", complaint.id),
    ]


def test_deal_events_order_and_stages(crm, rec):
    ada = crm.customers.add(name="Ada")
    deal = crm.deals.add(customer_id=ada.id, title="Pilot", amount=Decimal("1200.50"), currency="USD", stage="lead")
    crm.deals.move(deal.id, "won")
    crm.deals.update(deal.id, title="Pilot (signed)")  # no stage change: no stage event
    with pytest.raises(HasHistory):  # a won deal is history: never purged
        crm.deals.delete(deal.id, purge=True)
    draft = crm.deals.add(customer_id=ada.id, title="Draft", amount=Decimal("1"), currency="USD", stage="lead")
    crm.deals.delete(draft.id, purge=True)
    names = rec.names()
    # Winning makes the lead Ada a customer, before the stage event (tests/core/test_core_lifecycle.py).
    assert names == ["on_deal_created", "on_deal_stage_changed", "on_deal_updated", "on_customer_updated",
                     "on_deal_stage_changed", "on_deal_updated", "on_deal_created", "on_deal_stage_changed",
                     "on_deal_deleted"]
    created_move, won_move = [c for c in rec.calls if c[0] == "on_deal_stage_changed"][:2]
    assert created_move[2:5] == (None, "lead", StageOutcome.OPEN)
    assert won_move[2:5] == ("lead", "won", StageOutcome.WON)
    assert created_move[5] != won_move[5]  # transition ids are unique per move
    assert rec.calls[2] == ("on_deal_updated", deal.id, "lead", "won")


def test_customer_delete_cascades_without_child_events(crm, rec):
    ada = crm.customers.add(name="Ada")
    crm.contacts.add(customer_id=ada.id, name="Charles")
    crm.interactions.add(customer_id=ada.id, kind="call", occurred_at=FIXED_NOW)
    crm.deals.add(customer_id=ada.id, title="Pilot", amount="10", currency="USD", stage="lead")
    rec.calls.clear()
    crm.customers.delete(ada.id, purge=True)
    assert rec.calls == [("on_customer_deleted", ada.id)]
    assert (crm.contacts.count(), crm.interactions.count(), crm.deals.count()) == (0, 0, 0)
