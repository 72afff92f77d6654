"""The crm command line, driven through click's runner and as a real subprocess.

Runs on every database crm_db_url offers (SQLite always; PostgreSQL and MariaDB
when their URLs are set)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import pytest
from click.testing import CliRunner

from crmcore.cli import cli

PLUGINS = "segments,loyalty,notify,reports"


@pytest.fixture
def run(crm_db_url, tmp_path, monkeypatch):
    """run(*args) -> click Result, on the test database, from an empty directory."""
    monkeypatch.chdir(tmp_path)
    for var in ("CRM_PLUGINS", "CRM_DATABASE_URL", "CRM_PLUGINS_DIR", "CRM_PLUGINS_BLOCK"):
        monkeypatch.delenv(var, raising=False)
    runner = CliRunner()

    def invoke(*args: str, plugins: str = PLUGINS, input: str | None = None):
        base = ["--db", crm_db_url, "--plugins", plugins] if plugins else ["--db", crm_db_url, "--no-plugins"]
        return runner.invoke(cli, [*base, *args], input=input, catch_exceptions=False)
    return invoke


def ok(result) -> str:
    assert result.exit_code == 0, result.output
    return result.output


def as_json(result):
    return json.loads(ok(result))


def test_customer_crud_and_search(run):
    added = as_json(run("--json", "customer", "add", "--name", "张伟", "--email", "Zhang.Wei@Example.com",
                        "--phone", "+86 138 0013 8000", "--region", "华东", "--tags", "vip,b2b",
                        "--external-id", "c-1"))
    assert added["email"] == "Zhang.Wei@example.com" and added["phone"] == "+8613800138000"
    assert added["tags"] == ["vip", "b2b"]
    ok(run("customer", "add", "--name", "Alice Smith", "--email", "alice@example.com", "--region", "West"))
    listed = as_json(run("--json", "customer", "list", "--where", "region=华东"))
    assert [c["name"] for c in listed] == ["张伟"]
    assert [c["name"] for c in as_json(run("--json", "customer", "search", "张"))] == ["张伟"]
    assert [c["name"] for c in as_json(run("--json", "customer", "search", "ALICE@"))] == ["Alice Smith"]
    updated = as_json(run("--json", "customer", "update", str(added["id"]), "--city", "上海", "--set", "level=gold"))
    assert updated["city"] == "上海" and updated["attributes"] == {"level": "gold"}
    assert as_json(run("--json", "customer", "list", "--where", "attributes.level=gold"))[0]["id"] == added["id"]
    ordered = as_json(run("--json", "customer", "list", "--sort", "-name", "--limit", "1"))
    assert ordered[0]["name"] == "张伟"
    assert as_json(run("--json", "customer", "list", "--offset", "1", "--sort", "id"))[0]["name"] == "Alice Smith"
    ok(run("customer", "delete", "2", "--yes"))  # archives
    assert len(as_json(run("--json", "customer", "list"))) == 1
    assert [c["id"] for c in as_json(run("--json", "customer", "list", "--archived"))] == [2]
    assert as_json(run("--json", "customer", "search", "alice")) == []  # archived: searched on request
    assert [c["id"] for c in as_json(run("--json", "customer", "search", "alice", "--include-archived"))] == [2]
    assert [c["id"] for c in as_json(run("--json", "customer", "search", "e", "--archived"))] == [2]
    assert "archived_at" in ok(run("customer", "search", "alice", "--include-archived"))


def test_deal_move_earns_points_and_report(run):
    ok(run("customer", "add", "--name", "李娜", "--external-id", "c-9", "--email", "li@example.com"))
    deal = as_json(run("--json", "deal", "add", "--customer", "c-9", "--title", "ERP 续约",
                       "--amount", "12000.50", "--currency", "CNY", "--stage", "proposal"))
    assert deal["amount"] == "12000.50" and deal["probability"] == 50
    moved = as_json(run("--json", "deal", "move", str(deal["id"]), "won"))
    assert moved["stage"] == "won" and moved["closed_at"]
    balance = as_json(run("--json", "loyalty", "balance", "li@example.com"))["schemes"]["points"]
    assert balance["balance"] == 12000  # 1 point per unit, rounded down
    history = as_json(run("--json", "loyalty", "history", "c-9"))
    assert [(e["kind"], e["points"]) for e in history] == [("earn", 12000)]
    ok(run("loyalty", "redeem", "c-9", "500", "--reason", "coupon"))
    ok(run("loyalty", "adjust", "c-9", "-100", "--reason", "correction"))
    assert as_json(run("--json", "loyalty", "balance", "c-9"))["schemes"]["points"]["balance"] == 11400
    csv_text = ok(run("report", "run", "pipeline", "--format", "csv", "--option", "currency=CNY"))
    won_line = next(line for line in csv_text.splitlines() if line.startswith("won,") or ",won," in line)
    assert [Decimal(v) for v in won_line.split(",")[-2:]] == [Decimal("12000.50")] * 2
    report = json.loads(ok(run("report", "run", "pipeline", "--format", "json")))
    assert report["rows"]


def test_segments_and_notifications(run, tmp_path):
    for i in range(6):
        ok(run("customer", "add", "--name", f"客户{i}", "--email", f"c{i}@example.com", "--external-id", f"x{i}",
               "--consent-marketing" if i % 2 else "--no-consent-marketing"))
        ok(run("deal", "add", "--customer", f"x{i}", "--title", "t", "--amount", str(100 * (i + 1)),
               "--currency", "CNY", "--stage", "won"))
    strategies = as_json(run("--json", "segment", "strategies"))
    assert "rfm" in {s["name"] for s in strategies}
    out = ok(run("--as-of", "2030-01-01", "segment", "run", "rfm"))
    assert "6 customers" in out
    runs = as_json(run("--json", "segment", "runs"))
    assert runs[0]["strategy"] == "rfm" and runs[0]["members"] == 6
    members = as_json(run("--json", "segment", "members", "rfm"))
    assert len(members) == 6
    export = tmp_path / "rfm.csv"
    ok(run("segment", "export", "rfm", "--output", str(export)))
    assert len(export.read_text(encoding="utf-8").splitlines()) == 7
    sent = as_json(run("--json", "notify", "send", "--channel", "file", "--customer", "x1", "--subject", "您好",
                       "--purpose", "marketing"))
    assert sent["status"] == "pending"
    suppressed = as_json(run("--json", "notify", "send", "--channel", "file", "--customer", "x0",
                             "--subject", "hi", "--purpose", "marketing"))
    assert suppressed["status"] == "suppressed"
    result = as_json(run("--json", "notify", "dispatch"))
    assert result["sent"] == 1
    assert as_json(run("--json", "notify", "outbox", "--status", "sent"))[0]["subject"] == "您好"
    assert as_json(run("--json", "notify", "retry"))["requeued"] == 0
    assert {c["name"] for c in as_json(run("--json", "notify", "channels"))} >= {"console", "file"}


def test_plugins_list_json(run):
    rows = as_json(run("plugins", "list", "--json"))
    by_name = {r["name"]: r for r in rows}
    assert by_name["segments"]["distribution"] == "crmcore-segments"
    assert "register_segmenters" in by_name["segments"]["hooks"]
    assert by_name["segments"]["components"]["segmenters"] == ["geo", "lifecycle", "rfm", "rules", "value-tier"]
    every = as_json(run("plugins", "list", "--all", "--json", plugins="segments"))
    assert {"segments", "loyalty"} <= {r["name"] for r in every}
    assert {r["name"]: r["enabled"] for r in every}["loyalty"] is False


def test_db_commands(run):
    ok(run("db", "upgrade"))
    current = as_json(run("--json", "db", "current"))
    assert {"branch": "crmcore", "current": "0029_import_digest_trigger", "head": "0029_import_digest_trigger"} in current
    history = as_json(run("--json", "db", "history"))
    assert any(r["revision"] == "0001_core" for r in history)


def test_user_errors_are_one_line_exit_1(run):
    result = run("deal", "add", "--customer", "nobody", "--title", "x", "--amount", "1", "--stage", "won")
    assert result.exit_code == 1
    assert "customer 'nobody' not found" in result.output and "Traceback" not in result.output
    ok(run("customer", "add", "--name", "A"))
    bad = run("deal", "add", "--customer", "1", "--title", "x", "--amount", "-5", "--stage", "nope")
    assert bad.exit_code == 1
    assert "amount" in bad.output and "stage" in bad.output and "Traceback" not in bad.output
    assert run("customer", "show", "99").exit_code == 1
    assert run("customer", "list", "--where", "nosuch=1").exit_code == 1
    usage = run("deal", "move")
    assert usage.exit_code == 2


def test_config_show_and_init(run, tmp_path, monkeypatch):
    ok(run("init", plugins=""))
    assert (tmp_path / "crm.toml").exists()
    again = ok(run("init", plugins=""))  # keeps the file, (re)creates and migrates the database
    assert again.startswith("kept crm.toml")
    monkeypatch.setenv("CRM_PHONE_REGION", "US")
    rows = as_json(run("--json", "config", "show", plugins=""))
    assert rows["default_currency"]["source"] == "crm.toml"
    assert rows["phone_region"] == {"value": "US", "source": "environment CRM_PHONE_REGION"}
    assert rows["database_url"]["source"] == "argument"


def test_subprocess_entry_point(crm_db_url, tmp_path):
    """The installed `crm` script: JSON out, errors without traceback, -v with one."""
    crm = Path(sys.executable).with_name("crm")
    env = {k: v for k, v in os.environ.items() if not k.startswith("CRM_")}
    base = [str(crm), "--db", crm_db_url, "--no-plugins"]

    def call(*args):
        return subprocess.run([*base, *args], capture_output=True, text=True, cwd=tmp_path, env=env, timeout=120)

    added = call("--json", "customer", "add", "--name", "王芳 🌸", "--email", "wf@example.com")
    assert added.returncode == 0, added.stderr
    assert json.loads(added.stdout)["name"] == "王芳 🌸"
    listed = call("customer", "list")
    assert listed.stdout.splitlines()[0].startswith("id\tname")  # piped: plain tab-separated
    bad = call("deal", "add", "--customer", "1", "--title", "x", "--amount", "1.234", "--currency", "CNY",
               "--stage", "won")
    assert bad.returncode == 1 and "Traceback" not in bad.stderr and "decimals" in bad.stderr
    loud = call("-v", "deal", "add", "--customer", "1", "--title", "x", "--amount", "1.234", "--currency", "CNY",
                "--stage", "won")
    assert loud.returncode == 1 and "Traceback" in loud.stderr
    assert call("--version").stdout.startswith("crm, version")


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    """`crm demo` run twice on one fresh SQLite file, the second time with --force (the demos are the
    slowest commands: the tests below share these two runs).  Each run's output and, after it, every
    customer, deal, interaction and the first customer's ledger as the CLI lists them."""
    where = tmp_path_factory.mktemp("demo")
    runner = CliRunner()
    base = ["--db", f"sqlite:///{where / 'demo.db'}", "--plugins", PLUGINS, "--as-of", "2026-06-30"]
    args = [*base, "demo", "--customers", "60", "--seed", "3", "--output-dir", str(where / "out")]

    def listed() -> dict[str, object]:
        found = {entity: json.loads(ok(runner.invoke(cli, [*base, "--json", entity, "list", "--limit", "100000"])))
                 for entity in ("customer", "deal", "interaction")}
        found["ledger"] = json.loads(ok(runner.invoke(cli, [*base, "--json", "loyalty", "history", "1"])))
        return found

    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(where)
        first = runner.invoke(cli, args, catch_exceptions=False)
        assert first.exit_code == 0, first.output
        first_listed = listed()
        again = runner.invoke(cli, args)
        forced = runner.invoke(cli, [*args, "--force"], catch_exceptions=False)
        assert forced.exit_code == 0, forced.output
        forced_listed = listed()
    return {"where": where, "url": f"sqlite:///{where / 'demo.db'}", "first": first, "again": again,
            "forced": forced, "listed": (first_listed, forced_listed)}


