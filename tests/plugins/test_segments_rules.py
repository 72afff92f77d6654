"""The ``rules`` segmenter: the expression language against plain-Python
evaluation of the same rules over the generated data (never over what the
plugin stored), its error messages, injection attempts and a parser fuzz."""

from __future__ import annotations

import random
from datetime import datetime, timedelta, timezone
from decimal import Decimal

import pytest
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import func, insert, select

from crmcore import ConfigError
from crmcore.cli import cli
from crmcore.store import tables
from crmcore.testing import SegmenterContract
from crmcore_segments.rules import RuleError, RuleNameError, RuleSyntaxError, RuleTypeError, RulesSegmenter, parse

UTC = timezone.utc
AS_OF = datetime(2026, 6, 30, 12, 0, tzinfo=UTC)
REGIONS = ["华东", "华北", "华南", None]
VIP = [{"entity": "customer", "name": "vip_level", "type": "int"},
       {"entity": "customer", "name": "credit", "type": "decimal"},
       {"entity": "customer", "name": "plan", "type": "choice", "choices": ["free", "pro"]}]


def generate(seed: int, n: int) -> list[dict]:
    """Plain-Python customers with their purchases, interactions and loyalty rows."""
    rng = random.Random(seed)
    people = []
    for i in range(n):
        won = [(rng.choice([Decimal("99.99"), Decimal("2500.50"), Decimal("4000"), Decimal("12000")]),
                AS_OF - timedelta(days=rng.choice([1, 30, 89, 90, 91, 200, 400])))
               for _ in range(rng.choice([0, 0, 1, 2, 3, 5]))]
        people.append({
            "name": f"P{i}", "region": rng.choice(REGIONS), "country": rng.choice(["CN", "US"]),
            "consent_marketing": rng.random() < 0.5,
            "attributes": {k: v for k, v in (("vip_level", rng.choice([None, 0, 1, 2, 3])),
                                             ("credit", rng.choice([None, "10.5", "200.25"])),
                                             ("plan", rng.choice([None, "free", "pro"]))) if v is not None},
            "won": won,
            "lost": [Decimal("50000")] if rng.random() < 0.3 else [],
            "interactions": [(rng.choice(["call", "complaint", "email"]),
                              AS_OF - timedelta(days=rng.choice([1, 45, 89, 95, 300])))
                             for _ in range(rng.choice([0, 1, 2, 4, 5]))],
            "points": rng.choice([None, 50, 150, 1000]),
            "tier": rng.choice(["gold", "silver"]),
        })
    return people


def load(crm, people: list[dict]) -> list[int]:
    ids = []
    with crm.unit() as uow:
        for p in people:
            c = crm.customers.add(name=p["name"], region=p["region"], country=p["country"],
                                  consent_marketing=p["consent_marketing"], attributes=p["attributes"])
            ids.append(c.id)
            for amount, when in p["won"]:
                crm.deals.add(customer_id=c.id, title="w", amount=amount, stage="won", closed_at=when)
            for amount in p["lost"]:
                crm.deals.add(customer_id=c.id, title="l", amount=amount, stage="lost", closed_at=AS_OF)
            for kind, when in p["interactions"]:
                crm.interactions.add(customer_id=c.id, kind=kind, occurred_at=when)
            if p["points"] is not None:
                uow.conn.execute(insert(tables.loyalty_accounts).values(
                    customer_id=c.id, scheme="points", balance=p["points"], tier=p["tier"], updated_at=AS_OF))
    return ids


def facts(p: dict) -> dict:
    """The aggregates of one customer, computed in Python."""
    spend = sum((a for a, _ in p["won"]), Decimal(0))
    orders = len(p["won"])
    last = min(((AS_OF - w).total_seconds() / 86400 for _, w in p["won"]), default=None)
    recent = [k for k, w in p["interactions"] if AS_OF - timedelta(days=90) < w <= AS_OF]
    return {"spend": spend, "orders": orders, "avg": spend / orders if orders else None, "last": last,
            "interactions": len(recent), "complaints": recent.count("complaint")}


