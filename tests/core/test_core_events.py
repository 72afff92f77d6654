"""Unit of work and events: entity events with the right arguments, handlers that
write in the same transaction, rollback on a raising handler, validate_* and
authorize decisions.  Runs on every database where storage is involved."""

from __future__ import annotations

from types import SimpleNamespace

import attrs
import pytest

import crmcore
from crmcore import (
    Customer,
    Deal,
    HasHistory,
    HookError,
    NotAuthorized,
    Stage,
    StageOutcome,
    UnitOfWork,
    ValidationError,
)
from crmcore.testing import FIXED_NOW

from .conftest import Recorder


def plugin(name: str, **hooks) -> SimpleNamespace:
    """A plugin object from plain functions (each marked as a hook implementation)."""
    return SimpleNamespace(__name__=name, **{k: crmcore.hookimpl(v) for k, v in hooks.items()})


# -- entity events ----------------------------------------------------------------------

def test_customer_events(crm_factory, recorder: Recorder) -> None:
    crm = crm_factory(extra_plugins=[recorder])
    customer = crm.customers.add(name="张伟", email="Zhang.Wei@Example.com")
    updated = crm.customers.update(customer.id, city="北京")
    deleted = crm.customers.delete(customer.id)  # archives: the record leaves the live set
    purged = crm.customers.delete(customer.id, purge=True)
    assert recorder.hooks() == ["on_customer_created", "on_customer_updated", "on_customer_deleted",
                                "on_customer_deleted"]
    created, = recorder.named("on_customer_created")
    assert created["customer"] == customer and created["customer"].id is not None
    assert created["customer"].email == "Zhang.Wei@example.com"  # normalised before the event
    assert isinstance(created["uow"], UnitOfWork) and created["uow"].now == FIXED_NOW
    changed, = recorder.named("on_customer_updated")
    assert changed["customer"] == updated and changed["previous"] == customer
    assert (changed["previous"].city, changed["customer"].city) == (None, "北京")
    archived, gone = recorder.named("on_customer_deleted")
    assert archived["customer"] == deleted and deleted.archived_at == FIXED_NOW
    assert attrs.evolve(deleted, archived_at=None) == updated  # archiving changes nothing else
    assert gone["customer"] == purged == deleted


def test_contact_and_interaction_events(crm_factory, recorder: Recorder) -> None:
    crm = crm_factory(extra_plugins=[recorder])
    customer = crm.customers.add(name="张伟")
    contact = crm.contacts.add(customer_id=customer.id, name="王芳")
    contact2 = crm.contacts.update(contact.id, title="经理")
    interaction = crm.interactions.add(customer_id=customer.id, contact_id=contact.id, kind="complaint",
                                       occurred_at="2026-06-29T10:00:00Z")
    resolved = crm.interactions.update(interaction.id, resolved_at="2026-06-30T10:00:00Z")
    crm.interactions.delete(interaction.id)
    crm.contacts.delete(contact.id)
    # A complaint makes its SLA task; resolving the complaint completes it (crmcore.application.tasks).
    assert recorder.hooks() == [
        "on_customer_created", "on_contact_created", "on_contact_updated", "on_interaction_created",
        "on_task_created", "on_interaction_updated", "on_task_updated", "on_task_completed",
        "on_interaction_deleted", "on_contact_deleted"]
    assert recorder.named("on_contact_created")[0]["contact"] == contact
    assert recorder.named("on_contact_updated")[0]["contact"] == contact2
    assert recorder.named("on_contact_updated")[0]["previous"] == contact
    assert recorder.named("on_interaction_created")[0]["interaction"] == interaction
    assert recorder.named("on_interaction_updated")[0]["interaction"] == resolved
    assert recorder.named("on_interaction_updated")[0]["previous"].resolved_at is None
    assert recorder.named("on_interaction_deleted")[0]["interaction"] == resolved
    assert recorder.named("on_contact_deleted")[0]["contact"] == contact2


