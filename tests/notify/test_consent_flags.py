"""Consent lives in one place (issue 13, point 2): ``consent_marketing`` is the
standing marketing decision for every channel.

Setting the flag records a decision with its source (api, cli, import) in the
same transaction; recording a decision for every channel sets the flag, so
``customer list --where consent_marketing=true`` and everything else reading
the flag agree with campaigns.  A decision for one channel leaves the flag
alone and is honoured by the one consent rule.  On every database the
fixtures provide.
"""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from crmcore import HasHistory
from crmcore.cli import cli
from crmcore.io import import_file
from crmcore.notify import consent

from .campaign_fixtures import RecordingChannel, open_crm, outbox_rows


def decisions(crm, customer_id: int) -> list[tuple[str, str, bool, str]]:
    return [(d.channel, d.purpose, d.granted, d.source) for d in crm.messages.consents(customer_id)]


@pytest.fixture
def run(crm_factory, crm_db_url, tmp_path, monkeypatch):
    crm = open_crm(crm_factory, recorder=RecordingChannel("mail"))
    monkeypatch.chdir(tmp_path)
    for var in ("CRM_PLUGINS", "CRM_DATABASE_URL", "CRM_PLUGINS_DIR", "CRM_PLUGINS_BLOCK"):
        monkeypatch.delenv(var, raising=False)
    (tmp_path / "crm.toml").write_text('[notify]\nunsubscribe_secret = "test-secret"\n', encoding="utf-8")
    runner = CliRunner()

    def invoke(*args: str):
        result = runner.invoke(cli, ["--db", crm_db_url, "--plugins", "notify", *args])
        assert result.exit_code == 0, result.output
        return result.output
    invoke.crm = crm
    return invoke


def test_setting_the_flag_records_a_decision(crm_factory):
    crm = open_crm(crm_factory)
    quiet = crm.customers.add(name="Quiet")
    assert decisions(crm, quiet.id) == []  # no flag, no decision: the same thing
    keen = crm.customers.add(name="Keen", consent_marketing=True)
    assert decisions(crm, keen.id) == [("*", "marketing", True, "api")]
    crm.customers.update(keen.id, consent_marketing=False)
    assert decisions(crm, keen.id) == [("*", "marketing", False, "api")]
    crm.customers.update(keen.id, city="Hangzhou")  # the flag untouched: nothing recorded
    assert decisions(crm, keen.id) == [("*", "marketing", False, "api")]
    crm.customers.add_many([{"name": "Bulk yes", "consent_marketing": True}, {"name": "Bulk no"}])
    bulk = {c.name: c.id for c in crm.customers.list({"name__contains": "Bulk"})}
    assert decisions(crm, bulk["Bulk yes"]) == [("*", "marketing", True, "api")]
    assert decisions(crm, bulk["Bulk no"]) == []


def test_recording_a_decision_sets_the_flag_and_per_channel_ones_do_not(crm_factory):
    crm = open_crm(crm_factory, recorder=RecordingChannel("mail"))
    ada = crm.customers.add(name="Ada", email="ada@example.com")
    crm.messages.set_consent(ada.id, True, source="web form")
    assert crm.customers.get(ada.id).consent_marketing is True
    crm.messages.set_consent(ada.id, False, channel="mail", source="phone call")
    assert crm.customers.get(ada.id).consent_marketing is True  # one channel: the flag stays
    with crm.unit(readonly=True) as uow:  # ... and the rule honours the channel's decision
        assert consent.refusal(uow, ada.id, "mail", "marketing") == "withdrew marketing consent for mail"
    crm.messages.set_consent(ada.id, False, source="letter")
    assert crm.customers.get(ada.id).consent_marketing is False


def test_a_fresh_customer_without_consent_can_still_be_purged(crm_factory):
    crm = open_crm(crm_factory)
    fresh = crm.customers.add(name="Typo")
    crm.customers.delete(fresh.id, purge=True)
    assert crm.customers.find(id=fresh.id) is None
    keen = crm.customers.add(name="Keen", consent_marketing=True)
    with pytest.raises(HasHistory, match="1 consent decision"):  # a grant is evidence worth keeping
        crm.customers.delete(keen.id, purge=True)


def test_enqueue_applies_the_same_rule_as_campaigns(crm_factory):
    """A single message and a campaign refuse alike: the recorded decision decides, not the flag alone."""
    crm = open_crm(crm_factory, recorder=RecordingChannel("mail"))
    ada = crm.customers.add(name="Ada", email="ada@example.com", consent_marketing=True)
    crm.messages.set_consent(ada.id, False, channel="mail", source="link")
    with crm.unit() as uow:
        uow.outbox.enqueue("mail", customer_id=ada.id, subject="s", body="b", purpose="marketing", key="one")
    [row] = outbox_rows(crm, idempotency_key="one")
    assert (row["status"], row["last_error"]) == ("suppressed", "withdrew marketing consent for mail")


def test_list_where_flag_after_unsubscribe_and_sources(run, tmp_path):
    crm = run.crm
    run("customer", "add", "--name", "Ada", "--email", "ada@example.com", "--consent-marketing")
    run("customer", "add", "--name", "Bob", "--email", "bob@example.com", "--consent-marketing")
    ada = crm.customers.find(email="ada@example.com")
    assert decisions(crm, ada.id) == [("*", "marketing", True, "cli")]

    def consenting() -> list[str]:
        return [r["name"] for r in json.loads(run("--json", "customer", "list", "--where", "consent_marketing=true"))]
    assert consenting() == ["Ada", "Bob"]
    token = consent.make_token("test-secret", ada.id)
    run("notify", "unsubscribe", token)  # the link from a marketing message
    assert consenting() == ["Bob"]  # the flag follows the decision
    assert decisions(crm, ada.id) == [("*", "marketing", False, "cli-token")]
    run("customer", "update", str(ada.id), "--consent-marketing")
    assert consenting() == ["Ada", "Bob"] and decisions(crm, ada.id) == [("*", "marketing", True, "cli")]

    (tmp_path / "people.csv").write_text("external_id,name,consent_marketing\nc1,Cy,true\nd1,Di,false\n",
                                         encoding="utf-8")
    report = import_file(crm, "customers", tmp_path / "people.csv")
    assert report.inserted == 2
    cy, di = crm.customers.find(external_id="c1"), crm.customers.find(external_id="d1")
    assert decisions(crm, cy.id) == [("*", "marketing", True, "import")] and decisions(crm, di.id) == []
    (tmp_path / "update.csv").write_text("external_id,consent_marketing\nc1,false\n", encoding="utf-8")
    assert import_file(crm, "customers", tmp_path / "update.csv").updated == 1
    assert decisions(crm, cy.id) == [("*", "marketing", False, "import")]
    assert crm.customers.get(cy.id).consent_marketing is False