RULES = {
    "Big East": ('region in ("华东", "华北") and total_spend >= 10000 and last_purchase_days < 90',
                 lambda p, f: p["region"] in ("华东", "华北") and f["spend"] >= 10000
                 and f["last"] is not None and f["last"] < 90),
    "Big basket": ("avg_order_value >= 2500.5",
                   lambda p, f: f["avg"] is not None and f["avg"] >= Decimal("2500.5")),
    "Noisy": ("complaints_90d >= 1 or interactions_90d > 3",
              lambda p, f: f["complaints"] >= 1 or f["interactions"] > 3),
    "Gold": ('loyalty_points > 100 and loyalty_tier == "gold"',
             lambda p, f: p["points"] is not None and p["points"] > 100 and p["tier"] == "gold"),
    "VIP": ("attributes.vip_level >= 2 and not (attributes.plan = 'free')",
            lambda p, f: p["attributes"].get("vip_level", -1) >= 2 and p["attributes"].get("plan") != "free"),
    "Lapsed": ("not consent_marketing and (last_purchase_days is null or orders < 2)",
               lambda p, f: not p["consent_marketing"] and (f["last"] is None or f["orders"] < 2)),
}


def expected_segments(people: list[dict], ids: list[int], default: str | None) -> dict[int, tuple[str, int]]:
    out = {}
    for cid, p in zip(ids, people):
        f = facts(p)
        for position, (name, (_, check)) in enumerate(RULES.items(), 1):
            if check(p, f):
                out[cid] = (name, position)
                break
        else:
            if default is not None:
                out[cid] = (default, 0)
    return out


@pytest.fixture
def rules_crm(crm_factory):
    return crm_factory(plugins=["segments"], config={"custom_fields": VIP})


def test_rules_match_python_evaluation(rules_crm):
    people = generate(seed=4, n=160)
    ids = load(rules_crm, people)
    options = {"rules": {name: text for name, (text, _) in RULES.items()}}
    for default in (None, "Other"):
        run = rules_crm.segments.run("rules", as_of=AS_OF, options=options | {"default": default})
        got = {m["customer_id"]: (m["segment"], int(m["score"])) for m in rules_crm.segments.members("rules")}
        expected = expected_segments(people, ids, default)
        assert got == expected
        assert run.members == len(expected)
    counts = {name for name, _ in expected.values()}
    assert counts >= set(RULES), "every rule matches somebody in the data"


def test_rules_from_command_line_text_and_configuration(crm_factory):
    crm = crm_factory(plugins=["segments"], config={"segments": {"rules": {
        "rules": {"Rich": "total_spend > 100"}, "default": "Rest"}}})
    rich, poor = crm.customers.add(name="Rich"), crm.customers.add(name="Poor")
    crm.deals.add(customer_id=rich.id, title="x", amount=Decimal("100.01"), stage="won", closed_at=AS_OF)
    crm.deals.add(customer_id=poor.id, title="x", amount=Decimal("100"), stage="won", closed_at=AS_OF)
    crm.segments.run("rules", as_of=AS_OF)
    assert {m["customer_id"]: m["segment"] for m in crm.segments.members("rules")} == {rich.id: "Rich",
                                                                                     poor.id: "Rest"}
    crm.segments.run("rules", as_of=AS_OF, options={"rules": "Any: orders >= 1\nNone: orders = 0"})
    assert {m["segment"] for m in crm.segments.members("rules")} == {"Any"}


def test_window_and_empty_database(crm_factory):
    crm = crm_factory(plugins=["segments"])
    run = crm.segments.run("rules", as_of=AS_OF, options={"rules": "All: orders >= 0", "default": "x"})
    assert run.members == 0
    old = crm.customers.add(name="Old")
    crm.deals.add(customer_id=old.id, title="x", amount=Decimal("5"), stage="won",
                  closed_at=AS_OF - timedelta(days=40))
    options = {"rules": "Buyer: orders >= 1", "window_days": 30}
    crm.segments.run("rules", as_of=AS_OF, options=options)
    assert crm.segments.members("rules") == []
    crm.segments.run("rules", as_of=AS_OF, options=options | {"window_days": 41})
    assert [m["segment"] for m in crm.segments.members("rules")] == ["Buyer"]


def test_segment_function_reads_latest_rfm_run(crm_factory):
    crm = crm_factory(plugins=["segments"])
    ids = []
    for i in range(10):  # distinct recency: the oldest buyers land in low R cells
        c = crm.customers.add(name=f"C{i}")
        ids.append(c.id)
        crm.deals.add(customer_id=c.id, title="x", amount=Decimal(100 * (10 - i)), stage="won",
                      closed_at=AS_OF - timedelta(days=10 * (i + 1)))
    with pytest.raises(RuleNameError, match="no finished run"):
        crm.segments.run("rules", as_of=AS_OF, options={"rules": 'R: segment("rfm") == "Lost"'})
    crm.segments.run("rfm", as_of=AS_OF)
    rfm = {m["customer_id"]: m["segment"] for m in crm.segments.members("rfm")}
    target = rfm[ids[-1]]
    crm.segments.run("rules", as_of=AS_OF, options={"rules": f'T: segment("rfm") == "{target}"'})
    assert {m["customer_id"] for m in crm.segments.members("rules")} == {c for c, s in rfm.items() if s == target}