def test_deal_events_and_stage_changes(crm_factory, recorder: Recorder) -> None:
    crm = crm_factory(extra_plugins=[recorder])
    customer = crm.customers.add(name="张伟")
    deal = crm.deals.add(customer_id=customer.id, title="年度合同", amount="12000", currency="CNY", stage="lead")
    retitled = crm.deals.update(deal.id, title="年度合同（续）")
    won = crm.deals.move(deal.id, "won")
    with pytest.raises(HasHistory):  # a won deal is history: kept, no event
        crm.deals.delete(deal.id, purge=True)
    spare = crm.deals.add(customer_id=customer.id, title="草稿", amount="1", currency="CNY", stage="lead")
    crm.deals.delete(spare.id, purge=True)
    assert recorder.hooks() == [  # winning makes the lead a customer (test_core_lifecycle.py)
        "on_customer_created", "on_deal_created", "on_deal_stage_changed", "on_deal_updated",
        "on_deal_updated", "on_customer_updated", "on_deal_stage_changed", "on_deal_created",
        "on_deal_stage_changed", "on_deal_deleted"]
    assert recorder.named("on_deal_deleted")[0]["deal"] == spare
    assert recorder.named("on_deal_created")[0]["deal"] == deal
    first, second, _ = recorder.named("on_deal_stage_changed")
    assert first["deal"] == deal and first["old"] is None
    assert first["new"] == Stage("lead", 1, 10)
    assert second["deal"] == won and won.stage == "won" and won.closed_at == FIXED_NOW and won.probability == 100
    assert second["old"] == Stage("lead", 1, 10)
    assert second["new"] == Stage("won", 5, 100, StageOutcome.WON)
    assert isinstance(first["transition_id"], int) and isinstance(second["transition_id"], int)
    assert first["transition_id"] != second["transition_id"]
    updates = recorder.named("on_deal_updated")
    assert updates[0]["deal"] == retitled and updates[0]["previous"] == deal
    assert updates[1]["deal"] == won and updates[1]["previous"] == retitled


def test_transition_id_is_the_stage_history_row(crm_factory) -> None:
    seen: list[tuple[str | None, str, int]] = []

    def on_deal_stage_changed(uow, deal, old, new, transition_id):
        history = uow.deals.stage_history(deal.id)
        assert history[-1]["id"] == transition_id
        assert (history[-1]["from_stage"], history[-1]["to_stage"]) == (old and old.name, new.name)
        seen.append((old and old.name, new.name, transition_id))

    crm = crm_factory(extra_plugins=[plugin("watcher", on_deal_stage_changed=on_deal_stage_changed)])
    customer = crm.customers.add(name="x")
    deal = crm.deals.add(customer_id=customer.id, title="t", amount="1", currency="CNY", stage="lead")
    crm.deals.move(deal.id, "proposal")
    crm.deals.update(deal.id, title="same stage: no stage event")
    crm.deals.move(deal.id, "lost", lost_reason="价格")
    assert [(o, n) for o, n, _ in seen] == [(None, "lead"), ("lead", "proposal"), ("proposal", "lost")]
    assert len({t for *_, t in seen}) == 3
    lost = crm.deals.get(deal.id)
    assert lost.lost_reason == "价格" and lost.closed_at == FIXED_NOW and lost.probability == 0


def test_custom_pipeline_stages_in_events(crm_factory, recorder: Recorder) -> None:
    crm = crm_factory(extra_plugins=[recorder], config={"pipelines": {"retail": {"stages": [
        {"name": "询价", "probability": 10}, {"name": "成交", "probability": 100, "outcome": "won"}]}}})
    customer = crm.customers.add(name="x")
    deal = crm.deals.add(customer_id=customer.id, title="t", amount="1", currency="CNY", stage="询价",
                         pipeline="retail")
    crm.deals.move(deal.id, "成交")
    new_stages = [c["new"] for c in recorder.named("on_deal_stage_changed")]
    assert new_stages == [Stage("询价", 1, 10), Stage("成交", 2, 100, StageOutcome.WON)]
    with pytest.raises(ValidationError) as err:
        crm.deals.move(deal.id, "won")
    assert err.value.issues[0][0] == "stage"


