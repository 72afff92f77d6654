"""Day-one command-line defects (issues 13 and 14): each test failed before its fix.

Runs on every database crm_db_url offers (SQLite always; PostgreSQL and MariaDB
when their URLs are set)."""

from __future__ import annotations

import json
import os

import click
import pytest
from click.testing import CliRunner

from crmcore.cli import cli

PLUGINS = "segments,loyalty,notify,reports"
HUGE = "100000000000000000000"  # 10**20: beyond 64 bits


@pytest.fixture
def run(crm_db_url, tmp_path, monkeypatch):
    """run(*args) -> click Result, on the test database, from an empty directory."""
    monkeypatch.chdir(tmp_path)
    for var in ("CRM_PLUGINS", "CRM_DATABASE_URL", "CRM_PLUGINS_DIR", "CRM_PLUGINS_BLOCK", "CRM_CONFIG"):
        monkeypatch.delenv(var, raising=False)
    runner = CliRunner()

    def invoke(*args: str, plugins: str = PLUGINS, input: str | None = None):
        base = ["--db", crm_db_url, "--plugins", plugins] if plugins else ["--db", crm_db_url, "--no-plugins"]
        return runner.invoke(cli, [*base, *args], input=input)
    return invoke


def one_line_error(result, code: int, *needles: str) -> str:
    """The result failed with ``code``, no traceback, and its error line names every needle."""
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert result.exit_code == code, result.output
    assert "Traceback" not in result.output
    errors = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1, result.output
    for needle in needles:
        assert needle in errors[0], result.output
    return errors[0]


# -- issue 14 point 2: integers beyond 64 bits and negative counts ---------------------------------

@pytest.mark.parametrize("args, named", [
    (("customer", "show", HUGE), "ID"),
    (("deal", "show", HUGE), "ID"),
    (("customer", "update", HUGE, "--name", "x"), "ID"),
    (("deal", "move", HUGE, "won"), "ID"),
    (("customer", "list", "--limit", "1e20"), "--limit"),
    (("customer", "list", "--limit", HUGE), "--limit"),
    (("customer", "list", "--limit", "-1"), "--limit"),
    (("customer", "list", "--offset", "-1"), "--offset"),
    (("customer", "list", "--offset", HUGE), "--offset"),
    (("deal", "list", "--limit", "-5"), "--limit"),
    (("customer", "search", "x", "--limit", "-1"), "--limit"),
    (("segment", "runs", "--limit", "-1"), "--limit"),
    (("loyalty", "redeem", "1", HUGE), "POINTS"),
    (("segment", "diff", HUGE, "1"), "RUN_A"),
    (("notify", "outbox", "--id", HUGE), "--id"),
    (("notify", "outbox", "--limit", "-1"), "--limit"),
    (("notify", "retry", HUGE), "IDS"),
    (("loyalty", "adjust", "1", HUGE, "--reason", "x"), "POINTS"),
])
def test_numbers_beyond_64_bits_or_negative_are_usage_errors(run, args, named) -> None:
    one_line_error(run(*args), 2, named)


@pytest.mark.parametrize("args", [
    ("loyalty", "balance", HUGE),
    ("deal", "add", "--customer", "1" + "0" * 30, "--title", "x", "--amount", "1", "--stage", "lead"),
    ("notify", "outbox", "--customer", HUGE),
])
def test_customer_reference_beyond_64_bits_is_not_found(run, args) -> None:
    assert run("customer", "add", "--name", "x").exit_code == 0
    one_line_error(run(*args), 1, "not found")


def test_every_integer_option_of_the_core_is_bounded_to_64_bits() -> None:
    """The root: every integer parameter of a core command is a bounded range, never a bare int."""
    def walk(command: click.Command, path: str):
        if isinstance(command, click.Group):
            for name, sub in command.commands.items():
                yield from walk(sub, f"{path} {name}")
        else:
            yield path, command

    unbounded = []
    for path, command in walk(cli, "crm"):
        if not command.callback or not command.callback.__module__.startswith("crmcore."):
            continue
        for param in command.params:
            kind = param.type
            if isinstance(kind, click.types.IntParamType):
                bounded = isinstance(kind, click.IntRange) and kind.min is not None and kind.max is not None \
                    and kind.min >= -(2**63) and kind.max <= 2**63 - 1
                if not bounded:
                    unbounded.append(f"{path} {param.name}")
    assert not unbounded, unbounded


# -- issue 13 point 9: a database that cannot be reached is one line naming the URL, password masked ---

def run_url(url: str, *args: str, env: dict[str, str] | None = None):
    return CliRunner(env=env).invoke(cli, ["--db", url, "--no-plugins", *args])


