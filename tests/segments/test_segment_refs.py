"""One syntax for naming a segment (issue 13, point 11): ``STRATEGY:SEGMENT``, or
``SEGMENT`` alone when one strategy's latest run has it, in ``customer list
--segment``, ``notify campaign --segment`` and ``report run --segment``; an
unknown or ambiguous one is a one-line error listing the known ones.

Names with spaces, CJK and colons, on every database the fixtures provide.
Expected members are worked out by hand from the customers each test adds.
"""

from __future__ import annotations

import json
from decimal import Decimal

import pytest
from click.testing import CliRunner
from hypothesis import given
from hypothesis import strategies as st

from crmcore.cli import cli
from crmcore.segments import parse_segment_ref

# rules: "East China VIP" for 华东, "华北" for 华北, "Tier: Gold" for the rest (a colon in a name).
# geo (region level): "华东", "华北", "西南".  So "华北" is in both strategies' latest runs.
CONFIG = """
[notify]
unsubscribe_secret = "s"

[segments.rules.rules]
"East China VIP" = 'region == "华东"'
"华北" = 'region == "华北"'
"Tier: Gold" = 'region == "西南"'
"""
PEOPLE = [("Ann", "华东", "100"), ("Bo", "华北", "250"), ("Cy", "华东", "40"), ("Di", "西南", "7")]


@pytest.fixture
def crm_cli(crm_db_url, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for var in ("CRM_PLUGINS", "CRM_DATABASE_URL", "CRM_PLUGINS_DIR", "CRM_PLUGINS_BLOCK"):
        monkeypatch.delenv(var, raising=False)
    (tmp_path / "crm.toml").write_text(CONFIG, encoding="utf-8")
    runner = CliRunner()

    def invoke(*args: str):
        return runner.invoke(cli, ["--db", crm_db_url, "--plugins", "segments,notify,reports", *args])
    for name, region, amount in PEOPLE:
        added = invoke("customer", "add", "--name", name, "--email", f"{name.lower()}@example.com",
                       "--region", region, "--consent-marketing", "--external-id", name)
        assert added.exit_code == 0, added.output
        won = invoke("deal", "add", "--customer", name, "--title", "t", "--amount", amount, "--currency", "CNY",
                     "--stage", "won")
        assert won.exit_code == 0, won.output
    for strategy in ("rules", "geo"):
        ran = invoke("segment", "run", strategy)
        assert ran.exit_code == 0, ran.output
    return invoke


def names(result) -> list[str]:
    assert result.exit_code == 0, result.output
    return [row["name"] for row in json.loads(result.output)]


def one_line_error(result, *fragments: str) -> str:
    assert result.exit_code != 0, result.output
    assert "Traceback" not in result.output
    lines = [line for line in result.output.splitlines() if line.startswith("Error")]
    assert len(lines) == 1, result.output
    for fragment in fragments:
        assert fragment in lines[0], result.output
    return lines[0]


def test_customer_list_segment_references(crm_cli):
    listed = crm_cli("--json", "customer", "list", "--segment", "East China VIP")
    assert names(listed) == ["Ann", "Cy"]  # a name with spaces, only in rules: no strategy needed
    assert names(crm_cli("--json", "customer", "list", "--segment", "rules:East China VIP")) == ["Ann", "Cy"]
    assert names(crm_cli("--json", "customer", "list", "--segment", "geo:华北")) == ["Bo"]
    assert names(crm_cli("--json", "customer", "list", "--segment", "Tier: Gold")) == ["Di"]  # "Tier" is no strategy
    assert names(crm_cli("--json", "customer", "list", "--segment", "rules:Tier: Gold")) == ["Di"]
    one_line_error(crm_cli("customer", "list", "--segment", "华北"),
                   "'华北' is a segment of several strategies (geo, rules): use STRATEGY:华北")
    one_line_error(crm_cli("customer", "list", "--segment", "rfm:Lost"),
                   "strategy 'rfm' has no run yet", "strategies with runs: geo, rules")
    one_line_error(crm_cli("customer", "list", "--segment", "nosuch:VIP"),
                   "unknown strategy 'nosuch'", "strategies with runs: geo, rules")
    one_line_error(crm_cli("customer", "list", "--segment", "Gold"),
                   "no segment 'Gold' in the latest run of any strategy",
                   "known: geo:华东, geo:华北, geo:西南, rules:East China VIP, rules:Tier: Gold, rules:华北")
    one_line_error(crm_cli("customer", "list", "--segment", "geo:East China VIP"),
                   "the latest run of 'geo' has no segment 'East China VIP'", "known: geo:华东, geo:华北")
    one_line_error(crm_cli("customer", "list", "--segment", ":VIP"), "Invalid value for '--segment'")


def test_notify_campaign_segment_references(crm_cli):
    base = ("--json", "notify", "campaign", "win-back", "--channel", "console", "--dry-run")
    planned = crm_cli(*base, "--segment", "East China VIP")
    assert planned.exit_code == 0, planned.output
    assert {k: json.loads(planned.output)[0][k] for k in ("strategy", "segment", "members")} == {
        "strategy": "rules", "segment": "East China VIP", "members": 2}
    by_strategy = json.loads(crm_cli(*base, "--segment", "geo:华北").output)[0]
    assert (by_strategy["strategy"], by_strategy["segment"], by_strategy["members"]) == ("geo", "华北", 1)
    plain = base[1:]  # errors as text
    one_line_error(crm_cli(*plain, "--segment", "华北"), "several strategies (geo, rules)")
    one_line_error(crm_cli(*plain, "--segment", "Gold"), "no segment 'Gold'", "known: geo:华东, geo:华北")
    one_line_error(crm_cli(*plain, "--segment", "nosuch:VIP"), "unknown strategy 'nosuch'")


def test_report_run_segment_references(crm_cli):
    def revenue(segment: str) -> tuple[str, Decimal]:
        result = crm_cli("report", "run", "customer-value", "--format", "json", "--currency", "CNY",
                         "--segment", segment)
        assert result.exit_code == 0, result.output
        report = json.loads(result.output)
        return report["title"], sum((Decimal(row["revenue"]) for row in report["rows"]), Decimal(0))

    # Ann 100 + Cy 40; the title shows the reference resolved in full.
    assert revenue("East China VIP") == ("Customer value (segment=rules:East China VIP, currency=CNY)", Decimal(140))
    assert revenue("geo:华北") == ("Customer value (segment=geo:华北, currency=CNY)", Decimal(250))
    assert revenue("Tier: Gold")[1] == Decimal(7)
    one_line_error(crm_cli("report", "run", "customer-value", "--segment", "华北"),
                   "several strategies (geo, rules): use STRATEGY:华北")
    one_line_error(crm_cli("report", "run", "customer-value", "--segment", "nosuch:VIP"),
                   "unknown strategy 'nosuch'")
    one_line_error(crm_cli("report", "run", "customer-value", "--segment", "Gold"), "no segment 'Gold'")


@given(st.text())
def test_parse_accepts_what_can_name_a_segment(text):
    stripped = text.strip()
    head, colon, tail = stripped.partition(":")
    if not stripped or (colon and not (head.strip() and tail.strip())):
        with pytest.raises(ValueError):
            parse_segment_ref(text)
    else:
        assert parse_segment_ref(text).text == stripped
