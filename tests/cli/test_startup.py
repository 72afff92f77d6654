"""Start-up is lazy: ``crm --help`` and ``crm --version`` touch no database, and
neither they nor registering every installed plugin's components import the
heavy libraries (scikit-learn, scipy, matplotlib, openpyxl, pandas, ...): those
load when a component first uses them.  How fast start-up is belongs in
bench/startup.py, not here."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from importlib.metadata import entry_points
from pathlib import Path

import pytest

from crmcore.cli import asks_version

HEAVY = ["alembic", "apprise", "httpx", "matplotlib", "numpy", "openpyxl", "pandas", "scipy", "sklearn"]
CRM = Path(sys.executable).with_name("crm")


def clean_env(tmp_path: Path) -> dict[str, str]:
    """The environment without CRM_* settings: every installed plugin loads."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CRM_")}
    env["HOME"] = str(tmp_path)
    return env


def run_python(code: str, cwd: Path) -> dict[str, list[str]]:
    """Run ``code`` in a fresh interpreter; it prints JSON on its last line."""
    result = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=cwd, env=clean_env(cwd),
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    parsed: dict[str, list[str]] = json.loads(result.stdout.strip().splitlines()[-1])
    return parsed


def plugin_modules() -> list[str]:
    """The hook module of every installed plugin (what its entry point names)."""
    return sorted(ep.value.split(":")[0] for ep in entry_points(group="crmcore"))


@pytest.mark.parametrize("args", [["--help"], ["--version"], ["--no-plugins", "--help"], ["-h"],
                                  ["--db", "sqlite:///given.db", "--version"], ["--db", "sqlite:///given.db", "--help"],
                                  ["customer", "--help"]])
