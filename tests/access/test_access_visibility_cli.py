"""Record visibility end to end: the ``access`` plugin's scopes through the ``crm`` command line.

Every listing path (entity lists, search, export, segment members, reports, loyalty history, the
outbox) shows a user exactly the records of their scope; the expected sets and the pipeline totals
are computed here in Python from every row (read as the unrestricted system actor).
"""

from __future__ import annotations

import json
from decimal import Decimal

import pytest
from click.testing import CliRunner

from crmcore import CRM
from crmcore.cli import cli, load_plugin_commands

PLUGINS = "access,reports,segments,loyalty,notify"
AS_OF = "2030-01-01"


@pytest.fixture
def world(crm_db_url, tmp_path, monkeypatch):
    """rep1 and rep2 (sales reps), mgr managing team east (rep1), agent covering region south, and
    twelve customers with deals, points and a message each."""
    monkeypatch.chdir(tmp_path)
    for var in ("CRM_PLUGINS", "CRM_DATABASE_URL", "CRM_PLUGINS_DIR", "CRM_PLUGINS_BLOCK", "CRM_USER", "CRM_CONFIG"):
        monkeypatch.delenv(var, raising=False)
    (tmp_path / "crm.toml").write_text('default_currency = "CNY"\n[channels.file]\npath = "out.jsonl"\n',
                                       encoding="utf-8")
    crm = CRM.open(crm_db_url, config_file=tmp_path / "crm.toml", plugins=PLUGINS.split(","))
    try:
        for login, role in (("admin", "admin"), ("rep1", "sales-rep"), ("rep2", "sales-rep"),
                            ("mgr", "manager"), ("agent", "service-agent")):
            crm.users.add(login, role=role)
        crm.teams.add("east", manager="mgr")
        crm.teams.add_member("east", "rep1")
        crm.users.assign_region("agent", "south")
        owners = ["rep1", "rep2", "mgr", None]
        for n in range(12):
            customer = crm.customers.add(name=f"客户{n}", email=f"c{n}@example.com", owner=owners[n % 4],
                                         region="south" if n % 3 == 0 else "north")
            for m in range(1 + n % 3):
                deal = crm.deals.add(customer_id=customer.id, title=f"d{n}.{m}", amount=Decimal(1000 * n + m),
                                     currency="CNY", stage="lead", owner=owners[(n + m) % 4])
                if m == 1:
                    crm.deals.move(deal.id, "won")
            crm.loyalty.adjust(customer.id, 10 + n, "points", "welcome")
            crm.notify.enqueue("file", customer_id=customer.id, subject="hi", body="hello")
        crm.segments.run("value-tier", as_of=AS_OF)
        everything = {"customers": crm.customers.list(), "deals": crm.deals.list()}
    finally:
        crm.close()
    load_plugin_commands(["--plugins", PLUGINS])

    def run(actor: str, *args: str, code: int = 0) -> str:
        result = CliRunner().invoke(cli, ["--db", crm_db_url, "--plugins", PLUGINS, "--as", actor, *args])
        assert result.exit_code == code, result.output
        return result.output
    return run, everything


def seen_by(everything, actor: str) -> set[int]:
    """The customer ids ``actor``'s scope covers, from the rows themselves."""
    customers = everything["customers"]
    if actor == "admin":
        return {c.id for c in customers}
    if actor == "mgr":
        return {c.id for c in customers if c.owner in ("mgr", "rep1")}
    if actor == "agent":
        return {c.id for c in customers if c.region == "south"}
    return {c.id for c in customers if c.owner == actor}


def test_every_listing_path_shows_the_scope(world) -> None:
    # One world, every scope in turn (setting a world up costs more than the checks).
    for actor in ("rep1", "rep2", "mgr", "agent", "admin"):
        check_listings(*world, actor)


def check_listings(run, everything, actor: str) -> None:
    mine = seen_by(everything, actor)
    assert mine and (actor == "admin" or len(mine) < len(everything["customers"]))
    ids = lambda rows, key="id": {r[key] for r in rows}  # noqa: E731
    assert ids(json.loads(run(actor, "--json", "customer", "list", "--all"))) == mine
    assert ids(json.loads(run(actor, "--json", "customer", "search", "example.com"))) == mine
    deals = {d.id for d in everything["deals"] if d.customer_id in mine}
    assert ids(json.loads(run(actor, "--json", "deal", "list", "--all"))) == deals
    run(actor, "export", "customers", "-o", "out.jsonl")
    with open("out.jsonl", encoding="utf-8") as exported:
        assert {json.loads(line)["id"] for line in exported} == mine
    if actor != "agent":  # a service agent may not list segment members at all
        members = json.loads(run(actor, "--json", "segment", "members", "value-tier"))
        assert ids(members, "customer_id") == mine
    outbox = json.loads(run(actor, "--json", "notify", "outbox", "--limit", "100"))
    assert ids(outbox, "customer_id") == mine
    hidden = min({c.id for c in everything["customers"]} - mine, default=None)
    if hidden is not None:
        assert f"customer '{hidden}' not found" in run(actor, "loyalty", "history", str(hidden), code=1)
    shown = min(mine)
    assert json.loads(run(actor, "--json", "loyalty", "history", str(shown)))


def test_a_users_pipeline_report_totals_equal_a_sum_over_their_deals(world) -> None:
    run, everything = world
    for actor in ("rep1", "mgr", "agent"):
        mine = seen_by(everything, actor)
        report = json.loads(run(actor, "--as-of", AS_OF, "--json", "report", "run", "pipeline", "--format", "json"))
        rows = report["rows"] if isinstance(report, dict) else report
        got = {r["stage"]: (r["count"], Decimal(str(r["amount"]))) for r in rows}
        assert sum(count for count, _ in got.values()) == sum(1 for d in everything["deals"] if d.customer_id in mine)
        for stage, (count, amount) in got.items():
            deals = [d for d in everything["deals"] if d.customer_id in mine and d.stage == stage]
            assert count == len(deals), (actor, stage)
            assert amount == sum((d.amount for d in deals), Decimal(0)), (actor, stage)