def test_demo_small(demo):
    """`crm demo` fills a fresh SQLite file and writes its outputs (SQLite only: it is the README demo)."""
    where, result = demo["where"], demo["first"]
    assert "60 customers" in result.output
    assert (where / "out" / "outbox.jsonl").exists()
    assert (where / "out" / "pipeline.csv").exists()
    assert (where / "crm.toml").exists()  # the demo leaves a matching configuration behind
    again = demo["again"]
    assert again.exit_code == 1 and "--force" in again.output
    # Same seed, same data: the summary is printed again identically (but for the
    # timing, and the crm.toml the first run wrote and the second leaves alone).
    def summary(output: str) -> list[str]:
        return [line for line in output.splitlines() if not line.startswith(("configuration", "done in"))]
    assert summary(demo["forced"].output) == summary(result.output)
    assert (where / "out" / "dashboard" / "index.html").exists()
    index = (where / "out" / "dashboard" / "index.html").read_text(encoding="utf-8")
    assert 'href="pipeline.html"' in index and (where / "out" / "dashboard" / "pipeline.html").exists()
    sent = [json.loads(line) for line in (where / "out" / "outbox.jsonl").read_text(encoding="utf-8").splitlines()]
    assert sent and all(m["subject"] and m["body"] for m in sent)
    assert all("unsubscribe" in m["body"].lower() or "退订" in m["body"]
               for m in sent if m["purpose"] == "marketing")


