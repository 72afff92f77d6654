"""Configuration mistakes surface at start-up (issue 14, point 6): a trigger naming
a template, channel, strategy or scheme that does not exist stops the CRM from
opening, with every bad reference listed (table and key), instead of making
every ``deal move ... won`` fail and roll back later."""

from __future__ import annotations

import pytest

from crmcore import ConfigError

from .campaign_fixtures import open_crm


def test_every_bad_reference_is_listed_at_start_up(crm_factory):
    with pytest.raises(ConfigError) as caught:
        open_crm(crm_factory, channel="pigeon", triggers={
            "deal_won": {"template": "thank-yuo"},
            "complaint": {"template": "thank-you", "channel": "fax"},
            "tier_upgraded": {"template": "thank-you", "scheme": "miles"},
            "segment_entered": [{"template": "thank-you", "strategy": "rfn", "segment": "vip"}],
        })
    message = str(caught.value)
    assert "[notify] channel: unknown channel 'pigeon'" in message
    assert "[notify.triggers.deal_won] template: no template 'thank-yuo'" in message
    assert "[notify.triggers.complaint] channel: unknown channel 'fax'" in message
    assert "[notify.triggers.tier_upgraded] scheme: unknown loyalty scheme 'miles'" in message
    assert "[notify.triggers.segment_entered][1] strategy: unknown segmentation strategy 'rfn'" in message
    assert len(message.splitlines()) == 6  # a headline, then one line per bad reference


def test_good_references_open(crm_factory):
    crm = open_crm(crm_factory, channel="mail", triggers={
        "deal_won": {"template": "thank-you"}, "tier_upgraded": {"template": "thank-you", "scheme": "stars"},
        "segment_entered": {"template": "thank-you", "strategy": "tags", "segment": "vip"}})
    assert crm.config.notify.triggers


def test_a_trigger_of_a_channel_from_a_disabled_plugin_is_an_error_but_unused_defaults_are_not(crm_factory):
    # No notify plugin and no triggers: the default [notify] channel (console) is not checked.
    crm_factory(plugins=[])
    with pytest.raises(ConfigError, match=r"\[notify.triggers.deal_won\] channel: unknown channel 'apprise'"):
        open_crm(crm_factory, triggers={"deal_won": {"template": "thank-you", "channel": "apprise"}})
