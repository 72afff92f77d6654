"""Templates: built-ins in en and zh-CN, locale choice, strict variables, the
sandbox, autoescaping, overrides, and `crm notify preview`."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path

import pytest
from click.testing import CliRunner

import crmcore
from crmcore.cli import cli
from crmcore.notify.templates import TemplateCatalog, TemplateError

from .campaign_fixtures import Components, RecordingChannel, open_crm, outbox_rows


def write(root: Path, kind: str, files: dict[str, str]) -> Path:
    (root / kind).mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (root / kind / name).write_text(text, encoding="utf-8")
    return root


@pytest.fixture
def crm(crm_factory):
    return open_crm(crm_factory)


def test_builtin_thank_you_in_both_locales(crm):
    zh = crm.customers.add(name="张伟", email="zw@example.com", country="CN")
    en = crm.customers.add(name="Ada Lovelace", email="ada@example.com", country="GB")
    deal_zh = crm.deals.add(customer_id=zh.id, title="年度订阅", amount=Decimal(12000), currency="CNY", stage="won")
    deal_en = crm.deals.add(customer_id=en.id, title="Support plan", amount=Decimal("1234.5"), currency="USD",
                            stage="won")

    chinese = crm.messages.preview("thank-you", zh.id, deal_id=deal_zh.id)
    assert chinese.locale == "zh-CN"  # from the country, through [notify.locales]
    assert chinese.subject == "张伟，感谢您的订购"
    assert "感谢您订购“年度订阅”（¥12,000.00）。" in chinese.text
    assert "您的积分余额现为 12000 分。" in chinese.text  # the stars scheme earned 1 point per unit
    assert "<strong>“年度订阅”</strong>" in chinese.html

    english = crm.messages.preview("thank-you", en.id, deal_id=deal_en.id)
    assert english.locale == "en"  # GB is not mapped: the default locale
    assert english.subject == "Thank you for your order, Ada Lovelace"
    assert 'thank you for "Support plan" ($1,234.50).' in english.text
    assert "Your stars balance is now 1234 points." in english.text


def test_every_builtin_exists_in_en_and_zh_cn(crm):
    catalog = crm.messages.catalog
    assert catalog.kinds() == ["birthday", "complaint-ack", "thank-you", "tier-upgrade", "win-back"]
    for kind in catalog.kinds():
        assert catalog.locales(kind) == ["en", "zh-CN"]


def test_locale_from_custom_field_then_country_then_default(crm):
    field = crm.customers.add(name="Li", country="CN", attributes={"locale": "en"})
    country = crm.customers.add(name="王芳", country="CN")
    nothing = crm.customers.add(name="Bo")
    assert crm.messages.preview("win-back", field.id).locale == "en"
    assert crm.messages.preview("win-back", country.id).locale == "zh-CN"
    assert crm.messages.preview("win-back", nothing.id).locale == "en"
    # Asked for: zh-TW falls back to the default (no zh), an explicit locale wins.
    assert crm.messages.preview("win-back", nothing.id, locale="zh-TW").locale == "en"
    assert crm.messages.preview("win-back", nothing.id, locale="zh-CN").subject == "Bo，好久不见"


def test_unknown_variable_names_file_and_line(crm_factory, tmp_path):
    write(tmp_path, "promo", {"subject.en.txt": "Hello {{ customer.name }}",
                              "body.en.txt": "Dear {{ customer.name }},\n\nyour code:\n{{ coupon_code }}\n"})
    crm = open_crm(crm_factory, templates_dir=str(tmp_path))
    customer = crm.customers.add(name="Ada")
    with pytest.raises(TemplateError) as caught:
        crm.messages.preview("promo", customer.id)
    error = caught.value
    assert error.file == str(tmp_path / "promo" / "body.en.txt") and error.line == 4
    assert "'coupon_code' is undefined" in str(error) and "line 4" in str(error)


def test_syntax_error_names_file_and_line_at_preview_and_at_enqueue(crm_factory, tmp_path):
    write(tmp_path, "broken", {"subject.en.txt": "Hi", "body.en.txt": "line one\nline two\n{% if %}\n"})
    crm = open_crm(crm_factory, templates_dir=str(tmp_path))
    customer = crm.customers.add(name="Ada", email="ada@example.com", tags=["vip"])
    with pytest.raises(TemplateError, match=r"broken/body.en.txt, line 3: syntax error"):
        crm.messages.preview("broken", customer.id)
    crm.segments.run("tags")
    with pytest.raises(TemplateError, match="line 3"):
        crm.campaigns.run("broken", segment="vip")
    assert outbox_rows(crm) == []  # nothing queued, not even a dead message


def test_a_variable_one_customer_lacks_makes_a_dead_message_not_a_blank(crm_factory, tmp_path):
    write(tmp_path, "hello", {"subject.en.txt": "Hello {{ customer.name }}",
                              "body.en.txt": "Your contact: {{ contact.name }}\n"})
    crm = open_crm(crm_factory, templates_dir=str(tmp_path))
    with_contact = crm.customers.add(name="Ada", email="ada@example.com", tags=["vip"], consent_marketing=True)
    crm.contacts.add(customer_id=with_contact.id, name="Charles", is_primary=True)
    without = crm.customers.add(name="Bob", email="bob@example.com", tags=["vip"], consent_marketing=True)
    crm.segments.run("tags")
    result = crm.campaigns.run("hello", segment="vip")
    assert (result.enqueued, result.dead) == (1, 1)
    rows = {r["customer_id"]: r for r in outbox_rows(crm)}
    assert rows[with_contact.id]["status"] == "pending" and rows[with_contact.id]["body"] == "Your contact: Charles\n"
    dead = rows[without.id]
    assert dead["status"] == "dead" and "hello/body.en.txt, line 1" in dead["last_error"]
    assert "has no attribute 'name'" in dead["last_error"]


def test_sandbox_refuses_python_internals(crm_factory, tmp_path):
    write(tmp_path, "evil", {"subject.en.txt": "x",
                             "body.en.txt": "{{ customer.__class__.__mro__[1].__subclasses__() }}\n"})
    crm = open_crm(crm_factory, templates_dir=str(tmp_path))
    customer = crm.customers.add(name="Eve")
    with pytest.raises(TemplateError, match=r"evil/body.en.txt, line 1"):
        crm.messages.preview("evil", customer.id)


def test_html_is_escaped_and_text_is_not_and_subject_is_one_line(crm_factory, tmp_path):
    write(tmp_path, "note", {"subject.en.txt": "Hi\n{{ customer.name }}\n",
                             "body.en.txt": "{{ customer.name }}\n", "body.en.html": "<p>{{ customer.name }}</p>\n"})
    crm = open_crm(crm_factory, templates_dir=str(tmp_path))
    customer = crm.customers.add(name="<b>Tom & Jerry</b>")
    rendered = crm.messages.preview("note", customer.id)
    assert rendered.subject == "Hi <b>Tom & Jerry</b>"  # no newline can reach a mail header
    assert rendered.text == "<b>Tom & Jerry</b>\n"
    assert rendered.html == "<p>&lt;b&gt;Tom &amp; Jerry&lt;/b&gt;</p>\n"


def test_configured_directory_overrides_one_file_of_a_builtin(crm_factory, tmp_path):
    write(tmp_path, "win-back", {"subject.en.txt": "Come back to ACME, {{ customer.name }}"})
    crm = open_crm(crm_factory, templates_dir=str(tmp_path))
    customer = crm.customers.add(name="Ada")
    rendered = crm.messages.preview("win-back", customer.id)
    assert rendered.subject == "Come back to ACME, Ada"
    assert rendered.text.startswith("Dear Ada,\n\nit has been a while.")  # the built-in body


def test_unsubscribe_url_without_a_secret_is_a_clear_error(crm_factory):
    # [notify] without unsubscribe_secret: the built-in marketing templates cannot render.
    crm = crm_factory(plugins=["notify"], extra_plugins=[Components(channels=(RecordingChannel(),))],
                      config={"notify": {"channel": "mail"}})
    customer = crm.customers.add(name="Ada")
    with pytest.raises(TemplateError, match="unsubscribe_secret"):
        crm.messages.preview("birthday", customer.id)


def test_missing_template_and_missing_locale(tmp_path):
    write(tmp_path, "only-de", {"subject.de.txt": "Hallo", "body.de.txt": "Hallo\n"})
    catalog = TemplateCatalog([tmp_path], default_locale="en")
    with pytest.raises(TemplateError, match=r"no template 'nope' \(known: only-de"):
        catalog.check("nope")
    with pytest.raises(TemplateError, match=r"has no locale 'fr' nor the default 'en' \(has: de\)"):
        catalog.check("only-de", "fr")
    assert catalog.check("only-de", "de-AT") == "de"


def test_cli_preview(crm, crm_db_url, tmp_path, monkeypatch):
    customer = crm.customers.add(name="张伟", email="zw@example.com", country="CN")
    deal = crm.deals.add(customer_id=customer.id, title="年度订阅", amount=Decimal(100), currency="CNY", stage="won")
    monkeypatch.chdir(tmp_path)
    (tmp_path / "crm.toml").write_text(
        '[notify]\nunsubscribe_secret = "s"\n[notify.locales]\nCN = "zh-CN"\n', encoding="utf-8")
    runner = CliRunner()
    base = ["--db", crm_db_url, "--plugins", "notify"]
    out = runner.invoke(cli, [*base, "notify", "preview", "thank-you", str(customer.id), "--deal", str(deal.id)])
    assert out.exit_code == 0, out.output
    assert "Subject:  张伟，感谢您的订购" in out.output and "--- html ---" in out.output
    out = runner.invoke(cli, [*base, "--json", "notify", "preview", "thank-you", "zw@example.com",
                              "--deal", str(deal.id), "--locale", "en"])
    assert json.loads(out.output)["subject"] == "Thank you for your order, 张伟"
    out = runner.invoke(cli, [*base, "notify", "preview", "thank-you", str(customer.id)])  # no --deal
    assert out.exit_code == 1 and "Traceback" not in out.output
    assert "thank-you/body.zh-CN.txt, line 3: undefined variable" in out.output


class ShipsTemplates:
    """A plugin shipping its own template through ``register_templates``."""

    __name__ = "ships-templates"

    def __init__(self, folder: Path):
        self.folder = folder

    @crmcore.hookimpl
    def register_templates(self, register):
        register(self.folder)


def test_plugins_ship_templates_searched_after_the_configured_directory(crm_factory, tmp_path):
    shipped = write(tmp_path / "plugin", "welcome", {"subject.en.txt": "Welcome, {{ customer.name }}",
                                                      "body.en.txt": "Hello from the plugin\n"})
    configured = write(tmp_path / "company", "welcome", {"body.en.txt": "Hello from the company\n"})
    crm = crm_factory(plugins=["notify"], extra_plugins=[ShipsTemplates(shipped)],
                      config={"notify": {"templates_dir": str(configured)}})
    customer = crm.customers.add(name="Ada")
    rendered = crm.messages.preview("welcome", customer.id)
    assert (rendered.subject, rendered.text) == ("Welcome, Ada", "Hello from the company\n")
    assert crm.messages.template_dirs()[0] == configured and shipped in crm.messages.template_dirs()