# -- handlers write in the same transaction -------------------------------------------------

def test_handler_writes_commit_with_the_change(crm_factory, recorder: Recorder) -> None:
    units: list[UnitOfWork] = []

    def on_customer_created(uow, customer):
        units.append(uow)
        uow.crm.interactions.add(customer_id=customer.id, kind="note", occurred_at=uow.now,
                                 subject="欢迎 👋", body=f"new customer {customer.name}")
        assert uow.customers.get(customer.id) == customer  # visible inside the transaction

    welcome = plugin("welcome", on_customer_created=on_customer_created)
    crm = crm_factory(extra_plugins=[welcome, recorder])
    customer = crm.customers.add(name="张伟")
    notes = crm.interactions.list({"customer_id": customer.id})
    assert [n.subject for n in notes] == ["欢迎 👋"]
    # the nested use case joined the same unit of work (one transaction)
    nested, = recorder.named("on_interaction_created")
    assert nested["uow"] is units[0] is recorder.named("on_customer_created")[0]["uow"]


def test_raising_handler_rolls_everything_back(crm_factory, recorder: Recorder) -> None:
    def on_customer_created(uow, customer):
        uow.crm.interactions.add(customer_id=customer.id, kind="note", occurred_at=uow.now)
        uow.crm.deals.add(customer_id=customer.id, title="t", amount="1", currency="CNY", stage="won")
        uow.after_commit(lambda: pytest.fail("after-commit callback ran after a rollback"))
        raise RuntimeError("boom")

    crm = crm_factory(extra_plugins=[recorder, plugin("breaker", on_customer_created=on_customer_created)])
    with pytest.raises(HookError) as err:
        crm.customers.add(name="张伟")
    assert (err.value.plugin, err.value.hook) == ("breaker", "on_customer_created")
    assert "'breaker'" in str(err.value) and "on_customer_created" in str(err.value) and "boom" in str(err.value)
    assert isinstance(err.value.error, RuntimeError)
    assert isinstance(err.value, crmcore.PluginError) and isinstance(err.value, crmcore.CRMError)
    assert crm.customers.count() == 0
    assert crm.interactions.count() == 0
    assert crm.deals.count() == 0
    with crm.unit(readonly=True) as uow:
        assert uow.conn.exec_driver_sql("SELECT COUNT(*) FROM deal_stage_history").scalar_one() == 0


def test_crm_usable_after_a_rollback(crm_factory) -> None:
    fail = [True]

    def on_customer_created(uow, customer):
        if fail[0]:
            raise ValueError("not today")

    crm = crm_factory(extra_plugins=[plugin("moody", on_customer_created=on_customer_created)])
    with pytest.raises(HookError, match="moody"):
        crm.customers.add(name="张伟", external_id="e-1")
    fail[0] = False
    assert crm.customers.add(name="张伟", external_id="e-1").id is not None
    assert crm.customers.count() == 1


def test_raising_stage_handler_keeps_the_old_stage(crm_factory) -> None:
    def on_deal_stage_changed(uow, deal, old, new):
        if new.outcome is StageOutcome.WON:
            raise RuntimeError("no wins on Fridays")

    crm = crm_factory(extra_plugins=[plugin("friday", on_deal_stage_changed=on_deal_stage_changed)])
    customer = crm.customers.add(name="x")
    deal = crm.deals.add(customer_id=customer.id, title="t", amount="1", currency="CNY", stage="lead")
    with pytest.raises(HookError) as err:
        crm.deals.move(deal.id, "won")
    assert (err.value.plugin, err.value.hook) == ("friday", "on_deal_stage_changed")
    assert crm.deals.get(deal.id) == deal
    with crm.unit(readonly=True) as uow:
        assert [r["to_stage"] for r in uow.deals.stage_history(deal.id)] == ["lead"]