def test_explain_uses_the_rfm_run_the_rules_run_used(crm_factory):
    """A later RFM run must not change why a past rules run put a customer where it did."""
    crm = crm_factory(plugins=["segments"])
    ids = []
    for i in range(10):
        c = crm.customers.add(name=f"C{i}")
        ids.append(c.id)
        crm.deals.add(customer_id=c.id, title="x", amount=Decimal(100 * (10 - i)), stage="won",
                      closed_at=AS_OF - timedelta(days=10 * (i + 1)))
    crm.segments.run("rfm", as_of=AS_OF)
    rfm = {m["customer_id"]: m["segment"] for m in crm.segments.members("rfm")}
    target = rfm[ids[-1]]
    rules_run = crm.segments.run("rules", as_of=AS_OF, options={"rules": f'T: segment("rfm") == "{target}"'})
    members = {m["customer_id"] for m in crm.segments.members("rules")}
    assert members
    for cid in members:  # every member buys again: the next RFM run moves them all
        crm.deals.add(customer_id=cid, title="again", amount=Decimal("50000"), stage="won", closed_at=AS_OF)
    crm.segments.run("rfm", as_of=AS_OF)
    later = {m["customer_id"]: m["segment"] for m in crm.segments.members("rfm")}
    assert all(later[cid] != target for cid in members)
    for cid in members:
        found = crm.segments.explain("rules", cid, run_id=rules_run.id)
        assert found["segment"] == "T"
        assert found["explanation"]["matched_rule"] == "T", found
        assert found["explanation"]["values"]['segment("rfm")'] == target


# -- bad input ---------------------------------------------------------------------------

def run_rule(crm, text):
    return crm.segments.run("rules", as_of=AS_OF, options={"rules": {"R": text}})


def test_syntax_error_names_rule_and_column(rules_crm):
    with pytest.raises(ConfigError) as info:
        run_rule(rules_crm, "total_spend >= and orders > 2")
    message = str(info.value)
    assert "[segments.rules]" in message and "rule 'R'" in message and "column 16" in message
    assert "unexpected 'and'" in message
    assert rules_crm.segments.runs() == []


def test_unknown_field_lists_known(rules_crm):
    with pytest.raises(RuleNameError) as info:
        run_rule(rules_crm, "total_spent > 5")
    message = str(info.value)
    assert "unknown field 'total_spent'" in message and "column 1" in message
    for known in ("total_spend", "orders", "region", "loyalty_points", "attributes.vip_level"):
        assert known in message
    assert rules_crm.segments.runs() == []


@pytest.mark.parametrize("text, column", [('region > 5', 1), ('total_spend == "lots"', 1),
                                          ('region in ("华东", 3)', 18), ('consent_email < true', 1),
                                          ('orders', 1), ('avg_order_value >= 0.00001', 20)])
def test_type_errors(rules_crm, text, column):
    with pytest.raises(RuleTypeError) as info:
        run_rule(rules_crm, text)
    assert f"column {column}:" in str(info.value)
    assert rules_crm.segments.runs() == []


def test_injection_is_a_string_literal(rules_crm):
    customer = rules_crm.customers.add(name="x'; DROP TABLE customers; --")
    run = run_rule(rules_crm, 'name == "x\'; DROP TABLE customers; --"')
    assert [m["customer_id"] for m in rules_crm.segments.members("rules", run_id=run.id)] == [customer.id]
    run_rule(rules_crm, "name == \"x'; DROP TABLE customers; --\" or 1 == 1")
    with rules_crm.unit(readonly=True) as uow:
        assert uow.conn.execute(select(func.count()).select_from(tables.customers)).scalar() == 1
    for attack in ["name == 'x'; DROP TABLE customers; --'", "1; DROP TABLE customers", "name == x'--"]:
        with pytest.raises(ConfigError, match="column"):
            run_rule(rules_crm, attack)
    assert rules_crm.customers.get(customer.id).name == "x'; DROP TABLE customers; --"