def test_demo_points_held_exclude_expired_points(demo):
    """The demo runs the expiry job: no batch past its expiry keeps points, and "points held" is
    the points left in batches not yet expired (counted here from the ledger rows)."""
    from crmcore import CRM, Config
    from crmcore.store import tables

    url, result = demo["url"], demo["forced"]  # the database holds the forced run's data
    [line] = [x for x in result.output.splitlines() if "points held by" in x]
    held = int(line.split(": ", 1)[1].split(" points", 1)[0].replace(",", ""))
    expired_line = [x for x in result.output.splitlines() if "points expired" in x]
    assert expired_line and int(expired_line[0].split(": ", 1)[1].split(" ")[0].replace(",", "")) > 0
    crm = CRM.open(config=Config.from_mapping({"database_url": url, "plugins": PLUGINS.split(",")}))
    try:
        with crm.unit(readonly=True) as uow:
            rows = [dict(r._mapping) for r in uow.conn.execute(
                tables.loyalty_ledger.select().where(tables.loyalty_ledger.c.scheme == "points"))]
        end = crm.as_of("2026-06-30")
    finally:
        crm.close()
    used: dict[int, int] = {}
    for row in rows:  # every debit in the demo is an expiry of one batch
        if row["points"] < 0:
            assert row["kind"] == "expire" and row["batch_id"] is not None
            used[row["batch_id"]] = used.get(row["batch_id"], 0) - row["points"]
    left = {row["id"]: row["points"] - used.get(row["id"], 0) for row in rows if row["points"] > 0}
    assert all(left[row["id"]] == 0 for row in rows
               if row["points"] > 0 and row["expires_at"] is not None and row["expires_at"] <= end)
    assert held == sum(left.values()) > 0