def server_with_bad_credentials(variable: str) -> str:
    from sqlalchemy.engine import make_url

    url = os.environ.get(variable)
    if not url:
        pytest.skip(f"{variable} is not set")
    return make_url(url).set(username="crm_nosuchuser", password="s3cret-pw").render_as_string(hide_password=False)


@pytest.mark.parametrize("url, shown", [
    ("sqlite:///nonexist/dir/x.db", "sqlite:///nonexist/dir/x.db"),
    ("postgresql://crm:s3cret-pw@127.0.0.1:1/crm", "postgresql://crm:***@127.0.0.1:1/crm"),
    ("mysql://crm:s3cret-pw@127.0.0.1:1/crm", "mysql://crm:***@127.0.0.1:1/crm"),
])
def test_unreachable_database_is_one_line_naming_the_masked_url(tmp_path, monkeypatch, url, shown) -> None:
    monkeypatch.chdir(tmp_path)
    for args in (("customer", "add", "--name", "x"), ("db", "upgrade")):
        line = one_line_error(run_url(url, *args), 1, shown)
        assert "s3cret" not in line


@pytest.mark.parametrize("variable", ["CRM_TEST_POSTGRES_URL", "CRM_TEST_MARIADB_URL"])
def test_bad_credentials_on_a_server_are_one_line(tmp_path, monkeypatch, variable) -> None:
    monkeypatch.chdir(tmp_path)
    url = server_with_bad_credentials(variable)
    result = run_url(url, "customer", "add", "--name", "x")
    line = one_line_error(result, 1, "crm_nosuchuser:***@", "cannot connect to database")
    assert "s3cret" not in result.output and line


# -- issue 13 point 21: read-only commands never create a database ----------------------------------