def test_failure_in_a_nested_handler_names_that_plugin_and_rolls_back(crm_factory) -> None:
    def on_customer_created(uow, customer):
        uow.crm.interactions.add(customer_id=customer.id, kind="note", occurred_at=uow.now)

    def on_interaction_created(uow, interaction):
        raise LookupError("inner failure")

    crm = crm_factory(extra_plugins=[plugin("outer", on_customer_created=on_customer_created),
                                     plugin("inner", on_interaction_created=on_interaction_created)])
    with pytest.raises(HookError) as err:
        crm.customers.add(name="张伟")
    assert "'inner'" in str(err.value) and "on_interaction_created" in str(err.value)
    assert "inner failure" in str(err.value)
    assert crm.customers.count() == 0 and crm.interactions.count() == 0


def test_handler_error_inside_a_helper_still_names_the_plugin(crm_factory) -> None:
    def helper():
        return {}["missing"]

    def on_customer_created(uow, customer):
        helper()

    crm = crm_factory(extra_plugins=[plugin("helpful", on_customer_created=on_customer_created)])
    with pytest.raises(HookError) as err:
        crm.customers.add(name="x")
    assert err.value.plugin == "helpful" and isinstance(err.value.error, KeyError)


def test_class_instance_plugin_error_names_it(crm_factory) -> None:
    class AuditTrail:
        __name__ = "audit"

        @crmcore.hookimpl
        def on_deal_created(self, deal):
            raise RuntimeError(f"cannot audit {deal.title}")

    crm = crm_factory(extra_plugins=[AuditTrail()])
    customer = crm.customers.add(name="x")
    with pytest.raises(HookError) as err:
        crm.deals.add(customer_id=customer.id, title="大单", amount="1", currency="CNY", stage="lead")
    assert (err.value.plugin, err.value.hook) == ("audit", "on_deal_created")
    assert "大单" in str(err.value)
    assert crm.deals.count() == 0


def test_after_commit_runs_only_after_commit(crm_factory) -> None:
    log: list[str] = []

    def on_customer_created(uow, customer):
        uow.after_commit(lambda: log.append(f"committed {customer.name}"))
        log.append("in transaction")

    crm = crm_factory(extra_plugins=[plugin("notifier", on_customer_created=on_customer_created)])
    crm.customers.add(name="张伟")
    assert log == ["in transaction", "committed 张伟"]


def test_an_explicit_unit_groups_several_use_cases(crm_factory) -> None:
    crm = crm_factory()
    with pytest.raises(RuntimeError):
        with crm.unit():
            customer = crm.customers.add(name="张伟")
            crm.deals.add(customer_id=customer.id, title="t", amount="1", currency="CNY", stage="lead")
            raise RuntimeError("abort the whole unit")
    assert crm.customers.count() == 0 and crm.deals.count() == 0
    with crm.unit():
        customer = crm.customers.add(name="张伟")
        crm.deals.add(customer_id=customer.id, title="t", amount="1", currency="CNY", stage="lead")
    assert crm.customers.count() == 1 and crm.deals.count() == 1


# -- validate_* hooks ----------------------------------------------------------------------