def test_help_and_version_create_no_database(tmp_path: Path, args: list[str]) -> None:
    """In an empty directory: the output is there, and no file (no crm.db) is."""
    result = subprocess.run([str(CRM), *args], cwd=tmp_path, env=clean_env(tmp_path), capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    assert ("crm, version" in result.stdout) if "--version" in args else ("Usage: crm" in result.stdout)
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_help_creates_no_configured_database(tmp_path: Path) -> None:
    """A crm.toml naming a database: --help and --version still leave it alone."""
    (tmp_path / "crm.toml").write_text('database_url = "sqlite:///configured.db"\n', encoding="utf-8")
    for args in (["--help"], ["--version"]):
        result = subprocess.run([str(CRM), *args], cwd=tmp_path, env=clean_env(tmp_path), capture_output=True,
                                text=True, timeout=120)
        assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["crm.toml"]


def test_help_with_every_plugin_imports_no_heavy_library(tmp_path: Path) -> None:
    """``crm --help`` imports every installed plugin's hook module (so plugin
    commands are listed) and none of the heavy libraries."""
    out = run_python(f"""
        import atexit, json, sys
        def report():
            print(json.dumps({{"modules": sorted(sys.modules)}}))
        atexit.register(report)
        from crmcore.cli import main
        main(["--help"])
    """, tmp_path)
    modules = set(out["modules"])
    assert set(plugin_modules()) <= modules  # the plugins were loaded: the check below means something
    assert sorted({m.split(".")[0] for m in modules} & set(HEAVY)) == []


def test_registering_every_plugin_imports_no_heavy_library(tmp_path: Path) -> None:
    """Opening a CRM registers every component of every installed plugin
    (segmenters, schemes, channels, reports, renderers) without loading the
    libraries those components use; the first use loads them."""
    out = run_python(f"""
        import json, sys
        from crmcore import CRM
        crm = CRM.open("sqlite:///{tmp_path / 'crm.db'}")
        components = sorted(s.name for s in crm.segments.strategies())
        heavy = sorted({{m.split(".")[0] for m in sys.modules}} & set({HEAVY[1:]!r}))
        crm.close()
        print(json.dumps({{"components": components, "heavy": heavy}}))
    """, tmp_path)
    assert out["heavy"] == []
    assert "rfm" in out["components"]


def test_a_heavy_component_loads_its_library_on_first_use(tmp_path: Path) -> None:
    """The other side of laziness: using the kmeans segmenter loads scikit-learn."""
    if not any(ep.name == "kmeans" for ep in entry_points(group="crmcore")):
        pytest.skip("crmcore-kmeans is not installed")
    out = run_python(f"""
        import json, sys
        from crmcore import CRM
        crm = CRM.open("sqlite:///{tmp_path / 'crm.db'}")
        before = "sklearn" in sys.modules
        for i in range(6):
            customer = crm.customers.add(name=f"c{{i}}")
            for j in range(i + 1):
                crm.deals.add(customer_id=customer.id, title="d", amount=str(100 * (i + 1)), stage="won",
                              closed_at=f"2026-0{{j + 1}}-15T12:00:00+00:00")
        crm.segments.run("kmeans", as_of="2026-06-30", options={{"k": 2, "seed": 0}})
        crm.close()
        print(json.dumps({{"before": [str(before)], "after": [str("sklearn" in sys.modules)]}}))
    """, tmp_path)
    assert out == {"before": ["False"], "after": ["True"]}


@pytest.mark.parametrize(("argv", "expected"), [
    (["--version"], True),
    (["--db", "sqlite:///x.db", "--no-plugins", "--version"], True),
    (["--plugins=segments", "-v", "--version"], True),
    (["--db", "--version"], False),  # "--version" is the value of --db here
    (["--help", "--version"], False),  # click shows the help first: plugin commands are needed
    (["customer", "--version"], False),
    (["customer", "list"], False),
    ([], False),
])
def test_asks_version(argv: list[str], expected: bool) -> None:
    """Only a group-level ``--version`` skips loading the plugins."""
    assert asks_version(argv) is expected


# Imported by no command that does not use them (issue 21: start-up); each was 5-35 ms of every command.
LAZY = ["alembic", "mako", "pygments", "jinja2", "babel.dates", "rich", "lark", "cryptography", "rapidfuzz",
        "limits", "sqlalchemy.dialects.postgresql"]


def test_commands_on_a_database_at_its_heads_import_only_what_they_use(tmp_path: Path) -> None:
    """``customer list`` and a ``--json`` import on an up-to-date SQLite database, with every plugin:
    no migration library (the schema check reads the version tables itself), no template engine,
    no terminal drawing, no rule parser, no cipher, no fuzzy matcher, no other database's dialect."""
    db = tmp_path / "crm.db"
    (tmp_path / "one.csv").write_text("name,email\n张伟,zhang.wei@example.com\n", encoding="utf-8")
    out = run_python(f"""
        import json, subprocess, sys
        from crmcore import CRM
        CRM.open("sqlite:///{db}").close()  # every installed plugin's tables, before the commands
        code = ("import atexit, json, sys\\n"
                "atexit.register(lambda: print(json.dumps(sorted(sys.modules))))\\n"
                "from crmcore.cli import main\\n"
                "main(sys.argv[1:])\\n")
        found = {{}}
        for args in (["customer", "list", "--limit", "1"], ["--json", "import", "customers", "one.csv"]):
            run = subprocess.run([sys.executable, "-c", code, "--db", "sqlite:///{db}", *args],
                                 capture_output=True, text=True, check=True)
            found[" ".join(args)] = json.loads(run.stdout.strip().splitlines()[-1])
        print(json.dumps(found))
    """, tmp_path)
    for args, modules in out.items():
        loaded = [name for name in LAZY if name in modules or any(m.startswith(name + ".") for m in modules)]
        # A listing for a person asks rich whether stdout is a terminal (its rules: TTY_COMPATIBLE, ...).
        assert loaded == ([] if "--json" in args else ["rich"]), args
    assert "crmcore_segments" in out["customer list --limit 1"]  # the plugins were loaded


def test_importing_crmcore_leaves_the_collector_as_it_found_it(tmp_path: Path) -> None:
    """Start-up pauses the cyclic collector (crmcore.startup.building) and resumes it: enabled
    stays enabled, a collector the program had disabled stays disabled."""
    out = run_python("""
        import gc, json
        gc.disable()
        from crmcore.startup import building
        with building():
            pass
        disabled = gc.isenabled()
        gc.enable()
        with building():
            inside = gc.isenabled()
        import crmcore
        print(json.dumps({"after": [gc.isenabled(), disabled, inside], "frozen": [gc.get_freeze_count() > 0]}))
    """, tmp_path)
    assert out == {"after": [True, False, False], "frozen": [True]}
