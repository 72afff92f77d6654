"""The contrib ``apprise`` channel, delivering to a loopback HTTP endpoint
through Apprise's ``json://`` service."""

from __future__ import annotations

import json

import pytest
from crmcore_apprise import AppriseChannel

import crmcore
from crmcore.testing import ChannelContract


def open_crm(crm_factory, urls, **more):
    return crm_factory(plugins=["notify", "apprise"], config={"channels": {"apprise": {"urls": urls, **more}}})


def json_url(server, path="/apprise"):
    return f"json://127.0.0.1:{server.port}{path}"


def test_sends_title_and_body_as_apprise_json(crm_factory, http_server):
    crm = open_crm(crm_factory, [json_url(http_server), json_url(http_server, "/second")], notify_type="success")
    mid = crm.notify.enqueue("apprise", subject="赢单：ACME", body="合同金额 ¥1,200,000")
    assert crm.notify.dispatch().sent == 1
    bodies = {r.path: r.json() for r in http_server.received()}
    assert set(bodies) == {"/apprise", "/second"}  # every configured URL
    for body in bodies.values():
        assert (body["title"], body["message"], body["type"]) == ("赢单：ACME", "合同金额 ¥1,200,000", "success")
    assert crm.notify.outbox(message_id=mid)[0]["status"] == "sent"


def test_recipient_url_overrides_the_configured_ones(crm_factory, http_server):
    crm = open_crm(crm_factory, [json_url(http_server)])
    crm.notify.enqueue("apprise", recipient=json_url(http_server, "/only-me"), subject="s", body="b")
    assert crm.notify.dispatch().sent == 1
    assert [r.path for r in http_server.received()] == ["/only-me"]


def test_failure_is_retried_with_apprise_s_reason(crm_factory, http_server):
    http_server.reply("/apprise", 500, "boom")
    crm = open_crm(crm_factory, [json_url(http_server)])
    mid = crm.notify.enqueue("apprise", subject="s", body="b")
    assert crm.notify.dispatch().retried == 1
    [row] = crm.notify.outbox(message_id=mid)
    assert row["status"] == "pending" and "apprise: notification failed" in row["last_error"]
    assert "500" in row["last_error"]


def test_url_apprise_does_not_understand_is_dead(crm_factory, http_server):
    crm = open_crm(crm_factory, ["nosuchservice://x/y"])
    mid = crm.notify.enqueue("apprise", subject="s", body="b")
    assert crm.notify.dispatch().dead == 1
    assert "not a URL Apprise understands" in crm.notify.outbox(message_id=mid)[0]["last_error"]


def test_not_a_url_in_config(crm_factory):
    with pytest.raises(crmcore.ConfigError, match=r"\[channels.apprise\].*urls: 'slack' is not an Apprise URL"):
        open_crm(crm_factory, ["slack"])


def test_registered_by_its_own_distribution(crm_factory, http_server):
    crm = open_crm(crm_factory, [json_url(http_server)])
    info = {p.name: p for p in crm.plugin_info()}["apprise"]
    assert info.distribution == "crmcore-apprise"
    assert info.components == {"channels": ["apprise"]}


class TestAppriseContract(ChannelContract):
    @pytest.fixture
    def component(self):
        return AppriseChannel()

    @pytest.fixture
    def channel_options(self, http_server):
        return {"urls": [json_url(http_server)]}

    @pytest.fixture
    def delivered(self, http_server):
        return lambda: [r.body for r in http_server.received()]

    @pytest.fixture
    def provoke_failure(self, http_server):
        def provoke(kind):
            if kind == "transient":
                http_server.reply("/apprise", 503)
                return None
            return {"message": {"recipient": "nosuchservice://x"}}  # a URL Apprise cannot use
        return provoke

    def test_delivers_through_the_dispatcher(self, crm_factory, http_server, delivered):
        crm = open_crm(crm_factory, [json_url(http_server)])
        crm.notify.enqueue("apprise", body="contract")
        crm.notify.dispatch()
        assert [json.loads(body)["message"] for body in delivered()] == ["contract"]