def test_validate_hooks_block_with_their_messages(crm_factory) -> None:
    seen: list[tuple[str, object]] = []

    def validate_customer(uow, customer, previous):
        seen.append(("customer", previous))
        if customer.email and customer.email.endswith("@gmail.com"):
            return [("email", "must be a company address")]
        return None

    def validate_deal(deal, previous):
        if deal.amount > 1_000_000:
            return "deals over one million need a second signature"
        return None

    def validate_contact(contact):
        return [("title", "required for contacts")] if not contact.title else []

    def validate_interaction(interaction):
        return ("body", "a complaint needs a body") if interaction.kind.value == "complaint" and not interaction.body \
            else None

    rules = plugin("rules", validate_customer=validate_customer, validate_deal=validate_deal,
                   validate_contact=validate_contact, validate_interaction=validate_interaction)
    crm = crm_factory(extra_plugins=[rules])
    with pytest.raises(ValidationError) as err:
        crm.customers.add(name="张伟", email="zhang@gmail.com")
    assert err.value.issues == [("email", "must be a company address")]
    customer = crm.customers.add(name="张伟", email="zhang@example.com")
    assert seen == [("customer", None), ("customer", None)]
    with pytest.raises(ValidationError):
        crm.customers.update(customer.id, email="zhang@gmail.com")
    assert seen[-1] == ("customer", customer)
    assert crm.customers.get(customer.id).email == "zhang@example.com"

    with pytest.raises(ValidationError) as err:
        crm.deals.add(customer_id=customer.id, title="t", amount="2000000", currency="CNY", stage="lead")
    assert err.value.issues == [("*", "deals over one million need a second signature")]
    assert "second signature" in str(err.value)
    crm.deals.add(customer_id=customer.id, title="t", amount="20", currency="CNY", stage="lead")

    with pytest.raises(ValidationError) as err:
        crm.contacts.add(customer_id=customer.id, name="王芳")
    assert err.value.issues == [("title", "required for contacts")]
    crm.contacts.add(customer_id=customer.id, name="王芳", title="经理")

    with pytest.raises(ValidationError) as err:
        crm.interactions.add(customer_id=customer.id, kind="complaint", occurred_at=FIXED_NOW)
    assert err.value.issues == [("body", "a complaint needs a body")]
    crm.interactions.add(customer_id=customer.id, kind="complaint", occurred_at=FIXED_NOW, body="坏了")
    assert (crm.customers.count(), crm.deals.count(), crm.contacts.count(), crm.interactions.count()) == (1, 1, 1, 1)


def test_every_validate_hook_result_is_collected(crm_factory) -> None:
    crm = crm_factory(extra_plugins=[
        plugin("one", validate_customer=lambda customer: [("name", "too short")] if len(customer.name) < 5 else None),
        plugin("two", validate_customer=lambda customer: ["no test customers"] if "test" in customer.name else None),
        plugin("three", validate_customer=lambda customer: None),
    ])
    with pytest.raises(ValidationError) as err:
        crm.customers.add(name="abc")
    assert err.value.issues == [("name", "too short")]
    with pytest.raises(ValidationError) as err:
        crm.customers.add(name="test")
    assert sorted(err.value.issues) == [("*", "no test customers"), ("name", "too short")]
    with pytest.raises(ValidationError) as err:
        crm.customers.add(name="a test customer")
    assert err.value.issues == [("*", "no test customers")]
    crm.customers.add(name="张伟 Zhang")
    assert crm.customers.count() == 1


def test_validate_hook_sees_the_normalised_entity(crm_factory) -> None:
    seen: list[Customer] = []
    crm = crm_factory(config={"phone_region": "CN"},
                      extra_plugins=[plugin("peek", validate_customer=lambda customer: seen.append(customer))])
    crm.customers.add(name="张伟", phone="138 0013 8000", email="A@Example.COM")
    assert (seen[0].phone, seen[0].email) == ("+8613800138000", "A@example.com")


def test_raising_validate_hook_is_a_hook_error(crm_factory) -> None:
    def validate_deal(deal):
        raise ZeroDivisionError("bad rule")

    crm = crm_factory(extra_plugins=[plugin("buggy", validate_deal=validate_deal)])
    customer = crm.customers.add(name="x")
    with pytest.raises(HookError) as err:
        crm.deals.add(customer_id=customer.id, title="t", amount="1", currency="CNY", stage="lead")
    assert (err.value.plugin, err.value.hook) == ("buggy", "validate_deal")
    assert crm.deals.count() == 0


# -- authorize ------------------------------------------------------------------------------

