"""Triggers: every configured event queues its template in the event's own
transaction (a rollback queues nothing), idempotently; the birthday run;
and the whole path to a real SMTP server (aiosmtpd)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from click.testing import CliRunner

import crmcore
from crmcore import ConfigError, HookError
from crmcore.cli import cli

from .campaign_fixtures import Clock, open_crm, outbox_rows
from .conftest import smtp_options

T0 = datetime(2026, 6, 30, 9, 0, tzinfo=UTC)


def triggers(**table) -> dict:
    return {"triggers": table}


def test_deal_won_queues_a_thank_you_once_per_deal(crm_factory):
    crm = open_crm(crm_factory, **triggers(deal_won={"template": "thank-you"}))
    customer = crm.customers.add(name="张伟", email="zw@example.com", country="CN")
    deal = crm.deals.add(customer_id=customer.id, title="年度订阅", amount=Decimal(12000), currency="CNY",
                         stage="proposal")
    assert outbox_rows(crm) == []  # an open stage: nothing
    crm.deals.move(deal.id, "won")
    [row] = outbox_rows(crm)
    assert (row["idempotency_key"], row["purpose"], row["recipient"]) == (
        f"trigger:deal_won:thank-you:{deal.id}", "transactional", "zw@example.com")
    assert row["subject"] == "张伟，感谢您的订购" and "“年度订阅”（¥12,000.00）" in row["body"]
    assert "您的积分余额现为 12000 分" in row["body"]  # the points were earned before the trigger ran
    crm.deals.move(deal.id, "lost")
    crm.deals.move(deal.id, "won")  # won again: the same deal is not thanked twice
    assert len(outbox_rows(crm)) == 1
    won_at_once = crm.deals.add(customer_id=customer.id, title="Add-on", amount=Decimal(10), currency="CNY",
                                stage="won")
    assert outbox_rows(crm)[-1]["idempotency_key"] == f"trigger:deal_won:thank-you:{won_at_once.id}"


class Refuser:
    """A plugin whose handler fails after the trigger queued its message."""

    __name__ = "refuser"

    @crmcore.hookimpl(trylast=True)
    def on_deal_stage_changed(self, uow, deal, old, new, transition_id):
        if new is not None and new.outcome is crmcore.StageOutcome.WON:
            raise RuntimeError("credit check failed")


def test_a_rolled_back_use_case_queues_nothing(crm_factory):
    from .campaign_fixtures import (
        Components,
        RecordingChannel,
        TagSegmenter,
        TieredScheme,
        notify_config,
    )

    crm = crm_factory(plugins=["notify"], extra_plugins=[
        Components(channels=(RecordingChannel(),), segmenters=(TagSegmenter(),), schemes=(TieredScheme(),)),
        Refuser()], config=notify_config(**triggers(deal_won={"template": "thank-you"})))
    customer = crm.customers.add(name="Ada", email="ada@example.com")
    deal = crm.deals.add(customer_id=customer.id, title="Plan", amount=Decimal(5), currency="USD", stage="lead")
    with pytest.raises(HookError, match="credit check failed"):
        crm.deals.move(deal.id, "won")
    assert outbox_rows(crm) == []
    assert crm.deals.get(deal.id).stage == "lead"


def test_a_tier_job_congratulates_its_moves_up_in_one_call(crm_factory):
    # The tiers scheme's job moves many members at once: the batch hook queues each move up.
    def opened(silver, gold):
        levels = [{"name": "Silver", "threshold": silver}, {"name": "Gold", "threshold": gold}]
        return open_crm(crm_factory, plugins=("notify", "loyalty"),
                        config={"loyalty": {"tiers": {"levels": levels, "grace_days": 0}}},
                        **triggers(tier_upgraded={"template": "tier-upgrade", "scheme": "tiers"}))

    def keys(crm):
        return [r["idempotency_key"].rsplit(":", 2)[1:] for r in outbox_rows(crm) if ":tiers:" in r["idempotency_key"]]

    crm = opened("1000", "5000")
    ada, bob = (crm.customers.add(name=n, email=f"{n.lower()}@example.com", consent_marketing=True)
                for n in ("Ada", "Bob"))
    crm.deals.add(customer_id=ada.id, title="A", amount=Decimal(1500), currency="USD", stage="won")
    crm.deals.add(customer_id=bob.id, title="B", amount=Decimal(600), currency="USD", stage="won")
    assert keys(crm) == [[str(ada.id), "Silver"]]
    # Lower thresholds: the job moves Ada up to Gold and Bob up to Silver, in one batch.
    crm = opened("500", "1400")
    assert crm.loyalty.run(scheme="tiers") == {"tiers": 2}
    assert keys(crm) == [[str(ada.id), "Silver"], [str(ada.id), "Gold"], [str(bob.id), "Silver"]]
    # Higher ones: both move down, and nothing is queued.
    crm = opened("5000", "9000")
    assert crm.loyalty.run(scheme="tiers") == {"tiers": 2}
    assert len(keys(crm)) == 3


def test_tier_upgrade_congratulates_only_moves_up(crm_factory):
    crm = open_crm(crm_factory, **triggers(tier_upgraded={"template": "tier-upgrade", "tiers": ["silver", "gold"]}))
    customer = crm.customers.add(name="Ada", email="ada@example.com", consent_marketing=True)
    crm.deals.add(customer_id=customer.id, title="A", amount=Decimal(150), currency="USD", stage="won")
    crm.deals.add(customer_id=customer.id, title="B", amount=Decimal(2000), currency="USD", stage="won")
    crm.loyalty.redeem(customer.id, 1500, "stars")  # gold -> silver: a downgrade, no mail
    rows = outbox_rows(crm)
    assert [r["idempotency_key"] for r in rows] == [
        f"trigger:tier_upgraded:tier-upgrade:stars:{customer.id}:silver",
        f"trigger:tier_upgraded:tier-upgrade:stars:{customer.id}:gold"]
    assert rows[1]["subject"] == "Congratulations, Ada: you are now gold"
    assert "moved up to the gold tier (from silver)" in rows[1]["body"] and "Your balance: 2150 points." in rows[1]["body"]
    assert rows[1]["purpose"] == "marketing"
    no_consent = crm.customers.add(name="Bob", email="bob@example.com")  # marketing without consent: skipped
    crm.deals.add(customer_id=no_consent.id, title="C", amount=Decimal(150), currency="USD", stage="won")
    assert len(outbox_rows(crm)) == 2


def test_entering_a_segment_queues_win_back_once_per_entry(crm_factory):
    crm = open_crm(crm_factory, **triggers(segment_entered=[
        {"strategy": "tags", "segment": "churn", "template": "win-back"}]))
    a = crm.customers.add(name="A", email="a@example.com", consent_marketing=True, tags=["churn"])
    crm.customers.add(name="B", email="b@example.com", consent_marketing=True, tags=["vip"])
    c = crm.customers.add(name="C", email="c@example.com", consent_marketing=True, tags=["vip"])
    first = crm.segments.run("tags")
    assert [(r["customer_id"], r["idempotency_key"]) for r in outbox_rows(crm)] == [
        (a.id, f"trigger:segment_entered:win-back:run{first.id}:{a.id}")]
    crm.segments.run("tags")  # nobody entered: nothing
    crm.customers.update(c.id, tags=["churn"])
    crm.segments.run("tags")
    assert [r["customer_id"] for r in outbox_rows(crm)] == [a.id, c.id]
    assert outbox_rows(crm)[-1]["subject"] == "We miss you, C"


def test_birthdays_run_daily_idempotent_per_year_with_29_february(crm_factory):
    crm = open_crm(crm_factory, config={"timezone": "Asia/Shanghai"},
                   **triggers(birthday={"template": "birthday", "purpose": "transactional"}))
    june = crm.customers.add(name="June", email="june@example.com", birthday="1990-06-30")
    leap = crm.customers.add(name="Leap", email="leap@example.com", birthday="1992-02-29")
    july = crm.customers.add(name="July", email="july@example.com", birthday="1985-07-01")
    crm.customers.add(name="Nobody", email="n@example.com")
    assert crm.messages.run_scheduled("2026-06-30T08:00:00+00:00") == 1  # 16:00 on 30 June in Shanghai
    assert crm.messages.run_scheduled("2026-06-30T09:00:00+00:00") == 0  # ran twice: nothing new
    assert crm.messages.run_scheduled("2026-06-30T20:00:00+00:00") == 1  # already 1 July in Shanghai
    assert crm.messages.run_scheduled("2027-02-28") == 1  # no 29 February in 2027
    assert crm.messages.run_scheduled("2028-02-28") == 0  # 2028 has one
    assert crm.messages.run_scheduled("2028-02-29") == 1
    keys = [r["idempotency_key"] for r in outbox_rows(crm)]
    assert keys == [f"trigger:birthday:birthday:{june.id}:2026", f"trigger:birthday:birthday:{july.id}:2026",
                    f"trigger:birthday:birthday:{leap.id}:2027", f"trigger:birthday:birthday:{leap.id}:2028"]
    assert outbox_rows(crm)[0]["subject"] == "Happy birthday, June!"


def test_complaint_is_acknowledged_with_the_promised_time(crm_factory):
    crm = open_crm(crm_factory, **triggers(complaint={"template": "complaint-ack", "response_hours": 48}))
    customer = crm.customers.add(name="Ada", email="ada@example.com")
    crm.interactions.add(customer_id=customer.id, kind="call", occurred_at=T0, subject="hello")
    complaint = crm.interactions.add(customer_id=customer.id, kind="complaint", occurred_at=T0,
                                     direction="inbound", subject="Late delivery")
    [row] = outbox_rows(crm)
    assert row["idempotency_key"] == f"trigger:complaint:complaint-ack:{complaint.id}"
    assert row["subject"] == "We have received your complaint: Late delivery"
    assert "We will respond by Jul 2, 2026, 9:00:00\u202fAM." in row["body"]
    assert crm.interactions.get(complaint.id).follow_up_due == T0 + timedelta(hours=48)


def test_trigger_configuration_errors_name_the_key():
    from crmcore.config import Config

    with pytest.raises(ConfigError, match=r"\[notify.triggers.deal_won\] unknown key\(s\): templat"):
        Config.from_mapping({"notify": {"triggers": {"deal_won": {"templat": "thank-you"}}}})
    with pytest.raises(ConfigError, match=r"unknown event 'deal_lost'"):
        Config.from_mapping({"notify": {"triggers": {"deal_lost": {"template": "x"}}}})
    with pytest.raises(ConfigError, match=r"segment_entered\]\[1\] needs strategy and segment"):
        Config.from_mapping({"notify": {"triggers": {"segment_entered": [{"template": "win-back"}]}}})
    with pytest.raises(ConfigError, match=r"\[notify.consent\] sms: must be opt-in or opt-out"):
        Config.from_mapping({"notify": {"consent": {"sms": "maybe"}}})
    with pytest.raises(ConfigError, match=r"\[notify\] unknown key\(s\): template_dir"):
        Config.from_mapping({"notify": {"template_dir": "x"}})


def test_cli_run_scheduled(crm_factory, crm_db_url, tmp_path, monkeypatch):
    crm = open_crm(crm_factory)
    crm.customers.add(name="June", email="june@example.com", birthday="1990-06-30", consent_marketing=True)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "crm.toml").write_text('[notify]\nunsubscribe_secret = "s"\nchannel = "console"\n'
                                       '[notify.triggers.birthday]\ntemplate = "birthday"\n', encoding="utf-8")
    runner = CliRunner()
    base = ["--db", crm_db_url, "--plugins", "notify", "--json"]
    out = runner.invoke(cli, [*base, "notify", "run-scheduled", "--as-of", "2026-06-30"])
    assert out.exit_code == 0, out.output
    assert json.loads(out.output) == {"enqueued": 1}
    out = runner.invoke(cli, [*base, "--as-of", "2026-06-30", "notify", "run-scheduled"])
    assert json.loads(out.output) == {"enqueued": 0}


# -- all the way to a real SMTP server ---------------------------------------------------------

def test_trigger_and_campaign_mail_reach_a_real_smtp_server(crm_factory, smtp_server):
    clock = Clock(T0)
    crm = open_crm(crm_factory, clock=clock, config={"channels": {"smtp": smtp_options(smtp_server)}},
                   channel="smtp", **triggers(deal_won={"template": "thank-you"}))
    zh = crm.customers.add(name="张伟", email="zw@example.com", country="CN", tags=["vip"], consent_marketing=True)
    en = crm.customers.add(name="Ada", email="ada@example.com", tags=["vip"], consent_marketing=True)
    crm.customers.add(name="No", email="no@example.com", tags=["vip"])  # no marketing consent
    crm.deals.add(customer_id=zh.id, title="年度订阅", amount=Decimal(12000), currency="CNY", stage="won")
    crm.segments.run("tags")
    assert crm.campaigns.run("win-back", segment="vip").enqueued == 2
    crm.messages.set_consent(en.id, False, channel="smtp", source="link")  # withdrawn after queueing
    result = crm.notify.dispatch()
    assert (result.sent, result.suppressed) == (2, 1), [(r["status"], r["last_error"]) for r in outbox_rows(crm)]
    mails = {str(m["Subject"]): m for m in smtp_server.messages}
    assert set(mails) == {"张伟，感谢您的订购", "张伟，好久不见"}
    thanks = mails["张伟，感谢您的订购"]
    assert thanks["To"].addresses[0].display_name == "张伟" and "List-Unsubscribe" not in thanks
    assert "“年度订阅”" in thanks.get_body(("html",)).get_content()
    win_back = mails["张伟，好久不见"]
    unsubscribe = str(win_back["List-Unsubscribe"])
    assert unsubscribe.startswith("<https://crm.example/u?t=")
    assert unsubscribe.strip("<>") in win_back.get_body(("plain",)).get_content()


class Nudges:
    """A plugin doing its own daily work in ``on_scheduled``."""

    __name__ = "nudges"

    def __init__(self):
        self.days = []

    @crmcore.hookimpl
    def on_scheduled(self, uow, as_of):
        self.days.append(as_of)
        for lead in uow.customers.list({"stage": "lead"}):
            uow.outbox.enqueue("console", customer_id=lead.id, subject="Still interested?",
                               key=f"nudge:{lead.id}:{as_of:%Y-%m}")


def test_on_scheduled_runs_in_one_unit_with_as_of(crm_factory):
    nudges = Nudges()
    crm = crm_factory(plugins=["notify"], extra_plugins=[nudges])
    crm.customers.add(name="Lead", stage="lead")
    crm.customers.add(name="Paying", stage="customer")
    assert crm.messages.run_scheduled("2026-07-01") == 1
    assert crm.messages.run_scheduled("2026-07-02") == 0  # same month: the key repeats
    assert [d.date().isoformat() for d in nudges.days] == ["2026-07-01", "2026-07-02"]