def test_demo_is_deterministic_for_a_seed(demo):
    """Same seed and --as-of: the same customers, deals and ledger, to the field (the forced run
    starts the file again from nothing)."""
    first, forced = demo["listed"]
    assert first == forced
    assert len(first["customer"]) == 60 and first["deal"] and first["ledger"]
    assert {d["currency"] for d in first["deal"]} == {"CNY"}


def test_register_commands_hook(tmp_path, monkeypatch):
    """A plugin in a plugins directory adds a command to `crm`."""
    plugin = tmp_path / "plugs" / "hello.py"
    plugin.parent.mkdir()
    plugin.write_text(
        "import click\nfrom crmcore import hookimpl\n\n"
        "@hookimpl\ndef register_commands(cli):\n"
        "    @cli.command()\n    @click.argument('name')\n    def hello(name):\n"
        "        '''Say hello.'''\n        click.echo(f'你好, {name}')\n", encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if not k.startswith("CRM_")}
    crm = Path(sys.executable).with_name("crm")
    result = subprocess.run([str(crm), "--no-plugins", "--plugins-dir", str(plugin.parent), "hello", "世界"],
                            capture_output=True, text=True, cwd=tmp_path, env=env, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "你好, 世界"


def test_failing_plugin_does_not_stop_crm(tmp_path):
    plugins = tmp_path / "plugs"
    plugins.mkdir()
    (plugins / "broken.py").write_text("raise RuntimeError('boom at import')\n", encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if not k.startswith("CRM_")}
    crm = Path(sys.executable).with_name("crm")
    result = subprocess.run([str(crm), "--db", f"sqlite:///{tmp_path / 'x.db'}", "--no-plugins", "--plugins-dir",
                             str(plugins), "customer", "add", "--name", "x"], capture_output=True, text=True,
                            cwd=tmp_path,
                            env=env, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "broken" in result.stderr and "boom at import" in result.stderr


def test_money_is_exact_through_cli(run):
    ok(run("customer", "add", "--name", "X", "--external-id", "m"))
    for amount in ("0.01", "0.02", "12345678.99"):
        ok(run("deal", "add", "--customer", "m", "--title", "t", "--amount", amount, "--currency", "CNY",
               "--stage", "won"))
    deals = as_json(run("--json", "deal", "list"))
    assert sum(Decimal(d["amount"]) for d in deals) == Decimal("12345679.02")