@pytest.fixture
def empty_dir(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for var in ("CRM_PLUGINS", "CRM_DATABASE_URL", "CRM_PLUGINS_DIR", "CRM_PLUGINS_BLOCK"):
        monkeypatch.delenv(var, raising=False)
    return tmp_path


@pytest.mark.parametrize("args", [
    ("--help",), ("customer", "--help"), ("customer", "list", "--help"), ("plugins", "list"),
    ("plugins", "list", "--json"), ("config", "show"), ("report", "list"), ("segment", "strategies"),
    ("loyalty", "schemes"), ("notify", "channels"), ("db", "history"), ("notify", "templates"),
])
def test_read_only_commands_work_without_creating_a_database(empty_dir, args) -> None:
    result = CliRunner().invoke(cli, ["--plugins", PLUGINS, *args])
    assert result.exit_code == 0, result.output
    assert not (empty_dir / "crm.db").exists()


@pytest.mark.parametrize("args", [
    ("customer", "list"), ("customer", "show", "1"), ("customer", "search", "x"), ("deal", "list"),
    ("segment", "runs"), ("segment", "members", "rfm"), ("loyalty", "balance", "1"), ("notify", "outbox"),
    ("report", "run", "pipeline"), ("loyalty", "tiers"), ("db", "current"),
])
def test_a_listing_of_a_missing_database_suggests_crm_init(empty_dir, args) -> None:
    result = CliRunner().invoke(cli, ["--plugins", PLUGINS, *args])
    one_line_error(result, 1, "sqlite:///crm.db", "does not exist", "crm init")
    assert not (empty_dir / "crm.db").exists()


def test_writing_commands_and_init_create_the_database(empty_dir) -> None:
    runner = CliRunner()
    assert runner.invoke(cli, ["--no-plugins", "customer", "add", "--name", "x"]).exit_code == 0
    assert (empty_dir / "crm.db").exists()
    assert runner.invoke(cli, ["--no-plugins", "--json", "customer", "list"]).exit_code == 0
    other = "sqlite:///" + str(empty_dir / "other.db")
    result = runner.invoke(cli, ["--db", other, "--no-plugins", "init"])
    assert result.exit_code == 0, result.output
    assert (empty_dir / "other.db").exists()
    # crm.toml exists now: init keeps it and still creates a missing database
    third = "sqlite:///" + str(empty_dir / "third.db")
    result = runner.invoke(cli, ["--db", third, "--no-plugins", "init"])
    assert result.exit_code == 0, result.output
    assert "kept" in result.output and (empty_dir / "third.db").exists()
    assert runner.invoke(cli, ["--db", third, "--no-plugins", "customer", "list"]).exit_code == 0


# -- issue 13 point 10: a listing says when it stops early; --all streams ---------------------------

def test_list_says_how_many_it_did_not_show_and_all_lists_everything(run) -> None:
    for i in range(3):
        assert run("customer", "add", "--name", f"c{i}").exit_code == 0
    cut = run("customer", "list", "--limit", "2")
    assert cut.exit_code == 0, cut.output
    assert len(cut.stdout.splitlines()) == 3  # header + 2 rows on stdout
    assert "showing 2 of 3 (use --limit/--all)" in cut.stderr
    whole = run("customer", "list", "--limit", "3")
    assert "showing" not in whole.stderr
    everything = run("--json", "customer", "list", "--all", "--limit", "1")
    assert [c["name"] for c in json.loads(everything.stdout)] == ["c0", "c1", "c2"]
    assert "showing" not in everything.stderr
    piped = run("customer", "list", "--all", "--where", "name~c", "--sort", "-id")
    assert [line.split("\t")[1] for line in piped.stdout.splitlines()[1:]] == ["c2", "c1", "c0"]
    json_cut = run("--json", "customer", "list", "--limit", "1")
    assert len(json.loads(json_cut.output)) == 1  # no note under --json: the output stays one JSON value
    assert json.loads(run("--json", "deal", "list", "--all").stdout) == []
    assert run("customer", "search", "c", "--limit", "1").stderr.startswith("showing 1 of more")


def test_all_streams_instead_of_building_a_list(crm_factory) -> None:
    crm = crm_factory()
    crm.customers.add(name="a")
    rows = crm.customers.iter({"name": "a"})
    assert not isinstance(rows, list)
    assert [c.name for c in rows] == ["a"]


# -- issue 13 point 15: config show masks passwords and secrets --------------------------------------

SECRETS = ("dbpw-1", "unsub-secret-2", "smtp-pw-3", "hook-secret-4", "bearer-token-5", "sms-pw-6", "acme-key-7")

CONFIG_WITH_SECRETS = '''
database_url = "postgresql://crm:dbpw-1@db.example.com:5432/crm"

[notify]
unsubscribe_secret = "unsub-secret-2"
unsubscribe_url = "https://example.com/u?token={token}"

[channels.smtp]
host = "smtp.example.com"
username = "crm"
password = "smtp-pw-3"
password_env = "SMTP_PASSWORD"

[channels.webhook]
url = "https://hooks.example.com/x"
secret = "hook-secret-4"
headers = { Authorization = "Bearer bearer-token-5" }

[channels.sms-http]
url = "https://sms:sms-pw-6@sms.example.com/send"

[plugins.acme]
api_key = "acme-key-7"
'''


@pytest.mark.parametrize("json_flag", [(), ("--json",)])
def test_config_show_masks_every_password_and_secret(empty_dir, json_flag) -> None:
    (empty_dir / "crm.toml").write_text(CONFIG_WITH_SECRETS, encoding="utf-8")
    result = CliRunner().invoke(cli, ["--no-plugins", *json_flag, "config", "show"])
    assert result.exit_code == 0, result.output
    leaked = [s for s in SECRETS if s in result.output]
    assert not leaked, result.output
    assert "postgresql://crm:***@db.example.com:5432/crm" in result.output
    assert "SMTP_PASSWORD" in result.output  # the *name* of a variable is not a secret
    if json_flag:
        rows = {key: r["value"] for key, r in json.loads(result.output).items()}
        assert rows["channels.smtp"]["password"] == "***"
        assert rows["notify"]["unsubscribe_secret"] == "***"


def test_errors_mask_the_database_password(empty_dir) -> None:
    result = CliRunner().invoke(cli, ["--db", "postgresql://crm:dbpw-1@", "--no-plugins", "customer", "add",
                                      "--name", "x"])
    assert "dbpw-1" not in result.output and result.exit_code == 1, result.output


# -- issue 13 point 16 (part): under --json an error is a JSON object on stderr; recompute and init honour it --

def test_json_errors_are_objects_on_stderr(run) -> None:
    assert run("customer", "add", "--name", "x").exit_code == 0
    result = run("--json", "customer", "show", "424242")
    assert result.exit_code == 1 and result.stdout == ""
    error = json.loads(result.stderr)
    assert error["error"] == "NotFound" and "424242" in error["message"]
    usage = run("--json", "customer", "show", HUGE)
    assert usage.exit_code == 2
    assert json.loads(usage.stderr)["error"] == "UsageError" and "ID" in json.loads(usage.stderr)["message"]


def test_recompute_and_init_honour_json(run, tmp_path) -> None:
    assert run("customer", "add", "--name", "x").exit_code == 0
    recompute = run("--json", "loyalty", "recompute")
    assert recompute.exit_code == 0, recompute.output
    assert json.loads(recompute.stdout) == []
    init = run("--json", "init", "--path", str(tmp_path / "crm.toml"))
    assert init.exit_code == 0, init.output
    assert json.loads(init.stdout)["config_file"].endswith("crm.toml")
