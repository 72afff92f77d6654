"""Who is acting (issue 15, point 2): every unit of work has an actor; unknown or deactivated users cannot act."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from crmcore import NotFound
from crmcore.application import audit
from crmcore.application.users import InactiveUser
from crmcore.cli import cli


def actors(crm) -> list[str]:
    with crm.unit(readonly=True) as uow:
        return [r.actor for r in audit.records(uow.conn) if r.entity == "customer"]


def test_python_api_acting_and_as_user(crm_factory) -> None:
    crm = crm_factory()
    crm.users.add("li.wei")
    crm.users.add("bob")
    crm.customers.add(name="nobody named")
    with crm.acting("li.wei"):
        with crm.unit() as uow:
            assert uow.actor == "li.wei" and crm.actor == "li.wei"
        crm.customers.add(name="by li")
    assert crm.actor == "system"
    crm.as_user("bob").customers.add(name="by bob")
    crm.customers.add(name="still bob")
    assert actors(crm) == ["system", "li.wei", "bob", "bob"]


def test_unknown_or_deactivated_user_cannot_act(crm_factory) -> None:
    crm = crm_factory()
    crm.users.add("gone")
    crm.users.deactivate("gone")
    with pytest.raises(NotFound, match="user 'ghost' not found"):
        with crm.acting("ghost"):
            crm.customers.add(name="x")
    with pytest.raises(InactiveUser, match="user 'gone' is deactivated and cannot act"):
        crm.as_user("gone")
    assert crm.customers.count() == 0


@pytest.fixture
def run(crm_db_url, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for var in ("CRM_PLUGINS", "CRM_DATABASE_URL", "CRM_PLUGINS_DIR", "CRM_PLUGINS_BLOCK", "CRM_USER"):
        monkeypatch.delenv(var, raising=False)

    def invoke(*args: str, env: dict | None = None):
        return CliRunner().invoke(cli, ["--db", crm_db_url, "--no-plugins", *args], env=env)
    return invoke


def one_line_error(result, *needles: str) -> None:
    assert result.exit_code == 1 and "Traceback" not in result.output, result.output
    errors = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and all(n in errors[0] for n in needles), result.output


def test_cli_actor_precedence(run, tmp_path) -> None:
    """--as, then CRM_USER, then default_user in crm.toml; the system actor only while unconfigured."""
    assert run("customer", "add", "--name", "first").exit_code == 0  # unconfigured: system acts
    assert run("user", "add", "li").exit_code == 0
    assert run("--as", "li", "user", "add", "wang").exit_code == 0
    one_line_error(run("customer", "add", "--name", "who?"), "--as LOGIN", "CRM_USER", "default_user")
    (tmp_path / "crm.toml").write_text('default_user = "wang"\n', encoding="utf-8")
    assert run("customer", "add", "--name", "by default").exit_code == 0
    assert run("customer", "add", "--name", "by env", env={"CRM_USER": "li"}).exit_code == 0
    assert run("--as", "wang", "customer", "add", "--name", "by flag", env={"CRM_USER": "li"}).exit_code == 0
    result = run("--as", "li", "--json", "audit", "log")
    import json
    records = [(r["actor"], r["action"]) for r in json.loads(result.output) if r["entity"] == "customer"]
    assert records == [("system", "customer.create"), ("wang", "customer.create"), ("li", "customer.create"),
                       ("wang", "customer.create")]


def test_cli_unknown_or_deactivated_actor_is_a_one_line_error(run) -> None:
    assert run("user", "add", "li").exit_code == 0
    assert run("--as", "li", "user", "add", "gone").exit_code == 0
    assert run("--as", "li", "user", "deactivate", "gone").exit_code == 0
    one_line_error(run("--as", "ghost", "customer", "list"), "user 'ghost' not found")
    one_line_error(run("--as", "gone", "customer", "add", "--name", "x"), "'gone' is deactivated")
    one_line_error(run("customer", "list", env={"CRM_USER": "gone"}), "'gone' is deactivated")
