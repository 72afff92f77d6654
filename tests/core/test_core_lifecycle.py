"""A lead or prospect becomes a ``customer`` (lifecycle stage) when one of their deals is
won: on a single deal added won or moved to a won stage, and on bulk adds and imports;
``customer_on_won_deal = false`` in crm.toml turns it off.  Runs on every database."""

from __future__ import annotations

from decimal import Decimal

import pytest

from crmcore import Config, ConfigError, LifecycleStage
from crmcore.testing import FIXED_NOW

from .conftest import Recorder

PIPELINES = {
    "default": {"stages": [{"name": "proposal"}, {"name": "negotiation"}, {"name": "won", "outcome": "won"},
                           {"name": "lost", "outcome": "lost"}]},
    "b2b": {"stages": [{"name": "intro"}, {"name": "signed", "outcome": "won"}, {"name": "dropped", "outcome": "lost"}]},
}


def stages(crm, ids) -> list[str]:
    return [crm.customers.get(i).stage.value for i in ids]


def test_a_won_deal_makes_a_lead_or_prospect_a_customer(crm_factory, recorder: Recorder) -> None:
    crm = crm_factory(extra_plugins=[recorder], config={"pipelines": PIPELINES})
    lead, prospect, former, loser = (crm.customers.add(name=n, stage=s).id for n, s in (
        ("Lead", "lead"), ("Prospect", "prospect"), ("Former", "former"), ("Loser", "lead")))
    deal = crm.deals.add(customer_id=lead, title="d", amount=Decimal("10"), currency="USD", stage="proposal")
    assert stages(crm, [lead]) == ["lead"]  # an open deal is no purchase
    recorder.calls.clear()
    crm.deals.move(deal.id, "won")
    assert stages(crm, [lead]) == ["customer"]
    [event] = recorder.named("on_customer_updated")
    assert (event["previous"].stage, event["customer"].stage) == (LifecycleStage.LEAD, LifecycleStage.CUSTOMER)
    assert event["customer"].updated_at == FIXED_NOW
    # Handlers of the stage change see the customer already promoted.
    assert recorder.hooks() == ["on_deal_updated", "on_customer_updated", "on_deal_stage_changed"]

    crm.deals.add(customer_id=prospect, title="d", amount=Decimal("10"), currency="USD", stage="signed",
                  pipeline="b2b")  # any pipeline's won stage
    crm.deals.add(customer_id=former, title="d", amount=Decimal("10"), currency="USD", stage="won")
    crm.deals.add(customer_id=loser, title="d", amount=Decimal("10"), currency="USD", stage="lost")
    assert stages(crm, [prospect, former, loser]) == ["customer", "former", "lead"]

    recorder.calls.clear()
    crm.deals.add(customer_id=lead, title="again", amount=Decimal("5"), currency="USD", stage="won")
    assert recorder.named("on_customer_updated") == []  # already a customer: nothing to change


def test_bulk_adds_promote_in_one_statement(crm_factory) -> None:
    crm = crm_factory(config={"pipelines": PIPELINES})
    ids = [crm.customers.add(name=f"C{i}", stage=s).id
           for i, s in enumerate(["lead", "prospect", "former", "lead", "customer", "prospect"])]
    rows = [(ids[0], "default", "won"), (ids[0], "default", "won"), (ids[1], "b2b", "signed"),
            (ids[2], "default", "won"), (ids[3], "default", "negotiation"), (ids[4], "default", "won"),
            (ids[5], "b2b", "dropped")]
    crm.deals.add_many({"customer_id": c, "title": "t", "amount": "1", "currency": "USD", "pipeline": p,
                        "stage": s} for c, p, s in rows)
    assert stages(crm, ids) == ["customer", "customer", "former", "lead", "customer", "prospect"]
    assert crm.customers.get(ids[0]).updated_at == FIXED_NOW


def test_imported_won_deals_promote_too(crm_factory, tmp_path) -> None:
    from crmcore.io import import_file

    crm = crm_factory()
    ids = [crm.customers.add(name=f"C{i}", external_id=f"c{i}").id for i in range(3)]
    file = tmp_path / "deals.csv"
    file.write_text("customer,title,amount,currency,stage\nc0,a,10,USD,won\nc1,b,10,USD,lost\n"
                    "c2,c,10,USD,proposal\n", encoding="utf-8")
    import_file(crm, "deals", file)
    assert stages(crm, ids) == ["customer", "lead", "lead"]


def test_turned_off_in_the_configuration(crm_factory) -> None:
    crm = crm_factory(config={"customer_on_won_deal": False})
    lead = crm.customers.add(name="Stays a lead").id
    crm.deals.add(customer_id=lead, title="d", amount=Decimal("10"), currency="USD", stage="won")
    crm.deals.add_many([{"customer_id": lead, "title": "t", "amount": "1", "currency": "USD", "stage": "won"}])
    assert stages(crm, [lead]) == ["lead"]


def test_the_setting_must_be_true_or_false() -> None:
    assert Config.from_mapping({}).customer_on_won_deal is True
    with pytest.raises(ConfigError, match="customer_on_won_deal must be true or false, got 'no'"):
        Config.from_mapping({"customer_on_won_deal": "no"})
