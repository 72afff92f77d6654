"""What a plugin's command gets: the session (``session.crm``, ``session.as_of``
honouring the global ``--as-of``, ``session.json``, ``session.emit``), the
plugin's settings, and one-line errors for bad configuration.

SQLite only: the session and the configuration do not depend on the database.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from importlib.metadata import entry_points
from pathlib import Path

import pytest
from click.testing import CliRunner

from crmcore import CRM
from crmcore.cli import cli, load_plugin_commands

HAS_ACME = any(ep.name == "acme" for ep in entry_points(group="crmcore"))
needs_acme = pytest.mark.skipif(not HAS_ACME, reason="acme-crm-plugin is not installed")

SESSION_PLUGIN = '''
import json

import attrs
import click

from crmcore import hookimpl, pass_session


@attrs.frozen
class Row:
    name: str
    at: object


@hookimpl
def register_commands(cli):
    @cli.command("sessioncheck-now")
    @pass_session
    def now(session):
        """Print what the session says."""
        click.echo(json.dumps({"as_of": session.as_of.isoformat(), "json": session.json,
                               "same": session.as_of is session.as_of}))

    @cli.command("sessioncheck-rows")
    @pass_session
    def rows(session):
        """Emit attrs objects and entities."""
        session.emit([Row(c.name, session.as_of) for c in session.crm.customers.list()], columns=["name", "at"])
'''


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    for var in [v for v in os.environ if v.startswith("CRM_")]:
        monkeypatch.delenv(var)
    return tmp_path


@pytest.fixture
def session_plugin(workdir: Path) -> list[str]:
    """The global options that load the single-file plugin above (its commands added to `crm`)."""
    directory = workdir / "plugs"
    directory.mkdir()
    (directory / "sessioncheck.py").write_text(SESSION_PLUGIN, encoding="utf-8")
    base = ["--db", f"sqlite:///{workdir / 'crm.db'}", "--no-plugins", "--plugins-dir", str(directory)]
    load_plugin_commands(base)
    return base


def invoke(*args: str, env: dict[str, str] | None = None) -> tuple[int, str]:
    result = CliRunner().invoke(cli, list(args), env=env)
    return result.exit_code, result.output


def test_plugin_command_gets_the_global_as_of(session_plugin: list[str]) -> None:
    code, out = invoke(*session_plugin, "--as-of", "2026-06-30", "sessioncheck-now")
    assert code == 0, out
    # A bare date is the end of that day in the configured timezone (UTC by default).
    assert json.loads(out) == {"as_of": "2026-06-30T23:59:59.999999+00:00", "json": False, "same": True}
    code, out = invoke(*session_plugin, "--json", "--as-of", "2026-06-30T12:00:00+08:00", "sessioncheck-now")
    assert json.loads(out) == {"as_of": "2026-06-30T04:00:00+00:00", "json": True, "same": True}


def test_as_of_reads_a_bare_date_in_the_configured_timezone(session_plugin: list[str], workdir: Path) -> None:
    (workdir / "tz.toml").write_text('timezone = "Asia/Shanghai"\n', encoding="utf-8")
    code, out = invoke(*session_plugin, "--config", str(workdir / "tz.toml"), "--as-of", "2026-06-30",
                       "sessioncheck-now")
    assert code == 0, out
    assert json.loads(out)["as_of"] == "2026-06-30T15:59:59.999999+00:00"


def test_without_as_of_it_is_now_in_utc(session_plugin: list[str]) -> None:
    code, out = invoke(*session_plugin, "sessioncheck-now")
    moment = datetime.fromisoformat(json.loads(out)["as_of"])
    assert moment.utcoffset() == timedelta(0)
    assert abs(datetime.now(timezone.utc) - moment) < timedelta(minutes=5)


def test_bad_as_of_is_one_line(session_plugin: list[str]) -> None:
    code, out = invoke(*session_plugin, "--as-of", "yesterday", "sessioncheck-now")
    assert code == 1 and "Traceback" not in out
    assert out.strip() == "Error: --as-of 'yesterday' is not a date (YYYY-MM-DD) or ISO datetime"


def test_emit_takes_attrs_objects_as_json_and_as_text(session_plugin: list[str], workdir: Path) -> None:
    with CRM.open(f"sqlite:///{workdir / 'crm.db'}", plugins=[]) as crm:
        crm.customers.add(name="张伟")
    code, out = invoke(*session_plugin, "--json", "--as-of", "2026-06-30", "sessioncheck-rows")
    assert code == 0, out
    assert json.loads(out) == [{"name": "张伟", "at": "2026-06-30T23:59:59.999999+00:00"}]
    code, out = invoke(*session_plugin, "--as-of", "2026-06-30", "sessioncheck-rows")
    assert out.splitlines() == ["name\tat", "张伟\t2026-06-30T23:59:59.999999+00:00"]


# -- acme, through its entry point ---------------------------------------------------

@pytest.fixture
def acme_cli(workdir: Path) -> list[str]:
    base = ["--db", f"sqlite:///{workdir / 'crm.db'}", "--plugins", "acme"]
    load_plugin_commands(base)
    with CRM.open(base[1], plugins=["acme"]) as crm:
        crm.customers.add(name="Ada", tags=["vip", "gold"])
        crm.customers.add(name="Bob", tags=["gold"])
        crm.customers.add(name="Cleo", tags=["vip"])
    return base


@needs_acme
def test_acme_command_honours_as_of(acme_cli: list[str]) -> None:
    code, out = invoke(*acme_cli, "--json", "acme-vips")
    assert code == 0, out
    assert [r["name"] for r in json.loads(out)] == ["Ada", "Cleo"]
    # Before anybody was a customer: nobody.
    code, out = invoke(*acme_cli, "--json", "--as-of", "2000-01-01", "acme-vips")
    assert code == 0 and json.loads(out) == []


@needs_acme
def test_acme_command_reads_its_settings_from_file_and_environment(acme_cli: list[str], workdir: Path) -> None:
    (workdir / "crm.toml").write_text('[plugins.acme]\nvip_tag = "gold"\nmax_vips = 5\n', encoding="utf-8")
    code, out = invoke(*acme_cli, "--json", "acme-vips")
    assert [r["name"] for r in json.loads(out)] == ["Ada", "Bob"]
    code, out = invoke(*acme_cli, "--json", "acme-vips", env={"CRM_PLUGIN_ACME_MAX_VIPS": "1"})
    assert [r["name"] for r in json.loads(out)] == ["Ada"]


@needs_acme
def test_config_show_lists_plugin_settings_and_their_sources(acme_cli: list[str], workdir: Path) -> None:
    (workdir / "crm.toml").write_text('[plugins.acme]\nvip_tag = "gold"\n[plugins.elsewhere]\nx = 1\n',
                                      encoding="utf-8")
    code, out = invoke(*acme_cli, "--json", "config", "show", env={"CRM_PLUGIN_ACME_MAX_VIPS": "3"})
    assert code == 0, out
    rows = json.loads(out)
    assert rows["plugins.acme.vip_tag"] == {"value": "gold", "source": "crm.toml"}
    assert rows["plugins.acme.max_vips"]["value"] == 3
    assert rows["plugins.acme.max_vips"]["source"] == "environment CRM_PLUGIN_ACME_MAX_VIPS"
    assert rows["plugins.acme.welcome_subject"]["source"] == "default"
    assert rows["plugins.elsewhere"]["source"] == "crm.toml (plugin not loaded)"
    assert not any(key in rows for key in ("plugin_tables", "plugin_environ"))


@needs_acme
@pytest.mark.parametrize("toml,env,expected", [
    ('[plugins.acme]\nmax_vips = "lots"\n', {}, "Error: crm.toml: [plugins.acme] max_vips: expected an integer, got 'lots'"),
    ('[plugins.acme]\nmax_vip = 3\n', {}, "Error: crm.toml: [plugins.acme] unknown key(s): max_vip (did you mean 'max_vips'?)"),
    ('[plugins.acme]\nmax_vips = 0\n', {}, "Error: crm.toml: [plugins.acme] max_vips: 'max_vips' must be > 0: 0"),
    ("", {"CRM_PLUGIN_ACME_MAX_VIPS": "0"},
     "Error: environment CRM_PLUGIN_ACME_MAX_VIPS: [plugins.acme] max_vips: 'max_vips' must be > 0: 0"),
    ("", {"CRM_PLUGIN_ACME_MAX_VIPS": "many"},
     "Error: environment CRM_PLUGIN_ACME_MAX_VIPS: [plugins.acme] max_vips: expected an integer, got 'many'"),
    ('[pipelines.default]\nstage = []\n', {}, "Error: crm.toml: [pipelines.default] unknown key(s): stage"),
])
def test_bad_settings_are_one_line_errors(acme_cli: list[str], workdir: Path, toml: str, env: dict,
                                          expected: str) -> None:
    (workdir / "crm.toml").write_text(toml, encoding="utf-8")
    code, out = invoke(*acme_cli, "acme-vips", env=env)
    assert code == 1 and "Traceback" not in out
    assert len(out.strip().splitlines()) == 1 and out.startswith(expected), out


@needs_acme
def test_bad_environment_value_through_the_real_program(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CRM_")}
    env["CRM_PLUGIN_ACME_MAX_VIPS"] = "lots"
    crm = Path(sys.executable).with_name("crm")
    result = subprocess.run([str(crm), "--db", f"sqlite:///{tmp_path / 'x.db'}", "--plugins", "acme", "acme-vips"],
                            capture_output=True, text=True, cwd=tmp_path, env=env, timeout=120)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stderr.strip() == ("Error: environment CRM_PLUGIN_ACME_MAX_VIPS: [plugins.acme] max_vips: "
                                     "expected an integer, got 'lots'")