def test_parse_positions():
    with pytest.raises(RuleSyntaxError) as info:
        parse('region in ("a", "b"')
    assert info.value.column == len('region in ("a", "b"') + 1
    with pytest.raises(RuleSyntaxError) as info:
        parse("orders > 2 $ 3")
    assert info.value.column == 12 and "'$'" in str(info.value)
    with pytest.raises(RuleSyntaxError, match="unknown escape"):
        parse(r'name == "a\q"')
    assert parse('name == "a\\"b"').right.value == 'a"b'


TOKENS = ["and", "or", "not", "in", "is", "null", "true", "false", "(", ")", ",", "==", "=", "!=", "<", ">=",
          "orders", "region", "attributes.vip_level", 'segment("rfm")', '"华东"', "'x'", '"a\\"b"', "12",
          "-3.5", ".", '"', "'", "\\", "$", "\n", "华"]


@settings(max_examples=100, deadline=None)
@given(st.lists(st.sampled_from(TOKENS), max_size=25), st.lists(st.sampled_from(["", " ", "  "]), max_size=25))
def test_fuzz_parser_raises_only_rule_errors(tokens, gaps):
    """Near-valid token soup: either a tree or a RuleSyntaxError pointing inside the text."""
    text = "".join(t + (gaps[i] if i < len(gaps) else " ") for i, t in enumerate(tokens))
    try:
        parse(text)
    except RuleSyntaxError as exc:
        assert 1 <= exc.column <= len(text) + 1


@settings(max_examples=100, deadline=None)
@given(st.text(max_size=80))
def test_fuzz_parser_any_text(text):
    try:
        parse(text)
    except RuleError:
        pass


# -- explain and CLI -----------------------------------------------------------------------

def test_explain_shows_rules_and_values(rules_crm):
    people = generate(seed=9, n=40)
    ids = load(rules_crm, people)
    options = {"rules": {name: text for name, (text, _) in RULES.items()}, "default": "Other"}
    rules_crm.segments.run("rules", as_of=AS_OF, options=options)
    expected = expected_segments(people, ids, "Other")
    for cid, p in list(zip(ids, people))[:15]:
        found = rules_crm.segments.explain("rules", cid)
        explanation = found["explanation"]
        assert found["segment"] == expected[cid][0]
        holds = [v["rule"] for v in explanation["rules"] if v["holds"]]
        assert holds == [n for n, (_, check) in RULES.items() if check(p, facts(p))]
        f = facts(p)
        assert Decimal(explanation["values"]["total_spend"]) == f["spend"]
        assert explanation["values"]["orders"] == f["orders"]


def test_cli_run_and_errors(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # not the crm.toml a demo may have left in the working directory
    db = f"sqlite:///{tmp_path / 'crm.db'}"
    runner = CliRunner()
    base = ["--db", db, "--plugins", "segments", "--as-of", "2026-06-30"]
    assert runner.invoke(cli, [*base, "customer", "add", "--name", "Ann", "--region", "华东"]).exit_code == 0
    ok = runner.invoke(cli, [*base, "segment", "run", "rules", "-o", 'rules=East: region == "华东"'])
    assert ok.exit_code == 0, ok.output
    assert "East" in ok.output
    bad = runner.invoke(cli, [*base, "segment", "run", "rules", "-o", "rules=X: regoin == 1"])
    assert bad.exit_code == 1 and "unknown field 'regoin'" in bad.output and "Traceback" not in bad.output
    bad = runner.invoke(cli, [*base, "segment", "run", "rules", "-o", "rules=X: region == ("])
    assert bad.exit_code == 1 and "column" in bad.output and "Traceback" not in bad.output


class TestRulesContract(SegmenterContract):
    @pytest.fixture
    def component(self):
        return RulesSegmenter()

    @pytest.fixture
    def seeded_crm(self, crm_factory):
        crm = crm_factory(plugins=["segments"], config={"custom_fields": VIP, "segments": {"rules": {
            "rules": {"Buyers": "orders >= 1"}, "default": "Others"}}})
        load(crm, generate(seed=1, n=15))
        return crm


def test_no_rules_assigns_nobody_or_default(crm_factory):
    crm = crm_factory(plugins=["segments"])
    ids = [crm.customers.add(name=n).id for n in ("a", "b")]
    assert crm.segments.run("rules", as_of=AS_OF).members == 0
    crm.segments.run("rules", as_of=AS_OF, options={"default": "Everyone"})
    assert {m["customer_id"]: m["segment"] for m in crm.segments.members("rules")} == {i: "Everyone" for i in ids}
