"""``crm user add --role``, ``crm user set-role`` and ``crm role list|show`` (issue 15, point 3), on every
database, with the ``access`` plugin policing."""

from __future__ import annotations

import json

import pytest
import sqlalchemy as sa
from click.testing import CliRunner

from crmcore.cli import cli, load_plugin_commands
from crmcore.store import tables
from crmcore.store.engine import make_engine


@pytest.fixture
def run(crm_db_url, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for var in ("CRM_PLUGINS", "CRM_DATABASE_URL", "CRM_PLUGINS_DIR", "CRM_PLUGINS_BLOCK", "CRM_USER", "CRM_CONFIG"):
        monkeypatch.delenv(var, raising=False)
    load_plugin_commands(["--plugins", "access"])

    def invoke(*args: str, plugins: str = "access", env: dict[str, str] | None = None):
        selection = ["--no-plugins"] if plugins == "" else ["--plugins", plugins]
        return CliRunner().invoke(cli, ["--db", crm_db_url, *selection, *args], env=env)
    return invoke


def ok(result) -> str:
    assert result.exit_code == 0, result.output
    return result.output


def one_line_error(result, *needles: str) -> str:
    assert result.exit_code == 1 and "Traceback" not in result.output, result.output
    errors = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and all(n in errors[0] for n in needles), result.output
    return errors[0]


def audit(crm_db_url: str, action: str) -> list[tuple[str, str | None, dict]]:
    engine = make_engine(crm_db_url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(sa.select(tables.audit_log.c.actor, tables.audit_log.c.entity_id,
                                          tables.audit_log.c.changes)
                                .where(tables.audit_log.c.action == action).order_by(tables.audit_log.c.seq))
            return [tuple(r) for r in rows]
    finally:
        engine.dispose()


def test_the_first_admin_then_roles_by_the_cli(run, crm_db_url) -> None:
    # An unconfigured CRM: the system actor (system_role admin) adds the first admin.
    assert ok(run("user", "add", "admin", "--role", "admin")).strip() == "user admin added"
    added = json.loads(ok(run("--as", "admin", "--json", "user", "add", "lee", "--role", "sales-rep")))
    assert added["role"] == "sales-rep"
    ok(run("--as", "admin", "user", "add", "ro"))
    assert json.loads(ok(run("--as", "admin", "--json", "user", "show", "ro")))["role"] is None
    listed = json.loads(ok(run("--as", "admin", "--json", "user", "list")))
    assert [(u["login"], u["role"]) for u in listed] == [("admin", "admin"), ("lee", "sales-rep"), ("ro", None)]
    table = ok(run("--as", "admin", "user", "list"))
    assert table.splitlines()[0].split("\t") == ["login", "display_name", "email", "active", "role"]
    assert "lee\tlee\t\tTrue\tsales-rep" in table

    assert ok(run("--as", "admin", "user", "set-role", "ro", "manager")).strip() == "user ro has role manager"
    shown = json.loads(ok(run("--as", "admin", "--json", "user", "set-role", "lee", "service-agent")))
    assert shown["login"] == "lee" and shown["role"] == "service-agent"
    assert "service-agent" in ok(run("--as", "admin", "user", "show", "lee"))
    assert audit(crm_db_url, "user.set-role") == [
        ("admin", "ro", {"role": [None, "manager"]}), ("admin", "lee", {"role": ["sales-rep", "service-agent"]})]
    ok(run("--as", "admin", "user", "set-role", "lee", "service-agent"))  # no change: no record
    assert len(audit(crm_db_url, "user.set-role")) == 2
    assert audit(crm_db_url, "user.add")[1][2]["role"] == [None, "sales-rep"]

    # What the roles allow: lee (service-agent) may not add customers or give roles; ro (manager) may not either.
    one_line_error(run("--as", "lee", "customer", "add", "--name", "Ann"), "user 'lee' may not customer.create")
    one_line_error(run("--as", "ro", "user", "set-role", "ro", "admin"), "user 'ro' may not user.set-role (ro)")
    one_line_error(run("--as", "lee", "user", "add", "mia", "--role", "admin"), "user 'lee' may not user.add")
    assert len(audit(crm_db_url, "user.set-role")) == 2

    # Back to the policy's default role (no role of their own), audited; a ROLE and --default exclude each other.
    assert ok(run("--as", "admin", "user", "set-role", "ro", "--default")).strip() == "user ro has the default role"
    assert json.loads(ok(run("--as", "admin", "--json", "user", "show", "ro")))["role"] is None
    assert audit(crm_db_url, "user.set-role")[-1] == ("admin", "ro", {"role": ["manager", None]})
    for wrong in (("ro",), ("ro", "admin", "--default")):
        result = run("--as", "admin", "user", "set-role", *wrong)
        assert result.exit_code == 2 and "give a ROLE or --default" in result.output


def test_bad_roles_are_one_line_errors_naming_the_field(run) -> None:
    ok(run("user", "add", "admin", "--role", "admin"))
    one_line_error(run("--as", "admin", "user", "add", "lee", "--role", "boss"),
                   "invalid user: role: unknown role 'boss' (known: admin, manager, read-only, sales-rep, "
                   "service-agent)")
    one_line_error(run("--as", "admin", "user", "set-role", "admin", "boss"), "role: unknown role 'boss'")
    one_line_error(run("--as", "admin", "user", "set-role", "ghost", "admin"), "user 'ghost' not found")
    one_line_error(run("--as", "admin", "role", "show", "boss"), "unknown role 'boss' (known: admin, manager")


def test_without_a_policy_plugin_no_role_exists(run) -> None:
    one_line_error(run("user", "add", "lee", "--role", "admin", plugins=""),
                   "role: unknown role 'admin': no policy plugin defines roles")
    assert json.loads(ok(run("--json", "role", "list", plugins=""))) == []


def test_role_list_and_show(run) -> None:
    listed = json.loads(ok(run("--json", "role", "list")))
    assert [(r["name"], r["scope"], r["plugin"]) for r in listed] == [
        ("admin", "all", "access"), ("manager", "team", "access"), ("read-only", "all", "access"),
        ("sales-rep", "own", "access"), ("service-agent", "territory", "access")]
    assert all(isinstance(r["permissions"], list) and r["description"] for r in listed)
    rep = json.loads(ok(run("--json", "role", "show", "sales-rep")))
    assert set(rep) == {"name", "scope", "description", "permissions", "plugin"}
    assert "deal.move" in rep["permissions"] and "segment.run" not in rep["permissions"]
    table = ok(run("role", "list"))
    assert table.splitlines()[0].split("\t") == ["name", "scope", "plugin", "description"]
    shown = ok(run("role", "show", "admin"))
    assert "permissions\t*" in shown and "plugin\taccess" in shown


def test_role_commands_are_authorized(run) -> None:
    ok(run("user", "add", "admin", "--role", "admin"))
    ok(run("--as", "admin", "user", "add", "lee", "--role", "sales-rep"))
    assert len(json.loads(ok(run("--as", "lee", "--json", "role", "list")))) == 5  # every role may read roles
    tmp = "custom.toml"
    with open(tmp, "w", encoding="utf-8") as out:
        out.write('[plugins.access.roles.blind]\npermissions = ["customer.read"]\n')
    ok(run("--config", tmp, "--as", "admin", "user", "set-role", "lee", "blind"))
    one_line_error(run("--config", tmp, "--as", "lee", "role", "list"), "user 'lee' may not role.list")
    one_line_error(run("--config", tmp, "--as", "lee", "role", "show", "admin"),
                   "user 'lee' may not role.read (admin)")
    custom = json.loads(ok(run("--config", tmp, "--as", "admin", "--json", "role", "show", "blind")))
    assert custom == {"name": "blind", "scope": "all", "description": "", "permissions": ["customer.read"],
                      "plugin": "access"}


@pytest.mark.empty_database  # it migrates to an older revision itself
def test_a_database_older_than_roles_can_be_upgraded_by_its_users(run, crm_db_url) -> None:
    """Before revision 0010 nobody has a role (and no policy applied): an active user may upgrade."""
    from alembic import command

    from crmcore import migrations
    from crmcore.testing import FIXED_NOW

    engine = make_engine(crm_db_url)
    try:
        command.upgrade(migrations.alembic_config(engine, migrations.HERE / "versions", "alembic_version"),
                        "0009_consent_history")
        with engine.begin() as conn:
            conn.execute(sa.text("INSERT INTO users (login, display_name, active, source, created_at, updated_at) "
                                 "VALUES ('lee', 'lee', :yes, 'added', :now, :now), "
                                 "('gone', 'gone', :no, 'added', :now, :now)"),
                         {"yes": True, "no": False, "now": FIXED_NOW.replace(tzinfo=None)})
    finally:
        engine.dispose()
    one_line_error(run("--as", "gone", "db", "upgrade"), "'gone' is deactivated")
    ok(run("--as", "lee", "db", "upgrade"))
    # Upgraded: revision access_0001 gave lee, who could do everything before, the role admin
    # (gone too: deactivated users cannot act whatever their role).
    assert json.loads(ok(run("--as", "lee", "--json", "user", "show", "lee")))["role"] == "admin"
    assert json.loads(ok(run("--as", "lee", "--json", "user", "show", "gone")))["role"] == "admin"
    ok(run("--as", "lee", "user", "add", "new"))
    assert json.loads(ok(run("--as", "lee", "--json", "user", "show", "new")))["role"] is None  # default_role


def test_enabling_the_policy_keeps_the_users_from_before_it_able_to_act(run) -> None:
    """Users added while the access plugin was off become admins when it is enabled (access_0001),
    owner labels do not; users added afterwards get default_role."""
    ok(run("customer", "add", "--name", "x", "--owner", "label", plugins=""))  # unconfigured: a label
    ok(run("user", "add", "li.wei", plugins=""))
    ok(run("--as", "li.wei", "user", "add", "wang", plugins=""))
    ok(run("--as", "li.wei", "user", "set-role", "wang", "sales-rep"))  # li.wei is an admin now
    assert json.loads(ok(run("--as", "li.wei", "--json", "user", "show", "label")))["role"] is None
    one_line_error(run("--as", "wang", "user", "set-role", "wang", "admin"), "user 'wang' may not user.set-role")
    ok(run("--as", "li.wei", "user", "add", "zhao"))
    one_line_error(run("--as", "zhao", "customer", "add", "--name", "y"), "user 'zhao' may not customer.create")