def test_authorize_refuses_for_the_acting_user(crm_factory, recorder: Recorder) -> None:
    asked: list[tuple[object, str]] = []

    def authorize(actor, action, resource):
        asked.append((actor, action))
        if actor == "bob" and action in ("customer.create", "deal.move"):
            return False
        return None

    crm = crm_factory(extra_plugins=[recorder, plugin("acl", authorize=authorize)])
    with crm.acting_as("bob"):
        with pytest.raises(NotAuthorized) as err:
            crm.customers.add(name="张伟")
    assert (err.value.actor, err.value.action) == ("bob", "customer.create")
    assert "bob" in str(err.value) and "customer.create" in str(err.value)
    assert isinstance(err.value, crmcore.CRMError)
    assert crm.customers.count() == 0 and recorder.named("on_customer_created") == []

    with crm.acting_as("alice"):
        customer = crm.customers.add(name="张伟")
        deal = crm.deals.add(customer_id=customer.id, title="t", amount="1", currency="CNY", stage="lead")
    assert recorder.named("on_customer_created")[0]["uow"].actor == "alice"
    with crm.acting_as("bob"):
        crm.customers.update(customer.id, city="北京")  # only create and move are refused for bob
        with pytest.raises(NotAuthorized) as err:
            crm.deals.move(deal.id, "won")
        assert err.value.action == "deal.move"
    assert crm.deals.get(deal.id).stage == "lead"
    crm.deals.move(deal.id, "won")  # nobody named: allowed (every answer None)
    # Nobody named is the built-in "system" user, as the unit of work records it: the hook
    # hears the same actor the audit trail and stage history do (issue 15.3), never None.
    assert ("bob", "customer.update") in asked and ("system", "deal.move") in asked
    assert None not in {actor for actor, _ in asked}
    with crm.unit(readonly=True) as uow:
        assert [r["actor"] for r in uow.deals.stage_history(deal.id)] == ["alice", "system"]  # every unit has an actor


def test_authorize_actions_of_each_use_case(crm_factory) -> None:
    asked: list[tuple[object, str, object]] = []
    crm = crm_factory(extra_plugins=[plugin("spy", authorize=lambda actor, action, resource:
                                            asked.append((actor, action, resource)))])
    with crm.acting_as("carol"):
        customer = crm.customers.add(name="张伟")
        crm.customers.get(customer.id)
        crm.customers.list()
        crm.customers.update(customer.id, city="上海")
        deal = crm.deals.add(customer_id=customer.id, title="t", amount="1", currency="CNY", stage="lead")
        crm.deals.move(deal.id, "lost", lost_reason="price")  # a won deal would keep the customer
        crm.customers.delete(customer.id)
    actions = [a for _, a, _ in asked]
    assert actions[:4] == ["customer.create", "customer.read", "customer.list", "customer.update"]
    assert "deal.create" in actions and "deal.move" in actions and actions[-1] == "customer.delete"
    assert {actor for actor, _, _ in asked} == {"carol"}
    assert isinstance(asked[0][2], Customer) and asked[1][2] == customer.id
    assert any(isinstance(r, Deal) and a == "deal.move" for _, a, r in asked)


def test_authorize_any_refusal_refuses(crm_factory) -> None:
    crm = crm_factory(extra_plugins=[
        plugin("no_eve", authorize=lambda actor: False if actor == "eve" else None),
        plugin("allow_all", authorize=lambda: True),  # registered last, asked first: cannot overrule
    ])
    with crm.acting_as("admin"):
        crm.customers.add(name="x")
    with crm.acting_as("eve"), pytest.raises(NotAuthorized):
        crm.customers.add(name="y")
    assert crm.customers.count() == 1


def test_acting_as_is_scoped(crm_factory) -> None:
    actors: list[object] = []
    crm = crm_factory(extra_plugins=[plugin("who", on_customer_created=lambda uow: actors.append(uow.actor))])
    with crm.acting_as("bob"):
        crm.customers.add(name="a")
        with crm.acting_as("alice"):
            crm.customers.add(name="b")
        crm.customers.add(name="c")
    crm.customers.add(name="d")
    assert actors == ["bob", "alice", "bob", "system"]  # every unit of work has an actor
